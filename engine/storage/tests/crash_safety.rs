//! Crash safety: a process killed with SIGKILL in the middle of writes
//! (allocating new clusters, overwriting old ones, flushing now and then)
//! leaves a qcow2 image that `qemu-img check` finds free of corruption
//! (leaked clusters are acceptable, as in QEMU).
//!
//! The writer is this test binary itself, re-run with `VIREO_CRASH_WRITER`
//! set so that only `crash_writer_child` does anything.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::qemu_img_output;
use vireo_storage::{Image, OpenOptions};

const ENV: &str = "VIREO_CRASH_WRITER";

/// Not a test on its own: the child that writes until it is killed.
#[test]
fn crash_writer_child() {
    let Ok(path) = std::env::var(ENV) else {
        return;
    };
    let image = Image::open(Path::new(&path), &OpenOptions::new()).unwrap();
    let size = image.size();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let started = Instant::now();
    println!("writing");
    // Bounded: the parent kills us long before this ends.
    for i in 0u64..10_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 512 * (1 + (x >> 50) % 128);
        let offset = (x % (size - len)) & !511;
        let buf = vec![(i & 0xff) as u8; len as usize];
        image.write_at(&buf, offset).unwrap();
        if i % 64 == 0 {
            image.flush().unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
}

#[test]
fn sigkill_during_qcow2_writes_leaves_no_corruption() {
    let dir = tempfile::tempdir().unwrap();
    for (round, delay_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let path = dir.path().join(format!("crash{round}.qcow2"));
        let out = qemu_img_output(&["create", "-q", "-f", "qcow2", path.to_str().unwrap(), "64M"]);
        assert!(out.status.success());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it writes, then let it run a while and kill it.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let started = lines.any(|l| l.map(|l| l.contains("writing")).unwrap_or(false));
        assert!(started, "the writer did not start");
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        let status = child.wait().unwrap();

        let check = qemu_img_output(&["check", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&check.stdout).into_owned()
            + &String::from_utf8_lossy(&check.stderr);

        assert!(
            !status.success(),
            "the writer finished before it was killed"
        );
        // 0: clean, 3: leaked clusters only; 2 would be corruption.
        assert!(
            matches!(check.status.code(), Some(0 | 3)),
            "round {round}: qemu-img check after SIGKILL: {text}"
        );
        assert!(!text.contains("ERROR"), "round {round}: {text}");
        // And it still opens and reads through our code.
        let image = Image::open(&path, &OpenOptions::new().read_only(true)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        image.read_at(&mut buf, 0).unwrap();
    }
}
