//! Our storage path (vireo-storage on imago) beside `qemu-img bench`, on
//! the same image files, in one run: 4 KiB reads and writes at queue depth
//! 1 and 32, 1 MiB sequential reads and writes, for qcow2 and raw, plus
//! allocation-heavy writes (one 4 KiB write into each new cluster of a
//! fresh qcow2). Prints throughput and the ratio ours / QEMU (above 1 means
//! faster than QEMU).
//!
//! "Random" 4 KiB requests: `qemu-img bench` (7.2) only issues strided
//! requests, `offset += step` modulo the image size, so both sides use a
//! step of 7919 blocks (a prime), which scatters requests over the whole
//! image in the same order. Both sides use the host page cache
//! (`-t writeback`; our cache mode writeback), so the figures compare the
//! CPU cost of the two storage stacks rather than the disk.
//!
//! Our side runs the VMM's virtio-blk path: guest-memory slices through
//! `Image::run_batch`, which virtio-blk calls with the reads and writes of
//! one pass over its virtqueue. Queue depth 32: `qemu-img bench -d 32`
//! keeps 32 requests in flight (one thread, coroutines, `aio=threads`);
//! ours submits batches of 32, each run on the image's I/O threads and the
//! calling thread, the next once the whole batch completed (so fewer than
//! 32 are in flight at the tail of each batch). The machine has 2 cores.
//!
//! Every row is the best of `RUNS` runs per side, alternating between the
//! sides on the same file; 1 MiB rows pass over the image `SEQ_PASSES`
//! times (4 GiB, a few hundred milliseconds per run): with fewer, a run
//! of under 100 ms was decided by qemu-img's millisecond timing and by
//! any one scheduling hiccup of a loaded machine.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use vireo_storage::image::IO_WORKERS;
use vireo_storage::{CacheMode, Image, IoKind, IoRequest, OpenOptions};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

const IMAGE_SIZE: u64 = 256 << 20;
const SMALL: u64 = 4096;
const LARGE: u64 = 1 << 20;
const SMALL_COUNT: u64 = 20_000;
const SEQ_PASSES: u64 = 16;
const LARGE_COUNT: u64 = SEQ_PASSES * IMAGE_SIZE / LARGE;
const RUNS: usize = 5;
const STRIDE: u64 = 7919 * SMALL;

/// One benchmark row.
#[derive(Clone, Copy)]
struct Row {
    name: &'static str,
    write: bool,
    size: u64,
    step: u64,
    count: u64,
    depth: u64,
}

/// The offset of request `i`, as qemu-img bench computes it.
fn offset(row: &Row, i: u64) -> u64 {
    let span = IMAGE_SIZE - row.size;
    if span == 0 { 0 } else { (i * row.step) % span }
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is required (qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `qemu-img bench` and returns the seconds it reports.
fn qemu_bench(path: &Path, format: &str, row: &Row) -> f64 {
    let count = row.count.to_string();
    let depth = row.depth.to_string();
    let size = row.size.to_string();
    let step = row.step.to_string();
    let mut args = vec![
        "bench",
        "-f",
        format,
        "-t",
        "writeback",
        "-c",
        &count,
        "-d",
        &depth,
        "-s",
        &size,
        "-S",
        &step,
    ];
    if row.write {
        args.extend(["-w", "--pattern=0x5a"]);
    }
    let p = path.to_str().unwrap();
    args.push(p);
    let out = qemu_img(&args);
    // "Run completed in 1.234 seconds."
    out.split("Run completed in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse qemu-img bench output: {out}"))
}

/// Runs the same requests through our storage path; returns seconds.
///
/// This is the path of the VMM's virtio-blk: guest memory slices through
/// `Image::run_batch`, one batch per pass over the virtqueue. At queue
/// depth N, the requests go in batches of N (run at the same time on the
/// image's I/O threads and this one), the next batch once all of the
/// previous have completed; at depth 1 each request runs alone on this
/// thread. The buffers are guest memory as the VMM maps it (page-aligned
/// anonymous memory, `GuestMemoryMmap`), as qemu-img's are page-aligned.
fn our_bench(path: &Path, row: &Row) -> f64 {
    let image = Image::open(path, &OpenOptions::new().cache(CacheMode::Writeback)).unwrap();
    let depth = row.depth as usize;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), depth * row.size as usize)])
        .unwrap();
    mem.write_slice(&vec![0x5au8; depth * row.size as usize], GuestAddress(0))
        .unwrap();
    let buffers: Vec<VolatileSlice<'_>> = (0..depth as u64)
        .map(|k| {
            let mut parts =
                GuestMemoryBackend::get_slices(&mem, GuestAddress(k * row.size), row.size as usize);
            parts.next().unwrap().unwrap()
        })
        .collect();
    let kind = if row.write {
        IoKind::Write
    } else {
        IoKind::Read
    };
    let start = Instant::now();
    let mut i = 0;
    while i < row.count {
        let n = (row.count - i).min(row.depth) as usize;
        let slices: Vec<[VolatileSlice<'_>; 1]> = buffers[..n].iter().map(|b| [*b]).collect();
        let requests: Vec<IoRequest<'_, '_>> = slices
            .iter()
            .enumerate()
            .map(|(k, s)| IoRequest {
                kind,
                slices: s,
                offset: offset(row, i + k as u64),
            })
            .collect();
        for result in image.run_batch(&requests) {
            result.unwrap();
        }
        i += n as u64;
    }
    // qemu-img bench does not flush at the end (no --flush-interval), so
    // neither do we inside the timed region.
    let seconds = start.elapsed().as_secs_f64();
    if row.write {
        image.flush().unwrap();
    }
    seconds
}

fn mib_per_s(row: &Row, seconds: f64) -> f64 {
    (row.count * row.size) as f64 / seconds / f64::from(1 << 20)
}

fn print_row(format: &str, row: &Row, ours: f64, theirs: f64) {
    let iops = |s: f64| row.count as f64 / s;
    println!(
        "{:<6} {:<28} ours {:>9.0} IOPS {:>8.1} MiB/s | qemu-img {:>9.0} IOPS {:>8.1} MiB/s | ratio {:>5.2}",
        format,
        row.name,
        iops(ours),
        mib_per_s(row, ours),
        iops(theirs),
        mib_per_s(row, theirs),
        theirs / ours
    );
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments select rows whose
    // "format name" contains one of them (all rows without any).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let selected = |format: &str, row: &Row| {
        let label = format!("{format} {}", row.name);
        filters.is_empty() || filters.iter().any(|f| label.contains(f.as_str()))
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rows = [
        Row {
            name: "1 MiB seq write qd1",
            write: true,
            size: LARGE,
            step: LARGE,
            count: LARGE_COUNT,
            depth: 1,
        },
        Row {
            name: "1 MiB seq read qd1",
            write: false,
            size: LARGE,
            step: LARGE,
            count: LARGE_COUNT,
            depth: 1,
        },
        Row {
            name: "4 KiB rand read qd1",
            write: false,
            size: SMALL,
            step: STRIDE,
            count: SMALL_COUNT,
            depth: 1,
        },
        Row {
            name: "4 KiB rand read qd32",
            write: false,
            size: SMALL,
            step: STRIDE,
            count: SMALL_COUNT,
            depth: 32,
        },
        Row {
            name: "4 KiB rand write qd1",
            write: true,
            size: SMALL,
            step: STRIDE,
            count: SMALL_COUNT,
            depth: 1,
        },
        Row {
            name: "4 KiB rand write qd32",
            write: true,
            size: SMALL,
            step: STRIDE,
            count: SMALL_COUNT,
            depth: 32,
        },
    ];
    println!(
        "storage benchmark: {IMAGE_SIZE} byte images, page cache (cache=writeback) on both sides, \
         best of {RUNS} runs per side, {IO_WORKERS} I/O threads + the caller for batches"
    );
    for format in ["raw", "qcow2"] {
        let path = dir.path().join(format!("bench.{format}"));
        let size = IMAGE_SIZE.to_string();
        qemu_img(&["create", "-q", "-f", format, path.to_str().unwrap(), &size]);
        for row in rows.iter().filter(|r| selected(format, r)) {
            // Best of RUNS runs each, alternating, on the same file.
            let mut ours = f64::MAX;
            let mut theirs = f64::MAX;
            for _ in 0..RUNS {
                theirs = theirs.min(qemu_bench(&path, format, row));
                ours = ours.min(our_bench(&path, row));
            }
            print_row(format, row, ours, theirs);
        }
    }
    // Allocation-heavy: 4 KiB into each new 64 KiB cluster of a fresh qcow2.
    let alloc = Row {
        name: "4 KiB alloc write (fresh)",
        write: true,
        size: SMALL,
        step: 65536,
        count: IMAGE_SIZE / 65536 - 1,
        depth: 1,
    };
    let fresh = |name: &str| {
        let path = dir.path().join(name);
        let size = IMAGE_SIZE.to_string();
        qemu_img(&["create", "-q", "-f", "qcow2", path.to_str().unwrap(), &size]);
        path
    };
    if !selected("qcow2", &alloc) {
        return;
    }
    let mut ours = f64::MAX;
    let mut theirs = f64::MAX;
    for i in 0..RUNS {
        theirs = theirs.min(qemu_bench(&fresh(&format!("q{i}.qcow2")), "qcow2", &alloc));
        ours = ours.min(our_bench(&fresh(&format!("o{i}.qcow2")), &alloc));
    }
    print_row("qcow2", &alloc, ours, theirs);
    println!("ratio = our throughput / qemu-img's (above 1: faster than QEMU)");
}
