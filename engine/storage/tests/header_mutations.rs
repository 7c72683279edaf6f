//! Runs the fuzz target's seed corpus (`fuzz/corpus/probe_open`: small
//! images made by `qemu-img`) and deterministic mutations of it through
//! [`probe`] and [`Image::open`] on stable Rust (cargo-fuzz needs nightly).
//!
//! Where `corrupt_corpus.rs` breaks one image in hand-picked ways, this
//! walks every field of the qcow2 and sparse-VMDK headers, setting each to
//! values that break sizes and offsets (0, 1, all ones, the top bit, the
//! file's length, one cluster past it, …), then flips random header bits
//! and truncates. Every image must give an error naming it, or open and
//! read, never panic (a panic hook counts the ones `Image` turns into
//! errors) and never hang (the loop runs on a thread with a time limit).

mod mutation;

use std::path::Path;

use mutation::{Case, Rng, VMDK_FIELDS, corpus, get, put, run_all};
use vireo_storage::{Image, ImageFormat, OpenOptions, probe};

/// The qcow2 header fields (offset, width) up to `compression_type`.
const QCOW2_FIELDS: &[(&str, usize, usize)] = &[
    ("magic", 0, 4),
    ("version", 4, 4),
    ("backing_file_offset", 8, 8),
    ("backing_file_size", 16, 4),
    ("cluster_bits", 20, 4),
    ("size", 24, 8),
    ("crypt_method", 32, 4),
    ("l1_size", 36, 4),
    ("l1_table_offset", 40, 8),
    ("refcount_table_offset", 48, 8),
    ("refcount_table_clusters", 56, 4),
    ("nb_snapshots", 60, 4),
    ("snapshots_offset", 64, 8),
    ("incompatible_features", 72, 8),
    ("compatible_features", 80, 8),
    ("autoclear_features", 88, 8),
    ("refcount_order", 96, 4),
    ("header_length", 100, 4),
    ("compression_type", 104, 1),
];

/// Values for a field of `width` bytes in a file of `len` bytes whose
/// current value is `old`.
fn field_values(len: u64, width: usize, old: u64) -> Vec<u64> {
    mutation::field_values(
        width,
        old,
        &[
            len,
            len - 1,
            len + 512,
            len + (64 << 10),
            9,
            21,
            22,
            1 << 20,
            1 << 40,
            1 << 56,
            1 << 62,
        ],
    )
}

/// The mutations of every seed.
fn cases(seeds: &[(String, Vec<u8>)]) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut rng = Rng(0x5eed_1ae5_0000_0004);
    for (name, seed) in seeds {
        let (fields, big_endian) = if name.starts_with("qcow2") {
            (QCOW2_FIELDS, true)
        } else if name.starts_with("vmdk") {
            (VMDK_FIELDS, false)
        } else {
            (&[][..], true)
        };
        // Field by field.
        for &(field, at, width) in fields {
            let old = get(seed, at, width, big_endian);
            for value in field_values(seed.len() as u64, width, old) {
                let mut bytes = seed.clone();
                put(&mut bytes, at, width, value, big_endian);
                cases.push(Case {
                    what: format!("{name}: {field} = {value:#x}"),
                    bytes,
                });
            }
        }
        // Random bit flips in the first 512 bytes (the header and, with
        // 512-byte clusters, what follows it).
        for _ in 0..40 {
            let mut bytes = seed.clone();
            let mut flipped = Vec::new();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len().min(512));
                let bit = rng.below(8);
                bytes[at] ^= 1 << bit;
                flipped.push(format!("{at}.{bit}"));
            }
            cases.push(Case {
                what: format!("{name}: bits {} flipped", flipped.join(",")),
                bytes,
            });
        }
        // Random bytes anywhere (tables, data, the VMDK descriptor).
        for _ in 0..20 {
            let mut bytes = seed.clone();
            let at = rng.below(bytes.len());
            let value = rng.next() as u8;
            bytes[at] = value;
            cases.push(Case {
                what: format!("{name}: byte {at} = {value:#x}"),
                bytes,
            });
        }
        // Truncations.
        for len in [0, 3, 4, 20, 71, 72, 103, 104, 511, 512, seed.len() / 2] {
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

/// What happened to one image: every error message, and whether it opened.
fn exercise(path: &Path, _case: usize) -> (bool, Vec<String>) {
    let mut errors = Vec::new();
    if let Err(e) = probe(path) {
        errors.push(e.to_string());
    }
    let image = match Image::open(path, &OpenOptions::new().read_only(true)) {
        Ok(image) => image,
        Err(e) => {
            errors.push(e.to_string());
            return (false, errors);
        }
    };
    let size = image.size();
    let mut buf = vec![0u8; size.min(64 << 10) as usize];
    let mut sector = vec![0u8; size.min(512) as usize];
    let last = size - sector.len() as u64;
    let results = [
        image.read_at(&mut buf, 0),
        image.read_at(&mut sector, size / 2),
        image.read_at(&mut sector, last),
    ];
    errors.extend(
        results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string())),
    );
    (true, errors)
}

#[test]
fn the_seed_images_probe_and_open() {
    let seeds = corpus("probe_open");
    assert!(seeds.len() >= 7, "the corpus is missing");
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &seeds {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    for (name, _) in &seeds {
        let path = dir.path().join(name);
        let info = probe(&path).unwrap_or_else(|e| panic!("{e}"));
        let want = match name.split('-').next().unwrap() {
            "qcow2" => ImageFormat::Qcow2,
            "vmdk" => ImageFormat::Vmdk,
            _ => ImageFormat::Raw,
        };
        assert_eq!(info.format, want, "{name}");
        if want == ImageFormat::Vmdk {
            // Sparse VMDK is probed (for import), not opened.
            let err = Image::open(&path, &OpenOptions::new().read_only(true)).unwrap_err();
            assert!(err.to_string().contains(name.as_str()), "{err}");
            assert_eq!(info.virtual_size, 1 << 20, "{name}");
            continue;
        }
        let image = Image::open(&path, &OpenOptions::new().read_only(true))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; 4096];
        image.read_at(&mut buf, 0).unwrap();
        // The qcow2 seeds hold qemu-io's patterns at the start.
        if name.starts_with("qcow2-v3") || name.starts_with("qcow2-overlay") {
            assert!(buf.iter().all(|&b| b == 0x61), "{name}");
        }
        if name.starts_with("qcow2-compressed") {
            assert!(
                buf.iter().all(|&b| b == 0x61),
                "{name}: compressed clusters"
            );
        }
    }
}

#[test]
fn every_header_field_mutated_gives_an_error_or_a_working_image() {
    let seeds = corpus("probe_open");
    // Every seed under its own name, so an overlay finds its backing file.
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &seeds {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let cases = cases(&seeds);
    assert!(cases.len() > 500, "{} cases", cases.len());
    run_all(dir.path(), "fuzz.img", &["fuzz.img"], cases, exercise);
}
