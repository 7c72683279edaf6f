//! Image format detection from the header, as `qemu-img info` does it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The on-disk format of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A plain byte-for-byte disk.
    Raw,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
    /// VMware's format (imported by conversion).
    Vmdk,
}

impl ImageFormat {
    /// The name libvirt and qemu-img use (`<driver type='…'/>`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
        }
    }
}

/// What the header of an image says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The detected format.
    pub format: ImageFormat,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    /// The qcow2 version (2 or 3).
    pub version: Option<u32>,
    /// The qcow2 cluster size.
    pub cluster_size: Option<u64>,
    /// The backing file named in the header, as written.
    pub backing_file: Option<String>,
}

/// Why an image could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file could not be opened or read.
    #[error("cannot read image '{}': {source}", path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The header contradicts itself or the file.
    #[error("image '{}' is corrupt: {reason}", path.display())]
    Corrupt {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A valid image of a version or with features we do not handle.
    #[error("image '{}' is not supported: {reason}", path.display())]
    Unsupported {
        /// The image.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8; 4] = b"KDMV";
const VMDK_DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
/// qcow2 caps backing file names at 1023 bytes (QEMU's limit).
const QCOW2_MAX_BACKING_NAME: u32 = 1023;

/// Reads the image's header and reports its format and geometry.
pub fn probe(path: &Path) -> Result<ImageInfo, ProbeError> {
    let io_err = |source| ProbeError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: String| ProbeError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut header = [0u8; 512];
    let n = read_up_to(&mut file, &mut header).map_err(io_err)?;
    let header = &header[..n];

    if header.starts_with(QCOW2_MAGIC) {
        if header.len() < 72 {
            return Err(corrupt(format!("qcow2 header is truncated ({n} bytes)")));
        }
        let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
        let be64 = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap());
        let version = be32(4);
        if !(2..=3).contains(&version) {
            return Err(ProbeError::Unsupported {
                path: path.to_owned(),
                reason: format!("qcow2 version {version}"),
            });
        }
        let cluster_bits = be32(20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(format!(
                "cluster_bits {cluster_bits} is outside 9..=21"
            )));
        }
        check_qcow2_tables(header, cluster_bits, file_len).map_err(|e| match e {
            TableError::Corrupt(reason) => corrupt(reason),
            TableError::Unsupported(reason) => ProbeError::Unsupported {
                path: path.to_owned(),
                reason,
            },
        })?;
        let backing_offset = be64(8);
        let backing_len = be32(16);
        let backing_file = if backing_offset == 0 {
            None
        } else {
            if backing_len == 0 || backing_len > QCOW2_MAX_BACKING_NAME {
                return Err(corrupt(format!(
                    "backing file name length {backing_len} is outside 1..={QCOW2_MAX_BACKING_NAME}"
                )));
            }
            let end = backing_offset
                .checked_add(u64::from(backing_len))
                .filter(|&end| end <= file_len)
                .ok_or_else(|| {
                    corrupt(format!(
                        "backing file name at offset {backing_offset} lies outside the file"
                    ))
                })?;
            let mut name = vec![0u8; (end - backing_offset) as usize];
            file.seek(SeekFrom::Start(backing_offset))
                .and_then(|_| file.read_exact(&mut name))
                .map_err(io_err)?;
            Some(
                String::from_utf8(name)
                    .map_err(|_| corrupt("backing file name is not UTF-8".to_owned()))?,
            )
        };
        return Ok(ImageInfo {
            format: ImageFormat::Qcow2,
            virtual_size: be64(24),
            version: Some(version),
            cluster_size: Some(1 << cluster_bits),
            backing_file,
        });
    }

    if header.starts_with(VMDK_SPARSE_MAGIC) {
        if header.len() < 20 {
            return Err(corrupt("vmdk header is truncated".to_owned()));
        }
        // Capacity is a little-endian count of 512-byte sectors at offset 12.
        let sectors = u64::from_le_bytes(header[12..20].try_into().unwrap());
        let virtual_size = sectors
            .checked_mul(512)
            .ok_or_else(|| corrupt(format!("vmdk capacity of {sectors} sectors overflows")))?;
        return Ok(ImageInfo {
            format: ImageFormat::Vmdk,
            virtual_size,
            version: None,
            cluster_size: None,
            backing_file: None,
        });
    }
    if header.starts_with(VMDK_DESCRIPTOR) {
        // A descriptor of extents (twoGbMaxExtent*, monolithicFlat): its
        // size is the sum of its extents.
        let virtual_size = crate::vmdk::descriptor_capacity(path).map_err(|e| match e {
            crate::StorageError::Probe(p) => p,
            crate::StorageError::Io { source, .. } => ProbeError::Io {
                path: path.to_owned(),
                source,
            },
            other => ProbeError::Corrupt {
                path: path.to_owned(),
                reason: other.to_string(),
            },
        })?;
        return Ok(ImageInfo {
            format: ImageFormat::Vmdk,
            virtual_size,
            version: None,
            cluster_size: None,
            backing_file: None,
        });
    }

    Ok(ImageInfo {
        format: ImageFormat::Raw,
        virtual_size: file_len,
        version: None,
        cluster_size: None,
        backing_file: None,
    })
}

/// The largest virtual size we accept (64 PiB; QEMU's own limit is higher,
/// but no real disk comes near this and larger values only serve to make
/// table sizes overflow).
const QCOW2_MAX_VIRTUAL_SIZE: u64 = 1 << 56;
/// QEMU's limit on internal snapshots.
const QCOW2_MAX_SNAPSHOTS: u32 = 65536;

enum TableError {
    Corrupt(String),
    Unsupported(String),
}

/// Checks the qcow2 header's tables against the file before imago reads
/// them: the L1 table, the refcount table and the snapshot table must be
/// cluster-aligned and lie inside the file, the L1 table must cover the
/// virtual size, and encryption is refused.
fn check_qcow2_tables(header: &[u8], cluster_bits: u32, file_len: u64) -> Result<(), TableError> {
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
    let be64 = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap());
    let corrupt = |s: String| TableError::Corrupt(s);
    let cluster_size = 1u64 << cluster_bits;
    let size = be64(24);
    if size > QCOW2_MAX_VIRTUAL_SIZE {
        return Err(corrupt(format!(
            "virtual size {size} is larger than {QCOW2_MAX_VIRTUAL_SIZE} bytes"
        )));
    }
    if be32(32) != 0 {
        return Err(TableError::Unsupported(
            "encrypted qcow2 images are not supported".to_owned(),
        ));
    }
    let inside = |what: &str, offset: u64, len: u64| -> Result<(), TableError> {
        if !offset.is_multiple_of(cluster_size) {
            return Err(corrupt(format!(
                "{what} at offset {offset} is not aligned to a cluster"
            )));
        }
        match offset.checked_add(len) {
            Some(end) if offset > 0 && end <= file_len => Ok(()),
            _ => Err(corrupt(format!(
                "{what} ({len} bytes at offset {offset}) lies outside the file ({file_len} bytes)"
            ))),
        }
    };
    // One L2 table maps cluster_size / 8 clusters.
    let bytes_per_l1_entry = cluster_size * (cluster_size / 8);
    let l1_needed = size.div_ceil(bytes_per_l1_entry);
    let l1_size = u64::from(be32(36));
    if l1_size < l1_needed {
        return Err(corrupt(format!(
            "the L1 table has {l1_size} entries but the virtual size needs {l1_needed}"
        )));
    }
    if l1_size > 0 {
        inside("the L1 table", be64(40), l1_size * 8)?;
    }
    let reftable_clusters = u64::from(be32(56));
    if reftable_clusters == 0 {
        return Err(corrupt("the refcount table is empty".to_owned()));
    }
    inside(
        "the refcount table",
        be64(48),
        reftable_clusters.saturating_mul(cluster_size),
    )?;
    let snapshots = be32(60);
    if snapshots > QCOW2_MAX_SNAPSHOTS {
        return Err(corrupt(format!(
            "{snapshots} internal snapshots is more than {QCOW2_MAX_SNAPSHOTS}"
        )));
    }
    if snapshots > 0 {
        // Each snapshot header is at least 40 bytes.
        inside("the snapshot table", be64(64), u64::from(snapshots) * 40)?;
    }
    Ok(())
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn qemu_img(args: &[&str]) {
        let status = Command::new("qemu-img")
            .args(args)
            .status()
            .expect("qemu-img is required (make test installs qemu-utils)");
        assert!(status.success(), "qemu-img {args:?} failed");
    }

    #[test]
    fn probes_images_made_by_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let overlay = dir.path().join("overlay.qcow2");
        let raw = dir.path().join("disk.raw");
        let vmdk = dir.path().join("disk.vmdk");
        let base_s = base.to_str().unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", base_s, "64M"]);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base_s,
            "-F",
            "qcow2",
            overlay.to_str().unwrap(),
        ]);
        qemu_img(&["create", "-q", "-f", "raw", raw.to_str().unwrap(), "3M"]);
        qemu_img(&["create", "-q", "-f", "vmdk", vmdk.to_str().unwrap(), "5M"]);

        let info = probe(&base).unwrap();
        assert_eq!(info.format, ImageFormat::Qcow2);
        assert_eq!(info.virtual_size, 64 << 20);
        assert_eq!(info.version, Some(3));
        assert_eq!(info.cluster_size, Some(65536));
        assert_eq!(info.backing_file, None);

        let info = probe(&overlay).unwrap();
        assert_eq!(info.backing_file.as_deref(), Some(base_s));
        assert_eq!(info.virtual_size, 64 << 20);

        let info = probe(&raw).unwrap();
        assert_eq!(
            (info.format, info.virtual_size),
            (ImageFormat::Raw, 3 << 20)
        );
        let info = probe(&vmdk).unwrap();
        assert_eq!(
            (info.format, info.virtual_size),
            (ImageFormat::Vmdk, 5 << 20)
        );
    }

    #[test]
    fn corrupt_qcow2_headers_name_the_image_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("bad.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
        let good = std::fs::read(&img).unwrap();

        // A backing-file name pointing past the end of the file.
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes());
        bad[16..20].copy_from_slice(&16u32.to_be_bytes());
        std::fs::write(&img, &bad).unwrap();
        let err = probe(&img).unwrap_err().to_string();
        assert!(
            err.contains("bad.qcow2") && err.contains("outside the file"),
            "{err}"
        );

        // An absurd cluster size.
        let mut bad = good.clone();
        bad[20..24].copy_from_slice(&40u32.to_be_bytes());
        std::fs::write(&img, &bad).unwrap();
        let err = probe(&img).unwrap_err().to_string();
        assert!(err.contains("cluster_bits 40"), "{err}");

        // A truncated header.
        std::fs::write(&img, &good[..40]).unwrap();
        let err = probe(&img).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn missing_image_is_an_io_error_naming_it() {
        let err = probe(Path::new("/nonexistent/vireo.img")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read image '/nonexistent/vireo.img'")
        );
    }
}
