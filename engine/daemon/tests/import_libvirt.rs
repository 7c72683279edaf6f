//! Real libvirt XML, produced at test time by Debian's `virt-install
//! --print-xml` and `virsh dumpxml`, imports through vireoctl: what Vireo
//! supports is applied, everything else is kept verbatim and listed.

use std::process::Command;
use std::time::Duration;

use vireo_tests::engine::{Session, guest, kvm_or_skip, serial};

/// Runs a libvirt tool; `None` (with a message) when it is not installed.
fn tool(program: &str, args: &[&str]) -> Option<String> {
    let out = match Command::new(program)
        .args(args)
        .env("VIRTINSTALL_OSINFO_DISABLE_REQUIRE", "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "skipping: cannot run {program} ({e}); build-aux/install-deps test installs it"
            );
            return None;
        }
    };
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn unsupported_warning(stderr: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("warning: kept in the definition but not used by Vireo: "))
        .unwrap_or_else(|| panic!("no warning in: {text}"));
    line.split(", ").map(str::to_owned).collect()
}

#[test]
fn virt_install_print_xml_imports_keeps_unsupported_elements_and_boots() {
    let _serial = serial();
    let s = Session::new();
    let kernel = guest("fb");
    let disk = s.dir.path().join("vi-disk.qcow2");
    let kernel_arg = format!("kernel={},cmdline=hold", kernel.display());
    // virt-install --print-xml does not create images: qemu-img does.
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "1M"])
        .output()
        .expect("qemu-img is required (build-aux/install-deps installs qemu-utils)");
    assert!(out.status.success(), "{out:?}");
    let disk_arg = format!(
        "path={},size=1,format=qcow2,bus=virtio,driver.name=qemu,driver.type=qcow2,\
         cache=writeback",
        disk.display()
    );
    let Some(xml) = tool(
        "virt-install",
        &[
            "--connect",
            "test:///default",
            "--name",
            "vi",
            "--memory",
            "64",
            "--vcpus",
            "2",
            "--boot",
            &kernel_arg,
            "--disk",
            &disk_arg,
            "--disk",
            "device=cdrom,bus=sata",
            "--network",
            "network=default",
            "--graphics",
            "vnc",
            "--serial",
            "pty",
            "--osinfo",
            "generic",
            "--print-xml",
        ],
    ) else {
        return;
    };

    let out = s.ctl_with_input(&["define", "-"], Some(&xml));

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Domain 'vi' defined from standard input\n\n"
    );
    let paths = unsupported_warning(&out.stderr);
    for want in [
        "domain/features/pae",
        "domain/clock",
        "domain/pm",
        "domain/devices/emulator",
        "domain/devices/disk[target/@bus='sata']",
        "domain/devices/controller",
        "domain/devices/interface",
        "domain/devices/input",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    // Supported elements (the virtio disk among them) are not reported;
    // each path is listed once.
    assert!(
        !paths.iter().any(|p| p == "domain/devices/graphics"
            || p == "domain/os"
            || p.starts_with("domain/devices/disk/")
            || p == "domain/devices/disk"),
        "{paths:?}"
    );
    let mut dedup = paths.clone();
    dedup.dedup();
    assert_eq!(dedup, paths);
    // Stored verbatim: virt-install's text comes back byte for byte.
    assert_eq!(s.ok(&["dumpxml", "vi"]), xml);
    let info = s.ok(&["dominfo", "vi"]);
    assert!(info.contains("CPU(s):         2\n"), "{info}");
    assert!(info.contains("Max memory:     65536 KiB\n"), "{info}");

    assert_eq!(
        s.ok(&["domblklist", "vi"]),
        format!(
            " Target   Source\n{}\n vda      {}\n sda      -\n\n",
            "-".repeat(12 + disk.to_str().unwrap().len()),
            disk.display()
        )
    );

    if kvm_or_skip() {
        // What we support is applied: the kernel boots with its cmdline,
        // and the qcow2 disk is attached.
        s.ok(&["start", "vi"]);
        let uuid = s.info("vi").summary.uuid;
        s.wait_serial(&uuid, "done", Duration::from_secs(20));
        let vmm = std::fs::read(format!("/proc/{}/cmdline", s.info("vi").pid.unwrap())).unwrap();
        let args: Vec<_> = vmm
            .split(|&b| b == 0)
            .map(String::from_utf8_lossy)
            .collect();
        let want = format!(
            "path={},format=qcow2,cache=writeback,discard=ignore",
            disk.display()
        );
        assert!(args.iter().any(|a| *a == want), "{args:?}");
        // virsh's rule: a running domain's storage is not removed.
        let out = s.ctl(&["undefine", "vi", "--remove-all-storage"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is running; its storage"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(disk.exists());
        s.ok(&["destroy", "vi"]);
    }

    // --remove-all-storage deletes the disk image the domain names.
    let out = s.ok(&["undefine", "vi", "--remove-all-storage"]);
    assert_eq!(
        out,
        format!(
            "Domain 'vi' has been undefined\nVolume 'vda'({}) removed.\n\n",
            disk.display()
        )
    );
    assert!(!disk.exists());
}

#[test]
fn virsh_dumpxml_of_a_libvirt_domain_imports_verbatim() {
    let _serial = serial();
    let s = Session::new();
    let Some(xml) = tool("virsh", &["-c", "test:///default", "dumpxml", "test"]) else {
        return;
    };

    let out = s.ctl_with_input(&["define", "-"], Some(&xml));

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = unsupported_warning(&out.stderr);
    for want in [
        "domain/os/boot",
        "domain/on_poweroff",
        "domain/devices/disk/address",
        "domain/devices/interface",
        "domain/devices/memballoon",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    assert_eq!(s.ok(&["dumpxml", "test"]), xml);
    let info = s.ok(&["dominfo", "test"]);
    assert!(
        info.contains("UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f\n"),
        "{info}"
    );
    assert!(info.contains("Used memory:    2097152 KiB\n"), "{info}");
    // It has no kernel: starting says why instead of failing obscurely.
    let out = s.ctl(&["start", "test"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no <os><kernel>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
