//! The pool `default`: defined, built, started and marked autostart the
//! first time storage is used (see the parent module).

use std::path::Path;

use vireo_api::proto::ApiError;
use vireo_api::storage::PoolDef;

use super::{Pools, internal};
use crate::state::write_atomic;

impl Pools {
    /// Defines, builds and starts `default` the first time storage is used.
    pub(super) fn ensure_default(&self) {
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
}
