//! What the app's remote-connection tests share: a HOME remembering a
//! connection, the app started with that HOME on a session engine, and
//! the connection sections' ⋮ menu buttons found on screen.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_tests::desktop::{Reaper, Xvfb, artifacts_dir};
use vireo_tests::engine::Session;

/// Writes `home`'s remembered connections (`connections.json` in
/// `$XDG_CONFIG_HOME/vireo`) as one autoconnect connection to `uri`.
pub fn remember_connection(home: &Path, uri: &str) {
    let config = home.join(".config/vireo");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("connections.json"),
        format!(r#"{{"connections":[{{"uri":"{uri}","autoconnect":true}}]}}"#),
    )
    .unwrap();
}

/// Starts the app with `args`, `home` as its HOME (config in
/// `home/.config`) and `session`'s engine as its local connection, logging
/// `vireo_app=info` to `home/app.log`. No SSH agent: what `home/.ssh` holds
/// (or a password) logs in.
pub fn start_app(x: &Xvfb, home: &Path, session: &Session, args: &[&str]) -> (Reaper, PathBuf) {
    let log = home.join("app.log");
    let config = home.join(".config");
    let app = x.spawn_with(
        Path::new(env!("CARGO_BIN_EXE_vireo")),
        args,
        &[
            ("HOME", home.as_os_str()),
            ("XDG_CONFIG_HOME", config.as_os_str()),
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            ("SSH_AUTH_SOCK", std::ffi::OsStr::new("")),
            ("VIREO_LOG", std::ffi::OsStr::new("vireo_app=info")),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    (app, log)
}

/// Clicks the menu button of the `index`th connection section: the dark
/// "⋮" icons at the right end of the section headers, top to bottom,
/// found after layout (screenshots saved as `shot_name`; `timeout` at most).
pub fn click_connection_menu(
    x: &Xvfb,
    window: &str,
    index: usize,
    shot_name: &str,
    timeout: Duration,
) {
    let shot = artifacts_dir().join(shot_name);
    let deadline = Instant::now() + timeout;
    loop {
        x.screenshot(window, &shot);
        let img = image::open(&shot).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        // Below the header bar, the right-most dark pixels in the window
        // belong to those icons (the status icons and texts sit left of
        // them; VM rows have nothing dark on the right).
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
            // Away first: a click where the pointer already is may reach a
            // popover that just closed.
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
