//! Pixel formats (RFC 6143 §7.4).

/// How a pixel is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat {
    /// Bits per pixel: 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Colour depth in bits.
    pub depth: u8,
    /// Multi-byte pixels are big-endian.
    pub big_endian: bool,
    /// True colour (as opposed to a colour map).
    pub true_colour: bool,
    /// Largest red value.
    pub red_max: u16,
    /// Largest green value.
    pub green_max: u16,
    /// Largest blue value.
    pub blue_max: u16,
    /// Bit position of red.
    pub red_shift: u8,
    /// Bit position of green.
    pub green_shift: u8,
    /// Bit position of blue.
    pub blue_shift: u8,
}

impl PixelFormat {
    /// Wire size of a pixel format.
    pub const LEN: usize = 16;

    /// 32-bit little-endian xRGB, the framebuffer's own layout.
    pub const XRGB8888: Self = Self {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// Whether a client may ask for this format: 8, 16 or 32 bpp, true
    /// colour with non-zero maxima whose bits fit the pixel, or a colour map
    /// at 8 bpp.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return Err("bits-per-pixel must be 8, 16 or 32");
        }
        if self.depth == 0 || self.depth > self.bits_per_pixel {
            return Err("depth must be between 1 and bits-per-pixel");
        }
        if !self.true_colour {
            return if self.bits_per_pixel == 8 {
                Ok(())
            } else {
                Err("colour-map formats must be 8 bits per pixel")
            };
        }
        let bits = u32::from(self.bits_per_pixel);
        for (max, shift) in [
            (self.red_max, self.red_shift),
            (self.green_max, self.green_shift),
            (self.blue_max, self.blue_shift),
        ] {
            if max == 0 {
                return Err("colour maxima must be non-zero");
            }
            let width = u32::BITS - u32::from(max).leading_zeros();
            if u32::from(shift) + width > bits {
                return Err("a colour channel does not fit in the pixel");
            }
        }
        Ok(())
    }

    /// Reads a pixel format from 16 wire bytes.
    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        Self {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }

    /// Writes the pixel format as 16 wire bytes (3 of them padding).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }
}

/// How ZRLE packs a pixel (its CPIXEL, RFC 6143 §7.7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CPixel {
    /// The whole pixel, `bytes_per_pixel` bytes.
    Full,
    /// Three bytes: the first three bytes of the pixel on the wire.
    First3,
    /// Three bytes: the last three bytes of the pixel on the wire.
    Last3,
}

impl PixelFormat {
    /// Converts a framebuffer pixel (`0x00RRGGBB`) into this format's pixel
    /// value. Colour-map formats get the BGR233 map that
    /// [`crate::server::bgr233_colour_map`] describes.
    pub fn pack(&self, rgb: u32) -> u32 {
        let (r, g, b) = ((rgb >> 16) & 0xff, (rgb >> 8) & 0xff, rgb & 0xff);
        if !self.true_colour {
            return (r >> 5) | ((g >> 5) << 3) | ((b >> 6) << 6);
        }
        if *self == Self::XRGB8888 {
            return rgb & 0x00ff_ffff;
        }
        let ch = |v: u32, max: u16, shift: u8| -> u32 {
            let scaled = (v * u32::from(max) + 127) / 255;
            scaled.checked_shl(u32::from(shift)).unwrap_or(0)
        };
        ch(r, self.red_max, self.red_shift)
            | ch(g, self.green_max, self.green_shift)
            | ch(b, self.blue_max, self.blue_shift)
    }

    /// Appends pixel value `px` in this format's size and byte order.
    pub fn put(&self, px: u32, out: &mut Vec<u8>) {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(px as u8),
            (16, false) => out.extend_from_slice(&(px as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(px as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&px.to_le_bytes()),
            (_, true) => out.extend_from_slice(&px.to_be_bytes()),
        }
    }

    /// The largest pixel value and the union of the channel bits.
    fn channel_mask(&self) -> u32 {
        let m = |max: u16, shift: u8| u32::from(max).checked_shl(u32::from(shift)).unwrap_or(0);
        m(self.red_max, self.red_shift)
            | m(self.green_max, self.green_shift)
            | m(self.blue_max, self.blue_shift)
    }

    /// ZRLE's CPIXEL rule: 3 bytes when the format is true colour, 32 bits
    /// per pixel, depth 24 or less, and every colour bit lies in the least
    /// or the most significant 3 bytes; which 3 wire bytes are sent follows
    /// the byte order (as TigerVNC and libvncserver read them).
    pub fn cpixel(&self) -> CPixel {
        if !self.true_colour || self.bits_per_pixel != 32 || self.depth > 24 {
            return CPixel::Full;
        }
        let mask = self.channel_mask();
        let ls3 = mask < (1 << 24);
        let ms3 = mask & 0xff == 0;
        if (ls3 && !self.big_endian) || (ms3 && self.big_endian) {
            CPixel::First3
        } else if (ls3 && self.big_endian) || (ms3 && !self.big_endian) {
            CPixel::Last3
        } else {
            CPixel::Full
        }
    }

    /// Bytes in a CPIXEL.
    pub fn cpixel_len(&self) -> usize {
        match self.cpixel() {
            CPixel::Full => self.bytes_per_pixel(),
            _ => 3,
        }
    }

    /// Appends pixel value `px` as a ZRLE CPIXEL.
    pub fn put_cpixel(&self, px: u32, out: &mut Vec<u8>) {
        self.put_cpixel_as(self.cpixel(), px, out);
    }

    /// [`Self::put_cpixel`] with the CPIXEL kind worked out beforehand.
    pub fn put_cpixel_as(&self, kind: CPixel, px: u32, out: &mut Vec<u8>) {
        let wire = if self.big_endian {
            px.to_be_bytes()
        } else {
            px.to_le_bytes()
        };
        match kind {
            CPixel::Full => self.put(px, out),
            CPixel::First3 => out.extend_from_slice(&wire[..3]),
            CPixel::Last3 => out.extend_from_slice(&wire[1..]),
        }
    }

    /// Tight's TPIXEL rule: 3 bytes (red, green, blue) when the format is
    /// true colour, 32 bits per pixel, depth 24, with 8-bit channels.
    pub fn tight_24(&self) -> bool {
        self.true_colour
            && self.bits_per_pixel == 32
            && self.depth == 24
            && self.red_max == 255
            && self.green_max == 255
            && self.blue_max == 255
    }

    /// Appends framebuffer pixel `rgb` as a Tight TPIXEL.
    pub fn put_tpixel(&self, rgb: u32, out: &mut Vec<u8>) {
        if self.tight_24() {
            let px = self.pack(rgb);
            let ch = |shift: u8| px.checked_shr(u32::from(shift)).unwrap_or(0) as u8;
            out.extend_from_slice(&[
                ch(self.red_shift),
                ch(self.green_shift),
                ch(self.blue_shift),
            ]);
        } else {
            self.put(self.pack(rgb), out);
        }
    }

    /// Bytes in a TPIXEL.
    pub fn tpixel_len(&self) -> usize {
        if self.tight_24() {
            3
        } else {
            self.bytes_per_pixel()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(bpp: u8, depth: u8, be: bool, shifts: (u8, u8, u8), max: u16) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: bpp,
            depth,
            big_endian: be,
            true_colour: true,
            red_max: max,
            green_max: max,
            blue_max: max,
            red_shift: shifts.0,
            green_shift: shifts.1,
            blue_shift: shifts.2,
        }
    }

    #[test]
    fn cpixel_is_three_bytes_only_where_rfc_6143_allows() {
        // Little-endian xRGB (TigerVNC's default): low 3 bytes, sent first.
        let le = pf(32, 24, false, (16, 8, 0), 255);
        assert_eq!(le.cpixel(), CPixel::First3);
        let mut out = Vec::new();
        le.put_cpixel(le.pack(0x123456), &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12]);
        // Big-endian with the colour in the low 3 bytes: the last 3 on the wire.
        let be = pf(32, 24, true, (16, 8, 0), 255);
        assert_eq!(be.cpixel(), CPixel::Last3);
        out.clear();
        be.put_cpixel(be.pack(0x123456), &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56]);
        // Colour in the high 3 bytes: RGBx.
        let hi_le = pf(32, 24, false, (24, 16, 8), 255);
        assert_eq!(hi_le.cpixel(), CPixel::Last3);
        out.clear();
        hi_le.put_cpixel(hi_le.pack(0x123456), &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12]);
        let hi_be = pf(32, 24, true, (24, 16, 8), 255);
        assert_eq!(hi_be.cpixel(), CPixel::First3);
        // Depth 32, channels spanning all 4 bytes, or 16 bpp: full pixels.
        assert_eq!(pf(32, 32, false, (16, 8, 0), 255).cpixel(), CPixel::Full);
        assert_eq!(pf(32, 24, false, (20, 10, 0), 1023).cpixel(), CPixel::Full);
        assert_eq!(pf(16, 16, false, (11, 5, 0), 31).cpixel(), CPixel::Full);
        assert_eq!(pf(16, 16, false, (11, 5, 0), 31).cpixel_len(), 2);
    }

    #[test]
    fn tpixel_is_rgb_for_24_bit_depth_only() {
        let bgrx = pf(32, 24, true, (8, 16, 24), 255);
        let mut out = Vec::new();
        bgrx.put_tpixel(0x123456, &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56]);
        assert_eq!(pf(32, 32, false, (16, 8, 0), 255).tpixel_len(), 4);
    }

    #[test]
    fn pack_scales_channels_to_the_client_maxima() {
        let rgb565 = pf(16, 16, false, (11, 5, 0), 31);
        let rgb565 = PixelFormat {
            green_max: 63,
            ..rgb565
        };
        assert_eq!(rgb565.pack(0xffffff), 0xffff);
        assert_eq!(rgb565.pack(0xff0000), 0xf800);
        let mut out = Vec::new();
        rgb565.put(0xf800, &mut out);
        assert_eq!(out, [0x00, 0xf8]);
    }

    #[test]
    fn xrgb8888_round_trips_and_validates() {
        let pf = PixelFormat::XRGB8888;
        assert_eq!(PixelFormat::from_bytes(&pf.to_bytes()), pf);
        assert_eq!(pf.validate(), Ok(()));
        assert_eq!(pf.bytes_per_pixel(), 4);
    }

    #[test]
    fn rejects_channels_outside_the_pixel() {
        let pf = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            red_shift: 12,
            red_max: 31,
            ..PixelFormat::XRGB8888
        };
        assert_eq!(
            pf.validate(),
            Err("a colour channel does not fit in the pixel")
        );
    }

    #[test]
    fn rejects_odd_bits_per_pixel() {
        let pf = PixelFormat {
            bits_per_pixel: 24,
            ..PixelFormat::XRGB8888
        };
        assert!(pf.validate().is_err());
    }
}
