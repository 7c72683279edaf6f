//! Feeds arbitrary bytes to the client-message parser as a server would:
//! message after message from one buffer. Every parsed message must
//! re-encode to bytes that parse back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vireo_rfb::ClientMessage;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    // Each round consumes at least one byte, so this ends.
    while let Ok(Some((msg, used))) = ClientMessage::parse(buf) {
        assert!(used > 0 && used <= buf.len());
        let mut wire = Vec::new();
        msg.encode(&mut wire);
        assert_eq!(ClientMessage::parse(&wire), Ok(Some((msg, wire.len()))));
        buf = &buf[used..];
    }
});
