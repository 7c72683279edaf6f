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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use vireo_storage::{Image, ImageFormat, OpenOptions, probe};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/probe_open");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect()
}

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

/// The sparse VMDK header fields (little-endian).
const VMDK_FIELDS: &[(&str, usize, usize)] = &[
    ("magic", 0, 4),
    ("version", 4, 4),
    ("flags", 8, 4),
    ("capacity", 12, 8),
    ("grain_size", 20, 8),
    ("descriptor_offset", 28, 8),
    ("descriptor_size", 36, 8),
    ("num_gtes_per_gt", 44, 4),
    ("rgd_offset", 48, 8),
    ("gd_offset", 56, 8),
    ("overhead", 64, 8),
    ("compress_algorithm", 77, 2),
];

/// Values for a field of `width` bytes in a file of `len` bytes whose
/// current value is `old`.
fn field_values(width: usize, len: u64, old: u64) -> Vec<u64> {
    let max = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (width * 8)) - 1
    };
    let mut values = vec![
        0,
        1,
        max,
        max >> 1,
        (max >> 1) + 1,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        old >> 1,
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
    ];
    for v in &mut values {
        *v &= max;
    }
    values.sort_unstable();
    values.dedup();
    values.retain(|&v| v != old);
    values
}

fn put(bytes: &mut [u8], at: usize, width: usize, value: u64, big_endian: bool) {
    let all = if big_endian {
        value.to_be_bytes()
    } else {
        value.to_le_bytes()
    };
    let field = if big_endian {
        &all[8 - width..]
    } else {
        &all[..width]
    };
    bytes[at..at + width].copy_from_slice(field);
}

fn get(bytes: &[u8], at: usize, width: usize, big_endian: bool) -> u64 {
    let mut all = [0u8; 8];
    if big_endian {
        all[8 - width..].copy_from_slice(&bytes[at..at + width]);
        u64::from_be_bytes(all)
    } else {
        all[..width].copy_from_slice(&bytes[at..at + width]);
        u64::from_le_bytes(all)
    }
}

/// One mutated image: its description and bytes.
struct Case {
    what: String,
    bytes: Vec<u8>,
}

/// xorshift64*: reproducible noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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
            for value in field_values(width, seed.len() as u64, old) {
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
fn exercise(path: &Path) -> (bool, Vec<String>) {
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

/// Writes every seed under its own name (so an overlay finds its backing
/// file) and each case as `fuzz.img` beside them; returns the failures.
fn run_cases(dir: PathBuf, cases: Vec<Case>, progress: Arc<Mutex<String>>) -> Vec<String> {
    let path = dir.join("fuzz.img");
    let mut failures = Vec::new();
    let mut opened = 0;
    for case in &cases {
        *progress.lock().unwrap() = case.what.clone();
        std::fs::write(&path, &case.bytes).unwrap();
        let panics = PANICS.load(Ordering::SeqCst);
        let (open, errors) = match std::panic::catch_unwind(|| exercise(&path)) {
            Ok(outcome) => outcome,
            Err(_) => {
                failures.push(format!("{}: a panic escaped the storage API", case.what));
                continue;
            }
        };
        opened += usize::from(open);
        if PANICS.load(Ordering::SeqCst) != panics {
            failures.push(format!(
                "{}: the format driver panicked: {errors:?}",
                case.what
            ));
        }
        for e in errors {
            if !e.contains("fuzz.img") {
                failures.push(format!("{}: error does not name the image: {e}", case.what));
            }
        }
    }
    // Many mutations leave a usable image: the read paths ran too.
    if opened < cases.len() / 5 {
        failures.push(format!("only {opened} of {} images opened", cases.len()));
    }
    failures
}

#[test]
fn the_seed_images_probe_and_open() {
    let seeds = corpus();
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
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let seeds = corpus();
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &seeds {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let cases = cases(&seeds);
    let count = cases.len();
    assert!(count > 500, "{count} cases");
    let progress = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let thread_progress = progress.clone();
    let thread_dir = dir.path().to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(run_cases(thread_dir, cases, thread_progress));
    });
    let failures = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(failures) => failures,
        Err(_) => panic!(
            "{count} images did not finish in 120 s; at: {}",
            progress.lock().unwrap()
        ),
    };
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
