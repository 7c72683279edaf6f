//! vireo-remote against Debian's OpenSSH server on a loopback port: host
//! keys, each authentication method we can exercise without root-managed
//! accounts, ProxyJump, and the errors that name what failed.
//!
//! Password and keyboard-interactive authentication are not tested here:
//! sshd checks passwords against the system's accounts (shadow or PAM), and
//! a test may not create accounts or set passwords on this machine.

mod sshd;

use std::process::Command;

use sshd::prompter::{Asked, Scripted};
use sshd::{Home, Sshd, keygen, openssh_fingerprint, run, runtime, sshd_or_skip};
use vireo_api::ConnectUri;
use vireo_remote::{Connection, NoPrompt, Prompter, RemoteError};

fn uri(sshd: &Sshd, query: &str) -> ConnectUri {
    format!("vireo+ssh://127.0.0.1:{}/session{query}", sshd.port)
        .parse()
        .unwrap()
}

/// Connects as `home` (no agent) to `sshd`'s `/session` with `query`.
fn connect(
    rt: &tokio::runtime::Runtime,
    sshd: &Sshd,
    query: &str,
    home: &Home,
    prompter: &dyn Prompter,
) -> Result<Connection, RemoteError> {
    rt.block_on(Connection::connect_uri(
        &uri(sshd, query),
        &home.settings(None),
        prompter,
    ))
}

#[test]
fn unknown_host_is_asked_about_recorded_and_then_known() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::with_key_for(&sshd);
    let settings = home.settings(None);
    let rt = runtime();

    let prompter = Scripted {
        accept_host: true,
        ..Default::default()
    };
    let conn = rt
        .block_on(Connection::connect_uri(
            &uri(&sshd, "?socket=/nowhere"),
            &settings,
            &prompter,
        ))
        .unwrap();
    // The question shows the fingerprint exactly as ssh-keygen prints it.
    let fp = openssh_fingerprint(&sshd.host_public());
    assert_eq!(
        prompter.asked(),
        vec![Asked::HostKey {
            host: format!("[127.0.0.1]:{}", sshd.port),
            key_type: "ED25519".into(),
            fingerprint: fp,
        }]
    );
    let out = rt.block_on(conn.exec("echo through-ssh")).unwrap();
    assert_eq!(out.stdout, "through-ssh\n");
    assert_eq!(out.status, Some(0));
    // The key was appended as OpenSSH writes it.
    assert_eq!(
        std::fs::read_to_string(home.ssh("known_hosts")).unwrap(),
        sshd.known_hosts_line()
    );
    // ssh itself accepts the file we wrote (StrictHostKeyChecking=yes).
    run(Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            home.ssh("known_hosts").display()
        ))
        .arg("-i")
        .arg(home.ssh("id_ed25519"))
        .args(["-p", &sshd.port.to_string(), "127.0.0.1", "true"]));
    drop(conn);

    // Second time: no question (NoPrompt would refuse).
    let conn = rt
        .block_on(Connection::connect_uri(
            &uri(&sshd, "?socket=/nowhere"),
            &settings,
            &NoPrompt,
        ))
        .unwrap();
    assert_eq!(rt.block_on(conn.exec("true")).unwrap().status, Some(0));
}

#[test]
fn hashed_known_hosts_entries_from_ssh_keygen_are_recognised() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::new();
    keygen(&home.ssh("id_ecdsa"), "ecdsa", "");
    sshd.authorize(&home.ssh("id_ecdsa.pub"));
    home.trust(&sshd);
    // ssh-keygen -H hashes the host names in place.
    run(Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(home.ssh("known_hosts")));
    let hashed = std::fs::read_to_string(home.ssh("known_hosts")).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let rt = runtime();
    let conn = connect(&rt, &sshd, "?socket=/nowhere", &home, &NoPrompt).unwrap();
    assert_eq!(rt.block_on(conn.exec("true")).unwrap().status, Some(0));
}

#[test]
fn unknown_host_declined_is_refused_and_not_recorded() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::with_key_for(&sshd);
    let err = connect(&runtime(), &sshd, "", &home, &NoPrompt).unwrap_err();
    assert!(
        matches!(err, RemoteError::HostKeyNotAccepted { .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("Host key verification failed"));
    assert!(!home.ssh("known_hosts").exists());
    assert_eq!(sshd.publickey_logins(), 0, "no credentials were sent");
}

#[test]
fn changed_host_key_is_refused_with_openssh_warning_naming_file_and_line() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::with_key_for(&sshd);
    // Another ed25519 key recorded for this host, on line 2.
    let other = home.path().join("other_host_key");
    keygen(&other, "ed25519", "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        home.ssh("known_hosts"),
        format!(
            "elsewhere.example {}\n[127.0.0.1]:{} {}\n",
            other_key.join(" "),
            sshd.port,
            other_key.join(" ")
        ),
    )
    .unwrap();
    let prompter = Scripted {
        accept_host: true,
        ..Default::default()
    };
    let err = connect(&runtime(), &sshd, "", &home, &prompter).unwrap_err();
    let text = err.to_string();
    let file = home.ssh("known_hosts");
    assert!(
        text.contains("WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Offending ED25519 key in {}:2", file.display())),
        "{text}"
    );
    assert!(
        text.contains(&openssh_fingerprint(&sshd.host_public())),
        "{text}"
    );
    assert!(prompter.asked().is_empty(), "never asked");
    assert_eq!(sshd.publickey_logins(), 0, "no credentials were sent");
}

#[test]
fn encrypted_rsa_key_asks_for_its_passphrase_and_signs_with_sha2() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::new();
    keygen(&home.ssh("id_rsa"), "rsa", "correct horse");
    sshd.authorize(&home.ssh("id_rsa.pub"));
    home.trust(&sshd);
    let prompter = Scripted {
        passphrases: vec!["wrong".into(), "correct horse".into()].into(),
        ..Default::default()
    };
    let rt = runtime();
    let conn = connect(&rt, &sshd, "?socket=/nowhere", &home, &prompter).unwrap();
    let key = home.ssh("id_rsa");
    assert_eq!(
        prompter.asked(),
        vec![Asked::Passphrase(key.clone()), Asked::Passphrase(key)]
    );
    assert_eq!(rt.block_on(conn.exec("true")).unwrap().status, Some(0));
    // OpenSSH refuses SHA-1 RSA signatures by default: this login used SHA-2.
    let log = sshd.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("Accepted publickey for ") && l.contains(" RSA SHA256:")),
        "{log}"
    );
}

#[test]
fn agent_keys_come_first_through_a_real_ssh_agent() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::new();
    // The agent holds an RSA key; no key files exist.
    let key = home.path().join("agent_rsa");
    keygen(&key, "rsa", "");
    sshd.authorize(&key.with_extension("pub"));
    home.trust(&sshd);
    let sock = home.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "no ssh-agent socket");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    run(Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &sock)
        .arg(&key));

    let prompter = Scripted::default();
    let rt = runtime();
    let result = rt.block_on(Connection::connect_uri(
        &uri(&sshd, "?socket=/nowhere"),
        &home.settings(Some(sock.clone())),
        &prompter,
    ));
    let _ = agent.kill();
    let _ = agent.wait();
    let conn = result.unwrap();
    assert_eq!(rt.block_on(conn.exec("true")).unwrap().status, Some(0));
    assert!(prompter.asked().is_empty());
    let fp = openssh_fingerprint(&key.with_extension("pub"));
    assert!(
        sshd.log()
            .contains(&format!("Accepted publickey for {}", conn.target().user))
            && sshd.log().contains(&format!("RSA {fp}")),
        "{}",
        sshd.log()
    );
}

#[test]
fn rejected_authentication_names_the_methods_the_server_offered() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::new();
    // A key the server does not know.
    keygen(&home.ssh("id_ed25519"), "ed25519", "");
    home.trust(&sshd);
    let err = connect(&runtime(), &sshd, "", &home, &NoPrompt).unwrap_err();
    let RemoteError::AuthRejected { offered, tried, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(offered, &vec!["publickey".to_owned()], "{err}");
    assert_eq!(
        tried,
        &vec![format!("key {}", home.ssh("id_ed25519").display())]
    );
    assert!(
        err.to_string()
            .contains("authentication rejected (the server offered: publickey;"),
        "{err}"
    );
}

#[test]
fn unreachable_host_names_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there now.
    let home = Home::new();
    let uri: ConnectUri = format!("vireo+ssh://127.0.0.1:{port}/system")
        .parse()
        .unwrap();
    let err = runtime()
        .block_on(Connection::connect_uri(
            &uri,
            &home.settings(None),
            &NoPrompt,
        ))
        .unwrap_err();
    assert!(matches!(err, RemoteError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach 127.0.0.1 at 127.0.0.1:{port}: ")),
        "{err}"
    );
}

#[test]
fn ssh_config_host_alias_and_proxy_jump_through_the_server_itself() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::new();
    let key = home.path().join("lab_key");
    keygen(&key, "ed25519", "");
    sshd.authorize(&key.with_extension("pub"));
    // "lab" is reached by jumping through "gateway"; both are this sshd.
    std::fs::write(
        home.ssh("config"),
        format!(
            "Host gateway\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {key}\n\n\
             Host lab\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {key}\n  \
             ProxyJump gateway\n",
            port = sshd.port,
            key = key.display()
        ),
    )
    .unwrap();
    // known_hosts names hosts as the user typed them.
    let line = sshd.known_hosts_line();
    let key_part = line.split_once(' ').unwrap().1;
    std::fs::write(
        home.ssh("known_hosts"),
        format!(
            "[gateway]:{p} {key_part}[lab]:{p} {key_part}",
            p = sshd.port
        ),
    )
    .unwrap();
    let before = sshd.connections();
    let rt = runtime();
    let uri: ConnectUri = "vireo+ssh://lab/system".parse().unwrap();
    let conn = rt
        .block_on(Connection::connect_uri(
            &uri,
            &home.settings(None),
            &NoPrompt,
        ))
        .unwrap();
    assert_eq!(conn.engine_socket(), vireo_remote::SYSTEM_SOCKET);
    assert_eq!(
        rt.block_on(conn.exec("echo jumped")).unwrap().stdout,
        "jumped\n"
    );
    // Two SSH connections: to the gateway, and through it to the lab.
    assert_eq!(sshd.connections() - before, 2, "{}", sshd.log());
    // The command ran on the second (jumped) connection.
    let log = sshd.log();
    let last_port = log
        .lines()
        .filter_map(|l| l.strip_prefix("Connection from 127.0.0.1 port "))
        .filter_map(|rest| rest.split_whitespace().next())
        .next_back()
        .unwrap()
        .to_owned();
    assert!(
        log.lines()
            .any(|l| l.starts_with("Starting session: command")
                && l.contains(&format!("port {last_port} "))),
        "{log}"
    );
}

#[test]
fn missing_and_stopped_engines_are_explained() {
    if !sshd_or_skip() {
        return;
    }
    let sshd = Sshd::start();
    let home = Home::with_key_for(&sshd);
    home.trust(&sshd);
    let rt = runtime();
    let missing = home.path().join("run/vireo/vireod.sock");
    let conn = connect(
        &rt,
        &sshd,
        &format!("?socket={}", missing.display()),
        &home,
        &NoPrompt,
    )
    .unwrap();
    let Err(err) = rt.block_on(conn.open_engine()) else {
        panic!("a channel opened");
    };
    assert!(matches!(err, RemoteError::NoEngine { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "no Vireo engine is running on 127.0.0.1: {} does not exist; start it there",
            missing.display()
        )),
        "{err}"
    );

    // A socket file nobody listens on: the engine stopped.
    let stale = home.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let conn = connect(
        &rt,
        &sshd,
        &format!("?socket={}", stale.display()),
        &home,
        &NoPrompt,
    )
    .unwrap();
    let Err(err) = rt.block_on(conn.open_engine()) else {
        panic!("a channel opened");
    };
    assert!(err.to_string().contains("refuses connections"), "{err}");

    // Without ?socket=, /session asks the remote shell for the runtime dir.
    let conn = connect(&rt, &sshd, "", &home, &NoPrompt).unwrap();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert!(
        conn.engine_socket().ends_with("/vireo/vireod.sock")
            && (conn
                .engine_socket()
                .starts_with(&format!("/run/user/{uid}/"))
                || std::env::var("XDG_RUNTIME_DIR")
                    .is_ok_and(|d| conn.engine_socket().starts_with(&d))),
        "{}",
        conn.engine_socket()
    );
}

#[test]
fn session_engine_that_cannot_be_started_says_how_to_start_it() {
    if !sshd_or_skip() {
        return;
    }
    let runtime_dir = tempfile::tempdir().unwrap();
    // A remote session whose PATH has no vireod.
    let sshd = Sshd::start_with(&format!(
        "SetEnv XDG_RUNTIME_DIR={} PATH=/usr/bin:/bin\n",
        runtime_dir.path().display()
    ));
    let home = Home::with_key_for(&sshd);
    home.trust(&sshd);
    let rt = runtime();
    let conn = connect(&rt, &sshd, "", &home, &NoPrompt).unwrap();
    let socket = runtime_dir.path().join("vireo/vireod.sock");
    assert_eq!(conn.engine_socket(), socket.to_str().unwrap());
    let Err(err) = rt.block_on(conn.open_engine_or_start()) else {
        panic!("a channel opened");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "no Vireo engine is running on 127.0.0.1: {} does not exist and vireod is not in \
             the remote PATH; install Vireo on 127.0.0.1, or start the engine there as {} with \
             `vireod`",
            socket.display(),
            conn.target().user
        )
    );
}
