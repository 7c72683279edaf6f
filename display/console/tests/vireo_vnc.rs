//! The console session (vnc-rs, as the app uses it) against our own VNC
//! server in `vireo-vmm`, across the guest's mode switches: a new screen
//! size must arrive as a size change the decoder accepts, never as a
//! closed session ("Image data cannot be decoded correctly").

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_console::{ConsoleEvent, Input, Session};
use vireo_tests::engine::{bin, kvm_or_skip};
use vireo_tests::guest::{Flavor, build};

/// `vireo-vmm` running a guest with its VNC server on a unix socket;
/// killed when dropped.
struct Vmm {
    child: Child,
    dir: tempfile::TempDir,
}

impl Vmm {
    fn start(guest: &Path, cmdline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin("vireo-vmm"))
            .arg("--kernel")
            .arg(guest)
            .args(["--cmdline", cmdline])
            .arg("--serial-log")
            .arg(dir.path().join("serial.log"))
            .arg("--control-socket")
            .arg(dir.path().join("control.sock"))
            .arg("--vnc-socket")
            .arg(dir.path().join("vnc.sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        Vmm { child, dir }
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn wait_line(&mut self, line: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.serial().lines().any(|l| l.trim_end() == line) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "vireo-vmm exited ({status}) before {line:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} on the serial port within {limit:?}:\n{}\nstderr:\n{}",
                self.serial(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads events until the last size announced is `size` and `done` holds
/// for the framebuffer; a closed session fails the test with its reason.
async fn wait_for(
    session: &Session,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ConsoleEvent>,
    what: &str,
    size: (u32, u32),
    sizes: &mut Vec<(u32, u32)>,
    done: impl Fn(&vireo_console::Framebuffer) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout(Duration::from_millis(500), events.recv())
            .await
            .ok()
            .flatten();
        match ev {
            Some(ConsoleEvent::Resized { width, height }) => sizes.push((width, height)),
            Some(ConsoleEvent::Closed(why)) => panic!("session closed waiting for {what}: {why}"),
            _ => {}
        }
        if sizes.last() == Some(&size) && done(&session.framebuffer().lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never arrived (sizes announced: {sizes:?})"
        );
    }
}

fn is_rgb(fb: &vireo_console::Framebuffer, x: u32, y: u32, rgb: [u8; 3]) -> bool {
    fb.pixel(x, y).is_some_and(|[b, g, r, _]| [r, g, b] == rgb)
}

/// The guest switches from 640x480 to 800x600 while the session is
/// attached and waiting for updates (as a guest does early at boot, when
/// the app attaches right after Run). Each round is a fresh machine and
/// connection; every switch must reach the session as a new size and the
/// new picture, without the session closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_switch_while_attached_reaches_the_session_intact() {
    if !kvm_or_skip() {
        return;
    }
    let guest = build("fbmodes", Flavor::Pvh);
    for round in 0..2 {
        let mut vmm = tokio::task::block_in_place(|| {
            let mut vmm = Vmm::start(&guest, "mode=640x480 mode2=800x600");
            vmm.wait_line("ready", Duration::from_secs(60));
            vmm
        });
        let stream = tokio::net::UnixStream::connect(vmm.dir.path().join("vnc.sock"))
            .await
            .unwrap();
        let (session, mut events) = Session::connect(stream, None).await.unwrap();
        let mut sizes = Vec::new();
        wait_for(
            &session,
            &mut events,
            "the red square",
            (640, 480),
            &mut sizes,
            |fb| fb.width() == 640 && is_rgb(fb, 150, 100, [0xff, 0, 0]),
        )
        .await;
        // Any key makes the guest switch to mode2.
        for down in [true, false] {
            session.send(Input::Key { keysym: 0x78, down });
        }
        tokio::task::block_in_place(|| vmm.wait_line("mode2", Duration::from_secs(30)));
        wait_for(
            &session,
            &mut events,
            &format!("round {round}: the 800x600 picture"),
            (800, 600),
            &mut sizes,
            |fb| {
                fb.width() == 800
                    && is_rgb(fb, 30, 30, [0xff, 0xff, 0])
                    && is_rgb(fb, 700, 500, [0, 0, 0xff])
            },
        )
        .await;
        assert_eq!(sizes, [(640, 480), (800, 600)], "round {round}");
        // Small changes after the switch arrive as incremental updates.
        for (step, rgb) in [(2, [0xff, 0, 0xff]), (3, [0xff, 0xff, 0xff])] {
            for down in [true, false] {
                session.send(Input::Key { keysym: 0x78, down });
            }
            let line = format!("change{step}");
            tokio::task::block_in_place(|| vmm.wait_line(&line, Duration::from_secs(30)));
            wait_for(
                &session,
                &mut events,
                &format!("round {round}: {line}"),
                (800, 600),
                &mut sizes,
                |fb| is_rgb(fb, 410, 310, rgb) && is_rgb(fb, 30, 30, [0xff, 0xff, 0]),
            )
            .await;
        }
    }
}

/// The same switch with vnc-rs itself asking for ZRLE only (the app asks
/// for Tight first): every rectangle decodes and fits the screen vnc-rs
/// knows, and the new size arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_rs_decodes_zrle_across_the_mode_switch() {
    use vnc::{ClientKeyEvent, PixelFormat, VncConnector, VncEncoding, VncEvent, X11Event};
    if !kvm_or_skip() {
        return;
    }
    let guest = build("fbmodes", Flavor::Pvh);
    let mut vmm = tokio::task::block_in_place(|| {
        let mut vmm = Vmm::start(&guest, "mode=640x480 mode2=800x600");
        vmm.wait_line("ready", Duration::from_secs(60));
        vmm
    });
    let stream = tokio::net::UnixStream::connect(vmm.dir.path().join("vnc.sock"))
        .await
        .unwrap();
    let client = VncConnector::new(stream)
        .set_auth_method(async { Ok(String::new()) })
        .add_encoding(VncEncoding::Zrle)
        .add_encoding(VncEncoding::ExtendedDesktopSizePseudo)
        .add_encoding(VncEncoding::DesktopSizePseudo)
        .allow_shared(true)
        .set_pixel_format(PixelFormat::bgra())
        .build()
        .unwrap()
        .try_start()
        .await
        .unwrap()
        .finish()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut rects, mut rects_after, mut pressed, mut resized) = (0, 0, false, None);
    while rects_after == 0 {
        assert!(
            Instant::now() < deadline,
            "no pixels after the switch (pixels before: {rects}, new size: {resized:?})"
        );
        if let Err(e) = client.input(X11Event::Refresh).await {
            // Closed after a decoding error: its event says which.
            let why = tokio::time::timeout(Duration::from_secs(1), client.recv_event()).await;
            panic!("vnc-rs stopped: {e} ({why:?})");
        }
        let ev = tokio::time::timeout(Duration::from_millis(200), client.recv_event()).await;
        match ev {
            Err(_) => continue,
            Ok(Err(e)) => panic!("vnc-rs failed: {e}"),
            Ok(Ok(VncEvent::Error(e))) => panic!("vnc-rs failed: {e}"),
            Ok(Ok(VncEvent::DesktopUpdate(u))) => {
                if let Some(l) = u.layout {
                    resized = Some((l.width, l.height));
                }
            }
            Ok(Ok(VncEvent::SetResolution(s))) => resized = Some((s.width, s.height)),
            Ok(Ok(VncEvent::RawImage(..))) if resized == Some((800, 600)) => rects_after += 1,
            Ok(Ok(VncEvent::RawImage(..))) => rects += 1,
            Ok(Ok(_)) => {}
        }
        if rects > 0 && !pressed {
            pressed = true;
            for down in [true, false] {
                client
                    .input(X11Event::KeyEvent(ClientKeyEvent {
                        keycode: 0x78,
                        down,
                    }))
                    .await
                    .unwrap();
            }
            tokio::task::block_in_place(|| vmm.wait_line("mode2", Duration::from_secs(30)));
        }
    }
    let _ = client.close().await;
}
