//! sshd in a private mount namespace (`unshare --mount`) where a test
//! account with a password exists: temporary copies of /etc/passwd and
//! /etc/shadow (the real ones plus `vireotest`) are bind-mounted over the
//! real files, so nothing on the host changes and the mounts vanish with
//! sshd. Needs root; [`root_or_skip`] says why not otherwise. Shared by
//! vireo-remote's `openssh_password.rs` and the app's `remote_password.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_api::ConnectUri;
use vireo_tests::engine::Session;

use super::{
    Home, SSHD, children, free_port, keygen, known_hosts_line, run, sshd_or_skip, wait_listening,
};

/// sshd_config lines: password authentication by sshd itself, nothing else.
pub const PASSWORD_ONLY: &str =
    "UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n";
/// Both methods through PAM, as Debian's sshd_config has it with
/// KbdInteractiveAuthentication turned on (OpenSSH on Linux offers
/// keyboard-interactive only through PAM).
pub const BOTH_PAM: &str =
    "UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n";

pub const USER: &str = "vireotest";
pub const PASSWORD: &str = "Vireo-s3cret";

/// Whether this test can run here (root, unshare, sshd); prints why not.
pub fn root_or_skip() -> bool {
    if !sshd_or_skip() {
        return false;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!(
            "skipping: needs root to bind-mount a test account over /etc/passwd \
             and /etc/shadow in a private mount namespace"
        );
        return false;
    }
    if !Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipping: /usr/bin/unshare is missing (Debian: util-linux)");
        return false;
    }
    true
}

/// A SHA-512 crypt hash of `password`: `openssl passwd -6`, else Perl's
/// crypt (glibc's, which knows `$6$`; perl-base is always installed).
fn hash(password: &str) -> String {
    if let Ok(out) = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "vireotestsalt", password])
        .output()
        && out.status.success()
    {
        return String::from_utf8(out.stdout).unwrap().trim().to_owned();
    }
    let out = run(Command::new("perl").args([
        "-e",
        "print crypt($ARGV[0], '$6$vireotestsalt$')",
        password,
    ]));
    assert!(out.starts_with("$6$vireotestsalt$"), "perl crypt: {out}");
    out
}

/// sshd in its own mount namespace, where `vireotest` (uid 0, home a
/// temporary directory, password [`PASSWORD`]) exists.
pub struct NsSshd {
    /// Kept for its lifetime: config, keys, account files, log.
    _dir: tempfile::TempDir,
    pub port: u16,
    host_key: PathBuf,
    log: PathBuf,
    child: Child,
}

impl NsSshd {
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vireo-sshd-pw")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key, "ed25519", "");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd.push_str(&format!(
            "{USER}:x:0:0:Vireo test:{}:/bin/sh\n",
            home.display()
        ));
        let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap();
        shadow.push_str(&format!("{USER}:{}:19000:0:99999:7:::\n", hash(PASSWORD)));
        let (passwd_copy, shadow_copy) = (dir.path().join("passwd"), dir.path().join("shadow"));
        std::fs::write(&passwd_copy, passwd).unwrap();
        std::fs::write(&shadow_copy, shadow).unwrap();
        std::fs::set_permissions(
            &shadow_copy,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = dir.path().join("sshd.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                     StrictModes no\nLogLevel VERBOSE\nPermitRootLogin yes\n\
                     PubkeyAuthentication no\nAllowStreamLocalForwarding yes\n\
                     MaxAuthTries 6\n{extra}",
                    host_key.display(),
                    dir.path().join("sshd.pid").display(),
                ),
            )
            .unwrap();
            // `exec`: sshd replaces the shell, so killing the child ends it
            // and with it the namespace.
            let mut child = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/shadow \
                     && exec \"$3\" -D -f \"$4\" -E \"$5\"",
                )
                .arg("sh")
                .args([&passwd_copy, &shadow_copy])
                .arg(SSHD)
                .args([&config, &log])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            if wait_listening(&mut child, &log, port, deadline) {
                return Self {
                    _dir: dir,
                    port,
                    host_key,
                    log,
                    child,
                };
            }
            // Exited: only a lost race for the port is tried again.
            let status = child.wait().unwrap();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(
                text.contains("Bind to port") || text.contains("Address already in use"),
                "sshd in a mount namespace exited ({status}): {err}\n{text}"
            );
            assert!(Instant::now() < deadline, "sshd did not start");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self, start: &str) -> usize {
        self.log().lines().filter(|l| l.starts_with(start)).count()
    }

    /// How many log lines start with `start`, once there are `n` (sshd's
    /// privilege-separated parts log a moment after the client hears the
    /// outcome) or after 5 s.
    pub fn count_when(&self, start: &str, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.count(start);
            if seen >= n || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts that sshd logged exactly `n` lines starting with `start`
    /// (waiting up to 5 s for them, as [`NsSshd::count_when`]); the
    /// failure shows sshd's log.
    pub fn assert_logged(&self, start: &str, n: usize) {
        assert_eq!(self.count_when(start, n), n, "{start:?}:\n{}", self.log());
    }

    /// sshd's per-connection processes (the listener's children): killing
    /// them drops the connections as a host going away would.
    pub fn session_processes(&self) -> Vec<u32> {
        // `unshare` and `sh` exec, so the child is sshd itself.
        children(self.child.id())
    }

    /// A client home trusting this sshd's host key.
    pub fn client_home(&self) -> Home {
        let home = Home::new();
        std::fs::write(
            home.ssh("known_hosts"),
            known_hosts_line(&self.host_key.with_extension("pub"), self.port),
        )
        .unwrap();
        home
    }

    pub fn uri(&self, session: &Session) -> ConnectUri {
        format!(
            "vireo+ssh://{USER}@127.0.0.1:{}/session?socket={}",
            self.port,
            session.socket().display()
        )
        .parse()
        .unwrap()
    }
}

impl Drop for NsSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
