//! `vireo+ssh://` connections: one SSH connection (vireo-remote) whose API
//! channel is bridged to a unix socket pair, so the blocking client and
//! the serial console work on it unchanged; questions go to the terminal.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::OnceLock;

use vireo_api::ConnectUri;
use vireo_api::client::Client;
use vireo_remote::{Connection, Prompter, Question, RETRY_MESSAGE, Settings, UnknownHost};

/// The runtime pumping the SSH connection and the connection itself, for
/// the life of the process (vireoctl runs one command).
static REMOTE: OnceLock<(tokio::runtime::Runtime, Connection)> = OnceLock::new();

/// Connects to the engine `uri` names over SSH and shakes hands.
pub fn open(uri: &ConnectUri, client_name: &str) -> Result<Client<UnixStream, UnixStream>, String> {
    let fail = |e: String| format!("failed to connect to the hypervisor\nerror: {e}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the SSH runtime: {e}")))?;
    let settings = Settings::from_env();
    let conn = runtime
        .block_on(Connection::connect_uri(uri, &settings, &TerminalPrompter))
        .map_err(|e| fail(e.to_string()))?;
    let stream = runtime
        .block_on(conn.open_engine_or_start())
        .map_err(|e| fail(e.to_string()))?;
    let socket = vireo_remote::bridge(runtime.handle(), stream)
        .map_err(|e| fail(format!("cannot bridge the SSH channel: {e}")))?;
    let reader = socket.try_clone().map_err(|e| fail(e.to_string()))?;
    let client =
        Client::handshake(reader, socket, client_name, false).map_err(|e| fail(e.to_string()))?;
    let _ = REMOTE.set((runtime, conn));
    Ok(client)
}

/// Asks on the controlling terminal (`/dev/tty`), secrets without echo, as
/// `ssh` does; without a terminal every question is declined.
struct TerminalPrompter;

impl TerminalPrompter {
    fn ask(prompt: &str, echo: bool) -> Option<String> {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()?;
        // Echo goes off before the prompt shows (as in OpenSSH's
        // readpassphrase): what is typed once it is visible is never echoed
        // nor flushed.
        let _echo_off = (!echo).then(|| EchoOff::new(tty.as_raw_fd())).flatten();
        let mut out = &tty;
        out.write_all(prompt.as_bytes()).ok()?;
        out.flush().ok()?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line).ok()?;
        if !echo {
            let _ = out.write_all(b"\n");
        }
        if line.is_empty() {
            return None;
        }
        Some(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}

impl Prompter for TerminalPrompter {
    fn passphrase(&self, key: &Path) -> Option<String> {
        Self::ask(
            &format!("Enter passphrase for key '{}': ", key.display()),
            false,
        )
    }

    fn password(&self, user: &str, host: &str, retry: bool) -> Option<String> {
        if retry {
            // As ssh: on standard error, before the prompt.
            eprintln!("{RETRY_MESSAGE}");
        }
        Self::ask(&format!("{user}@{host}'s password: "), false)
    }

    fn keyboard_interactive(
        &self,
        name: &str,
        instructions: &str,
        questions: &[Question],
        retry: bool,
    ) -> Option<Vec<String>> {
        if retry {
            eprintln!("{RETRY_MESSAGE}");
        }
        if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
            for text in [name, instructions] {
                if !text.is_empty() {
                    let _ = writeln!(tty, "{text}");
                }
            }
        }
        questions
            .iter()
            .map(|q| Self::ask(&q.prompt, q.echo))
            .collect()
    }

    fn confirm_host_key(&self, host: &UnknownHost) -> bool {
        let mut prompt = host.message();
        // Bounded: three unclear answers count as "no".
        for _ in 0..3 {
            let Some(answer) = Self::ask(&prompt, true) else {
                return false;
            };
            match host.accepts(&answer) {
                Some(yes) => {
                    if yes
                        && let Ok(mut tty) =
                            std::fs::OpenOptions::new().write(true).open("/dev/tty")
                    {
                        let _ = writeln!(
                            tty,
                            "Warning: Permanently added '{}' ({}) to the list of known hosts.",
                            host.host, host.key_type
                        );
                    }
                    return yes;
                }
                None => prompt = "Please type 'yes', 'no' or the fingerprint: ".to_owned(),
            }
        }
        false
    }
}

/// The terminal's echo, off until dropped.
struct EchoOff {
    fd: i32,
    saved: libc::termios,
}

impl EchoOff {
    fn new(fd: i32) -> Option<Self> {
        // SAFETY: termios is plain data; all-zero is a valid value that
        // tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        // SAFETY: `quiet` is a valid termios for this terminal.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) } != 0 {
            return None;
        }
        Some(Self { fd, saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores settings read from this same terminal.
        unsafe { libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved) };
    }
}
