//! A read-only reader for VMware's hosted VMDK disks, the source of
//! [`crate::convert`] for what `imago` does not read: sparse extents
//! (`monolithicSparse`, `twoGbMaxExtentSparse`, and `streamOptimized` with
//! its deflate-compressed grains, markers and a grain directory at the
//! end), and descriptor files that mix sparse, flat and zero extents.
//!
//! # Format
//!
//! A sparse extent starts with a 512-byte little-endian header (`KDMV`):
//! the capacity and grain size in sectors, the number of grain table
//! entries per grain table, and the sector of the grain directory (GD).
//! Each GD entry is the sector of a grain table (GT), 0 when none is
//! allocated; each GT entry is the sector of a grain, 0 for an unallocated
//! grain and, when the header's zero-grain flag is set, 1 for a grain that
//! reads as zeroes. With compression (`compressAlgorithm` 1, what
//! `streamOptimized` uses), a GT entry points at a compressed grain: with
//! the markers flag, a 12-byte grain marker (the grain's first sector and
//! the compressed length) followed by a zlib stream (RFC 1950, what both
//! VMware and `qemu-img` write; a raw deflate stream is accepted too)
//! that inflates to one whole grain. A `streamOptimized` file written as a
//! stream (by VMware, in OVA exports) has `gdOffset` = all ones in its
//! header: the real header is the footer, 1536 bytes before the end of the
//! file (a footer marker, the footer, an end-of-stream marker).
//!
//! A descriptor file (`# Disk DescriptorFile`) lists extents, one per line:
//! `RW|RDONLY SECTORS FLAT|VMFS|SPARSE|ZERO "FILE" [OFFSET]`; the disk is
//! the extents one after the other. A sparse file may embed such a
//! descriptor (`monolithicSparse`, `streamOptimized`), which names the file
//! itself; only its parent fields are used here.
//!
//! # Hostile files
//!
//! Every offset and size read from a header, a table or a descriptor is
//! checked against the file before it is used. Memory is bounded: a
//! descriptor is at most 1 MiB, a grain at most 16 MiB, a grain directory
//! at most 4 Mi entries (16 MiB; 128 TiB of disk with 64 KiB grains), all
//! grain directories of a disk together at most 16 Mi entries, a disk at
//! most 16384 extents, and only one grain table (at most 2 KiB) and one
//! inflated grain are cached. Errors name the file and what is wrong.
//!
//! # Extent files
//!
//! Extent file names in a descriptor are resolved against the descriptor's
//! folder, as VMware and QEMU do, and must stay inside it: absolute names
//! and names with a `..` component are refused, and so is a name whose
//! real path (symbolic links resolved) lies outside the descriptor's
//! folder, or that is not a regular file (no FIFOs or devices). So a
//! descriptor uploaded into a pool cannot make the engine read another
//! file of the host (`/etc/shadow` as a flat extent) into a volume.
//!
//! Not supported (refused by name): delta disks (a parent, as VMware
//! snapshots have), ESX extent types (`VMFSSPARSE`, `SESPARSE`, raw device
//! mappings), `NOACCESS` extents.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::probe::ProbeError;

const SECTOR: u64 = 512;
const MAGIC: &[u8; 4] = b"KDMV";
const DESCRIPTOR_MAGIC: &[u8] = b"# Disk DescriptorFile";
const GD_AT_END: u64 = u64::MAX;
const FLAG_NEWLINE_TEST: u32 = 1;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESS_NONE: u16 = 0;
const COMPRESS_DEFLATE: u16 = 1;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;
/// The largest descriptor we read.
const MAX_DESCRIPTOR: u64 = 1 << 20;
/// The largest disk (the same limit as for qcow2).
const MAX_CAPACITY: u64 = 1 << 56;
/// The largest grain, in sectors (16 MiB; VMware uses 128, 64 KiB).
const MAX_GRAIN_SECTORS: u64 = 1 << 15;
/// Grain table entries per table (VMware and QEMU: 512).
const MAX_GTES: u32 = 512;
/// The largest grain directory of one extent.
const MAX_GD_ENTRIES: u64 = 4 << 20;
/// All grain directories of one disk together.
const MAX_TOTAL_GD_ENTRIES: u64 = 16 << 20;
/// The most extents of one disk.
const MAX_EXTENTS: usize = 16384;

/// What is wrong with a file, before we know how to name it.
#[derive(Debug)]
enum Bad {
    Corrupt(String),
    Unsupported(String),
    Io(&'static str, std::io::Error),
}

type BadResult<T> = std::result::Result<T, Bad>;

fn corrupt<T>(reason: impl Into<String>) -> BadResult<T> {
    Err(Bad::Corrupt(reason.into()))
}

impl Bad {
    /// The error for `path`, with `prefix` (e.g. which extent) before the reason.
    fn at(self, path: &Path, prefix: &str) -> StorageError {
        match self {
            Bad::Corrupt(reason) => StorageError::Probe(ProbeError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("{prefix}{reason}"),
            }),
            Bad::Unsupported(reason) => StorageError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("{prefix}{reason}"),
            },
            Bad::Io(what, e) if prefix.is_empty() => StorageError::io(path, what, e),
            Bad::Io(what, e) => StorageError::io(path, format!("{prefix}{what}"), e),
        }
    }
}

fn read_at(file: &File, buf: &mut [u8], offset: u64, what: &'static str) -> BadResult<()> {
    file.read_exact_at(buf, offset)
        .map_err(|e| Bad::Io(what, e))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// What kind of VMDK file a file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmdkFile {
    /// A sparse extent (`KDMV` header).
    Sparse,
    /// A text descriptor.
    Descriptor,
}

/// Whether the file at `path` is a VMDK sparse extent or descriptor.
pub fn detect(path: &Path) -> Option<VmdkFile> {
    let file = File::open(path).ok()?;
    let mut head = [0u8; 21];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    if head[..filled].starts_with(MAGIC) {
        Some(VmdkFile::Sparse)
    } else if head[..filled] == *DESCRIPTOR_MAGIC {
        Some(VmdkFile::Descriptor)
    } else {
        None
    }
}

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
struct Sparse {
    file_len: u64,
    /// Bytes of disk the extent holds (its header's capacity).
    capacity: u64,
    grain_bytes: u64,
    gtes_per_gt: u32,
    gd: Vec<u32>,
    compressed: bool,
    markers: bool,
    zero_grain: bool,
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
    fn entry(&mut self, file: &File, index: u64) -> BadResult<u32> {
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
    fn read(&mut self, file: &File, buf: &mut [u8], offset: u64) -> BadResult<()> {
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

/// One line of a descriptor's extent list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Its size in sectors.
    pub sectors: u64,
    /// `FLAT`, `SPARSE`, `ZERO`, `VMFS`, …
    pub kind: String,
    /// The file, as written (none for `ZERO`).
    pub file: Option<String>,
    /// Where the extent starts in a flat file, in sectors.
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`.
    pub create_type: Option<String>,
    /// `parentCID` (`ffffffff` for a disk without a parent).
    pub parent_cid: Option<String>,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// The extents, in disk order.
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// Parses descriptor text.
    fn parse(text: &str) -> BadResult<Descriptor> {
        let mut d = Descriptor::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Bad::Unsupported(format!(
                        "the descriptor lists more than {MAX_EXTENTS} extents"
                    )));
                }
                d.extents
                    .push(parse_extent_line(line).map_err(|why| {
                        Bad::Corrupt(format!("descriptor line {}: {why}", n + 1))
                    })?);
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().trim_matches('"').to_owned();
                match key.trim() {
                    "createType" => d.create_type = Some(value),
                    "parentCID" => d.parent_cid = Some(value),
                    "parentFileNameHint" => d.parent_hint = Some(value),
                    _ => {}
                }
            }
        }
        Ok(d)
    }

    /// Refuses a delta disk (one with a parent).
    fn check_no_parent(&self) -> BadResult<()> {
        let has_parent = self.parent_hint.as_deref().is_some_and(|h| !h.is_empty())
            || self
                .parent_cid
                .as_deref()
                .is_some_and(|c| !c.eq_ignore_ascii_case("ffffffff"));
        if has_parent {
            return Err(Bad::Unsupported(format!(
                "a delta disk (a VMware snapshot) with parent {}; import the disk it was \
                 taken from, or consolidate the snapshots first",
                self.parent_hint
                    .as_deref()
                    .map(|h| format!("'{h}'"))
                    .unwrap_or_else(|| format!(
                        "CID {}",
                        self.parent_cid.as_deref().unwrap_or("?")
                    ))
            )));
        }
        Ok(())
    }
}

/// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent_line(line: &str) -> std::result::Result<ExtentLine, String> {
    let mut rest = line;
    let mut word = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (w, r) = trimmed.split_at(end);
        rest = r;
        w
    };
    let access = word().to_owned();
    let sectors_text = word();
    let sectors = sectors_text
        .parse::<u64>()
        .map_err(|_| format!("extent size '{sectors_text}' is not a number of sectors"))?;
    let kind = word().to_owned();
    if kind.is_empty() {
        return Err("the extent has no type".into());
    }
    let rest = rest.trim();
    let (file, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or("the extent's file name has no closing quote")?;
        (Some(quoted[..end].to_owned()), quoted[end + 1..].trim())
    } else {
        (None, rest)
    };
    let offset = if rest.is_empty() {
        0
    } else {
        rest.parse::<u64>()
            .map_err(|_| format!("extent offset '{rest}' is not a number of sectors"))?
    };
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// Reads a descriptor file (at most 1 MiB).
fn read_descriptor_file(path: &Path) -> Result<Descriptor> {
    let file = File::open(path).map_err(|e| StorageError::io(path, "opening", e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, "reading metadata", e))?
        .len();
    if len > MAX_DESCRIPTOR {
        return Err(Bad::Corrupt(format!(
            "a VMDK descriptor of {len} bytes is larger than {MAX_DESCRIPTOR}"
        ))
        .at(path, ""));
    }
    let mut text = vec![0u8; len as usize];
    read_at(&file, &mut text, 0, "reading the descriptor").map_err(|e| e.at(path, ""))?;
    Descriptor::parse(&String::from_utf8_lossy(&text)).map_err(|e| e.at(path, ""))
}

/// Resolves an extent file name against the descriptor's folder (see the
/// module documentation for what is refused).
fn resolve_extent(descriptor: &Path, name: &str) -> BadResult<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || name.contains('\0') {
        return corrupt("an extent has an empty file name");
    }
    if rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(Bad::Unsupported(format!(
            "extent file '{name}' is outside the descriptor's folder (only names relative to it, \
             without '..', are followed)"
        )));
    }
    let folder = descriptor.parent().unwrap_or_else(|| Path::new("."));
    let folder = std::fs::canonicalize(if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    })
    .map_err(|e| Bad::Io("finding the descriptor's folder", e))?;
    let path = folder.join(rel);
    let real = std::fs::canonicalize(&path)
        .map_err(|e| Bad::Corrupt(format!("extent file '{name}' cannot be opened: {e}")))?;
    if !real.starts_with(&folder) {
        return Err(Bad::Unsupported(format!(
            "extent file '{name}' leads outside the descriptor's folder (to '{}')",
            real.display()
        )));
    }
    let meta = std::fs::metadata(&real)
        .map_err(|e| Bad::Corrupt(format!("extent file '{name}' cannot be opened: {e}")))?;
    if !meta.is_file() {
        return Err(Bad::Unsupported(format!(
            "extent file '{name}' is not a regular file"
        )));
    }
    Ok(real)
}

/// Refuses the extent types and access modes we do not read.
fn check_kind(e: &ExtentLine) -> BadResult<()> {
    if e.access == "NOACCESS" {
        return Err(Bad::Unsupported(
            "NOACCESS extents are not supported".into(),
        ));
    }
    match e.kind.as_str() {
        "FLAT" | "VMFS" | "SPARSE" | "ZERO" => Ok(()),
        other => Err(Bad::Unsupported(format!(
            "{other} extents (ESX formats) are not supported; FLAT, SPARSE and ZERO are"
        ))),
    }
}

/// Checks a descriptor file for `imago` (which opens its extents itself):
/// no parent, every extent file inside the descriptor's folder. Returns
/// whether every extent is flat or zero (what imago reads).
pub fn check_descriptor(path: &Path) -> Result<bool> {
    let d = read_descriptor_file(path)?;
    d.check_no_parent().map_err(|e| e.at(path, ""))?;
    let mut all_flat = true;
    for e in &d.extents {
        let label = format!("extent '{}': ", e.file.as_deref().unwrap_or(&e.kind));
        check_kind(e).map_err(|b| b.at(path, &label))?;
        if let Some(name) = &e.file {
            resolve_extent(path, name).map_err(|b| b.at(path, &label))?;
        }
        all_flat &= matches!(e.kind.as_str(), "FLAT" | "VMFS" | "ZERO");
    }
    Ok(all_flat)
}

/// The virtual size a descriptor file describes (the sum of its extents).
pub fn descriptor_capacity(path: &Path) -> Result<u64> {
    let d = read_descriptor_file(path)?;
    let mut total: u64 = 0;
    for e in &d.extents {
        total = e
            .sectors
            .checked_mul(SECTOR)
            .and_then(|b| total.checked_add(b))
            .filter(|&t| t <= MAX_CAPACITY)
            .ok_or_else(|| {
                Bad::Corrupt(format!(
                    "the extents add up to more than {MAX_CAPACITY} bytes"
                ))
                .at(path, "")
            })?;
    }
    Ok(total)
}

/// Reads a flat extent's bytes; past the end of the file, zeroes.
fn read_flat(file: &File, out: &mut [u8], at: u64) -> BadResult<()> {
    let mut done = 0;
    while done < out.len() {
        match file.read_at(&mut out[done..], at + done as u64) {
            Ok(0) => {
                out[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Bad::Io("reading", e)),
        }
    }
    Ok(())
}

/// Whether the `len` bytes at `start` of a flat extent file are a hole
/// (or past its end): no data between them (`SEEK_DATA`). `false` when
/// the file system cannot tell.
fn is_hole(file: &File, start: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(from) = libc::off_t::try_from(start) else {
        return false;
    };
    // SAFETY: lseek on a descriptor we own, with plain integers.
    let data = unsafe { libc::lseek(file.as_raw_fd(), from, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: no data at or after `start`.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    u64::try_from(data).is_ok_and(|d| d >= start.saturating_add(len))
}

/// Where an extent's data comes from.
enum Source {
    Zero,
    Flat { offset: u64 },
    Sparse(Box<Sparse>),
}

struct Extent {
    /// Where it starts on the disk, in bytes.
    start: u64,
    len: u64,
    /// Its file (none for a zero extent).
    path: Option<PathBuf>,
    /// How errors name it: empty for the file opened itself.
    label: String,
    source: Source,
}

/// An open VMDK disk (a sparse extent, or a descriptor and its extents),
/// read-only.
pub struct VmdkReader {
    path: PathBuf,
    size: u64,
    extents: Vec<Extent>,
    /// The one extent file kept open: (extent index, file).
    open: Option<(usize, File)>,
}

impl std::fmt::Debug for VmdkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmdkReader")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("extents", &self.extents.len())
            .finish_non_exhaustive()
    }
}

/// Opens a sparse extent file and checks its embedded descriptor for a parent.
fn open_sparse(path: &Path, gd_budget: &mut u64) -> BadResult<Sparse> {
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

impl VmdkReader {
    /// Opens a sparse extent file or a descriptor file with its extents.
    pub fn open(path: &Path) -> Result<VmdkReader> {
        let mut gd_budget = MAX_TOTAL_GD_ENTRIES;
        match detect(path) {
            Some(VmdkFile::Sparse) => {
                let sparse = open_sparse(path, &mut gd_budget).map_err(|e| e.at(path, ""))?;
                let size = sparse.capacity;
                Ok(VmdkReader {
                    path: path.to_path_buf(),
                    size,
                    extents: vec![Extent {
                        start: 0,
                        len: size,
                        path: Some(path.to_path_buf()),
                        label: String::new(),
                        source: Source::Sparse(Box::new(sparse)),
                    }],
                    open: None,
                })
            }
            Some(VmdkFile::Descriptor) => Self::open_descriptor(path, &mut gd_budget),
            None => {
                // Name an unreadable file as such.
                File::open(path).map_err(|e| StorageError::io(path, "opening", e))?;
                Err(Bad::Corrupt("not a VMDK sparse extent or descriptor".into()).at(path, ""))
            }
        }
    }

    fn open_descriptor(path: &Path, gd_budget: &mut u64) -> Result<VmdkReader> {
        let d = read_descriptor_file(path)?;
        d.check_no_parent().map_err(|e| e.at(path, ""))?;
        if d.extents.is_empty() {
            return Err(Bad::Corrupt("the descriptor lists no extents".into()).at(path, ""));
        }
        let mut extents = Vec::with_capacity(d.extents.len());
        let mut start: u64 = 0;
        for line in &d.extents {
            let label = match &line.file {
                Some(name) => format!("extent '{name}': "),
                None => format!("{} extent at sector {}: ", line.kind, start / SECTOR),
            };
            let fail = |b: Bad| b.at(path, &label);
            let len = line
                .sectors
                .checked_mul(SECTOR)
                .filter(|&l| start.checked_add(l).is_some_and(|end| end <= MAX_CAPACITY))
                .ok_or_else(|| {
                    fail(Bad::Corrupt(format!(
                        "the extents add up to more than {MAX_CAPACITY} bytes"
                    )))
                })?;
            check_kind(line).map_err(fail)?;
            let file = |line: &ExtentLine| -> BadResult<PathBuf> {
                let name = line.file.as_deref().ok_or_else(|| {
                    Bad::Corrupt(format!("a {} extent needs a file name", line.kind))
                })?;
                resolve_extent(path, name)
            };
            let (extent_path, source) = match line.kind.as_str() {
                "ZERO" => (None, Source::Zero),
                "FLAT" | "VMFS" => {
                    let p = file(line).map_err(fail)?;
                    // Past the end of a flat file the disk reads as
                    // zeroes, as in QEMU and imago.
                    // Offset and extent together stay below
                    // MAX_CAPACITY, so no position in the file can
                    // overflow later.
                    let offset = line
                        .offset
                        .checked_mul(SECTOR)
                        .filter(|&o| o.checked_add(len).is_some_and(|end| end <= MAX_CAPACITY))
                        .ok_or_else(|| {
                            fail(Bad::Corrupt(format!(
                                "offset of {} sectors is too large",
                                line.offset
                            )))
                        })?;
                    (Some(p), Source::Flat { offset })
                }
                "SPARSE" => {
                    let p = file(line).map_err(fail)?;
                    if p == std::fs::canonicalize(path).unwrap_or_default() {
                        return Err(fail(Bad::Corrupt("the descriptor names itself".into())));
                    }
                    let sparse = open_sparse(&p, gd_budget).map_err(fail)?;
                    if sparse.capacity < len {
                        return Err(fail(Bad::Corrupt(format!(
                            "the extent holds {} sectors but the descriptor says {}",
                            sparse.capacity / SECTOR,
                            line.sectors
                        ))));
                    }
                    (Some(p), Source::Sparse(Box::new(sparse)))
                }
                other => {
                    return Err(fail(Bad::Unsupported(format!(
                        "{other} extents (ESX formats) are not supported; FLAT, SPARSE and \
                         ZERO are"
                    ))));
                }
            };
            extents.push(Extent {
                start,
                len,
                path: extent_path,
                label,
                source,
            });
            start += len;
        }
        Ok(VmdkReader {
            path: path.to_path_buf(),
            size: start,
            extents,
            open: None,
        })
    }

    /// The size the guest sees, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file opened (the descriptor, or the sparse extent).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the `len` bytes at `offset` are known to read as zeroes
    /// without reading data (zero extents, unallocated and zeroed grains).
    pub fn reads_as_zeroes(&mut self, offset: u64, len: u64) -> Result<bool> {
        let end = offset.saturating_add(len).min(self.size);
        let mut at = offset;
        let mut index = self.extents.partition_point(|e| e.start + e.len <= at);
        while at < end {
            let Some(extent) = self.extents.get(index) else {
                return Ok(true);
            };
            let stop = (extent.start + extent.len).min(end);
            if stop > at {
                match &extent.source {
                    Source::Zero => {}
                    Source::Flat { offset } => {
                        let start = offset + (at - extent.start);
                        let len = stop - at;
                        self.ensure_open(index)?;
                        let Some((_, file)) = &self.open else {
                            return Ok(false);
                        };
                        if !is_hole(file, start, len) {
                            return Ok(false);
                        }
                    }
                    Source::Sparse(_) => {
                        self.ensure_open(index)?;
                        let Some((_, file)) = &self.open else {
                            return Ok(false);
                        };
                        let extent = &mut self.extents[index];
                        let Source::Sparse(sparse) = &mut extent.source else {
                            return Ok(false);
                        };
                        let first = (at - extent.start) / sparse.grain_bytes;
                        let last = (stop - 1 - extent.start) / sparse.grain_bytes;
                        for grain in first..=last {
                            let entry = sparse
                                .entry(file, grain)
                                .map_err(|e| e.at(&self.path, &extent.label))?;
                            if !(entry == 0 || (entry == 1 && sparse.zero_grain)) {
                                return Ok(false);
                            }
                        }
                    }
                }
            }
            at = stop;
            index += 1;
        }
        Ok(true)
    }

    /// Reads `buf.len()` bytes at `offset`, inside the disk.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| StorageError::InvalidRequest {
                path: self.path.clone(),
                reason: format!(
                    "reading {} bytes at offset {offset} is outside the disk ({} bytes)",
                    buf.len(),
                    self.size
                ),
            })?;
        let mut at = offset;
        // Extents are in disk order; find the first one holding `at`.
        let mut index = self
            .extents
            .partition_point(|e| e.start + e.len <= at)
            .min(self.extents.len().saturating_sub(1));
        while at < end {
            let Some(extent) = self.extents.get(index) else {
                break;
            };
            let within = at - extent.start;
            let n = (extent.len - within).min(end - at) as usize;
            let out = &mut buf[(at - offset) as usize..(at - offset) as usize + n];
            if n > 0 {
                self.read_extent(index, out, within)?;
            }
            at += n as u64;
            index += 1;
        }
        Ok(())
    }

    /// Keeps extent `index`'s file open (closing the one open before).
    fn ensure_open(&mut self, index: usize) -> Result<()> {
        if self.open.as_ref().is_none_or(|(i, _)| *i != index) {
            self.open = None;
            let extent = &self.extents[index];
            let p = extent.path.as_deref().unwrap_or(&self.path);
            let file =
                File::open(p).map_err(|e| Bad::Io("opening", e).at(&self.path, &extent.label))?;
            self.open = Some((index, file));
        }
        Ok(())
    }

    fn read_extent(&mut self, index: usize, out: &mut [u8], within: u64) -> Result<()> {
        if matches!(self.extents[index].source, Source::Zero) {
            out.fill(0);
            return Ok(());
        }
        self.ensure_open(index)?;
        let Some((_, file)) = &self.open else {
            return Ok(());
        };
        let extent = &mut self.extents[index];
        let result = match &mut extent.source {
            Source::Zero => Ok(()),
            Source::Flat { offset } => read_flat(file, out, *offset + within),
            Source::Sparse(sparse) => sparse.read(file, out, within),
        };
        result.map_err(|e| e.at(&self.path, &extent.label))
    }
}
