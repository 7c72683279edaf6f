//! The hostile-image corpus: valid images made by `qemu-img`, then broken
//! by patching header fields, L1/L2 entries and refcounts. Every image must
//! give an error (naming the image) or work, within a time limit, and never
//! panic: not in our code, and not inside imago either (a panic hook counts
//! them, because `Image` would otherwise hide one behind an error).
//!
//! Offsets below are those of a 4 MiB qcow2 v3 image with 64 KiB clusters
//! that `qemu-img create` made and `qemu-io` wrote 256 KiB at offset 0 into:
//! header at 0, refcount table at 0x10000, refcount block at 0x20000, L1 at
//! 0x30000, L2 at 0x40000, data from 0x50000. The test checks this layout
//! before patching, so a change in QEMU's allocator fails loudly here.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use vireo_storage::{Image, OpenOptions};

static PANICS: AtomicUsize = AtomicUsize::new(0);

const REFTABLE: u64 = 0x10000;
const REFBLOCK: u64 = 0x20000;
const L1: u64 = 0x30000;
const L2: u64 = 0x40000;

/// A way to break an image.
struct Case {
    name: &'static str,
    /// Whether opening must fail.
    must_fail_open: bool,
    patch: fn(&mut Vec<u8>),
}

fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_be_bytes());
}

fn get_u64(b: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;

const CASES: &[Case] = &[
    Case {
        name: "l1-beyond-file",
        must_fail_open: true,
        patch: |b| put_u64(b, 40, 1 << 40),
    },
    Case {
        name: "l1-unaligned",
        must_fail_open: true,
        patch: |b| put_u64(b, 40, L1 + 1),
    },
    Case {
        name: "l1-size-huge",
        must_fail_open: true,
        patch: |b| put_u32(b, 36, 0x7fff_ffff),
    },
    Case {
        name: "l1-size-too-small",
        must_fail_open: true,
        patch: |b| put_u32(b, 36, 0),
    },
    Case {
        name: "reftable-beyond-file",
        must_fail_open: true,
        patch: |b| put_u64(b, 48, 1 << 50),
    },
    Case {
        name: "reftable-clusters-huge",
        must_fail_open: true,
        patch: |b| put_u32(b, 56, u32::MAX),
    },
    Case {
        name: "cluster-bits-8",
        must_fail_open: true,
        patch: |b| put_u32(b, 20, 8),
    },
    Case {
        name: "cluster-bits-63",
        must_fail_open: true,
        patch: |b| put_u32(b, 20, 63),
    },
    Case {
        name: "virtual-size-2^63",
        must_fail_open: true,
        patch: |b| put_u64(b, 24, 1 << 63),
    },
    Case {
        name: "version-1",
        must_fail_open: true,
        patch: |b| put_u32(b, 4, 1),
    },
    Case {
        name: "version-4",
        must_fail_open: true,
        patch: |b| put_u32(b, 4, 4),
    },
    Case {
        name: "encrypted",
        must_fail_open: true,
        patch: |b| put_u32(b, 32, 1),
    },
    Case {
        name: "unknown-incompatible-feature",
        must_fail_open: true,
        patch: |b| put_u64(b, 72, 1 << 40),
    },
    Case {
        name: "refcount-order-7",
        must_fail_open: true,
        patch: |b| put_u32(b, 96, 7),
    },
    Case {
        name: "header-length-huge",
        must_fail_open: true,
        patch: |b| put_u32(b, 100, 0x00ff_ffff),
    },
    Case {
        name: "backing-name-beyond-file",
        must_fail_open: true,
        patch: |b| {
            put_u64(b, 8, 1 << 40);
            put_u32(b, 16, 100);
        },
    },
    Case {
        name: "backing-name-too-long",
        must_fail_open: true,
        patch: |b| {
            put_u64(b, 8, 0x200);
            put_u32(b, 16, 0xffff);
        },
    },
    Case {
        name: "snapshots-beyond-file",
        must_fail_open: true,
        patch: |b| {
            put_u32(b, 60, 1000);
            put_u64(b, 64, 1 << 45);
        },
    },
    Case {
        name: "truncated-after-header",
        must_fail_open: true,
        patch: |b| b.truncate(4096),
    },
    Case {
        name: "truncated-mid-l2",
        must_fail_open: false,
        patch: |b| b.truncate(L2 as usize + 100),
    },
    Case {
        name: "l1-entry-beyond-file",
        must_fail_open: false,
        patch: |b| put_u64(b, L1, COPIED | (1 << 40)),
    },
    Case {
        name: "l1-entry-unaligned",
        must_fail_open: false,
        patch: |b| put_u64(b, L1, COPIED | (L2 + 512)),
    },
    Case {
        name: "l1-entry-points-at-header",
        must_fail_open: false,
        patch: |b| put_u64(b, L1, COPIED),
    },
    Case {
        name: "l1-entry-points-at-l1",
        must_fail_open: false,
        patch: |b| put_u64(b, L1, COPIED | L1),
    },
    Case {
        name: "l2-entry-beyond-file",
        must_fail_open: false,
        patch: |b| put_u64(b, L2, COPIED | (1 << 44)),
    },
    Case {
        name: "l2-entry-unaligned",
        must_fail_open: false,
        patch: |b| put_u64(b, L2, COPIED | 0x50200),
    },
    Case {
        name: "l2-entry-reserved-bits",
        must_fail_open: false,
        patch: |b| put_u64(b, L2, COPIED | 0x50000 | (1 << 56)),
    },
    Case {
        name: "l2-entry-points-at-refblock",
        must_fail_open: false,
        patch: |b| put_u64(b, L2, COPIED | REFBLOCK),
    },
    Case {
        name: "l2-compressed-beyond-file",
        must_fail_open: false,
        patch: |b| put_u64(b, L2, COMPRESSED | (0x3fff << 54 >> 2) | (1 << 40)),
    },
    Case {
        name: "l2-compressed-garbage",
        must_fail_open: false,
        patch: |b| put_u64(b, L2, COMPRESSED | 0x50000),
    },
    Case {
        name: "refcounts-at-maximum",
        must_fail_open: false,
        patch: |b| b[REFBLOCK as usize..REFBLOCK as usize + 0x10000].fill(0xff),
    },
    Case {
        name: "refcounts-zero-for-metadata",
        must_fail_open: false,
        patch: |b| b[REFBLOCK as usize..REFBLOCK as usize + 16].fill(0),
    },
    Case {
        name: "reftable-entry-beyond-file",
        must_fail_open: false,
        patch: |b| put_u64(b, REFTABLE, 1 << 44),
    },
    Case {
        name: "reftable-entry-unaligned",
        must_fail_open: false,
        patch: |b| put_u64(b, REFTABLE, REFBLOCK + 8),
    },
    Case {
        name: "reftable-entry-points-at-l1",
        must_fail_open: false,
        patch: |b| put_u64(b, REFTABLE, L1),
    },
];

/// Makes the valid source image and checks the layout the patches assume.
fn make_source(dir: &Path) -> Vec<u8> {
    let path = dir.join("source.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path.to_str().unwrap(), "4M"]);
    qemu_io(&path, "qcow2", &["write -P 0x61 0 256k".into()]);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        get_u64(&bytes, 40),
        L1,
        "QEMU placed the L1 table elsewhere"
    );
    assert_eq!(
        get_u64(&bytes, 48),
        REFTABLE,
        "QEMU placed the refcount table elsewhere"
    );
    assert_eq!(get_u64(&bytes, REFTABLE), REFBLOCK);
    assert_eq!(get_u64(&bytes, L1), COPIED | L2);
    assert_eq!(get_u64(&bytes, L2), COPIED | 0x50000);
    bytes
}

/// What happened to one corrupt image.
#[derive(Debug)]
struct Outcome {
    opened: bool,
    errors: Vec<String>,
}

/// Opens the image and exercises it; returns every error message.
fn exercise(path: PathBuf) -> Outcome {
    let mut errors = Vec::new();
    let mut image = match Image::open(&path, &OpenOptions::new()) {
        Ok(image) => image,
        Err(e) => {
            return Outcome {
                opened: false,
                errors: vec![e.to_string()],
            };
        }
    };
    let mut buf = vec![0u8; image.size().min(8 << 20) as usize];
    let data = vec![0x77u8; 65536];
    let results = [
        image.read_at(&mut buf, 0),
        image.write_at(&data, 0),
        image.write_at(&data, 3 << 20),
        image.write_at(&data[..512], 100),
        image.write_zeroes(65536, 131072),
        image.discard(0, 65536),
        image.flush(),
        image.read_at(&mut buf, 0),
    ];
    for r in results {
        if let Err(e) = r {
            errors.push(e.to_string());
        }
    }
    Outcome {
        opened: true,
        errors,
    }
}

#[test]
fn corrupt_qcow2_corpus_gives_errors_never_panics_or_hangs() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let dir = tempfile::tempdir().unwrap();
    let source = make_source(dir.path());
    let mut failures = Vec::new();

    for case in CASES {
        let mut bytes = source.clone();
        (case.patch)(&mut bytes);
        let path = dir.path().join(format!("{}.qcow2", case.name));
        std::fs::write(&path, &bytes).unwrap();
        let panics_before = PANICS.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| exercise(thread_path));
            let _ = tx.send(outcome);
        });
        let outcome = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => {
                failures.push(format!("{}: panic escaped the storage API", case.name));
                continue;
            }
            Err(_) => {
                failures.push(format!("{}: hung for 30 s", case.name));
                continue;
            }
        };
        if PANICS.load(Ordering::SeqCst) != panics_before {
            failures.push(format!(
                "{}: the format driver panicked (caught): {outcome:?}",
                case.name
            ));
        }
        if case.must_fail_open && outcome.opened {
            failures.push(format!(
                "{}: opened, but must be refused: {outcome:?}",
                case.name
            ));
        }
        for e in &outcome.errors {
            if !e.contains(&format!("{}.qcow2", case.name)) {
                failures.push(format!("{}: error does not name the image: {e}", case.name));
            }
        }
        eprintln!(
            "{}: opened={} errors={:?}",
            case.name, outcome.opened, outcome.errors
        );
    }

    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}
