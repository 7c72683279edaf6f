//! Domains' `<disk type='volume'>`: resolved through the pools at start,
//! deleted through them by `undefine`.

use std::sync::Arc;

use vireo_api::Domain;
use vireo_api::domain::DiskSource;
use vireo_api::proto::{ApiError, Response};
use vireo_api::storage::StorageRequest;

use super::{Engine, internal};

impl Engine {
    /// For `undefine`: deletes the images of `key`'s volume disks (all, or
    /// those whose target `selected` names) through their pools, which
    /// keep their lists true. Nothing is deleted for a running domain or
    /// when `selected` names an unknown disk: `undefine` refuses those.
    pub(super) async fn remove_volumes(
        &self,
        key: &str,
        remove_all: bool,
        selected: &[String],
    ) -> Result<Vec<String>, ApiError> {
        // As `undefine` names the images it deletes.
        let images = |d: &vireo_api::domain::Disk| {
            d.source_path()
                .filter(|_| d.kind == "file" && d.device == "disk")
                .map(str::to_owned)
        };
        let volumes: Vec<(String, String)> = {
            let inner = self.lock();
            let dom = inner.find(key)?;
            let disks = &dom.model.devices.disks;
            let known = selected.iter().all(|s| {
                disks
                    .iter()
                    .any(|d| d.target.dev == *s || images(d).as_deref() == Some(s))
            });
            if dom.state.is_active() || !known {
                return Ok(Vec::new());
            }
            disks
                .iter()
                .filter(|d| d.device == "disk")
                .filter_map(|d| {
                    let (pool, volume) = d.volume()?;
                    let chosen = remove_all || selected.contains(&d.target.dev);
                    chosen.then(|| (pool.to_owned(), volume.to_owned()))
                })
                .collect()
        };
        let mut removed = Vec::new();
        for (pool, volume) in volumes {
            let what = |e: ApiError| {
                internal(format!(
                    "cannot remove storage volume '{volume}' of pool '{pool}': {}",
                    e.message
                ))
            };
            let path = self.volume_path(&pool, &volume).await.map_err(what)?;
            let request = StorageRequest::DeleteVolume {
                pool: Some(pool.clone()),
                volume: volume.clone(),
            };
            self.pools
                .handle(request, Arc::new(|_, _| {}))
                .await
                .map_err(what)?;
            removed.push(path);
        }
        Ok(removed)
    }

    /// The path of pool `pool`'s volume `volume`.
    async fn volume_path(&self, pool: &str, volume: &str) -> Result<String, ApiError> {
        let request = StorageRequest::VolumeInfo {
            pool: Some(pool.to_owned()),
            volume: volume.to_owned(),
        };
        match self.pools.handle(request, Arc::new(|_, _| {})).await? {
            Response::Volume { volume } => Ok(volume.path),
            _ => Err(internal("unexpected answer from the storage pools")),
        }
    }

    /// Turns each `<disk type='volume'>` into the file disk its pool volume
    /// is (in the model vireo-vmm's arguments come from; the stored XML
    /// keeps the volume).
    pub(super) async fn resolve_volumes(&self, mut model: Domain) -> Result<Domain, String> {
        for disk in &mut model.devices.disks {
            let Some((pool, volume)) = disk.volume().map(|(p, v)| (p.to_owned(), v.to_owned()))
            else {
                continue;
            };
            let path = self.volume_path(&pool, &volume).await.map_err(|e| {
                format!(
                    "disk '{}' (volume '{volume}' in pool '{pool}'): {}",
                    disk.target.dev, e.message
                )
            })?;
            disk.kind = "file".into();
            disk.source = Some(DiskSource {
                file: Some(path),
                ..DiskSource::default()
            });
        }
        Ok(model)
    }
}
