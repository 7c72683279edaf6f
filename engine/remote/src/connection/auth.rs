//! Authentication as OpenSSH's client does it (method order, prompts per
//! method, Cancel).

use std::path::Path;
use std::sync::{Arc, Mutex};

use russh::MethodKind;
use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::host_key::Handler;
use super::{Settings, Target};
use crate::error::RemoteError;
use crate::known_hosts::fingerprint;
use crate::prompt::{Prompter, Question};

fn method_name(m: &MethodKind) -> String {
    <&str>::from(m).to_owned()
}

/// A method we can authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    PublicKey,
    KeyboardInteractive,
    Password,
}

impl Method {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "publickey" => Some(Self::PublicKey),
            "keyboard-interactive" => Some(Self::KeyboardInteractive),
            "password" => Some(Self::Password),
            _ => None,
        }
    }

    fn kind(self) -> MethodKind {
        match self {
            Self::PublicKey => MethodKind::PublicKey,
            Self::KeyboardInteractive => MethodKind::KeyboardInteractive,
            Self::Password => MethodKind::Password,
        }
    }
}

/// What one try of a method came to.
enum Step {
    /// Logged in.
    Success,
    /// Refused; the method may be tried again.
    Again,
    /// The method has nothing more to try (its tries are used up, or the
    /// user cancelled).
    Done,
}

/// Authentication as OpenSSH's client does it: the first method of
/// `PreferredAuthentications` (publickey, keyboard-interactive, password by
/// default) that the server still accepts is tried until it succeeds or
/// has nothing more to try, then the next. Public keys: the agent's, then
/// key files; keyboard-interactive and password: up to
/// `NumberOfPasswordPrompts` tries each, the later ones telling the user
/// the previous answer was refused; a cancelled prompt ends that method at
/// once.
pub(super) struct Auth<'a> {
    handle: &'a mut Handle<Handler>,
    target: &'a Target,
    settings: &'a Settings,
    prompter: &'a dyn Prompter,
    disconnect: &'a Mutex<Option<String>>,
    /// What the server accepts now (it may change after each failure).
    offered: Vec<MethodKind>,
    /// What it accepted at first, for the error message.
    initially_offered: Vec<MethodKind>,
    tried: Vec<String>,
    kbd_tries: u32,
    /// Whether a keyboard-interactive request brought questions (OpenSSH
    /// asks again only then).
    kbd_questions_seen: bool,
    password_tries: u32,
}

impl<'a> Auth<'a> {
    pub(super) fn new(
        handle: &'a mut Handle<Handler>,
        target: &'a Target,
        settings: &'a Settings,
        prompter: &'a dyn Prompter,
        disconnect: &'a Mutex<Option<String>>,
    ) -> Self {
        Self {
            handle,
            target,
            settings,
            prompter,
            disconnect,
            offered: Vec::new(),
            initially_offered: Vec::new(),
            tried: Vec::new(),
            kbd_tries: 0,
            kbd_questions_seen: false,
            password_tries: 0,
        }
    }

    fn user(&self) -> &'a str {
        self.target.user.as_str()
    }

    /// An SSH-level failure; when the server ended the connection (sshd
    /// after `MaxAuthTries` failures) it is a rejection naming its reason.
    fn ssh_err(&self, e: russh::Error) -> RemoteError {
        match self.closed() {
            Some(reason) if !self.tried.is_empty() => self.rejected(Some(reason)),
            _ => RemoteError::Ssh {
                host: self.target.alias.clone(),
                message: format!("during authentication: {e}"),
            },
        }
    }

    /// Why the connection ended, if it did (russh reports a connection
    /// closed while waiting for an answer as a plain failure).
    fn closed(&self) -> Option<String> {
        let reason = self
            .disconnect
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match reason {
            Some(r) => Some(r),
            None if self.handle.is_closed() => Some("no reason given".to_owned()),
            None => None,
        }
    }

    fn rejected(&self, closed: Option<String>) -> RemoteError {
        RemoteError::AuthRejected {
            user: self.user().to_owned(),
            host: self.target.alias.clone(),
            offered: self.initially_offered.iter().map(method_name).collect(),
            tried: self.tried.clone(),
            closed,
        }
    }

    fn note_tried(&mut self, what: &str) {
        if !self.tried.iter().any(|t| t == what) {
            self.tried.push(what.to_owned());
        }
    }

    fn note_cancelled(&mut self, method: &str) {
        let cancelled = format!("{method} (cancelled)");
        match self.tried.iter_mut().find(|t| *t == method) {
            Some(t) => *t = cancelled,
            None => self.tried.push(cancelled),
        }
    }

    /// Follows the server's list of methods it still accepts after a
    /// failure; true on success.
    fn update(&mut self, r: AuthResult) -> bool {
        match r {
            AuthResult::Success => true,
            AuthResult::Failure {
                remaining_methods, ..
            } => {
                if !remaining_methods.is_empty() {
                    self.offered = remaining_methods.to_vec();
                }
                false
            }
        }
    }

    pub(super) async fn run(mut self) -> Result<(), RemoteError> {
        let user = self.user();
        let r = self.handle.authenticate_none(user).await;
        match r.map_err(|e| self.ssh_err(e))? {
            AuthResult::Success => return Ok(()),
            AuthResult::Failure {
                remaining_methods, ..
            } => self.offered = remaining_methods.to_vec(),
        }
        self.initially_offered = self.offered.clone();
        let order: Vec<Method> = self
            .target
            .authentications
            .iter()
            .filter_map(|m| Method::from_name(m))
            .collect();
        let mut done: Vec<Method> = Vec::new();
        // Bounded: every step that does not end a method uses one of its
        // limited tries (keys, or NumberOfPasswordPrompts prompts).
        loop {
            let Some(method) = order
                .iter()
                .copied()
                .find(|m| self.offered.contains(&m.kind()) && !done.contains(m))
            else {
                return Err(self.rejected(None));
            };
            let step = match method {
                Method::PublicKey => self.public_keys().await?,
                Method::KeyboardInteractive => self.keyboard_interactive().await?,
                Method::Password => self.password().await?,
            };
            match step {
                Step::Success => return Ok(()),
                Step::Again => {}
                Step::Done => done.push(method),
            }
            // No more questions once the server has hung up (sshd after
            // MaxAuthTries failures).
            if let Some(reason) = self.closed() {
                return Err(self.rejected(Some(reason)));
            }
        }
    }

    /// The agent's keys, then the key files, each once.
    async fn public_keys(&mut self) -> Result<Step, RemoteError> {
        let user = self.user();
        let mut agent_keys: Vec<PublicKey> = Vec::new();
        if let Some(sock) = &self.settings.agent
            && let Ok(mut agent) = AgentClient::connect_uds(sock).await
        {
            let identities = agent.request_identities().await.unwrap_or_default();
            for identity in identities {
                let key = identity.public_key().into_owned();
                agent_keys.push(key.clone());
                let hash = self.rsa_hash(&key).await;
                self.note_tried(&format!("agent key {}", fingerprint(&key)));
                match self
                    .handle
                    .authenticate_publickey_with(user, key, hash, &mut agent)
                    .await
                {
                    Ok(r) => {
                        if self.update(r) {
                            return Ok(Step::Success);
                        }
                    }
                    Err(e) => tracing::debug!("agent signing failed: {e}"),
                }
                if !self.offered.contains(&MethodKind::PublicKey) {
                    return Ok(Step::Done);
                }
            }
        }

        for path in &self.target.identity_files {
            if !self.offered.contains(&MethodKind::PublicKey) {
                break;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            // A key the agent already offered is not tried again.
            if let Ok(public) = std::fs::read_to_string(path.with_extension("pub"))
                .map_err(|_| ())
                .and_then(|t| PublicKey::from_openssh(t.trim()).map_err(|_| ()))
                && agent_keys.iter().any(|k| k.key_data() == public.key_data())
            {
                continue;
            }
            let Some(key) = load_key(&text, path, self.prompter, self.target.password_prompts)
            else {
                continue;
            };
            let hash = self.rsa_hash(key.public_key()).await;
            self.note_tried(&format!("key {}", path.display()));
            let r = self
                .handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await;
            let r = r.map_err(|e| self.ssh_err(e))?;
            if self.update(r) {
                return Ok(Step::Success);
            }
        }
        Ok(Step::Done)
    }

    /// The hash for an RSA key's signature: OpenSSH servers advertise
    /// rsa-sha2-512/256 in server-sig-algs; without that extension, assume
    /// SHA-256 (never SHA-1).
    async fn rsa_hash(&self, key: &PublicKey) -> Option<HashAlg> {
        if !matches!(key.algorithm(), Algorithm::Rsa { .. }) {
            return None;
        }
        match self.handle.best_supported_rsa_hash().await {
            Ok(Some(Some(h))) => Some(h),
            _ => Some(HashAlg::Sha256),
        }
    }

    /// One keyboard-interactive request and its question rounds.
    async fn keyboard_interactive(&mut self) -> Result<Step, RemoteError> {
        const NAME: &str = "keyboard-interactive";
        if self.kbd_tries >= self.target.password_prompts
            || (self.kbd_tries > 0 && !self.kbd_questions_seen)
        {
            return Ok(Step::Done);
        }
        self.kbd_tries += 1;
        // The first questions of a second or later try say the previous
        // answers were refused.
        let mut retry = self.kbd_tries > 1;
        self.note_tried(NAME);
        let user = self.user();
        let r = self
            .handle
            .authenticate_keyboard_interactive_start(user, None)
            .await;
        let mut reply = r.map_err(|e| self.ssh_err(e))?;
        let mut cancelled = false;
        // A server may ask many rounds; a bound keeps a broken one from
        // looping forever.
        for _ in 0..16 {
            match reply {
                KeyboardInteractiveAuthResponse::Success => return Ok(Step::Success),
                KeyboardInteractiveAuthResponse::Failure {
                    remaining_methods, ..
                } => {
                    if !remaining_methods.is_empty() {
                        self.offered = remaining_methods.to_vec();
                    }
                    return Ok(if cancelled { Step::Done } else { Step::Again });
                }
                KeyboardInteractiveAuthResponse::InfoRequest {
                    name,
                    instructions,
                    prompts,
                } => {
                    let questions: Vec<Question> = prompts
                        .into_iter()
                        .map(|p| Question {
                            prompt: p.prompt,
                            echo: p.echo,
                        })
                        .collect();
                    let answers = if questions.is_empty() {
                        Some(Vec::new())
                    } else if cancelled {
                        None
                    } else {
                        self.kbd_questions_seen = true;
                        let asked = self.prompter.keyboard_interactive(
                            &name,
                            &instructions,
                            &questions,
                            retry,
                        );
                        retry = false;
                        asked
                    };
                    let answers = match answers.filter(|a| a.len() == questions.len()) {
                        Some(a) => a,
                        None => {
                            // Cancelled. russh's session waits for the
                            // answers and cannot start another request in
                            // between, so empty ones end the exchange (what
                            // OpenSSH sends for an empty input); the method
                            // is not asked again.
                            cancelled = true;
                            self.note_cancelled(NAME);
                            vec![String::new(); questions.len()]
                        }
                    };
                    let r = self
                        .handle
                        .authenticate_keyboard_interactive_respond(answers)
                        .await;
                    reply = r.map_err(|e| self.ssh_err(e))?;
                }
            }
        }
        Ok(Step::Done)
    }

    /// One password prompt and request.
    async fn password(&mut self) -> Result<Step, RemoteError> {
        const NAME: &str = "password";
        if self.password_tries >= self.target.password_prompts {
            return Ok(Step::Done);
        }
        self.password_tries += 1;
        let retry = self.password_tries > 1;
        let user = self.user();
        let Some(password) = self.prompter.password(user, &self.target.alias, retry) else {
            self.note_cancelled(NAME);
            return Ok(Step::Done);
        };
        self.note_tried(NAME);
        let r = self.handle.authenticate_password(user, password).await;
        let r = r.map_err(|e| self.ssh_err(e))?;
        Ok(if self.update(r) {
            Step::Success
        } else {
            Step::Again
        })
    }
}

/// Reads a private key, asking for its passphrase when it is encrypted (up
/// to `prompts` times; an empty or cancelled answer stops, as in OpenSSH);
/// `None` when it cannot be used.
fn load_key(text: &str, path: &Path, prompter: &dyn Prompter, prompts: u32) -> Option<PrivateKey> {
    match russh::keys::decode_secret_key(text, None) {
        Ok(key) => return Some(key),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(e) => {
            tracing::debug!("skipping {}: {e}", path.display());
            return None;
        }
    }
    for _ in 0..prompts {
        let passphrase = prompter.passphrase(path).filter(|p| !p.is_empty())?;
        match russh::keys::decode_secret_key(text, Some(&passphrase)) {
            Ok(key) => return Some(key),
            Err(e) => tracing::debug!("{}: {e}", path.display()),
        }
    }
    None
}
