//! What the mutation tests (`header_mutations.rs`, `vmdk_mutations.rs`)
//! share: a fuzz target's seed corpus, header fields and the values that
//! break them, reproducible noise, and the loop that runs every mutated
//! file through the storage API on a thread with a time limit, counting
//! panics (including the ones the API turns into errors).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::time::Duration;

/// How long all cases of one test may take.
const LIMIT: Duration = Duration::from_secs(120);

/// One mutated file: its description and bytes.
pub struct Case {
    pub what: String,
    pub bytes: Vec<u8>,
}

/// xorshift64*: reproducible noise without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The seed files of fuzz target `target` (`fuzz/corpus/TARGET`), by name,
/// in name order.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
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

/// The fields (name, offset, width) of a sparse VMDK extent header
/// (little-endian).
pub const VMDK_FIELDS: &[(&str, usize, usize)] = &[
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
    ("newline_chars", 73, 4),
    ("compress_algorithm", 77, 2),
];

/// The field of `width` bytes at `at`.
pub fn get(bytes: &[u8], at: usize, width: usize, big_endian: bool) -> u64 {
    let mut all = [0u8; 8];
    if big_endian {
        all[8 - width..].copy_from_slice(&bytes[at..at + width]);
        u64::from_be_bytes(all)
    } else {
        all[..width].copy_from_slice(&bytes[at..at + width]);
        u64::from_le_bytes(all)
    }
}

/// Sets the field of `width` bytes at `at` to `value` (cut to the width).
pub fn put(bytes: &mut [u8], at: usize, width: usize, value: u64, big_endian: bool) {
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

/// Values that break a field of `width` bytes whose value is `old`: the
/// extremes, the top bit, neighbours of the old value, and `extra` (sizes
/// and offsets that matter to the format), cut to the width, without
/// `old` itself.
pub fn field_values(width: usize, old: u64, extra: &[u64]) -> Vec<u64> {
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
    ];
    values.extend_from_slice(extra);
    for v in &mut values {
        *v &= max;
    }
    values.sort_unstable();
    values.dedup();
    values.retain(|&v| v != old);
    values
}

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Writes each case as `file` in `dir` (where the seeds are, so backing
/// files and extents are found) and runs `exercise(path, index)` on it,
/// which returns whether the file opened and every error message. Fails
/// the test, listing the cases, if any panicked, gave an error naming
/// none of `names`, or if under a fifth of the files opened at all (so the
/// read paths ran too) or the whole run took over two minutes.
pub fn run_all(
    dir: &Path,
    file: &str,
    names: &'static [&'static str],
    cases: Vec<Case>,
    exercise: fn(&Path, usize) -> (bool, Vec<String>),
) {
    HOOK.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default_hook(info);
        }));
    });
    let count = cases.len();
    let progress = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let thread_progress = progress.clone();
    let path: PathBuf = dir.join(file);
    std::thread::spawn(move || {
        let _ = tx.send(run_cases(&path, names, &cases, exercise, &thread_progress));
    });
    let failures = match rx.recv_timeout(LIMIT) {
        Ok(failures) => failures,
        Err(_) => panic!(
            "{count} cases did not finish in {} s; at: {}",
            LIMIT.as_secs(),
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

fn run_cases(
    path: &Path,
    names: &[&str],
    cases: &[Case],
    exercise: fn(&Path, usize) -> (bool, Vec<String>),
    progress: &Mutex<String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut opened = 0;
    for (i, case) in cases.iter().enumerate() {
        *progress.lock().unwrap() = case.what.clone();
        std::fs::write(path, &case.bytes).unwrap();
        let panics = PANICS.load(Ordering::SeqCst);
        let (open, errors) = match std::panic::catch_unwind(|| exercise(path, i)) {
            Ok(outcome) => outcome,
            Err(_) => {
                failures.push(format!("{}: a panic escaped the storage API", case.what));
                continue;
            }
        };
        opened += usize::from(open);
        if PANICS.load(Ordering::SeqCst) != panics {
            failures.push(format!("{}: panicked: {errors:?}", case.what));
        }
        for e in errors {
            if !names.iter().any(|n| e.contains(n)) {
                failures.push(format!("{}: error does not name the file: {e}", case.what));
            }
        }
    }
    if opened < cases.len() / 5 {
        failures.push(format!("only {opened} of {} files opened", cases.len()));
    }
    failures
}
