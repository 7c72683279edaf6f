//! The GUI tests' Xvfb helper itself: clients coming and going never get a
//! display refused (Xvfb runs with `-noreset`), and a program that dies
//! before its window appears is reported with its exit status and stderr.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vireo_tests::desktop::Xvfb;

/// Opens the display with xdpyinfo `n` times; returns the failures' errors.
fn open_display(display: &str, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| {
            let out = Command::new("xdpyinfo")
                .args(["-display", display])
                .output()
                .expect("xdpyinfo is required (`make test` installs x11-utils)");
            (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect()
}

/// Without `-noreset`, Xvfb resets when its last client leaves and refuses
/// a client connecting meanwhile: two clients taking turns met that about
/// one time in twelve ("unable to open display"), as the app did at start
/// while the tests' xwininfo/xdotool calls came and went.
#[test]
fn clients_coming_and_going_are_never_refused() {
    let x = Xvfb::start();
    let other = {
        let display = x.display.clone();
        std::thread::spawn(move || open_display(&display, 150))
    };
    let mut failed = open_display(&x.display, 150);
    failed.extend(other.join().unwrap());
    assert!(
        failed.is_empty(),
        "{} of 300 refused: {failed:?}",
        failed.len()
    );
}

fn death_report(stderr: Option<std::fs::File>) -> String {
    let x = Xvfb::start();
    let mut app = x.spawn_with(
        Path::new("/bin/sh"),
        &[
            "-c",
            "echo 'first line' >&2; echo 'Failed to initialize GTK' >&2; exit 3",
        ],
        &[],
        stderr,
    );
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        x.wait_for_window("never", &mut app, Duration::from_secs(20))
    }))
    .expect_err("a program that exits has no window");
    panic.downcast_ref::<String>().cloned().unwrap_or_default()
}

/// The program's two stderr lines, in order. The session bus daemon that
/// `spawn_with` starts writes to the same stderr (on some hosts a warning that
/// it cannot raise its fd limit), in pieces, so its text may fall between the
/// two lines or even before "first line" on the same line.
fn assert_lines_in_order(report: &str) {
    let first = report.find("first line\n");
    let second = report.find("Failed to initialize GTK\n");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "{report}"
    );
}

#[test]
fn a_program_that_dies_early_is_reported_with_its_status_and_stderr() {
    // Its stderr piped (the default): relayed to the test's output and kept.
    let report = death_report(None);
    assert!(
        report.contains("exited early with exit status: 3"),
        "{report}"
    );
    assert_lines_in_order(&report);
    assert!(report.contains("is running"), "{report}");
    // Its stderr sent to a file: read back from it.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let report = death_report(Some(std::fs::File::create(&log).unwrap()));
    assert!(
        report.contains("exited early with exit status: 3"),
        "{report}"
    );
    assert_lines_in_order(&report);
}
