//! The manager window against a real session engine: the VM defined with
//! vireoctl appears, and its state follows `vireoctl start` and `destroy`
//! run from outside the app, through the engine's events.

use std::time::Duration;

use vireo_tests::desktop::{Xvfb, artifacts_dir};
use vireo_tests::engine::{Session, domain_xml, guest, kvm_or_skip, serial};

/// Waits (60 s at most) until the app's log has `count` lines with `line`.
fn wait_log(log: &std::path::Path, line: &str, count: usize) {
    vireo_tests::desktop::wait_log(log, line, count, Duration::from_secs(60));
}

#[test]
fn vm_list_follows_engine_events() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    let kernel = guest("spin");
    session.define(&domain_xml("demo", &kernel, ""));

    let x = Xvfb::start();
    let log = session.dir.path().join("app.log");
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
    wait_log(&log, "vm demo: shut off", 1);

    session.ok(&["start", "demo"]);
    wait_log(&log, "vm demo: running", 1);
    // The engine's periodic statistics (every 200 ms in tests) feed the
    // row's CPU sparkline.
    wait_log(&log, "vm demo: cpu ", 3);
    x.screenshot("root", &artifacts_dir().join("manager-running-vm.png"));

    session.ok(&["suspend", "demo"]);
    wait_log(&log, "vm demo: paused", 1);
    session.ok(&["destroy", "demo"]);
    wait_log(&log, "vm demo: shut off", 2);
}
