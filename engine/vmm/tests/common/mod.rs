//! Running the real `vireo-vmm` binary in tests: a VM in a temporary
//! folder (serial log, debug log, control socket, optionally VNC), waiting
//! for what its guest prints, and its control socket.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vireo_vmm::control::ControlClient;

/// The emulating KVM here runs ~1.3 M guest instructions/s: be generous.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// isa-debug-exit status for a guest that wrote 0.
pub const GUEST_OK: i32 = 1;

/// Whether KVM tests can run; prints why not.
pub fn kvm_present() -> bool {
    if Path::new("/dev/kvm").exists() {
        true
    } else {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        false
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of `key=` on its own line of `out`.
pub fn value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.trim_end().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
}

/// A running `vireo-vmm`, killed when dropped.
pub struct Vmm {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The VNC TCP port, for [`Vmm::start_with_vnc`].
    pub port: Option<u16>,
}

impl Vmm {
    /// Boots `kernel` with `extra` arguments.
    pub fn start(kernel: &Path, extra: &[&str]) -> Self {
        Self::spawn(kernel, extra, false)
    }

    /// Boots `kernel` with a VNC unix socket (`vnc.sock`) and a loopback
    /// TCP listener on a free port.
    pub fn start_with_vnc(kernel: &Path, extra: &[&str]) -> Self {
        Self::spawn(kernel, extra, true)
    }

    fn spawn(kernel: &Path, extra: &[&str], vnc: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vireo-vmm"));
        cmd.arg("--kernel")
            .arg(kernel)
            .arg("--serial-log")
            .arg(dir.path().join("serial.log"))
            .arg("--debug-log")
            .arg(dir.path().join("debug.log"))
            .arg("--control-socket")
            .arg(dir.path().join("control.sock"));
        let port = vnc.then(free_port);
        if let Some(port) = port {
            cmd.arg("--vnc-socket")
                .arg(dir.path().join("vnc.sock"))
                .arg("--vnc-listen")
                .arg(format!("127.0.0.1:{port}"));
        }
        let child = cmd
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        Vmm { child, dir, port }
    }

    /// A file in the VM's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything COM1 printed so far.
    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.path("serial.log")).unwrap_or_default()
    }

    /// The VMM's log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// Waits until COM1 output contains `needle` as a whole line.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let out = self.serial();
            if out.lines().any(|l| l.trim_end() == needle) {
                return out;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "vireo-vmm exited ({status}) before '{needle}'\nserial:\n{out}\nstderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no '{needle}' within {BOOT_TIMEOUT:?}\nserial:\n{out}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the VMM to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vireo-vmm still running after {BOOT_TIMEOUT:?}\nserial:\n{}\nstderr:\n{}",
                self.serial(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection to the control socket (waiting for it to appear).
    pub fn control(&self) -> ControlClient {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = ControlClient::connect(&self.path("control.sock")) {
                return c;
            }
            assert!(Instant::now() < deadline, "no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a control command, failing the test on an error answer.
    pub fn call(&self, cmd: &str, args: Value) -> Value {
        match self.control().call(cmd, args).unwrap() {
            Ok(v) => v,
            Err((class, desc)) => panic!("{cmd} failed: {class}: {desc}"),
        }
    }

    /// The VNC TCP address as vncdotool writes it (`host::port`).
    pub fn addr(&self) -> String {
        format!("127.0.0.1::{}", self.port.expect("started with VNC"))
    }

    /// Whether the VMM still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
