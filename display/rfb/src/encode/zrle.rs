//! ZRLE (RFC 6143 §7.7.6): 64×64 tiles through the connection's zlib
//! stream, each analysed in one pass (solid check, then runs and palette
//! together) and written in the smallest subencoding.

use crate::pixel::{CPixel, PixelFormat};
use crate::server::Rect;

use super::{Encoder, Frame, Pixels, Stream, ZRLE_DEFAULT_LEVEL, ZRLE_TILE, deflate, run_end};

impl Encoder {
    pub(super) fn zrle(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) {
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
}
