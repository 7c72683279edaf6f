//! A scripted [`Prompter`]: answers from queues (an empty queue cancels the
//! question, as a dialog's Cancel) and a record of every question it was
//! asked, in order, with what the connection told it (a retry after a
//! refused answer; the keyboard-interactive name, instructions, prompts and
//! echo flags; the host key shown). Shared by `openssh.rs`,
//! `openssh_password.rs` (OpenSSH's sshd) and `password_methods.rs`
//! (russh's server).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vireo_remote::{Prompter, Question, UnknownHost};

/// One question a [`Scripted`] prompter was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// A key file's passphrase.
    Passphrase(PathBuf),
    /// A password; `retry`: the previous answer was refused.
    Password {
        user: String,
        host: String,
        retry: bool,
    },
    /// One round of keyboard-interactive questions; `retry`: the previous
    /// answers were refused.
    KeyboardInteractive {
        name: String,
        instructions: String,
        questions: Vec<Question>,
        retry: bool,
    },
    /// Whether to trust an unknown host key.
    HostKey {
        host: String,
        key_type: String,
        fingerprint: String,
    },
}

impl Asked {
    /// The password question for `user` on `host`.
    pub fn password(user: &str, host: &str, retry: bool) -> Self {
        Self::Password {
            user: user.into(),
            host: host.into(),
            retry,
        }
    }

    /// A keyboard-interactive round of one question whose answer is not
    /// echoed (a password or code).
    pub fn hidden_question(name: &str, instructions: &str, prompt: &str, retry: bool) -> Self {
        Self::KeyboardInteractive {
            name: name.into(),
            instructions: instructions.into(),
            questions: vec![Question {
                prompt: prompt.into(),
                echo: false,
            }],
            retry,
        }
    }
}

/// Answers from queues, taken in order: `passphrases` for key files,
/// `passwords`, `answers` for keyboard-interactive (one a round: the
/// servers under test ask one question at a time); an empty queue cancels.
/// Unknown host keys are trusted when `accept_host`.
#[derive(Default)]
pub struct Scripted {
    pub accept_host: bool,
    pub passphrases: Mutex<Vec<String>>,
    pub passwords: Mutex<Vec<String>>,
    pub answers: Mutex<Vec<String>>,
    /// Every question so far (read with [`Scripted::asked`]).
    pub asked: Mutex<Vec<Asked>>,
}

fn queue(items: &[&str]) -> Mutex<Vec<String>> {
    Mutex::new(items.iter().map(|s| s.to_string()).collect())
}

fn next(queue: &Mutex<Vec<String>>) -> Option<String> {
    let mut q = queue.lock().unwrap();
    (!q.is_empty()).then(|| q.remove(0))
}

impl Scripted {
    /// Answers `passwords` to password questions and `answers` to
    /// keyboard-interactive ones.
    pub fn answering(passwords: &[&str], answers: &[&str]) -> Self {
        Self {
            passwords: queue(passwords),
            answers: queue(answers),
            ..Default::default()
        }
    }

    /// Every question so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }

    fn record(&self, asked: Asked) {
        self.asked.lock().unwrap().push(asked);
    }
}

impl Prompter for Scripted {
    fn passphrase(&self, key: &Path) -> Option<String> {
        self.record(Asked::Passphrase(key.to_owned()));
        next(&self.passphrases)
    }

    fn password(&self, user: &str, host: &str, retry: bool) -> Option<String> {
        self.record(Asked::password(user, host, retry));
        next(&self.passwords)
    }

    fn keyboard_interactive(
        &self,
        name: &str,
        instructions: &str,
        questions: &[Question],
        retry: bool,
    ) -> Option<Vec<String>> {
        self.record(Asked::KeyboardInteractive {
            name: name.into(),
            instructions: instructions.into(),
            questions: questions.to_vec(),
            retry,
        });
        next(&self.answers).map(|a| vec![a])
    }

    fn confirm_host_key(&self, host: &UnknownHost) -> bool {
        self.record(Asked::HostKey {
            host: host.host.clone(),
            key_type: host.key_type.clone(),
            fingerprint: host.fingerprint.clone(),
        });
        self.accept_host
    }
}
