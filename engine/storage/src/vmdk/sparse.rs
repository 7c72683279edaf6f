//! Sparse extents: the header (or the `streamOptimized` footer), the
//! grain directory and tables, compressed grains.

use std::fs::File;
use std::path::Path;

use super::descriptor::Descriptor;
use super::{
    Bad, BadResult, COMPRESS_DEFLATE, COMPRESS_NONE, FLAG_MARKERS, FLAG_NEWLINE_TEST,
    FLAG_ZERO_GRAIN, GD_AT_END, MAGIC, MARKER_EOS, MARKER_FOOTER, MAX_CAPACITY, MAX_DESCRIPTOR,
    MAX_GD_ENTRIES, MAX_GRAIN_SECTORS, MAX_GTES, SECTOR, corrupt, le32, le64, read_at,
};

/// The sparse extent header's fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    grain: u64,
    descriptor_offset: u64,
    descriptor_size: u64,
    gtes_per_gt: u32,
    gd_offset: u64,
    newline: [u8; 4],
    compress: u16,
}

impl Header {
    /// Reads the header from a 512-byte sector (magic included).
    fn parse(b: &[u8]) -> BadResult<Header> {
        if b.len() < 79 || &b[..4] != MAGIC {
            return corrupt("the sparse extent header has no KDMV magic");
        }
        Ok(Header {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            gd_offset: le64(b, 56),
            newline: [b[73], b[74], b[75], b[76]],
            compress: u16::from_le_bytes([b[77], b[78]]),
        })
    }
}

/// One sparse extent file, its grain directory loaded and checked.
pub(super) struct Sparse {
    file_len: u64,
    /// Bytes of disk the extent holds (its header's capacity).
    pub(super) capacity: u64,
    pub(super) grain_bytes: u64,
    gtes_per_gt: u32,
    gd: Vec<u32>,
    compressed: bool,
    markers: bool,
    pub(super) zero_grain: bool,
    /// The grain table last read: (GD index, entries).
    gt: Option<(usize, Vec<u32>)>,
    /// The grain last inflated: (GT entry, bytes).
    grain: Option<(u32, Vec<u8>)>,
    /// Compressed bytes being read.
    packed: Vec<u8>,
}

/// The header of the sparse extent in `file` (the footer's, for a
/// `streamOptimized` file whose grain directory is at its end).
fn read_header(file: &File, file_len: u64) -> BadResult<Header> {
    if file_len < SECTOR {
        return corrupt(format!(
            "the sparse extent header is truncated ({file_len} bytes)"
        ));
    }
    let mut sector = [0u8; SECTOR as usize];
    read_at(file, &mut sector, 0, "reading the header")?;
    let header = Header::parse(&sector)?;
    if header.gd_offset != GD_AT_END {
        return Ok(header);
    }
    // The footer: a footer marker, the header again, an end-of-stream marker.
    if file_len < 4 * SECTOR {
        return corrupt("the grain directory is at the end, but the file has no footer");
    }
    let mut tail = vec![0u8; 3 * SECTOR as usize];
    read_at(file, &mut tail, file_len - 3 * SECTOR, "reading the footer")?;
    let marker_ok = |at: usize, kind: u32| le32(&tail, at + 8) == 0 && le32(&tail, at + 12) == kind;
    if !marker_ok(0, MARKER_FOOTER) || !marker_ok(1024, MARKER_EOS) || le64(&tail, 1024) != 0 {
        return corrupt(
            "the grain directory is at the end, but the file does not end with a footer \
             and an end-of-stream marker",
        );
    }
    let footer = Header::parse(&tail[512..1024])
        .map_err(|_| Bad::Corrupt("the footer has no KDMV magic".into()))?;
    if footer.gd_offset == GD_AT_END {
        return corrupt("the footer does not say where the grain directory is");
    }
    Ok(footer)
}

impl Sparse {
    /// Opens a sparse extent; `gd_budget` is what the disk may still
    /// spend on grain directories (in entries), reduced by this one.
    fn open(file: &File, gd_budget: &mut u64) -> BadResult<(Sparse, Header)> {
        let file_len = file
            .metadata()
            .map_err(|e| Bad::Io("reading metadata", e))?
            .len();
        let h = read_header(file, file_len)?;
        if !(1..=3).contains(&h.version) {
            return Err(Bad::Unsupported(format!(
                "sparse extent version {} (1 to 3 are supported)",
                h.version
            )));
        }
        if h.flags & FLAG_NEWLINE_TEST != 0 && h.newline != *b"\n \r\n" {
            return corrupt(
                "the header's line-end test bytes are changed (was the file copied in text mode?)",
            );
        }
        let compressed = match h.compress {
            COMPRESS_NONE => false,
            COMPRESS_DEFLATE => true,
            other => {
                return Err(Bad::Unsupported(format!("compression algorithm {other}")));
            }
        };
        if !(1..=MAX_GRAIN_SECTORS).contains(&h.grain) {
            return corrupt(format!(
                "grain size of {} sectors is outside 1..={MAX_GRAIN_SECTORS}",
                h.grain
            ));
        }
        if !(1..=MAX_GTES).contains(&h.gtes_per_gt) {
            return corrupt(format!(
                "{} entries per grain table is outside 1..={MAX_GTES}",
                h.gtes_per_gt
            ));
        }
        let capacity = h
            .capacity
            .checked_mul(SECTOR)
            .filter(|&c| c <= MAX_CAPACITY)
            .ok_or_else(|| {
                Bad::Corrupt(format!(
                    "capacity of {} sectors is larger than {MAX_CAPACITY} bytes",
                    h.capacity
                ))
            })?;
        let grain_bytes = h.grain * SECTOR;
        let per_table = grain_bytes * u64::from(h.gtes_per_gt);
        let entries = capacity.div_ceil(per_table);
        if entries > MAX_GD_ENTRIES || entries > *gd_budget {
            return Err(Bad::Unsupported(format!(
                "a grain directory of {entries} entries is more than the {} this disk may have \
                 (grains of {grain_bytes} bytes)",
                MAX_GD_ENTRIES.min(*gd_budget)
            )));
        }
        *gd_budget -= entries;
        let gd_start = h.gd_offset.checked_mul(SECTOR);
        let gd_end = gd_start.and_then(|s| s.checked_add(entries * 4));
        match (gd_start, gd_end) {
            (Some(s), Some(end)) if s >= SECTOR && end <= file_len => {}
            _ => {
                return corrupt(format!(
                    "the grain directory ({entries} entries at sector {}) lies outside the file \
                     ({file_len} bytes)",
                    h.gd_offset
                ));
            }
        }
        let mut raw = vec![0u8; (entries * 4) as usize];
        read_at(
            file,
            &mut raw,
            h.gd_offset * SECTOR,
            "reading the grain directory",
        )?;
        let gd: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        let table_bytes = u64::from(h.gtes_per_gt) * 4;
        for (i, &sector) in gd.iter().enumerate() {
            if sector != 0 && u64::from(sector) * SECTOR + table_bytes > file_len {
                return corrupt(format!(
                    "grain table {i} (at sector {sector}) lies outside the file ({file_len} bytes)"
                ));
            }
        }
        Ok((
            Sparse {
                file_len,
                capacity,
                grain_bytes,
                gtes_per_gt: h.gtes_per_gt,
                gd,
                compressed,
                markers: h.flags & FLAG_MARKERS != 0,
                zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
                gt: None,
                grain: None,
                packed: Vec::new(),
            },
            h,
        ))
    }

    /// The grain table entry of grain `index`.
    pub(super) fn entry(&mut self, file: &File, index: u64) -> BadResult<u32> {
        let per = u64::from(self.gtes_per_gt);
        let (table, slot) = ((index / per) as usize, (index % per) as usize);
        let Some(&sector) = self.gd.get(table) else {
            return Ok(0);
        };
        if sector == 0 {
            return Ok(0);
        }
        if self.gt.as_ref().is_none_or(|(t, _)| *t != table) {
            let mut raw = vec![0u8; self.gtes_per_gt as usize * 4];
            read_at(
                file,
                &mut raw,
                u64::from(sector) * SECTOR,
                "reading a grain table",
            )?;
            let entries = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
            self.gt = Some((table, entries));
        }
        Ok(self.gt.as_ref().map_or(0, |(_, e)| e[slot]))
    }

    /// Inflates the compressed grain at sector `entry` into the cache.
    fn inflate(&mut self, file: &File, entry: u32, index: u64) -> BadResult<&[u8]> {
        if self.grain.as_ref().is_some_and(|(e, _)| *e == entry) {
            return Ok(&self.grain.as_ref().expect("checked").1);
        }
        let at = u64::from(entry) * SECTOR;
        let grain = self.grain_bytes as usize;
        // A grain that does not compress is a little larger than a grain.
        let limit = 2 * self.grain_bytes + 4096;
        let available = self.file_len.saturating_sub(at);
        if available == 0 {
            return corrupt(format!(
                "grain {index} (at sector {entry}) lies outside the file ({} bytes)",
                self.file_len
            ));
        }
        let (data_at, len) = if self.markers {
            if available < 12 {
                return corrupt(format!(
                    "the marker of grain {index} (at sector {entry}) is cut off by the end of the file"
                ));
            }
            let mut marker = [0u8; 12];
            read_at(file, &mut marker, at, "reading a grain marker")?;
            let size = u64::from(le32(&marker, 8));
            if size == 0 || size > limit {
                return corrupt(format!(
                    "grain {index} (at sector {entry}) has a compressed size of {size} bytes \
                     (1..={limit} for grains of {grain} bytes)"
                ));
            }
            if 12 + size > available {
                return corrupt(format!(
                    "the {size} compressed bytes of grain {index} (at sector {entry}) run past \
                     the end of the file ({} bytes)",
                    self.file_len
                ));
            }
            (at + 12, size)
        } else {
            (at, available.min(limit))
        };
        self.packed.resize(len as usize, 0);
        read_at(
            file,
            &mut self.packed,
            data_at,
            "reading a compressed grain",
        )?;
        let mut out = match self.grain.take() {
            Some((_, buf)) => buf,
            None => Vec::new(),
        };
        out.resize(grain + 1, 0);
        // zlib framing (RFC 1950) as VMware and qemu-img write it; a raw
        // deflate stream otherwise.
        let zlib = self.packed.len() >= 2
            && self.packed[0] & 0x0f == 8
            && (u16::from(self.packed[0]) << 8 | u16::from(self.packed[1])) % 31 == 0;
        // The last grain of a disk may hold only what is inside the disk
        // (qemu-img writes it so); the rest of it reads as zeroes.
        let needed = (self.capacity - (index * self.grain_bytes).min(self.capacity))
            .min(self.grain_bytes) as usize;
        let mut inflater = flate2::Decompress::new(zlib);
        let status = inflater.decompress(&self.packed, &mut out, flate2::FlushDecompress::Finish);
        let produced = inflater.total_out() as usize;
        match status {
            Ok(flate2::Status::StreamEnd) if (needed..=grain).contains(&produced) => {
                out[produced..].fill(0);
            }
            Ok(flate2::Status::StreamEnd) => {
                return corrupt(format!(
                    "grain {index} (at sector {entry}) inflates to {produced} bytes, not {needed}"
                ));
            }
            Ok(_) if produced > grain => {
                return corrupt(format!(
                    "grain {index} (at sector {entry}) inflates to more than {grain} bytes"
                ));
            }
            Ok(_) => {
                return corrupt(format!(
                    "the compressed data of grain {index} (at sector {entry}) is cut off"
                ));
            }
            Err(e) => {
                return corrupt(format!(
                    "the compressed data of grain {index} (at sector {entry}) is invalid: {e}"
                ));
            }
        }
        out.truncate(grain);
        self.grain = Some((entry, out));
        Ok(&self.grain.as_ref().expect("just set").1)
    }

    /// Reads `buf.len()` bytes at `offset` of the extent (inside it).
    pub(super) fn read(&mut self, file: &File, buf: &mut [u8], offset: u64) -> BadResult<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at / self.grain_bytes;
            let within = at % self.grain_bytes;
            let n = ((self.grain_bytes - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let entry = if at < self.capacity {
                self.entry(file, index)?
            } else {
                0
            };
            if entry == 0 || (entry == 1 && self.zero_grain) {
                out.fill(0);
            } else if self.compressed {
                let grain = self.inflate(file, entry, index)?;
                out.copy_from_slice(&grain[within as usize..within as usize + n]);
            } else {
                let start = u64::from(entry) * SECTOR + within;
                if start + n as u64 > self.file_len {
                    return corrupt(format!(
                        "grain {index} (at sector {entry}) lies outside the file ({} bytes)",
                        self.file_len
                    ));
                }
                read_at(file, out, start, "reading a grain")?;
            }
            done += n;
        }
        Ok(())
    }
}

/// Opens a sparse extent file and checks its embedded descriptor for a parent.
pub(super) fn open_sparse(path: &Path, gd_budget: &mut u64) -> BadResult<Sparse> {
    let file = File::open(path).map_err(|e| Bad::Io("opening", e))?;
    let (sparse, header) = Sparse::open(&file, gd_budget)?;
    if header.descriptor_offset != 0 && header.descriptor_size != 0 {
        let start = header.descriptor_offset.checked_mul(SECTOR);
        let len = header
            .descriptor_size
            .checked_mul(SECTOR)
            .filter(|&l| l <= MAX_DESCRIPTOR);
        match (start, len) {
            (Some(start), Some(len))
                if start.checked_add(len).is_some_and(|e| e <= sparse.file_len) =>
            {
                let mut text = vec![0u8; len as usize];
                read_at(&file, &mut text, start, "reading the embedded descriptor")?;
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                Descriptor::parse(&String::from_utf8_lossy(&text[..end]))?.check_no_parent()?;
            }
            _ => {
                return corrupt(format!(
                    "the embedded descriptor ({} sectors at sector {}) lies outside the file \
                     ({} bytes) or is larger than {MAX_DESCRIPTOR} bytes",
                    header.descriptor_size, header.descriptor_offset, sparse.file_len
                ));
            }
        }
    }
    Ok(sparse)
}
