//! What the serial module's unit tests share: a deterministic output stream
//! and the VMM's side of `serial.log`.

use std::fs::File;
use std::path::Path;

/// The byte at offset `i` of a test stream of 23-byte lines (never zero).
fn pattern(i: u64) -> u8 {
    b"abcdefghijklmnopqrstuv\n"[(i % 23) as usize]
}

/// The test stream's bytes at `range`.
pub fn stream(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(pattern).collect()
}

/// `path` opened (created if missing) for appending, as the VMM writes
/// `serial.log`.
pub fn open_append(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}
