//! The desktop app's figures, under Xvfb against a real session engine:
//!
//! 1. Cold start: from spawning `vireo` to the manager window's first
//!    drawn frame (the app logs `first frame drawn` from the frame clock's
//!    first `after-paint`), and to its window being mapped (polled with
//!    xwininfo, as for the anchor). Anchor: TigerVNC's viewer (FLTK) from
//!    spawn to its window mapped, on the same display.
//! 2. 500 VMs listed: the app's RSS with the engine's 500 small domains
//!    listed against an empty engine, and the frame times while the list
//!    is scrolled with the mouse wheel (xdotool): build time per frame
//!    (before-paint to after-paint, logged at trace level under
//!    `vireo_app::frames`) and frames per second.
//! 3. Console, on the demo guest (800x600): a full-screen update (a new
//!    connection's first frame: RFB handshake + the whole screen decoded)
//!    by our console session and, as the anchor, by gtk-vnc's
//!    `gvnccapture` (which also spawns a process and writes a PNG) against
//!    the same VM through the same loopback TCP proxy to its VNC socket;
//!    then key-to-screen latency (key event sent until the decoded
//!    framebuffer shows the typed character) and key-to-COM1-echo
//!    latency through the engine's console stream (`AttachVnc`).
//!
//! Run with `make bench` (or build the release binaries, then
//! `cargo bench -p vireo --bench app_bench`; `VIREO_BENCH=list` for the
//! cold start and the 500 VMs only, `VIREO_BENCH_VMS=N` for another count,
//! `VIREO_BENCH_APP=/path/to/vireo` to measure another build).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vireo_api::client::attach_vnc;
use vireo_api::proto::{Request, Response};
use vireo_console::{ConsoleEvent, Input, Session as Console};
use vireo_tests::desktop::{Reaper, Xvfb};
use vireo_tests::engine::{Session, domain_xml, guest, kvm_or_skip};

const START_RUNS: usize = 5;
const VMS: usize = 500;

/// How many VMs to list: `VIREO_BENCH_VMS`, else [`VMS`].
fn vm_count() -> usize {
    std::env::var("VIREO_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(VMS)
}

/// The app binary: `VIREO_BENCH_APP` (e.g. an older build, for a before
/// and after), else this build's.
fn app_binary() -> PathBuf {
    std::env::var_os("VIREO_BENCH_APP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vireo")))
}
const CONSOLE_RUNS: usize = 10;
const KEYS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A session D-Bus for the apps (GtkApplication registers on it).
fn dbus() -> (Reaper, String) {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("dbus-daemon is required (`make test` installs dbus)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Reaper(child), line.trim().to_owned())
}

/// The app, its stderr lines arriving with their time on a channel.
struct App {
    process: Reaper,
    spawned: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl App {
    fn start(x: &Xvfb, bus: &str, session: &Session, log: &str) -> Self {
        let spawned = Instant::now();
        let mut child = Command::new(app_binary())
            .env("DISPLAY", &x.display)
            .env("GDK_BACKEND", "x11")
            .env("GSK_RENDERER", "cairo")
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_A11Y", "none")
            .env_remove("WAYLAND_DISPLAY")
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .env("XDG_RUNTIME_DIR", &session.runtime)
            .env("XDG_DATA_HOME", &session.data)
            .env("VIREO_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self {
            process: Reaper(child),
            spawned,
            lines,
        }
    }

    /// Waits for a line containing `text`; returns when it arrived.
    fn wait_line(&self, text: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(text) => return at,
                Ok(_) => {}
                Err(_) => panic!("the app did not log '{text}' within {timeout:?}"),
            }
        }
    }

    /// Waits for `count` lines containing `text`.
    fn wait_lines(&self, text: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        while seen < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) if line.contains(text) => seen += 1,
                Ok(_) => {}
                Err(_) => panic!("the app logged '{text}' {seen} times, not {count}"),
            }
        }
    }

    fn drain(&self) -> Vec<(Instant, String)> {
        self.lines.try_iter().collect()
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// Waits until a visible window whose name matches `pattern` (xdotool's
/// regex) is mapped; returns its id.
fn wait_mapped(x: &Xvfb, pattern: &str, timeout: Duration) -> (Instant, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("xdotool")
            .env("DISPLAY", &x.display)
            .args(["search", "--onlyvisible", "--name", pattern])
            .output()
            .expect("xdotool is required (`make test` installs it)");
        if let Some(id) = String::from_utf8_lossy(&out.stdout).lines().next() {
            return (Instant::now(), id.to_owned());
        }
        assert!(Instant::now() < deadline, "no window '{pattern}' mapped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn xdotool(x: &Xvfb, args: &[&str]) {
    let ok = Command::new("xdotool")
        .env("DISPLAY", &x.display)
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "xdotool {args:?} failed");
}

struct StartFigures {
    first_frame_ms: Vec<f64>,
    mapped_ms: Vec<f64>,
    rss_empty_kib: u64,
}

fn cold_start(x: &Xvfb, bus: &str, session: &Session) -> StartFigures {
    let mut f = StartFigures {
        first_frame_ms: Vec::new(),
        mapped_ms: Vec::new(),
        rss_empty_kib: 0,
    };
    for run in 0..START_RUNS {
        let app = App::start(x, bus, session, "vireo_app=info");
        let (mapped, _) = wait_mapped(x, "^Vireo$", Duration::from_secs(60));
        let first = app.wait_line("first frame drawn", Duration::from_secs(60));
        f.first_frame_ms.push(ms(first - app.spawned));
        f.mapped_ms.push(ms(mapped - app.spawned));
        if run == 0 {
            // Connected and settled: the empty window's memory.
            std::thread::sleep(Duration::from_secs(2));
            f.rss_empty_kib = app.rss_kib();
        }
    }
    f
}

/// TigerVNC's viewer from spawn to its (connection) window mapped.
fn anchor_start(x: &Xvfb) -> Vec<f64> {
    let mut v = Vec::new();
    for _ in 0..START_RUNS {
        let spawned = Instant::now();
        let child = Command::new("xtigervncviewer")
            .env("DISPLAY", &x.display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("xtigervncviewer is required (`make test` installs tigervnc-viewer)");
        let _viewer = Reaper(child);
        let (mapped, _) = wait_mapped(x, "VNC Viewer", Duration::from_secs(30));
        v.push(ms(mapped - spawned));
    }
    v
}

struct ListFigures {
    rss_kib: u64,
    listed_ms: f64,
    frame_us: Vec<f64>,
    fps: f64,
}

fn many_vms(x: &Xvfb, bus: &str, session: &Session) -> ListFigures {
    let kernel = guest("spin");
    let mut client = session.client(false);
    let vms = vm_count();
    for i in 0..vms {
        let xml = domain_xml(&format!("vm-{i:03}"), &kernel, "");
        match client.call(Request::Define { xml }).unwrap() {
            Response::Defined { .. } => {}
            other => panic!("define: {other:?}"),
        }
    }
    let app = App::start(x, bus, session, "vireo_app=info,vireo_app::frames=trace");
    let (_, window) = wait_mapped(x, "^Vireo$", Duration::from_secs(60));
    // One such line per VM, once it is in the list.
    app.wait_lines(
        "connection vireo:///session: vm ",
        vms,
        Duration::from_secs(120),
    );
    let listed_ms = ms(app.spawned.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let rss_kib = app.rss_kib();

    // Scroll down and up the whole list with the wheel.
    let _ = app.drain();
    xdotool(x, &["mousemove", "--window", &window, "400", "300"]);
    let start = Instant::now();
    xdotool(x, &["click", "--repeat", "150", "--delay", "15", "5"]);
    xdotool(x, &["click", "--repeat", "150", "--delay", "15", "4"]);
    let end = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let frame_us: Vec<f64> = app
        .drain()
        .into_iter()
        .filter(|(at, _)| *at >= start)
        .filter_map(|(_, line)| {
            let rest = line.split("frame ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect();
    let fps = frame_us.len() as f64 / (end - start).as_secs_f64();
    ListFigures {
        rss_kib,
        listed_ms,
        frame_us,
        fps,
    }
}

/// Forwards loopback TCP connections to a unix socket; returns the port.
async fn tcp_proxy(socket: PathBuf) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            // As VNC clients and servers do: no Nagle delays on small
            // messages.
            let _ = tcp.set_nodelay(true);
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    port
}

/// Waits for the first framebuffer update after the screen size arrived.
async fn first_frame(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ConsoleEvent>,
) -> Result<(), String> {
    let wait = async {
        while let Some(e) = events.recv().await {
            match e {
                ConsoleEvent::Updated => return Ok(()),
                ConsoleEvent::Closed(why) => return Err(why),
                _ => {}
            }
        }
        Err("the session ended".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| "no frame within 30 s".to_owned())?
}

/// A hash of the framebuffer's lower half (where the demo guest types).
fn lower_half(console: &Console) -> u64 {
    use std::hash::{Hash, Hasher};
    let fb = console.framebuffer().lock().unwrap();
    let stride = fb.stride();
    let start = stride * (fb.height() as usize / 2);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fb.pixels()[start.min(fb.pixels().len())..].hash(&mut h);
    h.finish()
}

struct ConsoleFigures {
    ours_full_ms: Vec<f64>,
    gvnc_full_ms: Vec<f64>,
    engine_full_ms: Vec<f64>,
    key_screen_ms: Vec<f64>,
    key_com1_ms: Vec<f64>,
}

fn console(session: &Session) -> ConsoleFigures {
    session.define(&domain_xml("demo", &guest("demo"), ""));
    session.ok(&["start", "demo"]);
    let uuid = session.info("demo").summary.uuid;
    session.wait_serial(&uuid, "demo=ready", Duration::from_secs(120));
    let vnc = session
        .engine_dir()
        .join("vms")
        .join(uuid.to_string())
        .join("vnc.sock");
    let serial = session
        .engine_dir()
        .join("vms")
        .join(uuid.to_string())
        .join("serial.log");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = rt.block_on(tcp_proxy(vnc));
    let engine_socket = session.socket();
    let mut f = ConsoleFigures {
        ours_full_ms: Vec::new(),
        gvnc_full_ms: Vec::new(),
        engine_full_ms: Vec::new(),
        key_screen_ms: Vec::new(),
        key_com1_ms: Vec::new(),
    };
    let png = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    for _ in 0..CONSOLE_RUNS {
        // Ours, over the proxy.
        let t = Instant::now();
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            tcp.set_nodelay(true).unwrap();
            let (_console, mut events) = Console::connect(tcp, None).await.unwrap();
            first_frame(&mut events).await.unwrap();
        });
        f.ours_full_ms.push(ms(t.elapsed()));
        // gtk-vnc, over the same proxy (HOST:DISPLAY, the port less 5900:
        // ephemeral ports are far above).
        let target = format!("127.0.0.1:{}", i32::from(port) - 5900);
        let t = Instant::now();
        let ok = Command::new("gvnccapture")
            .arg(&target)
            .arg(png.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            f.gvnc_full_ms.push(ms(t.elapsed()));
        }
        // Ours through the engine's AttachVnc, as the app opens it.
        let t = Instant::now();
        rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&engine_socket)
                .await
                .unwrap();
            let stream = attach_vnc(stream, "bench", "demo").await.unwrap();
            let (_console, mut events) = Console::connect(stream, None).await.unwrap();
            first_frame(&mut events).await.unwrap();
        });
        f.engine_full_ms.push(ms(t.elapsed()));
    }

    // Key latency through the engine's stream.
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&engine_socket)
            .await
            .unwrap();
        let stream = attach_vnc(stream, "bench", "demo").await.unwrap();
        let (console, mut events) = Console::connect(stream, None).await.unwrap();
        first_frame(&mut events).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        while events.try_recv().is_ok() {}
        for i in 0..KEYS {
            let before = lower_half(&console);
            let com1 = std::fs::metadata(&serial).map_or(0, |m| m.len());
            // 'a'..'t': each draws a new character.
            let keysym = 0x61 + i as u32;
            let t = Instant::now();
            console.send(Input::Key { keysym, down: true });
            console.send(Input::Key {
                keysym,
                down: false,
            });
            let (mut screen, mut echo) = (None, None);
            let deadline = t + Duration::from_secs(10);
            while (screen.is_none() || echo.is_none()) && Instant::now() < deadline {
                if echo.is_none() && std::fs::metadata(&serial).map_or(0, |m| m.len()) > com1 {
                    echo = Some(t.elapsed());
                }
                if let Ok(Some(ConsoleEvent::Updated)) =
                    tokio::time::timeout(Duration::from_millis(1), events.recv()).await
                    && screen.is_none()
                    && lower_half(&console) != before
                {
                    screen = Some(t.elapsed());
                }
            }
            if let Some(s) = screen {
                f.key_screen_ms.push(ms(s));
            }
            if let Some(e) = echo {
                f.key_com1_ms.push(ms(e));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    f
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !kvm_or_skip() {
        return;
    }
    let x = Xvfb::start();
    let (_bus, address) = dbus();

    // The engine runs first, so start-up measures the app alone.
    let session = Session::new();
    session.ok(&["list", "--all"]);

    // `VIREO_BENCH=list` measures only the VM list (cold start without its
    // anchor, then the 500 VMs).
    let only_list = std::env::var("VIREO_BENCH").is_ok_and(|v| v == "list");

    println!("== cold start to the manager window's first frame ({START_RUNS} runs)");
    let start = cold_start(&x, &address, &session);
    println!(
        "vireo: first frame {:.0} ms (median; first run {:.0} ms), window mapped {:.0} ms",
        median(start.first_frame_ms.clone()),
        start.first_frame_ms[0],
        median(start.mapped_ms.clone())
    );
    if !only_list {
        let anchor = anchor_start(&x);
        println!(
            "anchor xtigervncviewer: window mapped {:.0} ms (median); vireo/anchor mapped {:.2}",
            median(anchor.clone()),
            median(start.mapped_ms.clone()) / median(anchor)
        );
    }

    let vms = vm_count();
    println!("== {vms} VMs listed");
    let list = many_vms(&x, &address, &session);
    println!(
        "RSS: empty list {} KiB, {vms} VMs {} KiB ({:.1} KiB per VM); all listed {:.0} ms after spawn",
        start.rss_empty_kib,
        list.rss_kib,
        list.rss_kib.saturating_sub(start.rss_empty_kib) as f64 / vms as f64,
        list.listed_ms
    );
    println!(
        "scrolling: {} frames, {:.0} frames/s; frame build time median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        list.frame_us.len(),
        list.fps,
        median(list.frame_us.clone()) / 1000.0,
        percentile(list.frame_us.clone(), 0.95) / 1000.0,
        percentile(list.frame_us.clone(), 1.0) / 1000.0
    );

    // A fresh engine: the 500 domains stay out of the console figures.
    if only_list {
        return;
    }
    drop(session);
    let session = Session::new();
    println!("== console on the demo guest (800x600), {CONSOLE_RUNS} runs");
    let c = console(&session);
    let ours = median(c.ours_full_ms.clone());
    let gvnc = median(c.gvnc_full_ms.clone());
    println!(
        "full-screen update on a new connection: vireo-console {ours:.1} ms ({:.0} full frames/s), \
         through the engine's AttachVnc {:.1} ms; anchor gvnccapture {gvnc:.1} ms (process + PNG); \
         vireo/anchor {:.2}",
        1000.0 / ours,
        median(c.engine_full_ms.clone()),
        ours / gvnc
    );
    println!(
        "key to screen (decoded): median {:.1} ms, p95 {:.1} ms ({} keys); key to COM1 echo: median {:.1} ms",
        median(c.key_screen_ms.clone()),
        percentile(c.key_screen_ms.clone(), 0.95),
        c.key_screen_ms.len(),
        median(c.key_com1_ms.clone())
    );
}
