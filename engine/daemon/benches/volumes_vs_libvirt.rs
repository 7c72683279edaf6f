//! `vireoctl vol-upload`/`vol-download` of a 256 MiB file through vireod,
//! beside `virsh vol-upload`/`vol-download` through libvirt's own libvirtd
//! (a session daemon with a `dir` pool, run as user nobody in temporary
//! folders) in the same run. Prints throughput and ratios (`make bench`).
//!
//! Target: at least libvirt's throughput. vireod syncs an upload to disk
//! before it replaces the volume (so a crash never leaves half a volume);
//! libvirt does not, so the upload row is reported both ways.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: usize = 256 << 20;
const RUNS: usize = 3;
const NOBODY: &str = "65534";

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

fn run(mut cmd: Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn mbps(d: Duration) -> f64 {
    SIZE as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Pseudo-random bytes, so nothing is compressible or sparse.
fn data() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

struct Vireo {
    dir: PathBuf,
}

impl Vireo {
    fn ctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("vireoctl"));
        cmd.args(args)
            .env_remove("VIREO_DEFAULT_URI")
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("XDG_DATA_HOME", self.dir.join("data"));
        cmd
    }
}

impl Drop for Vireo {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("run/vireo/vireod.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) takes plain integers; the PID is the engine
            // this benchmark started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// A session libvirtd as user nobody, in `dir`.
struct Libvirt {
    dir: PathBuf,
    daemon: Child,
}

impl Libvirt {
    fn start(dir: &Path) -> Option<Self> {
        if !Path::new("/usr/sbin/libvirtd").exists() || which("setpriv").is_none() {
            eprintln!("skipping libvirt: libvirtd (Debian's libvirt-daemon) or setpriv is missing");
            return None;
        }
        for sub in ["run", "home"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let chown = Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}"), dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success());
        let daemon = Self::as_nobody(dir, "libvirtd", &["--timeout", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lv = Self {
            dir: dir.to_owned(),
            daemon,
        };
        let socket = dir.join("run/libvirt/libvirt-sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if Instant::now() > deadline {
                eprintln!("skipping libvirt: libvirtd did not start");
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(lv)
    }

    fn as_nobody(dir: &Path, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "env",
            "-i",
        ])
        .arg(format!("HOME={}", dir.join("home").display()))
        .arg(format!("XDG_RUNTIME_DIR={}", dir.join("run").display()))
        .arg("PATH=/usr/bin:/usr/sbin:/bin:/sbin")
        .arg(program)
        .args(args);
        cmd
    }

    fn virsh(&self, args: &[&str]) -> Command {
        let mut all = vec!["-c", "qemu:///session"];
        all.extend_from_slice(args);
        Self::as_nobody(&self.dir, "virsh", &all)
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

fn main() {
    let tmp = tempfile::Builder::new()
        .prefix("vireo-bench-vol")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    // libvirt runs as nobody: it must reach the files.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let src = root.join("src.bin");
    std::fs::write(&src, data()).unwrap();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let src_s = src.to_str().unwrap();

    // Vireo.
    let v = Vireo {
        dir: root.join("vireo"),
    };
    std::fs::create_dir_all(v.dir.join("run")).unwrap();
    run(v.ctl(&["vol-create-as", "default", "v.raw", "1M"]));
    let out = v.dir.join("out.bin");
    let out_s = out.to_str().unwrap().to_owned();
    let mut up = Vec::new();
    let mut down = Vec::new();
    for _ in 0..RUNS {
        up.push(run(v.ctl(&[
            "vol-upload",
            "v.raw",
            src_s,
            "--pool",
            "default",
        ])));
        down.push(run(v.ctl(&[
            "vol-download",
            "v.raw",
            &out_s,
            "--pool",
            "default",
        ])));
    }
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap(),
        "vireo's round trip changed the bytes"
    );
    let (v_up, v_down) = (median(up), median(down));

    println!("volume streams, {} MiB, median of {RUNS} runs:", SIZE >> 20);
    println!(
        "  vireoctl vol-upload     {:8.1} MiB/s (synced to disk before the volume is replaced)",
        mbps(v_up)
    );
    println!("  vireoctl vol-download   {:8.1} MiB/s", mbps(v_down));

    // libvirt.
    let lv_dir = root.join("libvirt");
    let Some(lv) = Libvirt::start(&lv_dir) else {
        return;
    };
    let pool = lv_dir.join("home/pool");
    run(lv.virsh(&[
        "pool-define-as",
        "p",
        "dir",
        "--target",
        pool.to_str().unwrap(),
    ]));
    run(lv.virsh(&["pool-build", "p"]));
    run(lv.virsh(&["pool-start", "p"]));
    run(lv.virsh(&["vol-create-as", "p", "v.raw", "1M"]));
    let lv_out = lv_dir.join("home/out.bin");
    let lv_out_s = lv_out.to_str().unwrap().to_owned();
    let mut up = Vec::new();
    let mut down = Vec::new();
    for _ in 0..RUNS {
        up.push(run(lv.virsh(&[
            "vol-upload",
            "v.raw",
            src_s,
            "--pool",
            "p",
        ])));
        down.push(run(lv.virsh(&[
            "vol-download",
            "v.raw",
            &lv_out_s,
            "--pool",
            "p",
        ])));
    }
    assert!(
        std::fs::read(&lv_out).unwrap() == std::fs::read(&src).unwrap(),
        "libvirt's round trip changed the bytes"
    );
    let (l_up, l_down) = (median(up), median(down));
    // The same upload plus a sync of the volume, as vireod does.
    let mut synced = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        run(lv.virsh(&["vol-upload", "v.raw", src_s, "--pool", "p"]));
        std::fs::File::open(pool.join("v.raw"))
            .unwrap()
            .sync_all()
            .unwrap();
        synced.push(start.elapsed());
    }
    let l_synced = median(synced);
    println!(
        "  virsh vol-upload        {:8.1} MiB/s (not synced)",
        mbps(l_up)
    );
    println!("  virsh vol-upload + sync {:8.1} MiB/s", mbps(l_synced));
    println!("  virsh vol-download      {:8.1} MiB/s", mbps(l_down));
    println!(
        "  ratios (vireo/libvirt, higher is better): upload {:.2} (vs synced {:.2}), download {:.2}",
        l_up.as_secs_f64() / v_up.as_secs_f64(),
        l_synced.as_secs_f64() / v_up.as_secs_f64(),
        l_down.as_secs_f64() / v_down.as_secs_f64()
    );
}
