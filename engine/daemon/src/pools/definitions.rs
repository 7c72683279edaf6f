//! Pool definitions and life cycle: `pool-define`, `pool-start`,
//! `pool-refresh`, `pool-destroy`, `pool-undefine`, `pool-autostart`, and
//! starting autostart pools at engine start.

use std::collections::BTreeMap;

use uuid::Uuid;
use vireo_api::proto::{ApiError, ErrorCode, Response};
use vireo_api::storage::PoolDef;

use super::{ApiResult, Pool, Pools, internal, invalid_state, scan};
use crate::state::write_atomic;

impl Pools {
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

    pub(super) fn define(&self, xml: &str) -> ApiResult {
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

    pub(super) fn start(&self, key: &str) -> ApiResult {
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

    pub(super) fn refresh(&self, key: &str) -> ApiResult {
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

    pub(super) fn destroy(&self, key: &str) -> ApiResult {
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

    pub(super) fn undefine(&self, key: &str) -> ApiResult {
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

    pub(super) fn set_autostart(&self, key: &str, enabled: bool) -> ApiResult {
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
}
