//! The app's password dialog against Debian's OpenSSH sshd, which checks
//! the password of a test account that exists only in sshd's private mount
//! namespace (vireo-remote's `tests/sshd/ns.rs`, shared through `#[path]`;
//! root only, skipped otherwise). A wrong password brings the dialog back
//! saying "Permission denied, please try again." (OpenSSH's words) and the
//! right one connects; Cancel stops the questions at once.

#[path = "../../engine/remote/tests/sshd/mod.rs"]
mod sshd;

mod common;

use std::path::Path;
use std::time::Duration;

use common::{click_connection_menu, remember_connection, start_app};
use sshd::Home;
use sshd::ns::{NsSshd, PASSWORD, PASSWORD_ONLY, USER, root_or_skip};
use vireo_tests::desktop::{Xvfb, artifacts_dir, read_log};
use vireo_tests::engine::{Session, serial};

const WAIT: Duration = Duration::from_secs(45);

/// A client HOME trusting `sshd`, remembering an autoconnect connection to
/// `session`'s engine behind it; returns it with the connection's URI.
fn home_with_connection(sshd: &NsSshd, session: &Session) -> (Home, String) {
    let home = sshd.client_home();
    let uri = sshd.uri(session).to_string();
    remember_connection(home.path(), &uri);
    (home, uri)
}

/// Waits until the app's log has `count` lines containing `text`.
fn wait_log(log: &Path, text: &str, count: usize) {
    vireo_tests::desktop::wait_log(log, text, count, WAIT);
}

/// A visible window titled exactly `title` that is none of `old`.
fn new_visible_window(x: &Xvfb, title: &str, old: &[String]) -> String {
    x.wait_for_new_visible_window(title, old, WAIT)
}

/// xdotool key names for `text`, then Return.
fn typed(text: &str) -> Vec<String> {
    let mut keys: Vec<String> = text
        .chars()
        .map(|c| match c {
            '-' => "minus".to_owned(),
            c => c.to_string(),
        })
        .collect();
    keys.push("Return".to_owned());
    keys
}

fn refs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

#[test]
fn wrong_password_brings_the_dialog_back_saying_permission_denied() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let session = Session::new();
    session.ok(&["list"]); // starts the engine
    let sshd = NsSshd::start(PASSWORD_ONLY);
    let (home, uri) = home_with_connection(&sshd, &session);
    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, home.path(), &session, &[]);
    let ask = format!("Enter the password of {USER} on 127.0.0.1.");
    wait_log(
        &log,
        &format!("password dialog shown (retry: false): {ask}"),
        1,
    );
    x.wait_for_window("Password Needed", &mut app, WAIT);
    let first = new_visible_window(&x, "Password Needed", &[]);
    x.press(&first, &refs(&typed("wrong")));
    wait_log(
        &log,
        &format!("password dialog shown (retry: true): Permission denied, please try again. {ask}"),
        1,
    );
    let dialog = new_visible_window(&x, "Password Needed", &[first]);
    x.screenshot(&dialog, &artifacts_dir().join("remote-password-retry.png"));
    x.press(&dialog, &refs(&typed(PASSWORD)));
    wait_log(&log, &format!("connection {uri}: connected"), 1);
    sshd.assert_logged("Failed password for vireotest ", 1);
    sshd.assert_logged("Accepted password for vireotest ", 1);
    assert_eq!(
        read_log(&log).matches("password dialog shown").count(),
        2,
        "{}",
        read_log(&log)
    );
}

#[test]
fn cancelling_the_password_dialog_stops_asking() {
    if !root_or_skip() {
        return;
    }
    let session = Session::new();
    let sshd = NsSshd::start(PASSWORD_ONLY);
    let (home, uri) = home_with_connection(&sshd, &session);
    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, home.path(), &session, &[]);
    wait_log(&log, "password dialog shown (retry: false)", 1);
    x.wait_for_window("Password Needed", &mut app, WAIT);
    let dialog = new_visible_window(&x, "Password Needed", &[]);
    x.press(&dialog, &["Escape"]);
    wait_log(
        &log,
        &format!(
            "connection {uri}: failed: {USER}@127.0.0.1: authentication rejected (the server \
             offered: password; tried: password (cancelled))"
        ),
        1,
    );
    // No second question, and no password ever reached sshd.
    std::thread::sleep(Duration::from_secs(2));
    let text = read_log(&log);
    assert_eq!(text.matches("password dialog shown").count(), 1, "{text}");
    assert_eq!(sshd.count("Failed password"), 0, "{}", sshd.log());
    assert_eq!(sshd.count("Accepted"), 0, "{}", sshd.log());
}

/// The last state the app logged for the connection logged as `conn`.
fn last_state(log: &Path, conn: &str) -> String {
    let prefix = format!("{conn}: ");
    read_log(log)
        .lines()
        .filter_map(|l| l.split_once(&prefix).map(|(_, s)| s.to_owned()))
        .rfind(|s| {
            ["connecting", "connected", "disconnected", "retrying in "]
                .iter()
                .any(|k| s.starts_with(k))
        })
        .unwrap_or_default()
}

#[test]
fn cancelling_the_password_when_reconnecting_stops_the_retries_until_connect() {
    if !root_or_skip() {
        return;
    }
    let _serial = serial();
    let session = Session::new();
    session.ok(&["list"]); // starts the engine
    let sshd = NsSshd::start(PASSWORD_ONLY);
    let (home, uri) = home_with_connection(&sshd, &session);
    let conn = format!("connection {uri}");
    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, home.path(), &session, &[]);
    wait_log(&log, "password dialog shown (retry: false)", 1);
    x.wait_for_window("Password Needed", &mut app, WAIT);
    let first = new_visible_window(&x, "Password Needed", &[]);
    x.press(&first, &refs(&typed(PASSWORD)));
    wait_log(&log, &format!("{conn}: connected"), 1);
    let manager = x.wait_for_window("Vireo", &mut app, WAIT);

    // The connection dropped on the server: the retry asks again, and
    // that question is cancelled.
    let children = sshd.session_processes();
    assert!(!children.is_empty(), "no sshd connection process");
    for pid in children {
        vireo_tests::engine::signal(pid, libc::SIGKILL);
    }
    wait_log(&log, &format!("{conn}: retrying in 1 s"), 1);
    wait_log(&log, "password dialog shown (retry: false)", 2);
    let second = new_visible_window(&x, "Password Needed", std::slice::from_ref(&first));
    x.press(&second, &["Escape"]);
    wait_log(&log, &format!("{conn}: login cancelled, not retried"), 1);

    // No retry and no question for longer than three back-off periods
    // (1 + 2 + 4 s); the row says Disconnected, and why.
    std::thread::sleep(Duration::from_secs(8));
    let text = read_log(&log);
    assert_eq!(text.matches("password dialog shown").count(), 2, "{text}");
    assert_eq!(
        text.matches(&format!("{conn}: retrying")).count(),
        1,
        "{text}"
    );
    assert_eq!(last_state(&log, &conn), "disconnected", "{text}");
    let left = x.visible_windows("Password Needed");
    assert!(left.is_empty(), "{left:?} {first} {second} {text}");
    x.screenshot(
        &manager,
        &artifacts_dir().join("remote-password-cancelled.png"),
    );
    assert_eq!(sshd.count("Failed password"), 0, "{}", sshd.log());

    // Connect from the section's ⋮ menu (its first item) asks again and
    // connects.
    click_connection_menu(&x, &manager, 1, "remote-password-menu-find.png", WAIT);
    x.press(&manager, &["Return"]);
    wait_log(&log, "password dialog shown (retry: false)", 3);
    let third = new_visible_window(&x, "Password Needed", &[first, second]);
    x.press(&third, &refs(&typed(PASSWORD)));
    wait_log(&log, &format!("{conn}: connected"), 2);
    sshd.assert_logged("Accepted password for vireotest ", 2);
    assert_eq!(sshd.count("Failed password"), 0, "{}", sshd.log());
}
