//! A throwaway X display for GUI tests: Xvfb, programs run in it under
//! their own D-Bus session, window lookup with xwininfo, screenshots with
//! ImageMagick's `import`, and key presses with xdotool.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed, with its whole process group, when dropped
/// (dbus-run-session would otherwise leave its bus daemon behind).
#[derive(Debug)]
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let pgid = self.0.id() as libc::pid_t;
        // SAFETY: killpg only sends a signal, to the group the child leads
        // (it was spawned with `process_group(0)`).
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running Xvfb.
#[derive(Debug)]
pub struct Xvfb {
    /// The display name, e.g. `:99`.
    pub display: String,
    _server: Reaper,
}

impl Xvfb {
    /// Starts Xvfb on a free display (it picks one and reports it).
    pub fn start() -> Self {
        let mut server = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("Xvfb is required (`make test` installs xvfb)");
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let number: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb gave no display: {line:?}"));
        Self {
            display: format!(":{number}"),
            _server: Reaper(server),
        }
    }

    /// Runs `program` on this display in its own D-Bus session, with GTK on
    /// X11 and the cairo renderer (no GPU here).
    pub fn spawn(&self, program: &Path, args: &[&str]) -> Reaper {
        self.spawn_with(program, args, &[], None)
    }

    /// Like [`Xvfb::spawn`], with extra environment variables and the
    /// program's stderr sent to `stderr` (else inherited).
    pub fn spawn_with(
        &self,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &std::ffi::OsStr)],
        stderr: Option<std::fs::File>,
    ) -> Reaper {
        let mut cmd = Command::new("dbus-run-session");
        cmd.arg("--")
            .arg(program)
            .args(args)
            .env("DISPLAY", &self.display)
            .env("GDK_BACKEND", "x11")
            .env("GSK_RENDERER", "cairo")
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_A11Y", "none")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .process_group(0);
        match stderr {
            Some(f) => cmd.stderr(f),
            None => cmd.stderr(Stdio::inherit()),
        };
        let child = cmd
            .spawn()
            .expect("dbus-run-session is required (`make test` installs dbus)");
        Reaper(child)
    }

    /// Waits until a window titled `title` is mapped and returns its X id.
    /// Panics if `app` exits first or nothing appears within `timeout`.
    pub fn wait_for_window(&self, title: &str, app: &mut Reaper, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let quoted = format!("\"{title}\"");
        loop {
            let out = Command::new("xwininfo")
                .args(["-display", &self.display, "-root", "-tree"])
                .output()
                .expect("xwininfo is required (`make test` installs x11-utils)");
            let tree = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = tree.lines().find(|l| l.contains(&quoted)) {
                return line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            if let Some(status) = app.0.try_wait().unwrap() {
                panic!("the program exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "no window titled {title} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a screenshot of `window` (an X id, or `root`) as `path`.
    pub fn screenshot(&self, window: &str, path: &Path) {
        let status = Command::new("import")
            .args(["-display", &self.display, "-window", window])
            .arg(path)
            .status()
            .expect("import is required (`make test` installs imagemagick)");
        assert!(status.success(), "import failed for window {window}");
    }

    /// Clicks the left button at (`x`, `y`) inside `window`.
    pub fn click(&self, window: &str, x: u32, y: u32) {
        let status = Command::new("xdotool")
            .env("DISPLAY", &self.display)
            .args(["mousemove", "--sync", "--window", window])
            .arg(x.to_string())
            .arg(y.to_string())
            .args(["click", "1"])
            .status()
            .expect("xdotool is required (`make test` installs it)");
        assert!(status.success(), "xdotool click failed");
    }

    /// Waits until a screenshot of `window` shows a region of `rgb` (each
    /// channel within 12) of at least `min_pixels` pixels, and returns the
    /// centre of its bounding box: how tests find a button by its colour
    /// (Adwaita's suggested-action blue is `[0x35, 0x84, 0xe4]`) instead of
    /// clicking fixed coordinates before the window has laid itself out.
    pub fn wait_for_colour(
        &self,
        window: &str,
        rgb: [u8; 3],
        min_pixels: u32,
        timeout: Duration,
    ) -> (u32, u32) {
        let shot = artifacts_dir().join(format!("wait-for-colour-{}.png", std::process::id()));
        let deadline = Instant::now() + timeout;
        loop {
            self.screenshot(window, &shot);
            let img = image::open(&shot).unwrap().to_rgb8();
            let (mut n, mut x0, mut y0, mut x1, mut y1) = (0u32, u32::MAX, u32::MAX, 0, 0);
            for (x, y, p) in img.enumerate_pixels() {
                if p.0.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 12) {
                    n += 1;
                    x0 = x0.min(x);
                    y0 = y0.min(y);
                    x1 = x1.max(x);
                    y1 = y1.max(y);
                }
            }
            if n >= min_pixels {
                let _ = std::fs::remove_file(&shot);
                return (x0.midpoint(x1), y0.midpoint(y1));
            }
            assert!(
                Instant::now() < deadline,
                "no {rgb:02x?} region in window {window} within {timeout:?}; see {}",
                shot.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Focuses `window` and presses `keys` (xdotool key names) in order.
    pub fn type_keys(&self, window: &str, keys: &[&str]) {
        let status = Command::new("xdotool")
            .env("DISPLAY", &self.display)
            .args(["windowfocus", "--sync", window, "key", "--delay", "80"])
            .args(keys)
            .status()
            .expect("xdotool is required (`make test` installs it)");
        assert!(status.success(), "xdotool failed");
    }
}

/// Where tests keep screenshots for people to look at: `target/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
