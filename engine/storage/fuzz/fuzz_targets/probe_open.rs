//! Writes arbitrary bytes to an image file, probes its header and opens
//! it read-only (with its backing chain), then reads the start, the middle
//! and the end of the disk. Any panic fails, including one inside imago
//! that `Image` would turn into an error (libFuzzer's panic hook aborts
//! first).

#![no_main]

use libfuzzer_sys::fuzz_target;
use vireo_storage::{Image, OpenOptions, probe};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vireo-storage-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzz.img");
    std::fs::write(&path, data).unwrap();
    let _ = probe(&path);
    let Ok(image) = Image::open(&path, &OpenOptions::new().read_only(true)) else {
        return;
    };
    let size = image.size();
    let mut buf = vec![0u8; size.min(64 << 10) as usize];
    let _ = image.read_at(&mut buf, 0);
    let mut sector = vec![0u8; size.min(512) as usize];
    let last = size - sector.len() as u64;
    let _ = image.read_at(&mut sector, size / 2);
    let _ = image.read_at(&mut sector, last);
});
