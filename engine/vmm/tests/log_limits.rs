//! What keeps the VMM's own files from filling the host, with the real
//! binary on /dev/kvm: its log (stderr, vireod's `vmm.log`) and the debug
//! port's log are punched out past a cap as the serial log is, and
//! warnings a guest can trigger at will are rate-limited.
//!
//! The caps are made small through the test-only `--log-cap`/`--log-keep`.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BOOT_TIMEOUT, GUEST_OK, kvm_present};
use vireo_tests::guest::{Flavor, build};

/// The logs' limits here: punch once 32 KiB are allocated, keep 16 KiB.
const CAP: u64 = 32 * 1024;
const KEEP: u64 = 16 * 1024;
const PAGE: u64 = 4096;

/// vireo-vmm booting `kernel` in `dir` with the small log limits, its
/// stderr in `vmm.log` (trimmed, as vireod asks), `VIREO_LOG` at `level`.
fn spawn(dir: &Path, kernel: &Path, cmdline: &str, level: &str, extra: &[&str]) -> Child {
    let mut extra = extra.to_vec();
    extra.push("--trim-stderr");
    spawn_to(
        dir,
        kernel,
        cmdline,
        level,
        &extra,
        File::create(dir.join("vmm.log")).unwrap(),
    )
}

/// [`spawn`] with `stderr` as given and not asked to trim it.
fn spawn_to(
    dir: &Path,
    kernel: &Path,
    cmdline: &str,
    level: &str,
    extra: &[&str],
    stderr: File,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vireo-vmm"))
        .arg("--kernel")
        .arg(kernel)
        .args(["--cmdline", cmdline])
        .arg("--serial-log")
        .arg(dir.join("serial.log"))
        .arg("--debug-log")
        .arg(dir.join("debug.log"))
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .args([
            "--log-cap",
            &CAP.to_string(),
            "--log-keep",
            &KEEP.to_string(),
        ])
        .args(extra)
        .env("VIREO_LOG", level)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Where the first data at or after 0 is: what was punched out.
fn first_data(path: &Path) -> u64 {
    let f = File::open(path).unwrap();
    // SAFETY: lseek on a descriptor `f` owns; plain integers.
    let at = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert!(at >= 0, "SEEK_DATA: {}", std::io::Error::last_os_error());
    at as u64
}

/// Checks `path`'s allocation against the cap; returns its size (0 while
/// the VMM has not created it yet).
fn checked_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    let allocated = meta.blocks() * 512;
    assert!(
        allocated <= CAP + PAGE,
        "{allocated} bytes allocated for the {}-byte {}",
        meta.len(),
        path.display()
    );
    meta.len()
}

/// Waits for `child` to exit, checking `path` on the way.
fn wait_checking(child: &mut Child, path: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        checked_size(path);
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "vireo-vmm still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_vmm_log_stays_under_its_cap_and_keeps_its_newest_lines() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("vmm.log");
    // Each of the 8000 writes to the unhandled port 0x80 is a debug line.
    let portio = build("portio", Flavor::Pvh);
    let mut vmm = spawn(dir.path(), &portio, "count=8000", "debug", &[]);
    let status = wait_checking(&mut vmm, &log);
    assert_eq!(status.code(), Some(GUEST_OK));

    let size = checked_size(&log);
    assert!(size > 4 * CAP, "only {size} bytes logged: nothing to punch");
    let freed = first_data(&log);
    assert!(
        freed > 0 && freed.is_multiple_of(PAGE) && size - freed >= KEEP,
        "punched up to {freed} of {size} bytes"
    );
    let bytes = std::fs::read(&log).unwrap();
    assert!(bytes[..freed as usize].iter().all(|&b| b == 0));
    let kept = String::from_utf8_lossy(&bytes[freed as usize..]);
    assert!(!kept.contains('\0'), "zeros in the kept part");
    let lines: Vec<&str> = kept.lines().collect();
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("unhandled port write 0x80"))
            .count()
            > 50,
        "the kept part is not the newest lines:\n{kept}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("guest wrote 0x0 to isa-debug-exit")),
        "last line: {:?}",
        lines.last()
    );
}

#[test]
fn the_debug_port_log_stays_under_its_cap() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("debug.log");
    let guest = build("debugcon", Flavor::Pvh);
    let bytes = 3 * CAP + 100;
    let mut vmm = spawn(dir.path(), &guest, &format!("bytes={bytes}"), "info", &[]);
    let status = wait_checking(&mut vmm, &path);
    assert_eq!(status.code(), Some(GUEST_OK));
    assert_eq!(checked_size(&path), bytes, "offsets moved");
    let freed = first_data(&path);
    assert!(
        freed > 0 && bytes - freed >= KEEP,
        "punched up to {freed} of {bytes}"
    );
    let got = std::fs::read(&path).unwrap();
    assert!(got[..freed as usize].iter().all(|&b| b == 0));
    let pattern = b"0123456789abcdef";
    assert!(
        got.iter()
            .enumerate()
            .skip(freed as usize)
            .all(|(i, &b)| b == pattern[i % 16]),
        "the kept part is not what the guest wrote"
    );
}

#[test]
fn warnings_a_guest_triggers_are_rate_limited() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
    let vblk = build("vblk", Flavor::Pvh);
    let requests = 400u64;
    let started = Instant::now();
    let mut vmm = spawn(
        dir.path(),
        &vblk,
        &format!("oob={requests}"),
        "info",
        &["--disk", &format!("path={}", disk.display())],
    );
    let status = wait_checking(&mut vmm, &dir.path().join("vmm.log"));
    let elapsed = started.elapsed();
    let serial = std::fs::read_to_string(dir.path().join("serial.log")).unwrap();
    assert_eq!(status.code(), Some(GUEST_OK), "{serial}");
    // Every request was refused (IOERR is 1)...
    assert_eq!(common::value(&serial, "oob_loop"), requests.to_string());
    assert_eq!(common::value(&serial, "oob_errors"), requests.to_string());
    // ... and at most 10 a 5-second window were logged.
    let log = std::fs::read_to_string(dir.path().join("vmm.log")).unwrap();
    let logged = log.lines().filter(|l| l.contains("virtio-blk:")).count() as u64;
    let windows = elapsed.as_secs() / 5 + 1;
    assert!(
        (1..=10 * windows).contains(&logged),
        "{logged} of {requests} refusals logged in {elapsed:?}:\n{log}"
    );
    // A window after one that dropped some says how many.
    let noted: u64 = log
        .lines()
        .filter(|l| l.contains("virtio-blk:"))
        .filter_map(|l| l.split("suppressed=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        noted <= requests - logged,
        "{noted} noted as suppressed:\n{log}"
    );
}

#[test]
fn a_shared_stderr_is_left_alone() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `2>>shared.log`, past the cap already. (A `--debug-log` left by an
    // earlier run is the unit test `what_a_file_held_before_is_never_punched_out`.)
    let old: Vec<u8> = (0..3 * CAP + 10).map(|i| b'a' + (i % 26) as u8).collect();
    let shared = dir.path().join("shared.log");
    std::fs::write(&shared, &old).unwrap();
    let stderr = std::fs::OpenOptions::new()
        .append(true)
        .open(&shared)
        .unwrap();
    // The guest logs a line per port write (debug), far more than the cap.
    let portio = build("portio", Flavor::Pvh);
    let mut vmm = spawn_to(dir.path(), &portio, "count=2000", "debug", &[], stderr);
    let status = wait_checking(&mut vmm, &dir.path().join("serial.log"));
    assert_eq!(status.code(), Some(GUEST_OK));
    let got = std::fs::read(&shared).unwrap();
    assert!(got.len() as u64 > old.len() as u64 + CAP, "nothing logged");
    assert_eq!(first_data(&shared), 0, "the shared stderr was punched");
    assert_eq!(&got[..old.len()], &old[..], "earlier output was touched");
}
