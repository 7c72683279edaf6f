//! Whole-image operations: convert (and vmdk import), commit, stream.
//!
//! # Why an interrupted commit or stream leaves a chain that reads the same
//!
//! **Commit** (merge an overlay down into its backing image) copies every
//! range that the *overlay itself* defines (allocated data, compressed data
//! or explicit zeroes) into the backing image, in place, then flushes the
//! backing image. Ranges the overlay does not define are never touched.
//! Reading through the overlay, a range the overlay defines comes from the
//! overlay and not from the backing image, so no write of the commit changes
//! what the chain reads, at any instant: if the process is killed half-way,
//! the overlay still shadows every range whose backing data was changed,
//! and the chain `overlay → backing → …` reads exactly what it read before.
//! The overlay is left as it is (it stays a valid overlay whose data equals
//! its backing's); the caller deletes it or keeps using it. The backing
//! image itself does change: any *other* overlay of the same backing image
//! sees the committed data, so the snapshot tree must only commit into an
//! image that has a single child (the caller's responsibility).
//!
//! **Stream** (pull the backing data up so the image stands alone) writes
//! the fully resolved contents of the chain into a *new* qcow2 file next to
//! the image (`<name>.stream-tmp`), flushes and syncs it, then renames it
//! over the image and syncs the folder. Until the rename the original image
//! and its chain are untouched; the rename is atomic, so a reader sees
//! either the old chain or the new standalone image, which read the same.
//! A leftover temporary file from an interrupted stream is removed by the
//! next attempt. The image must not be open elsewhere (e.g. by a running
//! VM) while it is streamed.
//! [`stream_above`] does the same but keeps a base image of the chain as
//! the new backing image, pulling up only the layers above it.

use std::fs;
use std::path::{Path, PathBuf};

use imago::ShallowMapping;

use crate::create::{DEFAULT_CLUSTER_SIZE, Qcow2Options, create_qcow2, create_raw};
use crate::error::{Result, StorageError};
use crate::image::{Image, OpenOptions};
use crate::probe::ImageFormat;
use crate::vmdk::{self, VmdkFile, VmdkReader};

/// The unit of copying.
const CHUNK: u64 = 1 << 20;

/// The format of a conversion's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormat {
    /// Sparse raw.
    Raw,
    /// qcow2 with the given cluster size.
    Qcow2 {
        /// Cluster size in bytes.
        cluster_size: usize,
    },
}

impl TargetFormat {
    /// qcow2 with 64 KiB clusters.
    pub fn qcow2() -> Self {
        TargetFormat::Qcow2 {
            cluster_size: DEFAULT_CLUSTER_SIZE,
        }
    }
}

/// Progress of a long operation: `(bytes done, bytes in total)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn is_zero(buf: &[u8]) -> bool {
    // Slice comparison is a memcmp, fast in unoptimised builds too.
    const ZEROES: [u8; 4096] = [0; 4096];
    buf.chunks(ZEROES.len()).all(|c| c == &ZEROES[..c.len()])
}

/// Copies the whole visible contents of `src` into `dst` (same size or
/// larger), skipping ranges that read as zeroes. `dst` must read as zeroes
/// (a new image).
fn copy_contents(src: &Image, dst: &Image, progress: Progress<'_>) -> Result<()> {
    copy_from(
        src.size(),
        &mut |buf, at| src.read_at(buf, at).map(|()| true),
        dst,
        progress,
    )
}

/// [`copy_contents`] from any reader of `size` bytes; `read` returns
/// `false` for a range it knows reads as zeroes without filling `buf`.
fn copy_from(
    size: u64,
    read: &mut dyn FnMut(&mut [u8], u64) -> Result<bool>,
    dst: &Image,
    progress: Progress<'_>,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < size {
        let len = CHUNK.min(size - offset);
        let chunk = &mut buf[..len as usize];
        if read(chunk, offset)? && !is_zero(chunk) {
            dst.write_at(chunk, offset)?;
        }
        offset += len;
        progress(offset, size);
    }
    Ok(())
}

/// The source of a conversion.
enum Source {
    /// Through imago (raw, qcow2 with its chain, flat vmdk).
    Image(Image),
    /// Sparse or streamOptimized vmdk, through our own reader.
    Vmdk(VmdkReader),
}

impl Source {
    fn open(path: &Path, options: &OpenOptions) -> Result<Source> {
        let kind = match options.format {
            None | Some(ImageFormat::Vmdk) => vmdk::detect(path),
            Some(_) => None,
        };
        let own = match kind {
            Some(VmdkFile::Sparse) => true,
            // imago reads descriptors of flat extents; the rest is ours.
            Some(VmdkFile::Descriptor) => !vmdk::check_descriptor(path)?,
            None => false,
        };
        if own {
            Ok(Source::Vmdk(VmdkReader::open(path)?))
        } else {
            Ok(Source::Image(Image::open(path, options)?))
        }
    }

    fn size(&self) -> u64 {
        match self {
            Source::Image(image) => image.size(),
            Source::Vmdk(reader) => reader.size(),
        }
    }
}

/// Converts `src` (any supported format, with its chain, e.g. a vmdk to
/// import: flat ones through imago, sparse and streamOptimized ones
/// through [`crate::vmdk`]) into a new standalone image at `dst`. Zero
/// ranges are not written, so the target stays sparse. On failure `dst`
/// is removed.
pub fn convert(
    src: &Path,
    src_options: &OpenOptions,
    dst: &Path,
    target: TargetFormat,
    progress: Progress<'_>,
) -> Result<()> {
    let src_options = src_options.clone().read_only(true);
    let mut source = Source::open(src, &src_options)?;
    let size = source.size();
    match target {
        TargetFormat::Raw => create_raw(dst, size)?,
        TargetFormat::Qcow2 { cluster_size } => {
            let mut options = Qcow2Options::new(size);
            options.cluster_size = cluster_size;
            create_qcow2(dst, &options)?;
        }
    }
    let result = (|| {
        let format = match target {
            TargetFormat::Raw => ImageFormat::Raw,
            TargetFormat::Qcow2 { .. } => ImageFormat::Qcow2,
        };
        let target = Image::open(dst, &OpenOptions::new().format(format))?;
        match &mut source {
            Source::Image(image) => copy_contents(image, &target, progress)?,
            Source::Vmdk(reader) => copy_from(
                size,
                &mut |buf, at| {
                    if reader.reads_as_zeroes(at, buf.len() as u64)? {
                        return Ok(false);
                    }
                    reader.read_at(buf, at).map(|()| true)
                },
                &target,
                progress,
            )?,
        }
        target.flush()
    })();
    if result.is_err() {
        let _ = fs::remove_file(dst);
    }
    result
}

/// What a range of the overlay is, for commit.
enum Defined {
    /// The overlay holds data for it.
    Data,
    /// The overlay says it reads as zeroes.
    Zero,
    /// The overlay does not define it (it reads from the backing image).
    No,
}

/// Merges the overlay at `overlay` down into its backing image, safely
/// (see the module documentation). Returns the backing image's path.
pub fn commit(overlay: &Path, progress: Progress<'_>) -> Result<PathBuf> {
    let top = Image::open(overlay, &OpenOptions::new().read_only(true))?;
    let Some(backing_link) = top.chain().get(1).cloned() else {
        return Err(StorageError::InvalidRequest {
            path: top.path().to_path_buf(),
            reason: "the image has no backing file to commit into".into(),
        });
    };
    let mut base = Image::open(
        &backing_link.path,
        &OpenOptions::new().format(backing_link.format),
    )?;
    let size = top.size();
    if base.size() < size {
        base.resize(size)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StorageError::io(top.path(), "starting the I/O runtime", e))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    // Each step advances by at least one byte (a zero-length mapping is an error).
    while offset < size {
        let want = CHUNK.min(size - offset);
        let (defined, len) = runtime
            .block_on(top.access().inner().get_shallow_mapping(offset, want))
            .map(|(mapping, len)| {
                let defined = match mapping {
                    ShallowMapping::Raw { .. } | ShallowMapping::Special { .. } => Defined::Data,
                    ShallowMapping::Zero { explicit: true, .. } => Defined::Zero,
                    _ => Defined::No,
                };
                (defined, len.min(want))
            })
            .map_err(|e| StorageError::io(top.path(), format!("mapping offset {offset}"), e))?;
        if len == 0 {
            return Err(StorageError::InvalidRequest {
                path: top.path().to_path_buf(),
                reason: format!("the image maps no data at offset {offset} inside the disk"),
            });
        }
        match defined {
            Defined::Data => {
                let chunk = &mut buf[..len as usize];
                top.read_at(chunk, offset)?;
                base.write_at(chunk, offset)?;
            }
            Defined::Zero => base.write_zeroes(offset, len)?,
            Defined::No => {}
        }
        offset += len;
        progress(offset, size);
    }
    base.flush()?;
    Ok(base.path().to_path_buf())
}

/// Makes the image at `path` standalone: the data it reads from its
/// backing chain is copied into it and the backing file reference is
/// dropped, safely (see the module documentation). The result is a qcow2
/// image with the same cluster size as before.
pub fn stream(path: &Path, progress: Progress<'_>) -> Result<()> {
    let top = Image::open(path, &OpenOptions::new().read_only(true))?;
    if top.format() != ImageFormat::Qcow2 {
        return Err(StorageError::InvalidRequest {
            path: top.path().to_path_buf(),
            reason: "only qcow2 images have backing files to stream from".into(),
        });
    }
    if top.chain().len() == 1 {
        return Ok(());
    }
    let canonical = top.path().to_path_buf();
    let cluster_size = crate::probe::probe(&canonical)?
        .cluster_size
        .and_then(|c| usize::try_from(c).ok())
        .unwrap_or(DEFAULT_CLUSTER_SIZE);
    let mut tmp_name = canonical.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".stream-tmp");
    let tmp = canonical.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StorageError::io(
                &tmp,
                "removing a leftover temporary file",
                e,
            ));
        }
    }
    let mut options = Qcow2Options::new(top.size());
    options.cluster_size = cluster_size;
    create_qcow2(&tmp, &options)?;
    let result = (|| {
        let target = Image::open(&tmp, &OpenOptions::new().format(ImageFormat::Qcow2))?;
        copy_contents(&top, &target, progress)?;
        target.flush()?;
        drop(target);
        drop(top);
        fs::rename(&tmp, &canonical)
            .map_err(|e| StorageError::io(&canonical, "replacing with the streamed image", e))?;
        sync_parent(&canonical)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Like [`stream`], but keeps `base` (an image of the chain below the
/// immediate backing image) as the new backing image: only the data of the
/// layers between the image and `base` is pulled up, and the layers
/// between can then be deleted (how a snapshot in the middle of a tree is
/// removed). Safe in the same way: the result is built in a temporary file
/// (backed by `base`, with explicit zeroes where an upper layer reads as
/// zeroes over data in `base`) and renamed over the image.
pub fn stream_above(path: &Path, base: &Path, progress: Progress<'_>) -> Result<()> {
    let top = Image::open(path, &OpenOptions::new().read_only(true))?;
    let base_canonical =
        fs::canonicalize(base).map_err(|e| StorageError::io(base, "opening", e))?;
    let depth = top
        .chain()
        .iter()
        .position(|l| l.path == base_canonical)
        .filter(|&d| d > 0)
        .ok_or_else(|| StorageError::InvalidRequest {
            path: top.path().to_path_buf(),
            reason: format!("'{}' is not below it in its backing chain", base.display()),
        })?;
    if depth == 1 {
        return Ok(());
    }
    let base_link = top.chain()[depth].clone();
    let canonical = top.path().to_path_buf();
    // Name the base relative to the image when they share a folder.
    let name = if base_link.path.parent() == canonical.parent() {
        base_link
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    } else {
        base_link.path.to_string_lossy().into_owned()
    };
    let cluster_size = crate::probe::probe(&canonical)?
        .cluster_size
        .and_then(|c| usize::try_from(c).ok())
        .unwrap_or(DEFAULT_CLUSTER_SIZE);
    let mut tmp_name = canonical.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".stream-tmp");
    let tmp = canonical.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut options = Qcow2Options::new(top.size());
    options.cluster_size = cluster_size;
    options.backing = Some(crate::create::BackingSpec {
        name,
        format: base_link.format,
    });
    create_qcow2(&tmp, &options)?;
    let result = (|| {
        let mut target = Image::open(&tmp, &OpenOptions::new().format(ImageFormat::Qcow2))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| StorageError::io(&canonical, "starting the I/O runtime", e))?;
        let size = top.size();
        let mut buf = vec![0u8; CHUNK as usize];
        let mut offset = 0;
        while offset < size {
            let want = CHUNK.min(size - offset);
            let (above, len) = defined_above(&runtime, top.access().inner(), offset, want, depth)
                .map_err(|e| {
                StorageError::io(&canonical, format!("mapping offset {offset}"), e)
            })?;
            if len == 0 {
                return Err(StorageError::InvalidRequest {
                    path: canonical.clone(),
                    reason: format!("the image maps no data at offset {offset} inside the disk"),
                });
            }
            if above {
                let chunk = &mut buf[..len as usize];
                top.read_at(chunk, offset)?;
                if is_zero(chunk) {
                    target.write_zeroes(offset, len)?;
                } else {
                    target.write_at(chunk, offset)?;
                }
            }
            offset += len;
            progress(offset, size);
        }
        target.flush()?;
        drop(target);
        fs::rename(&tmp, &canonical)
            .map_err(|e| StorageError::io(&canonical, "replacing with the streamed image", e))?;
        sync_parent(&canonical)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether the range at `offset` is defined by one of the first `depth`
/// layers of the chain starting at `layer` (rather than by the layer at
/// `depth` or below), and for how many bytes.
fn defined_above(
    runtime: &tokio::runtime::Runtime,
    layer: &imago::FormatAccess<imago::file::File>,
    offset: u64,
    want: u64,
    depth: usize,
) -> std::io::Result<(bool, u64)> {
    let mut layer = layer;
    let mut at = offset;
    let mut len = want;
    for _ in 0..depth {
        let (mapping, l) = runtime.block_on(layer.get_shallow_mapping(at, len))?;
        len = len.min(l);
        match mapping {
            ShallowMapping::Indirect {
                layer: next,
                offset: next_at,
                ..
            } => {
                layer = next;
                at = next_at;
            }
            ShallowMapping::Zero {
                explicit: false, ..
            } => return Ok((false, len)),
            _ => return Ok((true, len)),
        }
    }
    Ok((false, len))
}

/// Syncs the folder holding `path`, so a rename in it is durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| StorageError::io(parent, "syncing the folder", e))
}
