//! A real session engine behind Debian's OpenSSH server: `vireoctl -c
//! vireo+ssh://…` runs a VM's lifecycle, its serial console and a
//! screenshot through SSH, uploads and downloads a volume, and the API
//! plus two VNC consoles share one SSH connection (counted in sshd's log).

mod sshd;

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sshd::{Home, Remote, Sshd, runtime, sshd_or_skip};
use vireo_api::ConnectUri;
use vireo_api::proto::{Request, Response};
use vireo_remote::{Connection, NoPrompt};
use vireo_tests::demo::shows_test_card;
use vireo_tests::engine::{Session, bin, domain_xml, guest, kvm_or_skip, serial};

const BOOT: Duration = Duration::from_secs(30);

#[test]
fn vireoctl_over_ssh_runs_a_vm_with_serial_console_and_screenshot() {
    if !kvm_or_skip() || !sshd_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let r = Remote::new(&s, true);

    let out = r.ctl(
        &["define", "-"],
        Some(&domain_xml("demo", &guest("demo"), "")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain 'demo' defined from standard input\n\n"
    );
    assert_eq!(r.ok(&["start", "demo"]), "Domain 'demo' started\n\n");
    let list = r.ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.contains(" demo ") && l.ends_with("running")),
        "{list}"
    );
    // The same engine, seen locally.
    assert_eq!(s.state("demo"), "running (booted)");

    // A screenshot through SSH shows the test card once the guest drew it.
    let shot = s.dir.path().join("demo.png");
    let shot_arg = shot.to_str().unwrap();
    let deadline = Instant::now() + BOOT;
    loop {
        let text = r.ok(&["screenshot", "demo", shot_arg]);
        assert_eq!(
            text,
            format!("Screenshot saved to {shot_arg}, with type of image/png\n\n")
        );
        let img = image_rgb(&shot);
        if shows_test_card(&img) {
            break;
        }
        assert!(Instant::now() < deadline, "no test card in the screenshot");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The serial console through SSH: the echo guest upper-cases input.
    s.define(&domain_xml("echo", &guest("echo"), ""));
    r.ok(&["start", "echo"]);
    let uuid = s.info("echo").summary.uuid;
    s.wait_serial(&uuid, "echo=ready", BOOT);
    let mut console = r
        .command(&["console", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = console.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let wait_for = |text: &str| {
        let deadline = Instant::now() + BOOT;
        while !String::from_utf8_lossy(&seen.lock().unwrap()).contains(text) {
            assert!(
                Instant::now() < deadline,
                "'{text}' never showed on the console: {:?}",
                String::from_utf8_lossy(&seen.lock().unwrap())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("Escape character is ^] (Ctrl + ])");
    let mut stdin = console.stdin.take().unwrap();
    stdin.write_all(b"over ssh").unwrap();
    stdin.flush().unwrap();
    wait_for("OVER SSH");
    // Ctrl+] detaches; vireoctl exits cleanly.
    stdin.write_all(&[0x1d]).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = console.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "vireoctl console did not detach");
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    assert!(status.success());

    assert_eq!(r.ok(&["destroy", "demo"]), "Domain 'demo' destroyed\n\n");
    r.ok(&["destroy", "echo"]);
    let list = r.ok(&["list", "--all"]);
    assert!(
        list.lines()
            .any(|l| l.contains(" demo ") && l.ends_with("shut off")),
        "{list}"
    );
}

/// A PNG file's pixels as RGB.
fn image_rgb(path: &std::path::Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

/// BGRA framebuffer pixels as RGB.
fn bgra_to_rgb(pixels: &[u8]) -> Vec<u8> {
    pixels
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

#[test]
fn api_and_two_consoles_share_one_ssh_connection() {
    if !kvm_or_skip() || !sshd_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("demo", &guest("demo"), ""));
    s.ok(&["start", "demo"]);
    let r = Remote::new(&s, true);
    let uri: ConnectUri = r.uri.parse().unwrap();
    let settings = r.home.settings(None);
    let rt = runtime();
    let before = (r.sshd.connections(), r.sshd.publickey_logins());
    rt.block_on(async {
        let conn = Connection::connect_uri(&uri, &settings, &NoPrompt)
            .await
            .unwrap();
        let (api, _events) = conn.api_client("ssh-test", true).await.unwrap();
        let Response::Domains { domains } =
            api.call(Request::ListDomains { all: true }).await.unwrap()
        else {
            panic!("unexpected answer");
        };
        assert_eq!(domains.len(), 1);
        assert_eq!(domains[0].name, "demo");

        // Two consoles, each its own channel on the same connection.
        let mut consoles = Vec::new();
        for _ in 0..2 {
            let stream = conn.attach_vnc("ssh-test", "demo").await.unwrap();
            let (session, events) = vireo_console::session::Session::connect(stream, None)
                .await
                .unwrap();
            consoles.push((session, events));
        }
        let deadline = tokio::time::Instant::now() + BOOT;
        for (session, _events) in &consoles {
            loop {
                let rgb = bgra_to_rgb(session.framebuffer().lock().unwrap().pixels());
                if shows_test_card(&rgb) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a console never showed the test card"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The API still answers while both consoles stream.
        let Response::Version { .. } = api.call(Request::Version).await.unwrap() else {
            panic!("unexpected answer");
        };
        assert_eq!(
            (
                r.sshd.connections() - before.0,
                r.sshd.publickey_logins() - before.1
            ),
            (1, 1),
            "one SSH connection and one login for the API and two consoles:\n{}",
            r.sshd.log()
        );
        api.call(Request::Destroy {
            domain: "demo".into(),
        })
        .await
        .unwrap();
    });
}

#[test]
fn session_engine_is_found_through_the_remote_runtime_dir_and_started_on_demand() {
    if !kvm_or_skip() || !sshd_or_skip() {
        return;
    }
    let _serial = serial();
    // The "remote" user's session: sshd gives its sessions this runtime
    // directory and a PATH with vireod, as a login on another host would.
    let s = Session::new();
    let bins = bin("vireod").parent().unwrap().to_owned();
    let sshd = Sshd::start_with(&format!(
        "SetEnv XDG_RUNTIME_DIR={} XDG_DATA_HOME={} PATH={}:/usr/bin:/bin\n",
        s.runtime.display(),
        s.data.display(),
        bins.display()
    ));
    let home = Home::with_key_for(&sshd);
    home.trust(&sshd);
    assert!(!s.socket().exists(), "no engine runs yet");
    let r = Remote {
        uri: format!("vireo+ssh://127.0.0.1:{}/session", sshd.port),
        sshd,
        home,
    };
    let out = r.ok(&["version"]);
    assert!(out.contains("Running against daemon: "), "{out}");
    // The engine now runs in the remote user's runtime directory.
    assert!(s.socket().exists());
    assert!(s.daemon_pid().is_some());
    s.define(&domain_xml("seen", std::path::Path::new("/k"), ""));
    assert!(r.ok(&["list", "--all", "--name"]).contains("seen\n"));
}

#[test]
fn volumes_upload_and_download_over_ssh_byte_for_byte() {
    if !sshd_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]); // starts the engine
    let r = Remote::new(&s, true);
    assert_eq!(
        r.ok(&["vol-create-as", "default", "v.raw", "8M", "--format", "raw"]),
        "Vol v.raw created\n\n"
    );
    // 8 MiB of a pattern that differs in every 4-byte word.
    let data: Vec<u8> = (0..8u32 << 20 >> 2)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let src = s.dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let src = src.to_str().unwrap();
    assert_eq!(
        r.ok(&["vol-upload", "v.raw", src, "--pool", "default"]),
        "\n"
    );
    // The engine wrote the bytes into the volume on the "remote" host.
    let file = s.data.join("vireo/images/v.raw");
    assert!(
        std::fs::read(&file).unwrap() == data,
        "upload changed the bytes"
    );
    let back = s.dir.path().join("back.bin");
    let back_s = back.to_str().unwrap();
    assert_eq!(
        r.ok(&["vol-download", "v.raw", back_s, "--pool", "default"]),
        "\n"
    );
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 8 << 20);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "download changed the bytes"
    );
    // Both transfers went through sshd: one connection each (plus create).
    assert_eq!(r.sshd.publickey_logins(), 3, "{}", r.sshd.log());
}
