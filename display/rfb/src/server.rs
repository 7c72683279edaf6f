//! Server-to-client messages (RFC 6143 §7.6), the security handshake and
//! the pseudo-encodings a server announces in an update.

use des::Des;
use des::cipher::{BlockEncrypt, KeyInit};

use crate::pixel::PixelFormat;

/// Encoding numbers (RFC 6143 §7.7 and the RFB community registry).
pub mod encoding {
    /// Raw pixels.
    pub const RAW: i32 = 0;
    /// Copy a rectangle from elsewhere on the screen.
    pub const COPY_RECT: i32 = 1;
    /// Hextile.
    pub const HEXTILE: i32 = 5;
    /// Tight.
    pub const TIGHT: i32 = 7;
    /// ZRLE.
    pub const ZRLE: i32 = 16;
    /// Pseudo: the framebuffer changed size.
    pub const DESKTOP_SIZE: i32 = -223;
    /// Pseudo: no more rectangles in this update.
    pub const LAST_RECT: i32 = -224;
    /// Pseudo: cursor shape.
    pub const CURSOR: i32 = -239;
    /// Pseudo: relative or absolute pointer.
    pub const POINTER_TYPE_CHANGE: i32 = -257;
    /// Pseudo: QEMU Extended Key Event.
    pub const QEMU_EXTENDED_KEY: i32 = -258;
    /// Pseudo: QEMU keyboard LED state.
    pub const QEMU_LED_STATE: i32 = -261;
    /// Pseudo: size and screen layout, with SetDesktopSize.
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    /// Pseudo: Tight/ZRLE compression level 0 (…9 at -247).
    pub const COMPRESS_LEVEL_0: i32 = -256;
    /// Pseudo: compression level 9.
    pub const COMPRESS_LEVEL_9: i32 = -247;
}

/// Security types.
pub mod security {
    /// Invalid (3.3: the connection failed).
    pub const INVALID: u8 = 0;
    /// No authentication.
    pub const NONE: u8 = 1;
    /// VNC authentication (DES challenge-response).
    pub const VNC_AUTH: u8 = 2;
}

/// The security message for protocol 3.`minor`: 3.3 sends the one chosen
/// type as a u32, 3.7 and later a list the client picks from.
pub fn security_offer(minor: u8, types: &[u8]) -> Vec<u8> {
    if minor < 7 {
        let t = types.first().copied().unwrap_or(security::INVALID);
        u32::from(t).to_be_bytes().to_vec()
    } else {
        let mut out = vec![types.len() as u8];
        out.extend_from_slice(types);
        out
    }
}

/// The SecurityResult message; 3.8 adds a reason to a failure.
pub fn security_result(minor: u8, ok: bool, reason: &str) -> Vec<u8> {
    let mut out = u32::from(!ok).to_be_bytes().to_vec();
    if !ok && minor >= 8 {
        out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
    }
    out
}

/// The DES key VNC derives from a password: its first 8 bytes (padded with
/// zeros), each with its bits reversed.
pub fn vnc_auth_key(password: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    key
}

/// The response a client that knows `password` gives to `challenge`: the
/// challenge encrypted with DES in ECB mode under [`vnc_auth_key`].
pub fn vnc_auth_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let cipher = Des::new(&vnc_auth_key(password).into());
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(block.into());
    }
    out
}

/// Compares a VncAuth response in constant time.
pub fn vnc_auth_check(password: &[u8], challenge: &[u8; 16], response: &[u8; 16]) -> bool {
    let expected = vnc_auth_response(password, challenge);
    expected
        .iter()
        .zip(response)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// ServerInit: size, the server's pixel format and the desktop name.
pub fn server_init(width: u16, height: u16, pf: &PixelFormat, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + name.len());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&pf.to_bytes());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// A rectangle on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left edge.
    pub x: u16,
    /// Top edge.
    pub y: u16,
    /// Width.
    pub w: u16,
    /// Height.
    pub h: u16,
}

impl Rect {
    /// A rectangle.
    pub const fn new(x: u16, y: u16, w: u16, h: u16) -> Self {
        Self { x, y, w, h }
    }

    /// Pixels covered.
    pub fn area(&self) -> usize {
        usize::from(self.w) * usize::from(self.h)
    }

    /// The part of `self` inside a `width`×`height` screen.
    pub fn clip(&self, width: u16, height: u16) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        let w = self.w.min(width - x);
        let h = self.h.min(height - y);
        Rect { x, y, w, h }
    }
}

/// Appends the FramebufferUpdate header for `count` rectangles (0xFFFF
/// with LastRect).
pub fn update_header(count: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&count.to_be_bytes());
}

/// Appends a rectangle header.
pub fn rect_header(r: Rect, encoding: i32, out: &mut Vec<u8>) {
    for v in [r.x, r.y, r.w, r.h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

/// Appends a DesktopSize pseudo-rectangle.
pub fn desktop_size(width: u16, height: u16, out: &mut Vec<u8>) {
    rect_header(Rect::new(0, 0, width, height), encoding::DESKTOP_SIZE, out);
}

/// Why an ExtendedDesktopSize rectangle is sent (its x field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeReason {
    /// The server changed the size.
    Server = 0,
    /// This client asked (SetDesktopSize).
    ThisClient = 1,
    /// Another client asked.
    OtherClient = 2,
}

/// Result codes of SetDesktopSize (the y field).
pub mod size_status {
    /// Done.
    pub const OK: u16 = 0;
    /// Resizing is prohibited.
    pub const PROHIBITED: u16 = 1;
    /// Out of resources.
    pub const OUT_OF_RESOURCES: u16 = 2;
    /// Invalid screen layout.
    pub const INVALID_LAYOUT: u16 = 3;
}

/// Appends an ExtendedDesktopSize pseudo-rectangle with one screen.
pub fn extended_desktop_size(
    reason: SizeReason,
    status: u16,
    width: u16,
    height: u16,
    out: &mut Vec<u8>,
) {
    rect_header(
        Rect::new(reason as u16, status, width, height),
        encoding::EXTENDED_DESKTOP_SIZE,
        out,
    );
    out.extend_from_slice(&[1, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes()); // screen id
    for v in [0u16, 0, width, height] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
}

/// Appends the empty QEMU Extended Key Event rectangle that tells the
/// client it may send scancodes.
pub fn qemu_extended_key_ack(out: &mut Vec<u8>) {
    rect_header(Rect::new(0, 0, 0, 0), encoding::QEMU_EXTENDED_KEY, out);
}

/// Appends a QEMU LED state rectangle: bit 0 Scroll, 1 Num, 2 Caps Lock.
pub fn qemu_led_state(scroll: bool, num: bool, caps: bool, out: &mut Vec<u8>) {
    rect_header(Rect::new(0, 0, 0, 0), encoding::QEMU_LED_STATE, out);
    out.push(u8::from(scroll) | u8::from(num) << 1 | u8::from(caps) << 2);
}

/// Appends a PointerTypeChange rectangle (absolute or relative pointer).
pub fn pointer_type(absolute: bool, out: &mut Vec<u8>) {
    rect_header(
        Rect::new(u16::from(absolute), 0, 0, 0),
        encoding::POINTER_TYPE_CHANGE,
        out,
    );
}

/// Appends a LastRect rectangle.
pub fn last_rect(out: &mut Vec<u8>) {
    rect_header(Rect::new(0, 0, 0, 0), encoding::LAST_RECT, out);
}

/// The arrow the server shows as its cursor: 'X' black, '.' white.
const ARROW: [&str; 12] = [
    "X          ",
    "XX         ",
    "X.X        ",
    "X..X       ",
    "X...X      ",
    "X....X     ",
    "X.....X    ",
    "X......X   ",
    "X....XXXX  ",
    "X..X.X     ",
    "XX  X.X    ",
    "     XX    ",
];

/// Appends a Cursor pseudo-rectangle with a small arrow, hotspot top left.
pub fn arrow_cursor(pf: &PixelFormat, out: &mut Vec<u8>) {
    let w = ARROW[0].len();
    let h = ARROW.len();
    rect_header(Rect::new(0, 0, w as u16, h as u16), encoding::CURSOR, out);
    for row in ARROW {
        for c in row.bytes() {
            let rgb = if c == b'.' { 0x00ff_ffff } else { 0 };
            pf.put(pf.pack(rgb), out);
        }
    }
    let row_bytes = w.div_ceil(8);
    for row in ARROW {
        let mut mask = vec![0u8; row_bytes];
        for (i, c) in row.bytes().enumerate() {
            if c != b' ' {
                mask[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out.extend_from_slice(&mask);
    }
}

/// The Bell message.
pub fn bell() -> [u8; 1] {
    [2]
}

/// ServerCutText with Latin-1 `text`.
pub fn server_cut_text(text: &[u8]) -> Vec<u8> {
    let mut out = vec![3, 0, 0, 0];
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text);
    out
}

/// SetColourMapEntries with the BGR233 map [`PixelFormat::pack`] uses
/// for colour-map formats.
pub fn bgr233_colour_map() -> Vec<u8> {
    let mut out = vec![1, 0, 0, 0, 1, 0];
    for i in 0u16..256 {
        let r = (i & 7) * 65535 / 7;
        let g = ((i >> 3) & 7) * 65535 / 7;
        let b = ((i >> 6) & 3) * 65535 / 3;
        for v in [r, g, b] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_auth_matches_a_known_des_vector() {
        // FIPS 81 style check: DES(133457799BBCDFF1, 0123456789ABCDEF) =
        // 85E813540F0AB405. The VNC key is the bit-reversed password, so the
        // password whose reversal is that key yields that ciphertext.
        let key: [u8; 8] = [0x13, 0x34, 0x57, 0x79, 0x9b, 0xbc, 0xdf, 0xf1];
        let password: Vec<u8> = key.iter().map(|b| b.reverse_bits()).collect();
        let mut challenge = [0u8; 16];
        challenge[..8].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        challenge[8..].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        let r = vnc_auth_response(&password, &challenge);
        assert_eq!(r[..8], [0x85, 0xe8, 0x13, 0x54, 0x0f, 0x0a, 0xb4, 0x05]);
        assert_eq!(r[8..], r[..8]);
        assert!(vnc_auth_check(&password, &challenge, &r));
        assert!(!vnc_auth_check(b"other", &challenge, &r));
    }

    #[test]
    fn vnc_auth_key_uses_eight_bytes_bit_reversed() {
        assert_eq!(
            vnc_auth_key(b"\x01\x80password-too-long"),
            [0x80, 0x01, 0x0e, 0x86, 0xce, 0xce, 0xee, 0xf6]
        );
        assert_eq!(vnc_auth_key(b""), [0; 8]);
    }

    #[test]
    fn security_messages_follow_the_protocol_version() {
        assert_eq!(security_offer(3, &[2]), [0, 0, 0, 2]);
        assert_eq!(security_offer(8, &[1, 2]), [2, 1, 2]);
        assert_eq!(security_result(8, true, "x"), [0, 0, 0, 0]);
        assert_eq!(security_result(7, false, "no"), [0, 0, 0, 1]);
        assert_eq!(
            security_result(8, false, "no"),
            [0, 0, 0, 1, 0, 0, 0, 2, b'n', b'o']
        );
    }

    #[test]
    fn pseudo_rectangles_have_their_wire_layout() {
        let mut out = Vec::new();
        extended_desktop_size(SizeReason::Server, 0, 800, 600, &mut out);
        assert_eq!(out.len(), 12 + 4 + 16);
        assert_eq!(&out[8..12], &(-308i32).to_be_bytes());
        out.clear();
        qemu_led_state(false, true, true, &mut out);
        assert_eq!(out.len(), 13);
        assert_eq!(out[12], 6);
        out.clear();
        arrow_cursor(&PixelFormat::XRGB8888, &mut out);
        assert_eq!(out.len(), 12 + 11 * 12 * 4 + 2 * 12);
        assert_eq!(
            Rect::new(10, 10, 100, 100).clip(50, 20),
            Rect::new(10, 10, 40, 10)
        );
    }
}
