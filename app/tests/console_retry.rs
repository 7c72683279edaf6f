//! The VM window re-attaching its console by itself, against a real
//! session engine and a real vireo-vmm. The attach fails for a real reason:
//! the VM runs but its VNC socket is out of the engine's reach (moved
//! aside in the VM's runtime folder, as when the VMM has not bound it yet),
//! so the engine refuses `AttachVnc`. Once the socket is back, the window
//! shows the guest without anyone pressing anything; after the retries run
//! out, nothing more is tried until Reconnect, which brings a fresh budget.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_tests::desktop::{Reaper, Xvfb, artifacts_dir};
use vireo_tests::engine::{Session, domain_xml, guest, kvm_or_skip, serial};

/// Adwaita's suggested-action blue: the Reconnect button (Run is hidden
/// while the VM runs).
const BLUE: [u8; 3] = [0x35, 0x84, 0xe4];

/// A running demo VM whose VNC socket is moved aside; returns the socket's
/// path and where it went.
fn running_vm_without_vnc(session: &Session) -> (PathBuf, PathBuf) {
    session.define(&domain_xml("demo", &guest("demo"), ""));
    session.ok(&["start", "demo"]);
    let uuid = session.info("demo").summary.uuid;
    session.wait_serial(&uuid, "demo=ready", Duration::from_secs(60));
    let socket = session
        .engine_dir()
        .join("vms")
        .join(uuid.to_string())
        .join("vnc.sock");
    let aside = socket.with_extension("sock.aside");
    // A bound unix socket keeps serving under its new name.
    std::fs::rename(&socket, &aside).unwrap();
    (socket, aside)
}

/// Starts the app on `session`'s engine with the demo VM's window.
fn start_app(x: &Xvfb, session: &Session) -> (Reaper, PathBuf, String) {
    let log = session.dir.path().join("app.log");
    let mut app = x.spawn_with(
        Path::new(env!("CARGO_BIN_EXE_vireo")),
        &["--show-domain-console", "demo"],
        &[
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            ("VIREO_LOG", std::ffi::OsStr::new("vireo_app=info")),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    let window = x.wait_for_window("demo – Vireo", &mut app, Duration::from_secs(60));
    (app, log, window)
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn count(log: &Path, text: &str) -> usize {
    read_log(log).lines().filter(|l| l.contains(text)).count()
}

/// Waits until `log` has `n` lines containing `text`.
fn wait_log(log: &Path, text: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while count(log, text) < n {
        assert!(
            Instant::now() < deadline,
            "the app never logged {text:?} ({n}×) within {timeout:?}:\n{}",
            read_log(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The waits the app announced before its automatic retries, in seconds,
/// from lines such as "retry 2 of 4 in 2 s".
fn announced_waits(log: &Path) -> Vec<u64> {
    read_log(log)
        .lines()
        .filter_map(|l| l.split_once("; retry ")?.1.split_once(" in "))
        .filter_map(|(_, s)| s.strip_suffix(" s")?.parse().ok())
        .collect()
}

#[test]
fn console_attaches_by_itself_once_the_vnc_server_is_reachable_again() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    let (socket, aside) = running_vm_without_vnc(&session);
    let x = Xvfb::start();
    let (_app, log, window) = start_app(&x, &session);

    // Refused twice by the engine, each time with a retry scheduled a
    // little later; the page offers Reconnect meanwhile.
    wait_log(&log, "; retry 2 of 4 in 2 s", 1, Duration::from_secs(60));
    assert!(
        read_log(&log).contains("has no VNC display"),
        "the attach failed for another reason:\n{}",
        read_log(&log)
    );
    x.wait_for_colour(&window, BLUE, 200, Duration::from_secs(10));
    x.screenshot(
        &window,
        &artifacts_dir().join("console-retry-unavailable.png"),
    );

    std::fs::rename(&aside, &socket).unwrap();
    x.wait_for_test_card(
        &window,
        "console-retry-attached.png",
        &log,
        Duration::from_secs(30),
    );
    wait_log(&log, "console demo: attached", 1, Duration::from_secs(10));
    assert_eq!(announced_waits(&log), [1, 2], "retries as announced");
    // The engine's reason ("no <graphics type='vnc'>") showed as text, not
    // as broken Pango markup.
    assert_eq!(count(&log, "from markup"), 0, "{}", read_log(&log));
    assert!(
        count(&log, "console demo: trying to attach again") >= 2,
        "attached without an automatic retry?\n{}",
        read_log(&log)
    );
    session.ok(&["destroy", "demo"]);
}

#[test]
fn after_the_retries_run_out_reconnect_tries_again_with_a_fresh_budget() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    let (socket, aside) = running_vm_without_vnc(&session);
    let x = Xvfb::start();
    let (_app, log, window) = start_app(&x, &session);

    // 1 + 2 + 4 + 8 s of retries, each waiting longer, then none.
    wait_log(
        &log,
        "console demo: not available: domain 'demo' has no VNC display",
        5,
        Duration::from_secs(60),
    );
    wait_log(&log, "no automatic retry left", 1, Duration::from_secs(10));
    assert_eq!(announced_waits(&log), [1, 2, 4, 8]);
    let tries = count(&log, "console demo: trying to attach again");
    assert_eq!(tries, 4, "{}", read_log(&log));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(&log, "console demo: trying to attach again"),
        tries,
        "retried after the budget ran out:\n{}",
        read_log(&log)
    );

    // Reconnect: refused again (the socket is still aside), but the
    // retries start over from 1 s, and the next one finds the socket back.
    let (bx, by) = x.wait_for_colour(&window, BLUE, 200, Duration::from_secs(10));
    x.screenshot(&window, &artifacts_dir().join("console-retry-used-up.png"));
    x.click(&window, bx, by);
    wait_log(
        &log,
        "console demo: Reconnect pressed",
        1,
        Duration::from_secs(10),
    );
    wait_log(&log, "; retry 1 of 4 in 1 s", 2, Duration::from_secs(30));
    std::fs::rename(&aside, &socket).unwrap();
    x.wait_for_test_card(
        &window,
        "console-retry-reconnected.png",
        &log,
        Duration::from_secs(30),
    );
    wait_log(&log, "console demo: attached", 1, Duration::from_secs(10));
    session.ok(&["destroy", "demo"]);
}
