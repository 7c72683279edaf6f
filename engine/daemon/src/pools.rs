//! Storage pools and volumes (libvirt's `dir` pools).
//!
//! A pool is a folder of image files. Definitions live in
//! `STATE/storage/pools/UUID.xml` (libvirt storage-pool XML, written
//! atomically), autostart marks in `STATE/storage/autostart/UUID`, and
//! active pools are marked in `RUNTIME/storage/active/UUID`, so a pool
//! stays started across engine restarts but not across host reboots, when
//! autostart pools are started again (before autostart domains). A volume
//! is a regular file in the pool's folder, probed with `vireo-storage`;
//! temporary files (`.NAME.vireo-tmp`) and other dot files are not volumes.
//! Volume names are plain file names (see
//! [`vireo_api::storage::check_volume_name`]), so no request reaches outside
//! a pool's folder.
//!
//! The first storage request defines, builds and starts the pool `default`
//! (`STATE/images`: `$XDG_DATA_HOME/vireo/images` for the session engine,
//! `/var/lib/vireo/images` for the system one, as libvirt's
//! `~/.local/share/libvirt/images` and `/var/lib/libvirt/images`), once.
//!
//! Image work blocks, so it runs in `spawn_blocking`. [`Streams`] carries a
//! connection's `vol-upload`/`vol-download` bytes with flow control (see
//! [`vireo_api::storage`]); [`spawn_call`] runs one storage call for a
//! connection, with its progress messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;
use vireo_api::proto::{ApiError, ErrorCode, Response, ServerMessage};
use vireo_api::storage::{
    PoolDef, PoolSummary, STREAM_CHUNK, STREAM_WINDOW, StorageRequest, VolumeFormat, VolumeSummary,
    check_volume_name,
};
use vireo_storage::volume::{self, NewVolume, UploadOptions, VolumeInfo};
use vireo_storage::{BackingSpec, ImageFormat, StorageError};

use crate::paths::EnginePaths;
use crate::state::write_atomic;

type ApiResult = Result<Response, ApiError>;

/// Where a call's progress goes: (bytes done, bytes in total).
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Internal, msg)
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, msg)
}

fn invalid_state(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidState, msg)
}

fn storage_error(e: StorageError) -> ApiError {
    internal(e.to_string())
}

fn no_volume(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoStorageVolume,
        format!("Storage volume not found: no storage vol with matching name '{what}'"),
    )
}

fn to_api_format(f: ImageFormat) -> VolumeFormat {
    match f {
        ImageFormat::Raw => VolumeFormat::Raw,
        ImageFormat::Qcow2 => VolumeFormat::Qcow2,
        ImageFormat::Vmdk => VolumeFormat::Vmdk,
    }
}

fn to_image_format(f: VolumeFormat) -> ImageFormat {
    match f {
        VolumeFormat::Raw => ImageFormat::Raw,
        VolumeFormat::Qcow2 => ImageFormat::Qcow2,
        VolumeFormat::Vmdk => ImageFormat::Vmdk,
    }
}

fn summary(name: &str, info: VolumeInfo) -> VolumeSummary {
    VolumeSummary {
        name: name.to_owned(),
        path: info.path.to_string_lossy().into_owned(),
        format: to_api_format(info.format),
        capacity: info.capacity,
        allocation: info.allocation,
        backing: info.backing,
    }
}

/// Runs blocking image work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("the storage task failed: {e}")))?
}

/// The file system's (capacity, allocation, available) under `path`.
fn fs_sizes(path: &Path) -> Option<(u64, u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize;
    let capacity = st.f_blocks * frsize;
    let free = st.f_bfree * frsize;
    let available = st.f_bavail * frsize;
    Some((capacity, capacity.saturating_sub(free), available))
}

/// The volumes in `dir`: regular files not starting with `.`, probed.
/// With `clean`, temporary files that interrupted volume operations left
/// (`.NAME.vireo-tmp`) are deleted: only when no operation can be running
/// in the pool (the engine starts, the pool starts).
fn scan(dir: &Path, clean: bool) -> Result<BTreeMap<String, VolumeSummary>, ApiError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        internal(format!(
            "cannot read the pool folder '{}': {e}",
            dir.display()
        ))
    })?;
    let mut volumes = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if clean
            && name.starts_with('.')
            && name.ends_with(".vireo-tmp")
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed the leftover '{}'", entry.path().display()),
                Err(e) => tracing::warn!("cannot remove '{}': {e}", entry.path().display()),
            }
            continue;
        }
        if check_volume_name(&name).is_err() {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match volume::info(&entry.path()) {
            Ok(info) => {
                volumes.insert(name.clone(), summary(&name, info));
            }
            Err(e) => tracing::warn!("skipping volume '{}': {e}", entry.path().display()),
        }
    }
    Ok(volumes)
}

#[derive(Debug)]
struct Pool {
    def: PoolDef,
    uuid: Uuid,
    active: bool,
    autostart: bool,
    volumes: BTreeMap<String, VolumeSummary>,
}

impl Pool {
    fn dir(&self) -> PathBuf {
        PathBuf::from(&self.def.path)
    }

    fn summary(&self) -> PoolSummary {
        let sizes = self.active.then(|| fs_sizes(&self.dir())).flatten();
        PoolSummary {
            name: self.def.name.clone(),
            uuid: self.uuid,
            active: self.active,
            autostart: self.autostart,
            persistent: true,
            path: self.def.path.clone(),
            capacity: sizes.map(|s| s.0),
            allocation: sizes.map(|s| s.1),
            available: sizes.map(|s| s.2),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    pools: BTreeMap<Uuid, Pool>,
    /// Volume files an operation is working on.
    busy: HashSet<PathBuf>,
    default_checked: bool,
}

impl Inner {
    fn find(&self, key: &str) -> Result<&Pool, ApiError> {
        let by_uuid = key.parse::<Uuid>().ok().and_then(|u| self.pools.get(&u));
        by_uuid
            .or_else(|| self.pools.values().find(|p| p.def.name == key))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NoStoragePool,
                    format!("Storage pool not found: no storage pool with matching name '{key}'"),
                )
            })
    }

    fn find_mut(&mut self, key: &str) -> Result<&mut Pool, ApiError> {
        let uuid = self.find(key)?.uuid;
        self.pools
            .get_mut(&uuid)
            .ok_or_else(|| internal("the pool vanished"))
    }

    fn active(&self, key: &str) -> Result<&Pool, ApiError> {
        let pool = self.find(key)?;
        if !pool.active {
            return Err(invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is not active",
                pool.def.name
            )));
        }
        Ok(pool)
    }
}

/// A volume a request names, resolved inside its pool.
#[derive(Debug, Clone)]
struct VolRef {
    pool: Uuid,
    name: String,
    path: PathBuf,
}

/// Marks a volume file busy until dropped.
struct Busy {
    pools: Arc<Pools>,
    paths: Vec<PathBuf>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.pools.lock();
        for p in &self.paths {
            inner.busy.remove(p);
        }
    }
}

/// The engine's storage pools.
#[derive(Debug)]
pub struct Pools {
    state_dir: PathBuf,
    runtime_dir: PathBuf,
    inner: Mutex<Inner>,
    /// Serialises the first use's set-up of the default pool.
    setup: Mutex<()>,
}

impl Pools {
    /// Loads pool definitions and which of them are active.
    pub fn load(paths: &EnginePaths) -> Result<Arc<Self>, String> {
        let pools = Arc::new(Self {
            state_dir: paths.state_dir.join("storage"),
            runtime_dir: paths.runtime_dir.join("storage"),
            inner: Mutex::default(),
            setup: Mutex::default(),
        });
        for dir in [
            pools.definitions_dir(),
            pools.state_dir.join("autostart"),
            pools.runtime_dir.join("active"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create '{}': {e}", dir.display()))?;
        }
        let dir = pools.definitions_dir();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read '{}': {e}", dir.display()))?;
        let mut inner = pools.lock();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(uuid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".xml"))
                .and_then(|n| n.parse::<Uuid>().ok())
            else {
                continue;
            };
            let def = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|xml| PoolDef::parse(&xml));
            let def = match def {
                Ok(d) if d.uuid == Some(uuid) => d,
                Ok(_) => {
                    tracing::error!("skipping '{}': its <uuid> differs", path.display());
                    continue;
                }
                Err(e) => {
                    tracing::error!("skipping '{}': {e}", path.display());
                    continue;
                }
            };
            let mut pool = Pool {
                autostart: pools.autostart_path(uuid).exists(),
                active: pools.active_path(uuid).exists(),
                def,
                uuid,
                volumes: BTreeMap::new(),
            };
            if pool.active {
                match scan(&pool.dir(), true) {
                    Ok(v) => pool.volumes = v,
                    Err(e) => {
                        tracing::error!("pool '{}' is no longer usable: {e}", pool.def.name);
                        pool.active = false;
                        let _ = std::fs::remove_file(pools.active_path(uuid));
                    }
                }
            }
            inner.pools.insert(uuid, pool);
        }
        drop(inner);
        Ok(pools)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops deleted files (a domain's images removed with it) from the
    /// pools' volume lists.
    pub fn forget_files(&self, paths: &[String]) {
        if paths.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for pool in inner.pools.values_mut() {
            pool.volumes.retain(|_, v| !paths.contains(&v.path));
        }
    }

    fn definitions_dir(&self) -> PathBuf {
        self.state_dir.join("pools")
    }

    fn definition_path(&self, uuid: Uuid) -> PathBuf {
        self.definitions_dir().join(format!("{uuid}.xml"))
    }

    fn autostart_path(&self, uuid: Uuid) -> PathBuf {
        self.state_dir.join("autostart").join(uuid.to_string())
    }

    fn active_path(&self, uuid: Uuid) -> PathBuf {
        self.runtime_dir.join("active").join(uuid.to_string())
    }

    /// Starts autostart pools that are not active (once per host boot: the
    /// engine calls it with domain autostart).
    pub fn autostart(&self) {
        let keys: Vec<String> = self
            .lock()
            .pools
            .values()
            .filter(|p| p.autostart && !p.active)
            .map(|p| p.uuid.to_string())
            .collect();
        for key in keys {
            match self.start(&key) {
                Ok(_) => tracing::info!("autostarted pool {key}"),
                Err(e) => tracing::error!("cannot autostart pool {key}: {e}"),
            }
        }
    }

    /// Defines, builds and starts `default` the first time storage is used.
    fn ensure_default(&self) {
        if self.lock().default_checked {
            return;
        }
        let _setup = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        if self.lock().default_checked {
            return;
        }
        let marker = self.state_dir.join("default-pool-created");
        if !marker.exists() {
            let images = self
                .state_dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join("images");
            let result = (|| -> Result<(), ApiError> {
                if self.lock().find("default").is_err() {
                    let def = PoolDef {
                        name: "default".into(),
                        uuid: None,
                        path: images.to_string_lossy().into_owned(),
                    };
                    self.define(&def.to_xml(None))?;
                    self.set_autostart("default", true)?;
                }
                std::fs::create_dir_all(&images)
                    .map_err(|e| internal(format!("cannot create '{}': {e}", images.display())))?;
                if !self.lock().find("default")?.active {
                    self.start("default")?;
                }
                write_atomic(&marker, b"", 0o600).map_err(|e| internal(e.to_string()))
            })();
            if let Err(e) = result {
                tracing::error!("cannot set up the default pool: {e}");
            }
        }
        self.lock().default_checked = true;
    }

    /// Answers one storage request; long operations report to `progress`.
    /// Uploads and downloads need a connection: see [`spawn_call`].
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

    fn define(&self, xml: &str) -> ApiResult {
        let mut def = PoolDef::parse(xml).map_err(|e| ApiError::new(ErrorCode::InvalidXml, e))?;
        let mut inner = self.lock();
        let by_name = inner
            .pools
            .values()
            .find(|p| p.def.name == def.name)
            .map(|p| p.uuid);
        if let Some(uuid) = def.uuid {
            if let Some(other) = inner.pools.get(&uuid).filter(|p| p.def.name != def.name) {
                return Err(ApiError::new(
                    ErrorCode::Exists,
                    format!(
                        "pool '{}' already exists with uuid {uuid}; rename it or remove the \
                         <uuid> element",
                        other.def.name
                    ),
                ));
            }
            if let Some(existing) = by_name.filter(|u| *u != uuid) {
                return Err(ApiError::new(
                    ErrorCode::Exists,
                    format!("pool '{}' already exists with uuid {existing}", def.name),
                ));
            }
        }
        let uuid = def.uuid.or(by_name).unwrap_or_else(Uuid::new_v4);
        if let Some(other) = inner
            .pools
            .values()
            .find(|p| p.uuid != uuid && p.def.path == def.path)
        {
            return Err(ApiError::new(
                ErrorCode::Exists,
                format!(
                    "Storage source conflict with pool: '{}' already uses '{}'",
                    other.def.name, def.path
                ),
            ));
        }
        if let Some(p) = inner.pools.get(&uuid).filter(|p| p.active) {
            return Err(invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is active; destroy it \
                 before redefining it",
                p.def.name
            )));
        }
        def.uuid = Some(uuid);
        write_atomic(
            &self.definition_path(uuid),
            def.to_xml(None).as_bytes(),
            0o600,
        )
        .map_err(|e| internal(e.to_string()))?;
        let name = def.name.clone();
        match inner.pools.get_mut(&uuid) {
            Some(p) => p.def = def,
            None => {
                inner.pools.insert(
                    uuid,
                    Pool {
                        def,
                        uuid,
                        active: false,
                        autostart: false,
                        volumes: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(Response::Pool {
            pool: inner
                .pools
                .get(&uuid)
                .map(Pool::summary)
                .ok_or_else(|| internal(format!("pool '{name}' vanished")))?,
        })
    }

    fn start(&self, key: &str) -> ApiResult {
        let (uuid, dir) = {
            let inner = self.lock();
            let p = inner.find(key)?;
            if p.active {
                return Err(invalid_state(format!(
                    "Requested operation is not valid: storage pool '{}' is already active",
                    p.def.name
                )));
            }
            (p.uuid, p.dir())
        };
        if !dir.is_dir() {
            return Err(internal(format!(
                "cannot start the pool: its folder '{}' does not exist (create it, or run \
                 pool-build)",
                dir.display()
            )));
        }
        let volumes = scan(&dir, true)?;
        write_atomic(&self.active_path(uuid), b"", 0o600).map_err(|e| internal(e.to_string()))?;
        let mut inner = self.lock();
        let p = inner.find_mut(&uuid.to_string())?;
        p.active = true;
        p.volumes = volumes;
        Ok(Response::Done)
    }

    fn refresh(&self, key: &str) -> ApiResult {
        let (uuid, dir) = {
            let inner = self.lock();
            let p = inner.active(key)?;
            (p.uuid, p.dir())
        };
        let volumes = scan(&dir, false)?;
        let mut inner = self.lock();
        let p = inner.find_mut(&uuid.to_string())?;
        p.volumes = volumes;
        Ok(Response::Done)
    }

    fn destroy(&self, key: &str) -> ApiResult {
        let mut inner = self.lock();
        let p = inner.active(key)?;
        let (uuid, dir) = (p.uuid, p.dir());
        if inner.busy.iter().any(|b| b.parent() == Some(dir.as_path())) {
            return Err(invalid_state(format!(
                "Requested operation is not valid: storage pool '{key}' has volume operations \
                 in progress"
            )));
        }
        match std::fs::remove_file(self.active_path(uuid)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(internal(format!("cannot mark the pool inactive: {e}")));
            }
            _ => {}
        }
        let p = inner.find_mut(key)?;
        p.active = false;
        p.volumes.clear();
        Ok(Response::Done)
    }

    fn undefine(&self, key: &str) -> ApiResult {
        let mut inner = self.lock();
        let p = inner.find(key)?;
        if p.active {
            return Err(invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is still active",
                p.def.name
            )));
        }
        let uuid = p.uuid;
        let path = self.definition_path(uuid);
        std::fs::remove_file(&path)
            .map_err(|e| internal(format!("cannot remove '{}': {e}", path.display())))?;
        let _ = std::fs::remove_file(self.autostart_path(uuid));
        inner.pools.remove(&uuid);
        Ok(Response::Done)
    }

    fn set_autostart(&self, key: &str, enabled: bool) -> ApiResult {
        let mut inner = self.lock();
        let p = inner.find_mut(key)?;
        let path = self.autostart_path(p.uuid);
        if enabled {
            write_atomic(&path, b"", 0o600).map_err(|e| internal(e.to_string()))?;
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(internal(format!("cannot remove '{}': {e}", path.display())));
                }
                _ => {}
            }
        }
        p.autostart = enabled;
        Ok(Response::Done)
    }

    /// Resolves a volume: by name in `pool`, or by path (in `pool`, or in
    /// whichever active pool's folder holds it). With `existing`, the file
    /// must be there and be a regular file.
    fn resolve(
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
    fn new_volume(&self, pool: &str, name: &str) -> Result<VolRef, ApiError> {
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

    fn claim(self: &Arc<Self>, paths: &[PathBuf]) -> Result<Busy, ApiError> {
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

    fn update(&self, vol: &VolRef, volume: Option<VolumeSummary>) {
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

    async fn read_info(&self, vol: &VolRef) -> Result<VolumeSummary, ApiError> {
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
fn preallocate(path: &Path, bytes: u64) -> Result<(), ApiError> {
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

/// Lets progress through at most every MiB (and always the last step).
#[derive(Default)]
struct Throttle {
    last: Option<u64>,
}

impl Throttle {
    fn due(&mut self, done: u64, total: u64) -> bool {
        let due = done >= total || self.last.is_none_or(|l| done >= l + (1 << 20));
        if due {
            self.last = Some(done);
        }
        due
    }
}

// ---------------------------------------------------------------------------
// Streams on one connection.

/// Acknowledged bytes of a download, and whether the connection is gone.
#[derive(Debug, Default)]
struct Credit {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

impl Credit {
    fn set(&self, acked: Option<u64>, closed: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = acked {
            s.0 = s.0.max(a);
        }
        s.1 |= closed;
        self.cv.notify_all();
    }
}

#[derive(Debug)]
enum StreamEnd {
    /// An upload call the engine has not accepted yet: no data may come.
    Pending,
    Upload {
        tx: std::sync::mpsc::Sender<Vec<u8>>,
        /// Bytes received from the client.
        received: u64,
        /// Bytes written to disk, as last told to the client.
        credit: Arc<AtomicU64>,
    },
    Download(Arc<Credit>),
}

type StreamMap = Arc<Mutex<HashMap<u64, StreamEnd>>>;

/// Buffers of upload chunks already written to disk, for the next chunks
/// to be read into: a connection allocates no memory per chunk.
type Spare = Arc<Mutex<Vec<Vec<u8>>>>;

/// At most this many spare buffers are kept: a window's worth.
const SPARE_MAX: usize = (STREAM_WINDOW / STREAM_CHUNK as u64) as usize + 1;

/// The volume streams of one connection. Dropping it (the connection
/// ended) ends them: an upload then fails and leaves the volume as it was.
#[derive(Debug, Default)]
pub struct Streams {
    map: StreamMap,
    spare: Spare,
}

fn lock_map(map: &StreamMap) -> MutexGuard<'_, HashMap<u64, StreamEnd>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    /// A buffer for the next upload chunk to be read into (see
    /// [`vireo_api::proto::read_message_async_with`]).
    pub fn spare(&self) -> Vec<u8> {
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// A chunk of upload `id`. An error means the client broke the
    /// protocol (too large a chunk, or beyond the window): drop it.
    pub fn data(&self, id: u64, data: Vec<u8>) -> Result<(), String> {
        if data.len() > STREAM_CHUNK {
            return Err(format!(
                "a stream chunk of {} bytes exceeds the {STREAM_CHUNK}-byte limit",
                data.len()
            ));
        }
        let mut map = lock_map(&self.map);
        // Data for a stream that already ended (say, with an error the
        // client has not read yet) is dropped.
        let (tx, received, credit) = match map.get_mut(&id) {
            Some(StreamEnd::Upload {
                tx,
                received,
                credit,
            }) => (tx, received, credit),
            Some(StreamEnd::Pending) => {
                return Err(format!(
                    "upload {id} sent data before the engine's first progress message"
                ));
            }
            _ => return Ok(()),
        };
        *received += data.len() as u64;
        if *received > credit.load(Ordering::SeqCst) + STREAM_WINDOW {
            return Err(format!(
                "upload {id} sent more than the {STREAM_WINDOW}-byte flow-control window \
                 allows"
            ));
        }
        if tx.send(data).is_err() {
            map.remove(&id);
        }
        Ok(())
    }

    /// The client has consumed `received` bytes of download `id`.
    pub fn ack(&self, id: u64, received: u64) {
        if let Some(StreamEnd::Download(credit)) = lock_map(&self.map).get(&id) {
            credit.set(Some(received), false);
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for (_, end) in lock_map(&self.map).drain() {
            if let StreamEnd::Download(credit) = end {
                credit.set(None, true);
            }
        }
    }
}

/// Reads an upload's chunks as they arrive; ends when the connection does.
struct UploadReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    /// Where consumed chunks go back to.
    spare: Spare,
}

impl Read for UploadReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    let used = std::mem::replace(&mut self.buf, chunk);
                    self.pos = 0;
                    let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
                    if used.capacity() > 0 && spare.len() < SPARE_MAX {
                        spare.push(used);
                    }
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends a download's bytes as stream messages, within the window.
struct DownloadWriter {
    id: u64,
    out: mpsc::Sender<ServerMessage>,
    credit: Arc<Credit>,
    sent: u64,
}

impl Write for DownloadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client is gone");
        let n = buf.len().min(STREAM_CHUNK);
        let mut s = self.credit.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.1 && self.sent >= s.0 + STREAM_WINDOW {
            s = self
                .credit
                .cv
                .wait_timeout(s, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if s.1 {
            return Err(gone());
        }
        drop(s);
        let msg = ServerMessage::StreamData {
            id: self.id,
            data: buf[..n].to_vec(),
        };
        self.out.blocking_send(msg).map_err(|_| gone())?;
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs storage call `id` of a connection on its own task: progress
/// messages and the reply go to `out`; uploads and downloads stream
/// through `streams`.
pub fn spawn_call(
    pools: Arc<Pools>,
    streams: &Streams,
    id: u64,
    request: StorageRequest,
    out: mpsc::Sender<ServerMessage>,
) {
    let map = streams.map.clone();
    let spare = streams.spare.clone();
    if matches!(request, StorageRequest::UploadVolume { .. }) {
        lock_map(&map).insert(id, StreamEnd::Pending);
    }
    tokio::spawn(async move {
        let result = match request {
            StorageRequest::UploadVolume {
                pool,
                volume,
                length,
            } => {
                let result = upload(&pools, &map, &spare, id, pool, volume, length, out.clone());
                let result = result.await;
                // The connection keeps no buffers between uploads.
                spare.lock().unwrap_or_else(|e| e.into_inner()).clear();
                result
            }
            StorageRequest::DownloadVolume { pool, volume } => {
                download(&pools, &map, id, pool, volume, out.clone()).await
            }
            request => {
                let progress_out = out.clone();
                let progress: ProgressFn = Arc::new(move |done, total| {
                    let _ = progress_out.try_send(ServerMessage::Progress { id, done, total });
                });
                pools.handle(request, progress).await
            }
        };
        lock_map(&map).remove(&id);
        let _ = out.send(ServerMessage::Reply { id, result }).await;
    });
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    pools: &Arc<Pools>,
    map: &StreamMap,
    spare: &Spare,
    id: u64,
    pool: Option<String>,
    volume: String,
    length: u64,
    out: mpsc::Sender<ServerMessage>,
) -> ApiResult {
    pools.ensure_default();
    let vol = pools.resolve(pool.as_deref(), &volume, true)?;
    let busy = pools.claim(std::slice::from_ref(&vol.path))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let credit = Arc::new(AtomicU64::new(0));
    lock_map(map).insert(
        id,
        StreamEnd::Upload {
            tx,
            received: 0,
            credit: credit.clone(),
        },
    );
    // The first progress message tells the client to start sending.
    let _ = out
        .send(ServerMessage::Progress {
            id,
            done: 0,
            total: length,
        })
        .await;
    let path = vol.path.clone();
    let spare = spare.clone();
    let result = blocking(move || {
        let mut reader = UploadReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            spare,
        };
        volume::upload(
            &path,
            &mut reader,
            length,
            UploadOptions::default(),
            &mut |done, total| {
                // The client may now send up to `done` + the window.
                credit.store(done, Ordering::SeqCst);
                let _ = out.blocking_send(ServerMessage::Progress { id, done, total });
            },
        )
        .map_err(storage_error)
    })
    .await;
    lock_map(map).remove(&id);
    drop(busy);
    let volume = summary(&vol.name, result?);
    pools.update(&vol, Some(volume.clone()));
    Ok(Response::Volume { volume })
}

async fn download(
    pools: &Arc<Pools>,
    map: &StreamMap,
    id: u64,
    pool: Option<String>,
    volume: String,
    out: mpsc::Sender<ServerMessage>,
) -> ApiResult {
    pools.ensure_default();
    let vol = pools.resolve(pool.as_deref(), &volume, true)?;
    let busy = pools.claim(std::slice::from_ref(&vol.path))?;
    let credit = Arc::new(Credit::default());
    lock_map(map).insert(id, StreamEnd::Download(credit.clone()));
    let path = vol.path.clone();
    let result = blocking(move || {
        let total = std::fs::metadata(&path)
            .map_err(|e| internal(format!("cannot read '{}': {e}", path.display())))?
            .len();
        let _ = out.blocking_send(ServerMessage::Progress { id, done: 0, total });
        let mut writer = DownloadWriter {
            id,
            out: out.clone(),
            credit,
            sent: 0,
        };
        let mut throttle = Throttle::default();
        volume::download(&path, &mut writer, &mut |done, total| {
            if throttle.due(done, total) {
                let _ = out.try_send(ServerMessage::Progress { id, done, total });
            }
        })
        .map_err(storage_error)
    })
    .await;
    lock_map(map).remove(&id);
    drop(busy);
    Ok(Response::Transferred { bytes: result? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_reader_yields_chunks_then_ends_with_the_connection() {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(vec![1, 2, 3]).unwrap();
        tx.send(vec![4, 5, 6, 7]).unwrap();
        drop(tx);
        let streams = Streams::default();
        let mut r = UploadReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            spare: streams.spare.clone(),
        };
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, [1, 2, 3, 4, 5, 6, 7]);
        // The consumed first chunk went back for the next one to reuse.
        assert_eq!(streams.spare(), [1, 2, 3]);
        assert!(streams.spare().is_empty());
    }

    #[test]
    fn streams_refuse_data_beyond_the_window_or_too_large_chunks() {
        let streams = Streams::default();
        let (tx, _rx) = std::sync::mpsc::channel();
        let credit = Arc::new(AtomicU64::new(0));
        lock_map(&streams.map).insert(
            1,
            StreamEnd::Upload {
                tx,
                received: 0,
                credit: credit.clone(),
            },
        );
        let chunk = vec![0u8; STREAM_CHUNK];
        let fits = (STREAM_WINDOW / STREAM_CHUNK as u64) as usize;
        for _ in 0..fits {
            streams.data(1, chunk.clone()).unwrap();
        }
        // Written to disk: the client may send one more chunk, not two.
        credit.store(STREAM_CHUNK as u64, Ordering::SeqCst);
        streams.data(1, chunk.clone()).unwrap();
        let err = streams.data(1, vec![0]).unwrap_err();
        assert!(err.contains("flow-control window"), "{err}");
        let err = streams.data(1, vec![0; STREAM_CHUNK + 1]).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
        // Unknown streams swallow data.
        streams.data(99, vec![1]).unwrap();
    }

    #[test]
    fn download_writer_waits_for_acks_and_stops_when_the_connection_ends() {
        let (out, mut rx) = mpsc::channel(64);
        let credit = Arc::new(Credit::default());
        let mut w = DownloadWriter {
            id: 3,
            out,
            credit: credit.clone(),
            sent: 0,
        };
        let writer = std::thread::spawn(move || {
            let chunk = vec![0u8; STREAM_CHUNK];
            let mut wrote = 0;
            while w.write_all(&chunk).is_ok() {
                wrote += 1;
            }
            wrote
        });
        let mut got = 0u64;
        for _ in 0..(STREAM_WINDOW / STREAM_CHUNK as u64) {
            match rx.blocking_recv().unwrap() {
                ServerMessage::StreamData { id: 3, data } => got += data.len() as u64,
                other => panic!("{other:?}"),
            }
        }
        // The window is full: nothing more until an ack.
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err());
        credit.set(Some(got), false);
        assert!(matches!(
            rx.blocking_recv().unwrap(),
            ServerMessage::StreamData { .. }
        ));
        credit.set(None, true);
        let wrote = writer.join().unwrap();
        assert!(wrote > STREAM_WINDOW as usize / STREAM_CHUNK, "{wrote}");
    }

    #[test]
    fn throttle_passes_every_mib_and_the_end() {
        let mut t = Throttle::default();
        let passed: Vec<u64> = (0..=10u64)
            .map(|i| i * (512 << 10))
            .filter(|&d| t.due(d, 5 << 20))
            .collect();
        assert_eq!(passed, [0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 5 << 20]);
    }
}
