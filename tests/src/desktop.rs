//! A throwaway X display for GUI tests: Xvfb, programs run in it under
//! their own D-Bus session, window lookup with xwininfo, screenshots with
//! ImageMagick's `import`, and key presses with xdotool.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many of a program's last stderr lines a failure report shows.
const TAIL_LINES: usize = 40;

/// Where the stderr of a program started by [`Xvfb::spawn_with`] can be
/// read back, by its process id: the file it was given, or the last lines
/// of the pipe a relay thread copies to the test's output.
enum StderrLog {
    File(PathBuf),
    Tail(Arc<Mutex<VecDeque<String>>>),
}

fn stderr_logs() -> &'static Mutex<HashMap<u32, StderrLog>> {
    static LOGS: std::sync::OnceLock<Mutex<HashMap<u32, StderrLog>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(Default::default)
}

/// The last lines `pid` (started by [`Xvfb::spawn_with`]) wrote to stderr.
fn stderr_tail(pid: u32) -> String {
    let logs = stderr_logs().lock().unwrap_or_else(|e| e.into_inner());
    match logs.get(&pid) {
        Some(StderrLog::File(path)) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
        }
        Some(StderrLog::Tail(tail)) => {
            let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.iter().cloned().collect::<Vec<_>>().join("\n")
        }
        None => "(not recorded)".to_owned(),
    }
}

/// Keeps the last [`TAIL_LINES`] lines of `pipe` in `tail` and copies
/// each to this test's stderr (a thread inherits the test's output
/// capture, so they show with a failing test's output).
fn relay(pipe: impl std::io::Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
}

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
    /// Xvfb itself (in a mutex: a failure report checks whether it ended).
    server: Mutex<Reaper>,
    /// Xvfb's last stderr lines.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Xvfb {
    /// Starts Xvfb on a free display (it picks one and reports it once it
    /// listens; two starting at once cannot take the same number: each
    /// binds its abstract socket first).
    ///
    /// `-noreset`: by default an X server resets when its last client
    /// disconnects, and a client connecting during the reset is refused.
    /// The tests' own short-lived clients (xwininfo, xdotool, import)
    /// connect and go while the app starts, so the app sometimes met a
    /// reset and exited with "Failed to initialize GTK" — more often on
    /// a loaded machine, where a reset takes longer (reproduced: two
    /// `xdpyinfo` loops on one Xvfb, 26 of 300 refused; none with
    /// `-noreset`).
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
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("Xvfb is required (`make test` installs xvfb)");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        relay(server.stderr.take().unwrap(), log.clone());
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut server = Reaper(server);
        let number: u32 = line.trim().parse().unwrap_or_else(|_| {
            let status = server.0.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "Xvfb gave no display ({status:?}): {line:?}; its stderr:\n{}",
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        Self {
            display: format!(":{number}"),
            server: Mutex::new(server),
            log,
        }
    }

    /// What a program that died early leaves to explain it: its exit
    /// status, its last stderr lines, and Xvfb's state and stderr.
    fn death_report(&self, app: &Reaper, status: std::process::ExitStatus) -> String {
        // The relay thread may still be reading the last lines.
        std::thread::sleep(Duration::from_millis(200));
        let server = match self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .try_wait()
        {
            Ok(None) => "running".to_owned(),
            Ok(Some(s)) => format!("exited with {s}"),
            Err(e) => format!("unknown: {e}"),
        };
        let xlog = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "the program exited early with {status}; its last stderr lines:\n{}\n\
             Xvfb {} is {server}; its stderr:\n{xlog}",
            stderr_tail(app.0.id()),
            self.display,
        )
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
        // Its stderr is kept where a failure report can read it back.
        let log = match stderr {
            Some(f) => {
                let path = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()));
                cmd.stderr(f);
                path.ok().map(StderrLog::File)
            }
            None => {
                cmd.stderr(Stdio::piped());
                Some(StderrLog::Tail(Arc::new(Mutex::new(VecDeque::new()))))
            }
        };
        let mut child = cmd
            .spawn()
            .expect("dbus-run-session is required (`make test` installs dbus)");
        if let (Some(pipe), Some(StderrLog::Tail(tail))) = (child.stderr.take(), &log) {
            relay(pipe, tail.clone());
        }
        if let Some(log) = log {
            stderr_logs()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(child.id(), log);
        }
        Reaper(child)
    }

    /// Waits until a window titled `title` is mapped and returns its X id.
    /// Panics if `app` exits first (with its exit status and last stderr
    /// lines, and Xvfb's) or nothing appears within `timeout`.
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
                panic!("{}", self.death_report(app, status));
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
        assert!(
            self.try_screenshot(window, path),
            "import failed for window {window}"
        );
    }

    /// Saves a screenshot of `window` as `path`; false if `import` failed,
    /// as it may while the window manager is reconfiguring the window (e.g.
    /// going fullscreen). For loops that take screenshots until one shows
    /// what they wait for.
    pub fn try_screenshot(&self, window: &str, path: &Path) -> bool {
        Command::new("import")
            .args(["-display", &self.display, "-window", window])
            .arg(path)
            .status()
            .expect("import is required (`make test` installs imagemagick)")
            .success()
    }

    /// Waits until a screenshot of `window`, saved as `name` in the test
    /// artifacts, shows the demo guest's test card (all eight colour bars);
    /// fails after `timeout` naming the screenshot and showing `log`.
    pub fn wait_for_test_card(&self, window: &str, name: &str, log: &Path, timeout: Duration) {
        let shot = artifacts_dir().join(name);
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_screenshot(window, &shot)
                && crate::demo::shows_test_card(image::open(&shot).unwrap().to_rgb8().as_raw())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test card never showed; see {} and {}:\n{}",
                shot.display(),
                log.display(),
                read_log(log)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
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

    /// The visible windows titled exactly `title` (xdotool's decimal ids;
    /// GTK also names a hidden client-leader window after the app, which
    /// this leaves out).
    pub fn visible_windows(&self, title: &str) -> Vec<String> {
        let out = Command::new("xdotool")
            .env("DISPLAY", &self.display)
            .args(["search", "--onlyvisible", "--name"])
            .arg(format!("^{title}$"))
            .output()
            .expect("xdotool is required (`make test` installs it)");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a visible window titled exactly `title` that is none of
    /// `old` exists (a dialog that answered may still be mapped for a
    /// moment) and returns its id.
    pub fn wait_for_new_visible_window(
        &self,
        title: &str,
        old: &[String],
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self
                .visible_windows(title)
                .into_iter()
                .find(|id| !old.contains(id))
            {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "no new visible window titled {title} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Presses `keys` in `window` once it can take the focus (a window
    /// just mapped may not be viewable yet): retried for 10 s at most.
    pub fn press(&self, window: &str, keys: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let focused = Command::new("xdotool")
                .env("DISPLAY", &self.display)
                .args(["windowfocus", "--sync", window])
                .status()
                .is_ok_and(|s| s.success());
            if focused {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "window {window} never took the focus"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.type_keys(window, keys);
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

/// A log file written by a program under test, so far (empty before it
/// exists).
pub fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until `log` has `count` lines containing `text`; fails after
/// `timeout` showing the log.
pub fn wait_log(log: &Path, text: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while read_log(log).lines().filter(|l| l.contains(text)).count() < count {
        assert!(
            Instant::now() < deadline,
            "the app never logged {text:?} ({count}×) within {timeout:?}:\n{}",
            read_log(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where tests keep screenshots for people to look at: `target/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
