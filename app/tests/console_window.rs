//! A VM window with the embedded console, opened by the app against a real
//! session engine and a real vireo-vmm: the demo guest's test card shows in
//! the window, and keys typed into it reach the guest.

use std::time::{Duration, Instant};

use vireo_tests::desktop::{Xvfb, artifacts_dir};
use vireo_tests::engine::{Session, domain_xml, guest, kvm_or_skip, serial};

/// Starts the app in `x` on `session`'s engine with `args`; returns it and
/// its log file.
fn start_app(
    x: &Xvfb,
    session: &Session,
    args: &[&str],
) -> (vireo_tests::desktop::Reaper, std::path::PathBuf) {
    let log = session.dir.path().join("app.log");
    let app = x.spawn_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_vireo")),
        args,
        &[
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            ("VIREO_LOG", std::ffi::OsStr::new("vireo_app=info")),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    (app, log)
}

#[test]
fn run_button_starts_a_stopped_vm_and_the_console_follows_its_state() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    session.define(&domain_xml("demo", &guest("demo"), ""));

    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, &session, &["--show-domain-console", "demo"]);
    let window = x.wait_for_window("demo – Vireo", &mut app, Duration::from_secs(60));
    // The Run button (the window's only suggested-action blue) shows once
    // the window has learnt the VM is off; it starts the VM, and the window
    // follows the engine's event.
    let (bx, by) = x.wait_for_colour(&window, [0x35, 0x84, 0xe4], 200, Duration::from_secs(30));
    x.screenshot(&window, &artifacts_dir().join("vm-window-off.png"));
    x.click(&window, bx, by);
    session.wait_state("demo", "running", Duration::from_secs(30));
    x.wait_for_test_card(
        &window,
        "vm-window-started.png",
        &log,
        Duration::from_secs(30),
    );

    // Stopped from outside: the window says so and offers Run again.
    session.ok(&["destroy", "demo"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("console demo: closed")
    {
        assert!(
            Instant::now() < deadline,
            "the window did not notice the VM stopping"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    x.screenshot(&window, &artifacts_dir().join("vm-window-stopped.png"));
}

#[test]
fn console_window_shows_the_guest_and_types_into_it() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    session.define(&domain_xml("demo", &guest("demo"), ""));
    session.ok(&["start", "demo"]);
    let uuid = session.info("demo").summary.uuid;
    session.wait_serial(&uuid, "demo=ready", Duration::from_secs(60));

    let x = Xvfb::start();
    let (mut app, log) = start_app(&x, &session, &["--show-domain-console", "demo"]);
    let window = x.wait_for_window("demo – Vireo", &mut app, Duration::from_secs(60));

    x.wait_for_test_card(
        &window,
        "vm-window-console.png",
        &log,
        Duration::from_secs(30),
    );

    x.type_keys(&window, &["h", "i", "Return"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !session.serial_log(&uuid).ends_with("hi\n") {
        assert!(
            Instant::now() < deadline,
            "typed keys did not reach the guest:\n{}",
            session.serial_log(&uuid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    session.ok(&["destroy", "demo"]);
}

/// Waits until `log` has `count` lines containing `text`.
fn wait_log(log: &std::path::Path, text: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = std::fs::read_to_string(log).unwrap_or_default();
        if seen.lines().filter(|l| l.contains(text)).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the app never logged {text:?} ({count}×):\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_from_the_vm_window_and_from_the_manager_shows_the_guest_each_time() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    session.define(&domain_xml("demo", &guest("demo"), ""));
    let x = Xvfb::start();
    let log = session.dir.path().join("app.log");
    // At debug level: the manager logs its selection.
    let mut app = x.spawn_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_vireo")),
        &[],
        &[
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            ("VIREO_LOG", std::ffi::OsStr::new("vireo_app=debug")),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    x.wait_for_window("Vireo", &mut app, Duration::from_secs(60));
    wait_log(&log, "first frame drawn", 1);
    wait_log(&log, "selected demo", 1);
    // Not GTK's 1x1 client leader, which has the same title.
    let out = std::process::Command::new("xdotool")
        .env("DISPLAY", &x.display)
        .args(["search", "--onlyvisible", "--name", "^Vireo$"])
        .output()
        .unwrap();
    let manager = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("the manager window is visible")
        .to_owned();
    // Enter opens the selected VM, which is off.
    x.type_keys(&manager, &["Return"]);
    let window = x.wait_for_window("demo – Vireo", &mut app, Duration::from_secs(60));
    wait_log(&log, "console demo: the VM is off", 1);

    // The window's Run button.
    let (bx, by) = x.wait_for_colour(&window, [0x35, 0x84, 0xe4], 200, Duration::from_secs(30));
    x.click(&window, bx, by);
    session.wait_state("demo", "running", Duration::from_secs(30));
    x.wait_for_test_card(
        &window,
        "run-from-window.png",
        &log,
        Duration::from_secs(30),
    );

    // Stopped from outside, then Run in the manager (Ctrl+R on the
    // selected VM), twice: the open window's console shows the guest.
    for round in 1..=2 {
        session.ok(&["destroy", "demo"]);
        wait_log(&log, "console demo: closed", round);
        wait_log(&log, "console demo: the VM is off", round + 1);
        x.type_keys(&manager, &["ctrl+r"]);
        session.wait_state("demo", "running", Duration::from_secs(30));
        wait_log(&log, "console demo: attached", round + 1);
        x.wait_for_test_card(
            &window,
            &format!("run-from-manager-{round}.png"),
            &log,
            Duration::from_secs(30),
        );
    }
    session.ok(&["destroy", "demo"]);
    // Each attach showed the guest on its first try. Seen before: the
    // handshake refused (a 0x0 desktop while the guest had no mode yet),
    // and a session closed by pixels the decoder refused beside a size
    // change (the guest switching mode at boot); the app re-attaches
    // after the latter, but a failed re-attach leaves a black console.
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let failed: Vec<&str> = seen
        .lines()
        .filter(|l| {
            l.contains("the remote display failed") || l.contains("cannot open the remote display")
        })
        .collect();
    assert!(
        failed.is_empty(),
        "the console failed:\n{}",
        failed.join("\n")
    );
}
