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

mod descriptor;
mod sparse;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use self::descriptor::{Descriptor, ExtentLine, check_descriptor, descriptor_capacity};
use self::descriptor::{check_kind, read_descriptor_file, resolve_extent};
use self::sparse::{Sparse, open_sparse};
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
