//! A session engine in a fresh temporary XDG_RUNTIME_DIR/XDG_DATA_HOME,
//! driven through the real `vireoctl`, `vireod` and `vireo-vmm` binaries,
//! for the daemon's and the app's end-to-end tests.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vireo_api::client::Client;
use vireo_api::proto::{DomainInfo, Request, Response};

/// The cross-process tests share two cores: one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the test lock (a failed test must not wedge the others).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether KVM tests can run; prints why not.
pub fn kvm_or_skip() -> bool {
    if Path::new("/dev/kvm").exists() {
        true
    } else {
        eprintln!("skipping: /dev/kvm is absent on this machine");
        false
    }
}

/// A workspace binary in target/<profile>/, beside the test executable's
/// deps/ folder (`make test` builds every binary first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A test guest, built with gcc.
pub fn guest(name: &str) -> PathBuf {
    crate::guest::build(name, crate::guest::Flavor::Pvh)
}

/// A minimal domain booting `kernel` with `cmdline`.
pub fn domain_xml(name: &str, kernel: &Path, cmdline: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>32</memory>\n  \
         <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64'>hvm</type>\n    \
         <kernel>{}</kernel>\n    <cmdline>{cmdline}</cmdline>\n  </os>\n  <devices>\n    \
         <graphics type='vnc'/>\n  </devices>\n</domain>\n",
        kernel.display()
    )
}

/// Runs `cmd` with `stdin` (if any) written to its standard input, which
/// is then closed; its exit status, stdout and stderr.
pub fn output_with_input(cmd: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// One session engine's directories.
pub struct Session {
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub data: PathBuf,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// Fresh, empty runtime and data directories.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vireo-e2e")
            .tempdir()
            .unwrap();
        let runtime = dir.path().join("run");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&runtime).unwrap();
        Self { dir, runtime, data }
    }

    /// The same state with a new runtime directory: what a host reboot
    /// looks like to the engine.
    pub fn reboot(&mut self) {
        self.kill_all();
        self.runtime = self.dir.path().join(format!(
            "run-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&self.runtime).unwrap();
    }

    pub fn engine_dir(&self) -> PathBuf {
        self.runtime.join("vireo")
    }

    pub fn socket(&self) -> PathBuf {
        self.engine_dir().join("vireod.sock")
    }

    /// Runs vireoctl with `args` (and `stdin`).
    pub fn ctl_with_input(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin("vireoctl"));
        cmd.args(args)
            .env_remove("VIREO_DEFAULT_URI")
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("XDG_DATA_HOME", &self.data)
            .env("VIREO_STATS_INTERVAL_MS", "200");
        output_with_input(&mut cmd, stdin)
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with_input(args, None)
    }

    /// Runs vireoctl and returns stdout, failing the test on an error.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vireoctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs vireoctl, which must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(!out.status.success(), "vireoctl {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Defines `xml` through vireoctl's stdin.
    pub fn define(&self, xml: &str) {
        let out = self.ctl_with_input(&["define", "-"], Some(xml));
        assert!(
            out.status.success(),
            "define failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An API client (the engine must be running).
    pub fn client(&self, events: bool) -> Client<UnixStream, UnixStream> {
        Client::connect_unix(&self.socket(), "e2e", events).unwrap()
    }

    pub fn info(&self, domain: &str) -> DomainInfo {
        match self
            .client(false)
            .call(Request::DomInfo {
                domain: domain.into(),
            })
            .unwrap()
        {
            Response::Info { info } => info,
            other => panic!("{other:?}"),
        }
    }

    /// `domstate --reason`, trimmed.
    pub fn state(&self, domain: &str) -> String {
        self.ok(&["domstate", "--reason", domain]).trim().to_owned()
    }

    /// Waits until `domstate --reason` starts with `want`.
    pub fn wait_state(&self, domain: &str, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state(domain);
            if s.starts_with(want) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "'{domain}' is '{s}', not '{want}'"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the domain's VMM logs COM1 (`serial.log` in its runtime
    /// folder).
    pub fn serial_path(&self, uuid: &uuid::Uuid) -> PathBuf {
        self.engine_dir()
            .join("vms")
            .join(uuid.to_string())
            .join("serial.log")
    }

    /// The domain's serial log.
    pub fn serial_log(&self, uuid: &uuid::Uuid) -> String {
        std::fs::read_to_string(self.serial_path(uuid)).unwrap_or_default()
    }

    /// Defines `name` booting the test guest `guest_name` with `cmdline`
    /// ([`domain_xml`]), starts it and waits until COM1 shows `ready` (as
    /// [`Session::wait_serial`]); its UUID.
    pub fn boot(
        &self,
        name: &str,
        guest_name: &str,
        cmdline: &str,
        ready: &str,
        timeout: Duration,
    ) -> uuid::Uuid {
        self.define(&domain_xml(name, &guest(guest_name), cmdline));
        self.ok(&["start", name]);
        let uuid = self.info(name).summary.uuid;
        self.wait_serial(&uuid, ready, timeout);
        uuid
    }

    /// Waits until the domain's COM1 output contains `line`.
    pub fn wait_serial(&self, uuid: &uuid::Uuid, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.serial_log(uuid);
            if log.lines().any(|l| l.trim() == line) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no '{line}' on COM1 in time; got:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.engine_dir().join("vireod.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs the engine (not its VMs) and waits for it to go.
    pub fn kill_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            signal(pid, libc::SIGKILL);
            wait_gone(pid);
        }
    }

    /// Every process whose command line mentions this session's directory:
    /// its VMMs (the engine finds its directories through the environment).
    pub fn processes(&self) -> Vec<u32> {
        let needle = self.dir.path().as_os_str().as_encoded_bytes().to_vec();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
            {
                pids.push(pid);
            }
        }
        pids
    }

    fn kill_all(&self) {
        self.kill_daemon();
        for pid in self.processes() {
            signal(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kill_all();
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Whether `pid` runs (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    vireod::vmm::is_alive(pid)
}

/// Waits (at most 5 s) until `pid` has exited: no longer running, and no
/// thread left. (A killed process's first thread becomes a zombie while
/// the others may still be exiting, with its sockets and locks open.)
pub fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let threads = || std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    while (alive(pid) || threads() > 1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
