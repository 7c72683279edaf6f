//! One `vireo-vmm` process: its files, its command line, its control
//! socket, and what its exit means.
//!
//! Each running domain has a directory `RUNTIME/vms/UUID/` holding the
//! control, serial and (once vireo-vmm serves VNC) VNC sockets, the serial
//! log (and `serial.logged`, how far the `<serial><log>` has got), the
//! VMM's own log (its stderr, whose old part the VMM punches out past 2 MiB)
//! and `state.json`, the runtime record a restarted engine re-attaches
//! from.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use vireo_api::Domain;
use vireo_api::domain::Disk;

/// How long a control command may take before the VMM counts as hung.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `binary` serves VNC on a unix socket (`--vnc-socket`), asked
/// once when the engine starts: the VNC server lands in vireo-vmm
/// separately, and an engine must work with a VMM that lacks it.
pub fn vmm_serves_vnc(binary: &Path) -> bool {
    std::process::Command::new(binary)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--vnc-socket"))
}

/// The files of one running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    /// `RUNTIME/vms/UUID`.
    pub dir: PathBuf,
}

impl VmFiles {
    /// The files under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The QMP-style control socket.
    pub fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// The serial console socket (COM1 in and out).
    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join("serial.sock")
    }

    /// Everything COM1 printed.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// The VMM's stderr.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// The VNC socket, once vireo-vmm serves VNC.
    pub fn vnc_socket(&self) -> PathBuf {
        self.dir.join("vnc.sock")
    }

    /// The runtime record.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// vireo-vmm's arguments for `domain`; `vnc` when the VMM serves VNC
    /// (see [`vmm_serves_vnc`]).
    pub fn vmm_args(&self, domain: &Domain, vnc: bool) -> Result<Vec<String>, String> {
        let kernel = domain.os.kernel.as_deref().ok_or(
            "the domain has no <os><kernel>: vireo-vmm boots kernels directly, firmware boot \
             is not available yet",
        )?;
        let memory = domain.memory_bytes().map_err(|e| e.to_string())?;
        let memory_mib = memory.div_ceil(1 << 20);
        let cpus = u8::try_from(domain.vcpu.count)
            .map_err(|_| format!("{} vCPUs: vireo-vmm runs at most 255", domain.vcpu.count))?;
        let mut args = vec![
            // Its stderr is `vmm.log`, created for it alone: bounded.
            "--trim-stderr".to_owned(),
            "--kernel".to_owned(),
            kernel.to_owned(),
            "--memory".to_owned(),
            memory_mib.to_string(),
            "--cpus".to_owned(),
            cpus.to_string(),
        ];
        if let Some(initrd) = &domain.os.initrd {
            args.extend(["--initrd".to_owned(), initrd.clone()]);
        }
        if let Some(cmdline) = &domain.os.cmdline {
            args.extend(["--cmdline".to_owned(), cmdline.clone()]);
        }
        for (flag, path) in [
            ("--serial-log", self.serial_log()),
            ("--serial-socket", self.serial_socket()),
            ("--control-socket", self.control()),
        ] {
            args.push(flag.to_owned());
            args.push(path.to_string_lossy().into_owned());
        }
        for disk in domain
            .devices
            .disks
            .iter()
            .filter(|d| d.unsupported().is_none())
        {
            args.push("--disk".to_owned());
            args.push(disk_arg(disk)?);
        }
        // A domain with <graphics type='vnc'> gets a VNC socket; the engine
        // hands it to clients (`AttachVnc`), TCP listeners are not opened.
        if vnc && domain.devices.graphics.iter().any(|g| g.kind == "vnc") {
            args.push("--vnc-socket".to_owned());
            args.push(self.vnc_socket().to_string_lossy().into_owned());
        }
        Ok(args)
    }
}

/// vireo-vmm's `--disk` value for a disk it can attach: `path=…,format=…`
/// (libvirt's default format is raw: headers are never probed), read-only
/// for `<readonly/>` and CD-ROMs, the cache mode, `discard` (libvirt's
/// default is `ignore`), queues and serial. Commas in values are doubled,
/// as vireo-vmm (like QEMU) reads them.
pub fn disk_arg(disk: &Disk) -> Result<String, String> {
    let path = disk.source_path().ok_or_else(|| {
        format!(
            "disk '{}' has no <source> vireo-vmm can open",
            disk.target.dev
        )
    })?;
    let escape = |v: &str| v.replace(',', ",,");
    let mut arg = format!("path={},format={}", escape(path), disk.format());
    if disk.read_only() {
        arg.push_str(",readonly=on");
    }
    let driver = disk.driver.as_ref();
    if let Some(cache) = driver
        .and_then(|d| d.cache.as_deref())
        .filter(|c| *c != "default")
    {
        arg.push_str(&format!(",cache={cache}"));
    }
    let discard = driver
        .and_then(|d| d.discard.as_deref())
        .unwrap_or("ignore");
    arg.push_str(&format!(",discard={discard}"));
    if let Some(queues) = disk.queues() {
        arg.push_str(&format!(",queues={queues}"));
    }
    if let Some(serial) = &disk.serial {
        arg.push_str(&format!(",serial={}", escape(serial)));
    }
    Ok(arg)
}

/// Checks, before vireo-vmm is spawned, that every disk it will attach can
/// be opened as the domain asks: the source exists, is a regular file or a
/// block device, is readable (and writable unless read-only), and a qcow2
/// disk starts with the qcow2 magic. The error names the disk and path.
pub fn check_disks(domain: &Domain) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    for disk in domain
        .devices
        .disks
        .iter()
        .filter(|d| d.unsupported().is_none())
    {
        let Some(path) = disk.source_path() else {
            continue;
        };
        let fail = |why: String| format!("disk '{}' source '{path}': {why}", disk.target.dev);
        let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_block_device()) {
            return Err(fail("not a regular file or block device".into()));
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(!disk.read_only())
            .open(path)
            .map_err(|e| {
                let mode = if disk.read_only() {
                    "reading"
                } else {
                    "reading and writing"
                };
                fail(format!("cannot open it for {mode}: {}", io_reason(&e)))
            })?;
        if disk.format() == "qcow2" {
            let mut magic = [0u8; 4];
            let is_qcow2 = file.read_exact(&mut magic).is_ok() && magic == *b"QFI\xfb";
            if !is_qcow2 {
                return Err(fail(
                    "<driver type='qcow2'> but the file is not a qcow2 image".into(),
                ));
            }
        }
    }
    Ok(())
}

/// An I/O error as a sentence fragment without Rust's "(os error N)".
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// What a restarted engine needs to re-attach to a running VMM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The domain id shown by `list`.
    pub id: u32,
    /// vireo-vmm's PID.
    pub pid: u32,
    /// The domain XML the VM was started with.
    pub live_xml: String,
    /// Whether the vCPUs are paused.
    pub paused: bool,
    /// Start time, milliseconds since the Unix epoch.
    pub started_ms: u64,
}

/// Whether `pid` is a live (not zombie) vireo-vmm serving `control`.
pub fn is_our_vmm(pid: u32, control: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = control.as_os_str().as_encoded_bytes();
    let matches = cmdline.split(|&b| b == 0).any(|arg| arg == want);
    matches && is_alive(pid)
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How a VMM's exit is shown: the new state, libvirt-style reason, and
/// whether it counts as a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitMeaning {
    /// True for a crash (state `crashed`), false for `shut off`.
    pub crashed: bool,
    /// Why, for `domstate --reason` and the event.
    pub reason: String,
}

/// Maps a VMM's exit to a state: exit 0 is a power-off, 3 a guest crash,
/// 1 a VMM failure, an odd status above 1 the guest's isa-debug-exit code;
/// SIGKILL is `destroyed` when the engine sent it and a crash otherwise.
/// `status` is `None` when the VMM was not the engine's child (after a
/// re-attach) and its status is unknown.
pub fn exit_meaning(status: Option<ExitStatus>, destroyed: bool, vmm_log: &Path) -> ExitMeaning {
    let shutoff = |reason: String| ExitMeaning {
        crashed: false,
        reason,
    };
    if destroyed {
        return shutoff("destroyed".into());
    }
    let Some(status) = status else {
        return exit_from_log(vmm_log);
    };
    if let Some(sig) = status.signal() {
        return ExitMeaning {
            crashed: true,
            reason: format!("vireo-vmm was killed by signal {sig}"),
        };
    }
    match status.code() {
        Some(0) => shutoff("shutdown".into()),
        Some(3) => ExitMeaning {
            crashed: true,
            reason: crash_line(vmm_log).unwrap_or_else(|| "the guest crashed".into()),
        },
        // isa-debug-exit with 0 also gives 1 ((0 << 1) | 1): the VMM's log
        // tells the two apart.
        Some(1) if debug_exit_line(vmm_log) => shutoff("guest exited with code 0".into()),
        Some(1) => shutoff(format!(
            "failed: {}",
            last_line(vmm_log).unwrap_or_else(|| "vireo-vmm failed".into())
        )),
        Some(c) if c & 1 == 1 => shutoff(format!("guest exited with code {}", c >> 1)),
        Some(c) => ExitMeaning {
            crashed: true,
            reason: format!("vireo-vmm exited with status {c}"),
        },
        None => shutoff("unknown".into()),
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How a VMM this engine did not start (it re-attached after a restart)
/// ended, from what the VMM logged: its exit status went to the engine that
/// spawned it. A VMM that logged no ending was killed.
fn exit_from_log(vmm_log: &Path) -> ExitMeaning {
    let text = log_tail(vmm_log).unwrap_or_default();
    for line in text.lines().rev().map(strip_ansi) {
        if let Some(i) = line.find("guest crashed: ") {
            return ExitMeaning {
                crashed: true,
                reason: line[i + "guest ".len()..].trim().to_owned(),
            };
        }
        if line.contains("guest powered off") {
            return ExitMeaning {
                crashed: false,
                reason: "shutdown".into(),
            };
        }
        if let Some(i) = line.find("guest wrote 0x") {
            let value = line[i + "guest wrote 0x".len()..]
                .split_whitespace()
                .next()
                .and_then(|v| u64::from_str_radix(v, 16).ok());
            if let Some(v) = value {
                return ExitMeaning {
                    crashed: false,
                    reason: format!("guest exited with code {v}"),
                };
            }
        }
    }
    ExitMeaning {
        crashed: true,
        reason: "vireo-vmm ended without a word (killed?) while the engine was restarting or \
                 re-attached"
            .into(),
    }
}

/// How much of the end of the VMM's log is read to explain its exit: what
/// it logs on the way out (the crash report with its registers included)
/// many times over.
const LOG_TAIL: u64 = 64 * 1024;

/// The last [`LOG_TAIL`] bytes of the VMM's log as text, from the first
/// whole line. vireo-vmm punches out the old part of its log (keeping its
/// newest 1 MiB): a punched part reads as zeros, which are dropped, and
/// bytes that are not UTF-8 become U+FFFD.
fn log_tail(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(LOG_TAIL);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    file.take(LOG_TAIL).read_to_end(&mut bytes).ok()?;
    bytes.retain(|&b| b != 0);
    if from > 0 {
        // Started inside a line: drop its end.
        let first = bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.drain(..first);
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether the VMM logged a guest write to isa-debug-exit.
fn debug_exit_line(log: &Path) -> bool {
    log_tail(log).is_some_and(|t| t.contains(" to isa-debug-exit"))
}

/// The VMM's "guest crashed: …" explanation.
fn crash_line(log: &Path) -> Option<String> {
    let text = log_tail(log)?;
    text.lines().rev().find_map(|l| {
        let l = strip_ansi(l);
        l.find("guest crashed: ")
            .map(|i| l[i + "guest ".len()..].trim().to_owned())
    })
}

/// The last non-empty line of a log, without ANSI colours.
pub fn last_line(log: &Path) -> Option<String> {
    let text = log_tail(log)?;
    text.lines()
        .rev()
        .map(strip_ansi)
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// Sends one command to a VMM's control socket.
pub async fn control(socket: &Path, execute: &str, arguments: Value) -> Result<Value, String> {
    let work = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot reach vireo-vmm's control socket: {e}"))?;
        let (r, mut w) = stream.into_split();
        let line = format!(
            "{}\n",
            json!({ "execute": execute, "arguments": arguments })
        );
        w.write_all(line.as_bytes())
            .await
            .map_err(|e| format!("cannot send '{execute}' to vireo-vmm: {e}"))?;
        let mut answer = String::new();
        BufReader::new(r)
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("no answer from vireo-vmm to '{execute}': {e}"))?;
        if answer.is_empty() {
            return Err(format!(
                "vireo-vmm closed the control socket during '{execute}'"
            ));
        }
        let v: Value = serde_json::from_str(&answer)
            .map_err(|e| format!("vireo-vmm answered '{execute}' with malformed JSON: {e}"))?;
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        Err(v["error"]["desc"]
            .as_str()
            .unwrap_or("vireo-vmm reported an error")
            .to_owned())
    };
    tokio::time::timeout(CONTROL_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("vireo-vmm did not answer '{execute}' in time")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Domain {
        Domain::from_xml(
            "<domain type='kvm'><name>d</name><memory unit='KiB'>1536</memory><vcpu>2</vcpu>\
             <os><type>hvm</type><kernel>/k</kernel><cmdline>a b</cmdline></os></domain>",
        )
        .unwrap()
    }

    #[test]
    fn vmm_args_follow_the_domain_and_round_memory_up_to_mib() {
        let f = VmFiles::new("/r/vms/u".into());
        let args = f.vmm_args(&demo(), true).unwrap();
        assert_eq!(args[0], "--trim-stderr", "vmm.log is not bounded");
        let pairs: Vec<_> = args[1..]
            .chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("--kernel", "/k"),
                ("--memory", "2"),
                ("--cpus", "2"),
                ("--cmdline", "a b"),
                ("--serial-log", "/r/vms/u/serial.log"),
                ("--serial-socket", "/r/vms/u/serial.sock"),
                ("--control-socket", "/r/vms/u/control.sock"),
            ]
        );
    }

    fn with_disks(disks: &str) -> Domain {
        Domain::from_xml(&format!(
            "<domain type='kvm'><name>d</name><memory>1024</memory><vcpu>1</vcpu>\
             <os><type>hvm</type><kernel>/k</kernel></os><devices>{disks}</devices></domain>"
        ))
        .unwrap()
    }

    #[test]
    fn disks_become_vmm_disk_arguments() {
        let d = with_disks(
            "<disk type='file' device='disk'>\
               <driver name='qemu' type='qcow2' cache='none' discard='unmap' queues='2'/>\
               <source file='/i/a,b.qcow2'/><target dev='vda' bus='virtio'/>\
               <serial>SN1</serial></disk>\
             <disk type='file' device='cdrom'><source file='/i/x.iso'/>\
               <target dev='sda' bus='sata'/></disk>\
             <disk type='block' device='cdrom'><driver type='raw' cache='default'/>\
               <source dev='/dev/sr0'/><target dev='vdb'/></disk>\
             <disk type='file'><source file='/i/r.img'/><target dev='vdc'/><readonly/></disk>",
        );
        let args = VmFiles::new("/r".into()).vmm_args(&d, false).unwrap();
        let disks: Vec<_> = args[1..]
            .chunks(2)
            .filter(|c| c[0] == "--disk")
            .map(|c| c[1].as_str())
            .collect();
        // The SATA CD-ROM is not attached: vireo-vmm has no SATA controller.
        assert_eq!(
            disks,
            [
                "path=/i/a,,b.qcow2,format=qcow2,cache=none,discard=unmap,queues=2,serial=SN1",
                "path=/dev/sr0,format=raw,readonly=on,discard=ignore",
                "path=/i/r.img,format=raw,readonly=on,discard=ignore",
            ]
        );
    }

    #[test]
    fn disk_check_names_the_disk_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, [0u8; 512]).unwrap();
        let disk = |source: &std::path::Path, format: &str, extra: &str| {
            with_disks(&format!(
                "<disk type='file'><driver type='{format}'/><source file='{}'/>\
                 <target dev='vdb'/>{extra}</disk>",
                source.display()
            ))
        };
        check_disks(&disk(&raw, "raw", "")).unwrap();
        let missing = dir.path().join("gone.qcow2");
        assert_eq!(
            check_disks(&disk(&missing, "qcow2", "")).unwrap_err(),
            format!(
                "disk 'vdb' source '{}': No such file or directory",
                missing.display()
            )
        );
        let err = check_disks(&disk(&raw, "qcow2", "")).unwrap_err();
        assert!(err.ends_with("but the file is not a qcow2 image"), "{err}");
        let err = check_disks(&disk(dir.path(), "raw", "")).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        // Read-only disks need only read access.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o444)).unwrap();
        check_disks(&disk(&raw, "raw", "<readonly/>")).unwrap();
        if is_root() {
            return; // root writes anyway
        }
        let err = check_disks(&disk(&raw, "raw", "")).unwrap_err();
        assert!(
            err.contains("cannot open it for reading and writing: Permission denied"),
            "{err}"
        );
    }

    fn is_root() -> bool {
        // SAFETY: geteuid(2) has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn domain_without_kernel_cannot_start() {
        let mut d = demo();
        d.os.kernel = None;
        let err = VmFiles::new("/r".into()).vmm_args(&d, false).unwrap_err();
        assert!(err.contains("no <os><kernel>"), "{err}");
    }

    #[test]
    fn exit_statuses_map_to_states() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vmm.log");
        std::fs::write(
            &log,
            "\u{1b}[31mERROR\u{1b}[0m vireo_vmm::machine: guest crashed: triple fault on vCPU 0\nregs\n",
        )
        .unwrap();
        let st = |raw: i32| Some(ExitStatus::from_raw(raw));
        assert_eq!(
            exit_meaning(st(0), false, &log),
            ExitMeaning {
                crashed: false,
                reason: "shutdown".into()
            }
        );
        assert_eq!(
            exit_meaning(st(3 << 8), false, &log),
            ExitMeaning {
                crashed: true,
                reason: "crashed: triple fault on vCPU 0".into()
            }
        );
        assert!(exit_meaning(st(9), false, &log).crashed);
        assert_eq!(exit_meaning(st(9), true, &log).reason, "destroyed");
        assert_eq!(
            exit_meaning(st(7 << 8), false, &log).reason,
            "guest exited with code 3"
        );
        assert_eq!(exit_meaning(st(1 << 8), false, &log).reason, "failed: regs");
        std::fs::write(&log, "INFO guest wrote 0x0 to isa-debug-exit\n").unwrap();
        assert_eq!(
            exit_meaning(st(1 << 8), false, &log).reason,
            "guest exited with code 0"
        );
        // Without a status (after a re-attach) the log tells.
        assert_eq!(
            exit_meaning(None, false, &log).reason,
            "guest exited with code 0"
        );
        std::fs::write(&log, "INFO machine started\nINFO guest powered off\n").unwrap();
        assert_eq!(exit_meaning(None, false, &log).reason, "shutdown");
        std::fs::write(&log, "INFO machine started\n").unwrap();
        assert!(exit_meaning(None, false, &log).crashed);
    }

    #[test]
    fn exits_are_read_from_the_tail_of_a_punched_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vmm.log");
        // A long log whose old part vireo-vmm punched out (zeros), with a
        // stray byte that is not UTF-8, then the crash report.
        let mut text = vec![0u8; 3 * LOG_TAIL as usize];
        for i in 0..2000 {
            text.extend(format!("WARN virtio-blk: request {i} past the end\n").bytes());
        }
        text.extend(b"DEBUG unhandled port write 0x80 [\xff]\n");
        text.extend(b"ERROR vireo_vmm::machine: guest crashed: triple fault on vCPU 0\nrip=0\n");
        std::fs::write(&log, &text).unwrap();
        let crash = |status| exit_meaning(status, false, &log);
        assert_eq!(
            crash(Some(ExitStatus::from_raw(3 << 8))).reason,
            "crashed: triple fault on vCPU 0"
        );
        assert_eq!(crash(None).reason, "crashed: triple fault on vCPU 0");
        assert_eq!(last_line(&log).as_deref(), Some("rip=0"));
        // Only the zeros of the hole: nothing said.
        std::fs::write(&log, vec![0u8; 10000]).unwrap();
        assert_eq!(last_line(&log), None);
        assert!(crash(None).reason.contains("ended without a word"));
    }

    #[test]
    fn own_process_is_alive_and_not_a_vmm() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(!is_our_vmm(me, Path::new("/nonexistent/control.sock")));
        assert!(!is_alive(u32::MAX - 1));
    }
}
