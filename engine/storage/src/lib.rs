//! Disk images for Vireo's VMM and daemon.
//!
//! Images are hostile input: every offset and size read from a header is
//! checked against the file before it is used, and errors name the image.
//! qcow2, raw and flat vmdk are read and written through the `imago` crate;
//! sparse vmdk is read by our own [`vmdk`] module, for import.
//! The API is synchronous (imago's futures polled on the calling thread,
//! or imago's `sync-wrappers` with a private tokio current-thread runtime):
//! async callers use `spawn_blocking`. [`Image::run_batch`] runs a batch of
//! reads and writes at once on a few I/O threads (virtio-blk's queue depth).
//!
//! - [`probe()`]: format detection from the header.
//! - [`Image`]: an open image with its backing chain: read, write, flush,
//!   discard, write-zeroes, resize; cache modes; read-only opens.
//! - [`create_raw`], [`create_qcow2`], [`create_overlay`]: new images.
//! - [`convert`], [`commit`], [`stream`]: whole-image operations.
//! - [`vmdk`]: a read-only reader for sparse and streamOptimized VMDK
//!   (what imago does not read), the source of `convert` for them.
//! - [`volume`]: the API the daemon's pools and volumes are built on
//!   (create, info, delete, resize, clone, upload, download with progress).

pub mod create;
pub mod error;
pub mod image;
pub mod ops;
mod pool;
pub mod probe;
pub mod vmdk;
pub mod volume;

pub use create::{BackingSpec, Qcow2Options, create_overlay, create_qcow2, create_raw};
pub use error::{Result, StorageError};
pub use image::{CacheMode, ChainLink, Image, IoKind, IoRequest, OpenOptions};
pub use ops::{TargetFormat, commit, convert, stream, stream_above};
pub use probe::{ImageFormat, ImageInfo, ProbeError, probe};
