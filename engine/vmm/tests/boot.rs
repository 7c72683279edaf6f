//! Boots the tiny test guests in `tests/guests/` through the real
//! `vireo-vmm` binary on /dev/kvm and checks what they report on COM1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BOOT_TIMEOUT, GUEST_OK, Vmm, kvm_present, value};
use serde_json::{Value, json};
use vireo_tests::guest::{Flavor, build};

#[test]
fn elf64_boot_passes_cmdline_e820_and_screen_info() {
    if !kvm_present() {
        return;
    }
    let guest = build("bootinfo", Flavor::Elf64);
    let mut vmm = Vmm::start(
        &guest,
        &[
            "--memory",
            "128",
            "--cmdline",
            "console=ttyS0 vireo.test=elf64",
            "--resolution",
            "800x600",
        ],
    );
    let out = vmm.wait_line("done");
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
    assert_eq!(value(&out, "boot"), "elf64");
    assert_eq!(value(&out, "cmdline"), "console=ttyS0 vireo.test=elf64");
    // All RAM but the EBDA and the 640 KiB..1 MiB hole.
    let ram: u64 = (128 << 20) - (0x10_0000 - 0x9_fc00);
    assert_eq!(value(&out, "e820_ram_total"), ram.to_string());
    assert_eq!(value(&out, "fb_type"), "0x23");
    assert_eq!(value(&out, "fb_base"), "0xc0000000");
    assert_eq!(value(&out, "fb_size"), "256", "16 MiB in 64 KiB units");
    assert_eq!(value(&out, "fb_width"), "800");
    assert_eq!(value(&out, "fb_height"), "600");
    assert_eq!(value(&out, "fb_depth"), "32");
    assert_eq!(value(&out, "fb_linelength"), "3200");
    assert_eq!(value(&out, "fb_colors"), "r8@16,g8@8,b8@0,x8@24");
    assert_eq!(value(&out, "rsdp_signature"), "ok");
}

#[test]
fn pvh_boot_passes_cmdline_memmap_and_rsdp() {
    if !kvm_present() {
        return;
    }
    let guest = build("bootinfo", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &["--memory", "64", "--cmdline", "vireo.test=pvh"]);
    let out = vmm.wait_line("done");
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
    assert_eq!(value(&out, "boot"), "pvh");
    assert_eq!(value(&out, "cmdline"), "vireo.test=pvh");
    assert_eq!(value(&out, "pvh_magic"), "0x336ec578");
    let ram: u64 = (64 << 20) - (0x10_0000 - 0x9_fc00);
    assert_eq!(value(&out, "e820_ram_total"), ram.to_string());
    assert_eq!(value(&out, "rsdp_signature"), "ok");
    assert_eq!(
        value(&out, "rsdp_scan"),
        value(&out, "rsdp"),
        "RSDP is also found by scanning"
    );
}

#[test]
fn framebuffer_pixels_and_dirty_log_match_what_the_guest_drew() {
    if !kvm_present() {
        return;
    }
    let guest = build("fb", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &["--cmdline", "mode=640x480 hold"]);
    let out = vmm.wait_line("done");
    assert_eq!(value(&out, "bochs"), "found");
    assert_eq!(value(&out, "dispi_id"), "0xb0c5");
    assert_eq!(value(&out, "xres"), "640");

    let fb = vmm.call("framebuffer", Value::Null);
    assert_eq!(fb["width"], 640);
    assert_eq!(fb["height"], 480);
    assert_eq!(fb["stride"], 2560);

    // The guest drew the whole 640x480x4 screen (background first), and
    // nothing else: exactly pages 0..300 of VRAM are dirty.
    let dirty = vmm.call("dirty-pages", Value::Null);
    let pages: Vec<u64> = dirty["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(pages, (0..300).collect::<Vec<u64>>());
    // Reading the log clears it; the idle guest dirties nothing more.
    let again = vmm.call("dirty-pages", Value::Null);
    assert_eq!(again["pages"], json!([]));

    let png = vmm.path("screen.png");
    vmm.call("screendump", json!({ "path": png }));
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    assert_eq!(img.get_pixel(0, 0).0, [0x20, 0x20, 0x20], "background");
    assert_eq!(img.get_pixel(100, 50).0, [0xff, 0, 0], "red rectangle");
    assert_eq!(img.get_pixel(199, 149).0, [0xff, 0, 0]);
    assert_eq!(img.get_pixel(200, 149).0, [0x20, 0x20, 0x20]);
    assert_eq!(img.get_pixel(639, 305).0, [0, 0xff, 0], "green band");
    assert_eq!(img.get_pixel(0, 310).0, [0x20, 0x20, 0x20]);
}

#[test]
fn injected_keys_reach_the_guest_as_set1_scancodes() {
    if !kvm_present() {
        return;
    }
    let guest = build("kbd", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &[]);
    vmm.wait_line("kbd=ready");
    // 'a' pressed and released, then Up (an E0 key), then Escape.
    vmm.call("send-key", json!({ "keys": [0x1e] }));
    vmm.call("key-event", json!({ "scancode": 0xe048, "down": true }));
    vmm.call("key-event", json!({ "scancode": 0xe048, "down": false }));
    vmm.call("send-key", json!({ "keys": [0x01] }));
    let out = vmm.wait_line("done");
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("scancode="))
        .collect();
    assert_eq!(
        codes,
        [
            "0x1e", "0x9e", "0xe0", "0x48", "0xe0", "0xc8", "0x01", "0x81"
        ]
    );
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
}

#[test]
fn application_processors_come_up_with_init_sipi_sipi() {
    if !kvm_present() {
        return;
    }
    let guest = build("smp", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &["--cpus", "4", "--cmdline", "cpus=4"]);
    let out = vmm.wait_line("done");
    assert_eq!(value(&out, "cpus_up"), "4");
    for ap in 1..4 {
        assert!(
            out.contains(&format!("ap={ap} up")),
            "AP {ap} missing:\n{out}"
        );
    }
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
}

#[test]
fn power_button_reaches_the_guest_and_s5_powers_off() {
    if !kvm_present() {
        return;
    }
    let guest = build("power", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &[]);
    vmm.wait_line("power=armed");
    let answer = vmm.call("system_powerdown", Value::Null);
    assert_eq!(answer["armed"], true);
    vmm.wait_line("power=button");
    assert_eq!(vmm.wait_exit().code(), Some(0), "S5 ends the VMM cleanly");
    assert!(!vmm.serial().contains("poweroff=failed"));
}

#[test]
fn reset_reboots_and_cmos_nvram_survives() {
    if !kvm_present() {
        return;
    }
    for via in ["cf9", "kbd"] {
        let guest = build("reset", Flavor::Pvh);
        let mut vmm = Vmm::start(&guest, &["--cmdline", &format!("via={via}")]);
        let out = vmm.wait_line("done");
        let counts: Vec<&str> = out
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("boot_count="))
            .collect();
        assert_eq!(counts, ["0", "1"], "via {via}:\n{out}");
        assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
        assert!(vmm.stderr().contains("guest reset: rebooting"));
    }
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    if !kvm_present() {
        return;
    }
    let guest = build("spin", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &[]);
    vmm.wait_line("spinning");
    vmm.call("pause", Value::Null);
    assert_eq!(vmm.call("status", Value::Null)["state"], "paused");
    let before = vmm.serial().len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(vmm.serial().len(), before, "a paused guest printed");
    vmm.call("resume", Value::Null);
    assert_eq!(vmm.call("status", Value::Null)["state"], "running");
    let deadline = Instant::now() + Duration::from_secs(30);
    while vmm.serial().len() == before {
        assert!(
            Instant::now() < deadline,
            "the resumed guest printed nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = vmm.call("stats", Value::Null);
    assert!(stats["vcpus"][0]["io_exits"].as_u64().unwrap() > 0);
    assert!(stats["vcpus"][0]["cpu_time_ns"].as_u64().unwrap() > 0);
    vmm.call("quit", Value::Null);
    assert_eq!(vmm.wait_exit().code(), Some(0));
}

#[test]
fn triple_fault_ends_the_vm_as_crashed_with_registers_logged() {
    if !kvm_present() {
        return;
    }
    let guest = build("crash", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &[]);
    vmm.wait_line("crashing");
    assert_eq!(vmm.wait_exit().code(), Some(3));
    let log = vmm.stderr();
    assert!(
        log.contains("guest crashed: triple fault on vCPU 0"),
        "{log}"
    );
    assert!(log.contains("rip=0x"), "{log}");
}

#[test]
fn a_missing_kernel_is_named_in_the_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo-vmm"))
        .args(["--kernel", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    if kvm_present() {
        assert!(
            err.contains("cannot read kernel '/nonexistent/vmlinux'"),
            "{err}"
        );
    }
}

#[test]
fn serial_console_clients_see_output_and_type_input() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    if !kvm_present() {
        return;
    }
    let guest = build("echo", Flavor::Pvh);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("serial.sock");
    let mut vmm = Vmm::start(&guest, &["--serial-socket", sock.to_str().unwrap()]);
    // Attach before the guest has much to say: the client sees it from then on.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut console = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(Instant::now() < deadline, "no serial socket");
        std::thread::sleep(Duration::from_millis(10));
    };
    vmm.wait_line("echo=ready");
    console.write_all(b"hello vireo q").unwrap();
    vmm.wait_line("done");
    assert!(vmm.serial().contains("HELLO VIREO "), "{}", vmm.serial());
    console
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("done") {
        let n = console.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "console closed early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("HELLO VIREO"));
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
}

#[test]
fn memory_above_the_pci_hole_is_reported_in_e820() {
    if !kvm_present() {
        return;
    }
    let guest = build("bootinfo", Flavor::Elf64);
    let mut vmm = Vmm::start(&guest, &["--memory", "4096"]);
    let out = vmm.wait_line("done");
    let ram: u64 = (4u64 << 30) - (0x10_0000 - 0x9_fc00);
    assert_eq!(value(&out, "e820_ram_total"), ram.to_string());
    // 3 GiB below the hole, 1 GiB from 4 GiB.
    assert!(
        out.lines()
            .any(|l| l.starts_with("e820=0x100000000,0x40000000,1")),
        "{out}"
    );
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
}

#[test]
fn bzimage_boot_uses_the_64_bit_entry_and_boot_params() {
    if !kvm_present() {
        return;
    }
    let guest = build("bootinfo", Flavor::BzImage);
    let mut vmm = Vmm::start(
        &guest,
        &["--memory", "96", "--cmdline", "vireo.test=bzimage"],
    );
    let out = vmm.wait_line("done");
    assert_eq!(vmm.wait_exit().code(), Some(GUEST_OK));
    assert_eq!(
        value(&out, "boot"),
        "elf64",
        "entered through the Linux boot protocol"
    );
    assert_eq!(value(&out, "cmdline"), "vireo.test=bzimage");
    let ram: u64 = (96 << 20) - (0x10_0000 - 0x9_fc00);
    assert_eq!(value(&out, "e820_ram_total"), ram.to_string());
    assert_eq!(value(&out, "fb_type"), "0x23");
}

#[test]
fn demo_guest_draws_a_test_card_and_shows_typed_text() {
    if !kvm_present() {
        return;
    }
    let guest = build("demo", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &[]);
    vmm.wait_line("demo=ready");
    // "hi" then Enter, typed through the PS/2 keyboard.
    vmm.call("send-key", json!({ "keys": [0x23, 0x17, 0x1c] }));
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !vmm.serial().ends_with("hi\n") {
        assert!(
            Instant::now() < deadline,
            "typed text not echoed:\n{}",
            vmm.serial()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let png = vmm.path("demo.png");
    vmm.call("screendump", json!({ "path": png }));
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (800, 600));
    // Eight colour bars over the top: the first is 75% white, the last black.
    let first = img.get_pixel(10, 100).0;
    let last = img.get_pixel(790, 100).0;
    assert!(first.iter().all(|&c| c > 0xa0), "first bar {first:?}");
    assert!(last.iter().all(|&c| c < 0x30), "last bar {last:?}");
    let distinct: std::collections::HashSet<[u8; 3]> =
        (0..8).map(|i| img.get_pixel(50 + i * 100, 100).0).collect();
    assert_eq!(distinct.len(), 8, "eight distinct bars: {distinct:?}");
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::copy(&png, artifacts().join("vmm-demo.png")).unwrap();
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts")
}

#[test]
fn reset_keeps_a_paused_machine_paused() {
    if !kvm_present() {
        return;
    }
    let guest = build("spin", Flavor::Pvh);
    let mut vmm = Vmm::start(&guest, &[]);
    vmm.wait_line("spinning");
    vmm.call("pause", Value::Null);
    vmm.call("system_reset", Value::Null);
    let deadline = Instant::now() + Duration::from_secs(10);
    while vmm.call("status", Value::Null)["boots"] != 2 {
        assert!(Instant::now() < deadline, "the reset did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(vmm.call("status", Value::Null)["state"], "paused");
    let before = vmm.serial().len();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        vmm.serial().len(),
        before,
        "the reset machine ran while paused"
    );
    vmm.call("resume", Value::Null);
    // The second boot prints its banner again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while vmm.serial().matches("spinning").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the resumed machine did not boot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
