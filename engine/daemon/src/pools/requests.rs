//! [`Pools::handle`]: one storage request answered, pool queries inline,
//! volume work (create, clone, convert, resize, delete) in `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;

use vireo_api::proto::{ApiError, ErrorCode, Response};
use vireo_api::storage::{PoolSummary, StorageRequest, VolumeFormat};
use vireo_storage::volume::{self, NewVolume};
use vireo_storage::{BackingSpec, StorageError};

use super::volumes::preallocate;
use super::{
    ApiResult, Pool, Pools, ProgressFn, Throttle, blocking, fs_sizes, internal, invalid,
    invalid_state, storage_error, summary, to_image_format,
};

impl Pools {
    /// Answers one storage request; long operations report to `progress`.
    /// Uploads and downloads need a connection: see [`spawn_call`](super::spawn_call).
    pub async fn handle(
        self: &Arc<Self>,
        request: StorageRequest,
        progress: ProgressFn,
    ) -> ApiResult {
        self.ensure_default();
        match request {
            StorageRequest::ListPools { all } => {
                let inner = self.lock();
                let mut pools: Vec<PoolSummary> = inner
                    .pools
                    .values()
                    .filter(|p| all || p.active)
                    .map(Pool::summary)
                    .collect();
                pools.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Response::Pools { pools })
            }
            StorageRequest::DefinePool { xml } => self.define(&xml),
            StorageRequest::PoolXml { pool } => {
                let inner = self.lock();
                let p = inner.find(&pool)?;
                let sizes = p.active.then(|| fs_sizes(&p.dir())).flatten();
                Ok(Response::Xml {
                    xml: p.def.to_xml(sizes),
                })
            }
            StorageRequest::PoolInfo { pool } => Ok(Response::Pool {
                pool: self.lock().find(&pool)?.summary(),
            }),
            StorageRequest::BuildPool { pool } => {
                let dir = self.lock().find(&pool)?.dir();
                std::fs::create_dir_all(&dir)
                    .map_err(|e| internal(format!("cannot create '{}': {e}", dir.display())))?;
                Ok(Response::Done)
            }
            StorageRequest::DeletePool { pool } => {
                let dir = {
                    let inner = self.lock();
                    let p = inner.find(&pool)?;
                    if p.active {
                        return Err(invalid_state(format!(
                            "Requested operation is not valid: storage pool '{}' is still active",
                            p.def.name
                        )));
                    }
                    p.dir()
                };
                std::fs::remove_dir(&dir).map_err(|e| {
                    internal(format!(
                        "cannot delete the pool folder '{}': {e}",
                        dir.display()
                    ))
                })?;
                Ok(Response::Done)
            }
            StorageRequest::StartPool { pool } => {
                let this = self.clone();
                blocking(move || this.start(&pool)).await
            }
            StorageRequest::DestroyPool { pool } => self.destroy(&pool),
            StorageRequest::UndefinePool { pool } => self.undefine(&pool),
            StorageRequest::RefreshPool { pool } => {
                let this = self.clone();
                blocking(move || this.refresh(&pool)).await
            }
            StorageRequest::SetPoolAutostart { pool, enabled } => {
                self.set_autostart(&pool, enabled)
            }
            StorageRequest::ListVolumes { pool } => {
                let inner = self.lock();
                let p = inner.active(&pool)?;
                Ok(Response::Volumes {
                    volumes: p.volumes.values().cloned().collect(),
                })
            }
            StorageRequest::CreateVolume {
                pool,
                name,
                capacity,
                allocation,
                format,
                backing,
                backing_format,
            } => {
                let target = self.new_volume(&pool, &name)?;
                let backing = match backing {
                    None => None,
                    Some(b) => {
                        let vol = self.resolve(Some(&pool), &b, true).or_else(|e| {
                            if Path::new(&b).is_absolute() {
                                self.resolve(None, &b, true)
                            } else {
                                Err(e)
                            }
                        })?;
                        Some((vol.path, backing_format))
                    }
                };
                let busy = self.claim(std::slice::from_ref(&target.path))?;
                let path = target.path.clone();
                let info = blocking(move || {
                    let backing = match backing {
                        None => None,
                        Some((path, format)) => {
                            let format = match format {
                                Some(f) => to_image_format(f),
                                None => {
                                    vireo_storage::probe(&path)
                                        .map_err(|e| storage_error(e.into()))?
                                        .format
                                }
                            };
                            Some(BackingSpec {
                                name: path.to_string_lossy().into_owned(),
                                format,
                            })
                        }
                    };
                    let spec = NewVolume {
                        format: to_image_format(format),
                        capacity,
                        backing,
                    };
                    let info = volume::create(&path, &spec).map_err(storage_error)?;
                    if let (VolumeFormat::Raw, Some(bytes)) = (format, allocation) {
                        if let Err(e) = preallocate(&path, bytes.min(capacity)) {
                            let _ = volume::delete(&path);
                            return Err(e);
                        }
                        return volume::info(&path).map_err(storage_error);
                    }
                    Ok(info)
                })
                .await;
                drop(busy);
                let volume = summary(&target.name, info?);
                self.update(&target, Some(volume.clone()));
                Ok(Response::Volume { volume })
            }
            StorageRequest::VolumeInfo { pool, volume } => {
                let vol = self.resolve(pool.as_deref(), &volume, true)?;
                let volume = self.read_info(&vol).await?;
                Ok(Response::Volume { volume })
            }
            StorageRequest::VolumeXml { pool, volume } => {
                let vol = self.resolve(pool.as_deref(), &volume, true)?;
                let volume = self.read_info(&vol).await?;
                Ok(Response::Xml {
                    xml: volume.to_xml(),
                })
            }
            StorageRequest::DeleteVolume { pool, volume } => {
                let vol = self.resolve(pool.as_deref(), &volume, true)?;
                let busy = self.claim(std::slice::from_ref(&vol.path))?;
                let path = vol.path.clone();
                let result = blocking(move || volume::delete(&path).map_err(storage_error)).await;
                drop(busy);
                result?;
                self.update(&vol, None);
                Ok(Response::Done)
            }
            StorageRequest::ResizeVolume {
                pool,
                volume,
                capacity,
                shrink,
            } => {
                let vol = self.resolve(pool.as_deref(), &volume, true)?;
                let busy = self.claim(std::slice::from_ref(&vol.path))?;
                let path = vol.path.clone();
                let result = blocking(move || {
                    volume::resize(&path, capacity, shrink).map_err(|e| match e {
                        StorageError::InvalidRequest { reason, .. }
                            if reason.contains("allow_shrink") =>
                        {
                            invalid(format!(
                                "cannot shrink volume '{}' to {capacity} bytes without --shrink \
                                 (data at its end would be lost)",
                                path.display()
                            ))
                        }
                        e => storage_error(e),
                    })?;
                    volume::info(&path).map_err(storage_error)
                })
                .await;
                drop(busy);
                let volume = summary(&vol.name, result?);
                self.update(&vol, Some(volume.clone()));
                Ok(Response::Volume { volume })
            }
            StorageRequest::CloneVolume {
                pool,
                volume,
                new_name,
            } => {
                let src = self.resolve(pool.as_deref(), &volume, true)?;
                let pool_key = src.pool.to_string();
                let dst = self.new_volume(&pool_key, &new_name)?;
                let busy = self.claim(&[src.path.clone(), dst.path.clone()])?;
                let (from, to) = (src.path.clone(), dst.path.clone());
                let result = blocking(move || {
                    let mut throttle = Throttle::default();
                    volume::clone_volume(&from, &to, None, &mut |done, total| {
                        if throttle.due(done, total) {
                            progress(done, total);
                        }
                    })
                    .map_err(storage_error)
                })
                .await;
                drop(busy);
                let volume = summary(&dst.name, result?);
                self.update(&dst, Some(volume.clone()));
                Ok(Response::Volume { volume })
            }
            StorageRequest::CreateVolumeFrom {
                pool,
                name,
                capacity,
                format,
                input_pool,
                input,
            } => {
                if format == VolumeFormat::Vmdk {
                    return Err(invalid(
                        "unsupported volume format 'vmdk' for a new volume (raw or qcow2)",
                    ));
                }
                // As vol-create-as's backing volume: a name in the input
                // pool (the new volume's pool by default), or a path.
                let src = match input_pool.as_deref() {
                    Some(key) => self.resolve(Some(key), &input, true)?,
                    None if Path::new(&input).is_absolute() => self.resolve(None, &input, true)?,
                    None => self.resolve(Some(&pool), &input, true)?,
                };
                let dst = self.new_volume(&pool, &name)?;
                let busy = self.claim(&[src.path.clone(), dst.path.clone()])?;
                let (from, to) = (src.path.clone(), dst.path.clone());
                let result = blocking(move || {
                    let mut throttle = Throttle::default();
                    volume::create_from(
                        &from,
                        &to,
                        to_image_format(format),
                        capacity,
                        &mut |done, total| {
                            if throttle.due(done, total) {
                                progress(done, total);
                            }
                        },
                    )
                    .map_err(|e| match e {
                        StorageError::InvalidRequest { reason, .. } => invalid(reason),
                        e => storage_error(e),
                    })
                })
                .await;
                drop(busy);
                let volume = summary(&dst.name, result?);
                self.update(&dst, Some(volume.clone()));
                Ok(Response::Volume { volume })
            }
            StorageRequest::UploadVolume { .. } | StorageRequest::DownloadVolume { .. } => {
                Err(ApiError::new(
                    ErrorCode::Unsupported,
                    "vol-upload and vol-download stream through an API connection",
                ))
            }
        }
    }
}
