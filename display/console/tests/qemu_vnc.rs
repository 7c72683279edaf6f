//! The console session against QEMU's own VNC server (bochs-display, the
//! demo guest): pixels arrive, typed keys reach the guest, and a request
//! to resize the guest's screen is answered.

use std::time::{Duration, Instant};

use vireo_console::{ConsoleEvent, Input, ResizeRefused, Session};
use vireo_tests::demo::qemu_with_vnc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_shows_qemus_screen_and_types_into_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vnc.sock");
    let Some(mut qemu) = tokio::task::block_in_place(|| qemu_with_vnc(&sock)) else {
        return;
    };

    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (session, mut events) = Session::connect(stream, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut size = None;
    // Wait until the colour bars are on our copy of the screen.
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .ok()
            .flatten();
        match ev {
            Some(ConsoleEvent::Resized { width, height }) => size = Some((width, height)),
            Some(ConsoleEvent::Closed(why)) => panic!("session closed: {why}"),
            _ => {}
        }
        let fb = session.framebuffer().lock().unwrap();
        let white_bar = fb
            .pixel(10, 100)
            .is_some_and(|p| p[..3].iter().all(|&c| c > 0xa0));
        let black_bar = fb
            .pixel(790, 100)
            .is_some_and(|p| p[..3].iter().all(|&c| c < 0x30));
        if white_bar && black_bar {
            break;
        }
        assert!(Instant::now() < deadline, "the colour bars never arrived");
    }
    assert_eq!(size, Some((800, 600)));

    // Keysyms 'h', 'i', Return: QEMU turns them into scancodes.
    for keysym in [0x68u32, 0x69, 0xff0d] {
        session.send(Input::Key { keysym, down: true });
        session.send(Input::Key {
            keysym,
            down: false,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| qemu.wait_for_text("typed hi", |t| t.ends_with("hi\n")));

    // SetDesktopSize: QEMU offers ExtendedDesktopSize, so the request goes
    // out and is answered (Debian 12's QEMU with bochs-display answers
    // "invalid layout"), never "unsupported" without asking.
    session.send(Input::ResizeDesktop {
        width: 1024,
        height: 768,
    });
    let answer = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no answer to the resize request within 10 s");
        match ev {
            Some(ConsoleEvent::DesktopResize(result)) => break result,
            Some(ConsoleEvent::Closed(why)) => panic!("session closed: {why}"),
            None => panic!("the session ended"),
            _ => {}
        }
    };
    eprintln!("QEMU's answer to SetDesktopSize: {answer:?}");
    assert!(
        !matches!(answer, Err(ResizeRefused::Unsupported(_))),
        "QEMU's server offers resizing, yet the session called it unsupported: {answer:?}"
    );
}
