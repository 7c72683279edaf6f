//! Domains with disks, end to end: libvirt `<disk>` XML defined through
//! vireoctl, started by vireod as `vireo-vmm --disk`, and the `vblk` test
//! guest (its own virtio-pci driver) writing and reading sectors; the
//! images are then checked on the host with QEMU's `qemu-img` and
//! `qemu-io`.

use std::path::Path;
use std::time::{Duration, Instant};

use vireo_tests::engine::{Session, guest, kvm_or_skip, serial};
use vireo_tests::qemu::{VBLK_WRITES_8M, qemu_img, qemu_img_check, qemu_io_reads};
use vireo_tests::report::Report;

/// The emulated KVM here is slow: a vblk run takes a few seconds.
const RUN: Duration = Duration::from_secs(60);

/// A domain booting the vblk guest with `disks` inside `<devices>`.
fn vblk_domain(name: &str, disks: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>32</memory>\n  \
         <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64'>hvm</type>\n    \
         <kernel>{}</kernel>\n  </os>\n  <devices>\n{disks}  </devices>\n</domain>\n",
        guest("vblk").display()
    )
}

/// Starts `name`, waits for the guest to finish and returns its report.
fn run_guest(s: &Session, name: &str) -> Report {
    s.ok(&["start", name]);
    let uuid = s.info(name).summary.uuid;
    s.wait_serial(&uuid, "done", RUN);
    s.wait_state(name, "shut off", RUN);
    Report::parse(&s.serial_log(&uuid))
}

#[test]
fn a_qcow2_disk_defined_in_xml_is_written_by_the_guest_and_read_back_by_qemu() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let disk = s.dir.path().join("data.qcow2");
    let iso = s.dir.path().join("media.iso");
    qemu_img(&["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "8M"]);
    std::fs::write(&iso, vec![0u8; 64 << 10]).unwrap();
    let xml = vblk_domain(
        "withdisk",
        &format!(
            "    <disk type='file' device='disk'>\n      \
             <driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>\n      \
             <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n      \
             <serial>e2e-serial-1</serial>\n    </disk>\n    \
             <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      \
             <source file='{}'/>\n      <target dev='sda' bus='sata'/>\n      <readonly/>\n    \
             </disk>\n",
            disk.display(),
            iso.display()
        ),
    );

    let out = s.ctl_with_input(&["define", "-"], Some(&xml));

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The virtio disk is applied; the SATA CD-ROM is kept but reported:
    // vireo-vmm has no SATA controller.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "warning: kept in the definition but not used by Vireo: \
         domain/devices/disk[target/@bus='sata']\n"
    );
    // Stored as written (a generated <uuid> aside).
    let stored = s.ok(&["dumpxml", "withdisk"]);
    let devices = &xml[xml.find("  <devices>").unwrap()..];
    assert!(stored.ends_with(devices), "{stored}");
    assert_eq!(
        s.ok(&["domblklist", "withdisk"]),
        format!(
            " Target   Source\n{}\n vda      {}\n sda      {}\n\n",
            "-".repeat(12 + disk.to_str().unwrap().len()),
            disk.display(),
            iso.display()
        )
    );
    let details = s.ok(&["domblklist", "withdisk", "--details"]);
    assert!(
        details.starts_with(" Type   Device   Target   Source\n"),
        "{details}"
    );
    assert!(
        details.contains(&format!(" file   cdrom    sda      {}\n", iso.display())),
        "{details}"
    );

    // The guest holds after its report, so its disk statistics can be read.
    let held = xml.replace("</kernel>", "</kernel>\n    <cmdline>hold</cmdline>");
    let redefined = s.ctl_with_input(&["define", "-"], Some(&held));
    assert!(redefined.status.success(), "{redefined:?}");
    s.ok(&["start", "withdisk"]);
    let uuid = s.info("withdisk").summary.uuid;
    s.wait_serial(&uuid, "done", RUN);
    let blkstat = s.ok(&["domblkstat", "withdisk", "vda"]);
    let domstats = s.ok(&["domstats", "withdisk"]);
    let summed = s.ok(&["domblkstat", "withdisk"]);
    let unknown = s.ctl(&["domblkstat", "withdisk", "sda"]);
    // virsh also takes the disk's source path.
    let by_path = s.ok(&["domblkstat", "withdisk", disk.to_str().unwrap()]);
    // A reset runs the guest again; the counters go on, as QEMU's do.
    s.ok(&["reset", "withdisk"]);
    let deadline = Instant::now() + RUN;
    while s
        .serial_log(&uuid)
        .lines()
        .filter(|l| l.trim() == "done")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the guest did not run again");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after_reset = s.ok(&["domblkstat", "withdisk", "vda"]);
    s.ok(&["destroy", "withdisk"]);
    s.wait_state("withdisk", "shut off", RUN);
    let report = Report::parse(&s.serial_log(&uuid));

    // What the guest did: a 4-sector write and a 1-sector write, one
    // flush, a 4-sector read and two failed requests (a read past the end
    // and an unknown type); get-id is neither a read nor a write.
    assert_eq!(
        blkstat,
        "vda rd_req 1\nvda rd_bytes 2048\nvda wr_req 2\nvda wr_bytes 2560\n\
         vda errs 2\nvda flush_operations 1\n\n"
    );
    assert_eq!(
        after_reset,
        "vda rd_req 2\nvda rd_bytes 4096\nvda wr_req 4\nvda wr_bytes 5120\n\
         vda errs 4\nvda flush_operations 2\n\n"
    );
    assert_eq!(
        by_path,
        blkstat.replace("vda ", &format!("{} ", disk.display()))
    );
    // The CD-ROM is not attached: the sum is vda's alone, and sda has none.
    assert_eq!(summed, blkstat.replace("vda ", " "));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("invalid path: sda"),
        "{unknown:?}"
    );
    for line in [
        "  block.count=1\n",
        "  block.0.name=vda\n",
        "  block.0.rd.reqs=1\n",
        "  block.0.rd.bytes=2048\n",
        "  block.0.wr.reqs=2\n",
        "  block.0.wr.bytes=2560\n",
        "  block.0.fl.reqs=1\n",
    ] {
        assert!(domstats.contains(line), "{line} in {domstats}");
    }
    assert_eq!(report.get("virtio_blk"), Some("found"), "{report:?}");
    assert_eq!(report.number("capacity"), Some(8 * 2048));
    assert_eq!(report.number("write_status"), Some(0));
    assert_eq!(report.number("write2_status"), Some(0));
    assert_eq!(report.number("flush_status"), Some(0));
    assert_eq!(report.number("read_status"), Some(0));
    assert_eq!(report.number("read_match"), Some(1));
    // <serial> is what the guest reads with get-id.
    assert_eq!(report.get("id"), Some("e2e-serial-1"));
    assert_eq!(s.state("withdisk"), "shut off (destroyed)");
    qemu_img_check(&disk);
    // Sectors 2..6 hold 0xa0..0xa3, sector 130 0x5a, the rest is zero.
    qemu_io_reads(&disk, "qcow2", VBLK_WRITES_8M);
    // The CD-ROM was not attached, so nothing touched it.
    assert!(std::fs::read(&iso).unwrap().iter().all(|&b| b == 0));

    // --remove-all-storage deletes the domain's disk image, not CD-ROM media.
    let out = s.ok(&["undefine", "withdisk", "--remove-all-storage"]);

    assert_eq!(
        out,
        format!(
            "Domain 'withdisk' has been undefined\nVolume 'vda'({}) removed.\n\n",
            disk.display()
        )
    );
    assert!(!disk.exists());
    assert!(iso.exists());
}

#[test]
fn a_readonly_disk_refuses_guest_writes() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let disk = s.dir.path().join("ro.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    s.define(&vblk_domain(
        "ro",
        &format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw' \
             cache='none'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n      \
             <readonly/>\n    </disk>\n",
            disk.display()
        ),
    ));

    let report = run_guest(&s, "ro");

    assert_eq!(report.get("virtio_blk"), Some("found"), "{report:?}");
    assert_eq!(report.number("capacity"), Some(2048));
    // VIRTIO_BLK_F_RO is offered and writes end with VIRTIO_BLK_S_IOERR.
    assert_eq!(
        report.number("features_lo").map(|f| f & (1 << 5)),
        Some(1 << 5)
    );
    assert_eq!(report.number("write_status"), Some(1));
    assert_eq!(report.number("read_status"), Some(0));
    assert_eq!(report.number("read_match"), Some(0));
    assert_eq!(report.get("id"), Some("vireo-disk-0"));
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn start_fails_naming_a_missing_disk_source_and_no_vmm_runs() {
    let _serial = serial();
    let s = Session::new();
    let missing = s.dir.path().join("not-there.qcow2");
    s.define(&vblk_domain(
        "nodisk",
        &format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
             <source file='{}'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n",
            missing.display()
        ),
    ));

    let out = s.ctl(&["start", "nodisk"]);

    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot start domain 'nodisk': disk 'vdb' source '{}': No such file or \
             directory\n",
            missing.display()
        )
    );
    assert_eq!(s.state("nodisk"), "shut off (unknown)");
    assert_eq!(s.processes(), Vec::<u32>::new());

    // A file that is not the qcow2 the XML says is refused the same way.
    std::fs::write(&missing, b"not an image").unwrap();
    let out = s.ctl(&["start", "nodisk"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a qcow2 image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An unknown driver type is refused at define time, naming the disk.
    let out = s.ctl_with_input(
        &["define", "-"],
        Some(&vblk_domain(
            "vmdk",
            "    <disk type='file'><driver name='qemu' type='vmdk'/>\
             <source file='/x.vmdk'/><target dev='vdc' bus='virtio'/></disk>\n",
        )),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<disk> 'vdc': driver type 'vmdk' is not supported"),
        "{err}"
    );
}

#[test]
fn start_fails_naming_a_missing_backing_file() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let base = s.dir.path().join("base.qcow2");
    let top = s.dir.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "8M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    std::fs::remove_file(&base).unwrap();
    s.define(&vblk_domain(
        "overlay",
        &format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
             <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n",
            top.display()
        ),
    ));

    let out = s.ctl(&["start", "overlay"]);

    // The overlay itself is there; vireo-vmm walks the chain and says
    // which backing file is missing.
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot start domain 'overlay': "),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "needs backing file '{}', which does not exist",
            base.display()
        )),
        "{err}"
    );
    assert_eq!(s.state("overlay"), "shut off (unknown)");
}

/// A domain running the fb guest (which holds until stopped) with `disk`.
fn holding_domain(name: &str, disk: &Path, readonly: bool) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel><cmdline>hold</cmdline></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/>{}</disk></devices></domain>",
        guest("fb").display(),
        disk.display(),
        if readonly { "<readonly/>" } else { "" }
    )
}

#[test]
fn an_image_is_shared_between_running_domains_only_read_only() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let rw = s.dir.path().join("rw.qcow2");
    let ro = s.dir.path().join("ro.qcow2");
    for image in [&rw, &ro] {
        qemu_img(&["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1M"]);
    }
    s.define(&holding_domain("writer-a", &rw, false));
    s.define(&holding_domain("writer-b", &rw, false));
    s.define(&holding_domain("reader-a", &ro, true));
    s.define(&holding_domain("reader-b", &ro, true));
    s.ok(&["start", "writer-a"]);

    let out = s.ctl(&["start", "writer-b"]);

    // vireo-vmm locks the image it writes; the second VM is refused.
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "disk image '{}' is in use by another VM",
            rw.display()
        )),
        "{err}"
    );
    assert_eq!(s.state("writer-a"), "running (booted)");
    // Once the first stops, the second may start.
    s.ok(&["destroy", "writer-a"]);
    s.ok(&["start", "writer-b"]);
    s.ok(&["destroy", "writer-b"]);
    // Two read-only users share an image.
    s.ok(&["start", "reader-a"]);
    s.ok(&["start", "reader-b"]);
    assert_eq!(s.state("reader-b"), "running (booted)");
    s.ok(&["destroy", "reader-a"]);
    s.ok(&["destroy", "reader-b"]);
    qemu_img_check(&rw);
}

#[test]
fn a_pool_volume_disk_is_resolved_at_start_and_removed_through_its_pool() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.ok(&[
        "vol-create-as",
        "default",
        "guest.qcow2",
        "8M",
        "--format",
        "qcow2",
    ]);
    let path = s.ok(&["vol-path", "guest.qcow2", "--pool", "default"]);
    let path = Path::new(path.trim()).to_owned();
    assert!(path.is_file(), "{}", path.display());
    let out = s.ctl_with_input(
        &["define", "-"],
        Some(&vblk_domain(
            "onvolume",
            "    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
             <source pool='default' volume='guest.qcow2'/>\n      \
             <target dev='vda' bus='virtio'/>\n    </disk>\n",
        )),
    );
    assert!(out.status.success(), "{out:?}");
    // Nothing unsupported: the volume disk is applied.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // virsh shows a volume disk's source as the volume name.
    assert_eq!(
        s.ok(&["domblklist", "onvolume"]),
        " Target   Source\n-----------------------\n vda      guest.qcow2\n\n"
    );

    let report = run_guest(&s, "onvolume");

    assert_eq!(report.number("write_status"), Some(0), "{report:?}");
    assert_eq!(report.number("read_match"), Some(1));
    qemu_io_reads(&path, "qcow2", &[(0xa0, 1024, 512), (0x5a, 66560, 512)]);

    let out = s.ok(&["undefine", "onvolume", "--remove-all-storage"]);

    assert_eq!(
        out,
        format!(
            "Domain 'onvolume' has been undefined\nVolume 'vda'({}) removed.\n\n",
            path.display()
        )
    );
    assert!(!path.exists());
    // The pool knows it is gone.
    assert!(!s.ok(&["vol-list", "default"]).contains("guest.qcow2"));

    // A volume the pool does not have fails start, naming disk and volume.
    s.define(&vblk_domain(
        "novolume",
        "    <disk type='volume'><driver type='qcow2'/>\
         <source pool='default' volume='gone.qcow2'/><target dev='vdb'/></disk>\n",
    ));
    let out = s.ctl(&["start", "novolume"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "error: cannot start domain 'novolume': disk 'vdb' (volume 'gone.qcow2' in pool \
             'default'): "
        ),
        "{err}"
    );
}

#[test]
fn undefine_storage_removes_only_the_named_disks_images() {
    let _serial = serial();
    let s = Session::new();
    let (a, b) = (s.dir.path().join("a.img"), s.dir.path().join("b.img"));
    for image in [&a, &b] {
        std::fs::write(image, [0u8; 512]).unwrap();
    }
    s.define(&vblk_domain(
        "two",
        &format!(
            "    <disk type='file'><source file='{}'/><target dev='vda'/></disk>\n    \
             <disk type='file'><source file='{}'/><target dev='vdb'/></disk>\n",
            a.display(),
            b.display()
        ),
    ));

    // An unknown name is refused before anything is deleted.
    let out = s.ctl(&["undefine", "two", "--storage", "vdb,vdz"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'vdz' is not a disk image of domain 'two'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.exists() && b.exists());

    let out = s.ok(&["undefine", "two", "--storage", "vdb"]);

    assert_eq!(
        out,
        format!(
            "Domain 'two' has been undefined\nVolume 'vdb'({}) removed.\n\n",
            b.display()
        )
    );
    assert!(a.exists());
    assert!(!b.exists());
}
