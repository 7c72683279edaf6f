//! `vireod`: the Vireo host engine.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vireo_api::uri::Scope;
use vireod::engine::{Config, Engine};
use vireod::paths::EnginePaths;

/// Vireo's host engine: keeps domain definitions and runs one vireo-vmm per
/// running VM.
///
/// The session engine is normally started on demand by the first client
/// (vireoctl, the app). Stopping or restarting it never stops running VMs:
/// the next engine re-attaches to them.
#[derive(Debug, Parser)]
#[command(version, about, verbatim_doc_comment)]
struct Args {
    /// Run the host-wide engine (/run/vireo, /var/lib/vireo) instead of the
    /// calling user's session engine.
    #[arg(long)]
    system: bool,
    /// Print the engine's socket and state directory, then exit.
    #[arg(long)]
    print_paths: bool,
    /// The vireo-vmm binary (default: next to vireod, else from PATH).
    #[arg(long, value_name = "PATH")]
    vmm: Option<PathBuf>,
    /// How often running domains' statistics are pushed to clients.
    #[arg(
        long,
        default_value_t = 1000,
        value_name = "MS",
        env = "VIREO_STATS_INTERVAL_MS"
    )]
    stats_interval_ms: u64,
}

fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vireo-vmm")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("vireo-vmm"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let scope = if args.system {
        Scope::System
    } else {
        Scope::Session
    };
    let paths = match EnginePaths::for_scope(scope, |k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vireod: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_paths {
        println!("socket: {}", paths.socket().display());
        println!("state: {}", paths.state_dir.display());
        return ExitCode::SUCCESS;
    }
    match run(args, scope, paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vireod: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the engine lock: one engine per runtime directory. Returns
/// `Ok(None)` when another engine holds it.
fn lock(paths: &EnginePaths) -> Result<Option<std::fs::File>, String> {
    let path = paths.runtime_dir.join("vireod.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(file))
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(format!("cannot lock '{}': {e}", path.display()))
        }
    }
}

/// A group's id from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

fn run(args: Args, scope: Scope, paths: EnginePaths) -> Result<(), String> {
    for dir in [&paths.runtime_dir, &paths.state_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create '{}': {e}", dir.display()))?;
    }
    if scope == Scope::Session {
        let _ =
            std::fs::set_permissions(&paths.runtime_dir, std::fs::Permissions::from_mode(0o700));
    }
    let Some(_lock) = lock(&paths)? else {
        eprintln!(
            "vireod: another engine already serves '{}'",
            paths.socket().display()
        );
        return Ok(());
    };
    let pid_file = paths.runtime_dir.join("vireod.pid");
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let vmm_binary = args.vmm.unwrap_or_else(default_vmm);
        let config = Config {
            paths: paths.clone(),
            vmm_vnc: vireod::vmm::vmm_serves_vnc(&vmm_binary),
            vmm_binary,
            stats_interval: Duration::from_millis(args.stats_interval_ms.max(50)),
        };
        let engine = Engine::load(config)?;
        let socket = paths.socket();
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|e| format!("cannot listen on '{}': {e}", socket.display()))?;
        // The session socket is the user's alone; the system one is for
        // group vireo when that group exists.
        let mode = if scope == Scope::Session {
            0o600
        } else {
            0o660
        };
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode));
        if scope == Scope::System {
            match group_id("vireo") {
                Some(gid) => {
                    if let Err(e) = std::os::unix::fs::chown(&socket, None, Some(gid)) {
                        tracing::warn!("cannot give '{}' to group vireo: {e}", socket.display());
                    }
                }
                None => tracing::warn!("group vireo does not exist; only root can connect"),
            }
        }
        tracing::info!("serving {}", socket.display());
        engine.autostart();
        engine.spawn_stats();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            () = vireod::server::serve(listener, engine) => {}
            _ = term.recv() => tracing::info!("terminating; running VMs keep running"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; running VMs keep running"),
        }
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&pid_file);
        Ok::<(), String>(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}
