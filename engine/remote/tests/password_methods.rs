//! Password and keyboard-interactive authentication against russh's own
//! SSH server on loopback, which can offer any mix of methods and prompts:
//! the client side (order, prompts, retries, the error listing the offered
//! methods) is what is under test. The same methods against Debian's
//! OpenSSH sshd (a test account in a private mount namespace, as root) are
//! in `openssh_password.rs`.

mod sshd;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use russh::MethodKind;
use russh::server::{Auth, Response};
use sshd::prompter::{Asked, Scripted};
use sshd::{Home, keygen, known_hosts_line, runtime};
use vireo_api::ConnectUri;
use vireo_remote::{Connection, RemoteError};

/// A server offering `methods`.
struct Server {
    methods: Vec<MethodKind>,
}

impl Server {
    /// Rejections keep offering every method, as OpenSSH does (up to its
    /// MaxAuthTries), rather than russh's default of dropping the tried one.
    fn reject(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods.as_slice().into()),
            partial_success: false,
        }
    }
}

impl russh::server::Handler for Server {
    type Error = russh::Error;

    async fn auth_password(&mut self, _user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if password == "hunter2" {
            Auth::Accept
        } else {
            self.reject()
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
            self.reject()
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
    let methods = methods.to_vec();
    let key_path = home.path().join("server_key");
    keygen(&key_path, "ed25519", "");
    let key = russh::keys::load_secret_key(&key_path, None).unwrap();
    let config = Arc::new(russh::server::Config {
        methods: methods.as_slice().into(),
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
                let server = Server {
                    methods: methods.clone(),
                };
                tokio::spawn(async move {
                    if let Ok(session) = russh::server::run_stream(config, stream, server).await {
                        let _ = session.await;
                    }
                });
            }
        });
    });
    (port, key_path.with_extension("pub"))
}

/// What the prompter records for the server's keyboard-interactive
/// question (first, or again).
fn ki(retry: bool) -> Asked {
    Asked::hidden_question("vireo-test", "Answer the question.", "Code: ", retry)
}

/// What it records for a password question.
fn pw(retry: bool) -> Asked {
    Asked::password("tester", "127.0.0.1", retry)
}

/// Connects to a russh server offering `methods` with `answers` and
/// `config` as ~/.ssh/config; the connection lives as long as the runtime
/// returned with it.
fn connect_with(
    methods: &[MethodKind],
    config: &str,
    answers: &Scripted,
) -> (tokio::runtime::Runtime, Result<Connection, RemoteError>) {
    let home = Home::new();
    let (port, public) = server(&home, methods);
    trust(&home, port, &public);
    if !config.is_empty() {
        std::fs::write(home.ssh("config"), config).unwrap();
    }
    let rt = runtime();
    let conn = rt.block_on(Connection::connect_uri(
        &uri(port),
        &home.settings(None),
        answers,
    ));
    (rt, conn)
}

fn connect(
    methods: &[MethodKind],
    config: &str,
    answers: &Scripted,
) -> Result<Connection, RemoteError> {
    connect_with(methods, config, answers).1
}

fn trust(home: &Home, port: u16, public: &Path) {
    std::fs::write(home.ssh("known_hosts"), known_hosts_line(public, port)).unwrap();
}

fn uri(port: u16) -> ConnectUri {
    format!("vireo+ssh://tester@127.0.0.1:{port}/system")
        .parse()
        .unwrap()
}

#[test]
fn password_is_asked_again_after_a_wrong_one() {
    let a = Scripted::answering(&["wrong", "hunter2"], &[]);
    let (_rt, conn) = connect_with(&[MethodKind::Password], "", &a);
    let conn = conn.unwrap();
    // The second question says the first answer was refused.
    assert_eq!(a.asked(), vec![pw(false), pw(true)]);
    assert!(!conn.is_closed());
}

#[test]
fn password_is_accepted_on_the_third_try() {
    let a = Scripted::answering(&["a", "b", "hunter2"], &[]);
    connect(&[MethodKind::Password], "", &a).unwrap();
    assert_eq!(a.asked(), vec![pw(false), pw(true), pw(true)]);
}

#[test]
fn keyboard_interactive_questions_reach_the_prompter() {
    let a = Scripted::answering(&[], &["42"]);
    connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "",
        &a,
    )
    .unwrap();
    // Keyboard-interactive comes before password, as in OpenSSH.
    assert_eq!(a.asked(), vec![ki(false)]);
}

#[test]
fn keyboard_interactive_is_asked_three_times_then_password() {
    // Two wrong codes, the right one on the third try.
    let a = Scripted::answering(&[], &["1", "2", "42"]);
    connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "",
        &a,
    )
    .unwrap();
    assert_eq!(a.asked(), vec![ki(false), ki(true), ki(true)]);
    // Three wrong codes: then the password, which is right.
    let a = Scripted::answering(&["hunter2"], &["1", "2", "3"]);
    connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "",
        &a,
    )
    .unwrap();
    assert_eq!(a.asked(), vec![ki(false), ki(true), ki(true), pw(false)]);
}

#[test]
fn three_wrong_answers_per_method_are_rejected_naming_the_methods() {
    let a = Scripted::answering(&["a", "b", "c", "hunter2"], &["41", "40", "39", "42"]);
    let err = connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "",
        &a,
    )
    .unwrap_err();
    assert!(matches!(err, RemoteError::AuthRejected { .. }), "{err}");
    assert!(!err.cancelled_by_user(), "{err}");
    assert_eq!(
        err.to_string(),
        "tester@127.0.0.1: authentication rejected (the server offered: \
         keyboard-interactive, password; tried: keyboard-interactive, password)"
    );
    assert_eq!(
        a.asked(),
        vec![ki(false), ki(true), ki(true), pw(false), pw(true), pw(true)],
        "three tries of each, never a fourth"
    );
}

#[test]
fn cancelling_keyboard_interactive_moves_on_to_password_at_once() {
    let a = Scripted::answering(&["hunter2"], &[]);
    connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "",
        &a,
    )
    .unwrap();
    assert_eq!(a.asked(), vec![ki(false), pw(false)]);
}

#[test]
fn cancelling_the_password_prompt_stops_asking() {
    // One wrong password, then Cancel: no third prompt.
    let a = Scripted::answering(&["wrong"], &[]);
    let err = connect(&[MethodKind::Password], "", &a).unwrap_err();
    assert_eq!(a.asked(), vec![pw(false), pw(true)]);
    assert!(err.cancelled_by_user(), "{err}");
    assert_eq!(
        err.to_string(),
        "tester@127.0.0.1: authentication rejected (the server offered: \
         password; tried: password (cancelled))"
    );
    // Cancelling everything names both methods as cancelled.
    let a = Scripted::answering(&[], &[]);
    let err = connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "",
        &a,
    )
    .unwrap_err();
    assert_eq!(a.asked(), vec![ki(false), pw(false)]);
    assert_eq!(
        err.to_string(),
        "tester@127.0.0.1: authentication rejected (the server offered: \
         keyboard-interactive, password; tried: keyboard-interactive (cancelled), \
         password (cancelled))"
    );
}

#[test]
fn ssh_config_sets_the_order_and_the_number_of_prompts() {
    // Password first, two tries each, as PreferredAuthentications and
    // NumberOfPasswordPrompts say.
    let config = "Host 127.0.0.1\n  PreferredAuthentications password,keyboard-interactive\n  \
                  NumberOfPasswordPrompts 2\n";
    let a = Scripted::answering(&["a", "b", "c"], &["1", "2", "42"]);
    let err = connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        config,
        &a,
    )
    .unwrap_err();
    assert_eq!(a.asked(), vec![pw(false), pw(true), ki(false), ki(true)]);
    assert!(
        err.to_string()
            .ends_with("tried: password, keyboard-interactive)"),
        "{err}"
    );
    // A method left out of PreferredAuthentications is never tried, and
    // NumberOfPasswordPrompts 0 asks nothing.
    let a = Scripted::answering(&["hunter2"], &["42"]);
    let err = connect(
        &[MethodKind::KeyboardInteractive, MethodKind::Password],
        "PreferredAuthentications publickey,keyboard-interactive\nNumberOfPasswordPrompts 0\n",
        &a,
    )
    .unwrap_err();
    assert!(a.asked().is_empty(), "{:?}", a.asked());
    assert!(err.to_string().ends_with("tried: nothing)"), "{err}");
}
