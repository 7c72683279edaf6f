//! The control socket: one per VM, JSON lines in the style of QMP.
//!
//! Each request is one line, `{"execute": "NAME", "arguments": {...}}`;
//! each answer is one line, `{"return": VALUE}` or
//! `{"error": {"class": "...", "desc": "..."}}`.
//!
//! | command | arguments | returns |
//! |---|---|---|
//! | `status` | | `{"state": "running"\|"paused", "vcpus", "memory_bytes", "boots"}` |
//! | `pause`, `resume` | | `{}` |
//! | `system_powerdown` | | `{"armed": bool}` (whether the guest enabled the button) |
//! | `system_reset` | | `{}` |
//! | `quit` | | `{}`, then the VMM exits |
//! | `stats` | | per-vCPU CPU time and exits; memory; per disk (`index` in `--disk` order) `rd_req`, `rd_bytes`, `wr_req`, `wr_bytes`, `flush_req`, `errs` since the VMM started (across resets) |
//! | `framebuffer` | | the mode, or `{"enabled": false}` |
//! | `screendump` | `{"path"}` | `{"width", "height"}`, PNG written to path |
//! | `dirty-pages` | | `{"page_size", "pages": [...]}` VRAM pages written since the last call |
//! | `key-event` | `{"scancode", "down"}` | `{}` (XT set-1 code, 0xE0xx for extended keys) |
//! | `send-key` | `{"keys": [scancode, ...]}` | `{}` (each pressed then released) |
//! | `mouse-event` | `{"dx", "dy", "dz", "buttons"}` | `{}` |

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Sender};

use serde::Deserialize;
use serde_json::{Value, json};

/// The longest request line accepted (64 KiB).
const MAX_LINE: usize = 64 << 10;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Request {
    /// The command name.
    pub execute: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: Value,
}

/// An answer: a value, or an error class and description.
pub type Reply = Result<Value, (String, String)>;

/// A request handed to the VM's main loop, with where to send the answer.
#[derive(Debug)]
pub struct Command {
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: Sender<Reply>,
}

/// Serves `listener` on a thread, sending each request to `sink` (through
/// `wrap`, which turns it into the main loop's event type).
pub fn serve<E: Send + 'static>(
    listener: UnixListener,
    sink: Sender<E>,
    wrap: fn(Command) -> E,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sink = sink.clone();
                let _ = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        if let Err(e) = client(stream, &sink, wrap) {
                            tracing::debug!("control client ended: {e}");
                        }
                    });
            }
        })?;
    Ok(())
}

/// Binds the control socket, replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

fn client<E>(stream: UnixStream, sink: &Sender<E>, wrap: fn(Command) -> E) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let answer = error_line("GenericError", "request longer than 64 KiB");
            out.write_all(answer.as_bytes())?;
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = match serde_json::from_slice::<Request>(&line) {
            Err(e) => error_line("GenericError", &format!("malformed request: {e}")),
            Ok(request) => {
                let (tx, rx) = mpsc::channel();
                if sink.send(wrap(Command { request, reply: tx })).is_err() {
                    return Ok(());
                }
                match rx.recv() {
                    Ok(Ok(v)) => format!("{}\n", json!({ "return": v })),
                    Ok(Err((class, desc))) => error_line(&class, &desc),
                    Err(_) => return Ok(()),
                }
            }
        };
        out.write_all(answer.as_bytes())?;
    }
}

use std::io::Read as _;

fn error_line(class: &str, desc: &str) -> String {
    format!("{}\n", json!({ "error": { "class": class, "desc": desc } }))
}

/// A blocking client, for `vireod` and tests.
#[derive(Debug)]
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    /// Connects to a VMM's control socket.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let s = UnixStream::connect(path)?;
        Ok(Self {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// Sends a command and waits for its answer.
    pub fn call(&mut self, execute: &str, arguments: Value) -> std::io::Result<Reply> {
        let line = format!(
            "{}\n",
            json!({ "execute": execute, "arguments": arguments })
        );
        self.writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let v: Value = serde_json::from_str(&answer).map_err(std::io::Error::other)?;
        if let Some(r) = v.get("return") {
            return Ok(Ok(r.clone()));
        }
        let class = v["error"]["class"]
            .as_str()
            .unwrap_or("GenericError")
            .to_owned();
        let desc = v["error"]["desc"].as_str().unwrap_or("").to_owned();
        Ok(Err((class, desc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_gets_an_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, rx) = mpsc::channel::<Command>();
        serve(bind(&path).unwrap(), tx, |c| c).unwrap();
        std::thread::spawn(move || {
            for cmd in rx {
                let answer = match cmd.request.execute.as_str() {
                    "status" => Ok(json!({ "state": "running" })),
                    other => Err(("CommandNotFound".to_owned(), format!("no command {other}"))),
                };
                let _ = cmd.reply.send(answer);
            }
        });
        let mut c = ControlClient::connect(&path).unwrap();
        assert_eq!(
            c.call("status", Value::Null).unwrap(),
            Ok(json!({ "state": "running" }))
        );
        assert_eq!(
            c.call("nope", Value::Null).unwrap(),
            Err(("CommandNotFound".to_owned(), "no command nope".to_owned()))
        );
        // A malformed line is answered, and the connection stays usable.
        c.writer.write_all(b"{not json\n").unwrap();
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        assert!(line.contains("malformed request"), "{line}");
        assert!(c.call("status", Value::Null).unwrap().is_ok());
    }

    #[test]
    fn oversized_requests_end_the_connection_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, _rx) = mpsc::channel::<Command>();
        serve(bind(&path).unwrap(), tx, |c| c).unwrap();
        let mut c = ControlClient::connect(&path).unwrap();
        let big = vec![b'x'; MAX_LINE + 10];
        c.writer.write_all(&big).unwrap();
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        assert!(line.contains("longer than 64 KiB"), "{line}");
    }
}
