//! Feeds arbitrary text to the storage pool and volume XML parsers. A
//! parsed pool must be written back and parse to the same definition.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vireo_api::storage::{PoolDef, VolumeDef};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = VolumeDef::parse(text);
    let Ok(pool) = PoolDef::parse(text) else {
        return;
    };
    let xml = pool.to_xml(Some((u64::MAX, 0, u64::MAX)));
    assert_eq!(
        PoolDef::parse(&xml).expect("the written-back pool parses"),
        pool
    );
});
