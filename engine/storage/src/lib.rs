//! Disk images for Vireo's VMM and daemon.
//!
//! Images are hostile input: every offset and size read from a header is
//! checked against the file before it is used, and errors name the image.

pub mod probe;

pub use probe::{ImageFormat, ImageInfo, ProbeError, probe};
