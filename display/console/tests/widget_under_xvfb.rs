//! The console widget in a real GTK window under Xvfb, against QEMU's VNC
//! server running the demo guest: the guest's screen is drawn in the window,
//! and keys typed into the window reach the guest.

use std::path::PathBuf;
use std::time::Duration;

use vireo_tests::demo::{BARS, qemu_with_vnc};
use vireo_tests::desktop::{Xvfb, artifacts_dir};

fn console_viewer() -> PathBuf {
    // target/debug/deps/<test> → target/debug/examples/console_viewer
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/console_viewer");
    assert!(
        bin.exists(),
        "{} is missing (cargo test builds examples)",
        bin.display()
    );
    bin
}

#[test]
fn widget_draws_the_guest_screen_and_sends_typed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vnc.sock");
    let Some(mut qemu) = qemu_with_vnc(&sock) else {
        return;
    };

    let x = Xvfb::start();
    let mut viewer = x.spawn(&console_viewer(), &[sock.to_str().unwrap()]);
    let window = x.wait_for_window("Vireo console test", &mut viewer, Duration::from_secs(60));

    // Wait for the bars to be painted, then check every one is on screen.
    let shot = artifacts_dir().join("console-widget.png");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        x.screenshot(&window, &shot);
        let img = image::open(&shot).unwrap().to_rgb8();
        let missing: Vec<[u8; 3]> = BARS
            .iter()
            .filter(|bar| {
                !img.pixels().any(|p| {
                    p.0.iter()
                        .zip(bar.iter())
                        .all(|(&a, &b)| a.abs_diff(b) <= 8)
                })
            })
            .copied()
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "bars {missing:02x?} not in {}",
        shot.display()
    );

    x.type_keys(&window, &["h", "i", "Return"]);
    qemu.wait_for_text("typed hi", |t| t.ends_with("hi\n"));
}
