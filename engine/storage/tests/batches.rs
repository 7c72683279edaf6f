//! `Image::run_batch` as virtio-blk uses it: scatter/gather requests from
//! guest memory, one alone or several at the same time on the I/O threads,
//! with `cache=writethrough` synced once per batch. The images are checked
//! with QEMU's tools.

mod common;

use std::path::Path;

use common::{assert_check_clean, assert_same_contents, qemu_img};
use vireo_storage::{CacheMode, Image, IoKind, IoRequest, OpenOptions};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const IMAGE: u64 = 8 * MIB;
const MEMORY: usize = 4 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Guest memory filled with a pattern that differs at every byte of a
/// sector, so data written at the wrong place shows.
fn guest_memory() -> (GuestMemoryMmap<()>, Vec<u8>) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]).unwrap();
    let bytes: Vec<u8> = (0..MEMORY).map(|i| (i * 7 + i / 4093) as u8).collect();
    mem.write_slice(&bytes, GuestAddress(0)).unwrap();
    (mem, bytes)
}

/// The slices of guest memory `(address, length)`.
fn slices<'m>(mem: &'m GuestMemoryMmap<()>, parts: &[(u64, u64)]) -> Vec<VolatileSlice<'m>> {
    parts
        .iter()
        .map(|&(addr, len)| {
            let mut it = GuestMemoryBackend::get_slices(mem, GuestAddress(addr), len as usize);
            it.next().unwrap().unwrap()
        })
        .collect()
}

/// What the gather list `parts` of `memory` holds, in order.
fn gathered(memory: &[u8], parts: &[(u64, u64)]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|&(addr, len)| memory[addr as usize..(addr + len) as usize].iter().copied())
        .collect()
}

/// A scatter/gather list of odd lengths (sector multiples, as virtio-blk
/// requests are) whose boundaries fall inside qcow2 clusters.
const ODD_LIST: [(u64, u64); 4] = [
    (0, 100 * KIB),
    (200 * KIB, 512),
    (300 * KIB, 700 * KIB),
    (1100 * KIB, 340 * KIB + 512),
];

fn batched_writes_land_where_qemu_reads_them(format: &str, cache: CacheMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("disk.{format}"));
    qemu_img(&["create", "-q", "-f", format, s(&path), &IMAGE.to_string()]);
    let (mem, memory) = guest_memory();
    let mut expected = vec![0u8; IMAGE as usize];
    let image = Image::open(&path, &OpenOptions::new().cache(cache)).unwrap();

    // One large request alone, at an offset inside a cluster.
    let list = slices(&mem, &ODD_LIST);
    let data = gathered(&memory, &ODD_LIST);
    let offset = 192 * KIB + 512;
    let results = image.run_batch(&[IoRequest {
        kind: IoKind::Write,
        slices: &list,
        offset,
    }]);
    assert_eq!(results.len(), 1);
    results.into_iter().for_each(|r| r.unwrap());
    expected[offset as usize..offset as usize + data.len()].copy_from_slice(&data);

    // Two large requests together, and a small one.
    let a = [(2 * MIB, 600 * KIB)];
    let b = [(1536 * KIB, 512), (3 * MIB, 599 * KIB + 512)];
    let c = [(4000 * KIB, 4 * KIB)];
    let (la, lb, lc) = (slices(&mem, &a), slices(&mem, &b), slices(&mem, &c));
    let batch = [
        IoRequest {
            kind: IoKind::Write,
            slices: &la,
            offset: 3 * MIB + 4 * KIB,
        },
        IoRequest {
            kind: IoKind::Write,
            slices: &lb,
            offset: 5 * MIB - KIB,
        },
        IoRequest {
            kind: IoKind::Write,
            slices: &lc,
            offset: IMAGE - 4 * KIB,
        },
    ];
    for r in image.run_batch(&batch) {
        r.unwrap();
    }
    for (parts, offset) in [
        (&a[..], 3 * MIB + 4 * KIB),
        (&b[..], 5 * MIB - KIB),
        (&c[..], IMAGE - 4 * KIB),
    ] {
        let data = gathered(&memory, parts);
        expected[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    }

    // A large read into an odd scatter list.
    let read_mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]).unwrap();
    let read_list = slices(&read_mem, &ODD_LIST);
    let read_at = 150 * KIB;
    for r in image.run_batch(&[IoRequest {
        kind: IoKind::Read,
        slices: &read_list,
        offset: read_at,
    }]) {
        r.unwrap();
    }
    let mut back = vec![0u8; MEMORY];
    read_mem.read_slice(&mut back, GuestAddress(0)).unwrap();
    let want = &expected[read_at as usize..read_at as usize + data.len()];
    assert!(
        gathered(&back, &ODD_LIST) == want,
        "{format}: a scattered read does not return what was written"
    );

    image.flush().unwrap();
    drop(image);
    let reference = dir.path().join("expected.raw");
    std::fs::write(&reference, &expected).unwrap();
    assert_same_contents(&path, &reference);
    if format == "qcow2" {
        assert_check_clean(&path);
    }
}

#[test]
fn raw_scatter_gather_batches_equal_the_data() {
    batched_writes_land_where_qemu_reads_them("raw", CacheMode::Writeback);
}

#[test]
fn qcow2_scatter_gather_batches_equal_the_data() {
    batched_writes_land_where_qemu_reads_them("qcow2", CacheMode::Writeback);
}

#[test]
fn qcow2_writethrough_batches_equal_the_data() {
    batched_writes_land_where_qemu_reads_them("qcow2", CacheMode::Writethrough);
}

#[test]
fn a_request_past_the_end_fails_alone_and_read_only_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&path), &IMAGE.to_string()]);
    let (mem, memory) = guest_memory();
    let big = slices(&mem, &[(0, MIB)]);
    let image = Image::open(&path, &OpenOptions::new()).unwrap();
    let results = image.run_batch(&[
        IoRequest {
            kind: IoKind::Write,
            slices: &big,
            offset: IMAGE - MIB / 2,
        },
        IoRequest {
            kind: IoKind::Write,
            slices: &big,
            offset: 0,
        },
    ]);
    let err = results[0].as_ref().unwrap_err().to_string();
    assert!(err.contains("disk.qcow2"), "{err}");
    results[1].as_ref().unwrap();
    image.flush().unwrap();
    drop(image);

    let image = Image::open(&path, &OpenOptions::new().read_only(true)).unwrap();
    let results = image.run_batch(&[IoRequest {
        kind: IoKind::Write,
        slices: &big,
        offset: 0,
    }]);
    assert!(results[0].is_err());
    drop(image);
    let mut expected = vec![0u8; IMAGE as usize];
    expected[..MIB as usize].copy_from_slice(&memory[..MIB as usize]);
    let reference = dir.path().join("expected.raw");
    std::fs::write(&reference, &expected).unwrap();
    assert_same_contents(&path, &reference);
    assert_check_clean(&path);
}
