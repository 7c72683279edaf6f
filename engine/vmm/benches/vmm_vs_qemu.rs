//! vireo-vmm beside QEMU (`-machine microvm`), same guest, same machine, one
//! run: time from exec to the guest's first debug-port write, time for
//! 100,000 port-I/O exits, and resident memory while a guest runs.
//!
//! Run with `make bench` (or `cargo bench -p vireo-vmm --bench vmm_vs_qemu`).
//! It prints a table of medians over several runs and the ratios.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_tests::guest::{Flavor, build};

const RUNS: usize = 5;
const EXITS: u64 = 100_000;
const MEMORY_MIB: u64 = 256;

#[derive(Clone, Copy, Debug)]
enum Vmm {
    Vireo,
    Qemu,
}

impl Vmm {
    fn name(self) -> &'static str {
        match self {
            Vmm::Vireo => "vireo-vmm",
            Vmm::Qemu => "qemu microvm",
        }
    }

    fn spawn(self, kernel: &Path, cmdline: &str, debug: &Path) -> Child {
        let mut cmd = match self {
            Vmm::Vireo => {
                let mut c = Command::new(vireo_vmm_binary());
                c.arg("--kernel")
                    .arg(kernel)
                    .args(["--memory", &MEMORY_MIB.to_string(), "--cmdline", cmdline])
                    .arg("--debug-log")
                    .arg(debug);
                c
            }
            Vmm::Qemu => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args([
                    "-machine",
                    "microvm,accel=kvm",
                    "-cpu",
                    "host,arch-capabilities=off",
                    "-m",
                    &MEMORY_MIB.to_string(),
                    "-nodefaults",
                    "-no-user-config",
                    "-display",
                    "none",
                    "-serial",
                    "null",
                    "-device",
                    "isa-debug-exit,iobase=0xf4,iosize=1",
                    "-device",
                    "isa-debugcon,iobase=0x402,chardev=dbg",
                ])
                .arg("-chardev")
                .arg(format!("file,id=dbg,path={}", debug.display()))
                .arg("-kernel")
                .arg(kernel)
                .args(["-append", cmdline]);
                c
            }
        };
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name()))
    }
}

fn vireo_vmm_binary() -> PathBuf {
    // target/<profile>/deps/vmm_vs_qemu-… → target/<profile>/vireo-vmm
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

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

struct Timing {
    first_byte: Duration,
    exits: Duration,
}

/// Runs the portio guest once: exec → first debug byte, 'S' → 'E'.
fn run_portio(vmm: Vmm, kernel: &Path) -> Timing {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("debug.fifo");
    mkfifo(&fifo);
    let start = Instant::now();
    let mut child = vmm.spawn(kernel, &format!("count={EXITS}"), &fifo);
    let mut reader = File::open(&fifo).unwrap();
    let (mut first, mut s, mut e) = (None, None, None);
    let mut b = [0u8; 1];
    while e.is_none() {
        match reader.read(&mut b) {
            Ok(1) => {
                let now = start.elapsed();
                first.get_or_insert(now);
                match b[0] {
                    b'S' => s = Some(now),
                    b'E' => e = Some(now),
                    _ => {}
                }
            }
            _ => panic!("{}: debug port closed before 'E'", vmm.name()),
        }
    }
    let _ = child.wait();
    Timing {
        first_byte: first.unwrap(),
        exits: e.unwrap() - s.expect("'S' before 'E'"),
    }
}

/// Resident memory of a VMM running the spin guest, after it settles.
fn rss_while_running(vmm: Vmm, kernel: &Path) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let debug = dir.path().join("debug.log");
    let mut child = vmm.spawn(kernel, "every=100000", &debug);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&debug).map(|m| m.len()).unwrap_or(0) < 2 {
        assert!(
            Instant::now() < deadline,
            "{}: the spin guest never ticked",
            vmm.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    kib * 1024
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        return;
    }
    let portio = build("portio", Flavor::Pvh);
    let spin = build("spin", Flavor::Pvh);
    let mut rows = Vec::new();
    for vmm in [Vmm::Vireo, Vmm::Qemu] {
        // One warm-up run so both start from a warm page cache.
        run_portio(vmm, &portio);
        let runs: Vec<Timing> = (0..RUNS).map(|_| run_portio(vmm, &portio)).collect();
        let first = median(runs.iter().map(|t| t.first_byte).collect());
        let exits = median(runs.iter().map(|t| t.exits).collect());
        let rss = rss_while_running(vmm, &spin);
        rows.push((vmm, first, exits, rss));
    }
    println!(
        "guest: tests/guests/portio.c and spin.c (PVH), {MEMORY_MIB} MiB, medians of {RUNS} runs"
    );
    println!(
        "{:<14} {:>22} {:>26} {:>16}",
        "VMM", "exec→first debug byte", "100,000 port-I/O exits", "RSS running"
    );
    for (vmm, first, exits, rss) in &rows {
        println!(
            "{:<14} {:>19.1} ms {:>23.1} ms {:>12.1} MiB",
            vmm.name(),
            ms(*first),
            ms(*exits),
            *rss as f64 / (1 << 20) as f64
        );
    }
    let (_, vf, ve, vr) = rows[0];
    let (_, qf, qe, qr) = rows[1];
    println!(
        "ratios (vireo / qemu): start-up {:.2}, exits {:.2}, RSS {:.2}",
        vf.as_secs_f64() / qf.as_secs_f64(),
        ve.as_secs_f64() / qe.as_secs_f64(),
        vr as f64 / qr as f64
    );
    println!(
        "per exit: vireo {:.2} µs, qemu {:.2} µs",
        ve.as_secs_f64() * 1e6 / EXITS as f64,
        qe.as_secs_f64() * 1e6 / EXITS as f64
    );
}
