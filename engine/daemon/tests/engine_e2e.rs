//! End to end: vireoctl → vireod (started on demand) → vireo-vmm on
//! /dev/kvm, with the tiny test guests.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vireo_api::client::{Client, ClientError};
use vireo_api::proto::{
    self, ClientMessage, DomainState, ErrorCode, Event, Hello, Lifecycle, Request, Response,
    ServerMessage,
};
use vireo_tests::engine::{Session, alive, domain_xml, guest, kvm_or_skip, serial, signal};

const BOOT: Duration = Duration::from_secs(20);

/// Collects lifecycle events of one connection on a thread.
fn collect_events(
    mut client: Client<UnixStream, UnixStream>,
) -> std::sync::mpsc::Receiver<(String, Lifecycle)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(e) = client.next_event() {
            if let Event::Lifecycle { name, change, .. } = e
                && tx.send((name, change)).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn expect_event(
    rx: &std::sync::mpsc::Receiver<(String, Lifecycle)>,
    name: &str,
    want: impl Fn(&Lifecycle) -> bool,
) -> Lifecycle {
    let deadline = Instant::now() + BOOT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, change) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no expected event for '{name}'"));
        if n == name && want(&change) {
            return change;
        }
    }
}

#[test]
fn lifecycle_define_start_screenshot_suspend_resume_shutdown_undefine() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    // Arrange: the engine starts on demand; an event listener attaches.
    assert!(!s.socket().exists());
    assert!(s.ok(&["list", "--all"]).starts_with(" Id   Name   State\n"));
    let events = collect_events(s.client(true));
    let fb = guest("fb");
    let power = guest("power");

    // define → start → the guest draws its picture.
    s.define(&domain_xml("fb", &fb, "hold"));
    expect_event(&events, "fb", |c| *c == Lifecycle::Defined);
    assert_eq!(s.ok(&["start", "fb"]), "Domain 'fb' started\n\n");
    expect_event(&events, "fb", |c| *c == Lifecycle::Started);
    let uuid = s.info("fb").summary.uuid;
    s.wait_serial(&uuid, "done", BOOT);
    assert_eq!(
        s.ok(&["list"]),
        " Id   Name   State\n----------------------\n 1    fb     running\n\n"
    );

    // screenshot: the PNG crosses the API and shows the fb guest's picture.
    let png = s.dir.path().join("fb.png");
    let out = s.ok(&["screenshot", "fb", png.to_str().unwrap()]);
    assert!(out.starts_with("Screenshot saved to "), "{out}");
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    assert_eq!(img.get_pixel(10, 10).0, [0x20, 0x20, 0x20], "background");
    assert_eq!(img.get_pixel(150, 100).0, [0xff, 0, 0], "red square");
    assert_eq!(img.get_pixel(99, 100).0, [0x20, 0x20, 0x20], "left of it");
    assert_eq!(img.get_pixel(5, 305).0, [0, 0xff, 0], "green band");

    // suspend / resume.
    assert_eq!(s.ok(&["suspend", "fb"]), "Domain 'fb' suspended\n\n");
    assert_eq!(s.state("fb"), "paused (user)");
    expect_event(&events, "fb", |c| *c == Lifecycle::Paused);
    assert_eq!(s.ok(&["resume", "fb"]), "Domain 'fb' resumed\n\n");
    assert_eq!(s.state("fb"), "running (unpaused)");
    expect_event(&events, "fb", |c| *c == Lifecycle::Resumed);

    // Statistics come from the VMM.
    let stats = s.ok(&["domstats", "fb"]);
    assert!(stats.contains("  state.state=1\n"), "{stats}");
    assert!(stats.contains("  vcpu.0.time="), "{stats}");
    assert!(
        s.ok(&["dommemstat", "fb"])
            .starts_with("actual 32768\nrss ")
    );

    // shutdown: the power guest sees the ACPI button and powers off.
    s.define(&domain_xml("power", &power, "timeout=60"));
    s.ok(&["start", "power"]);
    let puuid = s.info("power").summary.uuid;
    s.wait_serial(&puuid, "power=armed", BOOT);
    assert_eq!(
        s.ok(&["shutdown", "power"]),
        "Domain 'power' is being shutdown\n\n"
    );
    assert_eq!(
        s.wait_state("power", "shut off", BOOT),
        "shut off (shutdown)"
    );
    assert!(s.serial_log(&puuid).contains("power=button"));
    expect_event(&events, "power", |c| {
        *c == Lifecycle::Stopped {
            reason: "shutdown".into(),
        }
    });

    // destroy and undefine.
    s.ok(&["destroy", "fb"]);
    assert_eq!(s.state("fb"), "shut off (destroyed)");
    assert_eq!(
        s.ok(&["undefine", "fb"]),
        "Domain 'fb' has been undefined\n\n"
    );
    s.ok(&["undefine", "power"]);
    expect_event(&events, "fb", |c| *c == Lifecycle::Undefined);
    assert_eq!(
        s.ok(&["list", "--all"]),
        " Id   Name   State\n--------------------\n\n"
    );
    assert!(
        std::fs::read_dir(s.data.join("vireo/domains"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn daemon_restart_keeps_two_running_vms_running_and_controllable() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let fb = guest("fb");
    for name in ["a", "b"] {
        s.define(&domain_xml(name, &fb, "hold mode=320x240"));
        s.ok(&["start", name]);
    }
    let pids: Vec<u32> = ["a", "b"].iter().map(|n| s.info(n).pid.unwrap()).collect();
    let daemon = s.daemon_pid().unwrap();

    // The engine dies hard; the VMs do not notice.
    s.kill_daemon();
    assert!(!alive(daemon));
    assert!(pids.iter().all(|&p| alive(p)));

    // The next client starts a new engine, which re-attaches.
    assert_eq!(
        s.ok(&["list"]),
        " Id   Name   State\n----------------------\n 1    a      running\n 2    b      running\n\n"
    );
    assert_ne!(s.daemon_pid(), Some(daemon));
    assert_eq!(s.info("a").pid, Some(pids[0]));
    s.ok(&["suspend", "a"]);
    assert_eq!(s.state("a"), "paused (user)");
    let uuid = s.info("b").summary.uuid;
    s.wait_serial(&uuid, "done", BOOT);
    let png = s.dir.path().join("b.png");
    s.ok(&["screenshot", "b", png.to_str().unwrap()]);
    assert_eq!(
        image::open(&png).unwrap().to_rgb8().get_pixel(150, 100).0,
        [0xff, 0, 0]
    );

    // A graceful restart (SIGTERM) keeps the paused state too.
    // (Its PID is read first: the engine removes the PID file as it ends.)
    let daemon = s.daemon_pid().unwrap();
    signal(daemon, libc::SIGTERM);
    vireo_tests::engine::wait_gone(daemon);
    assert_eq!(s.state("a"), "paused (user)");
    s.ok(&["resume", "a"]);
    s.ok(&["destroy", "a"]);
    vireo_tests::engine::wait_gone(pids[0]);
    assert!(!alive(pids[0]));
    assert_eq!(s.state("a"), "shut off (destroyed)");
    // A re-attached VMM that dies is still reported as crashed.
    signal(pids[1], libc::SIGKILL);
    let state = s.wait_state("b", "crashed", BOOT);
    assert!(state.contains("killed?"), "{state}");
}

#[test]
fn vmm_killed_with_sigkill_is_reported_crashed() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("victim", &guest("fb"), "hold"));
    s.ok(&["start", "victim"]);
    let events = collect_events(s.client(true));
    let pid = s.info("victim").pid.unwrap();

    signal(pid, libc::SIGKILL);

    let change = expect_event(&events, "victim", |c| {
        matches!(c, Lifecycle::Crashed { .. })
    });
    assert_eq!(
        change,
        Lifecycle::Crashed {
            reason: "vireo-vmm was killed by signal 9".into()
        }
    );
    assert_eq!(
        s.state("victim"),
        "crashed (vireo-vmm was killed by signal 9)"
    );
    assert!(
        s.ok(&["list", "--all"])
            .contains(" -    victim   crashed\n")
    );
    // A crashed domain starts again.
    s.ok(&["start", "victim"]);
    s.ok(&["destroy", "victim"]);
}

#[test]
fn fifty_concurrent_clients_list_start_and_stop_within_20_seconds() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let fb = guest("fb");
    const DOMAINS: usize = 5;
    for i in 0..DOMAINS {
        s.define(&domain_xml(&format!("vm{i}"), &fb, "hold mode=320x240"));
    }
    let socket = s.socket();
    let started = Instant::now();
    let ops = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let socket = socket.clone();
            let ops = ops.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect_unix(&socket, "stress", false).unwrap();
                let domain = format!("vm{}", t % DOMAINS);
                for round in 0..6 {
                    let Response::Domains { domains } =
                        c.call(Request::ListDomains { all: true }).unwrap()
                    else {
                        panic!("not a list");
                    };
                    assert_eq!(domains.len(), DOMAINS);
                    let request = if (t + round) % 2 == 0 {
                        Request::Start {
                            domain: domain.clone(),
                        }
                    } else {
                        Request::Destroy {
                            domain: domain.clone(),
                        }
                    };
                    match c.call(request) {
                        Ok(_) => {}
                        // Another client got there first.
                        Err(ClientError::Api(e)) if e.code == ErrorCode::InvalidState => {}
                        Err(e) => panic!("client {t}: {e}"),
                    }
                    ops.fetch_add(2, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Meanwhile a client sends garbage: it alone is dropped.
    let mut bad = UnixStream::connect(&socket).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer: ServerMessage = proto::read_message(&mut bad).unwrap();
    assert!(
        matches!(&answer, ServerMessage::Rejected { reason } if reason.contains("not a Vireo client")),
        "{answer:?}"
    );
    for t in threads {
        t.join().expect("a client failed");
    }
    let took = started.elapsed();
    assert_eq!(ops.load(Ordering::Relaxed), 50 * 6 * 2);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    eprintln!("50 clients × 12 calls in {took:?}");

    // The engine is consistent: every running domain has a live VMM.
    let mut c = s.client(false);
    let Response::Domains { domains } = c.call(Request::ListDomains { all: true }).unwrap() else {
        panic!()
    };
    for d in domains {
        if d.state.is_active() {
            assert!(alive(s.info(&d.name).pid.unwrap()));
            c.call(Request::Destroy { domain: d.name }).unwrap();
        } else {
            assert_eq!(d.state, DomainState::Shutoff, "{d:?}");
        }
    }
    // No VMM is left behind.
    assert_eq!(s.processes(), Vec::<u32>::new());
    assert!(alive(s.daemon_pid().unwrap()));
}

#[test]
fn malformed_xml_is_rejected_with_line_column_and_element_and_old_definition_stays() {
    let _serial = serial();
    let s = Session::new();
    let good = domain_xml("keep", std::path::Path::new("/boot/none"), "");
    s.define(&good);
    let bad = good.replace("</kernel>", "</kernal>");

    let out = s.ctl_with_input(&["define", "-"], Some(&bad));

    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: malformed domain XML at line 7, column "),
        "{err}"
    );
    assert!(err.contains("in <domain/os/kernel>"), "{err}");
    assert_eq!(
        s.ok(&["dumpxml", "keep"])
            .replace("  <uuid>", "")
            .lines()
            .count(),
        good.lines().count() + 1
    );
    assert!(s.ok(&["dumpxml", "keep"]).contains("</kernel>"));
    // Invalid values are refused too, naming the element.
    let out = s.ctl_with_input(&["define", "-"], Some(&good.replace(">32<", ">0<")));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("<memory>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn names_and_uuids_are_unique_and_uuid_is_generated() {
    let _serial = serial();
    let s = Session::new();
    let xml = domain_xml("one", std::path::Path::new("/k"), "");
    s.define(&xml);
    let uuid = s.info("one").summary.uuid;
    let dump = s.ok(&["dumpxml", "one"]);
    assert!(
        dump.contains(&format!("  <name>one</name>\n  <uuid>{uuid}</uuid>\n")),
        "{dump}"
    );
    // Redefining by name keeps the UUID.
    s.define(&xml.replace("<vcpu>1", "<vcpu>2"));
    assert_eq!(s.info("one").summary.uuid, uuid);
    assert_eq!(s.info("one").vcpus, 2);
    // Another name with the same UUID is refused.
    let clash = dump.replace("<name>one</name>", "<name>two</name>");
    let out = s.ctl_with_input(&["define", "-"], Some(&clash));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists with uuid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The UUID works as a name.
    assert!(
        s.ok(&["dominfo", &uuid.to_string()])
            .contains("Name:           one\n")
    );
}

#[test]
fn incompatible_protocol_version_is_refused_with_a_clear_message() {
    let _serial = serial();
    let s = Session::new();
    s.ok(&["list"]);
    let mut raw = UnixStream::connect(s.socket()).unwrap();
    let hello = ClientMessage::Hello(Hello {
        protocol: 99,
        client: "future".into(),
        events: false,
    });
    proto::write_message(&mut raw, &hello).unwrap();
    let answer: ServerMessage = proto::read_message(&mut raw).unwrap();
    assert_eq!(
        answer,
        ServerMessage::Rejected {
            reason: proto::version_mismatch(proto::PROTOCOL_VERSION, 99)
        }
    );
    // The engine still serves others.
    s.ok(&["list"]);
}

#[test]
fn autostart_domains_start_when_the_engine_starts_after_a_reboot() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let mut s = Session::new();
    s.define(&domain_xml("auto", &guest("fb"), "hold"));
    assert_eq!(
        s.ok(&["autostart", "auto"]),
        "Domain 'auto' marked as autostarted\n\n"
    );
    assert!(
        s.ok(&["dominfo", "auto"])
            .contains("Autostart:      enable\n")
    );

    s.reboot();

    let deadline = Instant::now() + BOOT;
    while !s.ok(&["list"]).contains(" auto   running") {
        assert!(Instant::now() < deadline, "not autostarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.ok(&["autostart", "--disable", "auto"]);
    s.ok(&["destroy", "auto"]);
}

#[test]
fn console_carries_serial_output_over_the_api_connection() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("talk", &guest("spin"), "every=1000000"));
    s.ok(&["list"]);
    let mut c = s.client(false);
    c.call(Request::Start {
        domain: "talk".into(),
    })
    .unwrap();
    c.call(Request::OpenConsole {
        domain: "talk".into(),
        exclusive: true,
        force: false,
        notify: false,
    })
    .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("tick=1") {
        match c.next_message().unwrap() {
            ServerMessage::ConsoleOutput { data } => seen.extend(data),
            other => panic!("{other:?}"),
        }
    }
    s.ok(&["destroy", "talk"]);
    loop {
        match c.next_message().unwrap() {
            ServerMessage::ConsoleClosed => break,
            ServerMessage::ConsoleOutput { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn vnc_stream_is_handed_out_through_the_api_connection() {
    if !kvm_or_skip() {
        return;
    }
    if !vireod::vmm::vmm_serves_vnc(&vireo_tests::engine::bin("vireo-vmm")) {
        eprintln!("skipping: this vireo-vmm has no --vnc-socket yet");
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("screen", &guest("fb"), "hold"));
    s.ok(&["start", "screen"]);
    let display = s.ok(&["vncdisplay", "screen"]);
    assert!(
        display.starts_with("unix:") && display.contains("vnc.sock"),
        "{display}"
    );

    let mut c = s.client(false);
    c.call(Request::AttachVnc {
        domain: "screen".into(),
    })
    .unwrap();

    // From here on the connection is the RFB stream itself.
    let (mut r, mut w, pending) = c.into_parts();
    assert!(pending.is_empty());
    let mut version = [0u8; 12];
    std::io::Read::read_exact(&mut r, &mut version).unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    w.write_all(b"RFB 003.008\n").unwrap();
    let mut count = [0u8; 1];
    std::io::Read::read_exact(&mut r, &mut count).unwrap();
    assert!(count[0] >= 1, "the server offers no security type");
    s.ok(&["destroy", "screen"]);
}

#[test]
fn async_client_receives_lifecycle_and_periodic_statistics_events() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("busy", &guest("spin"), "every=100000"));
    s.ok(&["list"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, mut incoming) =
            vireo_api::AsyncClient::connect_unix(&s.socket(), "e2e-async", true)
                .await
                .unwrap();
        client
            .call(Request::Start {
                domain: "busy".into(),
            })
            .await
            .unwrap();
        let mut started = false;
        let mut samples = Vec::new();
        let deadline = tokio::time::Instant::now() + BOOT;
        while samples.len() < 2 {
            let msg = tokio::time::timeout_at(deadline, incoming.recv())
                .await
                .expect("no statistics in time")
                .unwrap();
            match msg {
                vireo_api::Incoming::Event(Event::Lifecycle { name, change, .. }) => {
                    assert_eq!(name, "busy");
                    started |= change == Lifecycle::Started;
                }
                vireo_api::Incoming::Event(Event::Stats { domains }) => {
                    assert_eq!(domains.len(), 1);
                    assert_eq!(domains[0].name, "busy");
                    assert_eq!(domains[0].vcpus.len(), 1);
                    assert_eq!(domains[0].guest_memory_bytes, 32 << 20);
                    samples.push(domains[0].cpu_time_ns());
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(started, "no started event before the statistics");
        assert!(
            samples[1] > samples[0],
            "CPU time does not grow: {samples:?}"
        );
        client
            .call(Request::Destroy {
                domain: "busy".into(),
            })
            .await
            .unwrap();
    });
}

#[test]
fn edit_saves_a_valid_change_and_keeps_the_definition_on_an_invalid_one() {
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("ed", std::path::Path::new("/k"), ""));
    let editor = |script: &str| {
        let path = s.dir.path().join("editor.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        path
    };
    let run = |script: &str| {
        let path = editor(script);
        Command::new(vireo_tests::engine::bin("vireoctl"))
            .args(["edit", "ed"])
            .env_remove("VIREO_DEFAULT_URI")
            .env_remove("VISUAL")
            .env("EDITOR", format!("sh {}", path.display()))
            .env("XDG_RUNTIME_DIR", &s.runtime)
            .env("XDG_DATA_HOME", &s.data)
            .output()
            .unwrap()
    };

    let out = run("sed -i 's|<vcpu>1</vcpu>|<vcpu>3</vcpu>|' \"$1\"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain 'ed' XML configuration edited.\n\n"
    );
    assert_eq!(s.info("ed").vcpus, 3);

    let out = run("sed -i 's|</kernel>|</kernal>|' \"$1\"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("malformed domain XML at line 8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.ok(&["dumpxml", "ed"]).contains("<vcpu>3</vcpu>"));

    let out = run("true");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain 'ed' XML configuration not changed.\n\n"
    );
}

#[test]
fn vireoctl_console_shows_serial_output_detaches_on_ctrl_bracket_and_ends_with_the_vm() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("chat", &guest("spin"), "every=200000"));
    s.ok(&["start", "chat"]);
    let mut child = Command::new(vireo_tests::engine::bin("vireoctl"))
        .args(["console", "chat"])
        .env_remove("VIREO_DEFAULT_URI")
        .env("XDG_RUNTIME_DIR", &s.runtime)
        .env("XDG_DATA_HOME", &s.data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("tick=") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(
            n > 0,
            "console ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&seen)
            .starts_with("Connected to domain 'chat'\nEscape character is ^] (Ctrl + ])\n")
    );

    child.stdin.as_mut().unwrap().write_all(&[0x1d]).unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "Ctrl+] did not detach");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Detaching leaves the domain running.
    assert_eq!(s.state("chat"), "running (booted)");

    // A console whose VM stops ends by itself.
    let mut child = Command::new(vireo_tests::engine::bin("vireoctl"))
        .args(["console", "chat"])
        .env_remove("VIREO_DEFAULT_URI")
        .env("XDG_RUNTIME_DIR", &s.runtime)
        .env("XDG_DATA_HOME", &s.data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    s.ok(&["destroy", "chat"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "the console outlived its VM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_guest_that_exits_at_once_is_started_then_stopped_with_its_exit_code() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("brief", &guest("hello"), ""));

    for _ in 0..3 {
        assert_eq!(s.ok(&["start", "brief"]), "Domain 'brief' started\n\n");
        let state = s.wait_state("brief", "shut off", BOOT);
        assert!(
            state.starts_with("shut off (guest exited with code ")
                || state == "shut off (shutdown)",
            "{state}"
        );
    }
    let out = s.ctl(&["start", "missing"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: Domain not found: no domain with matching name or uuid 'missing'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn undefining_a_running_domain_makes_it_transient_until_it_stops() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("fleeting", &guest("fb"), "hold"));
    s.ok(&["start", "fleeting"]);

    assert_eq!(
        s.ok(&["undefine", "fleeting"]),
        "Domain 'fleeting' has been undefined\n\n"
    );

    assert!(s.ok(&["list"]).contains(" 1    fleeting   running\n"));
    assert!(
        s.ok(&["dominfo", "fleeting"])
            .contains("Persistent:     no\n")
    );
    assert!(!s.ctl(&["autostart", "fleeting"]).status.success());
    // It survives an engine restart...
    s.kill_daemon();
    assert!(
        s.ok(&["dominfo", "fleeting"])
            .contains("Persistent:     no\n")
    );
    // ...and is gone once it stops.
    s.ok(&["destroy", "fleeting"]);
    assert_eq!(
        s.ok(&["list", "--all"]),
        " Id   Name   State\n--------------------\n\n"
    );
}

#[test]
fn console_input_reaches_the_guest_over_the_api_connection() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.boot("echo", "echo", "", "echo=ready", BOOT);
    let mut c = s.client(false);
    c.call(Request::OpenConsole {
        domain: "echo".into(),
        exclusive: true,
        force: false,
        notify: false,
    })
    .unwrap();

    c.console_input(b"vireo").unwrap();

    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("VIREO") {
        match c.next_message().unwrap() {
            ServerMessage::ConsoleOutput { data } => seen.extend(data),
            other => panic!("{other:?}"),
        }
    }
    // 'q' ends the guest; the console closes and the domain is off.
    c.console_input(b"q").unwrap();
    loop {
        match c.next_message().unwrap() {
            ServerMessage::ConsoleClosed => break,
            ServerMessage::ConsoleOutput { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        s.wait_state("echo", "shut off", BOOT),
        "shut off (guest exited with code 0)"
    );
}

#[test]
fn send_key_presses_ctrl_alt_del_together_then_releases_in_reverse() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let uuid = s.boot("keys", "kbd", "timeout=30", "kbd=ready", BOOT);

    s.ok(&[
        "send-key",
        "keys",
        "KEY_LEFTCTRL",
        "KEY_LEFTALT",
        "KEY_DELETE",
    ]);
    s.ok(&["send-key", "keys", "1"]);

    s.wait_serial(&uuid, "done", BOOT);
    let codes: Vec<String> = s
        .serial_log(&uuid)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("scancode=").map(str::to_owned))
        .collect();
    assert_eq!(
        codes,
        [
            "0x1d", "0x38", "0xe0", "0x53", "0xe0", "0xd3", "0xb8", "0x9d", "0x01", "0x81"
        ]
    );
    let out = s.ctl(&["send-key", "keys", "KEY_NOPE"]);
    assert!(!out.status.success());
}
