//! Where an engine lives on the host.
//!
//! | engine  | runtime (sockets, PIDs)      | state (definitions, images) |
//! |---------|------------------------------|-----------------------------|
//! | session | `$XDG_RUNTIME_DIR/vireo`     | `$XDG_DATA_HOME/vireo`      |
//! | system  | `/run/vireo`                 | `/var/lib/vireo`            |

use std::path::PathBuf;

use vireo_api::uri::Scope;

/// The directories of one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnginePaths {
    /// Sockets and runtime state; gone at reboot.
    pub runtime_dir: PathBuf,
    /// Persistent state.
    pub state_dir: PathBuf,
}

/// Why an engine's directories cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathsError {
    /// Neither `XDG_RUNTIME_DIR` nor a usable fallback.
    #[error("XDG_RUNTIME_DIR is not set; the session engine needs a per-user runtime directory")]
    NoRuntimeDir,
    /// Neither `XDG_DATA_HOME` nor `HOME`.
    #[error("neither XDG_DATA_HOME nor HOME is set; the session engine needs a data directory")]
    NoDataDir,
    /// An XDG variable holds a relative path, which the spec says to ignore.
    #[error("{0} must be an absolute path")]
    Relative(&'static str),
}

impl EnginePaths {
    /// The directories for `scope`, reading the XDG variables through `env`
    /// (so tests need not touch the process environment).
    pub fn for_scope(
        scope: Scope,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, PathsError> {
        match scope {
            Scope::System => Ok(Self {
                runtime_dir: PathBuf::from("/run/vireo"),
                state_dir: PathBuf::from("/var/lib/vireo"),
            }),
            Scope::Session => {
                let abs = |var: &'static str| -> Result<Option<PathBuf>, PathsError> {
                    match env(var).filter(|v| !v.is_empty()) {
                        None => Ok(None),
                        Some(v) if v.starts_with('/') => Ok(Some(PathBuf::from(v))),
                        Some(_) => Err(PathsError::Relative(var)),
                    }
                };
                let runtime = abs("XDG_RUNTIME_DIR")?.ok_or(PathsError::NoRuntimeDir)?;
                let data = match abs("XDG_DATA_HOME")? {
                    Some(d) => d,
                    None => abs("HOME")?
                        .ok_or(PathsError::NoDataDir)?
                        .join(".local/share"),
                };
                Ok(Self {
                    runtime_dir: runtime.join("vireo"),
                    state_dir: data.join("vireo"),
                })
            }
        }
    }

    /// The engine's API socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("vireod.sock")
    }

    /// Where domain definitions are kept, one XML file each.
    pub fn domains_dir(&self) -> PathBuf {
        self.state_dir.join("domains")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn session_uses_xdg_dirs() {
        let p = EnginePaths::for_scope(
            Scope::Session,
            env(&[
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("XDG_DATA_HOME", "/d"),
            ]),
        )
        .unwrap();
        assert_eq!(
            p.socket(),
            PathBuf::from("/run/user/1000/vireo/vireod.sock")
        );
        assert_eq!(p.domains_dir(), PathBuf::from("/d/vireo/domains"));
    }

    #[test]
    fn session_data_falls_back_to_home() {
        let p = EnginePaths::for_scope(
            Scope::Session,
            env(&[("XDG_RUNTIME_DIR", "/r"), ("HOME", "/home/a")]),
        )
        .unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/home/a/.local/share/vireo"));
    }

    #[test]
    fn session_without_runtime_dir_or_with_relative_paths_is_an_error() {
        assert_eq!(
            EnginePaths::for_scope(Scope::Session, env(&[("HOME", "/h")])),
            Err(PathsError::NoRuntimeDir)
        );
        assert_eq!(
            EnginePaths::for_scope(Scope::Session, env(&[("XDG_RUNTIME_DIR", "run")])),
            Err(PathsError::Relative("XDG_RUNTIME_DIR"))
        );
    }

    #[test]
    fn system_paths_are_fixed() {
        let p = EnginePaths::for_scope(Scope::System, env(&[])).unwrap();
        assert_eq!(p.socket(), PathBuf::from("/run/vireo/vireod.sock"));
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/vireo"));
    }
}
