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
//! The code is split by concern:
//! - this file: the pool and volume state ([`Pools`], each pool's
//!   definition and volume list, busy volume files), loading it from the
//!   state folders, and the helpers the parts share;
//! - `requests.rs`: [`Pools::handle`], answering one storage request;
//! - `definitions.rs`: defining, starting, stopping and undefining pools,
//!   autostart;
//! - `default_pool.rs`: the `default` pool set up on first use;
//! - `volumes.rs`: resolving volume names and paths, marking volume files
//!   busy, keeping the volume lists current;
//! - `streams.rs`: a connection's upload and download streams.
//!
//! Image work blocks, so it runs in `spawn_blocking`. [`Streams`] carries a
//! connection's `vol-upload`/`vol-download` bytes with flow control (see
//! [`vireo_api::storage`]); [`spawn_call`] runs one storage call for a
//! connection, with its progress messages.

mod default_pool;
mod definitions;
mod requests;
mod streams;
mod volumes;

pub use streams::{Streams, spawn_call};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;
use vireo_api::proto::{ApiError, ErrorCode, Response};
use vireo_api::storage::{PoolDef, PoolSummary, VolumeFormat, VolumeSummary, check_volume_name};
use vireo_storage::volume::{self, VolumeInfo};
use vireo_storage::{ImageFormat, StorageError};

use crate::paths::EnginePaths;

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
