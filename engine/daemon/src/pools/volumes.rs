//! Volumes inside pools: names and paths resolved to files, files marked
//! busy while an operation works on them, volume lists kept current, and
//! preallocation of new raw volumes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vireo_api::proto::{ApiError, ErrorCode};
use vireo_api::storage::{VolumeSummary, check_volume_name};
use vireo_storage::volume;

use super::{
    Busy, Pools, VolRef, blocking, internal, invalid, invalid_state, no_volume, storage_error,
    summary,
};

impl Pools {
    /// Resolves a volume: by name in `pool`, or by path (in `pool`, or in
    /// whichever active pool's folder holds it). With `existing`, the file
    /// must be there and be a regular file.
    pub(super) fn resolve(
        &self,
        pool: Option<&str>,
        volume: &str,
        existing: bool,
    ) -> Result<VolRef, ApiError> {
        let inner = self.lock();
        let as_path = Path::new(volume);
        let (p, name) = if as_path.is_absolute() {
            let (Some(dir), Some(name)) = (
                as_path.parent(),
                as_path.file_name().and_then(|n| n.to_str()),
            ) else {
                return Err(no_volume(volume));
            };
            let p = match pool {
                Some(key) => inner.active(key)?,
                None => inner
                    .pools
                    .values()
                    .find(|p| p.active && p.dir() == dir)
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::NoStorageVolume,
                            format!(
                                "Storage volume not found: no storage vol with matching path \
                                 '{volume}'"
                            ),
                        )
                    })?,
            };
            if p.dir() != dir || check_volume_name(name).is_err() {
                return Err(no_volume(volume));
            }
            (p, name.to_owned())
        } else {
            let Some(key) = pool else {
                return Err(invalid(format!(
                    "volume '{volume}' is not a path; name its pool with --pool"
                )));
            };
            let p = inner.active(key)?;
            check_volume_name(volume).map_err(invalid)?;
            (p, volume.to_owned())
        };
        let path = p.dir().join(&name);
        if existing && !std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file()) {
            return Err(no_volume(volume));
        }
        Ok(VolRef {
            pool: p.uuid,
            name,
            path,
        })
    }

    /// A name for a new volume in `pool`: valid and free.
    pub(super) fn new_volume(&self, pool: &str, name: &str) -> Result<VolRef, ApiError> {
        check_volume_name(name).map_err(invalid)?;
        let vol = self.resolve(Some(pool), name, false)?;
        if std::fs::symlink_metadata(&vol.path).is_ok() {
            return Err(ApiError::new(
                ErrorCode::Exists,
                format!("storage volume '{name}' exists already"),
            ));
        }
        Ok(vol)
    }

    pub(super) fn claim(self: &Arc<Self>, paths: &[PathBuf]) -> Result<Busy, ApiError> {
        let mut inner = self.lock();
        if let Some(p) = paths.iter().find(|p| inner.busy.contains(*p)) {
            return Err(invalid_state(format!(
                "Requested operation is not valid: volume '{}' is in use by another operation",
                p.display()
            )));
        }
        inner.busy.extend(paths.iter().cloned());
        Ok(Busy {
            pools: self.clone(),
            paths: paths.to_vec(),
        })
    }

    pub(super) fn update(&self, vol: &VolRef, volume: Option<VolumeSummary>) {
        let mut inner = self.lock();
        if let Some(p) = inner.pools.get_mut(&vol.pool) {
            match volume {
                Some(v) => {
                    p.volumes.insert(vol.name.clone(), v);
                }
                None => {
                    p.volumes.remove(&vol.name);
                }
            }
        }
    }

    pub(super) async fn read_info(&self, vol: &VolRef) -> Result<VolumeSummary, ApiError> {
        let (name, path) = (vol.name.clone(), vol.path.clone());
        let volume = blocking(move || {
            volume::info(&path)
                .map(|i| summary(&name, i))
                .map_err(storage_error)
        })
        .await?;
        self.update(vol, Some(volume.clone()));
        Ok(volume)
    }
}

/// Allocates the first `bytes` of a new raw volume on disk.
pub(super) fn preallocate(path: &Path, bytes: u64) -> Result<(), ApiError> {
    if bytes == 0 {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| internal(format!("cannot open '{}': {e}", path.display())))?;
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| invalid(format!("allocation of {bytes} bytes is too large")))?;
    // SAFETY: fallocate on a file descriptor we own, plain integers.
    let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, len) };
    if rc != 0 {
        return Err(internal(format!(
            "cannot allocate {bytes} bytes for '{}': {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    file.sync_all()
        .map_err(|e| internal(format!("cannot sync '{}': {e}", path.display())))
}
