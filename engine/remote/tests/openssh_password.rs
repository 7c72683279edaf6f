//! Password and keyboard-interactive authentication against Debian's
//! OpenSSH sshd, which checks both against the system's accounts. The test
//! account exists only inside a private mount namespace: sshd runs under
//! `unshare --mount` with temporary copies of /etc/passwd and /etc/shadow
//! (the real ones plus `vireotest`) bind-mounted over the real files, so
//! nothing on the host changes and the mounts vanish with sshd. Needs root
//! (the bind mounts, and sshd reading the shadow file); skips otherwise.

mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sshd::{Home, SSHD, keygen, run, runtime, sshd_or_skip};
use vireo_api::ConnectUri;
use vireo_api::proto::{Request, Response};
use vireo_remote::{Connection, Prompter, Question, RemoteError, UnknownHost};
use vireo_tests::engine::{Session, serial};

const USER: &str = "vireotest";
const PASSWORD: &str = "Vireo-s3cret";

/// Whether this test can run here (root, unshare, sshd); prints why not.
fn root_or_skip() -> bool {
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
struct NsSshd {
    /// Kept for its lifetime: config, keys, account files, log.
    _dir: tempfile::TempDir,
    port: u16,
    host_key: PathBuf,
    log: PathBuf,
    child: Child,
}

impl NsSshd {
    fn start(extra: &str) -> Self {
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
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
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
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&format!("Server listening on 127.0.0.1 port {port}")) {
                    return Self {
                        _dir: dir,
                        port,
                        host_key,
                        log,
                        child,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
                        .unwrap();
                    assert!(
                        text.contains("Bind to port") || text.contains("Address already in use"),
                        "sshd in a mount namespace exited ({status}): {err}\n{text}"
                    );
                    break;
                }
                assert!(Instant::now() < deadline, "sshd did not start:\n{text}");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(Instant::now() < deadline, "sshd did not start");
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, start: &str) -> usize {
        self.log().lines().filter(|l| l.starts_with(start)).count()
    }

    /// How many log lines start with `start`, once there are `n` (sshd's
    /// privilege-separated parts log a moment after the client hears the
    /// outcome) or after 5 s.
    fn count_when(&self, start: &str, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.count(start);
            if seen >= n || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client home trusting this sshd's host key.
    fn client_home(&self) -> Home {
        let home = Home::new();
        let public = std::fs::read_to_string(self.host_key.with_extension("pub")).unwrap();
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(
            home.ssh("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")),
        )
        .unwrap();
        home
    }

    fn uri(&self, session: &Session) -> ConnectUri {
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

/// Scripted answers; records every question.
#[derive(Default)]
struct Answers {
    passwords: Mutex<Vec<String>>,
    ki: Mutex<Vec<String>>,
    asked: Mutex<Vec<String>>,
}

impl Prompter for Answers {
    fn passphrase(&self, _: &Path) -> Option<String> {
        None
    }
    fn password(&self, user: &str, host: &str) -> Option<String> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("password {user}@{host}"));
        let mut p = self.passwords.lock().unwrap();
        (!p.is_empty()).then(|| p.remove(0))
    }
    fn keyboard_interactive(
        &self,
        name: &str,
        instructions: &str,
        questions: &[Question],
    ) -> Option<Vec<String>> {
        let q: Vec<String> = questions
            .iter()
            .map(|q| format!("{}{}", q.prompt, if q.echo { "" } else { "(hidden)" }))
            .collect();
        self.asked
            .lock()
            .unwrap()
            .push(format!("ki [{name}] [{instructions}] {}", q.join(",")));
        if questions.is_empty() {
            return Some(Vec::new());
        }
        let mut a = self.ki.lock().unwrap();
        (!a.is_empty()).then(|| vec![a.remove(0)])
    }
    fn confirm_host_key(&self, _: &UnknownHost) -> bool {
        false
    }
}

/// The engine's API over `conn` answers `Version`.
async fn engine_answers(conn: &Connection) {
    let (api, _events) = conn.api_client("pw-test", true).await.unwrap();
    let answer = api.call(Request::Version).await.unwrap();
    assert!(
        matches!(answer, Response::Version { .. }),
        "unexpected answer {answer:?}"
    );
}

#[test]
fn openssh_password_is_retried_then_accepted_and_the_engine_answers() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let sshd =
        NsSshd::start("UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n");
    let home = sshd.client_home();
    let answers = Answers {
        passwords: Mutex::new(vec!["wrong".into(), PASSWORD.into()]),
        ..Default::default()
    };
    runtime().block_on(async {
        let conn = Connection::connect_uri(&sshd.uri(&s), &home.settings(None), &answers)
            .await
            .unwrap();
        engine_answers(&conn).await;
    });
    assert_eq!(
        *answers.asked.lock().unwrap(),
        vec![
            format!("password {USER}@127.0.0.1"),
            format!("password {USER}@127.0.0.1")
        ]
    );
    assert_eq!(
        sshd.count_when("Failed password for vireotest ", 1),
        1,
        "{}",
        sshd.log()
    );
    assert_eq!(
        sshd.count_when("Accepted password for vireotest ", 1),
        1,
        "{}",
        sshd.log()
    );
    // The host's real account files were never touched.
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("vireotest:")
    );
}

#[test]
fn openssh_rejects_wrong_passwords_and_the_error_names_its_methods() {
    if !root_or_skip() {
        return;
    }
    let s = Session::new();
    let sshd =
        NsSshd::start("UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n");
    let home = sshd.client_home();
    let answers = Answers {
        passwords: Mutex::new(vec!["a".into(), "b".into(), "c".into(), PASSWORD.into()]),
        ..Default::default()
    };
    let err = runtime()
        .block_on(Connection::connect_uri(
            &sshd.uri(&s),
            &home.settings(None),
            &answers,
        ))
        .unwrap_err();
    assert!(matches!(err, RemoteError::AuthRejected { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{USER}@127.0.0.1: authentication rejected (the server offered: \
             password; tried: password)"
        )
    );
    assert_eq!(answers.asked.lock().unwrap().len(), 3, "three passwords");
    assert_eq!(
        sshd.count_when("Failed password for vireotest ", 3),
        3,
        "{}",
        sshd.log()
    );
    assert_eq!(sshd.count_when("Accepted ", 0), 0, "{}", sshd.log());
}

#[test]
fn openssh_keyboard_interactive_through_pam_and_the_engine_answers() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    // OpenSSH offers keyboard-interactive on Linux only through PAM.
    let sshd =
        NsSshd::start("UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes\n");
    let home = sshd.client_home();
    let answers = Answers {
        ki: Mutex::new(vec![PASSWORD.into()]),
        ..Default::default()
    };
    runtime().block_on(async {
        let conn = Connection::connect_uri(&sshd.uri(&s), &home.settings(None), &answers)
            .await
            .unwrap();
        engine_answers(&conn).await;
    });
    let asked = answers.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec!["ki [] [] Password: (hidden)"],
        "PAM's one question, answered once: {}",
        sshd.log()
    );
    assert_eq!(
        sshd.count_when("Accepted keyboard-interactive/pam for vireotest ", 1),
        1,
        "{}",
        sshd.log()
    );
}

#[test]
fn openssh_wrong_keyboard_interactive_answer_falls_back_to_password() {
    if !root_or_skip() {
        return;
    }
    let s = Session::new();
    // Both methods through PAM, as Debian's default sshd_config has it.
    let sshd =
        NsSshd::start("UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication yes\n");
    let home = sshd.client_home();
    let answers = Answers {
        ki: Mutex::new(vec!["wrong".into()]),
        passwords: Mutex::new(vec![PASSWORD.into()]),
        ..Default::default()
    };
    let rt = runtime();
    let conn = rt
        .block_on(Connection::connect_uri(
            &sshd.uri(&s),
            &home.settings(None),
            &answers,
        ))
        .unwrap();
    assert!(!conn.is_closed());
    // Keyboard-interactive first, as in OpenSSH's client, then password.
    assert_eq!(
        *answers.asked.lock().unwrap(),
        vec![
            "ki [] [] Password: (hidden)".to_owned(),
            format!("password {USER}@127.0.0.1")
        ],
        "{}",
        sshd.log()
    );
    assert_eq!(
        sshd.count_when("Failed keyboard-interactive/pam for vireotest ", 1),
        1,
        "{}",
        sshd.log()
    );
    assert_eq!(
        sshd.count_when("Accepted password for vireotest ", 1),
        1,
        "{}",
        sshd.log()
    );
}
