//! The server's host key: recorded during the handshake, checked against
//! known_hosts before any credential is sent.

use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::{Algorithm, PublicKey};

use super::{Settings, Target};
use crate::error::RemoteError;
use crate::known_hosts::{Verdict, fingerprint};
use crate::prompt::{Prompter, UnknownHost};

/// The russh callbacks: records the server's key (checked against
/// known_hosts before anything is sent to the server) and refuses a
/// different key on a later re-key.
pub(super) struct Handler {
    pub(super) key: Arc<Mutex<Option<PublicKey>>>,
    /// The reason the server gave when it ended the connection.
    pub(super) disconnect: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates are not supported: the host must present a
        // plain key, checked against known_hosts.
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let mut slot = self.key.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            // A re-key must present the key the user accepted.
            Some(first) => Ok(first == key),
            None => {
                *slot = Some(key.clone());
                Ok(true)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                *self.disconnect.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.message);
                Ok(())
            }
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// OpenSSH's name for a key type in its messages.
pub fn key_type_name(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ED25519".into(),
        Algorithm::Ecdsa { .. } => "ECDSA".into(),
        Algorithm::Rsa { .. } => "RSA".into(),
        Algorithm::Dsa => "DSA".into(),
        other => other.to_string().to_uppercase(),
    }
}

pub(super) fn check_host_key(
    target: &Target,
    key: &PublicKey,
    settings: &Settings,
    prompter: &dyn Prompter,
) -> Result<(), RemoteError> {
    let name = target.display();
    let key_type = key_type_name(key);
    let fp = fingerprint(key);
    match settings.known_hosts.check(&target.alias, target.port, key) {
        Verdict::Known => Ok(()),
        Verdict::Changed { file, line } => Err(RemoteError::HostKeyChanged {
            host: name,
            key_type,
            fingerprint: fp,
            file,
            line,
        }),
        Verdict::Revoked { file, line } => Err(RemoteError::HostKeyRevoked {
            host: name,
            key_type,
            fingerprint: fp,
            file,
            line,
        }),
        Verdict::Unknown => {
            let known_hosts = settings.known_hosts.user_file.display().to_string();
            let question = UnknownHost {
                host: name.clone(),
                key_type: key_type.clone(),
                fingerprint: fp.clone(),
                known_hosts: known_hosts.clone(),
            };
            if !prompter.confirm_host_key(&question) {
                return Err(RemoteError::HostKeyNotAccepted {
                    host: name,
                    key_type,
                    fingerprint: fp,
                    known_hosts,
                });
            }
            settings
                .known_hosts
                .add(&target.alias, target.port, key)
                .map_err(|message| RemoteError::Ssh {
                    host: target.alias.clone(),
                    message,
                })
        }
    }
}
