//! Domain definitions: loading them at start, `define`, `undefine`
//! (with the disk images it removes), autostart marks.

use std::sync::Arc;

use uuid::Uuid;
use vireo_api::import::{ImportError, Imported};
use vireo_api::proto::{ApiError, DomainState, ErrorCode, Lifecycle, Response};

use super::{ApiResult, Dom, Engine, internal, invalid_state};
use crate::state::write_atomic;

impl Engine {
    pub(super) fn load_definitions(&self) -> Result<(), String> {
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

    pub(super) fn define(&self, xml: &str) -> ApiResult {
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
    pub(super) async fn undefine(
        &self,
        key: &str,
        remove_all: bool,
        selected: &[String],
    ) -> ApiResult {
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

    pub(super) fn set_autostart(&self, key: &str, enabled: bool) -> ApiResult {
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
}
