//! The errors of the storage crate: every one names the image it is about.

use std::io;
use std::path::PathBuf;

use crate::probe::ProbeError;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The header could not be probed (unreadable, corrupt or unsupported).
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// An I/O or format error while opening or using an image.
    #[error("image '{}': {what} failed: {source}", path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// What we were doing, e.g. "opening" or "writing 4096 bytes at offset 0".
        what: String,
        /// The underlying error (from the OS or imago's format driver).
        source: io::Error,
    },
    /// The backing chain refers back to an image already in it.
    #[error("image '{}' has a backing file loop: '{}' is already in its chain", path.display(), backing.display())]
    BackingLoop {
        /// The image whose header names the looping backing file.
        path: PathBuf,
        /// The backing file that is already in the chain.
        backing: PathBuf,
    },
    /// A backing file named in a header does not exist.
    #[error("image '{}' needs backing file '{}', which does not exist", path.display(), backing.display())]
    MissingBacking {
        /// The image whose header names the backing file.
        path: PathBuf,
        /// The missing backing file, resolved against the image's folder.
        backing: PathBuf,
    },
    /// The chain is deeper than we accept.
    #[error("image '{}' has a backing chain deeper than {limit} images", path.display())]
    ChainTooDeep {
        /// The top image.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// An image or request that we do not handle.
    #[error("image '{}': {reason}", path.display())]
    Unsupported {
        /// The image.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// A request outside the disk, or otherwise invalid.
    #[error("image '{}': {reason}", path.display())]
    InvalidRequest {
        /// The image.
        path: PathBuf,
        /// What is wrong with the request.
        reason: String,
    },
    /// The image was opened read-only.
    #[error("image '{}' is read-only", path.display())]
    ReadOnly {
        /// The image.
        path: PathBuf,
    },
}

impl StorageError {
    /// An I/O error while doing `what` on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, what: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            what: what.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, StorageError>;
