//! Creating images: raw (sparse), qcow2, and qcow2 overlays on any image.
//!
//! qcow2 files are formatted by imago's `Qcow2CreateBuilder`; nothing here
//! writes qcow2 metadata by hand. A new file is created exclusively (an
//! existing file is never overwritten) and removed again if formatting fails.

use std::fs;
use std::future::Future;
use std::io;
use std::path::Path;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, Storage, StorageCreateOptions};

use crate::error::{Result, StorageError};
use crate::image::{Image, OpenOptions, resolve_backing};
use crate::probe::ImageFormat;

/// The qcow2 cluster size used unless told otherwise (QEMU's default).
pub const DEFAULT_CLUSTER_SIZE: usize = 64 * 1024;

/// Runs a future on a fresh current-thread runtime.
pub(crate) fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    Ok(runtime.block_on(future))
}

/// Creates a sparse raw image of `size` bytes (no blocks allocated where
/// the filesystem supports holes).
pub fn create_raw(path: &Path, size: u64) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StorageError::io(path, "creating", e))?;
    if let Err(e) = file.set_len(size).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(path);
        return Err(StorageError::io(
            path,
            format!("setting the size to {size} bytes"),
            e,
        ));
    }
    Ok(())
}

/// The backing file to record in a new qcow2 header.
#[derive(Debug, Clone)]
pub struct BackingSpec {
    /// The name written into the header. A relative name is relative to
    /// the new image's folder (as in QEMU).
    pub name: String,
    /// The backing image's format (written into the header, so that the
    /// backing file is never probed).
    pub format: ImageFormat,
}

/// Options for a new qcow2 image.
#[derive(Debug, Clone)]
pub struct Qcow2Options {
    /// The virtual size in bytes.
    pub size: u64,
    /// The cluster size (a power of two, 512 B to 2 MiB).
    pub cluster_size: usize,
    /// The backing file, if any.
    pub backing: Option<BackingSpec>,
}

impl Qcow2Options {
    /// A standalone image of `size` bytes with 64 KiB clusters.
    pub fn new(size: u64) -> Self {
        Qcow2Options {
            size,
            cluster_size: DEFAULT_CLUSTER_SIZE,
            backing: None,
        }
    }
}

/// Creates a qcow2 (v3) image.
pub fn create_qcow2(path: &Path, options: &Qcow2Options) -> Result<()> {
    let result = block_on(async {
        let file = File::create_open(StorageCreateOptions::new().filename(path)).await?;
        let mut builder = Qcow2::<File>::create_builder(file)
            .size(options.size)
            .cluster_size(options.cluster_size);
        if let Some(backing) = &options.backing {
            builder = builder.backing(backing.name.clone(), backing.format.as_str().to_owned());
        }
        builder.create().await
    })
    .and_then(|r| r);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(StorageError::io(path, "creating", e))
        }
        Err(e) => {
            let _ = fs::remove_file(path);
            Err(StorageError::io(path, "creating a qcow2 image", e))
        }
    }
}

/// Creates a qcow2 overlay at `overlay` on top of `backing_name` (an image
/// of any supported format, with its own chain), with the backing image's
/// size. `backing_name` is written into the header as given; a relative
/// name is resolved against the overlay's folder. The backing chain is
/// opened (read-only) and validated first, so an overlay is never created
/// on a missing or looping chain.
pub fn create_overlay(
    overlay: &Path,
    backing_name: &str,
    format: Option<ImageFormat>,
) -> Result<()> {
    let backing_path = resolve_backing(overlay, backing_name);
    let mut open = OpenOptions::new().read_only(true);
    open.format = format;
    let backing = Image::open(&backing_path, &open)?;
    let options = Qcow2Options {
        size: backing.size(),
        cluster_size: DEFAULT_CLUSTER_SIZE,
        backing: Some(BackingSpec {
            name: backing_name.to_owned(),
            format: backing.format(),
        }),
    };
    drop(backing);
    create_qcow2(overlay, &options)
}
