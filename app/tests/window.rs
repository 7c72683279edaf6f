//! Starts the real app under Xvfb and checks its window appears and draws.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child, and every process in its process group, when the test
/// ends, however it ends (dbus-run-session leaves its bus daemon otherwise).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let pgid = self.0.id() as libc::pid_t;
        // SAFETY: killpg only sends a signal; the group is the child's own,
        // created by `process_group(0)` at spawn.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_xvfb() -> (Reaper, String) {
    let mut xvfb = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("Xvfb is required (`make test` installs xvfb)");
    let mut line = String::new();
    BufReader::new(xvfb.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let display = format!(":{}", line.trim());
    assert!(
        line.trim().parse::<u32>().is_ok(),
        "Xvfb gave no display: {line:?}"
    );
    (Reaper(xvfb), display)
}

fn window_names(display: &str) -> String {
    let out = Command::new("xwininfo")
        .args(["-display", display, "-root", "-tree"])
        .output()
        .expect("xwininfo is required (`make test` installs x11-utils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn manager_window_opens_and_draws_under_xvfb() {
    let (_xvfb, display) = start_xvfb();
    let app = Command::new("dbus-run-session")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vireo"))
        .env("DISPLAY", &display)
        .env("GDK_BACKEND", "x11")
        .env("GSK_RENDERER", "cairo")
        .env("LANG", "C.UTF-8")
        .env("NO_AT_BRIDGE", "1")
        .env("GTK_A11Y", "none")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("dbus-run-session is required (`make test` installs dbus)");
    let mut app = Reaper(app);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if window_names(&display).contains("\"Vireo\"") {
            break;
        }
        if let Some(status) = app.0.try_wait().unwrap() {
            panic!("the app exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no window titled Vireo within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the first frames render.
    std::thread::sleep(Duration::from_secs(2));

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("manager-window.png");
    let status = Command::new("import")
        .args(["-display", &display, "-window", "root"])
        .arg(&shot)
        .status()
        .expect("import is required (`make test` installs imagemagick)");
    assert!(status.success());

    // The window paints libadwaita's light background and dark text: the
    // screen holds many distinct colours, not Xvfb's uniform black.
    let out = Command::new("convert")
        .arg(&shot)
        .args(["-format", "%k", "info:"])
        .output()
        .unwrap();
    let colours: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        colours > 16,
        "screenshot has only {colours} colours: {}",
        shot.display()
    );
}
