//! Writes arbitrary bytes as a VMDK file (a sparse or streamOptimized
//! extent, or a descriptor naming extents beside it), opens it with the
//! crate's own VMDK reader and reads it: the whole disk when it is small,
//! else its start, middle and end, asking which ranges read as zeroes on
//! the way; a small disk is also converted to raw. Any panic fails.
//! tests/vmdk_mutations.rs runs the corpus and mutations of it on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vireo_storage::vmdk::VmdkReader;
use vireo_storage::{OpenOptions, TargetFormat, convert};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vireo-vmdk-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzz.vmdk");
    std::fs::write(&path, data).unwrap();
    let Ok(mut reader) = VmdkReader::open(&path) else {
        return;
    };
    let size = reader.size();
    let mut buf = vec![0u8; 1 << 20];
    if size <= 8 << 20 {
        let mut at = 0;
        while at < size {
            let n = (size - at).min(1 << 20);
            let _ = reader.reads_as_zeroes(at, n);
            let _ = reader.read_at(&mut buf[..n as usize], at);
            at += n;
        }
        let out = dir.join("out.raw");
        let _ = convert(
            &path,
            &OpenOptions::new(),
            &out,
            TargetFormat::Raw,
            &mut |_, _| {},
        );
        let _ = std::fs::remove_file(&out);
    } else {
        for at in [0, size / 2, size - (64 << 10).min(size)] {
            let n = (size - at).min(64 << 10);
            let _ = reader.reads_as_zeroes(at, n);
            let _ = reader.read_at(&mut buf[..n as usize], at);
        }
    }
});
