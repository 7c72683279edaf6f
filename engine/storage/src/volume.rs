//! Volumes: the operations the daemon's storage pools are built on
//! (`vol-create-as`, `vol-info`, `vol-delete`, `vol-resize`, `vol-clone`,
//! `vol-create-from`, `vol-upload`, `vol-download`). A volume is one image
//! file; the pool (a folder) and its bookkeeping belong to the daemon.
//!
//! Long operations report progress through a callback with
//! `(bytes done, bytes in total)`; the daemon forwards it over the API.
//! Operations that replace a file write a temporary file in the same
//! folder, sync it and rename it into place, so an interrupted operation
//! leaves either the old volume or the new one, never half of one; a
//! leftover `.<name>.vireo-tmp` file can be deleted.
//!
//! Every function here blocks, and imago's synchronous wrappers run their
//! I/O on a tokio current-thread runtime of their own. From async code
//! (vireod), call them inside `tokio::task::spawn_blocking`: tokio panics
//! when a runtime is started or dropped inside an async task.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::create::{BackingSpec, Qcow2Options, create_qcow2, create_raw};
use crate::error::{Result, StorageError};
use crate::image::{Image, OpenOptions, resolve_backing};
use crate::ops::{Progress, TargetFormat, convert, sync_parent};
use crate::probe::{ImageFormat, probe};

/// The unit of streaming.
const CHUNK: usize = 1 << 20;

/// How much of an upload is written before the kernel is asked to start
/// putting it on disk (see [`WriteBehind`]).
const WRITE_BEHIND: u64 = 8 << 20;

/// Starts the writeback of a file's data while more is still being
/// written, so the disk works during the transfer and the final sync finds
/// little left to do (a hint: the final `sync_all` reports errors).
#[derive(Debug, Default)]
struct WriteBehind {
    started: u64,
}

impl WriteBehind {
    /// Tells that `file` now holds data up to offset `end`.
    fn wrote(&mut self, file: &fs::File, end: u64) {
        use std::os::fd::AsRawFd;
        if end.saturating_sub(self.started) < WRITE_BEHIND {
            return;
        }
        let (Ok(start), Ok(len)) = (
            i64::try_from(self.started),
            i64::try_from(end - self.started),
        ) else {
            return;
        };
        // SAFETY: sync_file_range(2) takes a descriptor that `file` keeps
        // open for the call and plain integers; it touches no memory of ours.
        unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, libc::SYNC_FILE_RANGE_WRITE) };
        self.started = end;
    }
}

/// Whether `bytes` are all zero.
fn all_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(64);
    words.all(|w| w.iter().fold(0, |acc, b| acc | b) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

/// What `vol-info` shows, and a little more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: ImageFormat,
    /// The size the guest sees (libvirt's capacity).
    pub capacity: u64,
    /// Bytes the file occupies on the host (libvirt's allocation).
    pub allocation: u64,
    /// The backing file named in the header, as written.
    pub backing: Option<String>,
}

/// A new volume.
#[derive(Debug, Clone)]
pub struct NewVolume {
    /// Raw or qcow2.
    pub format: ImageFormat,
    /// Capacity in bytes (ignored for a qcow2 with a backing volume, which
    /// takes the backing volume's size when this is 0).
    pub capacity: u64,
    /// A backing volume (qcow2 only): `--backing-vol`, `--backing-vol-format`.
    pub backing: Option<BackingSpec>,
}

/// Options for [`upload`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadOptions {
    /// Accept an uploaded qcow2 that names a backing file. Off by default:
    /// a hostile upload could otherwise make the host read any file it
    /// names (e.g. `/etc/shadow`) into a guest.
    pub allow_backing_file: bool,
}

/// Reads a volume's header and size.
pub fn info(path: &Path) -> Result<VolumeInfo> {
    let header = probe(path)?;
    let meta = fs::metadata(path).map_err(|e| StorageError::io(path, "reading metadata", e))?;
    Ok(VolumeInfo {
        path: path.to_path_buf(),
        format: header.format,
        capacity: header.virtual_size,
        allocation: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
        backing: header.backing_file,
    })
}

/// Creates a volume (never overwriting an existing file).
pub fn create(path: &Path, spec: &NewVolume) -> Result<VolumeInfo> {
    match spec.format {
        ImageFormat::Raw => {
            if spec.backing.is_some() {
                return Err(StorageError::InvalidRequest {
                    path: path.to_path_buf(),
                    reason: "a raw volume cannot have a backing volume".into(),
                });
            }
            create_raw(path, spec.capacity)?;
        }
        ImageFormat::Qcow2 => {
            let mut capacity = spec.capacity;
            if let Some(backing) = &spec.backing {
                // Validate the whole backing chain before writing anything.
                let chain = Image::open(
                    &resolve_backing(path, &backing.name),
                    &OpenOptions::new().format(backing.format).read_only(true),
                )?;
                if capacity == 0 {
                    capacity = chain.size();
                }
            }
            create_qcow2(
                path,
                &Qcow2Options {
                    size: capacity,
                    cluster_size: crate::create::DEFAULT_CLUSTER_SIZE,
                    backing: spec.backing.clone(),
                },
            )?;
        }
        ImageFormat::Vmdk => {
            return Err(StorageError::Unsupported {
                path: path.to_path_buf(),
                reason: "vmdk volumes are imported by conversion, not created".into(),
            });
        }
    }
    info(path)
}

/// Deletes a volume file.
pub fn delete(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| StorageError::io(path, "deleting", e))?;
    sync_parent(path)
}

/// Changes a volume's capacity. Shrinking loses data at the end and is
/// refused unless `allow_shrink` (virsh's `--shrink`).
pub fn resize(path: &Path, capacity: u64, allow_shrink: bool) -> Result<()> {
    let mut image = Image::open(path, &OpenOptions::new())?;
    if capacity < image.size() && !allow_shrink {
        return Err(StorageError::InvalidRequest {
            path: path.to_path_buf(),
            reason: format!(
                "shrinking from {} to {capacity} bytes loses data; pass allow_shrink",
                image.size()
            ),
        });
    }
    image.resize(capacity)
}

/// Copies a volume (with its backing chain flattened) into a new volume
/// at `dst`, in `format` (the source's format when `None`).
pub fn clone_volume(
    src: &Path,
    dst: &Path,
    format: Option<ImageFormat>,
    progress: Progress<'_>,
) -> Result<VolumeInfo> {
    let format = match format {
        Some(f) => f,
        None => probe(src)?.format,
    };
    let target = match format {
        ImageFormat::Raw => TargetFormat::Raw,
        ImageFormat::Qcow2 => TargetFormat::qcow2(),
        ImageFormat::Vmdk => {
            return Err(StorageError::Unsupported {
                path: dst.to_path_buf(),
                reason: "cannot clone into vmdk".into(),
            });
        }
    };
    let tmp = temp_path(dst);
    let _ = fs::remove_file(&tmp);
    convert(src, &OpenOptions::new(), &tmp, target, progress)?;
    finish_replace(&tmp, dst, false)?;
    info(dst)
}

/// Creates a volume at `dst` from `src` converted to `format` (libvirt's
/// `vol-create-from`): `src` may be any image we read, a sparse,
/// streamOptimized or split vmdk included (see [`crate::vmdk`]). With
/// `capacity`, the new volume is that large, which must not be smaller
/// than `src`. Written to a temporary file and renamed into place, so a
/// failed or interrupted conversion leaves no volume at `dst`.
pub fn create_from(
    src: &Path,
    dst: &Path,
    format: ImageFormat,
    capacity: Option<u64>,
    progress: Progress<'_>,
) -> Result<VolumeInfo> {
    let target = match format {
        ImageFormat::Raw => TargetFormat::Raw,
        ImageFormat::Qcow2 => TargetFormat::qcow2(),
        ImageFormat::Vmdk => {
            return Err(StorageError::Unsupported {
                path: dst.to_path_buf(),
                reason: "new volumes are raw or qcow2, not vmdk".into(),
            });
        }
    };
    let source_size = probe(src)?.virtual_size;
    if let Some(c) = capacity.filter(|&c| c < source_size) {
        return Err(StorageError::InvalidRequest {
            path: dst.to_path_buf(),
            reason: format!(
                "a capacity of {c} bytes is smaller than the input volume's {source_size} bytes"
            ),
        });
    }
    if dst.exists() {
        return Err(StorageError::io(
            dst,
            "creating",
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    let tmp = temp_path(dst);
    let _ = fs::remove_file(&tmp);
    convert(src, &OpenOptions::new(), &tmp, target, progress)?;
    let grown = (|| {
        let mut image = Image::open(&tmp, &OpenOptions::new().format(format))?;
        if let Some(c) = capacity.filter(|&c| c > image.size()) {
            image.resize(c)?;
        }
        image.flush()
    })();
    if let Err(e) = grown {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    finish_replace(&tmp, dst, false)?;
    info(dst)
}

/// Replaces the volume file at `path` with `length` bytes read from
/// `reader` (libvirt's `vol-upload`: the file's bytes, any format). The
/// upload lands in a temporary file that is checked (probed; a qcow2 must
/// open with its chain, and may name a backing file only if allowed),
/// synced, and then renamed over the volume. Zero chunks are left as holes
/// (a raw image stays sparse), and writeback starts while data still
/// arrives. The old volume's blocks are freed on a thread of their own.
pub fn upload(
    path: &Path,
    reader: &mut dyn Read,
    length: u64,
    options: UploadOptions,
    progress: Progress<'_>,
) -> Result<VolumeInfo> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StorageError::io(&tmp, "creating", e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        let mut behind = WriteBehind::default();
        while done < length {
            let want = (length - done).min(CHUNK as u64) as usize;
            let n = reader
                .read(&mut buf[..want])
                .map_err(|e| StorageError::io(path, "receiving the upload", e))?;
            if n == 0 {
                return Err(StorageError::InvalidRequest {
                    path: path.to_path_buf(),
                    reason: format!("the upload ended after {done} of {length} bytes"),
                });
            }
            let written = if all_zero(&buf[..n]) {
                // The new file reads zeros there already.
                file.seek(SeekFrom::Current(n as i64)).map(|_| ())
            } else {
                file.write_all(&buf[..n])
            };
            written.map_err(|e| StorageError::io(&tmp, "writing the upload", e))?;
            done += n as u64;
            behind.wrote(&file, done);
            progress(done, length);
        }
        // A hole at the end still counts.
        file.set_len(length)
            .map_err(|e| StorageError::io(&tmp, "writing the upload", e))?;
        file.sync_all()
            .map_err(|e| StorageError::io(&tmp, "syncing", e))?;
        drop(file);
        let header = probe(&tmp)?;
        if header.backing_file.is_some() && !options.allow_backing_file {
            return Err(StorageError::InvalidRequest {
                path: path.to_path_buf(),
                reason: "the uploaded image names a backing file, which is not allowed".into(),
            });
        }
        if header.format == ImageFormat::Qcow2 {
            Image::open(&tmp, &OpenOptions::new().read_only(true))?;
        }
        // Held open, the old volume is only unlinked by the rename; its
        // blocks are freed when this handle closes, after the answer.
        let old = fs::File::open(path).ok();
        finish_replace(&tmp, path, true)?;
        Ok(old)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let old = result?;
    let info = info(path);
    if let Some(old) = old {
        // Should no thread start, the handle closes here.
        let _ = std::thread::Builder::new()
            .name("vireo-free-vol".into())
            .spawn(move || drop(old));
    }
    info
}

/// Streams the volume file's bytes to `writer` (libvirt's
/// `vol-download`); returns the number of bytes sent.
pub fn download(path: &Path, writer: &mut dyn Write, progress: Progress<'_>) -> Result<u64> {
    let mut file = fs::File::open(path).map_err(|e| StorageError::io(path, "opening", e))?;
    let total = file
        .metadata()
        .map_err(|e| StorageError::io(path, "reading metadata", e))?
        .len();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < total {
        let want = (total - done).min(CHUNK as u64) as usize;
        let n = file
            .read(&mut buf[..want])
            .map_err(|e| StorageError::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        writer
            .write_all(&buf[..n])
            .map_err(|e| StorageError::io(path, "sending the download", e))?;
        done += n as u64;
        progress(done, total);
    }
    writer
        .flush()
        .map_err(|e| StorageError::io(path, "sending the download", e))?;
    Ok(done)
}

/// `.<name>.vireo-tmp` next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".vireo-tmp");
    path.with_file_name(name)
}

/// Renames the finished temporary file into place (refusing to replace an
/// existing file unless `replace`) and syncs the folder.
fn finish_replace(tmp: &Path, dst: &Path, replace: bool) -> Result<()> {
    if !replace && dst.exists() {
        let _ = fs::remove_file(tmp);
        return Err(StorageError::io(
            dst,
            "creating",
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    fs::rename(tmp, dst).map_err(|e| StorageError::io(dst, "moving the new file into place", e))?;
    sync_parent(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_info_resize_clone_and_delete_a_qcow2_volume() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let child = dir.path().join("child.qcow2");
        let copy = dir.path().join("copy.raw");

        let made = create(
            &base,
            &NewVolume {
                format: ImageFormat::Qcow2,
                capacity: 4 << 20,
                backing: None,
            },
        )
        .unwrap();
        Image::open(&base, &OpenOptions::new())
            .unwrap()
            .write_at(&[9; 4096], 8192)
            .unwrap();
        let overlay = create(
            &child,
            &NewVolume {
                format: ImageFormat::Qcow2,
                capacity: 0,
                backing: Some(BackingSpec {
                    name: "base.qcow2".into(),
                    format: ImageFormat::Qcow2,
                }),
            },
        )
        .unwrap();
        let refused = resize(&child, 1 << 20, false);
        resize(&child, 8 << 20, false).unwrap();
        let mut calls = 0;
        let cloned = clone_volume(&child, &copy, Some(ImageFormat::Raw), &mut |_, _| {
            calls += 1
        })
        .unwrap();
        delete(&base).unwrap();

        assert_eq!(made.capacity, 4 << 20);
        assert_eq!(overlay.capacity, 4 << 20);
        assert_eq!(overlay.backing.as_deref(), Some("base.qcow2"));
        assert!(refused.is_err());
        assert_eq!(info(&child).unwrap().capacity, 8 << 20);
        assert_eq!(cloned.format, ImageFormat::Raw);
        assert_eq!(cloned.capacity, 8 << 20);
        assert!(calls > 0);
        let bytes = fs::read(&copy).unwrap();
        assert!(bytes[8192..12288].iter().all(|&b| b == 9));
        assert!(!base.exists());
    }

    #[test]
    fn upload_and_download_stream_with_progress_and_refuse_backing_files() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol.raw");
        create_raw(&vol, 1 << 20).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut seen = Vec::new();

        let up = upload(
            &vol,
            &mut &data[..],
            data.len() as u64,
            UploadOptions::default(),
            &mut |d, t| seen.push((d, t)),
        )
        .unwrap();
        let mut out = Vec::new();
        let sent = download(&vol, &mut out, &mut |_, _| {}).unwrap();
        let short = upload(
            &vol,
            &mut &data[..10],
            100,
            UploadOptions::default(),
            &mut |_, _| {},
        );
        let overlay = dir.path().join("evil.qcow2");
        create_qcow2(
            &overlay,
            &Qcow2Options {
                size: 1 << 20,
                cluster_size: 65536,
                backing: Some(BackingSpec {
                    name: "/etc/passwd".into(),
                    format: ImageFormat::Raw,
                }),
            },
        )
        .unwrap();
        let evil = fs::read(&overlay).unwrap();
        let refused = upload(
            &vol,
            &mut &evil[..],
            evil.len() as u64,
            UploadOptions::default(),
            &mut |_, _| {},
        )
        .unwrap_err();

        assert_eq!(up.capacity, data.len() as u64);
        assert_eq!(seen.last(), Some(&(data.len() as u64, data.len() as u64)));
        assert_eq!(sent, data.len() as u64);
        assert_eq!(out, data);
        assert!(short.is_err());
        assert!(refused.to_string().contains("backing file"), "{refused}");
        // Failed uploads left the volume as it was.
        assert_eq!(fs::read(&vol).unwrap(), data);
        assert!(!temp_path(&vol).exists());
    }

    #[test]
    fn uploaded_zero_chunks_stay_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("sparse.raw");
        create_raw(&vol, 1 << 20).unwrap();
        // Data, 8 MiB of zeros, data, then 4 MiB of zeros at the end; read
        // in odd pieces, as a connection delivers them.
        let mut data = vec![7u8; 3 << 20];
        data.extend(vec![0u8; 8 << 20]);
        data.extend(vec![1u8; 100_000]);
        data.extend(vec![0u8; 4 << 20]);
        struct Pieces<'a>(&'a [u8]);
        impl Read for Pieces<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(700_000);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let up = upload(
            &vol,
            &mut Pieces(&data),
            data.len() as u64,
            UploadOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();

        assert_eq!(up.capacity, data.len() as u64);
        assert_eq!(fs::read(&vol).unwrap(), data);
        let allocated = fs::metadata(&vol).unwrap().blocks() * 512;
        assert!(
            allocated < (6 << 20),
            "{allocated} bytes allocated for about 3 MiB of data"
        );
    }
}
