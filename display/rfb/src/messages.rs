//! Client-to-server messages (RFC 6143 §7.5) and the version handshake.

use crate::pixel::PixelFormat;

/// The protocol version line a server sends first.
pub const VERSION_3_8: &[u8; 12] = b"RFB 003.008\n";

/// The most encodings a client may list. Real clients send about 20; the
/// field allows 65535, which would be 256 KiB of noise.
pub const MAX_ENCODINGS: u16 = 1024;

/// The largest cut-text a client may send (1 MiB). Longer text ends the
/// connection instead of making the server buffer it.
pub const MAX_CUT_TEXT: u32 = 1 << 20;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Type 0: the format the client wants pixels in.
    SetPixelFormat(PixelFormat),
    /// Type 2: encodings the client supports, preferred first.
    SetEncodings(Vec<i32>),
    /// Type 3: a request for an update of a region.
    FramebufferUpdateRequest {
        /// Only changes since the last update are wanted.
        incremental: bool,
        /// Left edge.
        x: u16,
        /// Top edge.
        y: u16,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
    },
    /// Type 4: a key press or release, as an X keysym.
    KeyEvent {
        /// Pressed (true) or released.
        down: bool,
        /// X11 keysym.
        keysym: u32,
    },
    /// Type 5: pointer position and buttons.
    PointerEvent {
        /// Button bits, 1 = left, 2 = middle, 4 = right, 8/16 = wheel.
        buttons: u8,
        /// Horizontal position.
        x: u16,
        /// Vertical position.
        y: u16,
    },
    /// Type 6: clipboard text, Latin-1.
    ClientCutText(Vec<u8>),
    /// Type 251: the client asks for a new size (ExtendedDesktopSize);
    /// the screen layout that follows is checked and skipped.
    SetDesktopSize {
        /// Requested width.
        width: u16,
        /// Requested height.
        height: u16,
        /// Number of screens in the layout.
        screens: u8,
    },
    /// Type 255, subtype 0: QEMU Extended Key Event (a keysym plus an XT
    /// scancode, so no keymap is needed).
    QemuExtendedKey {
        /// Pressed (true) or released.
        down: bool,
        /// X11 keysym (may be 0).
        keysym: u32,
        /// XT scancode; 0xE0-prefixed keys have 0x80 set in the high byte
        /// as QEMU encodes them (e.g. 0xE048 for Up).
        scancode: u32,
    },
}

/// Why a client message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An unknown message type.
    #[error("unknown client message type {0}")]
    UnknownType(u8),
    /// An unknown QEMU client message subtype.
    #[error("unknown QEMU client message subtype {0}")]
    UnknownQemuSubtype(u8),
    /// SetPixelFormat asked for a format we cannot produce.
    #[error("unsupported pixel format: {0}")]
    PixelFormat(&'static str),
    /// SetEncodings lists too many encodings.
    #[error("SetEncodings lists {0} encodings (at most {MAX_ENCODINGS})")]
    TooManyEncodings(u16),
    /// ClientCutText is too long.
    #[error("ClientCutText of {0} bytes exceeds the {MAX_CUT_TEXT}-byte limit")]
    CutTextTooLong(u32),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ClientMessage {
    /// Parses one message from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a message (read more
    /// and call again), `Ok(Some((message, bytes_used)))` when it holds a
    /// whole one, and an error when the client broke the protocol; the
    /// connection should then be closed.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ParseError> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        let need = |n: usize| buf.len() >= n;
        let msg = match kind {
            0 => {
                if !need(20) {
                    return Ok(None);
                }
                let mut pf = [0u8; PixelFormat::LEN];
                pf.copy_from_slice(&buf[4..20]);
                let pf = PixelFormat::from_bytes(&pf);
                pf.validate().map_err(ParseError::PixelFormat)?;
                (ClientMessage::SetPixelFormat(pf), 20)
            }
            2 => {
                if !need(4) {
                    return Ok(None);
                }
                let count = be16(buf, 2);
                if count > MAX_ENCODINGS {
                    return Err(ParseError::TooManyEncodings(count));
                }
                let len = 4 + 4 * usize::from(count);
                if !need(len) {
                    return Ok(None);
                }
                let encodings = buf[4..len]
                    .chunks_exact(4)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (ClientMessage::SetEncodings(encodings), len)
            }
            3 => {
                if !need(10) {
                    return Ok(None);
                }
                (
                    ClientMessage::FramebufferUpdateRequest {
                        incremental: buf[1] != 0,
                        x: be16(buf, 2),
                        y: be16(buf, 4),
                        width: be16(buf, 6),
                        height: be16(buf, 8),
                    },
                    10,
                )
            }
            4 => {
                if !need(8) {
                    return Ok(None);
                }
                (
                    ClientMessage::KeyEvent {
                        down: buf[1] != 0,
                        keysym: be32(buf, 4),
                    },
                    8,
                )
            }
            5 => {
                if !need(6) {
                    return Ok(None);
                }
                (
                    ClientMessage::PointerEvent {
                        buttons: buf[1],
                        x: be16(buf, 2),
                        y: be16(buf, 4),
                    },
                    6,
                )
            }
            6 => {
                if !need(8) {
                    return Ok(None);
                }
                let len = be32(buf, 4);
                if len > MAX_CUT_TEXT {
                    return Err(ParseError::CutTextTooLong(len));
                }
                let end = 8 + len as usize;
                if !need(end) {
                    return Ok(None);
                }
                (ClientMessage::ClientCutText(buf[8..end].to_vec()), end)
            }
            251 => {
                if !need(8) {
                    return Ok(None);
                }
                let screens = buf[6];
                let len = 8 + 16 * usize::from(screens);
                if !need(len) {
                    return Ok(None);
                }
                (
                    ClientMessage::SetDesktopSize {
                        width: be16(buf, 2),
                        height: be16(buf, 4),
                        screens,
                    },
                    len,
                )
            }
            255 => {
                if !need(2) {
                    return Ok(None);
                }
                match buf[1] {
                    0 => {
                        if !need(12) {
                            return Ok(None);
                        }
                        (
                            ClientMessage::QemuExtendedKey {
                                down: be16(buf, 2) != 0,
                                keysym: be32(buf, 4),
                                scancode: be32(buf, 8),
                            },
                            12,
                        )
                    }
                    sub => return Err(ParseError::UnknownQemuSubtype(sub)),
                }
            }
            other => return Err(ParseError::UnknownType(other)),
        };
        Ok(Some(msg))
    }

    /// Encodes the message as a client would send it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::SetPixelFormat(pf) => {
                out.extend_from_slice(&[0, 0, 0, 0]);
                out.extend_from_slice(&pf.to_bytes());
            }
            ClientMessage::SetEncodings(encs) => {
                let count = u16::try_from(encs.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&[2, 0]);
                out.extend_from_slice(&count.to_be_bytes());
                for e in encs.iter().take(usize::from(count)) {
                    out.extend_from_slice(&e.to_be_bytes());
                }
            }
            ClientMessage::FramebufferUpdateRequest {
                incremental,
                x,
                y,
                width,
                height,
            } => {
                out.extend_from_slice(&[3, u8::from(*incremental)]);
                for v in [x, y, width, height] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            ClientMessage::KeyEvent { down, keysym } => {
                out.extend_from_slice(&[4, u8::from(*down), 0, 0]);
                out.extend_from_slice(&keysym.to_be_bytes());
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                out.extend_from_slice(&[5, *buttons]);
                out.extend_from_slice(&x.to_be_bytes());
                out.extend_from_slice(&y.to_be_bytes());
            }
            ClientMessage::ClientCutText(text) => {
                let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&[6, 0, 0, 0]);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&text[..len as usize]);
            }
            ClientMessage::SetDesktopSize {
                width,
                height,
                screens,
            } => {
                out.extend_from_slice(&[251, 0]);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
                out.extend_from_slice(&[*screens, 0]);
                for i in 0..*screens {
                    out.extend_from_slice(&u32::from(i).to_be_bytes());
                    for v in [0u16, 0, *width, *height] {
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    out.extend_from_slice(&0u32.to_be_bytes());
                }
            }
            ClientMessage::QemuExtendedKey {
                down,
                keysym,
                scancode,
            } => {
                out.extend_from_slice(&[255, 0]);
                out.extend_from_slice(&u16::from(*down).to_be_bytes());
                out.extend_from_slice(&keysym.to_be_bytes());
                out.extend_from_slice(&scancode.to_be_bytes());
            }
        }
    }
}

/// Parses the client's version line (`RFB 003.00x\n`) and returns the minor
/// version the server should speak: 3, 7 or 8 (3.5 and unknown minors
/// above 3.3 fall back as RFC 6143 §7.1.1 allows).
pub fn parse_client_version(line: &[u8; 12]) -> Option<u8> {
    if &line[..4] != b"RFB " || line[7] != b'.' || line[11] != b'\n' {
        return None;
    }
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let major = digits(&line[4..7])?;
    let minor = digits(&line[8..11])?;
    match (major, minor) {
        (3, 8..) => Some(8),
        (3, 7) => Some(7),
        (3, 3..=6) => Some(3),
        (4.., _) => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: ClientMessage) {
        let mut wire = Vec::new();
        msg.encode(&mut wire);
        assert_eq!(
            ClientMessage::parse(&wire),
            Ok(Some((msg.clone(), wire.len())))
        );
        // Every strict prefix is an incomplete message, never an error.
        for cut in 0..wire.len() {
            assert_eq!(
                ClientMessage::parse(&wire[..cut]),
                Ok(None),
                "{msg:?} cut at {cut}"
            );
        }
    }

    #[test]
    fn every_message_round_trips_and_prefixes_wait_for_more() {
        round_trip(ClientMessage::SetPixelFormat(PixelFormat::XRGB8888));
        round_trip(ClientMessage::SetEncodings(vec![16, 5, 0, -239, -223]));
        round_trip(ClientMessage::FramebufferUpdateRequest {
            incremental: true,
            x: 1,
            y: 2,
            width: 640,
            height: 480,
        });
        round_trip(ClientMessage::KeyEvent {
            down: true,
            keysym: 0xff0d,
        });
        round_trip(ClientMessage::PointerEvent {
            buttons: 1,
            x: 10,
            y: 20,
        });
        round_trip(ClientMessage::ClientCutText(b"hello".to_vec()));
        round_trip(ClientMessage::SetDesktopSize {
            width: 1024,
            height: 768,
            screens: 2,
        });
        round_trip(ClientMessage::QemuExtendedKey {
            down: false,
            keysym: 0,
            scancode: 0xe048,
        });
    }

    #[test]
    fn hostile_lengths_are_refused_before_buffering() {
        let mut cut = vec![6, 0, 0, 0];
        cut.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            ClientMessage::parse(&cut),
            Err(ParseError::CutTextTooLong(u32::MAX))
        );
        let encs = [2, 0, 0xff, 0xff];
        assert_eq!(
            ClientMessage::parse(&encs),
            Err(ParseError::TooManyEncodings(0xffff))
        );
    }

    #[test]
    fn unknown_types_and_bad_pixel_formats_are_errors() {
        assert_eq!(ClientMessage::parse(&[7]), Err(ParseError::UnknownType(7)));
        assert_eq!(
            ClientMessage::parse(&[255, 9]),
            Err(ParseError::UnknownQemuSubtype(9))
        );
        let mut spf = vec![0, 0, 0, 0];
        let mut pf = PixelFormat::XRGB8888.to_bytes();
        pf[0] = 12;
        spf.extend_from_slice(&pf);
        assert!(matches!(
            ClientMessage::parse(&spf),
            Err(ParseError::PixelFormat(_))
        ));
    }

    #[test]
    fn client_versions_map_to_what_we_speak() {
        assert_eq!(parse_client_version(b"RFB 003.008\n"), Some(8));
        assert_eq!(parse_client_version(b"RFB 003.007\n"), Some(7));
        assert_eq!(parse_client_version(b"RFB 003.003\n"), Some(3));
        assert_eq!(parse_client_version(b"RFB 003.889\n"), Some(8));
        assert_eq!(parse_client_version(b"HTTP/1.1 200"), None);
        assert_eq!(parse_client_version(b"RFB 00x.008\n"), None);
    }
}
