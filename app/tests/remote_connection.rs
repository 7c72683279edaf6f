//! The app on a remote host: Debian's OpenSSH `sshd` on a loopback port in
//! front of a real session engine (the SSH test setup is vireo-remote's,
//! one copy shared through `#[path]`). The app starts with a HOME holding
//! a remembered autoconnect connection, a key and known_hosts: it lists the
//! remote VM and follows its state, opens its console (test card checked
//! in a screenshot) with API, events, console and serial on exactly one SSH
//! connection (sshd's log), and reconnects, console included, when sshd's
//! per-connection process is killed. An unknown host key is asked about in
//! a dialog, and accepting it records the key in known_hosts.

#[path = "../../engine/remote/tests/sshd/mod.rs"]
mod sshd;

mod common;

use std::path::Path;
use std::time::Duration;

use common::{click_connection_menu, remember_connection, start_app};
use sshd::{Remote, keygen, openssh_fingerprint, sshd_or_skip};
use vireo_tests::desktop::{Xvfb, artifacts_dir, read_log};
use vireo_tests::engine::{Session, domain_xml, guest, kvm_or_skip, serial};

const WAIT: Duration = Duration::from_secs(45);

/// sshd in front of `session`'s engine and a client HOME with a key it
/// accepts, remembering an autoconnect connection to it; `trusted`:
/// whether known_hosts already has the host key.
fn remembered_remote(session: &Session, trusted: bool) -> Remote {
    let remote = Remote::new(session, trusted);
    remember_connection(remote.home.path(), &remote.uri);
    remote
}

/// Waits until the app's log has `count` lines containing `text`.
fn wait_log(log: &Path, text: &str, count: usize) {
    vireo_tests::desktop::wait_log(log, text, count, WAIT);
}

#[test]
fn remote_vms_console_on_one_ssh_connection_and_reconnect() {
    if !kvm_or_skip() || !sshd_or_skip() {
        return;
    }
    let _serial = serial();
    let session = Session::new();
    session.define(&domain_xml("demo", &guest("demo"), ""));
    let remote = remembered_remote(&session, true);
    let conn = format!("connection {}", remote.uri);

    let x = Xvfb::start();
    let (mut app, log) = start_app(
        &x,
        remote.home.path(),
        &session,
        &["--connect", &remote.uri, "--show-domain-console", "demo"],
    );
    // The remembered connection connects at start and lists the VM.
    wait_log(&log, &format!("{conn}: connected"), 1);
    wait_log(&log, &format!("{conn}: vm demo: shut off"), 1);
    let manager = x.wait_for_window("Vireo", &mut app, WAIT);
    x.screenshot(&manager, &artifacts_dir().join("remote-manager.png"));

    // Its state follows the engine: started and stopped from outside.
    session.ok(&["start", "demo"]);
    wait_log(&log, &format!("{conn}: vm demo: running"), 1);

    // The console (opened on that connection) shows the test card.
    let window = x.wait_for_window("demo – Vireo", &mut app, WAIT);
    wait_log(&log, "console demo: attached", 1);
    wait_log(&log, "serial demo: attached", 1);
    x.wait_for_test_card(&window, "remote-console.png", &log, WAIT);
    // API, events, console and serial: one SSH connection, one login.
    assert_eq!(
        (remote.sshd.connections(), remote.sshd.publickey_logins()),
        (1, 1),
        "{}",
        remote.sshd.log()
    );

    // The SSH connection killed on the server: the row shows the retry,
    // the app connects again, and the console comes back.
    let children = remote.sshd.session_processes();
    assert!(!children.is_empty(), "no sshd connection process");
    for pid in children {
        vireo_tests::engine::signal(pid, libc::SIGKILL);
    }
    wait_log(&log, &format!("{conn}: retrying in 1 s"), 1);
    wait_log(&log, &format!("{conn}: connected"), 2);
    wait_log(&log, "vm window demo: connection back", 1);
    wait_log(&log, "console demo: attached", 2);
    wait_log(&log, "serial demo: attached", 2);
    x.wait_for_test_card(&window, "remote-console-reconnected.png", &log, WAIT);
    assert_eq!(remote.sshd.connections(), 2, "{}", remote.sshd.log());

    session.ok(&["destroy", "demo"]);
    wait_log(&log, &format!("{conn}: vm demo: shut off"), 2);

    // The host gone for good (sshd stopped): retries back off, 1 s then 2 s.
    let pid = std::fs::read_to_string(remote.sshd.dir.path().join("sshd.pid")).unwrap();
    let children = remote.sshd.session_processes();
    vireo_tests::engine::signal(pid.trim().parse().unwrap(), libc::SIGKILL);
    for child in children {
        vireo_tests::engine::signal(child, libc::SIGKILL);
    }
    wait_log(&log, &format!("{conn}: retrying in 1 s"), 2);
    wait_log(&log, &format!("{conn}: retrying in 2 s"), 1);
    x.screenshot(&manager, &artifacts_dir().join("remote-retrying.png"));
}

#[test]
fn unknown_host_key_is_asked_about_and_recorded_when_accepted() {
    if !sshd_or_skip() {
        return;
    }
    let session = Session::new();
    session.ok(&["list"]);
    let remote = remembered_remote(&session, false);
    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, remote.home.path(), &session, &[]);
    let fp = openssh_fingerprint(&remote.sshd.host_public());
    wait_log(
        &log,
        &format!(
            "host key dialog shown: [127.0.0.1]:{} ED25519 {fp}",
            remote.sshd.port
        ),
        1,
    );
    x.wait_for_window("Unknown Host Key", &mut app, WAIT);
    let dialog = visible_window(&x, "Unknown Host Key");
    x.screenshot(&dialog, &artifacts_dir().join("remote-unknown-host.png"));
    assert!(!remote.home.ssh("known_hosts").exists());
    // Cancel is the default; Alt+C is Trust and Connect's mnemonic (Tab,
    // Return depended on GTK having focused Cancel before the keys came).
    x.press(&dialog, &["alt+c"]);
    wait_log(&log, &format!("connection {}: connected", remote.uri), 1);
    assert_eq!(
        std::fs::read_to_string(remote.home.ssh("known_hosts")).unwrap(),
        remote.sshd.known_hosts_line()
    );
}

#[test]
fn changed_host_key_is_refused_and_shown() {
    if !sshd_or_skip() {
        return;
    }
    let session = Session::new();
    session.ok(&["list"]);
    let remote = remembered_remote(&session, false);
    // known_hosts records another key for this host.
    let other = remote.home.path().join("other_ed25519");
    keygen(&other, "ed25519", "");
    let public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    let recorded = format!("[127.0.0.1]:{} {}\n", remote.sshd.port, key.join(" "));
    std::fs::write(remote.home.ssh("known_hosts"), &recorded).unwrap();

    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, remote.home.path(), &session, &[]);
    let conn = format!("connection {}", remote.uri);
    wait_log(&log, "REMOTE HOST IDENTIFICATION HAS CHANGED", 1);
    wait_log(
        &log,
        &format!(
            "toast: The host key of [127.0.0.1]:{} has changed",
            remote.sshd.port
        ),
        1,
    );
    let manager = x.wait_for_window("Vireo", &mut app, WAIT);
    x.screenshot(
        &manager,
        &artifacts_dir().join("remote-host-key-changed.png"),
    );
    // Refused: no login, no retry, the recorded key kept.
    std::thread::sleep(Duration::from_secs(2));
    let text = read_log(&log);
    assert!(!text.contains(&format!("{conn}: connected")), "{text}");
    assert!(!text.contains(&format!("{conn}: retrying")), "{text}");
    assert!(!text.contains("host key dialog shown"), "{text}");
    assert_eq!(remote.sshd.publickey_logins(), 0);
    assert_eq!(
        std::fs::read_to_string(remote.home.ssh("known_hosts")).unwrap(),
        recorded
    );
}

/// A visible window titled exactly `title`.
fn visible_window(x: &Xvfb, title: &str) -> String {
    x.wait_for_new_visible_window(title, &[], WAIT)
}

/// xdotool key names for `text`.
fn keys(text: &str) -> Vec<String> {
    text.chars()
        .map(|c| match c {
            '.' => "period".to_owned(),
            '-' => "minus".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[test]
fn add_connection_dialog_remembers_the_connection() {
    if !sshd_or_skip() {
        return;
    }
    let session = Session::new();
    session.ok(&["list"]);
    let remote = remembered_remote(&session, true);
    let saved = remote.home.path().join(".config/vireo/connections.json");
    std::fs::remove_file(&saved).unwrap();
    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, remote.home.path(), &session, &[]);
    x.wait_for_window("Vireo", &mut app, WAIT);
    let manager = visible_window(&x, "Vireo");
    wait_log(&log, "connection vireo:///session: connected", 1);
    wait_log(&log, "first frame drawn", 1);
    x.press(&manager, &["ctrl+shift+a"]);
    wait_log(&log, "add connection dialog shown", 1);
    x.wait_for_window("Add Connection", &mut app, WAIT);
    let dialog = visible_window(&x, "Add Connection");
    // Host, then Tab to User (left empty), Tab to Port.
    let mut typed = keys("127.0.0.1");
    typed.push("Tab".into());
    typed.push("Tab".into());
    typed.extend(keys(&remote.sshd.port.to_string()));
    let typed: Vec<&str> = typed.iter().map(String::as_str).collect();
    x.press(&dialog, &typed);
    x.screenshot(&dialog, &artifacts_dir().join("remote-add-connection.png"));
    // Enter in a field adds (the default response).
    x.type_keys(&dialog, &["Return"]);
    let uri = format!("vireo+ssh://127.0.0.1:{}/system", remote.sshd.port);
    wait_log(&log, &format!("connection {uri}: added"), 1);
    // Remembered (written atomically, read back on the next start).
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains(&format!("\"uri\": \"{uri}\"")), "{text}");
    // It connects at once: SSH logs in, but this host has no system engine,
    // and the error says which socket is missing.
    wait_log(&log, &format!("connection {uri}: failed: "), 1);
    let failed = read_log(&log)
        .lines()
        .find(|l| l.contains(&format!("connection {uri}: failed: ")))
        .unwrap()
        .to_owned();
    assert!(failed.contains("/run/vireo/vireod.sock"), "{failed}");
    assert_eq!(remote.sshd.publickey_logins(), 1);
    wait_log(&log, "toast: Could not connect to the engine", 1);
    x.screenshot(&manager, &artifacts_dir().join("remote-added.png"));

    // The next start lists it beside the local one, not connected (its
    // Connect at start-up switch was left off).
    drop(app);
    let (_app, log) = start_app(&x, remote.home.path(), &session, &[]);
    wait_log(&log, &format!("connection {uri}: disconnected"), 1);
    wait_log(&log, "connection vireo:///session: connected", 1);
    std::thread::sleep(Duration::from_secs(1));
    // No new SSH connection.
    assert_eq!(remote.sshd.connections(), 1, "{}", remote.sshd.log());
}

#[test]
fn connection_menu_disconnects_connects_and_removes() {
    if !sshd_or_skip() {
        return;
    }
    let session = Session::new();
    session.define(&domain_xml("demo", &guest("demo"), ""));
    let remote = remembered_remote(&session, true);
    let conn = format!("connection {}", remote.uri);
    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, remote.home.path(), &session, &[]);
    x.wait_for_window("Vireo", &mut app, WAIT);
    let manager = visible_window(&x, "Vireo");
    wait_log(&log, &format!("{conn}: vm demo: shut off"), 1);
    wait_log(&log, "connection vireo:///session: connected", 1);

    // Connect, Disconnect, Remove (the menu opens on the first): the
    // second disconnects.
    click_connection_menu(&x, &manager, 1, "remote-menu-find.png", WAIT);
    x.press(&manager, &["Down", "Return"]);
    wait_log(&log, &format!("{conn}: disconnected"), 1);
    assert!(!read_log(&log).contains(&format!("{conn}: removed")));
    x.screenshot(
        &manager,
        &artifacts_dir().join("remote-menu-disconnected.png"),
    );
    // The first connects again.
    click_connection_menu(&x, &manager, 1, "remote-menu-find.png", WAIT);
    x.press(&manager, &["Return"]);
    wait_log(&log, &format!("{conn}: connected"), 2);
    assert_eq!(remote.sshd.connections(), 2, "{}", remote.sshd.log());
    // The third removes it, from the file too.
    click_connection_menu(&x, &manager, 1, "remote-menu-find.png", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    x.screenshot(&manager, &artifacts_dir().join("remote-menu-open.png"));
    x.press(&manager, &["Down", "Down", "Return"]);
    wait_log(&log, &format!("{conn}: removed"), 1);
    let saved =
        std::fs::read_to_string(remote.home.path().join(".config/vireo/connections.json")).unwrap();
    assert!(!saved.contains(&remote.uri), "{saved}");
    x.screenshot(&manager, &artifacts_dir().join("remote-menu-removed.png"));
}
