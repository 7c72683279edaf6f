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

use flate2::{Compress, Compression, FlushCompress};

use crate::pixel::{CPixel, PixelFormat};
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

    // ---- Hextile (RFC 6143 §7.7.4) ----

    fn hextile(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) {
        const RAW: u8 = 1;
        const BG: u8 = 2;
        const FG: u8 = 4;
        const ANY: u8 = 8;
        const COLOURED: u8 = 16;
        let pf = self.pf;
        let bpp = pf.bytes_per_pixel();
        let mut last_bg: Option<u32> = None;
        let mut covered = [false; 256];
        let mut subrects: Vec<(u32, u8, u8, u8, u8)> = Vec::new();
        for ty in (r.y..r.y + r.h).step_by(usize::from(HEXTILE_TILE)) {
            for tx in (r.x..r.x + r.w).step_by(usize::from(HEXTILE_TILE)) {
                let t = Rect::new(
                    tx,
                    ty,
                    HEXTILE_TILE.min(r.x + r.w - tx),
                    HEXTILE_TILE.min(r.y + r.h - ty),
                );
                frame.extract(t, &mut self.tile);
                if pf != PixelFormat::XRGB8888 {
                    for p in self.tile.iter_mut() {
                        *p = pf.pack(*p);
                    }
                }
                let (w, h) = (usize::from(t.w), usize::from(t.h));
                // Background: the most common of the first colours seen.
                self.palette.reset(256);
                let mut counts = [0u32; 256];
                for &p in &self.tile {
                    if let Some(i) = self.palette.insert(p) {
                        counts[usize::from(i)] += 1;
                    }
                }
                let ncolours = self.palette.colours.len();
                let (bg_i, _) = counts[..ncolours]
                    .iter()
                    .enumerate()
                    .max_by_key(|&(_, c)| *c)
                    .unwrap_or((0, &0));
                let bg = self.palette.colours.get(bg_i).copied().unwrap_or(0);
                // Subrectangles of non-background pixels, greedily.
                subrects.clear();
                covered[..w * h].fill(false);
                let mut too_many = false;
                'scan: for y in 0..h {
                    for x in 0..w {
                        let c = self.tile[y * w + x];
                        if c == bg || covered[y * w + x] {
                            continue;
                        }
                        let mut rw = 1;
                        while x + rw < w
                            && self.tile[y * w + x + rw] == c
                            && !covered[y * w + x + rw]
                        {
                            rw += 1;
                        }
                        let mut rh = 1;
                        'grow: while y + rh < h {
                            for i in 0..rw {
                                let at = (y + rh) * w + x + i;
                                if self.tile[at] != c || covered[at] {
                                    break 'grow;
                                }
                            }
                            rh += 1;
                        }
                        for yy in y..y + rh {
                            covered[yy * w + x..yy * w + x + rw].fill(true);
                        }
                        subrects.push((c, x as u8, y as u8, rw as u8, rh as u8));
                        if subrects.len() > 255 {
                            too_many = true;
                            break 'scan;
                        }
                    }
                }
                let raw_size = w * h * bpp;
                let coloured = ncolours > 2;
                let size = bpp
                    + if coloured {
                        1 + subrects.len() * (bpp + 2)
                    } else {
                        bpp + 1 + subrects.len() * 2
                    };
                if too_many || size >= raw_size {
                    out.push(RAW);
                    for &p in &self.tile {
                        pf.put(p, out);
                    }
                    last_bg = None;
                    continue;
                }
                let mut flags = 0;
                if last_bg != Some(bg) {
                    flags |= BG;
                }
                if !subrects.is_empty() {
                    flags |= ANY;
                    flags |= if coloured { COLOURED } else { FG };
                }
                out.push(flags);
                if flags & BG != 0 {
                    pf.put(bg, out);
                }
                if flags & FG != 0 {
                    pf.put(subrects[0].0, out);
                }
                if flags & ANY != 0 {
                    out.push(subrects.len() as u8);
                    for &(c, x, y, sw, sh) in &subrects {
                        if coloured {
                            pf.put(c, out);
                        }
                        out.push(x << 4 | y);
                        out.push((sw - 1) << 4 | (sh - 1));
                    }
                }
                last_bg = Some(bg);
            }
        }
    }

    // ---- ZRLE (RFC 6143 §7.7.6) ----

    fn zrle(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) {
        let pf = self.pf;
        let native = pf == PixelFormat::XRGB8888;
        let mut data = std::mem::take(&mut self.scratch);
        let mut conv = std::mem::take(&mut self.conv);
        data.clear();
        for ty in (r.y..r.y + r.h).step_by(usize::from(ZRLE_TILE)) {
            for tx in (r.x..r.x + r.w).step_by(usize::from(ZRLE_TILE)) {
                let t = Rect::new(
                    tx,
                    ty,
                    ZRLE_TILE.min(r.x + r.w - tx),
                    ZRLE_TILE.min(r.y + r.h - ty),
                );
                let v = frame.view(t);
                let px = if native {
                    v
                } else {
                    // Runs and palettes of the client's values, so colours
                    // its format merges count once.
                    conv.clear();
                    for y in 0..v.h {
                        conv.extend(v.row(y).iter().map(|&p| pf.pack(p)));
                    }
                    Pixels {
                        data: &conv,
                        stride: v.w,
                        w: v.w,
                        h: v.h,
                    }
                };
                self.zrle_tile(px, &mut data);
            }
        }
        self.conv = conv;
        let level = self.level.unwrap_or(ZRLE_DEFAULT_LEVEL);
        let z = self.zrle.get_or_insert_with(|| Stream::new(level));
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        deflate(&mut z.z, &data, out);
        let n = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
        self.scratch = data;
    }

    /// One tile of client pixel values: solid, or its runs and palette
    /// found in one pass, then the smallest subencoding.
    fn zrle_tile(&mut self, px: Pixels, out: &mut Vec<u8>) {
        let pf = self.pf;
        let kind = pf.cpixel();
        let cp = pf.cpixel_len();
        let (w, h) = (px.w, px.h);
        if let Some(c) = px.solid() {
            out.push(1);
            pf.put_cpixel_as(kind, c, out);
            return;
        }
        // Bytes a run length takes, and what each choice costs so far.
        let rl = |len: usize| (len - 1) / 255 + 1;
        let (mut plain, mut pal_rle) = (0usize, 0usize);
        let mut palette_ok = true;
        self.palette.reset(127);
        self.runs.clear();
        self.run_index.clear();
        {
            let (runs, index, palette) = (&mut self.runs, &mut self.run_index, &mut self.palette);
            let mut end_run = |c: u32, len: usize| {
                runs.push((c, len as u32));
                plain += cp + rl(len);
                pal_rle += if len == 1 { 1 } else { 1 + rl(len) };
                if palette_ok {
                    match palette.insert(c) {
                        Some(i) => index.push(i as u8),
                        None => palette_ok = false,
                    }
                }
            };
            let mut cur = px.data[0];
            let mut len = 0;
            for y in 0..h {
                let row = px.row(y);
                let mut i = 0;
                while i < w {
                    let c = row[i];
                    let j = run_end(row, i + 1, c);
                    if c != cur {
                        end_run(cur, len);
                        cur = c;
                        len = 0;
                    }
                    len += j - i;
                    i = j;
                }
            }
            end_run(cur, len);
        }
        let ncol = self.palette.colours.len();
        let raw = w * h * cp;
        let bits = match ncol {
            0..=2 => 1,
            3..=4 => 2,
            _ => 4,
        };
        let packed = if palette_ok && ncol <= 16 {
            ncol * cp + h * (w * bits).div_ceil(8)
        } else {
            usize::MAX
        };
        let pal_rle = if palette_ok {
            ncol * cp + pal_rle
        } else {
            usize::MAX
        };
        let best = raw.min(plain).min(packed).min(pal_rle);
        let put_run = |len: u32, out: &mut Vec<u8>| {
            let mut rest = len - 1;
            while rest >= 255 {
                out.push(255);
                rest -= 255;
            }
            out.push(rest as u8);
        };
        if best == packed {
            out.push(ncol as u8);
            for &c in &self.palette.colours {
                pf.put_cpixel_as(kind, c, out);
            }
            // Rows of `bits`-bit indices, each row padded to a byte.
            let (mut x, mut byte, mut nbits) = (0, 0u8, 0);
            for (&(_, len), &i) in self.runs.iter().zip(&self.run_index) {
                for _ in 0..len {
                    byte = (byte << bits) | i;
                    nbits += bits;
                    x += 1;
                    if nbits == 8 || x == w {
                        out.push(byte << (8 - nbits));
                        (byte, nbits) = (0, 0);
                        if x == w {
                            x = 0;
                        }
                    }
                }
            }
        } else if best == pal_rle {
            out.push(128 | ncol as u8);
            for &c in &self.palette.colours {
                pf.put_cpixel_as(kind, c, out);
            }
            for (&(_, len), &i) in self.runs.iter().zip(&self.run_index) {
                if len == 1 {
                    out.push(i);
                } else {
                    out.push(i | 128);
                    put_run(len, out);
                }
            }
        } else if best == plain {
            out.push(128);
            for &(c, len) in &self.runs {
                pf.put_cpixel_as(kind, c, out);
                put_run(len, out);
            }
        } else {
            out.push(0);
            out.reserve(raw);
            for y in 0..h {
                match kind {
                    CPixel::First3 if !pf.big_endian => {
                        for &p in px.row(y) {
                            out.extend_from_slice(&p.to_le_bytes()[..3]);
                        }
                    }
                    _ => {
                        for &p in px.row(y) {
                            pf.put_cpixel_as(kind, p, out);
                        }
                    }
                }
            }
        }
    }

    // ---- Tight, lossless (fill, mono, palette, basic) ----

    /// Large solid areas go out as fills and the rest is split around
    /// them (QEMU's and TightVNC's way); returns the rectangles written.
    fn tight(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) -> u16 {
        let mut count = 0u16;
        let mut todo = std::mem::take(&mut self.todo);
        todo.clear();
        todo.push(r);
        while let Some(r) = todo.pop() {
            let n = if r.area() < TIGHT_MIN_SPLIT_RECT_SIZE {
                self.tight_pieces(frame, r, out)
            } else {
                self.tight_split(frame, r, &mut todo, out)
            };
            count = count.saturating_add(n);
        }
        self.todo = todo;
        count
    }

    /// Looks for a solid area of at least [`TIGHT_MIN_SOLID_SUBRECT_SIZE`]
    /// pixels on a 16-pixel grid, row by row; sends it as a fill with the
    /// rows above it, and leaves the parts left, right and below in `todo`.
    /// Without one, sends `r` in pieces.
    fn tight_split(
        &mut self,
        frame: &Frame,
        mut r: Rect,
        todo: &mut Vec<Rect>,
        out: &mut Vec<u8>,
    ) -> u16 {
        let t = TIGHT_SPLIT_TILE;
        // Rows above any solid area are sent once there are enough of them
        // for a full piece.
        let max_rows = (TIGHT_MAX_PIXELS / usize::from(r.w).min(TIGHT_MAX_WIDTH))
            .clamp(1, usize::from(u16::MAX)) as u16;
        let mut n = 0u16;
        let mut dy = r.y;
        while dy < r.y + r.h {
            if dy - r.y >= max_rows {
                let top = Rect::new(r.x, r.y, r.w, max_rows);
                n = n.saturating_add(self.tight_pieces(frame, top, out));
                r.y += max_rows;
                r.h -= max_rows;
            }
            let dh = t.min(r.y + r.h - dy);
            let mut dx = r.x;
            while dx < r.x + r.w {
                let dw = t.min(r.x + r.w - dx);
                let Some(c) = frame.view(Rect::new(dx, dy, dw, dh)).solid() else {
                    dx += dw;
                    continue;
                };
                let area =
                    best_solid_area(frame, Rect::new(dx, dy, r.x + r.w - dx, r.y + r.h - dy), c);
                if area != r && area.area() < TIGHT_MIN_SOLID_SUBRECT_SIZE {
                    dx += dw;
                    continue;
                }
                let s = extend_solid_area(frame, r, area, c);
                if s.y > r.y {
                    let top = Rect::new(r.x, r.y, r.w, s.y - r.y);
                    n = n.saturating_add(self.tight_pieces(frame, top, out));
                }
                if s.x > r.x {
                    todo.push(Rect::new(r.x, s.y, s.x - r.x, s.h));
                }
                if s.x + s.w < r.x + r.w {
                    todo.push(Rect::new(s.x + s.w, s.y, r.x + r.w - s.x - s.w, s.h));
                }
                if s.y + s.h < r.y + r.h {
                    todo.push(Rect::new(r.x, s.y + s.h, r.w, r.y + r.h - s.y - s.h));
                }
                return n.saturating_add(self.tight_fill(s, c, out));
            }
            dy += dh;
        }
        n.saturating_add(self.tight_pieces(frame, r, out))
    }

    /// A fill rectangle (several where `r` is wider than a decoder takes).
    fn tight_fill(&mut self, r: Rect, c: u32, out: &mut Vec<u8>) -> u16 {
        let mut n = 0;
        for x in (r.x..r.x + r.w).step_by(TIGHT_MAX_WIDTH) {
            let w = (r.x + r.w - x).min(TIGHT_MAX_WIDTH as u16);
            rect_header(Rect::new(x, r.y, w, r.h), encoding::TIGHT, out);
            out.push(0x80);
            self.pf.put_tpixel(c, out);
            n += 1;
        }
        n
    }

    /// `r` in pieces no wider than a decoder takes and of at most
    /// [`TIGHT_MAX_PIXELS`] pixels.
    fn tight_pieces(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) -> u16 {
        let pw = usize::from(r.w).min(TIGHT_MAX_WIDTH);
        let ph = (TIGHT_MAX_PIXELS / pw).min(usize::from(r.h));
        let mut n = 0u16;
        for y in (r.y..r.y + r.h).step_by(ph) {
            for x in (r.x..r.x + r.w).step_by(pw) {
                let p = Rect::new(
                    x,
                    y,
                    (r.x + r.w - x).min(pw as u16),
                    (r.y + r.h - y).min(ph as u16),
                );
                rect_header(p, encoding::TIGHT, out);
                self.tight_rect(frame.view(p), out);
                n = n.saturating_add(1);
            }
        }
        n
    }

    /// One Tight rectangle: fill, mono, palette or full colour, whichever
    /// its colours allow.
    fn tight_rect(&mut self, px: Pixels, out: &mut Vec<u8>) {
        let pf = self.pf;
        let npix = px.w * px.h;
        let max_colours = 256.min(npix / 2);
        self.palette.reset(max_colours.max(2));
        let mut many = false;
        let mut last = px.data[0];
        self.palette.insert(last);
        'count: for y in 0..px.h {
            let row = px.row(y);
            let mut i = run_end(row, 0, last);
            while i < row.len() {
                last = row[i];
                if self.palette.insert(last).is_none() {
                    many = true;
                    break 'count;
                }
                i = run_end(row, i + 1, last);
            }
        }
        let ncol = self.palette.colours.len();
        if !many && ncol == 1 {
            out.push(0x80);
            pf.put_tpixel(last, out);
            return;
        }
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        let stream;
        if !many && ncol == 2 {
            stream = STREAM_MONO;
            out.extend_from_slice(&[0x40 | (STREAM_MONO as u8) << 4, 1, 1]);
            let (c0, c1) = (self.palette.colours[0], self.palette.colours[1]);
            pf.put_tpixel(c0, out);
            pf.put_tpixel(c1, out);
            // A bit per pixel, rows padded to a byte, set where `c1` is.
            let row_bytes = px.w.div_ceil(8);
            data.resize(row_bytes * px.h, 0);
            for (y, bits) in data.chunks_exact_mut(row_bytes).enumerate() {
                let row = px.row(y);
                let mut i = 0;
                while i < row.len() {
                    let c = row[i];
                    let j = run_end(row, i + 1, c);
                    if c == c1 {
                        set_bits(bits, i, j);
                    }
                    i = j;
                }
            }
        } else if !many {
            stream = STREAM_PALETTE;
            out.extend_from_slice(&[0x40 | (STREAM_PALETTE as u8) << 4, 1, (ncol - 1) as u8]);
            for &c in &self.palette.colours {
                pf.put_tpixel(c, out);
            }
            data.reserve(npix);
            for y in 0..px.h {
                let row = px.row(y);
                let mut i = 0;
                while i < row.len() {
                    let c = row[i];
                    let j = run_end(row, i + 1, c);
                    let idx = self.palette.lookup(c) as u8;
                    data.resize(data.len() + (j - i), idx);
                    i = j;
                }
            }
        } else {
            stream = STREAM_FULL;
            out.push((STREAM_FULL as u8) << 4);
            if pf == PixelFormat::XRGB8888 {
                data.resize(npix * 3, 0);
                let mut at = data.chunks_exact_mut(3);
                for y in 0..px.h {
                    for (&p, d) in px.row(y).iter().zip(&mut at) {
                        d.copy_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, p as u8]);
                    }
                }
            } else {
                data.reserve(npix * pf.tpixel_len());
                for y in 0..px.h {
                    for &p in px.row(y) {
                        pf.put_tpixel(p, &mut data);
                    }
                }
            }
        }
        if data.len() < TIGHT_MIN_TO_COMPRESS {
            out.extend_from_slice(&data);
        } else {
            let compression = self.level.unwrap_or(TIGHT_DEFAULT_COMPRESSION) as usize;
            let level = TIGHT_ZLIB_LEVELS[compression.min(9)][stream];
            let z = self.tight[stream].get_or_insert_with(|| Stream::new(level));
            let mut zout = std::mem::take(&mut self.zout);
            zout.clear();
            deflate(&mut z.z, &data, &mut zout);
            put_compact_len(zout.len(), out);
            out.extend_from_slice(&zout);
            self.zout = zout;
        }
        self.scratch = data;
    }
}

/// QEMU's find_best_solid_area: the largest area of colour `c` that
/// starts at the top-left of `r` (already known to be `c` for one grid
/// tile), grown on the 16-pixel grid: down row by row, each row as wide as
/// the rows above allow.
fn best_solid_area(frame: &Frame, r: Rect, c: u32) -> Rect {
    let t = TIGHT_SPLIT_TILE;
    let mut w_prev = r.w;
    let mut best = Rect::new(r.x, r.y, 0, 0);
    let mut dy = r.y;
    while dy < r.y + r.h {
        let dh = t.min(r.y + r.h - dy);
        let mut dx = r.x;
        while dx < r.x + w_prev {
            let dw = t.min(r.x + w_prev - dx);
            if !frame.view(Rect::new(dx, dy, dw, dh)).all(c) {
                break;
            }
            dx += dw;
        }
        if dx == r.x {
            break;
        }
        w_prev = dx - r.x;
        let grown = Rect::new(r.x, r.y, w_prev, dy + dh - r.y);
        if grown.area() > best.area() {
            best = grown;
        }
        dy += dh;
    }
    best
}

/// QEMU's extend_solid_area: grows solid area `s` of colour `c` a pixel
/// row or column at a time up, down, left and right, inside `r`.
fn extend_solid_area(frame: &Frame, r: Rect, mut s: Rect, c: u32) -> Rect {
    while s.y > r.y && frame.view(Rect::new(s.x, s.y - 1, s.w, 1)).all(c) {
        s.y -= 1;
        s.h += 1;
    }
    while s.y + s.h < r.y + r.h && frame.view(Rect::new(s.x, s.y + s.h, s.w, 1)).all(c) {
        s.h += 1;
    }
    while s.x > r.x && frame.view(Rect::new(s.x - 1, s.y, 1, s.h)).all(c) {
        s.x -= 1;
        s.w += 1;
    }
    while s.x + s.w < r.x + r.w && frame.view(Rect::new(s.x + s.w, s.y, 1, s.h)).all(c) {
        s.w += 1;
    }
    s
}

/// Sets bits `from..to` of `bits`, most significant bit first.
fn set_bits(bits: &mut [u8], from: usize, to: usize) {
    let mut i = from;
    while i < to && !i.is_multiple_of(8) {
        bits[i / 8] |= 0x80 >> (i % 8);
        i += 1;
    }
    let whole = (to - i) / 8;
    bits[i / 8..i / 8 + whole].fill(0xff);
    i += whole * 8;
    while i < to {
        bits[i / 8] |= 0x80 >> (i % 8);
        i += 1;
    }
}

/// Tight's compact length: 7 bits per byte, at most 3 bytes.
fn put_compact_len(len: usize, out: &mut Vec<u8>) {
    let b0 = (len & 0x7f) as u8;
    if len < 0x80 {
        out.push(b0);
        return;
    }
    out.push(b0 | 0x80);
    let b1 = ((len >> 7) & 0x7f) as u8;
    if len < 0x4000 {
        out.push(b1);
        return;
    }
    out.push(b1 | 0x80);
    out.push(((len >> 14) & 0xff) as u8);
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
