//! Hextile (RFC 6143 §7.7.4): 16×16 tiles as raw data, or a background,
//! a foreground and coloured or plain subrectangles.

use crate::pixel::PixelFormat;
use crate::server::Rect;

use super::{Encoder, Frame, HEXTILE_TILE};

impl Encoder {
    pub(super) fn hextile(&mut self, frame: &Frame, r: Rect, out: &mut Vec<u8>) {
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
}
