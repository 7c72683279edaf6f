//! `console`: the domain's serial port on this terminal, through the engine
//! connection, starting with the engine's backlog. Ctrl+] detaches.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;

use vireo_api::proto::{self, Request, ServerMessage};

use crate::connect::Connection;

/// Ctrl+], virsh's escape.
const ESCAPE: u8 = 0x1d;

/// The terminal's settings, restored on drop.
struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: i32) -> Option<Self> {
        // SAFETY: termios is plain data; all-zero is a valid value that
        // tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios for this terminal.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores settings read from this same terminal.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Attaches the terminal to `domain`'s serial console until Ctrl+], the VM
/// stops or another session takes the console over. The engine sends what
/// the guest printed before (its backlog) first. As virsh's, the session is
/// exclusive: refused while another holds the console, unless `force`.
pub fn attach(conn: Connection, domain: &str, name: &str, force: bool) -> Result<(), String> {
    let mut client = conn.into_client();
    // virsh prints its banner before it opens the console, so a refused
    // session shows it too, then the error.
    println!("Connected to domain '{name}'\nEscape character is ^] (Ctrl + ])");
    let _ = std::io::stdout().flush();
    client
        .call(Request::OpenConsole {
            domain: domain.to_owned(),
            exclusive: true,
            force,
            notify: false,
        })
        .map_err(|e| e.to_string())?;
    let stdin = std::io::stdin();
    let _raw = stdin
        .is_terminal()
        .then(|| RawMode::enter(stdin.as_raw_fd()))
        .flatten();
    let (mut reader, mut writer, pending) = client.into_parts();
    // Output: engine → terminal, on its own thread.
    let output = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let show = |msg: ServerMessage, out: &mut std::io::Stdout| match msg {
            ServerMessage::ConsoleOutput { data } => {
                let _ = out.write_all(&data);
                let _ = out.flush();
                true
            }
            ServerMessage::ConsoleClosed => false,
            _ => true,
        };
        for msg in pending {
            if !show(msg, &mut out) {
                return;
            }
        }
        while let Ok(msg) = proto::read_message::<_, ServerMessage>(&mut reader) {
            if !show(msg, &mut out) {
                return;
            }
        }
    });
    // Input: terminal → engine, on its own thread, until Ctrl+] or end of
    // input; either shuts the socket down, which ends the output thread.
    // The console also ends when the VM stops (the output thread returns).
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut input = std::io::stdin().lock();
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (data, detach) = match buf[..n].iter().position(|&b| b == ESCAPE) {
                Some(i) => (&buf[..i], true),
                None => (&buf[..n], false),
            };
            if !data.is_empty() {
                let msg = proto::ClientMessage::ConsoleInput {
                    data: data.to_vec(),
                };
                if proto::write_message(&mut writer, &msg).is_err() {
                    break;
                }
            }
            if detach {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Both);
    });
    let _ = output.join();
    drop(_raw);
    println!();
    Ok(())
}
