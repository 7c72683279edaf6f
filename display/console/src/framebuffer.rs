//! The client-side framebuffer: 32-bit pixels, `B G R A` in memory (the
//! layout of GDK's `B8g8r8a8Premultiplied` with opaque alpha, and of what
//! VNC servers send for the default little-endian 32-bit format).

/// A rectangle in framebuffer coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Why an update was refused: a server sent a rectangle that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The rectangle extends past the screen.
    #[error("rectangle {rect:?} lies outside the {width}x{height} screen")]
    OutOfBounds {
        /// The offending rectangle.
        rect: Rect,
        /// Screen width.
        width: u32,
        /// Screen height.
        height: u32,
    },
    /// The pixel data is shorter or longer than the rectangle.
    #[error("rectangle {rect:?} needs {expected} bytes of pixels, got {got}")]
    Length {
        /// The rectangle.
        rect: Rect,
        /// Bytes the rectangle needs.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A screen size beyond what a console can show.
    #[error("screen size {0}x{1} is not supported (at most 8192x8192)")]
    Size(u32, u32),
}

/// The largest screen edge accepted from a server.
pub const MAX_EDGE: u32 = 8192;
const BPP: usize = 4;

/// A copy of the remote screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Framebuffer {
    /// A black screen of the given size.
    pub fn new(width: u32, height: u32) -> Result<Self, UpdateError> {
        if width > MAX_EDGE || height > MAX_EDGE {
            return Err(UpdateError::Size(width, height));
        }
        let mut pixels = vec![0u8; width as usize * height as usize * BPP];
        // Opaque black: alpha 0xff in every fourth byte.
        pixels.chunks_exact_mut(BPP).for_each(|p| p[3] = 0xff);
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// A 0x0 screen, before the server has said its size.
    pub fn empty() -> Self {
        Self {
            width: 0,
            height: 0,
            pixels: Vec::new(),
        }
    }

    /// Screen width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Screen height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.width as usize * BPP
    }

    /// All pixels, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixel at `(x, y)` as `[b, g, r, a]`.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = y as usize * self.stride() + x as usize * BPP;
        self.pixels[at..at + BPP].try_into().ok()
    }

    fn check(&self, rect: Rect) -> Result<(), UpdateError> {
        let fits = |pos: u32, len: u32, edge: u32| pos.checked_add(len).is_some_and(|e| e <= edge);
        if fits(rect.x, rect.width, self.width) && fits(rect.y, rect.height, self.height) {
            Ok(())
        } else {
            Err(UpdateError::OutOfBounds {
                rect,
                width: self.width,
                height: self.height,
            })
        }
    }

    /// Copies decoded pixels (`B G R x`, row by row) into `rect`, forcing
    /// alpha opaque.
    pub fn blit(&mut self, rect: Rect, data: &[u8]) -> Result<(), UpdateError> {
        self.check(rect)?;
        let row = rect.width as usize * BPP;
        let expected = row * rect.height as usize;
        if data.len() != expected {
            return Err(UpdateError::Length {
                rect,
                expected,
                got: data.len(),
            });
        }
        let stride = self.stride();
        for (i, src) in data
            .chunks_exact(row.max(1))
            .enumerate()
            .take(rect.height as usize)
        {
            let at = (rect.y as usize + i) * stride + rect.x as usize * BPP;
            let dst = &mut self.pixels[at..at + row];
            dst.copy_from_slice(src);
            dst.chunks_exact_mut(BPP).for_each(|p| p[3] = 0xff);
        }
        Ok(())
    }

    /// Copies the `dst`-sized area at `(src_x, src_y)` to `dst` (RFB
    /// CopyRect); the areas may overlap.
    pub fn copy_rect(&mut self, src_x: u32, src_y: u32, dst: Rect) -> Result<(), UpdateError> {
        self.check(dst)?;
        self.check(Rect {
            x: src_x,
            y: src_y,
            ..dst
        })?;
        let stride = self.stride();
        let row = dst.width as usize * BPP;
        let rows: Vec<usize> = if dst.y > src_y {
            (0..dst.height as usize).rev().collect()
        } else {
            (0..dst.height as usize).collect()
        };
        for i in rows {
            let from = (src_y as usize + i) * stride + src_x as usize * BPP;
            let to = (dst.y as usize + i) * stride + dst.x as usize * BPP;
            self.pixels.copy_within(from..from + row, to);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, bgr: [u8; 3]) -> Vec<u8> {
        (0..w * h)
            .flat_map(|_| [bgr[0], bgr[1], bgr[2], 0])
            .collect()
    }

    #[test]
    fn blit_places_pixels_and_makes_them_opaque() {
        let mut fb = Framebuffer::new(8, 4).unwrap();
        let rect = Rect {
            x: 2,
            y: 1,
            width: 3,
            height: 2,
        };
        fb.blit(rect, &solid(3, 2, [1, 2, 3])).unwrap();
        assert_eq!(fb.pixel(2, 1), Some([1, 2, 3, 0xff]));
        assert_eq!(fb.pixel(4, 2), Some([1, 2, 3, 0xff]));
        assert_eq!(fb.pixel(5, 2), Some([0, 0, 0, 0xff]));
        assert_eq!(fb.pixel(2, 3), Some([0, 0, 0, 0xff]));
    }

    #[test]
    fn out_of_bounds_and_short_updates_are_refused() {
        let mut fb = Framebuffer::new(8, 4).unwrap();
        let rect = Rect {
            x: 6,
            y: 0,
            width: 3,
            height: 1,
        };
        assert!(matches!(
            fb.blit(rect, &solid(3, 1, [0; 3])),
            Err(UpdateError::OutOfBounds { .. })
        ));
        let huge = Rect {
            x: u32::MAX,
            y: 0,
            width: 2,
            height: 1,
        };
        assert!(fb.blit(huge, &[]).is_err());
        let ok = Rect {
            x: 0,
            y: 0,
            width: 2,
            height: 2,
        };
        assert_eq!(
            fb.blit(ok, &[0; 12]),
            Err(UpdateError::Length {
                rect: ok,
                expected: 16,
                got: 12
            })
        );
        assert_eq!(Framebuffer::new(9000, 10), Err(UpdateError::Size(9000, 10)));
    }

    #[test]
    fn copy_rect_handles_overlap_downwards() {
        let mut fb = Framebuffer::new(2, 4).unwrap();
        for y in 0..4 {
            let row = Rect {
                x: 0,
                y,
                width: 2,
                height: 1,
            };
            fb.blit(row, &solid(2, 1, [y as u8, 0, 0])).unwrap();
        }
        // Move rows 0..3 down by one: rows become 0,0,1,2.
        fb.copy_rect(
            0,
            0,
            Rect {
                x: 0,
                y: 1,
                width: 2,
                height: 3,
            },
        )
        .unwrap();
        let firsts: Vec<u8> = (0..4).map(|y| fb.pixel(0, y).unwrap()[0]).collect();
        assert_eq!(firsts, [0, 0, 1, 2]);
    }
}
