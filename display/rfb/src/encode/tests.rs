//! Decoders written from the protocol text, to check the encoders.

use flate2::{Decompress, FlushDecompress};

use super::tight::put_compact_len;
use super::*;

/// Reads bytes from the front of a buffer, panicking on short data.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        s
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.bytes(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }
    pub fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}

fn pixel(pf: &PixelFormat, b: &[u8]) -> u32 {
    match (b.len(), pf.big_endian) {
        (1, _) => u32::from(b[0]),
        (2, false) => u32::from(u16::from_le_bytes([b[0], b[1]])),
        (2, true) => u32::from(u16::from_be_bytes([b[0], b[1]])),
        (_, false) => u32::from_le_bytes(b.try_into().unwrap()),
        (_, true) => u32::from_be_bytes(b.try_into().unwrap()),
    }
}

fn cpixel(pf: &PixelFormat, r: &mut Reader) -> u32 {
    use crate::pixel::CPixel;
    match pf.cpixel() {
        CPixel::Full => pixel(pf, r.bytes(pf.bytes_per_pixel())),
        CPixel::First3 => {
            let b = r.bytes(3);
            pixel(pf, &[b[0], b[1], b[2], 0])
        }
        CPixel::Last3 => {
            let b = r.bytes(3);
            pixel(pf, &[0, b[0], b[1], b[2]])
        }
    }
}

fn tpixel(pf: &PixelFormat, r: &mut Reader) -> u32 {
    if pf.tight_24() {
        let b = r.bytes(3);
        u32::from(b[0]) << pf.red_shift
            | u32::from(b[1]) << pf.green_shift
            | u32::from(b[2]) << pf.blue_shift
    } else {
        pixel(pf, r.bytes(pf.bytes_per_pixel()))
    }
}

/// The client side of one connection: its screen (pixel values in its
/// format) and its zlib streams.
pub struct Client {
    pub pf: PixelFormat,
    pub width: usize,
    pub screen: Vec<u32>,
    /// Each Tight rectangle decoded: x, y, width, height and its kind (the
    /// high nibble of its control byte: 8 fill, 0..=7 basic).
    pub tight_rects: Vec<(usize, usize, usize, usize, u8)>,
    zrle: Decompress,
    tight: [Decompress; 4],
}

fn inflate(z: &mut Decompress, data: &[u8], expect: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(expect + 1);
    let start = z.total_in();
    for _ in 0..1000 {
        let used = (z.total_in() - start) as usize;
        if out.capacity() == out.len() {
            out.reserve(4096);
        }
        z.decompress_vec(&data[used..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if (z.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

impl Client {
    pub fn new(pf: PixelFormat, width: usize, height: usize) -> Self {
        Self {
            pf,
            width,
            screen: vec![0xdead_beef; width * height],
            tight_rects: Vec::new(),
            zrle: Decompress::new(true),
            tight: std::array::from_fn(|_| Decompress::new(true)),
        }
    }

    fn set(&mut self, x: usize, y: usize, px: u32) {
        self.screen[y * self.width + x] = px;
    }

    /// Decodes `count` rectangles; returns the encodings seen.
    pub fn decode(&mut self, wire: &[u8], count: usize) -> Vec<i32> {
        let mut r = Reader::new(wire);
        let mut seen = Vec::new();
        for _ in 0..count {
            let (x, y, w, h) = (
                usize::from(r.u16()),
                usize::from(r.u16()),
                usize::from(r.u16()),
                usize::from(r.u16()),
            );
            let enc = r.u32() as i32;
            seen.push(enc);
            match enc {
                encoding::RAW => {
                    for yy in y..y + h {
                        for xx in x..x + w {
                            let p = pixel(&self.pf, r.bytes(self.pf.bytes_per_pixel()));
                            self.set(xx, yy, p);
                        }
                    }
                }
                encoding::HEXTILE => self.hextile(&mut r, x, y, w, h),
                encoding::ZRLE => self.zrle(&mut r, x, y, w, h),
                encoding::TIGHT => self.tight(&mut r, x, y, w, h),
                other => panic!("unexpected encoding {other}"),
            }
        }
        assert!(r.done(), "{} bytes left over", wire.len() - r.at);
        seen
    }

    fn hextile(&mut self, r: &mut Reader, x: usize, y: usize, w: usize, h: usize) {
        let bpp = self.pf.bytes_per_pixel();
        let (mut bg, mut fg) = (0, 0);
        for ty in (y..y + h).step_by(16) {
            for tx in (x..x + w).step_by(16) {
                let (tw, th) = (16.min(x + w - tx), 16.min(y + h - ty));
                let flags = r.u8();
                if flags & 1 != 0 {
                    for yy in ty..ty + th {
                        for xx in tx..tx + tw {
                            let p = pixel(&self.pf, r.bytes(bpp));
                            self.set(xx, yy, p);
                        }
                    }
                    continue;
                }
                if flags & 2 != 0 {
                    bg = pixel(&self.pf, r.bytes(bpp));
                }
                for yy in ty..ty + th {
                    for xx in tx..tx + tw {
                        self.set(xx, yy, bg);
                    }
                }
                if flags & 4 != 0 {
                    fg = pixel(&self.pf, r.bytes(bpp));
                }
                if flags & 8 != 0 {
                    let n = r.u8();
                    for _ in 0..n {
                        let c = if flags & 16 != 0 {
                            pixel(&self.pf, r.bytes(bpp))
                        } else {
                            fg
                        };
                        let xy = r.u8();
                        let wh = r.u8();
                        let (sx, sy) = (usize::from(xy >> 4), usize::from(xy & 15));
                        let (sw, sh) = (usize::from(wh >> 4) + 1, usize::from(wh & 15) + 1);
                        assert!(sx + sw <= tw && sy + sh <= th);
                        for yy in 0..sh {
                            for xx in 0..sw {
                                self.set(tx + sx + xx, ty + sy + yy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    fn zrle(&mut self, r: &mut Reader, x: usize, y: usize, w: usize, h: usize) {
        let len = r.u32() as usize;
        let data = inflate(&mut self.zrle, r.bytes(len), w * h * 4 + 1024);
        let mut d = Reader::new(&data);
        let pf = self.pf;
        for ty in (y..y + h).step_by(64) {
            for tx in (x..x + w).step_by(64) {
                let (tw, th) = (64.min(x + w - tx), 64.min(y + h - ty));
                let sub = d.u8();
                let mut px = Vec::with_capacity(tw * th);
                let palette: Vec<u32> = (0..usize::from(sub & 127))
                    .map(|_| cpixel(&pf, &mut d))
                    .collect();
                let run = |d: &mut Reader| {
                    let mut len = 1;
                    loop {
                        let b = d.u8();
                        len += usize::from(b);
                        if b != 255 {
                            return len;
                        }
                    }
                };
                match sub {
                    0 => (0..tw * th).for_each(|_| px.push(cpixel(&pf, &mut d))),
                    1 => px.resize(tw * th, palette[0]),
                    2..=16 => {
                        let bits = match sub {
                            2 => 1,
                            3 | 4 => 2,
                            _ => 4,
                        };
                        for _ in 0..th {
                            let row = d.bytes((tw * bits).div_ceil(8));
                            for i in 0..tw {
                                let bit = i * bits;
                                let v = (row[bit / 8] >> (8 - bits - bit % 8)) & ((1 << bits) - 1);
                                px.push(palette[usize::from(v)]);
                            }
                        }
                    }
                    128 => {
                        while px.len() < tw * th {
                            let c = cpixel(&pf, &mut d);
                            let n = run(&mut d);
                            px.extend(std::iter::repeat_n(c, n));
                        }
                    }
                    130.. => {
                        while px.len() < tw * th {
                            let i = d.u8();
                            let c = palette[usize::from(i & 127)];
                            let n = if i & 128 != 0 { run(&mut d) } else { 1 };
                            px.extend(std::iter::repeat_n(c, n));
                        }
                    }
                    other => panic!("bad ZRLE subencoding {other}"),
                }
                assert_eq!(px.len(), tw * th, "ZRLE run overflows its tile");
                for (i, p) in px.into_iter().enumerate() {
                    self.set(tx + i % tw, ty + i / tw, p);
                }
            }
        }
        assert!(d.done());
    }

    fn tight(&mut self, r: &mut Reader, x: usize, y: usize, w: usize, h: usize) {
        let pf = self.pf;
        let ctl = r.u8();
        for s in 0..4 {
            if ctl & (1 << s) != 0 {
                self.tight[s] = Decompress::new(true);
            }
        }
        let kind = ctl >> 4;
        self.tight_rects.push((x, y, w, h, kind));
        assert!(w <= 2048, "a Tight rectangle {w} pixels wide");
        if kind == 8 {
            let c = tpixel(&pf, r);
            for yy in y..y + h {
                for xx in x..x + w {
                    self.set(xx, yy, c);
                }
            }
            return;
        }
        assert!(kind < 8, "lossless Tight only, got {kind}");
        assert!(w * h <= 65536, "a non-solid Tight rectangle of {w}x{h}");
        let stream = usize::from(kind & 3);
        let filter = if kind & 4 != 0 { r.u8() } else { 0 };
        let mut palette = Vec::new();
        let len = match filter {
            0 => w * h * pf.tpixel_len(),
            1 => {
                let n = usize::from(r.u8()) + 1;
                palette = (0..n).map(|_| tpixel(&pf, r)).collect();
                if n == 2 { w.div_ceil(8) * h } else { w * h }
            }
            other => panic!("unexpected Tight filter {other}"),
        };
        let data = if len < TIGHT_MIN_TO_COMPRESS {
            r.bytes(len).to_vec()
        } else {
            let mut clen = 0usize;
            for i in 0..3 {
                let b = r.u8();
                clen |= usize::from(if i < 2 { b & 0x7f } else { b }) << (7 * i);
                if b & 0x80 == 0 || i == 2 {
                    break;
                }
            }
            inflate(&mut self.tight[stream], r.bytes(clen), len)
        };
        assert_eq!(data.len(), len);
        let mut d = Reader::new(&data);
        for yy in y..y + h {
            for xx in x..x + w {
                let p = match (filter, palette.len()) {
                    (0, _) => tpixel(&pf, &mut d),
                    (_, 2) => {
                        let byte = data[(yy - y) * w.div_ceil(8) + (xx - x) / 8];
                        palette[usize::from((byte >> (7 - (xx - x) % 8)) & 1)]
                    }
                    _ => palette[usize::from(d.u8())],
                };
                self.set(xx, yy, p);
            }
        }
    }
}

/// A desktop-like test screen: flat areas, a gradient, text-like noise.
pub fn desktop(width: usize, height: usize) -> Vec<u32> {
    let mut px = vec![0x003a_6ea5; width * height];
    let mut seed = 0x1234_5678u32;
    for y in 0..height {
        for x in 0..width {
            let p = &mut px[y * width + x];
            if y < 24 {
                *p = 0x00ec_ecec; // title bar
            } else if x < width / 3 && y < height * 2 / 3 {
                // A "window" with text-like black-on-white runs.
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *p = if (y / 2) % 8 < 5 && (seed >> 16).is_multiple_of(3) {
                    0
                } else {
                    0x00ff_ffff
                };
            } else if y > height * 3 / 4 {
                *p = ((x * 255 / width.max(1)) as u32) << 8 | (y % 256) as u32;
            }
        }
    }
    px
}

fn formats() -> Vec<PixelFormat> {
    let base = PixelFormat::XRGB8888;
    vec![
        base,
        PixelFormat {
            big_endian: true,
            ..base
        },
        PixelFormat {
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..base
        },
        PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
            ..base
        },
        PixelFormat {
            bits_per_pixel: 8,
            depth: 8,
            red_max: 7,
            green_max: 7,
            blue_max: 3,
            red_shift: 0,
            green_shift: 3,
            blue_shift: 6,
            ..base
        },
        PixelFormat { depth: 32, ..base },
    ]
}

fn round_trip(enc: i32) {
    let (w, h) = (300usize, 200usize);
    let src = desktop(w, h);
    let frame = Frame::new(&src, w as u16, h as u16).unwrap();
    for pf in formats() {
        let mut e = Encoder::new(pf);
        let mut c = Client::new(pf, w, h);
        // A full update, then partial ones through the same streams.
        for r in [
            Rect::new(0, 0, w as u16, h as u16),
            Rect::new(7, 13, 101, 67),
            Rect::new(250, 150, 200, 200), // clipped to the frame
        ] {
            let mut out = Vec::new();
            let n = e.encode(enc, &frame, r, &mut out);
            let seen = c.decode(&out, usize::from(n));
            assert!(seen.iter().all(|&s| s == enc), "{seen:?}");
        }
        let want: Vec<u32> = src.iter().map(|&p| pf.pack(p)).collect();
        assert!(c.screen == want, "{enc} in {pf:?} decodes to other pixels");
    }
}

#[test]
fn raw_round_trips_in_every_pixel_format() {
    round_trip(encoding::RAW);
}

#[test]
fn hextile_round_trips_in_every_pixel_format() {
    round_trip(encoding::HEXTILE);
}

#[test]
fn zrle_round_trips_in_every_pixel_format() {
    round_trip(encoding::ZRLE);
}

#[test]
fn tight_round_trips_in_every_pixel_format() {
    round_trip(encoding::TIGHT);
}

/// A desktop with big solid areas, as the fbmodes guest draws one: a
/// background, a title bar, a window with a header and lines of black
/// dashes, a panel with a few icons.
fn solid_desktop(w: usize, h: usize) -> Vec<u32> {
    let mut px = vec![0x003a_6ea5u32; w * h];
    let mut fill = |x0: usize, y0: usize, fw: usize, fh: usize, c: u32| {
        for y in y0..(y0 + fh).min(h) {
            for x in x0..(x0 + fw).min(w) {
                px[y * w + x] = c;
            }
        }
    };
    fill(0, 0, w, 24, 0x00ec_ecec);
    let (ww, wh) = (w / 2, h * 2 / 3);
    fill(40, 60, ww, wh, 0x00ff_ffff);
    fill(40, 60, ww, 20, 0x00d0_d0d0);
    let mut seed = 12345u32;
    let mut y = 90;
    while y + 10 < 60 + wh {
        let mut x = 50;
        while x + 60 < 40 + ww {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = 8 + ((seed >> 16) % 48) as usize;
            fill(x, y, len, 9, 0);
            x += len + 8;
        }
        y += 16;
    }
    fill(0, h - 40, w, 40, 0x0030_3030);
    for i in 0..8 {
        fill(
            10 + i * 44,
            h - 34,
            32,
            28,
            0x0080_8080 + i as u32 * 0x0010_1010,
        );
    }
    px
}

/// Encodes all of `src` and then two parts of it through one encoder per
/// pixel format, and checks the client's screen against the source.
fn round_trip_frame(enc: i32, src: &[u32], w: usize, h: usize, level: Option<u32>) {
    let frame = Frame::new(src, w as u16, h as u16).unwrap();
    for pf in formats() {
        let mut e = Encoder::new(pf);
        if let Some(l) = level {
            e.set_compression_level(l);
        }
        let mut c = Client::new(pf, w, h);
        for r in [
            Rect::new(0, 0, w as u16, h as u16),
            Rect::new(3, 5, (w / 2) as u16, (h / 3) as u16),
            Rect::new((w / 3) as u16, (h / 2) as u16, w as u16, h as u16),
        ] {
            let mut out = Vec::new();
            let n = e.encode(enc, &frame, r, &mut out);
            let seen = c.decode(&out, usize::from(n));
            assert!(seen.iter().all(|&s| s == enc), "{seen:?}");
        }
        let want: Vec<u32> = src.iter().map(|&p| pf.pack(p)).collect();
        assert!(
            c.screen == want,
            "{enc} in {pf:?} at level {level:?} decodes to other pixels"
        );
    }
}

#[test]
fn tight_cuts_big_solid_areas_out_and_round_trips() {
    let (w, h) = (1280usize, 720usize);
    let src = solid_desktop(w, h);
    for level in [None, Some(1), Some(9)] {
        round_trip_frame(encoding::TIGHT, &src, w, h, level);
    }
    let frame = Frame::new(&src, w as u16, h as u16).unwrap();
    let pf = PixelFormat::XRGB8888;
    let mut e = Encoder::new(pf);
    let mut out = Vec::new();
    let n = e.encode(
        encoding::TIGHT,
        &frame,
        Rect::new(0, 0, w as u16, h as u16),
        &mut out,
    );
    let mut c = Client::new(pf, w, h);
    c.decode(&out, usize::from(n));
    assert!(c.screen == src);
    // The background, title bar, window header and margins and the panel
    // are fills: well over half of the screen.
    let filled: usize = c
        .tight_rects
        .iter()
        .filter(|r| r.4 == 8)
        .map(|r| r.2 * r.3)
        .sum();
    assert!(
        filled * 10 >= w * h * 6,
        "fills cover {filled} of {} pixels",
        w * h
    );
    // The same screen sent as 64x64 tiles, each as Tight would send it on
    // its own, takes more bytes.
    let mut tiled = Encoder::new(pf);
    let mut tiled_out = Vec::new();
    for y in (0..h).step_by(64) {
        for x in (0..w).step_by(64) {
            tiled.encode(
                encoding::TIGHT,
                &frame,
                Rect::new(x as u16, y as u16, 64, 64),
                &mut tiled_out,
            );
        }
    }
    assert!(
        out.len() < tiled_out.len(),
        "split {} bytes, tiled {}",
        out.len(),
        tiled_out.len()
    );
}

#[test]
fn tight_rectangles_stay_within_what_decoders_take() {
    // Wider than 2048: a solid left part, text-like dashes on the right,
    // and a solid band along the bottom wider than one fill may be.
    let (w, h) = (3000usize, 120usize);
    let mut src = vec![0x0010_2030u32; w * h];
    for y in 0..80 {
        for x in 1500..w {
            if (x / 7 + y / 3) % 5 == 0 {
                src[y * w + x] = 0x00ff_ffff;
            }
        }
    }
    round_trip_frame(encoding::TIGHT, &src, w, h, None);
    let frame = Frame::new(&src, w as u16, h as u16).unwrap();
    let mut e = Encoder::new(PixelFormat::XRGB8888);
    let mut out = Vec::new();
    let n = e.encode(
        encoding::TIGHT,
        &frame,
        Rect::new(0, 0, w as u16, h as u16),
        &mut out,
    );
    let mut c = Client::new(PixelFormat::XRGB8888, w, h);
    c.decode(&out, usize::from(n));
    assert!(c.screen == src);
    // Every pixel covered exactly once.
    let mut covered = vec![0u8; w * h];
    for &(x, y, rw, rh, _) in &c.tight_rects {
        for yy in y..y + rh {
            for xx in x..x + rw {
                covered[yy * w + xx] += 1;
            }
        }
    }
    assert!(covered.iter().all(|&n| n == 1));
}

#[test]
fn zrle_runs_cross_rows_and_palettes_pack_odd_widths() {
    // 70x70: tiles 64 and 6 wide. Long runs across rows, then bands of 3,
    // 5 and 17 colours, then a band of (nearly) all different pixels.
    let (w, h) = (70usize, 70usize);
    let src: Vec<u32> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            match y {
                0..=19 => [0x0011_2233, 0x0044_5566][(i / 300) % 2],
                20..=29 => ((x / 3) % 3) as u32 * 0x0030_0000,
                30..=39 => ((x + y) % 5) as u32 * 0x0000_2200,
                40..=49 => ((x * 7 + y) % 17) as u32 * 0x0001_0203,
                _ => (i as u32).wrapping_mul(2_654_435_761) & 0x00ff_ffff,
            }
        })
        .collect();
    for level in [None, Some(0), Some(9)] {
        round_trip_frame(encoding::ZRLE, &src, w, h, level);
        round_trip_frame(encoding::TIGHT, &src, w, h, level);
    }
}

#[test]
fn flat_areas_compress_to_almost_nothing() {
    let (w, h) = (640usize, 480usize);
    let src = vec![0x0020_2020u32; w * h];
    let frame = Frame::new(&src, w as u16, h as u16).unwrap();
    for enc in [encoding::ZRLE, encoding::TIGHT, encoding::HEXTILE] {
        let mut e = Encoder::new(PixelFormat::XRGB8888);
        let mut out = Vec::new();
        e.encode(enc, &frame, Rect::new(0, 0, w as u16, h as u16), &mut out);
        assert!(out.len() < 2000, "{enc}: {} bytes", out.len());
    }
}

#[test]
fn every_zrle_and_tight_subencoding_is_exercised_and_decodes() {
    // Tiles built to hit each choice: solid, 2/3/16 colours, many.
    let (w, h) = (256usize, 64usize);
    let mut src = vec![0u32; w * h];
    for y in 0..h {
        for x in 0..w {
            src[y * w + x] = match x / 64 {
                0 => 0x0011_2233,
                1 => [0, 0x00ff_ffff][(x ^ y) & 1],
                2 => ((x % 16) as u32) * 0x0001_0101,
                _ => (x * 977 + y * 131) as u32 & 0x00ff_ffff,
            };
        }
    }
    let frame = Frame::new(&src, w as u16, h as u16).unwrap();
    for enc in [encoding::ZRLE, encoding::TIGHT, encoding::HEXTILE] {
        let pf = PixelFormat::XRGB8888;
        let mut e = Encoder::new(pf);
        let mut c = Client::new(pf, w, h);
        for x in (0..w).step_by(64) {
            let mut out = Vec::new();
            let n = e.encode(enc, &frame, Rect::new(x as u16, 0, 64, 64), &mut out);
            c.decode(&out, usize::from(n));
        }
        assert!(c.screen == src, "encoding {enc}");
    }
}

#[test]
fn compact_lengths_use_one_to_three_bytes() {
    for (len, want) in [
        (5usize, vec![5u8]),
        (200, vec![0xc8, 0x01]),
        (20000, vec![0xa0, 0x9c, 0x01]),
    ] {
        let mut out = Vec::new();
        put_compact_len(len, &mut out);
        assert_eq!(out, want);
    }
}
