//! Debian's OpenSSH `sshd` on a loopback port, as the current user, with a
//! generated host key and an authorized-keys file in a temporary directory;
//! its `LogLevel VERBOSE` log tells which connections it saw.

#![allow(dead_code)]

pub mod ns;
pub mod prompter;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vireo_remote::Settings;
use vireo_remote::config::Env;
use vireo_tests::engine::{Session, bin, output_with_input};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether sshd can run here; prints why not.
pub fn sshd_or_skip() -> bool {
    if Path::new(SSHD).exists() && which("ssh-keygen") {
        true
    } else {
        eprintln!("skipping: {SSHD} or ssh-keygen is missing (Debian: openssh-server)");
        false
    }
}

fn which(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command, failing the test with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ssh-keygen -t TYPE -N PASSPHRASE -f PATH`.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "vireo-test", "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
}

/// `ssh-keygen -lf PUB`'s SHA256 fingerprint: the reference for ours.
pub fn openssh_fingerprint(public: &Path) -> String {
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(public));
    out.split_whitespace().nth(1).unwrap().to_owned()
}

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub host_key: PathBuf,
    pub authorized_keys: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Sshd {
    /// Starts sshd accepting the keys later added with [`Sshd::authorize`].
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts sshd with `extra` lines appended to its configuration.
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vireo-sshd")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key, "ed25519", "");
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, "").unwrap();
        let log = dir.path().join("sshd.log");
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            // As root sshd wants its privilege-separation directory.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                     AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n\
                     AllowStreamLocalForwarding yes\nMaxStartups 50\n{extra}",
                    host_key.display(),
                    dir.path().join("sshd.pid").display(),
                    authorized_keys.display(),
                ),
            )
            .unwrap();
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_listening(&mut child, &log, port, deadline) {
                return Self {
                    dir,
                    port,
                    host_key,
                    authorized_keys,
                    log,
                    child,
                };
            }
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Adds a public key to the authorized keys.
    pub fn authorize(&self, public: &Path) {
        let key = std::fs::read_to_string(public).unwrap();
        let mut all = std::fs::read_to_string(&self.authorized_keys).unwrap();
        all.push_str(&key);
        std::fs::write(&self.authorized_keys, all).unwrap();
    }

    /// The host's public key line, as `ssh-keygen` wrote it.
    pub fn host_public(&self) -> PathBuf {
        self.host_key.with_extension("pub")
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many TCP connections sshd has accepted so far.
    pub fn connections(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("Connection from "))
            .count()
    }

    /// How many logins succeeded with a public key.
    pub fn publickey_logins(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("Accepted publickey for "))
            .count()
    }

    /// sshd's per-connection processes (the listener's children): killing
    /// them drops the connections as a host going away would.
    pub fn session_processes(&self) -> Vec<u32> {
        children(self.child.id())
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA…`, a known_hosts line.
    pub fn known_hosts_line(&self) -> String {
        known_hosts_line(&self.host_public(), self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until sshd (`child`, logging to `log`) says it listens on
/// `port`: `true`; `false` when it exited first (it lost a race for the
/// port). Fails the test with the log at `deadline`.
fn wait_listening(child: &mut Child, log: &Path, port: u16, deadline: Instant) -> bool {
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(&format!("Server listening on 127.0.0.1 port {port}")) {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(Instant::now() < deadline, "sshd did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `[127.0.0.1]:PORT TYPE AAAA…`: the known_hosts line for the public key
/// file `public` of a server on `port`.
pub fn known_hosts_line(public: &Path, port: u16) -> String {
    let public = std::fs::read_to_string(public).unwrap();
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    format!("[127.0.0.1]:{port} {}\n", key.join(" "))
}

/// The child processes of `pid` (`pgrep -P`).
pub fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client home: `~/.ssh` with files the test writes.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vireo-home")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ssh(&self, name: &str) -> PathBuf {
        self.dir.path().join(".ssh").join(name)
    }

    pub fn settings(&self, agent: Option<PathBuf>) -> Settings {
        Settings::for_home(
            Env {
                home: self.path().to_owned(),
                local_user: vireo_remote::config::local_user_name(),
            },
            agent,
        )
    }

    /// A client home with a key (`~/.ssh/id_ed25519`) that `sshd` accepts.
    pub fn with_key_for(sshd: &Sshd) -> Self {
        let home = Self::new();
        keygen(&home.ssh("id_ed25519"), "ed25519", "");
        sshd.authorize(&home.ssh("id_ed25519.pub"));
        home
    }

    /// Trusts `sshd`'s host key.
    pub fn trust(&self, sshd: &Sshd) {
        std::fs::write(self.ssh("known_hosts"), sshd.known_hosts_line()).unwrap();
    }
}

/// sshd in front of a session engine, and a client home with a key it
/// accepts.
pub struct Remote {
    pub sshd: Sshd,
    pub home: Home,
    /// `vireo+ssh://127.0.0.1:PORT/session?socket=…`, the engine's socket.
    pub uri: String,
}

impl Remote {
    /// sshd in front of `session`'s engine; `trusted`: whether the client's
    /// known_hosts already has sshd's host key.
    pub fn new(session: &Session, trusted: bool) -> Self {
        let sshd = Sshd::start();
        let home = Home::with_key_for(&sshd);
        if trusted {
            home.trust(&sshd);
        }
        let uri = format!(
            "vireo+ssh://127.0.0.1:{}/session?socket={}",
            sshd.port,
            session.socket().display()
        );
        Self { sshd, home, uri }
    }

    /// vireoctl with `-c URI`, the client's HOME, no local engine settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("vireoctl"));
        cmd.arg("-c")
            .arg(&self.uri)
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("VIREO_DEFAULT_URI")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_DATA_HOME");
        cmd
    }

    /// Runs [`Remote::command`] with `stdin` as its input.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        output_with_input(&mut self.command(args), stdin)
    }

    /// Runs [`Remote::command`], failing the test with its stderr when it
    /// fails; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args, None);
        assert!(
            out.status.success(),
            "vireoctl -c {} {args:?} failed: {}",
            self.uri,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A current-thread runtime for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
