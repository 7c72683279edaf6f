//! The VNC server of the real `vireo-vmm`, driven by clients nobody here
//! wrote (gvnccapture, vncdotool, TigerVNC's viewer) and by a minimal RFB
//! client of our own for what those cannot show (bytes on the wire,
//! malformed messages, pseudo-encodings).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BOOT_TIMEOUT, Vmm, kvm_present};
use serde_json::{Value, json};
use vireo_tests::desktop::Reaper;
use vireo_tests::guest::{Flavor, build};

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/vnc");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rgb(img: &image::RgbImage, x: u32, y: u32) -> [u8; 3] {
    img.get_pixel(x, y).0
}

/// Checks the fb guest's picture at `(ox, oy)` inside `img`.
fn check_fb_picture(img: &image::RgbImage, ox: u32, oy: u32, what: &str) {
    let grey = [0x20, 0x20, 0x20];
    assert_eq!(rgb(img, ox + 5, oy + 200), grey, "{what}: background");
    // (TigerVNC's viewer overlays a graph at the bottom right when it
    // logs at level 100: stay clear of it.)
    assert_eq!(rgb(img, ox + 600, oy + 200), grey, "{what}: background");
    assert_eq!(
        rgb(img, ox + 120, oy + 130),
        [0xff, 0, 0],
        "{what}: red square"
    );
    assert_eq!(
        rgb(img, ox + 199, oy + 149),
        [0xff, 0, 0],
        "{what}: red square"
    );
    assert_eq!(
        rgb(img, ox + 200, oy + 149),
        grey,
        "{what}: right of the square"
    );
    assert_eq!(
        rgb(img, ox + 50, oy + 305),
        [0, 0xff, 0],
        "{what}: green band"
    );
    assert_eq!(rgb(img, ox + 50, oy + 311), grey, "{what}: below the band");
}

fn vncdo() -> PathBuf {
    if let Ok(out) = Command::new("sh").args(["-c", "command -v vncdo"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/vncdo");
    assert!(
        venv.exists(),
        "vncdo is required (`make test` installs vncdotool into .venv)"
    );
    venv
}

/// Runs a command with a time limit; returns (success, stdout+stderr).
fn run_for(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out");
    let child = cmd
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.success();
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    (ok, out)
}

// ---- Our own minimal client ----

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A Raw-only RFB 3.8 client that records what it receives.
struct Rfb {
    s: Box<dyn Stream>,
    width: u16,
    height: u16,
    pixels: Vec<u32>,
    /// Pseudo-encoding rectangles received: (encoding, x, y, w, h).
    pseudo: Vec<(i32, u16, u16, u16, u16)>,
    /// Pixel rectangles received.
    rects: Vec<(u16, u16, u16, u16)>,
}

impl Rfb {
    fn unix(path: &Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self::handshake(Box::new(s))
    }

    fn handshake(mut s: Box<dyn Stream>) -> Self {
        let mut version = [0u8; 12];
        s.read_exact(&mut version).unwrap();
        assert_eq!(&version, b"RFB 003.008\n");
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut n = [0u8; 1];
        s.read_exact(&mut n).unwrap();
        let mut types = vec![0u8; usize::from(n[0])];
        s.read_exact(&mut types).unwrap();
        assert_eq!(types, [1], "security None on the unix socket");
        s.write_all(&[1, 1]).unwrap(); // None, then ClientInit shared
        let mut result = [0u8; 4];
        s.read_exact(&mut result).unwrap();
        assert_eq!(result, [0; 4]);
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let width = u16::from_be_bytes([init[0], init[1]]);
        let height = u16::from_be_bytes([init[2], init[3]]);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        let mut name = vec![0u8; name_len as usize];
        s.read_exact(&mut name).unwrap();
        Rfb {
            s,
            width,
            height,
            pixels: vec![0; usize::from(width) * usize::from(height)],
            pseudo: Vec::new(),
            rects: Vec::new(),
        }
    }

    fn set_encodings(&mut self, encs: &[i32]) {
        let mut m = vec![2, 0];
        m.extend_from_slice(&(encs.len() as u16).to_be_bytes());
        for e in encs {
            m.extend_from_slice(&e.to_be_bytes());
        }
        self.s.write_all(&m).unwrap();
    }

    fn request(&mut self, incremental: bool) {
        let mut m = vec![3, u8::from(incremental), 0, 0, 0, 0];
        m.extend_from_slice(&self.width.to_be_bytes());
        m.extend_from_slice(&self.height.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.s.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }

    fn skip(&mut self, n: usize) {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
    }

    /// Reads one FramebufferUpdate; returns the bytes it took. A size
    /// rectangle must come last in an update without pixels (clients
    /// apply ExtendedDesktopSize after the whole update: vnc-rs refuses
    /// pixels beside one; old clients need DesktopSize last).
    fn read_update(&mut self) -> usize {
        let mut head = [0u8; 4];
        self.s.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 0, "a FramebufferUpdate");
        let count = u16::from_be_bytes([head[2], head[3]]);
        let mut bytes = 4;
        let rects_before = self.rects.len();
        let mut sized = false;
        for _ in 0..count {
            let (x, y, w, h) = (self.u16(), self.u16(), self.u16(), self.u16());
            assert!(
                !sized,
                "a rectangle after the size rectangle in one update: {:?}",
                (x, y, w, h)
            );
            let mut e = [0u8; 4];
            self.s.read_exact(&mut e).unwrap();
            let enc = i32::from_be_bytes(e);
            bytes += 12;
            match enc {
                0 => {
                    let mut data = vec![0u8; usize::from(w) * usize::from(h) * 4];
                    self.s.read_exact(&mut data).unwrap();
                    bytes += data.len();
                    for (i, px) in data.chunks_exact(4).enumerate() {
                        let (xx, yy) = (
                            usize::from(x) + i % usize::from(w),
                            usize::from(y) + i / usize::from(w),
                        );
                        if let Some(p) = self.pixels.get_mut(yy * usize::from(self.width) + xx) {
                            *p = u32::from_le_bytes([px[0], px[1], px[2], 0]);
                        }
                    }
                    self.rects.push((x, y, w, h));
                }
                -223 | -308 => {
                    assert_eq!(
                        self.rects.len(),
                        rects_before,
                        "pixels in the update of a size rectangle"
                    );
                    sized = true;
                    if enc == -308 {
                        let mut n = [0u8; 4];
                        self.s.read_exact(&mut n).unwrap();
                        self.skip(16 * usize::from(n[0]));
                        bytes += 4 + 16 * usize::from(n[0]);
                    }
                    if enc == -223 || x == 0 {
                        self.width = w;
                        self.height = h;
                        self.pixels = vec![0; usize::from(w) * usize::from(h)];
                    }
                    self.pseudo.push((enc, x, y, w, h));
                }
                -258 => self.pseudo.push((enc, x, y, w, h)),
                -261 => {
                    self.skip(1);
                    bytes += 1;
                    self.pseudo.push((enc, x, y, w, h));
                }
                -239 => {
                    let n = usize::from(w) * usize::from(h) * 4
                        + usize::from(w).div_ceil(8) * usize::from(h);
                    self.skip(n);
                    bytes += n;
                    self.pseudo.push((enc, x, y, w, h));
                }
                other => panic!("unexpected encoding {other}"),
            }
        }
        bytes
    }

    fn pixel(&self, x: usize, y: usize) -> u32 {
        self.pixels[y * usize::from(self.width) + x]
    }

    /// Whether any byte arrives within `d`.
    fn silent_for(&mut self, d: Duration, stream: &UnixStream) -> bool {
        stream.set_read_timeout(Some(d)).unwrap();
        let mut b = [0u8; 1];
        // A byte read here is lost, but then the test fails anyway.
        let r = (&*stream).read(&mut b);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
    }
}

fn fb_vmm() -> Vmm {
    let guest = build("fb", Flavor::Pvh);
    let mut vmm = Vmm::start_with_vnc(&guest, &["--cmdline", "mode=640x480 hold"]);
    vmm.wait_line("done");
    vmm
}

// ---- Real clients ----

#[test]
fn gvnccapture_captures_the_fb_guest_picture() {
    if !kvm_present() {
        return;
    }
    let vmm = fb_vmm();
    let png = artifacts().join("gvnccapture-fb.png");
    let _ = std::fs::remove_file(&png);
    // gvnccapture takes HOST:DISPLAY, the port less 5900 (free ports come
    // from the ephemeral range, far above).
    let target = format!("127.0.0.1:{}", i32::from(vmm.port.unwrap()) - 5900);
    let (ok, out) = run_for(
        Command::new("gvnccapture").arg(&target).arg(&png),
        Duration::from_secs(30),
    );
    assert!(ok, "gvnccapture failed:\n{out}\nvmm:\n{}", vmm.stderr());
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    check_fb_picture(&img, 0, 0, "gvnccapture");
}

#[test]
fn vncdo_types_keys_the_kbd_guest_echoes_and_captures_the_screen() {
    if !kvm_present() {
        return;
    }
    let guest = build("kbd", Flavor::Pvh);
    let mut vmm = Vmm::start_with_vnc(&guest, &["--resolution", "800x600"]);
    vmm.wait_line("kbd=ready");
    let png = artifacts().join("vncdo-kbd.png");
    let _ = std::fs::remove_file(&png);
    let (ok, out) = run_for(
        Command::new(vncdo())
            .args(["-s", &vmm.addr(), "capture"])
            .arg(&png)
            .args(["key", "a", "key", "up", "key", "shift-b", "key", "esc"]),
        Duration::from_secs(60),
    );
    assert!(ok, "vncdo failed:\n{out}\nvmm:\n{}", vmm.stderr());
    let out = vmm.wait_line("done");
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("scancode="))
        .collect();
    assert_eq!(
        codes,
        [
            "0x1e", "0x9e", // a
            "0xe0", "0x48", "0xe0", "0xc8", // Up
            "0x2a", "0x30", "0xb0", "0xaa", // Shift+b
            "0x01", "0x81", // Escape
        ]
    );
    // The direct boot's screen: 800x600, never drawn (black).
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (800, 600));
    assert_eq!(rgb(&img, 400, 300), [0, 0, 0]);
}

/// An Xvfb of our own. `-noreset`: an X server resets when its last
/// client leaves and refuses clients meanwhile, which a viewer or
/// xwininfo starting at that moment would meet.
fn start_xvfb() -> (Reaper, String) {
    let mut xvfb = Command::new("Xvfb")
        .args([
            "-noreset",
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
    assert!(
        line.trim().parse::<u32>().is_ok(),
        "Xvfb gave no display: {line:?}"
    );
    (Reaper(xvfb), format!(":{}", line.trim()))
}

/// The id and size of the viewer's main window ("… - TigerVNC").
fn tiger_window(display: &str) -> Option<(String, u32, u32)> {
    let out = Command::new("xwininfo")
        .args(["-display", display, "-root", "-tree"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.contains("- TigerVNC\""))?;
    let id = line.split_whitespace().next()?.to_owned();
    // "  640x480+1+20  +1+20"
    let geom = line.split("\")").last()?.split_whitespace().next()?;
    let (w, rest) = geom.split_once('x')?;
    let h = rest.split('+').next()?;
    Some((id, w.parse().ok()?, h.parse().ok()?))
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn screenshot(display: &str, window: &str, png: &Path) -> image::RgbImage {
    let ok = Command::new("import")
        .args(["-display", display, "-window", window])
        .arg(png)
        .status()
        .expect("import is required (`make test` installs imagemagick)")
        .success();
    assert!(ok, "import failed");
    image::open(png).unwrap().to_rgb8()
}

fn start_viewer(display: &str, addr: &str, encoding: &str, log: &Path) -> Reaper {
    let child = Command::new("xtigervncviewer")
        .args([
            "-AutoSelect=0",
            &format!("-PreferredEncoding={encoding}"),
            "-ReconnectOnError=0",
            "-Log=*:stderr:100",
            addr,
        ])
        .env("DISPLAY", display)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .process_group(0)
        .spawn()
        .expect("xtigervncviewer is required (`make test` installs tigervnc-viewer)");
    Reaper(child)
}

#[test]
fn tigervnc_viewer_shows_the_screen_in_each_encoding() {
    if !kvm_present() {
        return;
    }
    let vmm = fb_vmm();
    let (_xvfb, display) = start_xvfb();
    for (n, encoding) in ["Tight", "ZRLE", "Hextile", "Raw"].into_iter().enumerate() {
        let log = artifacts().join(format!("tigervnc-{encoding}.log"));
        let viewer = start_viewer(&display, &vmm.addr(), encoding, &log);
        let (id, w, h) = wait_for("the viewer window", Duration::from_secs(30), || {
            tiger_window(&display).filter(|(_, w, h)| (*w, *h) == (640, 480))
        });
        assert_eq!((w, h), (640, 480));
        // The viewer's own log: it connected and decoded into 32-bit pixels.
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("Using RFB protocol version 3.8"), "{text}");
        // TigerVNC 1.12 logs no encoding: our server names the one it
        // sends to this (the n-th) connection.
        let png = artifacts().join(format!("tigervnc-{encoding}.png"));
        let img = wait_for("the picture in the viewer", Duration::from_secs(20), || {
            let img = screenshot(&display, &id, &png);
            (rgb(&img, 50, 305) == [0, 0xff, 0]).then_some(img)
        });
        check_fb_picture(&img, 0, 0, encoding);
        let used: Vec<String> = vmm
            .stderr()
            .lines()
            .filter_map(|l| l.split_once("sending ").map(|(_, r)| r.to_owned()))
            .collect();
        assert_eq!(
            used.get(n).map(String::as_str),
            Some(format!("{encoding} updates").as_str()),
            "{used:?}"
        );
        drop(viewer);
        wait_for("the viewer to close", Duration::from_secs(10), || {
            tiger_window(&display).is_none().then_some(())
        });
    }
}

fn fbmodes_vmm(cmdline: &str) -> Vmm {
    let guest = build("fbmodes", Flavor::Pvh);
    let mut vmm = Vmm::start_with_vnc(&guest, &["--cmdline", cmdline]);
    vmm.wait_line("ready");
    vmm
}

#[test]
fn a_desktop_size_change_reaches_every_client() {
    if !kvm_present() {
        return;
    }
    let mut vmm = fbmodes_vmm("mode=640x480 mode2=800x600");
    // Our clients: one with ExtendedDesktopSize, one with DesktopSize only.
    let mut ext = Rfb::unix(&vmm.path("vnc.sock"));
    ext.set_encodings(&[0, -308, -223]);
    ext.request(false);
    ext.read_update();
    let mut plain = Rfb::unix(&vmm.path("vnc.sock"));
    plain.set_encodings(&[0, -223]);
    plain.request(false);
    plain.read_update();
    assert_eq!((plain.width, plain.height), (640, 480));
    assert_eq!(plain.pixel(150, 100), 0x00ff_0000);
    // TigerVNC's viewer.
    let (_xvfb, display) = start_xvfb();
    let log = artifacts().join("tigervnc-resize.log");
    let _viewer = start_viewer(&display, &vmm.addr(), "ZRLE", &log);
    wait_for(
        "the viewer window at 640x480",
        Duration::from_secs(30),
        || tiger_window(&display).filter(|(_, w, h)| (*w, *h) == (640, 480)),
    );
    ext.request(true);
    plain.request(true);

    // vncdotool captures, presses a key (the guest switches to 800x600),
    // and captures again on the same connection.
    let before = artifacts().join("vncdo-before.png");
    let after = artifacts().join("vncdo-after.png");
    let (ok, out) = run_for(
        Command::new(vncdo())
            .args(["-s", &vmm.addr(), "capture"])
            .arg(&before)
            .args(["key", "x", "pause", "3", "capture"])
            .arg(&after),
        Duration::from_secs(60),
    );
    assert!(ok, "vncdo failed:\n{out}\nvmm:\n{}", vmm.stderr());
    vmm.wait_line("mode2");
    assert_eq!(
        image::open(&before).unwrap().to_rgb8().dimensions(),
        (640, 480)
    );
    let img = image::open(&after).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (800, 600));
    assert_eq!(rgb(&img, 30, 30), [0xff, 0xff, 0], "yellow square");
    assert_eq!(rgb(&img, 700, 500), [0, 0, 0xff], "blue");

    for (c, enc) in [(&mut ext, -308), (&mut plain, -223)] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while (c.width, c.height) != (800, 600) {
            assert!(Instant::now() < deadline, "no resize for {enc}");
            c.read_update();
            c.request(true);
        }
        assert!(
            c.pseudo
                .iter()
                .any(|p| p.0 == enc && (p.3, p.4) == (800, 600))
        );
        assert!(
            !c.pseudo.iter().any(|p| p.0 != enc),
            "only announced pseudo-encodings"
        );
        // After the resize, the new picture arrives.
        c.request(false);
        c.read_update();
        assert_eq!(c.pixel(30, 30), 0x00ff_ff00);
    }
    let (id, w, h) = wait_for(
        "the viewer window at 800x600",
        Duration::from_secs(20),
        || tiger_window(&display).filter(|(_, w, h)| (*w, *h) == (800, 600)),
    );
    let png = artifacts().join("tigervnc-resized.png");
    let shot = wait_for(
        "the new picture in the viewer",
        Duration::from_secs(20),
        || {
            let img = screenshot(&display, &id, &png);
            (rgb(&img, 400, 300) == [0, 0, 0xff]).then_some(img)
        },
    );
    assert_eq!((w, h), (800, 600));
    assert_eq!(rgb(&shot, 30, 30), [0xff, 0xff, 0]);
}

#[test]
fn vnc_auth_admits_the_password_and_refuses_others() {
    if !kvm_present() {
        return;
    }
    let guest = build("fb", Flavor::Pvh);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let mut vmm = Vmm::start_with_vnc(
        &guest,
        &[
            "--cmdline",
            "mode=640x480 hold",
            "--vnc-password-file",
            pw.to_str().unwrap(),
        ],
    );
    vmm.wait_line("done");
    let png = artifacts().join("vncdo-auth.png");
    let (ok, out) = run_for(
        Command::new(vncdo())
            .args(["-s", &vmm.addr(), "-p", "s3cret", "capture"])
            .arg(&png),
        Duration::from_secs(30),
    );
    assert!(ok, "vncdo with the password failed:\n{out}");
    check_fb_picture(&image::open(&png).unwrap().to_rgb8(), 0, 0, "vncdo");
    let (ok, _) = run_for(
        Command::new(vncdo())
            .args(["-s", &vmm.addr(), "-p", "wrong", "capture"])
            .arg(artifacts().join("vncdo-wrong.png")),
        Duration::from_secs(15),
    );
    assert!(!ok, "a wrong password was accepted");
    assert!(vmm.stderr().contains("authentication failed"));
    assert!(vmm.alive());
}

#[test]
fn a_non_loopback_listener_without_password_is_refused_at_start() {
    let guest = build("hello", Flavor::Pvh);
    let out = Command::new(env!("CARGO_BIN_EXE_vireo-vmm"))
        .arg("--kernel")
        .arg(&guest)
        .args(["--vnc-listen", "0.0.0.0:5999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--vnc-password-file"),
        "{err}"
    );
}

// ---- Our own client: what the others cannot show ----

#[test]
fn a_malformed_message_ends_only_that_client() {
    if !kvm_present() {
        return;
    }
    let vmm = fb_vmm();
    let sock = vmm.path("vnc.sock");
    let mut good = Rfb::unix(&sock);
    good.set_encodings(&[0]);
    let bad_stream = UnixStream::connect(&sock).unwrap();
    bad_stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bad = Rfb::handshake(Box::new(bad_stream.try_clone().unwrap()));
    bad.s.write_all(&[99, 1, 2, 3]).unwrap();
    // The server closes the bad connection.
    let mut rest = Vec::new();
    let _ = (&bad_stream).read_to_end(&mut rest);
    assert!(rest.is_empty(), "no reply to a malformed message");
    // The good one carries on.
    good.request(false);
    good.read_update();
    assert_eq!(good.pixel(150, 100), 0x00ff_0000);
    let log = vmm.stderr();
    assert!(log.contains("malformed client message"), "{log}");
}

#[test]
fn an_idle_screen_sends_nothing_and_a_small_change_sends_only_its_tiles() {
    if !kvm_present() {
        return;
    }
    let vmm = fbmodes_vmm("mode=640x480 desktop");
    let stream = UnixStream::connect(vmm.path("vnc.sock")).unwrap();
    let mut c = Rfb::handshake(Box::new(stream.try_clone().unwrap()));
    c.set_encodings(&[0]);
    c.request(false);
    let full = c.read_update();
    assert!(full >= 640 * 480 * 4, "{full} bytes");
    c.rects.clear();
    c.request(true);
    assert!(
        c.silent_for(Duration::from_secs(2), &stream),
        "an idle screen sent bytes"
    );
    vmm.call("send-key", json!({ "keys": [0x2d] }));
    let bytes = c.read_update();
    // The 32x32 square at (400, 300) covers 16x16 tiles 25..27 x 18..20.
    let area: usize = c
        .rects
        .iter()
        .map(|r| usize::from(r.2) * usize::from(r.3))
        .sum();
    assert!(area <= 48 * 48, "{:?}", c.rects);
    assert!(bytes < 48 * 48 * 4 + 100, "{bytes} bytes");
    assert_eq!(c.pixel(410, 310), 0x00ff_ffff);
}

#[test]
fn qemu_extended_key_events_reach_the_guest_as_scancodes() {
    if !kvm_present() {
        return;
    }
    let guest = build("kbd", Flavor::Pvh);
    let mut vmm = Vmm::start_with_vnc(&guest, &[]);
    vmm.wait_line("kbd=ready");
    let mut c = Rfb::unix(&vmm.path("vnc.sock"));
    c.set_encodings(&[0, -258]);
    c.request(false);
    c.read_update();
    assert!(
        c.pseudo.iter().any(|p| p.0 == -258),
        "no Extended Key Event ack"
    );
    let key = |down: bool, keycode: u32| {
        let mut m = vec![255, 0];
        m.extend_from_slice(&u16::from(down).to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&keycode.to_be_bytes());
        m
    };
    for (code, down) in [
        (0x1e, true),
        (0x1e, false),
        (0xc8, true),
        (0xc8, false),
        (0x01, true),
        (0x01, false),
    ] {
        c.s.write_all(&key(down, code)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = vmm.wait_line("done");
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("scancode="))
        .collect();
    assert_eq!(
        codes,
        [
            "0x1e", "0x9e", "0xe0", "0x48", "0xe0", "0xc8", "0x01", "0x81"
        ]
    );
}

#[test]
fn the_tracker_follows_the_machine_across_a_reset() {
    if !kvm_present() {
        return;
    }
    let mut vmm = fbmodes_vmm("mode=640x480 mode2=800x600");
    let mut c = Rfb::unix(&vmm.path("vnc.sock"));
    c.set_encodings(&[0, -223]);
    c.request(false);
    c.read_update();
    vmm.call("send-key", json!({ "keys": [0x2d] }));
    vmm.wait_line("mode2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while (c.width, c.height) != (800, 600) {
        assert!(Instant::now() < deadline);
        c.request(true);
        c.read_update();
    }
    // Reset: a new Vm and a new bochs-display; the guest draws 640x480 again.
    let serial_before = vmm.serial().len();
    vmm.call("system_reset", Value::Null);
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !vmm.serial()[serial_before..].contains("drawn") {
        assert!(Instant::now() < deadline, "no redraw after reset");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.request(true);
        c.read_update();
        if (c.width, c.height) == (640, 480) && c.pixel(150, 100) == 0x00ff_0000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never saw the rebooted screen"
        );
    }
    // The control socket's dirty-pages still answers (through the tracker).
    let pages = vmm.call("dirty-pages", Value::Null);
    assert!(pages["pages"].is_array());
}
