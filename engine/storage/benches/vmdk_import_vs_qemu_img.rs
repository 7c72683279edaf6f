//! vmdk import: our `convert` (vireo_storage's VMDK reader into a qcow2
//! written through imago) beside `qemu-img convert -O qcow2`, on the same
//! 256 MiB streamOptimized and monolithicSparse images, in one run. Prints
//! the seconds of each side and the ratio qemu-img / ours (above 1 means
//! faster than QEMU).
//!
//! The source disk has 96 MiB of incompressible data, 96 MiB of
//! compressible text-like data and 64 MiB never written (unallocated
//! grains), spread in 4 MiB runs. Both sides write a new qcow2 with 64 KiB
//! clusters through the host page cache and sync it at the end (qemu-img
//! with `-t writeback`, which flushes when it closes the image; ours
//! flushes in `convert`). Each side's best of `RUNS` runs, alternating.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use vireo_storage::{OpenOptions, TargetFormat, convert};

const SIZE: usize = 256 << 20;
const RUN: usize = 4 << 20;
const RUNS: usize = 3;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is required (qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The source disk: runs of noise, text and holes.
fn source(path: &Path) {
    let mut data = vec![0u8; SIZE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let words: &[&[u8]] = &[
        b"vireo ", b"disk ", b"image ", b"block ", b"sector ", b"grain ",
    ];
    for (i, run) in data.chunks_mut(RUN).enumerate() {
        match i % 8 {
            0 | 3 | 5 => {
                for b in run.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            1 | 4 | 6 => {
                let mut at = 0;
                while at < run.len() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let w = words[(x % words.len() as u64) as usize];
                    let n = w.len().min(run.len() - at);
                    run[at..at + n].copy_from_slice(&w[..n]);
                    at += n;
                }
            }
            _ => {}
        }
    }
    std::fs::write(path, &data).unwrap();
}

fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let raw = dir.path().join("src.raw");
    source(&raw);
    let out = dir.path().join("out.qcow2");
    println!("vmdk -> qcow2 conversion, 256 MiB disk (best of {RUNS})");
    println!(
        "{:<20} {:>12} {:>12} {:>8}",
        "source", "qemu-img s", "vireo s", "ratio"
    );
    for sub in ["streamOptimized", "monolithicSparse"] {
        let vmdk = dir.path().join(format!("{sub}.vmdk"));
        qemu_img(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            raw.to_str().unwrap(),
            vmdk.to_str().unwrap(),
        ]);
        let (mut theirs, mut ours) = (f64::MAX, f64::MAX);
        for _ in 0..RUNS {
            let _ = std::fs::remove_file(&out);
            let start = Instant::now();
            qemu_img(&[
                "convert",
                "-t",
                "writeback",
                "-O",
                "qcow2",
                vmdk.to_str().unwrap(),
                out.to_str().unwrap(),
            ]);
            theirs = theirs.min(start.elapsed().as_secs_f64());
            std::fs::remove_file(&out).unwrap();
            let start = Instant::now();
            convert(
                &vmdk,
                &OpenOptions::new(),
                &out,
                TargetFormat::qcow2(),
                &mut |_, _| {},
            )
            .unwrap();
            ours = ours.min(start.elapsed().as_secs_f64());
        }
        // The last conversion is checked against the source.
        qemu_img(&["compare", out.to_str().unwrap(), raw.to_str().unwrap()]);
        println!(
            "{sub:<20} {theirs:>12.3} {ours:>12.3} {:>8.2}",
            theirs / ours
        );
    }
}
