//! The engine: domain definitions, their states, and the VMMs that run them.
//!
//! Definitions live in `STATE/domains/UUID.xml` (the document as the user
//! gave it, plus a generated `<uuid>` when it had none) and autostart marks
//! in `STATE/autostart/UUID`. Running domains have a directory under
//! `RUNTIME/vms/` (see [`crate::vmm`]). Every change is announced on a
//! broadcast channel that connections forward to subscribed clients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use uuid::Uuid;
use vireo_api::Domain;
use vireo_api::domain::DiskSource;
use vireo_api::import::{ImportError, Imported};
use vireo_api::proto::{
    ApiError, DiskStats, DomainInfo, DomainState, DomainStats, DomainSummary, ErrorCode, Event,
    Lifecycle, Request, Response, VcpuStats,
};
use vireo_api::storage::StorageRequest;

use crate::paths::EnginePaths;
use crate::serial::SerialConsole;
use crate::state::write_atomic;
use crate::vmm::{self, RunRecord, VmFiles};

type ApiResult = Result<Response, ApiError>;

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Internal, msg)
}

fn invalid_state(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidState, msg)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running VMM.
#[derive(Debug, Clone)]
struct Run {
    record: RunRecord,
    files: VmFiles,
    /// Set by `destroy` so the exit reads as `destroyed`, not a crash.
    destroying: bool,
    /// COM1's backlog and console sessions.
    serial: Arc<SerialConsole>,
}

#[derive(Debug)]
struct Dom {
    name: String,
    uuid: Uuid,
    xml: String,
    model: Domain,
    autostart: bool,
    /// False for a running domain whose definition was removed: it goes
    /// away when it stops (libvirt's transient domain).
    persistent: bool,
    state: DomainState,
    reason: String,
    run: Option<Run>,
    /// Serialises lifecycle operations on this domain.
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl Dom {
    fn summary(&self) -> DomainSummary {
        DomainSummary {
            id: self.run.as_ref().map(|r| r.record.id),
            name: self.name.clone(),
            uuid: self.uuid,
            state: self.state,
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    domains: BTreeMap<Uuid, Dom>,
    next_id: u32,
}

impl Inner {
    fn find(&self, key: &str) -> Result<&Dom, ApiError> {
        let by_uuid = key.parse::<Uuid>().ok().and_then(|u| self.domains.get(&u));
        by_uuid
            .or_else(|| self.domains.values().find(|d| d.name == key))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NoDomain,
                    format!("Domain not found: no domain with matching name or uuid '{key}'"),
                )
            })
    }

    fn find_mut(&mut self, key: &str) -> Result<&mut Dom, ApiError> {
        let uuid = self.find(key)?.uuid;
        self.domains
            .get_mut(&uuid)
            .ok_or_else(|| internal("the domain vanished"))
    }
}

/// Where an engine keeps things and what it runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its directories.
    pub paths: EnginePaths,
    /// The `vireo-vmm` binary.
    pub vmm_binary: PathBuf,
    /// How often statistics events are sent.
    pub stats_interval: Duration,
    /// Whether the VMM serves VNC (`--vnc-socket`).
    pub vmm_vnc: bool,
}

/// The engine's state, shared by every connection.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    pools: Arc<crate::pools::Pools>,
}

impl Engine {
    /// Loads definitions, re-attaches to running VMMs and returns the
    /// engine (call [`Engine::autostart`] and [`Engine::spawn_stats`] next).
    pub fn load(config: Config) -> Result<Arc<Self>, String> {
        for dir in [
            config.paths.domains_dir(),
            config.paths.state_dir.join("autostart"),
            config.paths.runtime_dir.join("vms"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create '{}': {e}", dir.display()))?;
        }
        let (events, _) = broadcast::channel(1024);
        let pools = crate::pools::Pools::load(&config.paths)?;
        let engine = Arc::new(Self {
            pools,
            config,
            inner: Mutex::new(Inner {
                domains: BTreeMap::new(),
                next_id: 1,
            }),
            events,
        });
        engine.load_definitions()?;
        engine.reattach();
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The storage pools.
    pub fn pools(&self) -> &Arc<crate::pools::Pools> {
        &self.pools
    }

    /// Subscribes to engine events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, dom: &Dom, change: Lifecycle) {
        let _ = self.events.send(Event::Lifecycle {
            name: dom.name.clone(),
            uuid: dom.uuid,
            change,
        });
    }

    fn definition_path(&self, uuid: Uuid) -> PathBuf {
        self.config.paths.domains_dir().join(format!("{uuid}.xml"))
    }

    fn autostart_path(&self, uuid: Uuid) -> PathBuf {
        self.config
            .paths
            .state_dir
            .join("autostart")
            .join(uuid.to_string())
    }

    fn vm_files(&self, uuid: Uuid) -> VmFiles {
        VmFiles::new(
            self.config
                .paths
                .runtime_dir
                .join("vms")
                .join(uuid.to_string()),
        )
    }

    fn load_definitions(&self) -> Result<(), String> {
        let dir = self.config.paths.domains_dir();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read '{}': {e}", dir.display()))?;
        let mut inner = self.lock();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "xml")
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|xml| Imported::parse(&xml).map_err(|e| e.to_string()));
            let imp = match loaded {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!("skipping '{}': {e}", path.display());
                    continue;
                }
            };
            let Some(uuid) = imp.domain.uuid else {
                tracing::error!("skipping '{}': it has no <uuid>", path.display());
                continue;
            };
            if inner.domains.values().any(|d| d.name == imp.domain.name) {
                tracing::error!(
                    "skipping '{}': the name '{}' is taken",
                    path.display(),
                    imp.domain.name
                );
                continue;
            }
            let autostart = self.autostart_path(uuid).exists();
            inner.domains.insert(
                uuid,
                Dom {
                    name: imp.domain.name.clone(),
                    uuid,
                    xml: imp.xml,
                    model: imp.domain,
                    autostart,
                    persistent: true,
                    state: DomainState::Shutoff,
                    reason: "unknown".into(),
                    run: None,
                    busy: Arc::default(),
                },
            );
        }
        Ok(())
    }

    /// Finds VMMs left running by a previous engine and watches them again.
    fn reattach(self: &Arc<Self>) {
        let dir = self.config.paths.runtime_dir.join("vms");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut inner = self.lock();
        for entry in entries.flatten() {
            let Some(uuid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let files = self.vm_files(uuid);
            let record: Option<RunRecord> = std::fs::read(files.state())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(record) = record else { continue };
            let alive = vmm::is_our_vmm(record.pid, &files.control());
            if alive && inner.domains.contains_key(&uuid) {
                inner.next_id = inner.next_id.max(record.id.saturating_add(1));
            }
            match inner.domains.get_mut(&uuid) {
                Some(dom) if alive => {
                    tracing::info!(
                        "re-attached to '{}' (vireo-vmm PID {})",
                        dom.name,
                        record.pid
                    );
                    dom.state = if record.paused {
                        DomainState::Paused
                    } else {
                        DomainState::Running
                    };
                    dom.reason = if record.paused { "user" } else { "booted" }.into();
                    let pid = record.pid;
                    let serial = Self::resume_serial(&dom.name, &record, &files);
                    dom.run = Some(Run {
                        record,
                        files,
                        destroying: false,
                        serial,
                    });
                    self.watch_foreign(uuid, pid);
                }
                None if alive => match Imported::parse(&record.live_xml) {
                    // Undefined while it ran: keep it as a transient domain.
                    Ok(imp) if !inner.domains.values().any(|d| d.name == imp.domain.name) => {
                        tracing::info!(
                            "re-attached to transient '{}' (vireo-vmm PID {})",
                            imp.domain.name,
                            record.pid
                        );
                        inner.next_id = inner.next_id.max(record.id.saturating_add(1));
                        let pid = record.pid;
                        let paused = record.paused;
                        let serial = Self::resume_serial(&imp.domain.name, &record, &files);
                        inner.domains.insert(
                            uuid,
                            Dom {
                                name: imp.domain.name.clone(),
                                uuid,
                                xml: imp.xml,
                                model: imp.domain,
                                autostart: false,
                                persistent: false,
                                state: if paused {
                                    DomainState::Paused
                                } else {
                                    DomainState::Running
                                },
                                reason: if paused { "user" } else { "booted" }.into(),
                                run: Some(Run {
                                    record,
                                    files,
                                    destroying: false,
                                    serial,
                                }),
                                busy: Arc::default(),
                            },
                        );
                        self.watch_foreign(uuid, pid);
                    }
                    _ => {
                        tracing::warn!(
                            "vireo-vmm PID {} runs a domain that cannot be re-attached",
                            record.pid
                        );
                    }
                },
                _ => {
                    let _ = std::fs::remove_file(files.state());
                }
            }
        }
    }

    /// The serial console of a VMM a previous engine started: its backlog
    /// from the tail of the VMM's serial file, the `<log>` appended to.
    fn resume_serial(name: &str, record: &RunRecord, files: &VmFiles) -> Arc<SerialConsole> {
        let log = Domain::from_xml(&record.live_xml)
            .ok()
            .and_then(|d| d.serial_log().cloned())
            .and_then(
                |l| match crate::serial::open_log(Path::new(&l.file), true) {
                    Ok(f) => Some((f, PathBuf::from(l.file))),
                    Err(e) => {
                        tracing::warn!("domain '{name}': {e}");
                        None
                    }
                },
            );
        let serial =
            SerialConsole::new(name, &files.serial_log(), &files.serial_socket(), log, true)
                .unwrap_or_else(|e| {
                    // The VMM runs on, with input but no output to show.
                    tracing::warn!("domain '{name}': {e}");
                    SerialConsole::without_output(name, &files.serial_socket())
                });
        serial.spawn_follower();
        serial
    }

    /// Starts autostart domains, once per host boot (the runtime directory
    /// is emptied at boot; a marker there remembers it was done).
    pub fn autostart(self: &Arc<Self>) {
        let marker = self.config.paths.runtime_dir.join("autostarted");
        if marker.exists() {
            return;
        }
        let _ = std::fs::write(&marker, b"");
        // Pools first: autostart domains may use their volumes.
        self.pools.autostart();
        let names: Vec<String> = self
            .lock()
            .domains
            .values()
            .filter(|d| d.autostart && !d.state.is_active())
            .map(|d| d.name.clone())
            .collect();
        for name in names {
            let engine = self.clone();
            tokio::spawn(async move {
                match engine.start(&name).await {
                    Ok(_) => tracing::info!("autostarted '{name}'"),
                    Err(e) => tracing::error!("cannot autostart '{name}': {e}"),
                }
            });
        }
    }

    /// Sends statistics of running domains to subscribers periodically.
    pub fn spawn_stats(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        let interval = self.config.stats_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if engine.events.receiver_count() == 0 {
                    continue;
                }
                let running: Vec<String> = engine
                    .lock()
                    .domains
                    .values()
                    .filter(|d| d.state.is_active())
                    .map(|d| d.uuid.to_string())
                    .collect();
                let mut domains = Vec::new();
                for key in running {
                    if let Ok(s) = engine.stats(&key).await {
                        domains.push(s);
                    }
                }
                if !domains.is_empty() {
                    let _ = engine.events.send(Event::Stats { domains });
                }
            }
        });
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, request: Request) -> ApiResult {
        match request {
            Request::Version => Ok(Response::Version {
                engine: env!("CARGO_PKG_VERSION").to_owned(),
            }),
            Request::ListDomains { all } => Ok(self.list(all)),
            Request::Define { xml } => self.define(&xml),
            Request::Undefine {
                domain,
                remove_all_storage,
                remove_storage,
            } => {
                self.undefine(&domain, remove_all_storage, &remove_storage)
                    .await
            }
            Request::DumpXml { domain, inactive } => {
                let inner = self.lock();
                let d = inner.find(&domain)?;
                let xml = match (&d.run, inactive) {
                    (Some(run), false) => run.record.live_xml.clone(),
                    _ => d.xml.clone(),
                };
                Ok(Response::Xml { xml })
            }
            Request::DomInfo { domain } => self.info(&domain).await,
            Request::Start { domain } => self.start(&domain).await,
            Request::Shutdown { domain } => {
                self.command(&domain, "system_powerdown").await?;
                Ok(Response::Done)
            }
            Request::Reboot { domain } | Request::Reset { domain } => {
                self.command(&domain, "system_reset").await?;
                Ok(Response::Done)
            }
            Request::Destroy { domain } => self.destroy(&domain).await,
            Request::Suspend { domain } => self.pause(&domain, true).await,
            Request::Resume { domain } => self.pause(&domain, false).await,
            Request::SetAutostart { domain, enabled } => self.set_autostart(&domain, enabled),
            Request::DomStats { domain } => Ok(Response::Stats {
                stats: self.stats(&domain).await?,
            }),
            Request::Screenshot { domain } => self.screenshot(&domain).await,
            Request::SendKey { domain, keys } => self.send_key(&domain, &keys).await,
            Request::VncDisplay { domain } => {
                let inner = self.lock();
                let d = inner.find(&domain)?;
                let run = d.run.as_ref().ok_or_else(|| {
                    invalid_state("Requested operation is not valid: domain is not running")
                })?;
                let socket = run.files.vnc_socket();
                Ok(Response::VncDisplay {
                    socket: socket
                        .exists()
                        .then(|| socket.to_string_lossy().into_owned()),
                })
            }
            Request::Storage(request) => self.pools.handle(request, Arc::new(|_, _| {})).await,
            Request::OpenConsole { .. } | Request::AttachVnc { .. } => Err(ApiError::new(
                ErrorCode::Unsupported,
                "the console is opened by the connection",
            )),
        }
    }

    fn list(&self, all: bool) -> Response {
        let inner = self.lock();
        let mut domains: Vec<DomainSummary> = inner
            .domains
            .values()
            .filter(|d| all || d.state.is_active())
            .map(Dom::summary)
            .collect();
        domains.sort_by(|a, b| match (a.id, b.id) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.name.cmp(&b.name),
        });
        Response::Domains { domains }
    }

    fn define(&self, xml: &str) -> ApiResult {
        let mut imp = Imported::parse(xml).map_err(|e| {
            let msg = match &e {
                ImportError::Syntax { .. } => e.to_string(),
                // DomainError::Xml already says "invalid domain XML".
                ImportError::Invalid(inner @ vireo_api::domain::DomainError::Xml(_)) => {
                    inner.to_string()
                }
                ImportError::Invalid(inner) => format!("invalid domain XML: {inner}"),
            };
            ApiError::new(ErrorCode::InvalidXml, msg)
        })?;
        let mut inner = self.lock();
        let name = imp.domain.name.clone();
        let by_name = inner
            .domains
            .values()
            .find(|d| d.name == name)
            .map(|d| d.uuid);
        if let Some(uuid) = imp.domain.uuid {
            if let Some(other) = inner.domains.get(&uuid).filter(|d| d.name != name) {
                return Err(ApiError::new(
                    ErrorCode::Exists,
                    format!(
                        "domain '{}' already exists with uuid {uuid}; rename it or remove the \
                         <uuid> element",
                        other.name
                    ),
                ));
            }
            if let Some(existing) = by_name.filter(|u| *u != uuid) {
                return Err(ApiError::new(
                    ErrorCode::Exists,
                    format!("domain '{name}' already exists with uuid {existing}"),
                ));
            }
        }
        let uuid = imp.domain.uuid.or(by_name).unwrap_or_else(Uuid::new_v4);
        imp.ensure_uuid(uuid);
        imp.ensure_macs();
        write_atomic(&self.definition_path(uuid), imp.xml.as_bytes(), 0o600)
            .map_err(|e| internal(e.to_string()))?;
        let dom = inner.domains.entry(uuid).or_insert_with(|| Dom {
            name: name.clone(),
            uuid,
            xml: String::new(),
            model: imp.domain.clone(),
            autostart: false,
            persistent: true,
            state: DomainState::Shutoff,
            reason: "unknown".into(),
            run: None,
            busy: Arc::default(),
        });
        dom.persistent = true;
        dom.xml = imp.xml;
        dom.model = imp.domain;
        self.emit(dom, Lifecycle::Defined);
        Ok(Response::Defined {
            name,
            uuid,
            unsupported: imp.unsupported,
        })
    }

    /// Removes `key`'s definition; with `remove_all` its disk images too,
    /// else the ones `selected` names (by source path or target name).
    async fn undefine(&self, key: &str, remove_all: bool, selected: &[String]) -> ApiResult {
        let busy = self.lock().find(key)?.busy.clone();
        let _guard = busy.lock().await;
        let removed_volumes = self.remove_volumes(key, remove_all, selected).await?;
        let mut inner = self.lock();
        let dom = inner.find(key)?;
        let uuid = dom.uuid;
        // The images of file disks: CD-ROM media and block devices are not
        // the domain's to delete.
        let images = |disk: &vireo_api::domain::Disk| {
            disk.source_path()
                .filter(|_| disk.kind == "file" && disk.device == "disk")
                .map(str::to_owned)
        };
        for wanted in selected {
            let known = dom.model.devices.disks.iter().any(|disk| {
                images(disk).is_some_and(|path| &path == wanted) || disk.target.dev == *wanted
            });
            if !known {
                return Err(invalid_state(format!(
                    "'{wanted}' is not a disk image of domain '{}'",
                    dom.name
                )));
            }
        }
        let remove_storage = remove_all || !selected.is_empty();
        if dom.state.is_active() {
            // libvirt's way: the running domain becomes transient and
            // disappears when it stops; its disks stay while it uses them.
            if remove_storage {
                return Err(invalid_state(format!(
                    "Requested operation is not valid: domain '{}' is running; its storage \
                     cannot be removed",
                    dom.name
                )));
            }
            let path = self.definition_path(uuid);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(internal(format!("cannot remove '{}': {e}", path.display())));
                }
                _ => {}
            }
            let _ = std::fs::remove_file(self.autostart_path(uuid));
            let dom = inner.find_mut(key)?;
            dom.persistent = false;
            dom.autostart = false;
            self.emit(dom, Lifecycle::Undefined);
            return Ok(Response::Undefined {
                removed_storage: Vec::new(),
            });
        }
        let mut removed = removed_volumes;
        if remove_storage {
            for disk in &dom.model.devices.disks {
                let Some(path) = images(disk) else {
                    continue;
                };
                if !remove_all && !selected.iter().any(|s| *s == path || *s == disk.target.dev) {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(internal(format!("cannot remove storage '{path}': {e}")));
                    }
                }
            }
        }
        let path = self.definition_path(uuid);
        std::fs::remove_file(&path)
            .map_err(|e| internal(format!("cannot remove '{}': {e}", path.display())))?;
        let _ = std::fs::remove_file(self.autostart_path(uuid));
        let _ = std::fs::remove_dir_all(self.vm_files(uuid).dir);
        // Deleted images are no longer volumes of their pools.
        self.pools.forget_files(&removed);
        if let Some(dom) = inner.domains.remove(&uuid) {
            self.emit(&dom, Lifecycle::Undefined);
        }
        Ok(Response::Undefined {
            removed_storage: removed,
        })
    }

    async fn info(self: &Arc<Self>, key: &str) -> ApiResult {
        let (summary, model, autostart, persistent, pid) = {
            let inner = self.lock();
            let d = inner.find(key)?;
            let model = match &d.run {
                Some(run) => Domain::from_xml(&run.record.live_xml).unwrap_or(d.model.clone()),
                None => d.model.clone(),
            };
            (
                d.summary(),
                model,
                d.autostart,
                d.persistent,
                d.run.as_ref().map(|r| r.record.pid),
            )
        };
        let cpu_time_ns = if summary.state.is_active() {
            self.stats(key).await.ok().map(|s| s.cpu_time_ns())
        } else {
            None
        };
        let max = model.memory.bytes("memory").unwrap_or(0) / 1024;
        let cur = model.memory_bytes().unwrap_or(0) / 1024;
        Ok(Response::Info {
            info: DomainInfo {
                summary,
                os_type: model.os.os_type.kind.clone(),
                vcpus: model.vcpu.count,
                max_memory_kib: max,
                memory_kib: cur,
                cpu_time_ns,
                persistent,
                autostart,
                pid,
            },
        })
    }

    fn set_autostart(&self, key: &str, enabled: bool) -> ApiResult {
        let mut inner = self.lock();
        let dom = inner.find_mut(key)?;
        if !dom.persistent {
            return Err(invalid_state(format!(
                "Requested operation is not valid: domain '{}' is transient; define it first",
                dom.name
            )));
        }
        let path = self.autostart_path(dom.uuid);
        let result = if enabled {
            write_atomic(&path, b"", 0o600).map_err(|e| e.to_string())
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        };
        result.map_err(internal)?;
        dom.autostart = enabled;
        Ok(Response::Done)
    }

    /// Boots a domain: spawns vireo-vmm in its own process group (so it
    /// outlives the engine) and waits for its control socket.
    pub async fn start(self: &Arc<Self>, key: &str) -> ApiResult {
        let busy = self.lock().find(key)?.busy.clone();
        let _guard = busy.lock().await;
        let (uuid, xml, model, name) = {
            let inner = self.lock();
            let d = inner.find(key)?;
            if d.state.is_active() {
                return Err(invalid_state(format!(
                    "Requested operation is not valid: domain '{}' is already active",
                    d.name
                )));
            }
            (d.uuid, d.xml.clone(), d.model.clone(), d.name.clone())
        };
        let model = self
            .resolve_volumes(model)
            .await
            .map_err(|e| internal(format!("cannot start domain '{name}': {e}")))?;
        let files = self.vm_files(uuid);
        let args = files
            .vmm_args(&model, self.config.vmm_vnc)
            .map_err(|e| ApiError::new(ErrorCode::Unsupported, e))?;
        // A missing or unreadable image is named here, not by a VMM that
        // fails later.
        let checked = model.clone();
        tokio::task::spawn_blocking(move || vmm::check_disks(&checked))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| internal(format!("cannot start domain '{name}': {e}")))?;
        std::fs::create_dir_all(&files.dir)
            .map_err(|e| internal(format!("cannot create '{}': {e}", files.dir.display())))?;
        for stale in [files.control(), files.serial_socket(), files.state()] {
            let _ = std::fs::remove_file(stale);
        }
        let create = |p: &Path| {
            std::fs::File::create(p)
                .map_err(|e| internal(format!("cannot create '{}': {e}", p.display())))
        };
        create(&files.serial_log())?;
        // libvirt refuses to start a domain whose <log> cannot be opened.
        let serial_log = match model.serial_log() {
            Some(l) => Some((
                crate::serial::open_log(Path::new(&l.file), l.appends())
                    .map_err(|e| internal(format!("cannot start domain '{name}': {e}")))?,
                PathBuf::from(&l.file),
            )),
            None => None,
        };
        // Opened before the VMM runs: nothing it prints is missed.
        let serial = SerialConsole::new(
            &name,
            &files.serial_log(),
            &files.serial_socket(),
            serial_log,
            false,
        )
        .map_err(|e| internal(format!("cannot start domain '{name}': {e}")))?;
        let log = create(&files.vmm_log())?;
        let mut cmd = tokio::process::Command::new(&self.config.vmm_binary);
        cmd.args(&args)
            // Its log says how it ended, which a re-attached engine reads.
            .env("VIREO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| internal(e.to_string()))?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            internal(format!(
                "cannot run '{}': {e}",
                self.config.vmm_binary.display()
            ))
        })?;
        let pid = child
            .id()
            .ok_or_else(|| internal("vireo-vmm exited at once"))?;
        // Wait for the control socket, or for the VMM to fail.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::UnixStream::connect(files.control())
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let why = vmm::last_line(&files.vmm_log())
                    .unwrap_or_else(|| format!("vireo-vmm exited with {status}"));
                return Err(internal(format!("cannot start domain '{name}': {why}")));
            }
            if Instant::now() > deadline {
                let _ = vmm::kill(pid);
                let _ = child.wait().await;
                return Err(internal(format!(
                    "cannot start domain '{name}': vireo-vmm did not open its control socket"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The socket opens before the kernel is loaded; `status` is answered
        // once the VM is built, or fails when it cannot be.
        if let Err(e) = vmm::control(&files.control(), "status", Value::Null).await {
            let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(status)) => Some(status),
                _ => {
                    let _ = vmm::kill(pid);
                    let _ = child.wait().await;
                    None
                }
            };
            // A guest may run and power off before `status` is asked: that
            // is a start followed by a stop, not a failure.
            let meaning = status.map(|st| vmm::exit_meaning(Some(st), false, &files.vmm_log()));
            // What it printed still goes to the <log>.
            serial.close();
            if let Some(meaning) = meaning.filter(|m| !m.reason.starts_with("failed")) {
                let mut inner = self.lock();
                if let Some(dom) = inner.domains.get_mut(&uuid) {
                    self.emit(dom, Lifecycle::Started);
                    dom.reason = meaning.reason.clone();
                    let change = if meaning.crashed {
                        dom.state = DomainState::Crashed;
                        Lifecycle::Crashed {
                            reason: meaning.reason,
                        }
                    } else {
                        dom.state = DomainState::Shutoff;
                        Lifecycle::Stopped {
                            reason: meaning.reason,
                        }
                    };
                    self.emit(dom, change);
                }
                return Ok(Response::Done);
            }
            let why = vmm::last_line(&files.vmm_log()).unwrap_or(e);
            return Err(internal(format!("cannot start domain '{name}': {why}")));
        }
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id = inner.next_id.saturating_add(1);
        let record = RunRecord {
            id,
            pid,
            live_xml: xml,
            paused: false,
            started_ms: now_ms(),
        };
        self.persist(&files, &record);
        let dom = inner
            .domains
            .get_mut(&uuid)
            .ok_or_else(|| internal("the domain vanished while starting"))?;
        serial.spawn_follower();
        dom.run = Some(Run {
            record,
            files,
            destroying: false,
            serial,
        });
        dom.state = DomainState::Running;
        dom.reason = "booted".into();
        self.emit(dom, Lifecycle::Started);
        drop(inner);
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            if let Some(engine) = engine.upgrade() {
                engine.vmm_exited(uuid, pid, status);
            }
        });
        Ok(Response::Done)
    }

    /// For `undefine`: deletes the images of `key`'s volume disks (all, or
    /// those whose target `selected` names) through their pools, which
    /// keep their lists true. Nothing is deleted for a running domain or
    /// when `selected` names an unknown disk: `undefine` refuses those.
    async fn remove_volumes(
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
    async fn resolve_volumes(&self, mut model: Domain) -> Result<Domain, String> {
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

    fn persist(&self, files: &VmFiles, record: &RunRecord) {
        match serde_json::to_vec_pretty(record) {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&files.state(), &bytes, 0o600) {
                    tracing::error!("{e}");
                }
            }
            Err(e) => tracing::error!("cannot encode the runtime record: {e}"),
        }
    }

    /// Watches a VMM this engine did not start (after a re-attach).
    fn watch_foreign(self: &Arc<Self>, uuid: Uuid, pid: u32) {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if vmm::is_alive(pid) {
                    continue;
                }
                if let Some(engine) = engine.upgrade() {
                    engine.vmm_exited(uuid, pid, None);
                }
                return;
            }
        });
    }

    /// Records that the VMM `pid` of domain `uuid` exited.
    fn vmm_exited(&self, uuid: Uuid, pid: u32, status: Option<std::process::ExitStatus>) {
        let mut inner = self.lock();
        let Some(dom) = inner.domains.get_mut(&uuid) else {
            return;
        };
        let Some(run) = dom.run.take_if(|r| r.record.pid == pid) else {
            return;
        };
        let meaning = vmm::exit_meaning(status, run.destroying, &run.files.vmm_log());
        // Its last output reaches the backlog's readers and the <log>
        // before anyone hears it stopped.
        run.serial.close();
        for gone in [
            run.files.state(),
            run.files.control(),
            run.files.serial_socket(),
            run.files.vnc_socket(),
        ] {
            let _ = std::fs::remove_file(gone);
        }
        dom.reason = meaning.reason.clone();
        let change = if meaning.crashed {
            dom.state = DomainState::Crashed;
            Lifecycle::Crashed {
                reason: meaning.reason,
            }
        } else {
            dom.state = DomainState::Shutoff;
            Lifecycle::Stopped {
                reason: meaning.reason,
            }
        };
        tracing::info!("domain '{}' stopped: {}", dom.name, dom.reason);
        self.emit(dom, change);
        if !dom.persistent {
            let _ = std::fs::remove_dir_all(&run.files.dir);
            inner.domains.remove(&uuid);
        }
    }

    fn running(&self, key: &str) -> Result<(String, Run), ApiError> {
        let inner = self.lock();
        let d = inner.find(key)?;
        match &d.run {
            Some(run) => Ok((d.name.clone(), run.clone())),
            None => Err(invalid_state(format!(
                "Requested operation is not valid: domain '{}' is not running",
                d.name
            ))),
        }
    }

    async fn command(&self, key: &str, execute: &str) -> Result<Value, ApiError> {
        let (_, run) = self.running(key)?;
        vmm::control(&run.files.control(), execute, Value::Null)
            .await
            .map_err(internal)
    }

    async fn destroy(&self, key: &str) -> ApiResult {
        let busy = self.lock().find(key)?.busy.clone();
        let _guard = busy.lock().await;
        let pid = {
            let mut inner = self.lock();
            let dom = inner.find_mut(key)?;
            let name = dom.name.clone();
            let run = dom.run.as_mut().ok_or_else(|| {
                invalid_state(format!(
                    "Requested operation is not valid: domain '{name}' is not running"
                ))
            })?;
            run.destroying = true;
            run.record.pid
        };
        vmm::kill(pid).map_err(|e| internal(format!("cannot kill vireo-vmm PID {pid}: {e}")))?;
        // Wait until the exit has been recorded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = self
                .lock()
                .find(key)
                .map(|d| d.run.as_ref().is_none_or(|r| r.record.pid != pid))
                .unwrap_or(true);
            if done {
                return Ok(Response::Done);
            }
            if Instant::now() > deadline {
                return Err(internal(format!("vireo-vmm PID {pid} did not exit")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn pause(&self, key: &str, pause: bool) -> ApiResult {
        let busy = self.lock().find(key)?.busy.clone();
        let _guard = busy.lock().await;
        let (name, run) = self.running(key)?;
        let paused = run.record.paused;
        if paused == pause {
            return Err(invalid_state(format!(
                "Requested operation is not valid: domain '{name}' is {}",
                if pause {
                    "already paused"
                } else {
                    "not paused"
                }
            )));
        }
        vmm::control(
            &run.files.control(),
            if pause { "pause" } else { "resume" },
            Value::Null,
        )
        .await
        .map_err(internal)?;
        let mut inner = self.lock();
        let dom = inner.find_mut(key)?;
        if let Some(run) = dom.run.as_mut() {
            run.record.paused = pause;
            let (files, record) = (run.files.clone(), run.record.clone());
            self.persist(&files, &record);
            dom.state = if pause {
                DomainState::Paused
            } else {
                DomainState::Running
            };
            dom.reason = if pause { "user" } else { "unpaused" }.into();
            self.emit(
                dom,
                if pause {
                    Lifecycle::Paused
                } else {
                    Lifecycle::Resumed
                },
            );
        }
        Ok(Response::Done)
    }

    async fn stats(&self, key: &str) -> Result<DomainStats, ApiError> {
        let (name, run) = self.running(key)?;
        let (uuid, state) = {
            let inner = self.lock();
            let d = inner.find(key)?;
            (d.uuid, d.state)
        };
        let v = vmm::control(&run.files.control(), "stats", Value::Null)
            .await
            .map_err(internal)?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let vcpus = v["vcpus"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| VcpuStats {
                        id: n(&c["id"]) as u32,
                        cpu_time_ns: n(&c["cpu_time_ns"]),
                        exits: n(&c["exits"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // vireo-vmm names disks by their index among the `--disk`
        // arguments, which vireod passes in definition order (attached
        // disks only).
        let live = Domain::from_xml(&run.record.live_xml).ok();
        let targets: Vec<String> = live
            .iter()
            .flat_map(|d| d.devices.disks.iter())
            .filter(|d| d.unsupported().is_none())
            .map(|d| d.target.dev.clone())
            .collect();
        let disks = v["disks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let index = n(&s["index"]) as usize;
                        DiskStats {
                            target: targets
                                .get(index)
                                .cloned()
                                .unwrap_or_else(|| format!("disk{index}")),
                            rd_req: n(&s["rd_req"]),
                            rd_bytes: n(&s["rd_bytes"]),
                            wr_req: n(&s["wr_req"]),
                            wr_bytes: n(&s["wr_bytes"]),
                            flush_req: n(&s["flush_req"]),
                            errs: n(&s["errs"]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(DomainStats {
            name,
            uuid,
            state,
            vcpus,
            disks,
            guest_memory_bytes: n(&v["memory"]["guest_bytes"]),
            vram_bytes: n(&v["memory"]["vram_bytes"]),
            rss_bytes: v["memory"]["rss_bytes"].as_u64(),
            timestamp_ms: now_ms(),
        })
    }

    async fn send_key(&self, key: &str, keys: &[u16]) -> ApiResult {
        if keys.is_empty() || keys.len() > 16 {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("send-key takes 1 to 16 keys, not {}", keys.len()),
            ));
        }
        let (_, run) = self.running(key)?;
        let socket = run.files.control();
        let presses = keys.iter().map(|k| (k, true));
        let releases = keys.iter().rev().map(|k| (k, false));
        for (code, down) in presses.chain(releases) {
            vmm::control(
                &socket,
                "key-event",
                json!({ "scancode": code, "down": down }),
            )
            .await
            .map_err(internal)?;
        }
        Ok(Response::Done)
    }

    async fn screenshot(&self, key: &str) -> ApiResult {
        let (_, run) = self.running(key)?;
        let path = run
            .files
            .dir
            .join(format!("screendump-{}.png", Uuid::new_v4()));
        let answer = vmm::control(
            &run.files.control(),
            "screendump",
            json!({ "path": path.to_string_lossy() }),
        )
        .await
        .map_err(internal);
        let png = answer.and_then(|_| {
            std::fs::read(&path).map_err(|e| internal(format!("cannot read the screendump: {e}")))
        });
        let _ = std::fs::remove_file(&path);
        let png = png?;
        let (width, height) = png_size(&png).unwrap_or((0, 0));
        Ok(Response::Screenshot { width, height, png })
    }

    /// The serial console of a running domain.
    pub fn serial_console(&self, key: &str) -> Result<Arc<SerialConsole>, ApiError> {
        Ok(self.running(key)?.1.serial)
    }

    /// The VNC socket of a running domain, when its VMM serves one.
    pub fn vnc_socket(&self, key: &str) -> Result<PathBuf, ApiError> {
        let (name, run) = self.running(key)?;
        let socket = run.files.vnc_socket();
        if socket.exists() {
            Ok(socket)
        } else {
            Err(ApiError::new(
                ErrorCode::Unsupported,
                format!(
                    "domain '{name}' has no VNC display (no <graphics type='vnc'>, or this vireo-vmm does not serve VNC)"
                ),
            ))
        }
    }
}

/// Width and height from a PNG's IHDR.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}
