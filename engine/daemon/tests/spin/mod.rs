//! The `spin every=1` guest for the serial tests (`serial_limits.rs`,
//! `serial_log_gaps.rs`): the deterministic output it prints on COM1, an
//! engine started with test-only limits in its environment, domains whose
//! COM1 is logged to a `<serial><log>` file, and waits on the files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vireo_tests::engine::{Session, bin, domain_xml, guest};

/// How long a guest may take to boot or print what a test waits for.
pub const BOOT: Duration = Duration::from_secs(60);

/// The first `len` bytes `spin every=1` prints on COM1.
pub fn spin_output(len: usize) -> Vec<u8> {
    let mut out = b"\nguest=spin\nevery=1\nspinning\n".to_vec();
    let mut tick = 1u64;
    while out.len() < len {
        out.extend_from_slice(format!("tick={tick}\n").as_bytes());
        tick += 1;
    }
    out.truncate(len);
    out
}

/// Starts the session engine (through `vireoctl list`, as a user's first
/// command does) with `env` in its environment.
pub fn start_engine(s: &Session, env: &[(&str, String)]) {
    let out = Command::new(bin("vireoctl"))
        .arg("list")
        .env_remove("VIREO_DEFAULT_URI")
        .env("XDG_RUNTIME_DIR", &s.runtime)
        .env("XDG_DATA_HOME", &s.data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A domain booting `guest_name` with `cmdline`, its COM1 logged to
/// `file` (`append`).
pub fn logged(name: &str, guest_name: &str, cmdline: &str, file: &Path, append: &str) -> String {
    domain_xml(name, &guest(guest_name), cmdline).replace(
        "<graphics",
        &format!(
            "<serial type='pty'>\n      <log file='{}' append='{append}'/>\n      \
             <target port='0'/>\n    </serial>\n    <graphics",
            file.display()
        ),
    )
}

/// A `spin every=1` domain whose COM1 is logged to `file` (`append`).
pub fn logged_spin(name: &str, file: &Path, append: &str) -> String {
    logged(name, "spin", "every=1", file, append)
}

/// Starts the defined domain `name`; its UUID and its VMM's `serial.log`.
pub fn start(s: &Session, name: &str) -> (uuid::Uuid, PathBuf) {
    s.ok(&["start", name]);
    let uuid = s.info(name).summary.uuid;
    let file = s.serial_path(&uuid);
    (uuid, file)
}

/// Defines and starts a `spin every=1` domain `name` whose COM1 is logged
/// (append off) to `com1.log` in the session's directory; returns that
/// `<log>` and the VMM's `serial.log`.
pub fn start_logged_spin(s: &Session, name: &str) -> (PathBuf, PathBuf) {
    let log = s.dir.path().join("com1.log");
    s.define(&logged_spin(name, &log, "off"));
    let (_, file) = start(s, name);
    (log, file)
}

/// The size of the file at `path` (0 while it does not exist).
pub fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits until the file at `path` has at least `n` bytes.
pub fn wait_for_len(path: &Path, n: u64) {
    let deadline = Instant::now() + BOOT;
    while size(path) < n {
        assert!(
            Instant::now() < deadline,
            "{} stopped growing",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (boundedly) until `read()` gives the same bytes twice 200 ms
/// apart: the engine has written everything.
pub fn settled<T: PartialEq>(read: impl Fn() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the files never settled");
        last = now;
    }
}
