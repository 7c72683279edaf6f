//! `vireoctl`: the virsh-style command line for Vireo engines.

mod connect;
mod console;
mod keys;
mod output;
mod remote;
mod storage;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vireo_api::ConnectUri;
use vireo_api::proto::{Request, Response};

use crate::connect::Connection;

/// Manage virtual machines on a Vireo engine, virsh-style.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Connection URI (vireo:///session, vireo:///system,
    /// vireo+ssh://[user@]host[:port]/system or /session, honouring
    /// ~/.ssh/config; ?socket=/path names the remote engine's socket).
    /// Defaults to $VIREO_DEFAULT_URI, then vireo:///session.
    #[arg(short = 'c', long = "connect", global = true, value_name = "URI")]
    connect: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the canonical URI of the connection.
    Uri,
    /// Print the client and engine versions.
    Version,
    /// Define (but don't start) a domain from an XML file ('-' reads stdin).
    Define {
        /// The XML file, or '-' for stdin.
        file: String,
    },
    /// Undefine a domain.
    Undefine {
        /// Domain name or UUID.
        domain: String,
        /// Also delete the disk images the domain uses (not CD-ROM media or
        /// block devices); refused while the domain runs.
        #[arg(long)]
        remove_all_storage: bool,
        /// Delete these disk images: a comma-separated list of targets or
        /// source paths (see domblklist).
        #[arg(long, value_delimiter = ',')]
        storage: Vec<String>,
    },
    /// List the domain's block devices.
    Domblklist {
        /// Domain name or UUID.
        domain: String,
        /// The persistent definition, even while the domain runs.
        #[arg(long)]
        inactive: bool,
        /// Also the disk type and device.
        #[arg(long)]
        details: bool,
    },
    /// Print the domain's XML.
    Dumpxml {
        /// Domain name or UUID.
        domain: String,
        /// The persistent definition, even while the domain runs.
        #[arg(long)]
        inactive: bool,
    },
    /// Edit the domain's XML in $EDITOR; it is validated before it is saved.
    Edit {
        /// Domain name or UUID.
        domain: String,
    },
    /// List domains.
    List {
        /// Include inactive domains.
        #[arg(long)]
        all: bool,
        /// Only inactive domains.
        #[arg(long)]
        inactive: bool,
        /// Print only names.
        #[arg(long)]
        name: bool,
    },
    /// Domain information.
    Dominfo {
        /// Domain name or UUID.
        domain: String,
    },
    /// Domain state.
    Domstate {
        /// Domain name or UUID.
        domain: String,
        /// Also print why.
        #[arg(long)]
        reason: bool,
    },
    /// Start a (previously defined) inactive domain.
    Start {
        /// Domain name or UUID.
        domain: String,
        /// Attach to the serial console after starting.
        #[arg(long)]
        console: bool,
    },
    /// Gracefully shut down a domain (ACPI power button).
    Shutdown {
        /// Domain name or UUID.
        domain: String,
    },
    /// Reboot a domain (a machine reset in vireo-vmm).
    Reboot {
        /// Domain name or UUID.
        domain: String,
    },
    /// Reset a domain at once.
    Reset {
        /// Domain name or UUID.
        domain: String,
    },
    /// Stop a domain at once.
    Destroy {
        /// Domain name or UUID.
        domain: String,
    },
    /// Suspend (pause) a domain.
    Suspend {
        /// Domain name or UUID.
        domain: String,
    },
    /// Resume a suspended domain.
    Resume {
        /// Domain name or UUID.
        domain: String,
    },
    /// Start the domain when the engine starts.
    Autostart {
        /// Domain name or UUID.
        domain: String,
        /// Turn autostart off.
        #[arg(long)]
        disable: bool,
    },
    /// Domain statistics.
    Domstats {
        /// Domain names or UUIDs (default: all active domains).
        domains: Vec<String>,
    },
    /// Domain CPU statistics.
    #[command(name = "cpu-stats")]
    CpuStats {
        /// Domain name or UUID.
        domain: String,
    },
    /// Block device I/O statistics (all disks summed without DEVICE).
    Domblkstat {
        /// Domain name or UUID.
        domain: String,
        /// The disk's target device, e.g. vda.
        device: Option<String>,
    },
    /// Domain memory statistics.
    Dommemstat {
        /// Domain name or UUID.
        domain: String,
    },
    /// Send keys to the domain: pressed together, then released. Keys are
    /// Linux key codes, as numbers or KEY_* names (e.g. KEY_LEFTCTRL
    /// KEY_LEFTALT KEY_DELETE).
    #[command(name = "send-key")]
    SendKey {
        /// Domain name or UUID.
        domain: String,
        /// Only `linux` is supported.
        #[arg(long, default_value = "linux")]
        codeset: String,
        /// The keys.
        #[arg(required = true)]
        keycode: Vec<String>,
    },
    /// Where the domain's VNC display is served.
    Vncdisplay {
        /// Domain name or UUID.
        domain: String,
    },
    /// Attach to the domain's serial console (Ctrl+] detaches): what it
    /// printed since the domain started (the newest 64 KiB), then live.
    /// One such session at a time, as virsh's; the app's VM windows only
    /// watch while it is open.
    Console {
        /// Domain name or UUID.
        domain: String,
        /// End the console session another client holds and take it over.
        #[arg(long)]
        force: bool,
    },
    /// Save the domain's screen as a PNG file.
    Screenshot {
        /// Domain name or UUID.
        domain: String,
        /// The file (default: NAME-SECONDS.png).
        file: Option<PathBuf>,
        /// The file, as virsh spells it.
        #[arg(long = "file", conflicts_with = "file")]
        file_flag: Option<PathBuf>,
    },
    #[command(flatten)]
    Storage(storage::StorageCommand),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env_uri = std::env::var("VIREO_DEFAULT_URI").ok();
    let uri = match ConnectUri::resolve(args.connect.as_deref(), env_uri.as_deref()) {
        Ok(uri) => uri,
        Err(e) => {
            eprintln!("error: failed to connect to the hypervisor\nerror: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&uri, args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(uri: &ConnectUri, command: Command) -> Result<(), String> {
    if let Command::Uri = command {
        println!("{uri}");
        return Ok(());
    }
    let mut conn = Connection::open(uri)?;
    let client_version = env!("CARGO_PKG_VERSION");
    match command {
        Command::Uri => unreachable!("handled above"),
        Command::Storage(command) => storage::run(&mut conn, command)?,
        Command::Version => {
            println!("Compiled against library: vireo {client_version}");
            println!("Using library: vireo {client_version}");
            println!("Running against daemon: {}", conn.engine_version());
        }
        Command::Define { file } => {
            let xml = if file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                s
            } else {
                std::fs::read_to_string(&file).map_err(|e| format!("cannot read '{file}': {e}"))?
            };
            let Response::Defined {
                name, unsupported, ..
            } = conn.call(Request::Define { xml })?
            else {
                return Err("unexpected answer".into());
            };
            warn_unsupported(&unsupported);
            let from = if file == "-" { "standard input" } else { &file };
            println!("Domain '{name}' defined from {from}\n");
        }
        Command::Undefine {
            domain,
            remove_all_storage,
            storage,
        } => {
            let name = conn.name_of(&domain)?;
            // Targets for virsh's "Volume 'vda'(/path) removed." lines.
            let disks = vireo_api::Domain::from_xml(&conn.xml(&domain, true)?)
                .map(|d| d.devices.disks)
                .unwrap_or_default();
            if let Response::Undefined { removed_storage } = conn.call(Request::Undefine {
                domain,
                remove_all_storage,
                remove_storage: storage,
            })? {
                println!("Domain '{name}' has been undefined");
                for path in removed_storage {
                    let target = disks
                        .iter()
                        .find(|d| {
                            d.source_path() == Some(path.as_str())
                                || d.volume().is_some_and(|(_, v)| {
                                    std::path::Path::new(&path).file_name()
                                        == Some(std::ffi::OsStr::new(v))
                                })
                        })
                        .map_or("-", |d| d.target.dev.as_str());
                    println!("Volume '{target}'({path}) removed.");
                }
                println!();
            }
        }
        Command::Domblklist {
            domain,
            inactive,
            details,
        } => {
            let xml = conn.xml(&domain, inactive)?;
            let parsed = vireo_api::Domain::from_xml(&xml)
                .map_err(|e| format!("cannot read the domain's XML: {e}"))?;
            print!("{}", output::domblklist(&parsed.devices.disks, details));
        }
        Command::Dumpxml { domain, inactive } => {
            let xml = conn.xml(&domain, inactive)?;
            print!("{xml}");
            if !xml.ends_with('\n') {
                println!();
            }
        }
        Command::Edit { domain } => edit(&mut conn, &domain)?,
        Command::List {
            all,
            inactive,
            name,
        } => {
            let Response::Domains { domains } = conn.call(Request::ListDomains {
                all: all || inactive,
            })?
            else {
                return Err("unexpected answer".into());
            };
            let domains: Vec<_> = domains
                .into_iter()
                .filter(|d| !inactive || !d.state.is_active())
                .collect();
            if name {
                for d in &domains {
                    println!("{}", d.name);
                }
                println!();
            } else {
                print!("{}", output::list_table(&domains));
            }
        }
        Command::Dominfo { domain } => {
            let info = conn.info(&domain)?;
            print!("{}", output::dominfo(&info));
        }
        Command::Domstate { domain, reason } => {
            let info = conn.info(&domain)?;
            let s = &info.summary;
            if reason {
                println!("{} ({})\n", s.state.as_virsh(), s.reason);
            } else {
                println!("{}\n", s.state.as_virsh());
            }
        }
        Command::Start { domain, console } => {
            let name = conn.name_of(&domain)?;
            conn.call(Request::Start {
                domain: domain.clone(),
            })?;
            println!("Domain '{name}' started\n");
            if console {
                return console::attach(conn, &domain, &name, false);
            }
        }
        Command::Shutdown { domain } => {
            simple(&mut conn, &domain, "is being shutdown", |domain| {
                Request::Shutdown { domain }
            })?
        }
        Command::Reboot { domain } => simple(&mut conn, &domain, "is being rebooted", |domain| {
            Request::Reboot { domain }
        })?,
        Command::Reset { domain } => simple(&mut conn, &domain, "was reset", |domain| {
            Request::Reset { domain }
        })?,
        Command::Destroy { domain } => simple(&mut conn, &domain, "destroyed", |domain| {
            Request::Destroy { domain }
        })?,
        Command::Suspend { domain } => simple(&mut conn, &domain, "suspended", |domain| {
            Request::Suspend { domain }
        })?,
        Command::Resume { domain } => simple(&mut conn, &domain, "resumed", |domain| {
            Request::Resume { domain }
        })?,
        Command::Autostart { domain, disable } => {
            let name = conn.name_of(&domain)?;
            conn.call(Request::SetAutostart {
                domain,
                enabled: !disable,
            })?;
            if disable {
                println!("Domain '{name}' unmarked as autostarted\n");
            } else {
                println!("Domain '{name}' marked as autostarted\n");
            }
        }
        Command::Domstats { domains } => {
            let domains = if domains.is_empty() {
                let Response::Domains { domains } =
                    conn.call(Request::ListDomains { all: false })?
                else {
                    return Err("unexpected answer".into());
                };
                domains.into_iter().map(|d| d.name).collect()
            } else {
                domains
            };
            for domain in domains {
                let info = conn.info(&domain)?;
                let stats = if info.summary.state.is_active() {
                    Some(conn.stats(&domain)?)
                } else {
                    None
                };
                print!("{}", output::domstats(&info, stats.as_ref()));
            }
        }
        Command::CpuStats { domain } => {
            let stats = conn.stats(&domain)?;
            print!("{}", output::cpu_stats(&stats));
        }
        Command::Domblkstat { domain, device } => {
            let stats = conn.stats(&domain)?;
            let disks = match device {
                Some(_) => {
                    let xml = conn.xml(&domain, false)?;
                    vireo_api::Domain::from_xml(&xml)
                        .map_err(|e| format!("cannot read the domain's XML: {e}"))?
                        .devices
                        .disks
                }
                None => Vec::new(),
            };
            print!("{}", output::domblkstat(&stats, device.as_deref(), &disks)?);
        }
        Command::Dommemstat { domain } => {
            let info = conn.info(&domain)?;
            let stats = conn.stats(&domain)?;
            print!("{}", output::dommemstat(&info, &stats));
        }
        Command::SendKey {
            domain,
            codeset,
            keycode,
        } => {
            if codeset != "linux" {
                return Err(format!("unsupported codeset '{codeset}' (only 'linux')"));
            }
            let keys = keycode
                .iter()
                .map(|k| keys::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            conn.call(Request::SendKey { domain, keys })?;
            println!();
        }
        Command::Vncdisplay { domain } => {
            let Response::VncDisplay { socket } = conn.call(Request::VncDisplay { domain })? else {
                return Err("unexpected answer".into());
            };
            match socket {
                Some(path) => println!("unix:{path}\n"),
                None => {
                    return Err(
                        "Failed to get the VNC display: vireo-vmm does not serve VNC for this \
                         domain yet"
                            .into(),
                    );
                }
            }
        }
        Command::Console { domain, force } => {
            let summary = conn.info(&domain)?.summary;
            // virsh checks this before its banner; other refusals (a busy
            // console) come after it.
            if summary.state == vireo_api::proto::DomainState::Shutoff {
                return Err("The domain is not running".into());
            }
            return console::attach(conn, &domain, &summary.name, force);
        }
        Command::Screenshot {
            domain,
            file,
            file_flag,
        } => {
            let name = conn.name_of(&domain)?;
            let Response::Screenshot { png, .. } = conn.call(Request::Screenshot { domain })?
            else {
                return Err("unexpected answer".into());
            };
            let file = file.or(file_flag).unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from(format!("{name}-{secs}.png"))
            });
            std::fs::write(&file, &png)
                .map_err(|e| format!("cannot write '{}': {e}", file.display()))?;
            println!(
                "Screenshot saved to {}, with type of image/png\n",
                file.display()
            );
        }
    }
    Ok(())
}

fn warn_unsupported(paths: &[String]) {
    if !paths.is_empty() {
        eprintln!(
            "warning: kept in the definition but not used by Vireo: {}",
            paths.join(", ")
        );
    }
}

fn simple(
    conn: &mut Connection,
    domain: &str,
    done: &str,
    request: impl FnOnce(String) -> Request,
) -> Result<(), String> {
    let name = conn.name_of(domain)?;
    conn.call(request(domain.to_owned()))?;
    println!("Domain '{name}' {done}\n");
    Ok(())
}

/// `edit`: the persistent XML in $VISUAL/$EDITOR, redefined only when it
/// changed and only if the engine accepts it.
fn edit(conn: &mut Connection, domain: &str) -> Result<(), String> {
    let name = conn.name_of(domain)?;
    let original = conn.xml(domain, true)?;
    let path = std::env::temp_dir().join(format!(
        "vireoctl-{}-{}.xml",
        std::process::id(),
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::write(&path, &original)
        .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_owned());
    let result = (|| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&path)
            .status()
            .map_err(|e| format!("cannot run the editor '{editor}': {e}"))?;
        if !status.success() {
            return Err(format!("the editor '{editor}' failed ({status})"));
        }
        let edited = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
        if edited == original {
            println!("Domain '{name}' XML configuration not changed.\n");
            return Ok(());
        }
        let Response::Defined { unsupported, .. } = conn.call(Request::Define { xml: edited })?
        else {
            return Err("unexpected answer".into());
        };
        warn_unsupported(&unsupported);
        println!("Domain '{name}' XML configuration edited.\n");
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}
