//! Tight, lossless: large solid areas found on a 16-pixel grid and grown
//! to their edges go out as fills, the rest is split around them and sent
//! in pieces of at most 64 Ki pixels as mono, palette or full-colour data
//! through four zlib streams (as QEMU's and TightVNC's encoders).

use crate::pixel::PixelFormat;
use crate::server::{Rect, encoding, rect_header};

use super::{
    Encoder, Frame, Pixels, STREAM_FULL, STREAM_MONO, STREAM_PALETTE, Stream,
    TIGHT_DEFAULT_COMPRESSION, TIGHT_MAX_PIXELS, TIGHT_MAX_WIDTH, TIGHT_MIN_SOLID_SUBRECT_SIZE,
    TIGHT_MIN_SPLIT_RECT_SIZE, TIGHT_MIN_TO_COMPRESS, TIGHT_SPLIT_TILE, TIGHT_ZLIB_LEVELS, deflate,
    run_end,
};

impl Encoder {
    /// Large solid areas go out as fills and the rest is split around
    /// them (QEMU's and TightVNC's way); returns the rectangles written.
    pub(super) fn tight(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) -> u16 {
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
pub(super) fn put_compact_len(len: usize, out: &mut Vec<u8>) {
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
