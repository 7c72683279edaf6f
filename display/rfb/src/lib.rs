//! The RFB protocol (RFC 6143), free of GTK and of any I/O.
//!
//! [`messages`] parses what a client sends; [`server`] builds what a server
//! sends (handshake, VncAuth, updates, pseudo-encodings) and [`encode`]
//! turns framebuffer rectangles into Raw, Hextile, ZRLE or Tight.
//! Parsers work on byte buffers that may hold a partial message, so a server
//! can feed them straight from a socket, and they treat every length a peer
//! sends as hostile.

pub mod encode;
pub mod messages;
pub mod pixel;
pub mod server;

pub use messages::{ClientMessage, ParseError};
pub use pixel::PixelFormat;
pub use server::Rect;
