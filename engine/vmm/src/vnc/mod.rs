//! The VNC server: every client sees the guest's framebuffer and drives
//! its keyboard and mouse.
//!
//! - [`tracker`]: the one reader of the VRAM dirty log, a shadow frame and
//!   per-client tile maps; it follows the current boot's devices.
//! - [`client`]: one connection (handshake, reader, writer).
//! - [`keymap`]: X keysyms and QEMU keycodes to set-1 scancodes.
//!
//! Listeners: a unix socket (security None) and a TCP address (None on
//! loopback, VncAuth with a password; a non-loopback address without a
//! password is refused by [`check_listen`]).

pub mod client;
pub mod keymap;
pub mod tracker;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

pub use client::Auth;
pub use tracker::{Devices, Display};

/// Checks that a TCP listener on `addr` is allowed with `auth`.
pub fn check_listen(addr: &SocketAddr, auth: &Auth) -> Result<(), String> {
    if !addr.ip().is_loopback() && matches!(auth, Auth::None) {
        return Err(format!(
            "--vnc-listen {addr} is not a loopback address: a VNC listener reachable \
             from other machines needs --vnc-password-file"
        ));
    }
    Ok(())
}

/// Reads a VNC password: the file's first line (VncAuth uses at most 8
/// bytes of it).
pub fn read_password(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read(path)
        .map_err(|e| format!("cannot read VNC password file '{}': {e}", path.display()))?;
    let first = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = first.strip_suffix(b"\r").unwrap_or(first).to_vec();
    if line.is_empty() {
        return Err(format!("VNC password file '{}' is empty", path.display()));
    }
    if line.len() > 8 {
        tracing::warn!("VncAuth uses only the first 8 bytes of the password");
    }
    Ok(line)
}

/// Accepts clients on a unix socket (security None).
pub fn serve_unix(listener: UnixListener, display: Arc<Display>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vnc-unix".into())
        .spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let display = display.clone();
                let _ = std::thread::Builder::new()
                    .name("vnc-client".into())
                    .spawn(move || {
                        client::serve(Box::new(stream), format!("unix#{n}"), Auth::None, display)
                    });
            }
        })?;
    Ok(())
}

/// Accepts clients on TCP.
pub fn serve_tcp(listener: TcpListener, auth: Auth, display: Arc<Display>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vnc-tcp".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let peer = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "tcp".into());
                let (display, auth) = (display.clone(), auth.clone());
                let _ = std::thread::Builder::new()
                    .name("vnc-client".into())
                    .spawn(move || client::serve(Box::new(stream), peer, auth, display));
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_listeners_need_a_password() {
        let any: SocketAddr = "0.0.0.0:5900".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:5900".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5900".parse().unwrap();
        assert!(check_listen(&any, &Auth::None).is_err());
        assert!(check_listen(&any, &Auth::Password(Arc::new(b"pw".to_vec()))).is_ok());
        assert!(check_listen(&lo, &Auth::None).is_ok());
        assert!(check_listen(&lo6, &Auth::None).is_ok());
    }

    #[test]
    fn password_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "secret\r\nignored\n").unwrap();
        assert_eq!(read_password(&p).unwrap(), b"secret");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_password(&p).is_err());
    }
}
