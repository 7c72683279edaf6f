//! The engine protocol: typed messages in length-prefixed JSON frames.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes
//! of JSON. Frames larger than [`MAX_FRAME`] are refused before anything is
//! allocated, so a peer that sends garbage (say, `GET / HTTP/1.1`, which reads
//! as a 1.2 GB length) is disconnected at once.
//!
//! A connection opens with a handshake: the client sends
//! [`ClientMessage::Hello`] with its [`PROTOCOL_VERSION`]; the engine answers
//! [`ServerMessage::Welcome`] or [`ServerMessage::Rejected`] with a sentence
//! saying why. Then the client sends [`ClientMessage::Call`]s, each with an
//! id, and the engine answers each with a [`ServerMessage::Reply`] carrying
//! the same id (replies may come in any order). A client that asked for
//! events in its hello also receives [`ServerMessage::Event`]s at any time.
//! Serial console bytes travel as [`ClientMessage::ConsoleInput`] and
//! [`ServerMessage::ConsoleOutput`] on the same connection, so one byte
//! stream (a unix socket, an SSH channel) carries everything. Volume
//! bytes (`StreamData`) travel in binary frames (see [`STREAM_FRAME`]).
//!
//! The code: this file has the constants and [`FrameError`];
//! `proto/messages.rs` the messages each way and the requests and
//! responses they carry; `proto/types.rs` the errors, domain rows,
//! statistics and events inside them; `proto/frame.rs` frame encoding and
//! decoding, stream chunks and blocking I/O; `proto/async_io.rs` the same
//! on tokio streams. Everything is re-exported here, so paths are
//! `vireo_api::proto::NAME`.

mod async_io;
mod frame;
mod messages;
mod types;

pub use async_io::{read_message_async, read_message_async_with, write_message_async};
pub use frame::{
    STREAM_HEADER, decode, encode, read_frame, read_message, stream_chunk, write_message,
    write_stream_chunk,
};
pub use messages::{ClientMessage, Hello, Request, Response, ServerMessage, version_mismatch};
pub use types::{
    ApiError, DiskStats, DomainInfo, DomainState, DomainStats, DomainSummary, ErrorCode, Event,
    Lifecycle, VcpuStats,
};

use std::io;

/// The protocol version this build speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u32 = 1;

/// The first payload byte of a volume stream chunk (which JSON text never
/// starts with): `[0][call id: u64 big-endian][bytes]`, the binary form of
/// [`ClientMessage::StreamData`] and [`ServerMessage::StreamData`], so
/// volume bytes cross without base64 or JSON.
pub const STREAM_FRAME: u8 = 0;

/// The largest frame payload either side accepts: 16 MiB (a screenshot of a
/// 4K screen as PNG fits; nothing else comes close).
pub const MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the connection was closed")]
    Closed,
    /// A frame announced a payload above [`MAX_FRAME`].
    #[error(
        "frame of {0} bytes exceeds the {MAX_FRAME}-byte limit (is the peer speaking the Vireo protocol?)"
    )]
    TooLarge(usize),
    /// The payload is not a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests;
