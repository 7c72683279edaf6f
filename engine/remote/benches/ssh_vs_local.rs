//! The engine over SSH (vireo-remote through Debian's OpenSSH `sshd` on
//! loopback) beside the same engine over its local unix socket: connection
//! set-up, per-call API latency, and byte-stream throughput (what a VNC
//! console's frames ride on), and with /dev/kvm the time from opening a
//! demo VM's console to its first complete test card. OpenSSH's own `ssh`
//! client is timed for the set-up as the reference. Prints ratios (`make
//! bench`).

#[path = "../tests/sshd/mod.rs"]
mod sshd;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use sshd::{Remote, runtime, sshd_or_skip};
use tokio::io::AsyncReadExt;
use vireo_api::proto::{Request, Response};
use vireo_api::{AsyncClient, ConnectUri};
use vireo_remote::{Connection, NoPrompt};
use vireo_tests::demo::shows_test_card;
use vireo_tests::engine::{Session, domain_xml, guest};

const SETUPS: usize = 15;
const CALLS: usize = 1000;
const STREAM_BYTES: usize = 256 << 20;
const CONSOLES: usize = 7;

/// Opens a console on `stream` and waits for the whole test card; `Err`
/// says what the console showed instead after 30 s.
async fn first_frame<S>(stream: S) -> Result<Duration, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static,
{
    let start = Instant::now();
    let (session, _events) = vireo_console::session::Session::connect(stream, None)
        .await
        .unwrap();
    loop {
        let rgb: Vec<u8> = session
            .framebuffer()
            .lock()
            .unwrap()
            .pixels()
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        if shows_test_card(&rgb) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(30) {
            let fb = session.framebuffer().lock().unwrap();
            return Err(format!(
                "no test card on the console after 30 s ({}x{}, first pixel {:?})",
                fb.width(),
                fb.height(),
                fb.pixel(0, 0)
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A unix socket that sends STREAM_BYTES to each client, then closes.
fn byte_source(path: &std::path::Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let chunk = vec![0x5au8; 1 << 16];
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let mut left = STREAM_BYTES;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if stream.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
}

async fn drain(mut stream: impl tokio::io::AsyncRead + Unpin) -> (usize, Duration) {
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    (total, start.elapsed())
}

fn main() {
    if !sshd_or_skip() {
        return;
    }
    let session = Session::new();
    session.ok(&["list"]); // starts the engine
    let Remote { sshd, home, uri } = Remote::new(&session, true);
    let settings = home.settings(None);
    let socket = session.socket();
    let uri: ConnectUri = uri.parse().unwrap();
    let source = session.dir.path().join("source.sock");
    byte_source(&source);
    let rt = runtime();

    // 1. Connection set-up: to a handshaken API client.
    let mut local = Vec::new();
    let mut ssh = Vec::new();
    let mut openssh = Vec::new();
    for _ in 0..SETUPS {
        let start = Instant::now();
        rt.block_on(AsyncClient::connect_unix(&socket, "bench", false))
            .unwrap();
        local.push(start.elapsed());

        let start = Instant::now();
        rt.block_on(async {
            let conn = Connection::connect_uri(&uri, &settings, &NoPrompt)
                .await
                .unwrap();
            conn.api_client("bench", false).await.unwrap();
            conn.close().await;
        });
        ssh.push(start.elapsed());

        // OpenSSH's client: connect, authenticate, run `true`.
        let start = Instant::now();
        let out = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                home.ssh("known_hosts").display()
            ))
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(home.ssh("id_ed25519"))
            .args(["-p", &sshd.port.to_string(), "127.0.0.1", "true"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        openssh.push(start.elapsed());
    }
    let (local, ssh, openssh) = (median(local), median(ssh), median(openssh));
    println!("connection set-up (median of {SETUPS}):");
    println!("  local unix socket        {:8.2} ms", ms(local));
    println!("  vireo-remote over SSH    {:8.2} ms", ms(ssh));
    println!("  OpenSSH `ssh host true`  {:8.2} ms", ms(openssh));
    println!(
        "  ratio SSH/local {:.1}x, vireo-remote/OpenSSH {:.2}x",
        ssh.as_secs_f64() / local.as_secs_f64(),
        ssh.as_secs_f64() / openssh.as_secs_f64()
    );

    // 2. Per-call latency: CALLS sequential Version calls.
    let (local_call, ssh_call) = rt.block_on(async {
        let (client, _events) = AsyncClient::connect_unix(&socket, "bench", false)
            .await
            .unwrap();
        let conn = Connection::connect_uri(&uri, &settings, &NoPrompt)
            .await
            .unwrap();
        let (remote, _remote_events) = conn.api_client("bench", false).await.unwrap();
        let mut out = Vec::new();
        for c in [&client, &remote] {
            for _ in 0..50 {
                c.call(Request::Version).await.unwrap();
            }
            let start = Instant::now();
            for _ in 0..CALLS {
                let Response::Version { .. } = c.call(Request::Version).await.unwrap() else {
                    panic!("unexpected answer");
                };
            }
            out.push(start.elapsed() / CALLS as u32);
        }
        conn.close().await;
        (out[0], out[1])
    });
    println!("API call latency (Version, mean of {CALLS}):");
    println!(
        "  local unix socket        {:8.1} µs",
        local_call.as_secs_f64() * 1e6
    );
    println!(
        "  over SSH                 {:8.1} µs",
        ssh_call.as_secs_f64() * 1e6
    );
    println!(
        "  ratio SSH/local {:.1}x",
        ssh_call.as_secs_f64() / local_call.as_secs_f64()
    );

    // 3. Byte-stream throughput: STREAM_BYTES from a unix socket.
    let (local_bps, ssh_bps) = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&source).await.unwrap();
        let (n, t) = drain(stream).await;
        assert_eq!(n, STREAM_BYTES);
        let local = n as f64 / t.as_secs_f64();
        let conn = Connection::connect_uri(&uri, &settings, &NoPrompt)
            .await
            .unwrap();
        let channel = conn.open_socket(source.to_str().unwrap()).await.unwrap();
        let (n, t) = drain(channel).await;
        assert_eq!(n, STREAM_BYTES);
        conn.close().await;
        (local, n as f64 / t.as_secs_f64())
    });
    let mib = |bps: f64| bps / (1 << 20) as f64;
    println!(
        "byte stream ({} MiB, what VNC frames ride on):",
        STREAM_BYTES >> 20
    );
    println!("  local unix socket        {:8.0} MiB/s", mib(local_bps));
    println!("  SSH channel              {:8.0} MiB/s", mib(ssh_bps));
    println!(
        "  ratio local/SSH {:.1}x; a 1080p raw frame (8 MiB) takes {:.1} ms over SSH",
        local_bps / ssh_bps,
        8.0 / mib(ssh_bps) * 1e3
    );

    // 4. A console's first complete frame (RFB handshake, full update).
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("console first frame: skipped, /dev/kvm is absent");
        return;
    }
    session.define(&domain_xml("demo", &guest("demo"), ""));
    session.ok(&["start", "demo"]);
    // Consoles are opened once the guest has set its mode and drawn.
    let uuid = session.info("demo").summary.uuid;
    session.wait_serial(&uuid, "demo=ready", Duration::from_secs(60));
    let frames = rt.block_on(async {
        // Wait for the guest to draw, through a first local console.
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let stream = vireo_api::client::attach_vnc(stream, "bench", "demo")
            .await
            .unwrap();
        first_frame(stream).await?;
        let conn = Connection::connect_uri(&uri, &settings, &NoPrompt)
            .await
            .unwrap();
        let (mut local, mut ssh) = (Vec::new(), Vec::new());
        for _ in 0..CONSOLES {
            let start = Instant::now();
            let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            let stream = vireo_api::client::attach_vnc(stream, "bench", "demo")
                .await
                .unwrap();
            first_frame(stream).await?;
            local.push(start.elapsed());
            let start = Instant::now();
            let stream = conn.attach_vnc("bench", "demo").await.unwrap();
            first_frame(stream).await?;
            ssh.push(start.elapsed());
        }
        conn.close().await;
        Ok::<_, String>((median(local), median(ssh)))
    });
    let (local_frame, ssh_frame) = match frames {
        Ok(f) => f,
        Err(e) => {
            println!(
                "console first frame: FAILED: {e}\ndemo's serial log:\n{}",
                session.serial_log(&uuid)
            );
            session.ok(&["destroy", "demo"]);
            std::process::exit(1);
        }
    };
    session.ok(&["destroy", "demo"]);
    println!("console open to first complete frame (800x600 test card, median of {CONSOLES}):");
    println!("  local unix socket        {:8.2} ms", ms(local_frame));
    println!("  SSH channel              {:8.2} ms", ms(ssh_frame));
    println!(
        "  ratio SSH/local {:.1}x",
        ssh_frame.as_secs_f64() / local_frame.as_secs_f64()
    );
    let _ = std::io::stdout().flush();
}
