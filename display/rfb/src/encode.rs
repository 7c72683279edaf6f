//! Rectangle encoders: Raw, Hextile, ZRLE and Tight (lossless), from the
//! framebuffer's `0x00RRGGBB` pixels to any client pixel format.
//!
//! One [`Encoder`] per connection: ZRLE and Tight keep zlib streams that
//! live as long as the connection (RFC 6143 §7.7.6; Tight's four streams),
//! so an encoder must see every rectangle the client receives, in order.

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
}

/// Smallest data Tight sends through zlib.
const TIGHT_MIN_TO_COMPRESS: usize = 12;
/// Side of the tiles Tight looks for solid areas in, and the largest
/// non-solid rectangle it sends.
const TIGHT_TILE: u16 = 64;
/// The widest rectangle a Tight decoder must accept.
const TIGHT_MAX_WIDTH: usize = 2048;
/// The most pixels in one non-solid Tight rectangle (as QEMU and TightVNC).
const TIGHT_MAX_PIXELS: usize = 65536;
/// ZRLE tile size, fixed by the protocol.
const ZRLE_TILE: u16 = 64;
/// Hextile tile size, fixed by the protocol.
const HEXTILE_TILE: u16 = 16;

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

/// Per-connection encoder state.
pub struct Encoder {
    pf: PixelFormat,
    level: u32,
    zrle: Option<Compress>,
    tight: [Option<Compress>; 4],
    pixels: Vec<u32>,
    tile: Vec<u32>,
    scratch: Vec<u8>,
    palette: Box<Palette>,
}

impl Encoder {
    /// An encoder for a client that wants `pf`.
    pub fn new(pf: PixelFormat) -> Self {
        Self {
            pf,
            level: 6,
            zrle: None,
            tight: [None, None, None, None],
            pixels: Vec::new(),
            tile: Vec::new(),
            scratch: Vec::new(),
            palette: Palette::new(),
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

    /// The zlib level for streams not yet started (0..=9).
    pub fn set_compression_level(&mut self, level: u32) {
        self.level = level.min(9);
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
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        for ty in (r.y..r.y + r.h).step_by(usize::from(ZRLE_TILE)) {
            for tx in (r.x..r.x + r.w).step_by(usize::from(ZRLE_TILE)) {
                let t = Rect::new(
                    tx,
                    ty,
                    ZRLE_TILE.min(r.x + r.w - tx),
                    ZRLE_TILE.min(r.y + r.h - ty),
                );
                frame.extract(t, &mut self.tile);
                self.zrle_tile(usize::from(t.w), usize::from(t.h), &mut data);
            }
        }
        let level = self.level;
        let z = self
            .zrle
            .get_or_insert_with(|| Compress::new(Compression::new(level), true));
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        deflate(z, &data, out);
        let n = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
        self.scratch = data;
    }

    fn zrle_tile(&mut self, w: usize, h: usize, out: &mut Vec<u8>) {
        let pf = self.pf;
        let cp = pf.cpixel_len();
        if pf != PixelFormat::XRGB8888 {
            for p in self.tile.iter_mut() {
                *p = pf.pack(*p);
            }
        }
        let kind = pf.cpixel();
        let rl = |len: usize| (len - 1) / 255 + 1;
        self.palette.reset(127);
        let mut palette_ok = true;
        let (mut plain, mut pal_rle) = (0usize, 0usize);
        let mut i = 0;
        let n = self.tile.len();
        while i < n {
            let c = self.tile[i];
            let mut j = i + 1;
            while j < n && self.tile[j] == c {
                j += 1;
            }
            let len = j - i;
            plain += cp + rl(len);
            pal_rle += if len == 1 { 1 } else { 1 + rl(len) };
            if palette_ok && self.palette.insert(c).is_none() {
                palette_ok = false;
            }
            i = j;
        }
        let ncol = self.palette.colours.len();
        if palette_ok && ncol == 1 {
            out.push(1);
            pf.put_cpixel_as(kind, self.tile[0], out);
            return;
        }
        let raw = w * h * cp;
        let bits = match ncol {
            2 => 1,
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
        let put_run = |len: usize, out: &mut Vec<u8>| {
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
            for row in self.tile.chunks_exact(w) {
                let mut byte = 0u8;
                let mut nbits = 0;
                for &p in row {
                    let idx = self.palette.lookup(p) as u8;
                    byte = (byte << bits) | idx;
                    nbits += bits;
                    if nbits == 8 {
                        out.push(byte);
                        byte = 0;
                        nbits = 0;
                    }
                }
                if nbits > 0 {
                    out.push(byte << (8 - nbits));
                }
            }
        } else if best == pal_rle {
            out.push(128 | ncol as u8);
            for &c in &self.palette.colours {
                pf.put_cpixel_as(kind, c, out);
            }
            let mut i = 0;
            while i < n {
                let c = self.tile[i];
                let mut j = i + 1;
                while j < n && self.tile[j] == c {
                    j += 1;
                }
                let idx = self.palette.lookup(c) as u8;
                if j - i == 1 {
                    out.push(idx);
                } else {
                    out.push(idx | 128);
                    put_run(j - i, out);
                }
                i = j;
            }
        } else if best == plain {
            out.push(128);
            let mut i = 0;
            while i < n {
                let c = self.tile[i];
                let mut j = i + 1;
                while j < n && self.tile[j] == c {
                    j += 1;
                }
                pf.put_cpixel_as(kind, c, out);
                put_run(j - i, out);
                i = j;
            }
        } else {
            out.push(0);
            for &p in &self.tile {
                pf.put_cpixel_as(kind, p, out);
            }
        }
    }

    // ---- Tight, lossless (fill, mono, palette, basic) ----

    fn tight(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) -> u16 {
        // Tiles of one colour become fill rectangles, merged across runs of
        // equal neighbours (as wide as Tight allows) and down equal runs;
        // the other tiles are encoded one by one.
        let t = TIGHT_TILE;
        let cols = usize::from(r.w.div_ceil(t));
        let rows = usize::from(r.h.div_ceil(t));
        let tile_rect = |c: usize, row: usize| {
            let (x, y) = (r.x + c as u16 * t, r.y + row as u16 * t);
            Rect::new(x, y, t.min(r.x + r.w - x), t.min(r.y + r.h - y))
        };
        // Each tile's colours: one (solid), two (a mono rectangle, if its
        // neighbours have the same two), or more.
        let mut solid: Vec<Option<u32>> = Vec::with_capacity(cols * rows);
        let mut pairs: Vec<Option<(u32, u32)>> = Vec::with_capacity(cols * rows);
        for row in 0..rows {
            for c in 0..cols {
                frame.extract(tile_rect(c, row), &mut self.tile);
                let first = self.tile[0];
                let mut second = None;
                let mut many = false;
                for &p in &self.tile {
                    if p == first || Some(p) == second {
                        continue;
                    }
                    if second.is_none() {
                        second = Some(p);
                    } else {
                        many = true;
                        break;
                    }
                }
                solid.push(second.is_none().then_some(first));
                pairs.push(match (second, many) {
                    (Some(b), false) => Some((first.min(b), first.max(b))),
                    _ => None,
                });
            }
        }
        let mut fills: Vec<(Rect, u32)> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        for row in 0..rows {
            let mut next = Vec::new();
            let mut c = 0;
            while c < cols {
                let Some(colour) = solid[row * cols + c] else {
                    c += 1;
                    continue;
                };
                let start = c;
                while c < cols
                    && solid[row * cols + c] == Some(colour)
                    && (c - start + 1) * usize::from(t) <= TIGHT_MAX_WIDTH
                {
                    c += 1;
                }
                let first = tile_rect(start, row);
                let last = tile_rect(c - 1, row);
                let run = Rect::new(first.x, first.y, last.x + last.w - first.x, first.h);
                let joined = open.iter().copied().find(|&i| {
                    let (f, fc) = fills[i];
                    fc == colour && f.x == run.x && f.w == run.w && f.y + f.h == run.y
                });
                match joined {
                    Some(i) => {
                        fills[i].0.h += run.h;
                        next.push(i);
                    }
                    None => {
                        fills.push((run, colour));
                        next.push(fills.len() - 1);
                    }
                }
            }
            open = next;
        }
        let mut count = 0;
        for (rect, colour) in fills {
            rect_header(rect, encoding::TIGHT, out);
            out.push(0x80);
            self.pf.put_tpixel(colour, out);
            count += 1;
        }
        // Runs of other tiles along a row with the same two colours, or
        // with more, share one rectangle (at most TIGHT_MAX_PIXELS), so
        // zlib sees long stretches of content and text stays mono.
        let max_run = (TIGHT_MAX_WIDTH / usize::from(t))
            .min(TIGHT_MAX_PIXELS / (usize::from(t) * usize::from(t)))
            .max(1);
        for row in 0..rows {
            let mut c = 0;
            while c < cols {
                if solid[row * cols + c].is_some() {
                    c += 1;
                    continue;
                }
                let start = c;
                let kind = pairs[row * cols + c];
                while c < cols
                    && solid[row * cols + c].is_none()
                    && pairs[row * cols + c] == kind
                    && c - start < max_run
                {
                    c += 1;
                }
                let (first, last) = (tile_rect(start, row), tile_rect(c - 1, row));
                let tr = Rect::new(first.x, first.y, last.x + last.w - first.x, first.h);
                frame.extract(tr, &mut self.tile);
                rect_header(tr, encoding::TIGHT, out);
                self.tight_rect(usize::from(tr.w), out);
                count += 1;
            }
        }
        count
    }

    fn tight_rect(&mut self, w: usize, out: &mut Vec<u8>) {
        let pf = self.pf;
        // Palette of the client's pixel values, so colours that the
        // client's format merges count once.
        self.palette.reset(256);
        let mut last = None;
        let mut many = false;
        for &p in &self.tile {
            if last == Some(p) {
                continue;
            }
            last = Some(p);
            if self.palette.insert(p).is_none() {
                many = true;
                break;
            }
        }
        let ncol = self.palette.colours.len();
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        let stream;
        if !many && ncol == 1 {
            out.push(0x80);
            pf.put_tpixel(self.tile[0], out);
            self.scratch = data;
            return;
        } else if !many && ncol == 2 {
            stream = 1;
            out.extend_from_slice(&[0x40 | 1 << 4, 1, 1]);
            for &c in &self.palette.colours {
                pf.put_tpixel(c, out);
            }
            for row in self.tile.chunks_exact(w) {
                let mut byte = 0u8;
                let mut nbits = 0;
                for &p in row {
                    byte = (byte << 1) | self.palette.lookup(p) as u8;
                    nbits += 1;
                    if nbits == 8 {
                        data.push(byte);
                        byte = 0;
                        nbits = 0;
                    }
                }
                if nbits > 0 {
                    data.push(byte << (8 - nbits));
                }
            }
        } else if !many && ncol <= 256 && ncol * 4 < self.tile.len() {
            stream = 2;
            out.extend_from_slice(&[0x40 | 2 << 4, 1, (ncol - 1) as u8]);
            for &c in &self.palette.colours {
                pf.put_tpixel(c, out);
            }
            data.extend(self.tile.iter().map(|&p| self.palette.lookup(p) as u8));
        } else {
            stream = 0;
            out.push(0);
            data.reserve(self.tile.len() * pf.tpixel_len());
            for &p in &self.tile {
                pf.put_tpixel(p, &mut data);
            }
        }
        if data.len() < TIGHT_MIN_TO_COMPRESS {
            out.extend_from_slice(&data);
        } else {
            let level = self.level;
            let z = self.tight[stream]
                .get_or_insert_with(|| Compress::new(Compression::new(level), true));
            let mut compressed = Vec::with_capacity(data.len() / 2 + 64);
            deflate(z, &data, &mut compressed);
            put_compact_len(compressed.len(), out);
            out.extend_from_slice(&compressed);
        }
        self.scratch = data;
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
