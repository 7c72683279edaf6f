//! `vireo-vmm`: runs one virtual machine. Normally started by `vireod`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, mpsc};

use clap::Parser;
use vireo_vmm::boot::KernelConfig;
use vireo_vmm::control;
use vireo_vmm::devices::cmos::Cmos;
use vireo_vmm::devices::serial::{SERIAL_FILE_CAP, SERIAL_FILE_KEEP, SerialSink, Trim, feed_input};
use vireo_vmm::devices::virtio::block::DiskConfig;
use vireo_vmm::logfile::{LOG_FILE_CAP, LOG_FILE_KEEP, LogFile, StderrLog};
use vireo_vmm::machine::{CurrentSerial, Event, Machine};
use vireo_vmm::memory::ram_ranges;
use vireo_vmm::vm::{Persistent, ReboundIrq, VmConfig};
use vireo_vmm::vnc::{self, Display};

/// Runs one Vireo virtual machine on /dev/kvm.
///
/// Boots a kernel directly: an ELF vmlinux (entered in 64-bit mode), an ELF
/// with a PVH note (entered through PVH) or a bzImage. Example:
///
///   vireo-vmm --kernel vmlinux --cmdline "console=ttyS0" --memory 512 --cpus 2
///       --serial-log /tmp/vm.log --control-socket /tmp/vm.ctl
///
/// Exit status: 0 when the guest powers off or `quit` is sent, 1 when the VM
/// cannot start, 3 when the guest crashes, (v << 1) | 1 when the guest
/// writes v to isa-debug-exit (port 0xf4).
#[derive(Debug, Parser)]
#[command(version, about, verbatim_doc_comment)]
struct Args {
    /// Check that this host's KVM has what the VMM needs, and exit.
    #[arg(long)]
    check_kvm: bool,
    /// The kernel to boot.
    #[arg(long, required_unless_present = "check_kvm")]
    kernel: Option<PathBuf>,
    /// An initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Append COM1 output to this file.
    #[arg(long)]
    serial_log: Option<PathBuf>,
    /// Listen here for console clients (COM1 in and out, raw bytes).
    #[arg(long)]
    serial_socket: Option<PathBuf>,
    /// For tests only: punch out the serial log's old part once more than
    /// this many bytes are allocated (default SERIAL_FILE_CAP, 2 MiB).
    #[arg(
        long,
        hide = true,
        value_name = "BYTES",
        env = "VIREO_VMM_SERIAL_LOG_CAP"
    )]
    serial_log_cap: Option<u64>,
    /// For tests only: the newest bytes of the serial log never punched out
    /// (default SERIAL_FILE_KEEP, 1 MiB).
    #[arg(
        long,
        hide = true,
        value_name = "BYTES",
        env = "VIREO_VMM_SERIAL_LOG_KEEP"
    )]
    serial_log_keep: Option<u64>,
    /// Write bytes from the debug port (0x402) to this file.
    #[arg(long)]
    debug_log: Option<PathBuf>,
    /// Punch out the old part of this VMM's own log, stderr, when it is a
    /// file written for this VMM alone (vireod's `vmm.log`): only what this
    /// VMM wrote, never what the file held before. Without it stderr (a
    /// file shared with others, say) is left as it is.
    #[arg(long, hide = true)]
    trim_stderr: bool,
    /// For tests only: punch out the old part of the debug log and of this
    /// VMM's own log (with --trim-stderr) once more than this many bytes
    /// are allocated (default LOG_FILE_CAP, 2 MiB).
    #[arg(long, hide = true, value_name = "BYTES")]
    log_cap: Option<u64>,
    /// For tests only: the newest bytes of those logs never punched out
    /// (default LOG_FILE_KEEP, 1 MiB).
    #[arg(long, hide = true, value_name = "BYTES")]
    log_keep: Option<u64>,
    /// Listen here for control commands (JSON lines, QMP style).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Framebuffer VRAM in MiB (a power of two, 4 to 256).
    #[arg(long, default_value_t = 16)]
    vram: u64,
    /// The framebuffer mode described to a directly booted kernel.
    #[arg(long, default_value = "1024x768", value_parser = parse_resolution)]
    resolution: (u16, u16),
    /// Attach a disk image as a virtio-blk PCI device (repeatable):
    /// path=FILE[,format=qcow2|raw][,readonly=on][,cache=none|writeback|writethrough]
    /// [,queues=N][,discard=unmap|ignore][,serial=ID]; a comma in a value is
    /// written twice.
    #[arg(long, value_parser = DiskConfig::parse)]
    disk: Vec<DiskConfig>,
    /// Serve the screen over VNC on this unix socket (security None).
    #[arg(long)]
    vnc_socket: Option<PathBuf>,
    /// Serve the screen over VNC on this TCP address (ADDR:PORT). Security
    /// None on loopback; anything else needs --vnc-password-file.
    #[arg(long)]
    vnc_listen: Option<std::net::SocketAddr>,
    /// Require VncAuth with the password on this file's first line.
    #[arg(long)]
    vnc_password_file: Option<PathBuf>,
}

fn parse_resolution(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("'{s}' is not WIDTHxHEIGHT"))?;
    let w: u16 = w.parse().map_err(|_| format!("bad width in '{s}'"))?;
    let h: u16 = h.parse().map_err(|_| format!("bad height in '{s}'"))?;
    if !(64..=4096).contains(&w) || !(64..=4096).contains(&h) {
        return Err(format!("{w}x{h} is outside 64x64 … 4096x4096"));
    }
    Ok((w, h))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log_trim = match Trim::new(
        args.log_cap.unwrap_or(LOG_FILE_CAP),
        args.log_keep.unwrap_or(LOG_FILE_KEEP),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vireo-vmm: --log-cap/--log-keep: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Guest-triggered warnings are rate-limited (`ratelimit`); the file
    // itself is bounded too, as the serial log is.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(StderrLog::new(args.trim_stderr.then_some(log_trim)))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if args.check_kvm {
        return match vireo_vmm::kvm::check() {
            Ok(r) => {
                println!(
                    "KVM API {}: {} vCPUs recommended, {} at most, {} memory slots",
                    r.api_version, r.nr_vcpus, r.max_vcpus, r.nr_memslots
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vireo-vmm: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args, log_trim) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vireo-vmm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_append(path: &PathBuf, what: &str) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {what} '{}': {e}", path.display()))
}

/// Locks each disk image with flock(2): exclusive for a read-write disk,
/// shared for a read-only one, so two VMs may share an image only when
/// both only read it. Fails at once (no waiting), naming the image.
fn lock_disks(disks: &[DiskConfig]) -> Result<Vec<std::fs::File>, String> {
    use std::os::fd::AsRawFd;
    let mut locks = Vec::new();
    for disk in disks {
        let file = std::fs::File::open(&disk.path)
            .map_err(|e| format!("cannot open disk image '{}': {e}", disk.path.display()))?;
        let mode = if disk.read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.kind() == std::io::ErrorKind::WouldBlock {
                format!(
                    "disk image '{}' is in use by another VM; an image can be shared only \
                     when every VM attaches it read-only",
                    disk.path.display()
                )
            } else {
                format!("cannot lock disk image '{}': {err}", disk.path.display())
            });
        }
        locks.push(file);
    }
    Ok(locks)
}

fn run(args: Args, log_trim: Trim) -> Result<u8, String> {
    let kernel = args.kernel.clone().ok_or("--kernel is required")?;
    let memory = args
        .memory
        .checked_mul(1 << 20)
        .ok_or("--memory is too large")?;
    let vram = args
        .vram
        .checked_mul(1 << 20)
        .ok_or("--vram is too large")?;
    if !vram.is_power_of_two() || !(4 << 20..=256 << 20).contains(&vram) {
        return Err(format!(
            "--vram {} MiB must be a power of two from 4 to 256",
            args.vram
        ));
    }
    let (width, height) = args.resolution;
    let needed = u64::from(width) * u64::from(height) * 4;
    if needed > vram {
        return Err(format!(
            "--resolution {width}x{height} needs {} MiB of VRAM at 32 bpp; --vram is {} MiB",
            needed.div_ceil(1 << 20),
            args.vram
        ));
    }
    // Held until the process exits: another vireo-vmm cannot open the same
    // image while this one writes it.
    let _disk_locks = lock_disks(&args.disk)?;
    let config = VmConfig {
        vcpus: args.cpus,
        memory,
        kernel: KernelConfig {
            kernel,
            initrd: args.initrd.clone(),
            cmdline: args.cmdline.clone(),
        },
        vram_size: vram,
        resolution: args.resolution,
        disks: args.disk.clone(),
    };

    let serial_log = args
        .serial_log
        .as_ref()
        .map(|p| open_append(p, "serial log"))
        .transpose()?;
    let trim = Trim::new(
        args.serial_log_cap.unwrap_or(SERIAL_FILE_CAP),
        args.serial_log_keep.unwrap_or(SERIAL_FILE_KEEP),
    )
    .map_err(|e| format!("--serial-log-cap/--serial-log-keep: {e}"))?;
    let debug_log = args
        .debug_log
        .as_ref()
        .map(|p| {
            let file = open_append(p, "debug log")?;
            LogFile::new(file, log_trim, "debug log")
                .map_err(|e| format!("cannot open debug log '{}': {e}", p.display()))
        })
        .transpose()?
        .map(|f| Arc::new(Mutex::new(f)));
    let ranges = ram_ranges(memory);
    let below: u64 = ranges.first().map_or(0, |r| r.1);
    let above: u64 = ranges.get(1).map_or(0, |r| r.1);
    let cmos_irq = Arc::new(ReboundIrq::default());
    let persistent = Persistent {
        serial_sink: SerialSink::with_trim(serial_log, trim),
        debug_log,
        debug_written: Arc::new(AtomicU64::new(0)),
        cmos: Arc::new(Mutex::new(Cmos::new(
            below,
            above,
            u32::from(args.cpus),
            cmos_irq.clone(),
        ))),
        cmos_irq,
        disk_stats: args.disk.iter().map(|_| Arc::default()).collect(),
    };

    // The CMOS raises IRQ 8 for its update/periodic flags when polled.
    let cmos = persistent.cmos.clone();
    std::thread::Builder::new()
        .name("rtc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                cmos.lock().unwrap_or_else(|e| e.into_inner()).poll();
            }
        })
        .map_err(|e| format!("cannot start the RTC thread: {e}"))?;

    let (tx, rx) = mpsc::channel::<Event>();
    let current_serial: CurrentSerial = Arc::new(Mutex::new(None));
    if let Some(path) = &args.control_socket {
        let listener = control::bind(path)
            .map_err(|e| format!("cannot listen on control socket '{}': {e}", path.display()))?;
        control::serve(listener, tx.clone(), Event::Control)
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
    }
    if let Some(path) = &args.serial_socket {
        let listener = control::bind(path)
            .map_err(|e| format!("cannot listen on serial socket '{}': {e}", path.display()))?;
        serve_serial(
            listener,
            persistent.serial_sink.clone(),
            current_serial.clone(),
        )
        .map_err(|e| format!("cannot start the serial thread: {e}"))?;
    }

    let display = Display::new();
    start_vnc(&args, &display)?;
    let machine =
        Machine::new(config, persistent, tx, rx, current_serial).with_display(display.clone());
    let outcome = machine.run().map_err(|e| e.to_string())?;
    Ok(outcome.exit_code())
}

/// Starts the VNC listeners the command line asks for.
fn start_vnc(args: &Args, display: &Arc<Display>) -> Result<(), String> {
    let auth = match &args.vnc_password_file {
        Some(p) => vnc::Auth::Password(Arc::new(vnc::read_password(p)?)),
        None => vnc::Auth::None,
    };
    if let Some(addr) = &args.vnc_listen {
        vnc::check_listen(addr, &auth)?;
    }
    if args.vnc_socket.is_some() || args.vnc_listen.is_some() {
        display
            .spawn_tracker()
            .map_err(|e| format!("cannot start the VNC frame tracker: {e}"))?;
    }
    if let Some(path) = &args.vnc_socket {
        let listener = control::bind(path)
            .map_err(|e| format!("cannot listen on VNC socket '{}': {e}", path.display()))?;
        vnc::serve_unix(listener, display.clone())
            .map_err(|e| format!("cannot start the VNC thread: {e}"))?;
    }
    if let Some(addr) = &args.vnc_listen {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen for VNC on {addr}: {e}"))?;
        vnc::serve_tcp(listener, auth, display.clone())
            .map_err(|e| format!("cannot start the VNC thread: {e}"))?;
    }
    Ok(())
}

/// Accepts console clients: output is copied to them by the sink, their
/// input is fed to the current COM1.
fn serve_serial(
    listener: UnixListener,
    sink: SerialSink,
    current: CurrentSerial,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("serial".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Ok(out) = stream.try_clone() else {
                    continue;
                };
                if sink.attach(out).is_err() {
                    continue;
                }
                let current = current.clone();
                let _ = std::thread::Builder::new()
                    .name("serial-client".into())
                    .spawn(move || {
                        let mut stream = stream;
                        let mut buf = [0u8; 256];
                        loop {
                            let n = match stream.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let serial = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            if let Some(serial) = serial {
                                // Give up on a UART a reset has replaced:
                                // nothing drains it any more.
                                let replaced = || {
                                    current
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .as_ref()
                                        .is_none_or(|now| !Arc::ptr_eq(now, &serial))
                                };
                                feed_input(&serial, &buf[..n], replaced);
                            }
                        }
                    });
            }
        })?;
    Ok(())
}
