//! The app's password dialog against Debian's OpenSSH sshd, which checks
//! the password of a test account that exists only in sshd's private mount
//! namespace (vireo-remote's `tests/sshd/ns.rs`, shared through `#[path]`;
//! root only, skipped otherwise). A wrong password brings the dialog back
//! saying "Permission denied, please try again." (OpenSSH's words) and the
//! right one connects; Cancel stops the questions at once.

#[path = "../../engine/remote/tests/sshd/mod.rs"]
mod sshd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sshd::Home;
use sshd::ns::{NsSshd, PASSWORD, PASSWORD_ONLY, USER, root_or_skip};
use vireo_tests::desktop::{Reaper, Xvfb, artifacts_dir};
use vireo_tests::engine::{Session, serial};

const WAIT: Duration = Duration::from_secs(45);

/// A client HOME trusting `sshd`, remembering an autoconnect connection to
/// `session`'s engine behind it; returns it with the connection's URI.
fn home_with_connection(sshd: &NsSshd, session: &Session) -> (Home, String) {
    let home = sshd.client_home();
    let uri = sshd.uri(session).to_string();
    let config = home.path().join(".config/vireo");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("connections.json"),
        format!(r#"{{"connections":[{{"uri":"{uri}","autoconnect":true}}]}}"#),
    )
    .unwrap();
    (home, uri)
}

/// Starts the app with `home`, logging to a file.
fn start_app(x: &Xvfb, home: &Home, session: &Session) -> (Reaper, PathBuf) {
    let log = home.path().join("app.log");
    let config = home.path().join(".config");
    let app = x.spawn_with(
        Path::new(env!("CARGO_BIN_EXE_vireo")),
        &[],
        &[
            ("HOME", home.path().as_os_str()),
            ("XDG_CONFIG_HOME", config.as_os_str()),
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            // No agent and no key: only the password can log in.
            ("SSH_AUTH_SOCK", std::ffi::OsStr::new("")),
            ("VIREO_LOG", std::ffi::OsStr::new("vireo_app=info")),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    (app, log)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the app's log has `count` lines containing `text`.
fn wait_log(log: &Path, text: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while read(log).lines().filter(|l| l.contains(text)).count() < count {
        assert!(
            Instant::now() < deadline,
            "the app never logged {text:?} ({count}×):\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The visible windows titled exactly `title` (xdotool's decimal ids).
fn visible_windows(x: &Xvfb, title: &str) -> Vec<String> {
    let out = Command::new("xdotool")
        .env("DISPLAY", &x.display)
        .args(["search", "--onlyvisible", "--name"])
        .arg(format!("^{title}$"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A visible window titled exactly `title` that is none of `old` (a dialog
/// that answered may still be mapped for a moment).
fn new_visible_window(x: &Xvfb, title: &str, old: &[String]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(id) = visible_windows(x, title)
            .into_iter()
            .find(|id| !old.contains(id))
        {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no new visible window titled {title}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Presses `keys` in `window` once it can take the focus (bounded).
fn press(x: &Xvfb, window: &str, keys: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new("xdotool")
            .env("DISPLAY", &x.display)
            .args(["windowfocus", "--sync", window])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "window {window} never took the focus"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    x.type_keys(window, keys);
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
    let (mut app, log) = start_app(&x, &home, &session);
    let ask = format!("Enter the password of {USER} on 127.0.0.1.");
    wait_log(
        &log,
        &format!("password dialog shown (retry: false): {ask}"),
        1,
    );
    x.wait_for_window("Password Needed", &mut app, WAIT);
    let first = new_visible_window(&x, "Password Needed", &[]);
    press(&x, &first, &refs(&typed("wrong")));
    wait_log(
        &log,
        &format!("password dialog shown (retry: true): Permission denied, please try again. {ask}"),
        1,
    );
    let dialog = new_visible_window(&x, "Password Needed", &[first]);
    x.screenshot(&dialog, &artifacts_dir().join("remote-password-retry.png"));
    press(&x, &dialog, &refs(&typed(PASSWORD)));
    wait_log(&log, &format!("connection {uri}: connected"), 1);
    sshd.assert_logged("Failed password for vireotest ", 1);
    sshd.assert_logged("Accepted password for vireotest ", 1);
    assert_eq!(
        read(&log).matches("password dialog shown").count(),
        2,
        "{}",
        read(&log)
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
    let (mut app, log) = start_app(&x, &home, &session);
    wait_log(&log, "password dialog shown (retry: false)", 1);
    x.wait_for_window("Password Needed", &mut app, WAIT);
    let dialog = new_visible_window(&x, "Password Needed", &[]);
    press(&x, &dialog, &["Escape"]);
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
    let text = read(&log);
    assert_eq!(text.matches("password dialog shown").count(), 1, "{text}");
    assert_eq!(sshd.count("Failed password"), 0, "{}", sshd.log());
    assert_eq!(sshd.count("Accepted"), 0, "{}", sshd.log());
}

/// Clicks the ⋮ menu button of the `index`th connection section, found
/// after layout as the right-most dark pixels below the header bar (as in
/// `remote_connection.rs`).
fn click_connection_menu(x: &Xvfb, window: &str, index: usize) {
    let shot = artifacts_dir().join("remote-password-menu-find.png");
    let deadline = Instant::now() + WAIT;
    loop {
        x.screenshot(window, &shot);
        let img = image::open(&shot).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        let rightmost: Vec<(u32, u32)> = (60..h)
            .filter_map(|y| {
                (w / 2..w.saturating_sub(40))
                    .rev()
                    .find(|&x| img.get_pixel(x, y).0.iter().all(|&c| c < 0x60))
                    .map(|x| (y, x))
            })
            .collect();
        let edge = rightmost.iter().map(|&(_, x)| x).max().unwrap_or(0);
        let mut groups: Vec<(u32, u32, u32)> = Vec::new(); // (y0, y1, x)
        for &(y, x) in rightmost.iter().filter(|&&(_, x)| x + 4 >= edge) {
            match groups.last_mut() {
                Some(g) if y - g.1 <= 6 => g.1 = y,
                _ => groups.push((y, y, x.saturating_sub(1))),
            }
        }
        if let Some(&(y0, y1, x0)) = groups.get(index) {
            x.click(window, 20, h - 20);
            std::thread::sleep(Duration::from_millis(300));
            x.click(window, x0 + 1, y0.midpoint(y1));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no menu button {index} (edge {edge}, groups {groups:?}); see {}",
            shot.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The last state the app logged for the connection logged as `conn`.
fn last_state(log: &Path, conn: &str) -> String {
    let prefix = format!("{conn}: ");
    read(log)
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
    let (mut app, log) = start_app(&x, &home, &session);
    wait_log(&log, "password dialog shown (retry: false)", 1);
    x.wait_for_window("Password Needed", &mut app, WAIT);
    let first = new_visible_window(&x, "Password Needed", &[]);
    press(&x, &first, &refs(&typed(PASSWORD)));
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
    press(&x, &second, &["Escape"]);
    wait_log(&log, &format!("{conn}: login cancelled, not retried"), 1);

    // No retry and no question for longer than three back-off periods
    // (1 + 2 + 4 s); the row says Disconnected, and why.
    std::thread::sleep(Duration::from_secs(8));
    let text = read(&log);
    assert_eq!(text.matches("password dialog shown").count(), 2, "{text}");
    assert_eq!(
        text.matches(&format!("{conn}: retrying")).count(),
        1,
        "{text}"
    );
    assert_eq!(last_state(&log, &conn), "disconnected", "{text}");
    let left = visible_windows(&x, "Password Needed");
    assert!(left.is_empty(), "{left:?} {first} {second} {text}");
    x.screenshot(
        &manager,
        &artifacts_dir().join("remote-password-cancelled.png"),
    );
    assert_eq!(sshd.count("Failed password"), 0, "{}", sshd.log());

    // Connect from the section's ⋮ menu (its first item) asks again and
    // connects.
    click_connection_menu(&x, &manager, 1);
    press(&x, &manager, &["Return"]);
    wait_log(&log, "password dialog shown (retry: false)", 3);
    let third = new_visible_window(&x, "Password Needed", &[first, second]);
    press(&x, &third, &refs(&typed(PASSWORD)));
    wait_log(&log, &format!("{conn}: connected"), 2);
    sshd.assert_logged("Accepted password for vireotest ", 2);
    assert_eq!(sshd.count("Failed password"), 0, "{}", sshd.log());
}
