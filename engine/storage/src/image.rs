//! An open disk image: raw or qcow2 with its backing chain, on imago.
//!
//! [`Image::open`] walks the backing chain itself rather than letting imago
//! open backing files implicitly: each layer is opened with imago's
//! `DenyImplicitOpenGate` and no backing, the header's backing file name is
//! resolved against the folder of the layer's path as opened, symlinks not
//! followed (as QEMU does), checked for existence
//! and for loops (by canonical path), and only then opened; the layers are
//! linked bottom-up at the end. So a loop or a missing file is reported with
//! the name of the image that refers to it, and nothing is opened twice.
//!
//! Only the top layer is ever opened writable.
//!
//! Reads and writes poll imago's futures on the calling thread
//! ([`block_on`]), so several threads serve requests on one image at the
//! same time; [`Image::run_batch`] runs the requests a guest has in flight
//! together on a few I/O threads (`pool.rs`). Flush, discard, resize and
//! the other rarer operations go through the tokio current-thread runtime
//! of imago's `SyncFormatAccess` wrapper. Every call into imago is wrapped in
//! `catch_unwind`: if the format driver were to panic on a hostile image, the
//! image is marked failed and every later request returns an error, and the
//! VMM or daemon carries on.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use imago::file::File;
use imago::format::PreallocateMode;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::vmdk::Vmdk;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate, Storage,
    StorageOpenOptions, SyncFormatAccess,
};

use crate::error::{Result, StorageError};
use crate::pool::IoPool;
use crate::probe::{ImageFormat, probe};

/// The deepest backing chain we open (top image included).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// I/O threads an image starts (on its first batch of more than one
/// request) to serve a batch together with the caller's thread.
pub const IO_WORKERS: usize = 3;

/// Whether a request of a batch reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Read from the disk into the slices.
    Read,
    /// Write the slices to the disk.
    Write,
}

/// One read or write of a batch ([`Image::run_batch`]): guest memory
/// slices (a scatter/gather list) and the disk offset.
pub struct IoRequest<'a, 'm, B = ()> {
    /// Read or write.
    pub kind: IoKind,
    /// The memory, in order.
    pub slices: &'a [vm_memory::VolatileSlice<'m, B>],
    /// The byte offset on the disk.
    pub offset: u64,
}

/// The requests of a batch, shared with the I/O threads.
struct SharedRequests<'r, 'a, 'm, B>(&'r [IoRequest<'a, 'm, B>]);

// SAFETY: a `VolatileSlice` is a pointer and a length into memory that
// stays valid for `'m`, made for memory that others (the guest) change at
// the same time: every access through it is a volatile copy. It is not
// `Sync` only because it holds a raw pointer. `Image::run_batch` hands
// each request to exactly one thread, and returns (ending the shared
// borrow) only after all of them finished. The dirty bitmap `B` is `Sync`
// by the bound.
unsafe impl<B: Sync> Sync for SharedRequests<'_, '_, '_, B> {}

/// How writes reach the disk (libvirt's `<driver cache='…'/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Host page cache bypassed (`O_DIRECT`); a guest flush syncs.
    None,
    /// Host page cache used; a guest flush syncs (the default).
    #[default]
    Writeback,
    /// Host page cache used; every write is synced before it completes.
    Writethrough,
}

impl CacheMode {
    /// The name libvirt uses.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::None => "none",
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
        }
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown cache mode name.
#[derive(Debug, thiserror::Error)]
#[error("unknown cache mode '{0}' (expected none, writeback or writethrough)")]
pub struct UnknownCacheMode(String);

impl FromStr for CacheMode {
    type Err = UnknownCacheMode;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "none" => Ok(CacheMode::None),
            "writeback" => Ok(CacheMode::Writeback),
            "writethrough" => Ok(CacheMode::Writethrough),
            other => Err(UnknownCacheMode(other.to_owned())),
        }
    }
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The format; `None` probes the header (as `qemu-img` does).
    pub format: Option<ImageFormat>,
    /// Open read-only (the file is opened without write access).
    pub read_only: bool,
    /// The cache mode.
    pub cache: CacheMode,
}

impl OpenOptions {
    /// Read-write, probed format, writeback cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the format instead of probing.
    pub fn format(mut self, format: ImageFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Opens read-only.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets the cache mode.
    pub fn cache(mut self, cache: CacheMode) -> Self {
        self.cache = cache;
        self
    }
}

/// One image of a backing chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The file, canonical.
    pub path: PathBuf,
    /// Its format.
    pub format: ImageFormat,
}

/// A layer opened but not yet linked to its backing.
enum Layer {
    Qcow2(Box<Qcow2<File>>),
    Raw(Box<Raw<File>>),
    Vmdk(Box<Vmdk<File>>),
}

/// An open image with its backing chain.
pub struct Image {
    path: PathBuf,
    read_only: bool,
    cache: CacheMode,
    chain: Vec<ChainLink>,
    access: SyncFormatAccess<File>,
    failed: AtomicBool,
    /// Started on the first batch of more than one request.
    pool: OnceLock<IoPool>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .field("cache", &self.cache)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a panic inside imago into an error.
pub(crate) fn no_panic<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => Err(io::Error::other(
            "the image format driver failed on this image (it is probably corrupt)",
        )),
    }
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(Unpark(std::thread::current())));
}

/// Runs an imago future to completion on the calling thread.
///
/// imago's file I/O is positioned `preadv`/`pwritev` done inside the
/// future, and its locks are `tokio::sync` ones, which need no runtime; so a
/// request needs no tokio runtime, only a thread to poll it and to park
/// while it waits for a lock another request holds. Unlike
/// `SyncFormatAccess` (whose current-thread runtime has one scheduler core
/// that concurrent callers take in turn), any number of threads can run
/// requests on one image at the same time this way.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    })
}

/// Resolves a backing file name as QEMU does: relative names are relative
/// to the folder of the image that names them.
pub(crate) fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        name.to_path_buf()
    } else {
        image.parent().unwrap_or_else(|| Path::new(".")).join(name)
    }
}

fn parse_format(path: &Path, name: &str) -> Result<ImageFormat> {
    match name {
        "raw" => Ok(ImageFormat::Raw),
        "qcow2" => Ok(ImageFormat::Qcow2),
        "vmdk" => Ok(ImageFormat::Vmdk),
        other => Err(StorageError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("backing format '{other}' is not supported"),
        }),
    }
}

fn storage_options(cache: CacheMode) -> StorageOpenOptions {
    StorageOpenOptions::new().direct(cache == CacheMode::None)
}

/// A backing file name and format as a header gives them.
type NamedBacking = (String, Option<String>);

/// Opens one layer without its backing; returns it with the backing file
/// (resolved) and format its header names.
fn open_layer(
    path: &Path,
    format: ImageFormat,
    writable: bool,
    cache: CacheMode,
) -> Result<(Layer, Option<NamedBacking>)> {
    let opening = if writable {
        "opening for writing"
    } else {
        "opening"
    };
    let opts = storage_options(cache);
    let file = || {
        no_panic(|| File::open_sync(opts.clone().filename(path).write(writable)))
            .map_err(|e| StorageError::io(path, opening, e))
    };
    match format {
        ImageFormat::Raw => {
            let file = file()?;
            let raw = no_panic(|| {
                Raw::<File>::builder(file)
                    .write(writable)
                    .storage_open_options(opts)
                    .open_sync(DenyImplicitOpenGate::default())
            })
            .map_err(|e| StorageError::io(path, opening, e))?;
            Ok((Layer::Raw(Box::new(raw)), None))
        }
        ImageFormat::Qcow2 => {
            // The header is checked by our own probe first (offsets against
            // the file size), then by imago.
            probe(path)?;
            let file = file()?;
            let qcow2 = no_panic(|| {
                Qcow2::<File>::builder(file)
                    .write(writable)
                    .storage_open_options(opts)
                    .backing(None)
                    .data_file(None)
                    .open_sync(DenyImplicitOpenGate::default())
            })
            .map_err(|e| StorageError::io(path, opening, e))?;
            if qcow2.requires_external_data_file() {
                return Err(StorageError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "qcow2 images with an external data file are not supported".into(),
                });
            }
            let backing = qcow2
                .implicit_backing_file()
                .map(|name| (name.clone(), qcow2.implicit_backing_format().cloned()));
            Ok((Layer::Qcow2(Box::new(qcow2)), backing))
        }
        ImageFormat::Vmdk => {
            if writable {
                return Err(StorageError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "vmdk images are imported by conversion, never written".into(),
                });
            }
            // A vmdk descriptor names its extent files: imago opens them
            // (read-only) relative to the descriptor, once we checked that
            // they stay inside its folder (see `crate::vmdk`). Sparse
            // extents are read by `crate::vmdk` for `convert` only.
            let sparse = match crate::vmdk::detect(path) {
                Some(crate::vmdk::VmdkFile::Descriptor) => !crate::vmdk::check_descriptor(path)?,
                Some(crate::vmdk::VmdkFile::Sparse) => true,
                None => false,
            };
            if sparse {
                return Err(StorageError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "sparse vmdk images cannot be used as disks; import them by \
                             conversion (vol-create-from, or vireo_storage::convert)"
                        .into(),
                });
            }
            let file = file()?;
            let vmdk = no_panic(|| {
                Vmdk::<File>::builder(file)
                    .write(false)
                    .storage_open_options(opts)
                    .open_sync(PermissiveImplicitOpenGate::default())
            })
            .map_err(|e| {
                if e.kind() == io::ErrorKind::Unsupported {
                    StorageError::Unsupported {
                        path: path.to_path_buf(),
                        reason: format!(
                            "{e} (only flat vmdk images can be imported; convert a sparse one \
                             with `qemu-img convert -O qcow2` first)"
                        ),
                    }
                } else {
                    StorageError::io(path, opening, e)
                }
            })?;
            Ok((Layer::Vmdk(Box::new(vmdk)), None))
        }
    }
}

/// Whether the file starts like a VMDK text descriptor (which `probe`
/// reports as unsupported for use as a disk, but which `convert` imports).
fn is_vmdk_descriptor(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 21];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"# Disk DescriptorFile"
}

/// Finds and opens every layer of the chain, top first.
fn open_chain(
    top: &Path,
    top_format: Option<ImageFormat>,
    writable: bool,
    cache: CacheMode,
) -> Result<(Vec<ChainLink>, Vec<Layer>)> {
    let mut links = Vec::new();
    let mut layers = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some((top.to_path_buf(), top_format, None::<PathBuf>));
    let mut depth = 0;
    while let Some((path, format, named_by)) = next.take() {
        depth += 1;
        if depth > MAX_CHAIN_DEPTH {
            return Err(StorageError::ChainTooDeep {
                path: top.to_path_buf(),
                limit: MAX_CHAIN_DEPTH,
            });
        }
        let canonical = match (std::fs::canonicalize(&path), &named_by) {
            (Ok(canonical), _) => canonical,
            (Err(e), None) => return Err(StorageError::io(&path, "opening", e)),
            (Err(_), Some(parent)) => {
                return Err(StorageError::MissingBacking {
                    path: parent.clone(),
                    backing: path,
                });
            }
        };
        // Only regular files and block devices: opening a FIFO named by a
        // hostile header would block forever, and a character device such
        // as /dev/zero or /dev/urandom is no disk.
        let file_type = std::fs::metadata(&canonical)
            .map_err(|e| StorageError::io(&canonical, "opening", e))?
            .file_type();
        if !(file_type.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&file_type)) {
            return Err(StorageError::Unsupported {
                path: named_by.unwrap_or_else(|| top.to_path_buf()),
                reason: format!(
                    "'{}' is not a regular file or block device",
                    canonical.display()
                ),
            });
        }
        if !seen.insert(canonical.clone()) {
            return Err(StorageError::BackingLoop {
                path: named_by.unwrap_or_else(|| top.to_path_buf()),
                backing: path,
            });
        }
        let format = match format {
            Some(format) => format,
            None if is_vmdk_descriptor(&canonical) => ImageFormat::Vmdk,
            None => probe(&canonical)?.format,
        };
        let is_top = links.is_empty();
        let (layer, backing) = open_layer(&canonical, format, writable && is_top, cache)?;
        if let Some((name, backing_format)) = backing {
            if name.starts_with("json:") || name.contains("://") {
                return Err(StorageError::Unsupported {
                    path: canonical,
                    reason: format!("backing file '{name}' is not a plain file name"),
                });
            }
            let backing_format = backing_format
                .map(|f| parse_format(&canonical, &f))
                .transpose()?;
            next = Some((
                resolve_backing(&path, &name),
                backing_format,
                Some(canonical.clone()),
            ));
        }
        links.push(ChainLink {
            path: canonical,
            format,
        });
        layers.push(layer);
    }
    Ok((links, layers))
}

impl Image {
    /// Opens an image and its whole backing chain.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Image> {
        let (chain, layers) = open_chain(path, options.format, !options.read_only, options.cache)?;
        let mut below: Option<FormatAccess<File>> = None;
        for layer in layers.into_iter().rev() {
            let access = match layer {
                Layer::Qcow2(mut qcow2) => {
                    qcow2.set_backing(below.take());
                    FormatAccess::new(*qcow2)
                }
                Layer::Raw(raw) => FormatAccess::new(*raw),
                Layer::Vmdk(vmdk) => FormatAccess::new(*vmdk),
            };
            below = Some(access);
        }
        let access = below.ok_or_else(|| StorageError::InvalidRequest {
            path: path.to_path_buf(),
            reason: "empty backing chain".into(),
        })?;
        let access = SyncFormatAccess::try_from(access)
            .map_err(|e| StorageError::io(path, "starting the I/O runtime", e))?;
        Ok(Image {
            path: chain[0].path.clone(),
            read_only: options.read_only,
            cache: options.cache,
            chain,
            access,
            failed: AtomicBool::new(false),
            pool: OnceLock::new(),
        })
    }

    /// The image file (canonical path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The top image's format.
    pub fn format(&self) -> ImageFormat {
        self.chain[0].format
    }

    /// The backing chain, this image first.
    pub fn chain(&self) -> &[ChainLink] {
        &self.chain
    }

    /// The size the guest sees, in bytes.
    pub fn size(&self) -> u64 {
        self.access.size()
    }

    /// Whether the image was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The cache mode.
    pub fn cache(&self) -> CacheMode {
        self.cache
    }

    /// The wrapped imago access (for operations inside this crate).
    pub(crate) fn access(&self) -> &SyncFormatAccess<File> {
        &self.access
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StorageError::InvalidRequest {
                path: self.path.clone(),
                reason: "an earlier request failed inside the format driver; the image is no \
                         longer used"
                    .into(),
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(StorageError::InvalidRequest {
                path: self.path.clone(),
                reason: format!(
                    "request of {len} bytes at offset {offset} is beyond the end of the disk ({} bytes)",
                    self.size()
                ),
            }),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(StorageError::ReadOnly {
                path: self.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce() -> io::Result<T>,
    ) -> Result<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StorageError::io(&self.path, what(), e)),
            Err(_) => {
                self.failed.store(true, Ordering::Relaxed);
                Err(StorageError::io(
                    &self.path,
                    what(),
                    io::Error::other("the format driver failed (the image is probably corrupt)"),
                ))
            }
        }
    }

    fn after_write(&self) -> Result<()> {
        if self.cache == CacheMode::Writethrough {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let len = buf.len();
        self.run(
            || format!("reading {len} bytes at offset {offset}"),
            || block_on(self.access.inner().read(buf, offset)),
        )
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        let len = buf.len();
        self.run(
            || format!("writing {len} bytes at offset {offset}"),
            || block_on(self.access.inner().write(buf, offset)),
        )?;
        self.after_write()
    }

    /// Reads into guest memory slices (scatter list) starting at `offset`.
    pub fn read_volatile<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        slices: &[vm_memory::VolatileSlice<'_, B>],
        offset: u64,
    ) -> Result<()> {
        let len: u64 = slices.iter().map(|s| s.len() as u64).sum();
        self.check_range(offset, len)?;
        self.run(
            || format!("reading {len} bytes at offset {offset}"),
            || {
                let (vector, _guard) = imago::io_buffers::IoVectorMut::from_volatile_slice(slices);
                block_on(self.access.inner().readv(vector, offset))
            },
        )
    }

    /// Writes guest memory slices (gather list) starting at `offset`.
    pub fn write_volatile<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        slices: &[vm_memory::VolatileSlice<'_, B>],
        offset: u64,
    ) -> Result<()> {
        self.write_volatile_unsynced(slices, offset)?;
        self.after_write()
    }

    /// [`Image::write_volatile`] without the writethrough flush, which a
    /// batch does once for all of its writes.
    fn write_volatile_unsynced<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        slices: &[vm_memory::VolatileSlice<'_, B>],
        offset: u64,
    ) -> Result<()> {
        self.check_writable()?;
        let len: u64 = slices.iter().map(|s| s.len() as u64).sum();
        self.check_range(offset, len)?;
        self.run(
            || format!("writing {len} bytes at offset {offset}"),
            || {
                let (vector, _guard) = imago::io_buffers::IoVector::from_volatile_slice(slices);
                block_on(self.access.inner().writev(vector, offset))
            },
        )
    }

    /// Runs a batch of reads and writes at the same time (as a guest with
    /// several requests in flight expects) on this thread and the image's
    /// I/O threads; returns one result per request, in order, once all
    /// have finished.
    ///
    /// The requests are not ordered among themselves: like the requests
    /// a guest has in flight at once, two that overlap leave either's data.
    /// A caller that needs an order (a flush after writes) runs the batch
    /// first and the rest after it.
    ///
    /// With `cache=writethrough` the batch is synced once, after all of
    /// its writes and before any of them is reported complete.
    pub fn run_batch<B: vm_memory::bitmap::BitmapSlice + Sync>(
        &self,
        requests: &[IoRequest<'_, '_, B>],
    ) -> Vec<Result<()>> {
        let run_one =
            |kind: IoKind, slices: &[vm_memory::VolatileSlice<'_, B>], offset: u64| match kind {
                IoKind::Read => self.read_volatile(slices, offset),
                IoKind::Write => self.write_volatile_unsynced(slices, offset),
            };
        let mut out: Vec<Result<()>> = if requests.len() <= 1 {
            requests
                .iter()
                .map(|r| run_one(r.kind, r.slices, r.offset))
                .collect()
        } else {
            let pool = self
                .pool
                .get_or_init(|| IoPool::new(IO_WORKERS, "vireo-disk-io"));
            let shared = SharedRequests(requests);
            let results: Vec<OnceLock<Result<()>>> =
                requests.iter().map(|_| OnceLock::new()).collect();
            pool.run(requests.len(), &|i| {
                // The whole `SharedRequests` (which is `Sync`), not its
                // field, is captured.
                let shared = &shared;
                let r = &shared.0[i];
                let _ = results[i].set(run_one(r.kind, r.slices, r.offset));
            });
            results
                .into_iter()
                .zip(requests)
                .map(|(result, r)| {
                    result.into_inner().unwrap_or_else(|| {
                        Err(StorageError::io(
                            &self.path,
                            format!("a request at offset {}", r.offset),
                            io::Error::other("the request failed inside an I/O thread"),
                        ))
                    })
                })
                .collect()
        };
        let wrote = requests
            .iter()
            .zip(&out)
            .any(|(r, result)| r.kind == IoKind::Write && result.is_ok());
        if wrote && let Err(e) = self.after_write() {
            let text = e.to_string();
            for (r, result) in requests.iter().zip(out.iter_mut()) {
                if r.kind == IoKind::Write && result.is_ok() {
                    *result = Err(StorageError::io(
                        &self.path,
                        format!("syncing a write at offset {}", r.offset),
                        io::Error::other(text.clone()),
                    ));
                }
            }
        }
        out
    }

    /// Writes out metadata caches and syncs data and metadata to the disk:
    /// when this returns, everything written before is stable.
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.run(|| "flushing".into(), || self.access.flush())?;
        self.run(|| "syncing".into(), || self.access.sync())
    }

    /// Makes `len` bytes at `offset` read as zeroes (deallocating them
    /// where the format can).
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let what = || format!("writing zeroes to {len} bytes at offset {offset}");
        let access = &mut self.access;
        let result = match catch_unwind(AssertUnwindSafe(|| access.discard_to_zero(offset, len))) {
            Ok(r) => r,
            Err(_) => {
                self.failed.store(true, Ordering::Relaxed);
                return Err(StorageError::io(
                    &self.path,
                    what(),
                    io::Error::other("the format driver failed (the image is probably corrupt)"),
                ));
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Unsupported => self.zero_fill(offset, len)?,
            Err(e) => return Err(StorageError::io(&self.path, what(), e)),
        }
        self.after_write()
    }

    /// Writes zeroes with plain writes, 1 MiB at a time.
    fn zero_fill(&self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            let at = offset + done;
            self.run(
                || format!("writing zeroes at offset {at}"),
                || self.access.write(&zeroes[..n as usize], at),
            )?;
            done += n;
        }
        Ok(())
    }

    /// Tells the image that `len` bytes at `offset` are no longer needed:
    /// their contents become unspecified and their space may be freed.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let access = &mut self.access;
        let result = match catch_unwind(AssertUnwindSafe(|| access.discard_to_any(offset, len))) {
            Ok(r) => r,
            Err(_) => {
                self.failed.store(true, Ordering::Relaxed);
                Err(io::Error::other(
                    "the format driver failed (the image is probably corrupt)",
                ))
            }
        };
        match result {
            Ok(()) => self.after_write(),
            // Discard is advisory: a format that cannot free space keeps the data.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
            Err(e) => Err(StorageError::io(
                &self.path,
                format!("discarding {len} bytes at offset {offset}"),
                e,
            )),
        }
    }

    /// Grows or shrinks the disk to `new_size` bytes.
    pub fn resize(&mut self, new_size: u64) -> Result<()> {
        self.check_writable()?;
        let access = &mut self.access;
        let result = match catch_unwind(AssertUnwindSafe(|| {
            access.resize(new_size, PreallocateMode::None)
        })) {
            Ok(r) => r,
            Err(_) => Err(io::Error::other(
                "the format driver failed (the image is probably corrupt)",
            )),
        };
        result.map_err(|e| {
            StorageError::io(&self.path, format!("resizing to {new_size} bytes"), e)
        })?;
        self.flush()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SyncFormatAccess flushes on drop too; do it here so that a panic
        // in the driver cannot escape a destructor.
        if !self.read_only && !self.failed.load(Ordering::Relaxed) {
            let _ = no_panic(|| self.access.flush());
        }
    }
}
