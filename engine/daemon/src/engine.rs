//! The engine: domain definitions, their states, and the VMMs that run them.
//!
//! Definitions live in `STATE/domains/UUID.xml` (the document as the user
//! gave it, plus a generated `<uuid>` when it had none) and autostart marks
//! in `STATE/autostart/UUID`. Running domains have a directory under
//! `RUNTIME/vms/` (see [`crate::vmm`]). Every change is announced on a
//! broadcast channel that connections forward to subscribed clients.
//!
//! Here: the state and its lookups, the request dispatch, listing, info
//! and periodic stats. `definitions.rs`: loading, `define`, `undefine`,
//! autostart marks; `lifecycle.rs`: autostart, `start`, the VMM's exit,
//! `destroy`, pause/resume; `reattach.rs`: VMMs a previous engine started;
//! `volumes.rs`: volume disks through the pools; `control.rs`: requests the
//! running VMM answers (monitor commands, stats, keys, screenshots).

mod control;
mod definitions;
mod lifecycle;
mod reattach;
mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use uuid::Uuid;
use vireo_api::Domain;
use vireo_api::proto::{
    ApiError, DomainInfo, DomainState, DomainSummary, ErrorCode, Event, Lifecycle, Request,
    Response,
};

use crate::paths::EnginePaths;
use crate::serial::SerialConsole;
use crate::vmm::{RunRecord, VmFiles};

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
