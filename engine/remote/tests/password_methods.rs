//! Password and keyboard-interactive authentication against russh's own
//! SSH server on loopback, which can offer any mix of methods and prompts:
//! the client side (order, prompts, retries, the error listing the offered
//! methods) is what is under test. The same methods against Debian's
//! OpenSSH sshd (a test account in a private mount namespace, as root) are
//! in `openssh_password.rs`.

mod sshd;

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};

use russh::MethodKind;
use russh::server::{Auth, Response};
use sshd::{Home, keygen, runtime};
use vireo_api::ConnectUri;
use vireo_remote::{Connection, Prompter, Question, RemoteError, UnknownHost};

/// Rejections keep offering both methods, as OpenSSH does (up to its
/// MaxAuthTries), rather than russh's default of dropping the tried one.
fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(
            (&[MethodKind::KeyboardInteractive, MethodKind::Password][..]).into(),
        ),
        partial_success: false,
    }
}

struct Server;

impl russh::server::Handler for Server {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if password == "hunter2" {
            Auth::Accept
        } else {
            reject()
        })
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: Cow::Borrowed("vireo-test"),
                instructions: Cow::Borrowed("Answer the question."),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Code: "), false)]),
            });
        };
        Ok(if response.next().as_deref() == Some(b"42".as_slice()) {
            Auth::Accept
        } else {
            reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }
}

/// A russh server offering `methods`, serving connections until dropped;
/// returns its port and the host key's public half.
fn server(home: &Home, methods: &[MethodKind]) -> (u16, std::path::PathBuf) {
    let key_path = home.path().join("server_key");
    keygen(&key_path, "ed25519", "");
    let key = russh::keys::load_secret_key(&key_path, None).unwrap();
    let config = Arc::new(russh::server::Config {
        methods: methods.into(),
        keys: vec![key],
        auth_rejection_time: std::time::Duration::from_millis(1),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        ..Default::default()
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            // Bounded: a test makes a handful of connections.
            for _ in 0..8 {
                let Ok(Ok((stream, _))) =
                    tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept())
                        .await
                else {
                    return;
                };
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, stream, Server).await {
                        let _ = session.await;
                    }
                });
            }
        });
    });
    (port, key_path.with_extension("pub"))
}

#[derive(Default)]
struct Answers {
    passwords: Mutex<Vec<String>>,
    code: Option<String>,
    asked: Mutex<Vec<String>>,
}

impl Prompter for Answers {
    fn passphrase(&self, _: &Path) -> Option<String> {
        None
    }
    fn password(&self, user: &str, host: &str) -> Option<String> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("password {user}@{host}"));
        let mut p = self.passwords.lock().unwrap();
        (!p.is_empty()).then(|| p.remove(0))
    }
    fn keyboard_interactive(
        &self,
        name: &str,
        instructions: &str,
        questions: &[Question],
    ) -> Option<Vec<String>> {
        let q: Vec<String> = questions
            .iter()
            .map(|q| format!("{}{}", q.prompt, if q.echo { "" } else { "(hidden)" }))
            .collect();
        self.asked
            .lock()
            .unwrap()
            .push(format!("{name}: {instructions} {}", q.join(",")));
        self.code.clone().map(|c| vec![c])
    }
    fn confirm_host_key(&self, _: &UnknownHost) -> bool {
        false
    }
}

fn trust(home: &Home, port: u16, public: &Path) {
    let key = std::fs::read_to_string(public).unwrap();
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    std::fs::write(
        home.ssh("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
    )
    .unwrap();
}

fn uri(port: u16) -> ConnectUri {
    format!("vireo+ssh://tester@127.0.0.1:{port}/system")
        .parse()
        .unwrap()
}

#[test]
fn password_is_asked_again_after_a_wrong_one() {
    let home = Home::new();
    let (port, public) = server(&home, &[MethodKind::Password]);
    trust(&home, port, &public);
    let answers = Answers {
        passwords: Mutex::new(vec!["wrong".into(), "hunter2".into()]),
        ..Default::default()
    };
    let rt = runtime();
    let conn = rt
        .block_on(Connection::connect_uri(
            &uri(port),
            &home.settings(None),
            &answers,
        ))
        .unwrap();
    assert_eq!(
        *answers.asked.lock().unwrap(),
        vec!["password tester@127.0.0.1", "password tester@127.0.0.1"]
    );
    assert!(!conn.is_closed());
}

#[test]
fn keyboard_interactive_questions_reach_the_prompter() {
    let home = Home::new();
    let (port, public) = server(
        &home,
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
    );
    trust(&home, port, &public);
    let answers = Answers {
        code: Some("42".into()),
        ..Default::default()
    };
    let rt = runtime();
    rt.block_on(Connection::connect_uri(
        &uri(port),
        &home.settings(None),
        &answers,
    ))
    .unwrap();
    // Keyboard-interactive comes before password, as in OpenSSH.
    assert_eq!(
        *answers.asked.lock().unwrap(),
        vec!["vireo-test: Answer the question. Code: (hidden)"]
    );
}

#[test]
fn three_wrong_passwords_are_rejected_naming_the_methods() {
    let home = Home::new();
    let (port, public) = server(
        &home,
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
    );
    trust(&home, port, &public);
    let answers = Answers {
        passwords: Mutex::new(vec!["a".into(), "b".into(), "c".into(), "hunter2".into()]),
        code: Some("41".into()),
        ..Default::default()
    };
    let err = runtime()
        .block_on(Connection::connect_uri(
            &uri(port),
            &home.settings(None),
            &answers,
        ))
        .unwrap_err();
    assert!(matches!(err, RemoteError::AuthRejected { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "tester@127.0.0.1: authentication rejected (the server offered: \
         keyboard-interactive, password; tried: keyboard-interactive, password)"
    );
    assert_eq!(
        answers.asked.lock().unwrap().len(),
        4,
        "one KI round, three passwords"
    );
}
