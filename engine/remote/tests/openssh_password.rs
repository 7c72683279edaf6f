//! Password and keyboard-interactive authentication against Debian's
//! OpenSSH sshd, which checks both against the system's accounts. The test
//! account exists only inside a private mount namespace: sshd runs under
//! `unshare --mount` with temporary copies of /etc/passwd and /etc/shadow
//! (the real ones plus `vireotest`) bind-mounted over the real files, so
//! nothing on the host changes and the mounts vanish with sshd. Needs root
//! (the bind mounts, and sshd reading the shadow file); skips otherwise.

mod sshd;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sshd::ns::{BOTH_PAM, NsSshd, PASSWORD, PASSWORD_ONLY, USER, root_or_skip};
use sshd::prompter::{Asked, Scripted};
use sshd::runtime;
use vireo_api::proto::{Request, Response};
use vireo_remote::{Connection, RemoteError};
use vireo_tests::engine::{Session, serial};

/// What the prompter records for a password question (first, or again).
fn pw(retry: bool) -> Asked {
    Asked::password(USER, "127.0.0.1", retry)
}

/// What it records for PAM's keyboard-interactive question.
fn ki(retry: bool) -> Asked {
    Asked::hidden_question("", "", "Password: ", retry)
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

/// Connects to `sshd` with `answers`; `Ok` once the engine answered over
/// the connection.
fn connect(sshd: &NsSshd, s: &Session, answers: &Scripted) -> Result<(), RemoteError> {
    let home = sshd.client_home();
    runtime().block_on(async {
        let conn = Connection::connect_uri(&sshd.uri(s), &home.settings(None), answers).await?;
        engine_answers(&conn).await;
        Ok(())
    })
}

#[test]
fn openssh_password_is_retried_then_accepted_and_the_engine_answers() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let sshd = NsSshd::start(PASSWORD_ONLY);
    // Accepted on the second try, then (a new connection) on the third.
    let answers = Scripted::answering(&["wrong", PASSWORD], &[]);
    connect(&sshd, &s, &answers).unwrap();
    // The second question says the first answer was refused.
    assert_eq!(answers.asked(), vec![pw(false), pw(true)]);
    let answers = Scripted::answering(&["wrong", "wrong again", PASSWORD], &[]);
    connect(&sshd, &s, &answers).unwrap();
    assert_eq!(answers.asked(), vec![pw(false), pw(true), pw(true)]);
    sshd.assert_logged("Failed password for vireotest ", 3);
    sshd.assert_logged("Accepted password for vireotest ", 2);
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
    let sshd = NsSshd::start(PASSWORD_ONLY);
    let answers = Scripted::answering(&["a", "b", "c", PASSWORD], &[]);
    let err = connect(&sshd, &s, &answers).unwrap_err();
    assert!(matches!(err, RemoteError::AuthRejected { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{USER}@127.0.0.1: authentication rejected (the server offered: \
             password; tried: password)"
        )
    );
    assert_eq!(
        answers.asked(),
        vec![pw(false), pw(true), pw(true)],
        "three passwords, never a fourth"
    );
    sshd.assert_logged("Failed password for vireotest ", 3);
    sshd.assert_logged("Accepted ", 0);
}

#[test]
fn openssh_keyboard_interactive_through_pam_and_the_engine_answers() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let sshd =
        NsSshd::start("UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes\n");
    let answers = Scripted::answering(&[], &[PASSWORD]);
    connect(&sshd, &s, &answers).unwrap();
    assert_eq!(
        answers.asked(),
        vec![ki(false)],
        "PAM's one question, answered once: {}",
        sshd.log()
    );
    // Two wrong answers, the right one on the third try.
    let answers = Scripted::answering(&[], &["wrong", "wrong again", PASSWORD]);
    connect(&sshd, &s, &answers).unwrap();
    assert_eq!(
        answers.asked(),
        vec![ki(false), ki(true), ki(true)],
        "{}",
        sshd.log()
    );
    sshd.assert_logged("Failed keyboard-interactive/pam for vireotest ", 2);
    sshd.assert_logged("Accepted keyboard-interactive/pam for vireotest ", 2);
}

#[test]
fn openssh_three_wrong_keyboard_interactive_answers_then_password() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let sshd = NsSshd::start(BOTH_PAM);
    let answers = Scripted::answering(&[PASSWORD], &["wrong", "wrong", "wrong", PASSWORD]);
    connect(&sshd, &s, &answers).unwrap();
    // Keyboard-interactive first, as in OpenSSH's client, three times
    // (NumberOfPasswordPrompts), then password.
    assert_eq!(
        answers.asked(),
        vec![ki(false), ki(true), ki(true), pw(false)],
        "{}",
        sshd.log()
    );
    sshd.assert_logged("Failed keyboard-interactive/pam for vireotest ", 3);
    sshd.assert_logged("Accepted password for vireotest ", 1);
}

#[test]
fn openssh_cancelled_keyboard_interactive_goes_straight_to_password() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let sshd = NsSshd::start(BOTH_PAM);
    // No keyboard-interactive answer: the dialog's Cancel.
    let answers = Scripted::answering(&[PASSWORD], &[]);
    connect(&sshd, &s, &answers).unwrap();
    assert_eq!(
        answers.asked(),
        vec![ki(false), pw(false)],
        "{}",
        sshd.log()
    );
    // russh cannot abandon the exchange, so the cancelled question was
    // answered empty: one failure on sshd's side (of MaxAuthTries).
    sshd.assert_logged("Failed keyboard-interactive/pam for vireotest ", 1);
    sshd.assert_logged("Accepted password for vireotest ", 1);
}

#[test]
fn openssh_cancelled_password_prompt_stops_at_once() {
    if !root_or_skip() {
        return;
    }
    let s = Session::new();
    let sshd = NsSshd::start(PASSWORD_ONLY);
    // One wrong password, then Cancel: no third question.
    let answers = Scripted::answering(&["wrong"], &[]);
    let err = connect(&sshd, &s, &answers).unwrap_err();
    assert_eq!(answers.asked(), vec![pw(false), pw(true)]);
    assert_eq!(
        err.to_string(),
        format!(
            "{USER}@127.0.0.1: authentication rejected (the server offered: \
             password; tried: password (cancelled))"
        )
    );
    sshd.assert_logged("Failed password for vireotest ", 1);
}

#[test]
fn openssh_three_wrong_answers_per_method_end_at_sshds_max_auth_tries() {
    if !root_or_skip() {
        return;
    }
    let s = Session::new();
    // sshd's default MaxAuthTries 6 = three tries of each method: sshd
    // ends the connection at the sixth failure, and the error says so.
    let sshd = NsSshd::start(BOTH_PAM);
    let answers = Scripted::answering(&["a", "b", "c", PASSWORD], &["d", "e", "f", PASSWORD]);
    let err = connect(&sshd, &s, &answers).unwrap_err();
    assert_eq!(
        answers.asked(),
        vec![ki(false), ki(true), ki(true), pw(false), pw(true), pw(true)],
        "{}",
        sshd.log()
    );
    let RemoteError::AuthRejected { offered, tried, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(offered, &["password", "keyboard-interactive"], "{err}");
    assert_eq!(tried, &["keyboard-interactive", "password"], "{err}");
    assert!(
        err.to_string()
            .ends_with("; the server closed the connection: Too many authentication failures"),
        "{err}\n{}",
        sshd.log()
    );
    sshd.assert_logged("Accepted ", 0);
}

/// Output of a program running on a terminal (`script` gives it a pty, so
/// `/dev/tty` works), read as it comes.
struct OnTerminal {
    child: Child,
    input: std::process::ChildStdin,
    output: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            input,
            output,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits (10 s at most) until `what` has appeared `n` times.
    fn wait_for(&self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.text().matches(what).count() < n {
            assert!(
                Instant::now() < deadline,
                "waited for {n} × {what:?}; the terminal shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        std::io::Write::write_all(&mut self.input, format!("{line}\n").as_bytes()).unwrap();
        std::io::Write::flush(&mut self.input).unwrap();
    }

    /// Waits (20 s at most) for the program to end.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader drain the last output.
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.text());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running after 20 s:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn vireoctl_on_a_terminal_says_permission_denied_and_asks_again() {
    if !root_or_skip() {
        return;
    }
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("skipping: /usr/bin/script is missing (Debian: bsdutils)");
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let sshd = NsSshd::start(PASSWORD_ONLY);
    let home = sshd.client_home();
    let mut cmd = Command::new("script");
    cmd.args([
        "-q",
        "-e",
        "-c",
        "exec \"$VIREOCTL\" -c \"$URI\" list",
        "/dev/null",
    ])
    .env("VIREOCTL", vireo_tests::engine::bin("vireoctl"))
    .env("URI", sshd.uri(&s).to_string())
    .env("SHELL", "/bin/sh")
    .env("HOME", home.path())
    .env_remove("SSH_AUTH_SOCK")
    .env_remove("VIREO_DEFAULT_URI")
    .env_remove("XDG_RUNTIME_DIR");
    let mut term = OnTerminal::spawn(cmd);
    let prompt = format!("{USER}@127.0.0.1's password: ");
    term.wait_for(&prompt, 1);
    term.type_line("wrong");
    term.wait_for(&prompt, 2);
    term.type_line(PASSWORD);
    let (status, text) = term.finish();
    assert!(status.success(), "vireoctl list failed:\n{text}");
    // OpenSSH's wording between the two prompts, the secrets never echoed,
    // then the engine's (empty) list.
    let first = text.find(&prompt).unwrap();
    let denied = text
        .find("Permission denied, please try again.")
        .unwrap_or_else(|| panic!("no retry message:\n{text}"));
    let second = text.rfind(&prompt).unwrap();
    assert!(first < denied && denied < second, "{text}");
    assert!(
        !text.contains("wrong") && !text.contains(PASSWORD),
        "{text}"
    );
    assert!(text[second..].contains("Name"), "{text}");
    sshd.assert_logged("Failed password for vireotest ", 1);
    sshd.assert_logged("Accepted password for vireotest ", 1);
}
