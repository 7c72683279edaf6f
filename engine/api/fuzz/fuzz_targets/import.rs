//! Feeds arbitrary text to the import path (`vireoctl define`): a document
//! that imports, with a generated `<uuid>` and MAC addresses inserted,
//! must import again with that UUID.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use vireo_api::import::Imported;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut imported) = Imported::parse(text) else {
        return;
    };
    let uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let had_uuid = imported.domain.uuid;
    imported.ensure_uuid(uuid);
    imported.ensure_macs();
    let again = Imported::parse(&imported.xml).expect("the completed document imports");
    assert_eq!(again.domain.uuid, Some(had_uuid.unwrap_or(uuid)));
});
