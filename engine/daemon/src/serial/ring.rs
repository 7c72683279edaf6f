//! The newest bytes of a stream, with their offsets.

/// The newest bytes of a stream, with their offsets in it.
#[derive(Debug)]
pub struct Ring {
    buf: std::collections::VecDeque<u8>,
    /// The offset just past the newest byte (the bytes the stream had).
    end: u64,
    cap: usize,
}

/// What [`Ring::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Slice {
    /// The bytes from the asked offset (or the oldest one held).
    pub data: Vec<u8>,
    /// The offset after them.
    pub next: u64,
    /// How many bytes between the asked offset and the oldest held were
    /// gone already.
    pub skipped: u64,
}

impl Ring {
    /// An empty ring keeping `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buf: std::collections::VecDeque::with_capacity(cap),
            end: 0,
            cap,
        }
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        let data = &data[data.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(data);
    }

    /// The offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// The offset after the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Passes over `n` bytes that cannot be had: the stream goes on after
    /// them, and what the ring held before them is dropped (a session
    /// behind the gap skips it).
    pub fn skip(&mut self, n: u64) {
        self.end += n;
        self.buf.clear();
    }

    /// Up to `max` bytes from offset `from`.
    pub fn read(&self, from: u64, max: usize) -> Slice {
        let start = self.start();
        let skipped = start.saturating_sub(from);
        let from = from.clamp(start, self.end);
        let offset = (from - start) as usize;
        let n = max.min(self.buf.len() - offset);
        Slice {
            data: self.buf.range(offset..offset + n).copied().collect(),
            next: from + n as u64,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes_with_their_offsets() {
        let mut r = Ring::new(8);
        r.push(b"abcdef");
        assert_eq!((r.start(), r.end()), (0, 6));
        r.push(b"ghij");
        assert_eq!((r.start(), r.end()), (2, 10));
        assert_eq!(
            r.read(0, 100),
            Slice {
                data: b"cdefghij".to_vec(),
                next: 10,
                skipped: 2
            }
        );
        assert_eq!(r.read(5, 3).data, b"fgh");
        assert_eq!(r.read(10, 3).data, b"");
        // More than the capacity at once: only its tail stays.
        r.push(b"0123456789AB");
        assert_eq!((r.start(), r.end()), (14, 22));
        assert_eq!(r.read(14, 100).data, b"456789AB");
    }
}
