//! Running domains: autostart, `start` (spawning vireo-vmm), the VMM's
//! exit, `destroy`, pause and resume.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;
use vireo_api::proto::{ApiError, DomainState, ErrorCode, Lifecycle, Response};

use super::{ApiResult, Engine, Run, internal, invalid_state, now_ms};
use crate::serial::SerialConsole;
use crate::state::write_atomic;
use crate::vmm::{self, RunRecord, VmFiles};

impl Engine {
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

    /// Records that the VMM `pid` of domain `uuid` exited.
    pub(super) fn vmm_exited(
        &self,
        uuid: Uuid,
        pid: u32,
        status: Option<std::process::ExitStatus>,
    ) {
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

    pub(super) async fn destroy(&self, key: &str) -> ApiResult {
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

    pub(super) async fn pause(&self, key: &str, pause: bool) -> ApiResult {
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
}
