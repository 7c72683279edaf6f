//! The RFB protocol (RFC 6143), free of GTK and of any I/O.
//!
//! [`messages`] parses what a client sends and encodes what a server sends.
//! Parsers work on byte buffers that may hold a partial message, so a server
//! can feed them straight from a socket, and they treat every length a peer
//! sends as hostile.

pub mod messages;
pub mod pixel;

pub use messages::{ClientMessage, ParseError};
pub use pixel::PixelFormat;
