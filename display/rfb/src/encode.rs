//! Rectangle encoders: Raw, Hextile, ZRLE and Tight (lossless), from the
//! framebuffer's `0x00RRGGBB` pixels to any client pixel format.
//!
//! One [`Encoder`] per connection: ZRLE and Tight keep zlib streams that
//! live as long as the connection (RFC 6143 §7.7.6; Tight's four streams),
//! so an encoder must see every rectangle the client receives, in order.
//!
//! ZRLE looks at each 64×64 tile once: a solid check, then one pass that
//! finds its runs and its palette together; the subencoding is chosen from
//! exact sizes and written from those runs. Tight (as QEMU's and TightVNC's
//! encoders) first cuts large solid areas out of the rectangle, found on a
//! 16-pixel grid and grown to their exact edges, sends them as fills and
//! splits the rest around them; what remains goes in pieces of at most
//! 64 Ki pixels as mono, palette or full-colour data. Both read the frame
//! in place when the client takes the framebuffer's own format.
//!
//! This file has the frame, the encoder's state and its entry points
//! (Raw and CopyRect included), the constants of every encoding and the
//! pieces ZRLE and Tight share (palette, zlib streams);
//! `encode/hextile.rs`, `encode/zrle.rs` and `encode/tight.rs` have one
//! encoding each; `encode/tests.rs` has decoders written from the
//! protocol text.

mod hextile;
mod tight;
mod zrle;

use flate2::{Compress, Compression, FlushCompress};

use crate::pixel::PixelFormat;
use crate::server::{Rect, encoding, rect_header};

/// A screen's pixels, `0x00RRGGBB`, row after row with no padding.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pixels: &'a [u32],
    width: u16,
    height: u16,
}

impl<'a> Frame<'a> {
    /// A `width`×`height` frame; `None` when `pixels` is too short.
    pub fn new(pixels: &'a [u32], width: u16, height: u16) -> Option<Self> {
        (pixels.len() >= usize::from(width) * usize::from(height)).then_some(Self {
            pixels,
            width,
            height,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// The pixels of `r` (clipped to the frame), row after row.
    fn extract(&self, r: Rect, out: &mut Vec<u32>) {
        out.clear();
        let w = usize::from(self.width);
        for y in r.y..r.y + r.h {
            let start = usize::from(y) * w + usize::from(r.x);
            out.extend_from_slice(&self.pixels[start..start + usize::from(r.w)]);
        }
    }

    /// The pixels of `r`, which lies inside the frame and is not empty,
    /// read in place.
    fn view(&self, r: Rect) -> Pixels<'a> {
        let stride = usize::from(self.width);
        Pixels {
            data: &self.pixels[usize::from(r.y) * stride + usize::from(r.x)..],
            stride,
            w: usize::from(r.w),
            h: usize::from(r.h),
        }
    }
}

/// A non-empty rectangle of pixels inside a larger buffer: row `y` starts
/// at `y * stride`.
#[derive(Clone, Copy)]
struct Pixels<'a> {
    data: &'a [u32],
    stride: usize,
    w: usize,
    h: usize,
}

impl<'a> Pixels<'a> {
    fn row(&self, y: usize) -> &'a [u32] {
        let s = y * self.stride;
        &self.data[s..s + self.w]
    }

    /// Whether every pixel is `c`.
    fn all(&self, c: u32) -> bool {
        (0..self.h).all(|y| all_eq(self.row(y), c))
    }

    /// The one colour of these pixels, if they have one.
    fn solid(&self) -> Option<u32> {
        let c = self.data[0];
        self.all(c).then_some(c)
    }
}

/// Whether every element of `s` is `c`, eight at a time where it can.
fn all_eq(s: &[u32], c: u32) -> bool {
    let mut chunks = s.chunks_exact(8);
    for ch in &mut chunks {
        if ch.iter().fold(0, |a, &p| a | (p ^ c)) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&p| p == c)
}

/// The first index from `i` on where `row` is not `c` (or its length).
fn run_end(row: &[u32], mut i: usize, c: u32) -> usize {
    while i + 8 <= row.len() {
        if row[i..i + 8].iter().fold(0, |a, &p| a | (p ^ c)) != 0 {
            break;
        }
        i += 8;
    }
    while i < row.len() && row[i] == c {
        i += 1;
    }
    i
}

/// Smallest data Tight sends through zlib.
const TIGHT_MIN_TO_COMPRESS: usize = 12;
/// The widest rectangle a Tight decoder must accept.
const TIGHT_MAX_WIDTH: usize = 2048;
/// The most pixels in one non-solid Tight rectangle (as QEMU and TightVNC).
const TIGHT_MAX_PIXELS: usize = 65536;
/// Rectangles smaller than this are not searched for solid areas.
const TIGHT_MIN_SPLIT_RECT_SIZE: usize = 4096;
/// The least area of a solid part worth sending on its own: a 64×64
/// tile's worth. (QEMU takes 2048; smaller solid parts inside mono or
/// palette content cost less left in it than the extra rectangles and
/// zlib blocks that cutting them out makes.)
const TIGHT_MIN_SOLID_SUBRECT_SIZE: usize = 4096;
/// The grid Tight looks for solid areas on.
const TIGHT_SPLIT_TILE: u16 = 16;
/// Tight's compression level when the client names none (as QEMU).
const TIGHT_DEFAULT_COMPRESSION: u32 = 9;
/// ZRLE's zlib level when the client names none (zlib's default, as QEMU).
const ZRLE_DEFAULT_LEVEL: u32 = 6;
/// ZRLE tile size, fixed by the protocol.
const ZRLE_TILE: u16 = 64;
/// Hextile tile size, fixed by the protocol.
const HEXTILE_TILE: u16 = 16;

/// Tight's zlib stream for each kind of data.
const STREAM_FULL: usize = 0;
const STREAM_MONO: usize = 1;
const STREAM_PALETTE: usize = 2;

/// zlib levels of Tight's full-colour, mono and palette data for each
/// compression level the client may ask for (TightVNC's table, as QEMU).
const TIGHT_ZLIB_LEVELS: [[u32; 3]; 10] = [
    [0, 0, 0],
    [1, 1, 1],
    [2, 3, 3],
    [3, 5, 5],
    [4, 6, 6],
    [5, 7, 7],
    [6, 7, 7],
    [7, 8, 8],
    [8, 9, 9],
    [9, 9, 9],
];

/// Colours of a tile, up to a limit, with their index.
struct Palette {
    keys: [u32; 512],
    index: [u16; 512],
    colours: Vec<u32>,
    limit: usize,
}

impl Palette {
    fn new() -> Box<Self> {
        Box::new(Self {
            keys: [0; 512],
            index: [u16::MAX; 512],
            colours: Vec::with_capacity(256),
            limit: 0,
        })
    }

    fn reset(&mut self, limit: usize) {
        self.index.fill(u16::MAX);
        self.colours.clear();
        self.limit = limit;
    }

    fn slot(px: u32) -> usize {
        (px.wrapping_mul(0x9e37_79b1) >> 23) as usize
    }

    /// Index of `px`, adding it; `None` once more than `limit` colours.
    fn insert(&mut self, px: u32) -> Option<u16> {
        let mut s = Self::slot(px);
        for _ in 0..512 {
            let i = self.index[s];
            if i == u16::MAX {
                if self.colours.len() >= self.limit {
                    return None;
                }
                let i = self.colours.len() as u16;
                self.keys[s] = px;
                self.index[s] = i;
                self.colours.push(px);
                return Some(i);
            }
            if self.keys[s] == px {
                return Some(i);
            }
            s = (s + 1) & 511;
        }
        None
    }

    fn lookup(&self, px: u32) -> u16 {
        let mut s = Self::slot(px);
        for _ in 0..512 {
            let i = self.index[s];
            if i == u16::MAX || self.keys[s] == px {
                return if i == u16::MAX { 0 } else { i };
            }
            s = (s + 1) & 511;
        }
        0
    }
}

/// A zlib stream that lives as long as the connection.
struct Stream {
    z: Compress,
}

impl Stream {
    fn new(level: u32) -> Self {
        Self {
            z: Compress::new(Compression::new(level.min(9)), true),
        }
    }
}

/// Per-connection encoder state.
pub struct Encoder {
    pf: PixelFormat,
    /// The compression level the client asked for, if any.
    level: Option<u32>,
    zrle: Option<Stream>,
    tight: [Option<Stream>; 4],
    pixels: Vec<u32>,
    tile: Vec<u32>,
    /// Pixels of a tile in the client's format (ZRLE, other formats).
    conv: Vec<u32>,
    /// Data on its way into zlib.
    scratch: Vec<u8>,
    /// zlib's output before Tight's length goes in front of it.
    zout: Vec<u8>,
    palette: Box<Palette>,
    /// A ZRLE tile's runs: colour and length, across rows.
    runs: Vec<(u32, u32)>,
    /// Each run's palette index, while the tile fits a palette.
    run_index: Vec<u8>,
    /// Tight: parts of the rectangle still to send.
    todo: Vec<Rect>,
}

impl Encoder {
    /// An encoder for a client that wants `pf`.
    pub fn new(pf: PixelFormat) -> Self {
        Self {
            pf,
            level: None,
            zrle: None,
            tight: [None, None, None, None],
            pixels: Vec::new(),
            tile: Vec::new(),
            conv: Vec::new(),
            scratch: Vec::new(),
            zout: Vec::new(),
            palette: Palette::new(),
            runs: Vec::new(),
            run_index: Vec::new(),
            todo: Vec::new(),
        }
    }

    /// The client's pixel format.
    pub fn pixel_format(&self) -> &PixelFormat {
        &self.pf
    }

    /// Changes the pixel format (zlib streams carry on, as they must).
    pub fn set_pixel_format(&mut self, pf: PixelFormat) {
        self.pf = pf;
    }

    /// The compression level the client asked for (0..=9), for streams not
    /// yet started: ZRLE's zlib level, and Tight's compression level, from
    /// which each of its streams takes a zlib level.
    pub fn set_compression_level(&mut self, level: u32) {
        self.level = Some(level.min(9));
    }

    /// Appends rectangle `r` of `frame` in `encoding` (Raw for encodings
    /// this encoder does not produce), headers included; returns how many
    /// rectangles were written (Tight splits large ones).
    pub fn encode(&mut self, encoding: i32, frame: &Frame, r: Rect, out: &mut Vec<u8>) -> u16 {
        let r = r.clip(frame.width, frame.height);
        if r.area() == 0 {
            return 0;
        }
        match encoding {
            encoding::HEXTILE => {
                rect_header(r, encoding::HEXTILE, out);
                self.hextile(frame, r, out);
                1
            }
            encoding::ZRLE => {
                rect_header(r, encoding::ZRLE, out);
                self.zrle(frame, r, out);
                1
            }
            encoding::TIGHT => self.tight(frame, r, out),
            _ => {
                rect_header(r, encoding::RAW, out);
                frame.extract(r, &mut self.pixels);
                let pf = self.pf;
                out.reserve(self.pixels.len() * pf.bytes_per_pixel());
                for &p in &self.pixels {
                    pf.put(pf.pack(p), out);
                }
                1
            }
        }
    }

    /// Appends a CopyRect rectangle: `dst` takes the pixels at (`src_x`,
    /// `src_y`) of the client's own copy.
    pub fn copy_rect(dst: Rect, src_x: u16, src_y: u16, out: &mut Vec<u8>) {
        rect_header(dst, encoding::COPY_RECT, out);
        out.extend_from_slice(&src_x.to_be_bytes());
        out.extend_from_slice(&src_y.to_be_bytes());
    }
}

/// Compresses `input` into `out` and ends with a sync flush, so the client
/// can decode everything sent so far; the stream goes on.
fn deflate(z: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    let start = z.total_in();
    out.reserve(input.len() / 4 + 64);
    // Each round consumes input or fills the reserved space; the bound only
    // guards against a zlib that does neither.
    for _ in 0..1_000_000 {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(4096));
        }
        let consumed = (z.total_in() - start) as usize;
        if z.compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .is_err()
        {
            return;
        }
        let consumed = (z.total_in() - start) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
