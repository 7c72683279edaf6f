//! Starting the session engine on demand, for its clients (`vireoctl`, the
//! app): the engine runs detached, in its own process group, logging to
//! `RUNTIME/vireod.log`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::paths::EnginePaths;

/// How long a client waits for an engine it started.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The vireod binary: next to the calling program, else from PATH.
pub fn vireod_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vireod")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("vireod"))
}

/// Starts the engine for `paths`, detached; returns its log file. The
/// caller then connects, retrying until [`START_TIMEOUT`].
pub fn spawn_engine(paths: &EnginePaths) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&paths.runtime_dir)
        .map_err(|e| format!("cannot create '{}': {e}", paths.runtime_dir.display()))?;
    let log_path = paths.runtime_dir.join("vireod.log");
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open '{}': {e}", log_path.display()))
    };
    let binary = vireod_binary();
    Command::new(&binary)
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?)
        // Hold no directory of the caller's busy.
        .current_dir("/")
        // Its own process group: a Ctrl+C aimed at the client must not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the engine '{}': {e}", binary.display()))?;
    Ok(log_path)
}
