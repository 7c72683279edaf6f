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

#[cfg(test)]
mod tests {
    use super::*;

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
