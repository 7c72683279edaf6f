//! What a connection may need to ask its user: a key's passphrase, a
//! password, keyboard-interactive answers, and whether to trust an unknown
//! host key. `vireoctl` answers on the terminal, the app with dialogs.

use std::path::Path;

/// One keyboard-interactive question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The text the server sent, e.g. "Password: ".
    pub prompt: String,
    /// Whether the answer may be shown while typed.
    pub echo: bool,
}

/// An unknown host key, as the user is asked about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHost {
    /// The host as known_hosts names it (`host` or `[host]:port`).
    pub host: String,
    /// The key type as OpenSSH prints it (`ED25519`, `ECDSA`, `RSA`).
    pub key_type: String,
    /// `SHA256:…`, as `ssh` prints it.
    pub fingerprint: String,
    /// Where the key will be recorded if accepted.
    pub known_hosts: String,
}

impl UnknownHost {
    /// OpenSSH's wording, up to and including the question.
    pub fn message(&self) -> String {
        format!(
            "The authenticity of host '{}' can't be established.\n{} key fingerprint is {}.\n\
             This key is not known by any other names.\n\
             Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
            self.host, self.key_type, self.fingerprint
        )
    }

    /// Whether a typed answer accepts the key: `yes`, or the fingerprint
    /// itself (as OpenSSH allows). `None` for an answer that is neither yes
    /// nor no.
    pub fn accepts(&self, answer: &str) -> Option<bool> {
        let a = answer.trim();
        if a.eq_ignore_ascii_case("yes") || a == self.fingerprint {
            Some(true)
        } else if a.eq_ignore_ascii_case("no") || a.is_empty() {
            Some(false)
        } else {
            None
        }
    }
}

/// What OpenSSH's client says before it asks for a password again after a
/// wrong one.
pub const RETRY_MESSAGE: &str = "Permission denied, please try again.";

/// Answers a connection's questions. Calls may block (a terminal read, a
/// dialog on another thread); they are made from the connecting task, never
/// from the GTK main thread. `None` means the user cancelled (or cannot be
/// asked): that method is not asked again and the next one is tried.
///
/// A password and keyboard-interactive answers are asked up to
/// `NumberOfPasswordPrompts` times (3 by default), as OpenSSH does; `retry`
/// is true when the previous answer was refused, so the question should
/// say so (OpenSSH: [`RETRY_MESSAGE`]).
pub trait Prompter: Send + Sync {
    /// The passphrase of the encrypted private key `key`.
    fn passphrase(&self, key: &Path) -> Option<String>;
    /// The password of `user` on `host`.
    fn password(&self, user: &str, host: &str, retry: bool) -> Option<String>;
    /// Answers to a keyboard-interactive round (one per question).
    fn keyboard_interactive(
        &self,
        name: &str,
        instructions: &str,
        questions: &[Question],
        retry: bool,
    ) -> Option<Vec<String>>;
    /// Whether to trust, and record, an unknown host key.
    fn confirm_host_key(&self, host: &UnknownHost) -> bool;
}

/// A prompter for non-interactive use: declines everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPrompt;

impl Prompter for NoPrompt {
    fn passphrase(&self, _: &Path) -> Option<String> {
        None
    }
    fn password(&self, _: &str, _: &str, _: bool) -> Option<String> {
        None
    }
    fn keyboard_interactive(
        &self,
        _: &str,
        _: &str,
        _: &[Question],
        _: bool,
    ) -> Option<Vec<String>> {
        None
    }
    fn confirm_host_key(&self, _: &UnknownHost) -> bool {
        false
    }
}
