//! Runs the `vmdk_read` fuzz target's seed corpus (`fuzz/corpus/vmdk_read`)
//! and deterministic mutations of it through the VMDK reader and `convert`
//! on stable Rust (cargo-fuzz needs nightly).
//!
//! The seeds (1 MiB disks: text in grain 0, a pattern across grains 4
//! and 5, 0xa5 in the last 4 KiB) were made once with QEMU 7.2:
//! `vmdk-sparse-data.vmdk` by `qemu-img convert -O vmdk` (monolithicSparse),
//! `vmdk-stream.vmdk` by `-o subformat=streamOptimized`, `vmdk-zeroed.vmdk`
//! by `qemu-img create -o zeroed_grain=on` and `qemu-io` (`write -P 0x5a 0
//! 256k`, `write -z 64k 128k`); `vmdk-streamend.vmdk` is laid out as
//! VMware writes streamOptimized files (grain directory at the end,
//! footer, end-of-stream marker; zlib grains), which `qemu-img compare`
//! found identical to the source; `vmdk-desc.vmdk` is a descriptor of a
//! sparse, a zero and a flat extent (the corpus's own files).
//!
//! Mutations: every header field (and, for the streamOptimized file with
//! its directory at the end, every footer field and the markers around
//! it) set to values that break sizes and offsets; grain directory and
//! grain table entries pointed at the header, past the end, at each other;
//! grain marker sizes and compressed bytes broken; descriptor lines
//! rewritten (huge sizes, paths out of the folder, unknown types, 20000
//! extents); random bytes and truncations. Every case must give an error
//! naming the file, or read; never panic (a hook counts panics), never
//! hang (a time limit).

mod mutation;

use std::path::Path;
use std::process::Command;

use mutation::{Case, Rng, VMDK_FIELDS, run_all};
use vireo_storage::vmdk::VmdkReader;
use vireo_storage::{OpenOptions, TargetFormat, convert, probe};

fn corpus() -> Vec<(String, Vec<u8>)> {
    mutation::corpus("vmdk_read")
}

fn le(bytes: &[u8], at: usize, width: usize) -> u64 {
    mutation::get(bytes, at, width, false)
}

fn put(bytes: &mut [u8], at: usize, width: usize, value: u64) {
    mutation::put(bytes, at, width, value, false);
}

fn values(width: usize, len: u64, old: u64) -> Vec<u64> {
    let sectors = len / 512;
    mutation::field_values(
        width,
        old,
        &[
            sectors,
            sectors - 1,
            sectors + 1,
            len,
            8,
            512,
            513,
            1 << 15,
            1 << 16,
            1 << 32,
            1 << 47,
            1 << 56,
        ],
    )
}

/// The header that describes the tables: the footer's when the grain
/// directory is at the end.
fn live_header(seed: &[u8]) -> usize {
    if le(seed, 56, 8) == u64::MAX {
        seed.len() - 1024
    } else {
        0
    }
}

fn sparse_cases(name: &str, seed: &[u8], rng: &mut Rng, cases: &mut Vec<Case>) {
    let len = seed.len() as u64;
    let mut headers = vec![("header", 0usize)];
    if live_header(seed) != 0 {
        headers.push(("footer", seed.len() - 1024));
    }
    for (which, base) in headers {
        for &(field, at, width) in VMDK_FIELDS {
            let old = le(seed, base + at, width);
            for value in values(width, len, old) {
                let mut bytes = seed.to_vec();
                put(&mut bytes, base + at, width, value);
                cases.push(Case {
                    what: format!("{name}: {which} {field} = {value:#x}"),
                    bytes,
                });
            }
        }
    }
    let h = live_header(seed);
    if h != 0 {
        // The footer marker and the end-of-stream marker.
        for (what, at) in [
            ("footer marker size", seed.len() - 1536 + 8),
            ("footer marker type", seed.len() - 1536 + 12),
            ("eos marker value", seed.len() - 512),
            ("eos marker type", seed.len() - 512 + 12),
        ] {
            for value in [1u64, 2, 0xffff_ffff] {
                let mut bytes = seed.to_vec();
                put(&mut bytes, at, 4, value);
                cases.push(Case {
                    what: format!("{name}: {what} = {value:#x}"),
                    bytes,
                });
            }
        }
    }
    // Grain directory and grain table entries.
    let gd = le(seed, h + 56, 8) as usize * 512;
    let sectors = len / 512;
    let table_values = [1u64, 2, sectors - 1, sectors, sectors + 1, 0xffff_ffff];
    for i in 0..2 {
        for &value in &table_values {
            let mut bytes = seed.to_vec();
            put(&mut bytes, gd + 4 * i, 4, value);
            cases.push(Case {
                what: format!("{name}: grain directory entry {i} = {value:#x}"),
                bytes,
            });
        }
    }
    let gt = le(seed, gd, 4) as usize * 512;
    if gt > 0 && gt + 64 <= seed.len() {
        for i in [0usize, 1, 4, 5, 15] {
            for &value in &table_values {
                let mut bytes = seed.to_vec();
                put(&mut bytes, gt + 4 * i, 4, value);
                cases.push(Case {
                    what: format!("{name}: grain table entry {i} = {value:#x}"),
                    bytes,
                });
            }
        }
        // Compressed grains: the marker and the deflate stream.
        let grain = le(seed, gt, 4) as usize * 512;
        let compressed = le(seed, h + 77, 2) == 1;
        if compressed && grain > 0 && grain + 64 <= seed.len() {
            for value in [0u64, 1, 11, 12, 1 << 16, (1 << 17) + 4096, 0xffff_ffff] {
                let mut bytes = seed.to_vec();
                put(&mut bytes, grain + 8, 4, value);
                cases.push(Case {
                    what: format!("{name}: grain 0 marker size = {value:#x}"),
                    bytes,
                });
            }
            for _ in 0..10 {
                let mut bytes = seed.to_vec();
                let at = grain + 12 + rng.below(48);
                bytes[at] ^= 1 << rng.below(8);
                cases.push(Case {
                    what: format!("{name}: compressed byte {at} flipped"),
                    bytes,
                });
            }
        }
    }
}

fn descriptor_cases(name: &str, seed: &[u8], cases: &mut Vec<Case>) {
    let text = String::from_utf8_lossy(seed).into_owned();
    let edits: &[(&str, &str)] = &[
        ("RW 2048 SPARSE", "RW 18446744073709551615 SPARSE"),
        ("RW 2048 SPARSE", "RW 4096 SPARSE"),
        ("RW 2048 SPARSE", "RW 2048 VMFSSPARSE"),
        ("RW 2048 SPARSE", "NOACCESS 2048 SPARSE"),
        ("RW 64 ZERO", "RW 36028797018963968 ZERO"),
        ("\"raw-4k.img\" 0", "\"raw-4k.img\" 18446744073709551615"),
        ("\"raw-4k.img\" 0", "\"raw-4k.img\" 7"),
        ("\"raw-4k.img\"", "\"../raw-4k.img\""),
        ("\"raw-4k.img\"", "\"/etc/passwd\""),
        ("\"raw-4k.img\"", "\"fuzz.vmdk\""),
        ("\"vmdk-sparse-data.vmdk\"", "\"fuzz.vmdk\""),
        ("\"vmdk-sparse-data.vmdk\"", "\"vmdk-desc.vmdk\""),
        ("\"vmdk-sparse-data.vmdk\"", "\"vmdk-sparse-data.vmdk"),
        ("\"vmdk-sparse-data.vmdk\"", "\"\""),
        ("\"vmdk-sparse-data.vmdk\"", "\"nonexistent.vmdk\""),
        ("parentCID=ffffffff", "parentCID=1234abcd"),
        ("RW 64 ZERO", "RW x ZERO"),
        ("RW 64 ZERO", "RW 64"),
        ("RW 8 FLAT \"raw-4k.img\" 0", "RW 8 FLAT"),
    ];
    for (from, to) in edits {
        cases.push(Case {
            what: format!("{name}: '{from}' -> '{to}'"),
            bytes: text.replacen(from, to, 1).into_bytes(),
        });
    }
    // More extents than a disk may have.
    let many = text.replace("RW 64 ZERO\n", &"RW 1 ZERO\n".repeat(20_000));
    cases.push(Case {
        what: format!("{name}: 20000 extents"),
        bytes: many.into_bytes(),
    });
    // A descriptor larger than 1 MiB.
    let mut big = text.clone().into_bytes();
    big.resize((1 << 20) + 1, b'#');
    cases.push(Case {
        what: format!("{name}: 1 MiB + 1 byte"),
        bytes: big,
    });
}

fn cases(seeds: &[(String, Vec<u8>)]) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut rng = Rng(0x005e_ed0f_7d4b);
    for (name, seed) in seeds {
        if seed.starts_with(b"KDMV") {
            sparse_cases(name, seed, &mut rng, &mut cases);
        } else if seed.starts_with(b"# Disk DescriptorFile") {
            descriptor_cases(name, seed, &mut cases);
        } else {
            continue;
        }
        for _ in 0..30 {
            let mut bytes = seed.clone();
            let at = rng.below(bytes.len());
            let value = rng.next() as u8;
            bytes[at] = value;
            cases.push(Case {
                what: format!("{name}: byte {at} = {value:#x}"),
                bytes,
            });
        }
        for len in [0, 4, 79, 511, 512, 1024, seed.len() / 2, seed.len() - 1] {
            if len < seed.len() {
                cases.push(Case {
                    what: format!("{name}: truncated to {len} bytes"),
                    bytes: seed[..len].to_vec(),
                });
            }
        }
    }
    cases
}

/// Reads the disk as the fuzz target does; returns every error message
/// and whether it opened.
/// With `out`, a small disk is converted to raw there too.
/// Reads the case (and, for one case in eight, converts it: conversion
/// syncs its output, and the reads above are the ones it makes).
fn exercise_case(path: &Path, case: usize) -> (bool, Vec<String>) {
    let out = path.with_file_name("out.raw");
    exercise(path, case.is_multiple_of(8).then_some(out.as_path()))
}

fn exercise(path: &Path, out: Option<&Path>) -> (bool, Vec<String>) {
    let mut errors = Vec::new();
    if let Err(e) = probe(path) {
        errors.push(e.to_string());
    }
    let mut reader = match VmdkReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e.to_string());
            return (false, errors);
        }
    };
    let size = reader.size();
    let mut buf = vec![0u8; 1 << 20];
    let spots: Vec<u64> = if size <= 8 << 20 {
        (0..size).step_by(1 << 20).collect()
    } else {
        vec![0, size / 2, size - (64 << 10).min(size)]
    };
    for at in spots {
        let n = (size - at).min(if size <= 8 << 20 { 1 << 20 } else { 64 << 10 });
        if let Err(e) = reader.reads_as_zeroes(at, n) {
            errors.push(e.to_string());
        }
        if let Err(e) = reader.read_at(&mut buf[..n as usize], at) {
            errors.push(e.to_string());
        }
    }
    if let Some(out) = out.filter(|_| size <= 8 << 20) {
        let converted = convert(
            path,
            &OpenOptions::new(),
            out,
            TargetFormat::Raw,
            &mut |_, _| {},
        );
        if let Err(e) = converted {
            errors.push(e.to_string());
        }
        let _ = std::fs::remove_file(out);
    }
    (true, errors)
}

fn seed_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in corpus() {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

#[test]
fn the_seeds_read_as_qemu_reads_them() {
    let dir = seed_dir();
    let seeds = corpus();
    assert!(seeds.len() >= 6, "the corpus is missing");
    for (name, _) in seeds.iter().filter(|(n, _)| n.ends_with(".vmdk")) {
        let path = dir.path().join(name);
        let mut reader = VmdkReader::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut ours = vec![0u8; reader.size() as usize];
        reader.read_at(&mut ours, 0).unwrap();
        let reference = dir.path().join("reference.raw");
        let status = Command::new("qemu-img")
            .args(["convert", "-O", "raw", path.to_str().unwrap()])
            .arg(&reference)
            .status()
            .expect("qemu-img is required (make test installs qemu-utils)");
        assert!(status.success(), "qemu-img convert {name}");
        let mut theirs = std::fs::read(&reference).unwrap();
        if name == "vmdk-desc.vmdk" {
            // QEMU 7.2 skips ZERO extents (VMware's format has them): the
            // descriptor's disk is the sparse seed, 64 zero sectors, then
            // the flat file's 4 KiB.
            theirs.truncate(1 << 20);
            theirs.resize((1 << 20) + 64 * 512, 0);
            theirs.extend(std::fs::read(dir.path().join("raw-4k.img")).unwrap());
        }
        assert!(ours == theirs, "{name} reads differently from qemu-img");
        assert!(ours.iter().any(|&b| b != 0), "{name} holds data");
    }
}

#[test]
fn mutated_vmdk_files_give_errors_naming_them_or_read() {
    let dir = seed_dir();
    let cases = cases(&corpus());
    assert!(cases.len() > 500, "{} cases", cases.len());
    run_all(
        dir.path(),
        "fuzz.vmdk",
        &["fuzz.vmdk", "out.raw"],
        cases,
        exercise_case,
    );
}
