//! The VM window's console tools and pages, driven through its keyboard
//! shortcuts under Xvfb against a real session engine and vireo-vmm: view
//! modes, screenshot to PNG through the file dialog, the serial, details
//! and performance pages, fullscreen (under a real window manager,
//! Openbox, which grants it), and Send Key reaching the guest as
//! scancodes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_tests::demo::{BARS, shows_test_card};
use vireo_tests::desktop::{Reaper, Xvfb, artifacts_dir};
use vireo_tests::engine::{Session, domain_xml, guest, kvm_or_skip, serial};

/// Starts the app showing `domain`'s window, with `home` as its home
/// directory; returns it and its log file.
fn start_app(x: &Xvfb, session: &Session, domain: &str, home: &Path) -> (Reaper, Log) {
    let log = session.dir.path().join("app.log");
    std::fs::create_dir_all(home).unwrap();
    let app = x.spawn_with(
        Path::new(env!("CARGO_BIN_EXE_vireo")),
        &["--show-domain-console", domain],
        &[
            ("HOME", home.as_os_str()),
            ("XDG_CONFIG_HOME", home.join(".config").as_os_str()),
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            (
                "VIREO_LOG",
                std::ffi::OsStr::new("vireo_app=debug,vireo_console=debug"),
            ),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    (app, Log(log))
}

/// The app's log file, read from a mark so that a wait sees only what
/// the app logged after the action it waits for.
struct Log(PathBuf);

impl Log {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }

    /// Where the log ends now.
    fn mark(&self) -> usize {
        self.text().len()
    }

    /// Waits until a line logged after `mark` contains `needle`.
    fn wait(&self, mark: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if let Some(line) = text
                .get(mark..)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains(needle))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the app never logged {needle:?} within {timeout:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses `keys` in `window` and waits for `needle` to be logged.
    fn keys_then(&self, x: &Xvfb, window: &str, keys: &[&str], needle: &str) -> String {
        let mark = self.mark();
        x.type_keys(window, keys);
        self.wait(mark, needle, Duration::from_secs(10))
    }
}

/// The longest horizontal run of the yellow bar's colour in a screenshot:
/// the bar's shown width.
fn yellow_bar_width(shot: &Path) -> u32 {
    let img = image::open(shot).unwrap().to_rgb8();
    let yellow = BARS[1];
    (0..img.height())
        .map(|y| {
            (0..img.width())
                .filter(|&x| {
                    let p = img.get_pixel(x, y).0;
                    p.iter().zip(yellow).all(|(&a, b)| a.abs_diff(b) <= 8)
                })
                .count() as u32
        })
        .max()
        .unwrap_or(0)
}

/// Runs Openbox on `x`: a real window manager, which grants fullscreen
/// and binds Alt+Tab (to cycle windows) as desktops do.
fn window_manager(x: &Xvfb) -> Reaper {
    Reaper(
        std::process::Command::new("openbox")
            .args(["--sm-disable"])
            .env("DISPLAY", &x.display)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("openbox is required (`make test` installs it)"),
    )
}

/// Waits until the kbd guest has printed `want` as consecutive
/// `scancode=` lines after byte `from` of its serial log (`serial_log`
/// reads it).
fn wait_for_scancodes(serial_log: impl Fn() -> String, from: usize, want: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let serial_log = serial_log();
        let got: Vec<&str> = serial_log[from..]
            .lines()
            .filter_map(|l| l.strip_prefix("scancode="))
            .map(str::trim)
            .collect();
        if got.windows(want.len()).any(|w| w == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not reach the guest as {want:?}; got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Moves the pointer to (`px`, `py`) inside `window`.
fn move_pointer(x: &Xvfb, window: &str, px: u32, py: u32) {
    let status = std::process::Command::new("xdotool")
        .env("DISPLAY", &x.display)
        .args(["mousemove", "--sync", "--window", window])
        .arg(px.to_string())
        .arg(py.to_string())
        .status()
        .expect("xdotool is required (`make test` installs it)");
    assert!(status.success(), "xdotool mousemove failed");
}

/// Takes screenshots of `window` until `ok` holds for one; returns its path.
fn wait_for_shot(
    x: &Xvfb,
    window: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Path) -> bool,
) -> PathBuf {
    let shot = artifacts_dir().join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if x.try_screenshot(window, &shot) && ok(&shot) {
            return shot;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed; see {}",
            shot.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn vm_window_view_modes_screenshot_serial_details_and_performance() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    // 1024x768: larger than the console area, so 1:1 differs from scaled.
    // A disk, so the performance page has disk I/O to draw.
    let disk = session.dir.path().join("demo.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    session.define(
        &domain_xml("demo", &guest("demo"), "mode=1024x768").replace(
            "<graphics",
            &format!(
                "<disk type='file' device='disk'><source file='{}'/>\
                 <target dev='vda' bus='virtio'/></disk>\n    <graphics",
                disk.display()
            ),
        ),
    );
    session.ok(&["start", "demo"]);
    let uuid = session.info("demo").summary.uuid;
    session.wait_serial(&uuid, "demo=ready", Duration::from_secs(60));

    let x = Xvfb::start();
    let home = session.dir.path().join("home");
    let (mut app, log) = start_app(&x, &session, "demo", &home);
    let window = x.wait_for_window("demo – Vireo", &mut app, Duration::from_secs(60));
    let scaled = wait_for_shot(&x, &window, "vm-pages-scaled.png", "the test card", |p| {
        shows_test_card(image::open(p).unwrap().to_rgb8().as_raw())
    });
    let scaled_width = yellow_bar_width(&scaled);
    assert!(
        scaled_width < 128,
        "scaled to the window, a 1024-pixel screen should shrink (bar {scaled_width} px); see {}",
        scaled.display()
    );
    // The probe at attach: vireo-vmm's bochs-display cannot be resized
    // from outside, so the window learns the resize mode is unavailable.
    log.wait(
        0,
        "console demo: resize unsupported",
        Duration::from_secs(20),
    );

    // Keys typed into the console reach the guest, whose COM1 echo shows
    // on the serial page's terminal.
    log.wait(0, "keyboard grabbed", Duration::from_secs(10));
    x.type_keys(&window, &["h", "i"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown: String = log
            .text()
            .lines()
            .filter_map(|l| l.split_once("serial demo: output \"").map(|(_, r)| r))
            .map(|r| r.trim_end_matches('"'))
            .collect();
        if shown.contains("hi") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the serial page never got the guest's echo (guest log: {:?}):\n{}",
            session.serial_log(&uuid),
            log.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The window opened after the guest said demo=ready: only the engine's
    // serial backlog can have brought that line to the serial page.
    let shown: String = log
        .text()
        .lines()
        .filter_map(|l| l.split_once("serial demo: output \"").map(|(_, r)| r))
        .map(|r| r.trim_end_matches('"'))
        .collect();
    assert!(
        shown.contains("demo=ready"),
        "the serial page lacks the guest's output from before it opened: {shown:?}"
    );

    // Ctrl+Alt releases the keyboard; shortcuts then reach the window.
    log.keys_then(&x, &window, &["ctrl+alt"], "keyboard released");

    // 1:1: the 128-pixel bars at their own size.
    log.keys_then(&x, &window, &["ctrl+2"], "view mode 1:1");
    wait_for_shot(&x, &window, "vm-pages-1to1.png", "the 1:1 view", |p| {
        yellow_bar_width(p) == 128
    });
    // Resize-guest is refused (a toast says why) and the mode stays 1:1.
    let mark = log.mark();
    x.type_keys(&window, &["ctrl+3"]);
    log.keys_then(&x, &window, &["ctrl+1"], "view mode scale");
    assert!(
        !log.text()[mark..].contains("view mode resize"),
        "the unavailable resize mode was switched on:\n{}",
        log.text()
    );
    wait_for_shot(
        &x,
        &window,
        "vm-pages-scaled-again.png",
        "the scaled view",
        |p| yellow_bar_width(p) == scaled_width,
    );

    // Ctrl+S: the file dialog proposes a name in the home folder; Return
    // saves the PNG, which shows the test card at the guest's size.
    log.keys_then(&x, &window, &["ctrl+s"], "console demo: save screenshot");
    let dialog = x.wait_for_window("Save Screenshot", &mut app, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    x.screenshot(&dialog, &artifacts_dir().join("vm-pages-save-dialog.png"));
    let saved = log.keys_then(&x, &dialog, &["Return"], "screenshot saved to ");
    let path = PathBuf::from(saved.split("screenshot saved to ").nth(1).unwrap().trim());
    assert!(
        path.starts_with(&home),
        "saved outside the home folder: {path:?}"
    );
    let png = image::open(&path).unwrap_or_else(|e| panic!("{path:?} is no image: {e}"));
    assert_eq!((png.width(), png.height()), (1024, 768));
    assert!(
        shows_test_card(png.to_rgb8().as_raw()),
        "{path:?} lacks the test card"
    );
    std::fs::copy(&path, artifacts_dir().join("vm-pages-saved-screenshot.png")).unwrap();

    // The pages, by Alt+number. The console took the keyboard back with
    // the focus when the dialog closed: Ctrl+Alt first.
    log.wait(0, "keyboard grabbed", Duration::from_secs(10));
    log.keys_then(
        &x,
        &window,
        &["ctrl+alt", "alt+2"],
        "vm window: page serial",
    );
    std::thread::sleep(Duration::from_millis(500));
    x.screenshot(&window, &artifacts_dir().join("vm-pages-serial.png"));

    // From the terminal too, Alt+number switches pages.
    let mark = log.mark();
    log.keys_then(&x, &window, &["alt+3"], "vm window: page details");
    log.wait(
        mark.min(log.mark()),
        &format!("details demo: uuid {uuid} state running"),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(500));
    x.screenshot(&window, &artifacts_dir().join("vm-pages-details.png"));

    let mark = log.mark();
    log.keys_then(&x, &window, &["alt+4"], "vm window: page performance");
    // Two stats samples a second apart make a disk rate: the demo guest
    // does not touch its disk.
    log.wait(
        mark,
        "perf demo: disk read 0 B/s write 0 B/s",
        Duration::from_secs(15),
    );
    std::thread::sleep(Duration::from_millis(1000));
    x.screenshot(&window, &artifacts_dir().join("vm-pages-performance.png"));

    log.keys_then(&x, &window, &["alt+1"], "vm window: page console");

    // Stopped from outside: the console page says the VM is off and offers
    // Run (the only suggested-action blue) again.
    let mark = log.mark();
    session.ok(&["destroy", "demo"]);
    log.wait(mark, "console demo: the VM is off", Duration::from_secs(30));
    x.wait_for_colour(&window, [0x35, 0x84, 0xe4], 200, Duration::from_secs(30));
    x.screenshot(&window, &artifacts_dir().join("vm-pages-off-again.png"));
}

#[test]
fn alt_tab_and_send_key_ctrl_alt_del_reach_the_guest_as_scancodes() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    // The kbd guest prints every byte the keyboard sends.
    let uuid = session.boot(
        "kbd",
        "kbd",
        "timeout=300",
        "kbd=ready",
        Duration::from_secs(60),
    );

    let x = Xvfb::start();
    let _wm = window_manager(&x);
    let home = session.dir.path().join("home");
    let (mut app, log) = start_app(&x, &session, "kbd", &home);
    let window = x.wait_for_window("kbd – Vireo", &mut app, Duration::from_secs(60));
    log.wait(0, "console kbd: attached", Duration::from_secs(30));
    log.wait(0, "keyboard grabbed", Duration::from_secs(10));
    log.wait(0, "system shortcuts inhibited", Duration::from_secs(10));
    // While the console holds the keyboard, the window manager's Alt+Tab
    // goes to the guest: Alt, Tab pressed, then released (xdotool releases
    // in the order it pressed).
    let before = session.serial_log(&uuid).len();
    x.type_keys(&window, &["alt+Tab"]);
    wait_for_scancodes(
        || session.serial_log(&uuid),
        before,
        &["0x38", "0x0f", "0xb8", "0x8f"],
        "Alt+Tab (under Openbox, which binds it)",
    );
    // Release the keyboard, open the Send Key menu (F10) and take its
    // first item, Ctrl+Alt+Del.
    log.keys_then(&x, &window, &["ctrl+alt"], "keyboard released");
    let before = session.serial_log(&uuid).len();
    x.type_keys(&window, &["F10"]);
    std::thread::sleep(Duration::from_millis(700));
    log.keys_then(&x, &window, &["Return"], "send key ctrl-alt-del");

    // Ctrl, Alt, Delete (extended) pressed, then released in reverse.
    wait_for_scancodes(
        || session.serial_log(&uuid),
        before,
        &[
            "0x1d", "0x38", "0xe0", "0x53", "0xe0", "0xd3", "0xb8", "0x9d",
        ],
        "Ctrl+Alt+Del",
    );
    session.ok(&["destroy", "kbd"]);
}

#[test]
fn fullscreen_hides_the_header_and_reveals_a_toolbar_at_the_top_edge() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    session.boot("demo", "demo", "", "demo=ready", Duration::from_secs(60));

    let x = Xvfb::start();
    // A window manager grants fullscreen (bare Xvfb has none).
    let _wm = window_manager(&x);
    let home = session.dir.path().join("home");
    let (mut app, log) = start_app(&x, &session, "demo", &home);
    let window = x.wait_for_window("demo – Vireo", &mut app, Duration::from_secs(60));
    wait_for_shot(
        &x,
        &window,
        "vm-fullscreen-before.png",
        "the test card",
        |p| shows_test_card(image::open(p).unwrap().to_rgb8().as_raw()),
    );
    log.wait(0, "keyboard grabbed", Duration::from_secs(10));

    // F11 (with the keyboard released): the window fills the 1280x800
    // screen, the header bar gone, the test card scaled up.
    log.keys_then(
        &x,
        &window,
        &["ctrl+alt", "F11"],
        "console demo: fullscreen true",
    );
    let full = wait_for_shot(
        &x,
        &window,
        "vm-fullscreen.png",
        "a fullscreen test card",
        |p| {
            let img = image::open(p).unwrap().to_rgb8();
            img.dimensions() == (1280, 800) && shows_test_card(img.as_raw())
        },
    );
    // No header bar: the test card's bars reach the top (below the
    // window's few-pixel border).
    let img = image::open(&full).unwrap().to_rgb8();
    let top: Vec<[u8; 3]> = (0..img.width()).map(|px| img.get_pixel(px, 8).0).collect();
    assert!(
        BARS[..7].iter().all(|bar| top
            .iter()
            .any(|p| p.iter().zip(bar).all(|(&a, &b)| a.abs_diff(b) <= 8))),
        "row 8 does not cross the colour bars (a header bar?); see {}",
        full.display()
    );

    // The pointer at the top edge reveals the toolbar; away, it hides.
    let mark = log.mark();
    move_pointer(&x, &window, 640, 0);
    log.wait(
        mark,
        "console demo: fullscreen toolbar shown: true",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(600));
    x.screenshot(&window, &artifacts_dir().join("vm-fullscreen-toolbar.png"));
    let mark = log.mark();
    move_pointer(&x, &window, 640, 500);
    log.wait(
        mark,
        "console demo: fullscreen toolbar shown: false",
        Duration::from_secs(10),
    );

    // F11 again leaves fullscreen.
    log.keys_then(
        &x,
        &window,
        &["ctrl+alt", "F11"],
        "console demo: fullscreen false",
    );
    session.ok(&["destroy", "demo"]);
}

/// The serial page's "another client has the console" bar colour.
const HELD_BAR: [u8; 3] = [0xf6, 0xd3, 0x2d];

/// How many pixels of `rgb` a screenshot of `window` shows.
fn colour_pixels(x: &Xvfb, window: &str, rgb: [u8; 3], name: &str) -> usize {
    let shot = artifacts_dir().join(name);
    x.screenshot(window, &shot);
    let img = image::open(&shot).unwrap().to_rgb8();
    img.pixels()
        .filter(|p| p.0.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 12))
        .count()
}

/// Waits (30 s at most) until `want` is in the guest's serial log.
fn wait_for_guest(guest_log: impl Fn() -> String, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !guest_log().contains(want) {
        assert!(
            Instant::now() < deadline,
            "{what}: {want:?} never reached the guest; its log: {:?}",
            guest_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serial_page_says_when_vireoctl_console_holds_the_console_and_takes_no_keys_meanwhile() {
    if !kvm_or_skip() {
        return;
    }
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("skipping: /usr/bin/script is missing (Debian: bsdutils)");
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    let uuid = session.boot("echo", "echo", "", "echo=ready", Duration::from_secs(60));

    let x = Xvfb::start();
    let home = session.dir.path().join("home");
    let (mut app, log) = start_app(&x, &session, "echo", &home);
    let window = x.wait_for_window("echo – Vireo", &mut app, Duration::from_secs(60));
    log.wait(0, "serial echo: attached", Duration::from_secs(30));
    // The serial page (Ctrl+Alt first, in case the console holds the
    // keyboard); its terminal takes the focus, and typing reaches the
    // guest (the echo guest answers in upper case).
    log.keys_then(
        &x,
        &window,
        &["ctrl+alt", "alt+2"],
        "vm window: page serial",
    );
    let mark = log.mark();
    x.type_keys(&window, &["a"]);
    wait_for_guest(
        || session.serial_log(&uuid),
        "echo=ready\nA",
        "the window's key",
    );
    log.wait(mark, "serial echo: output \"A\"", Duration::from_secs(10));
    assert_eq!(
        colour_pixels(&x, &window, HELD_BAR, "vm-serial-free.png"),
        0,
        "the held bar shows before anyone holds the console"
    );

    // `vireoctl console` on a terminal holds the console.
    let mark = log.mark();
    let mut ctl = std::process::Command::new("script");
    ctl.args([
        "-q",
        "-e",
        "-c",
        "exec \"$VIREOCTL\" console echo",
        "/dev/null",
    ])
    .env("VIREOCTL", vireo_tests::engine::bin("vireoctl"))
    .env("SHELL", "/bin/sh")
    .env_remove("VIREO_DEFAULT_URI")
    .env("XDG_RUNTIME_DIR", &session.runtime)
    .env("XDG_DATA_HOME", &session.data)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    let mut ctl = Reaper(ctl.spawn().unwrap());
    let mut ctl_in = ctl.0.stdin.take().unwrap();
    let mut ctl_out = ctl.0.stdout.take().unwrap();
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = shown.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = std::io::Read::read(&mut ctl_out, &mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let ctl_shows = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !shown.lock().unwrap().contains(want) {
            assert!(
                Instant::now() < deadline,
                "vireoctl console never showed {want:?}: {:?}",
                shown.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    ctl_shows("Connected to domain 'echo'\r\nEscape character is ^] (Ctrl + ])\r\n");
    ctl_shows("echo=ready\nA");
    let held = log.wait(
        mark,
        "serial echo: held by vireoctl ",
        Duration::from_secs(20),
    );
    assert!(
        held.ends_with("banner shown, input enabled false"),
        "{held}"
    );
    x.wait_for_colour(&window, HELD_BAR, 2000, Duration::from_secs(10));
    x.screenshot(&window, &artifacts_dir().join("vm-serial-held.png"));

    // Keys typed in the window do not reach the guest; vireoctl's do.
    x.type_keys(&window, &["b"]);
    std::thread::sleep(Duration::from_millis(500));
    std::io::Write::write_all(&mut ctl_in, b"c").unwrap();
    wait_for_guest(
        || session.serial_log(&uuid),
        "echo=ready\nAC",
        "vireoctl's key",
    );
    ctl_shows("AC");

    // Ctrl+] ends vireoctl's session: the bar goes, typing works again.
    let mark = log.mark();
    std::io::Write::write_all(&mut ctl_in, b"\x1d").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctl.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "vireoctl console did not detach");
        std::thread::sleep(Duration::from_millis(50));
    }
    let released = log.wait(mark, "serial echo: released", Duration::from_secs(20));
    assert!(
        released.ends_with("banner hidden, input enabled true"),
        "{released}"
    );
    // (The revealer's slide-up animation takes a moment.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while colour_pixels(&x, &window, HELD_BAR, "vm-serial-released.png") > 0 {
        assert!(
            Instant::now() < deadline,
            "the held bar stayed after the session ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mark = log.mark();
    x.type_keys(&window, &["d"]);
    wait_for_guest(
        || session.serial_log(&uuid),
        "echo=ready\nACD",
        "the window's key after",
    );
    log.wait(mark, "serial echo: output \"D\"", Duration::from_secs(10));
    assert!(!session.serial_log(&uuid).contains('B'));
    session.ok(&["destroy", "echo"]);
}
