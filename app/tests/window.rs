//! Starts the real app under Xvfb and checks its window appears and draws.

use std::process::Command;
use std::time::Duration;

use vireo_tests::desktop::{Xvfb, artifacts_dir};

#[test]
fn manager_window_opens_and_draws_under_xvfb() {
    let x = Xvfb::start();
    let mut app = x.spawn(std::path::Path::new(env!("CARGO_BIN_EXE_vireo")), &[]);
    x.wait_for_window("Vireo", &mut app, Duration::from_secs(60));
    // Let the first frames render.
    std::thread::sleep(Duration::from_secs(2));

    let shot = artifacts_dir().join("manager-window.png");
    x.screenshot("root", &shot);

    // The window paints libadwaita's light background and dark text: the
    // image holds many distinct colours, not Xvfb's uniform black.
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
