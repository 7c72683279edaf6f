//! Vireo engines on other hosts, over SSH (`vireo+ssh://` URIs).
//!
//! One [`Connection`] per host: an SSH connection (russh, tokio) that is
//! authenticated once and then carries every stream to the remote engine
//! as its own `direct-streamlocal@openssh.com` channel to the engine's
//! unix socket: the API client, each console (VNC) and each serial
//! console. virt-manager opens a new `ssh … nc` per console; we open a
//! channel.
//!
//! - `config.rs`: `~/.ssh/config` (Host, HostName, Port, User,
//!   IdentityFile, ProxyJump, Include, PreferredAuthentications,
//!   NumberOfPasswordPrompts).
//! - `known_hosts.rs`: host keys as OpenSSH checks and records them.
//! - `prompt.rs`: the [`Prompter`] that answers passphrase, password,
//!   keyboard-interactive and unknown-host questions.
//! - `connection.rs`: connecting (ProxyJump hops as direct-tcpip channels),
//!   authentication as OpenSSH's client does it (method order, prompts
//!   per method, Cancel), the engine socket (`/system`: fixed;
//!   `/session`: the remote user's runtime directory, asked with a tiny
//!   `exec`; `?socket=` overrides both), channels, and errors that say what
//!   failed.
//! - [`bridge`]: a channel as a blocking `std` unix socket, for `vireoctl`.

pub mod config;
mod connection;
mod error;
pub mod known_hosts;
pub mod prompt;

pub use connection::{
    CONNECT_TIMEOUT, Connection, ExecOutput, RemoteStream, SYSTEM_SOCKET, Settings, Target,
    key_type_name,
};
pub use error::RemoteError;
pub use prompt::{NoPrompt, Prompter, Question, RETRY_MESSAGE, UnknownHost};

use tokio::io::{AsyncRead, AsyncWrite};

/// Joins `stream` (e.g. an SSH channel) to one end of a unix socket pair
/// pumped on `runtime`, and returns the other end: blocking code (the
/// `Client`, the serial console's threads) then reads and writes an
/// ordinary socket. Shutting the returned socket down ends the stream; the
/// stream's end shows as end-of-file on the socket.
pub fn bridge<S>(
    runtime: &tokio::runtime::Handle,
    stream: S,
) -> std::io::Result<std::os::unix::net::UnixStream>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
    theirs.set_nonblocking(true)?;
    let _guard = runtime.enter();
    let mut theirs = tokio::net::UnixStream::from_std(theirs)?;
    runtime.spawn(async move {
        let mut stream = stream;
        if let Err(e) = tokio::io::copy_bidirectional(&mut theirs, &mut stream).await {
            tracing::debug!("bridge ended: {e}");
        }
    });
    Ok(mine)
}
