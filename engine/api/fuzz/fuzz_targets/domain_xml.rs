//! Feeds arbitrary text to the libvirt domain XML parser. A parsed domain
//! must be written back, and that XML must parse to the same domain.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vireo_api::Domain;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(domain) = Domain::from_xml(text) else {
        return;
    };
    let _ = domain.memory_bytes();
    for disk in &domain.devices.disks {
        let _ = (disk.unsupported(), disk.queues(), disk.volume(), disk.bus());
    }
    let xml = domain.to_xml().expect("a parsed domain is written back");
    let back = Domain::from_xml(&xml).expect("the written-back domain parses");
    assert_eq!(back, domain);
});
