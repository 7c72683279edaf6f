//! The app's connection to the local session engine, started on demand as
//! `vireoctl` does. Everything here runs on relm4's tokio runtime, never on
//! the GTK thread.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::uri::Scope;
use vireod::paths::EnginePaths;

/// How long to wait for an engine started on demand.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The vireod binary: next to the app, else from PATH.
fn vireod_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vireod")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("vireod"))
}

/// Connects to the session engine with events on, starting it first when
/// no engine answers. Errors are plain English; the window translates the
/// headline and shows this text as the details.
pub async fn connect_session() -> Result<(AsyncClient, UnboundedReceiver<Incoming>), String> {
    let paths = EnginePaths::for_scope(Scope::Session, |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let socket = paths.socket();
    let client = format!("vireo {}", env!("CARGO_PKG_VERSION"));
    if let Ok(c) = AsyncClient::connect_unix(&socket, &client, true).await {
        return Ok(c);
    }
    std::fs::create_dir_all(&paths.runtime_dir)
        .map_err(|e| format!("cannot create '{}': {e}", paths.runtime_dir.display()))?;
    let log_path = paths.runtime_dir.join("vireod.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open '{}': {e}", log_path.display()))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("cannot open '{}': {e}", log_path.display()))?;
    let binary = vireod_binary();
    let mut cmd = Command::new(&binary);
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .current_dir("/");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .map_err(|e| format!("cannot start the engine '{}': {e}", binary.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match AsyncClient::connect_unix(&socket, &client, true).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "the engine did not start within {} s ({e}); see {}",
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Opens `domain`'s graphical console: a fresh engine connection upgraded
/// to the domain's VNC stream, decoded by a console session.
pub async fn open_console(
    domain: &str,
) -> Result<
    (
        vireo_console::Session,
        UnboundedReceiver<vireo_console::ConsoleEvent>,
    ),
    String,
> {
    let paths = EnginePaths::for_scope(Scope::Session, |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let stream = tokio::net::UnixStream::connect(paths.socket())
        .await
        .map_err(|e| format!("cannot reach the engine: {e}"))?;
    let client = format!("vireo {}", env!("CARGO_PKG_VERSION"));
    let stream = vireo_api::client::attach_vnc(stream, &client, domain)
        .await
        .map_err(|e| e.to_string())?;
    vireo_console::Session::connect(stream, None)
        .await
        .map_err(|e| e.to_string())
}
