//! `vireoctl list --all` with 1,000 defined domains, beside `virsh list
//! --all` against libvirt's test driver loaded with the same 1,000 domains,
//! and vireod's resident memory. Prints ratios (`make bench`).
//!
//! Targets (issue 5): at least 5× faster than virsh, vireod under 50 MiB.
//! libvirt's test driver has no daemon: each virsh run loads the node file
//! (the 1,000 domains) in-process, which is what a virsh user pays there.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use vireo_api::client::Client;
use vireo_api::proto::{Request, Response};

const DOMAINS: usize = 1000;
const RUNS: usize = 30;

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (make bench does)",
        path.display()
    );
    path
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `cmd` RUNS times (after a warm-up) and returns the median wall time
/// and the output of the last run.
fn time(mut make: impl FnMut() -> Command) -> (Duration, String) {
    let mut times = Vec::new();
    let mut last = String::new();
    for i in 0..=RUNS {
        let start = Instant::now();
        let out = make().output().unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i > 0 {
            times.push(took);
        }
        last = String::from_utf8(out.stdout).unwrap();
    }
    (median(times), last)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
    if Command::new("virsh").arg("--version").output().is_err() {
        eprintln!("skipping: virsh is not installed (build-aux/install-deps test installs it)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("vireo-bench")
        .tempdir()
        .unwrap();
    let runtime = dir.path().join("run");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&runtime).unwrap();
    let vireoctl = bin("vireoctl");
    let ctl = || {
        let mut c = Command::new(&vireoctl);
        c.env_remove("VIREO_DEFAULT_URI")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        c
    };

    // The engine starts on demand; 1,000 domains are defined through the API.
    let out = ctl().arg("list").output().unwrap();
    assert!(out.status.success());
    let socket = runtime.join("vireo/vireod.sock");
    let pid: u32 = std::fs::read_to_string(runtime.join("vireo/vireod.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rss_empty = rss_kib(pid);
    let mut client = Client::connect_unix(&socket, "bench", false).unwrap();
    let mut node = String::from("<node>\n");
    let define_start = Instant::now();
    for i in 0..DOMAINS {
        let name = format!("bench-{i:04}");
        let xml = format!(
            "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type><kernel>/boot/none</kernel>\
             </os></domain>"
        );
        let r = client.call(Request::Define { xml }).unwrap();
        assert!(matches!(r, Response::Defined { .. }));
        node.push_str(&format!(
            "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>\n"
        ));
    }
    let define_took = define_start.elapsed();
    node.push_str("</node>\n");
    let node_path = dir.path().join("node.xml");
    std::fs::write(&node_path, node).unwrap();
    let test_uri = format!("test://{}", node_path.display());

    let (ours, our_out) = time(|| {
        let mut c = ctl();
        c.args(["list", "--all"]);
        c
    });
    let (theirs, their_out) = time(|| {
        let mut c = Command::new("virsh");
        c.args(["-c", &test_uri, "list", "--all"]);
        c
    });
    // Same table size: header, rule, 1,000 rows, blank line.
    assert_eq!(our_out.lines().count(), DOMAINS + 3);
    assert_eq!(their_out.lines().count(), DOMAINS + 3);
    let rss = rss_kib(pid);

    // The API call alone, without process start-up.
    let mut api = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        client.call(Request::ListDomains { all: true }).unwrap();
        api.push(start.elapsed());
    }
    let api = median(api);

    println!("list --all with {DOMAINS} domains (median of {RUNS} runs):");
    println!(
        "  vireoctl list --all        {:>8.2} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "  virsh (test driver)        {:>8.2} ms",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "  ratio                      {:>8.1}x faster (target >= 5x)",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "  ListDomains API call alone {:>8.2} ms",
        api.as_secs_f64() * 1e3
    );
    println!(
        "vireod RSS: {:.1} MiB with {DOMAINS} domains ({:.1} MiB empty; target < 50 MiB)",
        rss as f64 / 1024.0,
        rss_empty as f64 / 1024.0
    );
    println!(
        "defining {DOMAINS} domains (atomic writes with fsync): {:.2} s",
        define_took.as_secs_f64()
    );
    drop(client);
    // SAFETY: kill(2) takes plain integers; this is the engine we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
}
