//! VNC server cost, vireo-vmm beside QEMU, on the same guest and screen.
//!
//! The fbmodes guest draws a desktop-like 1920x1080 screen on
//! bochs-display in both VMMs; each key press then changes a 32x32 square.
//! A minimal RFB client of our own (over each VMM's VNC unix socket) asks
//! for ZRLE or Tight (lossless: no quality level is announced) and reports
//! per update: bytes on the wire and the server's CPU time (every thread
//! but the vCPUs, from /proc/PID/task/*/sched), for a full update on a new
//! connection and for the small change; then bytes sent over 10 s of an
//! idle screen with an incremental request always outstanding.
//!
//! Run with `make bench` (or `cargo bench -p vireo-vmm --bench vnc_vs_qemu`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_tests::guest::{Flavor, build};

const WIDTH: u16 = 1920;
const HEIGHT: u16 = 1080;
const ZRLE: i32 = 16;
const TIGHT: i32 = 7;
const RUNS: usize = 5;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Vireo,
    Qemu,
}

struct Server {
    kind: Kind,
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(kind: Kind, guest: &Path, cmdline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut cmd = match kind {
            Kind::Vireo => {
                let mut c = Command::new(vireo_vmm_binary());
                c.arg("--kernel")
                    .arg(guest)
                    .args(["--cmdline", cmdline])
                    .arg("--serial-log")
                    .arg(d.join("serial.log"))
                    .arg("--control-socket")
                    .arg(d.join("control.sock"))
                    .arg("--vnc-socket")
                    .arg(d.join("vnc.sock"));
                c
            }
            Kind::Qemu => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args([
                    "-machine",
                    "pc,accel=kvm",
                    "-cpu",
                    "host,arch-capabilities=off",
                    "-m",
                    "256",
                    "-nodefaults",
                    "-name",
                    "bench,debug-threads=on",
                    "-device",
                    "bochs-display",
                    "-kernel",
                ])
                .arg(guest)
                .args(["-append", cmdline])
                .arg("-serial")
                .arg(format!("file:{}", d.join("serial.log").display()))
                .arg("-monitor")
                .arg(format!(
                    "unix:{},server=on,wait=off",
                    d.join("monitor.sock").display()
                ))
                .arg("-vnc")
                .arg(format!("unix:{}", d.join("vnc.sock").display()));
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let s = Server { kind, child, dir };
        s.wait_serial("ready", Duration::from_secs(120));
        s
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Vireo => "vireo-vmm",
            Kind::Qemu => "qemu",
        }
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }

    fn wait_serial(&self, line: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.serial().lines().any(|l| l.trim_end() == line) {
            assert!(
                Instant::now() < deadline,
                "{}: no '{line}' on COM1:\n{}\n{}",
                self.name(),
                self.serial(),
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses and releases X in the guest.
    fn press_key(&self) {
        match self.kind {
            Kind::Vireo => {
                let mut s = UnixStream::connect(self.dir.path().join("control.sock")).unwrap();
                s.write_all(b"{\"execute\":\"send-key\",\"arguments\":{\"keys\":[45]}}\n")
                    .unwrap();
                let mut b = [0u8; 256];
                let _ = s.read(&mut b);
            }
            Kind::Qemu => {
                let mut s = UnixStream::connect(self.dir.path().join("monitor.sock")).unwrap();
                s.write_all(b"sendkey x\n").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// CPU time of every thread but the vCPUs, in milliseconds.
    fn cpu_ms(&self) -> f64 {
        let pid = self.child.id();
        let mut total = 0.0;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0.0;
        };
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let comm = comm.trim();
            if comm.starts_with("vcpu") || comm.starts_with("CPU ") {
                continue;
            }
            let sched = std::fs::read_to_string(t.path().join("sched")).unwrap_or_default();
            if let Some(v) = sched
                .lines()
                .find(|l| l.starts_with("se.sum_exec_runtime"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                total += v;
            }
        }
        total
    }

    fn connect(&self, encoding: i32) -> Client {
        Client::connect(&self.dir.path().join("vnc.sock"), encoding)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vireo_vmm_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("vireo-vmm");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release -p vireo-vmm`)",
        bin.display()
    );
    bin
}

/// A minimal RFB 3.8 client that counts bytes and skips pixel data.
struct Client {
    s: UnixStream,
    bytes: usize,
}

impl Client {
    fn connect(path: &Path, encoding: i32) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client { s, bytes: 0 };
        let mut v = [0u8; 12];
        c.read(&mut v);
        c.s.write_all(b"RFB 003.008\n").unwrap();
        let n = c.u8();
        let mut types = vec![0u8; usize::from(n)];
        c.read(&mut types);
        assert!(types.contains(&1), "security None offered: {types:?}");
        c.s.write_all(&[1]).unwrap();
        let mut result = [0u8; 4];
        c.read(&mut result);
        assert_eq!(result, [0; 4]);
        c.s.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        c.read(&mut init);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        let mut name = vec![0u8; name_len as usize];
        c.read(&mut name);
        // SetPixelFormat: 32 bpp, depth 24, little-endian xRGB.
        let mut m = vec![
            0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ];
        // SetEncodings: just the one.
        m.extend_from_slice(&[2, 0, 0, 1]);
        m.extend_from_slice(&encoding.to_be_bytes());
        c.s.write_all(&m).unwrap();
        c
    }

    fn read(&mut self, buf: &mut [u8]) {
        self.s.read_exact(buf).unwrap();
        self.bytes += buf.len();
    }

    fn u8(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.read(&mut b);
        b[0]
    }

    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.read(&mut b);
        u16::from_be_bytes(b)
    }

    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.read(&mut b);
        u32::from_be_bytes(b)
    }

    fn skip(&mut self, n: usize) {
        let mut b = vec![0u8; n];
        self.read(&mut b);
    }

    fn request(&mut self, incremental: bool) {
        let mut m = vec![3, u8::from(incremental), 0, 0, 0, 0];
        m.extend_from_slice(&WIDTH.to_be_bytes());
        m.extend_from_slice(&HEIGHT.to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    /// Reads one FramebufferUpdate; returns (bytes, pixels covered).
    fn update(&mut self) -> (usize, usize) {
        let start = self.bytes;
        loop {
            let t = self.u8();
            match t {
                0 => break,
                2 => continue, // Bell
                3 => {
                    self.skip(3);
                    let n = self.u32() as usize;
                    self.skip(n);
                }
                other => panic!("unexpected server message {other}"),
            }
        }
        self.skip(1);
        let count = self.u16();
        let mut pixels = 0;
        for _ in 0..count {
            let (_x, _y, w, h) = (self.u16(), self.u16(), self.u16(), self.u16());
            let enc = self.u32() as i32;
            let (w, h) = (usize::from(w), usize::from(h));
            pixels += w * h;
            match enc {
                0 => self.skip(w * h * 4),
                ZRLE => {
                    let n = self.u32() as usize;
                    self.skip(n);
                }
                TIGHT => self.tight(w, h),
                other => panic!("unexpected encoding {other}"),
            }
        }
        (self.bytes - start, pixels)
    }

    fn compact_len(&mut self) -> usize {
        let mut len = 0usize;
        for i in 0..3 {
            let b = self.u8();
            len |= usize::from(if i < 2 { b & 0x7f } else { b }) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        len
    }

    fn tight(&mut self, w: usize, h: usize) {
        let ctl = self.u8() >> 4;
        match ctl {
            8 => self.skip(3),
            9 => {
                let n = self.compact_len();
                self.skip(n);
            }
            10 => {
                // PNG (not announced, but be safe).
                let n = self.compact_len();
                self.skip(n);
            }
            c if c < 8 => {
                let filter = if c & 4 != 0 { self.u8() } else { 0 };
                let len = match filter {
                    1 => {
                        let n = usize::from(self.u8()) + 1;
                        self.skip(n * 3);
                        if n == 2 { w.div_ceil(8) * h } else { w * h }
                    }
                    _ => w * h * 3,
                };
                if len < 12 {
                    self.skip(len);
                } else {
                    let n = self.compact_len();
                    self.skip(n);
                }
            }
            other => panic!("bad Tight control {other}"),
        }
    }

    /// Bytes that arrive within `d`, answering each update with a new
    /// incremental request (one is always outstanding).
    fn idle_bytes(&mut self, d: Duration) -> usize {
        let start = self.bytes;
        let deadline = Instant::now() + d;
        self.request(true);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 1];
            match self.s.peek_or_read(&mut b) {
                Some(()) => {
                    self.bytes += 1;
                    // Rest of an update after its first byte.
                    self.skip(1);
                    let count = self.u16();
                    for _ in 0..count {
                        let (_x, _y, w, h) = (self.u16(), self.u16(), self.u16(), self.u16());
                        let enc = self.u32() as i32;
                        let (w, h) = (usize::from(w), usize::from(h));
                        match enc {
                            0 => self.skip(w * h * 4),
                            ZRLE => {
                                let n = self.u32() as usize;
                                self.skip(n);
                            }
                            TIGHT => self.tight(w, h),
                            other => panic!("unexpected encoding {other}"),
                        }
                    }
                    self.request(true);
                }
                None => break,
            }
        }
        self.s
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        self.bytes - start
    }
}

trait ReadOne {
    fn peek_or_read(&mut self, b: &mut [u8; 1]) -> Option<()>;
}

impl ReadOne for UnixStream {
    fn peek_or_read(&mut self, b: &mut [u8; 1]) -> Option<()> {
        match self.read(b) {
            Ok(1) => Some(()),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Figures {
    full_bytes: Vec<usize>,
    full_cpu: Vec<f64>,
    small_bytes: Vec<usize>,
    small_cpu: Vec<f64>,
    idle_bytes: usize,
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn measure(server: &Server, encoding: i32, steps: &mut u32) -> Figures {
    let mut f = Figures::default();
    for _ in 0..RUNS {
        let mut c = server.connect(encoding);
        let cpu0 = server.cpu_ms();
        c.request(false);
        let (bytes, pixels) = c.update();
        // A thread's CPU time is brought up to date when it is switched
        // out: give the server's threads time to go back to sleep.
        std::thread::sleep(Duration::from_millis(50));
        let cpu1 = server.cpu_ms();
        assert!(
            pixels >= usize::from(WIDTH) * usize::from(HEIGHT),
            "{}: a full update covered {pixels} pixels",
            server.name()
        );
        f.full_bytes.push(bytes);
        f.full_cpu.push(cpu1 - cpu0);
    }
    let mut c = server.connect(encoding);
    c.request(false);
    c.update();
    for _ in 0..RUNS {
        c.request(true);
        // Let the server settle into waiting for changes.
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = server.cpu_ms();
        *steps += 1;
        server.press_key();
        let (mut bytes, _) = c.update();
        server.wait_serial(&format!("change{steps}"), Duration::from_secs(30));
        // The first update may have caught the guest mid-drawing: count
        // what follows within 300 ms too.
        bytes += c.idle_bytes(Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(50));
        let cpu1 = server.cpu_ms();
        f.small_bytes.push(bytes);
        f.small_cpu.push(cpu1 - cpu0);
    }
    c.idle_bytes(Duration::from_secs(1));
    f.idle_bytes = c.idle_bytes(Duration::from_secs(10));
    f
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("vnc_vs_qemu: skipped, /dev/kvm is not usable here");
        return;
    }
    let guest = build("fbmodes", Flavor::Pvh);
    let cmdline = format!("mode={WIDTH}x{HEIGHT} desktop");
    println!(
        "VNC server: vireo-vmm beside QEMU, {WIDTH}x{HEIGHT} desktop-like screen, medians of {RUNS}"
    );
    println!(
        "{:<10} {:<6} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "server", "enc", "full bytes", "full ms", "small bytes", "small ms", "idle 10s B"
    );
    let mut results = Vec::new();
    for kind in [Kind::Vireo, Kind::Qemu] {
        let server = Server::start(kind, &guest, &cmdline);
        let mut steps = 0;
        for (enc, name) in [(ZRLE, "ZRLE"), (TIGHT, "Tight")] {
            let f = measure(&server, enc, &mut steps);
            let row = (
                median_u(f.full_bytes.clone()),
                median_f(f.full_cpu.clone()),
                median_u(f.small_bytes.clone()),
                median_f(f.small_cpu.clone()),
                f.idle_bytes,
            );
            println!(
                "{:<10} {:<6} {:>12} {:>10.2} {:>12} {:>10.2} {:>12}",
                server.name(),
                name,
                row.0,
                row.1,
                row.2,
                row.3,
                row.4
            );
            results.push((kind, name, row));
        }
    }
    for name in ["ZRLE", "Tight"] {
        let get = |k: Kind| {
            results
                .iter()
                .find(|r| r.0 == k && r.1 == name)
                .map(|r| r.2)
                .unwrap()
        };
        let (v, q) = (get(Kind::Vireo), get(Kind::Qemu));
        println!(
            "{name}: bytes vireo/qemu full {:.2}, small {:.2}; CPU vireo/qemu full {:.2}, small {:.2}",
            v.0 as f64 / q.0.max(1) as f64,
            v.2 as f64 / q.2.max(1) as f64,
            v.1 / q.1.max(0.001),
            v.3 / q.3.max(0.001),
        );
    }
}
