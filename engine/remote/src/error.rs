//! Errors that say what failed and what to do about it.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Why a remote connection or one of its channels failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URI does not name an SSH host.
    #[error("'{0}' is not a vireo+ssh:// URI")]
    NotRemote(String),
    /// `~/.ssh/config` cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TCP could not reach the host.
    #[error("cannot reach {host} at {address}: {source}")]
    Unreachable {
        /// The host as the user named it.
        host: String,
        /// `hostname:port` we dialled.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The SSH handshake or session failed.
    #[error("SSH connection to {host} failed: {message}")]
    Ssh {
        /// The host.
        host: String,
        /// What went wrong.
        message: String,
    },
    /// The user did not accept an unknown host key (OpenSSH: "Host key
    /// verification failed").
    #[error(
        "Host key verification failed: the {key_type} key of {host} ({fingerprint}) is not \
         in {known_hosts} and was not accepted"
    )]
    HostKeyNotAccepted {
        /// known_hosts name.
        host: String,
        /// Key type.
        key_type: String,
        /// SHA256 fingerprint.
        fingerprint: String,
        /// The user's known_hosts file.
        known_hosts: String,
    },
    /// The host key differs from the recorded one.
    #[error("{}", changed_message(.host, .key_type, .fingerprint, .file, *.line))]
    HostKeyChanged {
        /// known_hosts name.
        host: String,
        /// Key type.
        key_type: String,
        /// SHA256 fingerprint of the key the host sent.
        fingerprint: String,
        /// The file holding the recorded key.
        file: PathBuf,
        /// Its line.
        line: usize,
    },
    /// The host key is marked `@revoked`.
    #[error(
        "Host key verification failed: the {key_type} key of {host} ({fingerprint}) is marked \
         as revoked in {}:{line}",
        file.display()
    )]
    HostKeyRevoked {
        /// known_hosts name.
        host: String,
        /// Key type.
        key_type: String,
        /// SHA256 fingerprint.
        fingerprint: String,
        /// The file.
        file: PathBuf,
        /// Its line.
        line: usize,
    },
    /// Every authentication method failed (or was cancelled).
    #[error(
        "{user}@{host}: authentication rejected (the server offered: {}; tried: {}){}",
        list(.offered), list(.tried),
        closed.as_deref().map(|m| format!("; the server closed the connection: {m}"))
            .unwrap_or_default()
    )]
    AuthRejected {
        /// The login name.
        user: String,
        /// The host.
        host: String,
        /// Methods the server accepts (`publickey`, `password`, ...).
        offered: Vec<String>,
        /// What we tried, e.g. "agent key SHA256:…", "key ~/.ssh/id_ed25519",
        /// "keyboard-interactive", "password (cancelled)".
        tried: Vec<String>,
        /// Why the server ended the connection, when it did (OpenSSH's sshd
        /// after `MaxAuthTries` failures: "Too many authentication failures").
        closed: Option<String>,
    },
    /// No engine listens on the remote socket.
    #[error("no Vireo engine is running on {host}: {socket} {why}; {hint}")]
    NoEngine {
        /// The host.
        host: String,
        /// The engine socket on that host.
        socket: String,
        /// "does not exist", "refuses connections", ...
        why: String,
        /// How to start it.
        hint: String,
    },
    /// The engine socket exists but the remote user may not use it.
    #[error(
        "permission denied on {host}:{socket}: '{user}' may not use the engine's socket; add \
         the user to the group 'vireo' on {host} (sudo adduser {user} vireo) and log in again"
    )]
    EngineDenied {
        /// The host.
        host: String,
        /// The socket.
        socket: String,
        /// The remote login.
        user: String,
    },
    /// The server refused a channel for another reason.
    #[error("{host}: cannot open {what}: {message}")]
    Channel {
        /// The host.
        host: String,
        /// What the channel was for.
        what: String,
        /// Why.
        message: String,
    },
}

impl RemoteError {
    /// Whether the user cancelled a password or keyboard-interactive
    /// prompt and nothing else let them in: asking again on its own (a
    /// reconnection) would bring the question they declined back.
    pub fn cancelled_by_user(&self) -> bool {
        matches!(self, Self::AuthRejected { tried, .. }
            if tried.iter().any(|t| t.ends_with(" (cancelled)")))
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

/// OpenSSH's warning for a changed host key, naming the file and line.
fn changed_message(
    host: &str,
    key_type: &str,
    fingerprint: &str,
    file: &std::path::Path,
    line: usize,
) -> String {
    let file = file.display();
    format!(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
         Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
         It is also possible that a host key has just been changed.\n\
         The fingerprint for the {key_type} key sent by the remote host is\n\
         {fingerprint}.\n\
         Please contact your system administrator.\n\
         Add correct host key in {file} to get rid of this message.\n\
         Offending {key_type} key in {file}:{line}\n\
         Host key for {host} has changed and you have requested strict checking.\n\
         Host key verification failed."
    )
}
