//! Feeds arbitrary bytes to the frame decoder as a stream of frames, read
//! as the engine reads a client (`ClientMessage`) and as a client reads the
//! engine (`ServerMessage`), e.g. over SSH from a hostile host. Every read
//! consumes at least the 4-byte length, and every message read encodes to
//! a frame that decodes to the same message.

#![no_main]

use std::any::Any;
use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use vireo_api::proto::{self, ClientMessage, FrameError, ServerMessage};

fn stream<T: Serialize + DeserializeOwned + Any + PartialEq + Debug>(data: &[u8]) {
    let mut rest = data;
    loop {
        let before = rest.len();
        match proto::read_message::<_, T>(&mut rest) {
            Ok(msg) => {
                assert!(before - rest.len() >= 4);
                let frame = proto::encode(&msg).unwrap();
                let back: T = proto::read_message(&mut &frame[..]).unwrap();
                assert_eq!(back, msg);
            }
            // The payload was read whole: go on with the next frame.
            Err(FrameError::Malformed(_)) => assert!(before - rest.len() >= 4),
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    stream::<ClientMessage>(data);
    stream::<ServerMessage>(data);
});
