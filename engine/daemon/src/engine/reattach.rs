//! VMMs a previous engine started: found again from their runtime
//! records, their serial consoles resumed, their exits watched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use vireo_api::Domain;
use vireo_api::import::Imported;
use vireo_api::proto::DomainState;

use super::{Dom, Engine, Run};
use crate::serial::SerialConsole;
use crate::vmm::{self, RunRecord, VmFiles};

impl Engine {
    /// Finds VMMs left running by a previous engine and watches them again.
    pub(super) fn reattach(self: &Arc<Self>) {
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
                    // It ended while no engine ran: what it printed after
                    // the last engine's last `<log>` write still goes there.
                    if !alive {
                        let name = Domain::from_xml(&record.live_xml)
                            .map_or_else(|_| uuid.to_string(), |d| d.name);
                        Self::resumed_serial(&name, &record, &files).close();
                    }
                    let _ = std::fs::remove_file(files.state());
                }
            }
        }
    }

    /// The serial console of a VMM a previous engine started: its backlog
    /// from the tail of the VMM's serial file, the `<log>` appended to.
    fn resume_serial(name: &str, record: &RunRecord, files: &VmFiles) -> Arc<SerialConsole> {
        let serial = Self::resumed_serial(name, record, files);
        serial.spawn_follower();
        serial
    }

    /// The same, not followed yet.
    fn resumed_serial(name: &str, record: &RunRecord, files: &VmFiles) -> Arc<SerialConsole> {
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
        SerialConsole::new(name, &files.serial_log(), &files.serial_socket(), log, true)
            .unwrap_or_else(|e| {
                // The VMM runs on, with input but no output to show.
                tracing::warn!("domain '{name}': {e}");
                SerialConsole::without_output(name, &files.serial_socket())
            })
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
}
