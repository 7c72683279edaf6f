//! virtio-blk end to end: the `vblk` test guest, with its own virtio-pci
//! driver, writes and reads sectors of a disk image through the real
//! `vireo-vmm`; the image is then checked on the host with QEMU's tools.
//! The same guest under QEMU's `virtio-blk-pci` is the reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vireo_tests::guest::{Flavor, build};
use vireo_tests::qemu::{QemuBuilder, VBLK_WRITES_8M, qemu_img, qemu_img_check, qemu_io_reads};
use vireo_tests::report::Report;

/// The emulating KVM here runs ~1.3 M guest instructions/s: be generous.
const TIMEOUT: Duration = Duration::from_secs(120);

fn kvm_present() -> bool {
    if Path::new("/dev/kvm").exists() {
        true
    } else {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        false
    }
}

/// Boots `kernel` with `args` until it exits; returns (exit code, COM1).
fn run_vmm(kernel: &Path, args: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let stderr = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vireo-vmm"))
        .arg("--kernel")
        .arg(kernel)
        .arg("--serial-log")
        .arg(&serial)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vireo-vmm still running after {TIMEOUT:?}\nserial:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&serial).unwrap_or_default(),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&serial).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    eprintln!("serial:\n{out}\nstderr:\n{err}");
    (status.code(), out)
}

fn vblk_guest() -> PathBuf {
    build("vblk", Flavor::Pvh)
}

/// The facts both VMMs must agree on.
const SHARED_FACTS: &[&str] = &[
    "virtio_blk",
    "device_id",
    "revision",
    "subsystem",
    "irq_pin",
    "msix_vectors",
    "features_ok",
    "capacity",
    "num_queues",
    "write_status",
    "write_used",
    "write2_status",
    "flush_status",
    "read_status",
    "read_used",
    "read_match",
    "id",
    "id_status",
    "oob_status",
    "unsupp_status",
];

#[test]
fn vblk_guest_writes_a_qcow2_disk_that_qemu_reads_back() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "8M"]);
    let kernel = vblk_guest();

    let (code, serial) = run_vmm(
        &kernel,
        &[
            "--disk".into(),
            format!("path={},format=qcow2", disk.display()),
        ],
    );

    let report = Report::parse(&serial);
    assert_eq!(code, Some(1), "isa-debug-exit 0 expected\n{serial}");
    assert!(report.has("done"));
    assert_eq!(report.get("virtio_blk"), Some("found"));
    assert_eq!(report.number("device_id"), Some(0x1042));
    assert_eq!(report.number("revision"), Some(1));
    assert_eq!(report.number("irq_pin"), Some(1));
    assert_eq!(report.number("irq_line"), Some(16));
    assert_eq!(report.number("caps"), Some(0x54321));
    assert_eq!(report.number("msix_vectors"), Some(2));
    assert_eq!(report.number("features_ok"), Some(1));
    assert_eq!(report.number("capacity"), Some(8 * 2048));
    assert_eq!(report.number("blk_size"), Some(512));
    assert_eq!(report.number("write_status"), Some(0));
    assert_eq!(report.number("write_used"), Some(1));
    assert_eq!(report.number("isr"), Some(1));
    assert_eq!(report.number("write2_status"), Some(0));
    assert_eq!(report.number("flush_status"), Some(0));
    assert_eq!(report.number("read_status"), Some(0));
    assert_eq!(report.number("read_used"), Some(2049));
    assert_eq!(report.number("read_match"), Some(1));
    assert_eq!(report.get("id"), Some("vireo-disk-0"));
    assert_eq!(report.number("oob_status"), Some(1));
    assert_eq!(report.number("unsupp_status"), Some(2));
    qemu_img_check(&disk);
    qemu_io_reads(&disk, "qcow2", VBLK_WRITES_8M);
}

#[test]
fn vblk_guest_on_a_read_only_raw_disk_gets_write_errors_and_reads() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let kernel = vblk_guest();

    let (code, serial) = run_vmm(
        &kernel,
        &[
            "--disk".into(),
            format!("path={},format=raw,readonly=on,cache=none", disk.display()),
        ],
    );

    let report = Report::parse(&serial);
    assert_eq!(code, Some(1), "{serial}");
    assert_eq!(report.number("capacity"), Some(2048));
    assert_eq!(report.number("write_status"), Some(1));
    assert_eq!(report.number("read_status"), Some(0));
    assert_eq!(report.number("read_match"), Some(0));
    assert_eq!(
        report.number("features_lo").map(|f| f & (1 << 5)),
        Some(1 << 5)
    );
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn a_missing_disk_image_stops_the_vmm_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.qcow2");
    let out = Command::new(env!("CARGO_BIN_EXE_vireo-vmm"))
        .arg("--kernel")
        .arg(vblk_guest())
        .arg("--disk")
        .arg(format!("path={}", missing.display()))
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("nope.qcow2"), "{stderr}");
}

#[test]
fn vblk_guest_reports_the_same_under_qemu_virtio_blk_pci() {
    if !kvm_present() || vireo_tests::qemu::qemu_binary().is_none() {
        eprintln!("skipped: needs /dev/kvm and qemu-system-x86_64");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", ours.to_str().unwrap(), "8M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        theirs.to_str().unwrap(),
        "8M",
    ]);
    let kernel = vblk_guest();

    let (_, serial) = run_vmm(
        &kernel,
        &["--disk".into(), format!("path={}", ours.display())],
    );
    let mut qemu = QemuBuilder::new(&kernel)
        .args([
            "-drive".to_owned(),
            format!("file={},if=none,id=d0,format=qcow2", theirs.display()),
            "-device".to_owned(),
            "virtio-blk-pci,drive=d0,disable-legacy=on,serial=vireo-disk-0".to_owned(),
        ])
        .timeout(TIMEOUT)
        .spawn();
    qemu.wait_exit();
    let reference = qemu.report();

    let report = Report::parse(&serial);
    eprintln!("qemu:\n{}", qemu.serial_text());
    for key in SHARED_FACTS {
        assert_eq!(
            report.get(key),
            reference.get(key),
            "{key}: vireo vs QEMU\nvireo:\n{serial}\nqemu:\n{}",
            qemu.serial_text()
        );
    }
    // The images read the same.
    let out = Command::new("qemu-img")
        .args(["compare", ours.to_str().unwrap(), theirs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn vmm_killed_during_guest_writes_leaves_a_qcow2_without_corruption() {
    if !kvm_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = vblk_guest();
    for (round, delay_ms) in [300u64, 1500].into_iter().enumerate() {
        let disk = dir.path().join(format!("crash{round}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "64M"]);
        let serial = dir.path().join(format!("serial{round}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_vireo-vmm"))
            .arg("--kernel")
            .arg(&kernel)
            .args(["--cmdline", "loop"])
            .arg("--serial-log")
            .arg(&serial)
            .arg("--disk")
            .arg(format!("path={}", disk.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let out = std::fs::read_to_string(&serial).unwrap_or_default();
            if out.lines().any(|l| l.trim_end() == "looping") {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "vireo-vmm exited early:\n{out}"
            );
            assert!(
                Instant::now() < deadline,
                "guest never started writing:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));

        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let out = Command::new("qemu-img")
            .args(["check", disk.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // 0: clean; 3: leaked clusters only (acceptable, as in QEMU).
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "round {round}: qemu-img check after SIGKILL: {text}"
        );
        assert!(!text.contains("ERROR"), "round {round}: {text}");
        // The guest really was allocating clusters when it was killed.
        let size = std::fs::metadata(&disk).unwrap().len();
        eprintln!("round {round}: image grew to {size} bytes; check: {text}");
        assert!(size > 1 << 20, "round {round}: only {size} bytes written");
    }
}
