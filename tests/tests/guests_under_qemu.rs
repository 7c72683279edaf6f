//! The test guests under QEMU, the reference machine: each guest must do
//! its one thing there and say so on COM1 in the format its source file
//! documents. The same guests then run under vireo-vmm, where what they
//! observe must match (DESIGN.md, "Testing ladder" 4).
//!
//! Guests boot in their PVH flavour (QEMU enters PVH ELF kernels directly
//! after SeaBIOS). Tests skip, saying so, when qemu-system-x86_64 is not
//! installed (`build-aux/install-deps test` installs it).

use std::time::Duration;

use vireo_tests::guest::{Flavor, build};
use vireo_tests::qemu::{Qemu, QemuBuilder, qemu_binary};
use vireo_tests::report::Report;

/// Returns from the test, with a note, when QEMU is not installed.
macro_rules! require_qemu {
    () => {
        if qemu_binary().is_none() {
            eprintln!("SKIP: qemu-system-x86_64 is not installed");
            return;
        }
    };
}

fn qemu(guest: &str) -> QemuBuilder {
    QemuBuilder::new(&build(guest, Flavor::Pvh))
}

/// isa-debug-exit's status for `debug_exit(v)`: (v << 1) | 1.
fn debug_exit_code(v: i32) -> Option<i32> {
    Some((v << 1) | 1)
}

fn finished(q: &mut Qemu) -> Report {
    let status = q.wait_exit();
    let report = q.report();
    assert_eq!(
        status.code(),
        debug_exit_code(0),
        "guest did not exit with debug_exit(0): {status}\n{}",
        q.serial_text()
    );
    assert!(report.has("done"), "{}", q.serial_text());
    eprintln!("finished after {:.1} s", q.elapsed().as_secs_f64());
    report
}

#[test]
fn bootinfo_echoes_the_command_line_and_the_pvh_memory_map() {
    require_qemu!();
    let mut q = qemu("bootinfo")
        .append("console=ttyS0 vireo.test=a=b")
        .spawn();

    let r = finished(&mut q);

    assert_eq!(r.get("guest"), Some("bootinfo"));
    assert_eq!(r.get("boot"), Some("pvh"));
    assert_eq!(r.get("cmdline"), Some("console=ttyS0 vireo.test=a=b"));
    assert_eq!(r.number("pvh_magic"), Some(0x336e_c578));
    let entries = r.all("e820");
    assert_eq!(r.number("e820_entries"), Some(entries.len() as u64));
    let ram: u64 = entries
        .iter()
        .map(|e| e.split(',').collect::<Vec<_>>())
        .filter(|f| f[2] == "1")
        .map(|f| vireo_tests::report::parse_number(f[1]).unwrap())
        .sum();
    assert_eq!(r.number("e820_ram_total"), Some(ram));
    // 256 MiB, less what SeaBIOS keeps.
    assert!((250 << 20..=256 << 20).contains(&ram), "{ram}");
    assert_eq!(r.get("rsdp_signature"), Some("ok"));
    assert_eq!(r.get("rsdp_scan"), r.get("rsdp"));
}

/// Starts the fb guest with `cmdline` (which says `hold`) and returns the
/// report and a screenshot once it has drawn.
fn fb_screen(cmdline: &str, artifact: &str) -> (Report, vireo_tests::qemu::Ppm) {
    let mut q = qemu("fb")
        .append(cmdline)
        .args(["-device", "bochs-display"])
        .spawn();
    let r = q.wait_for_line("done");
    let screen = q.screendump(artifact);
    eprintln!(
        "drawn and captured after {:.1} s",
        q.elapsed().as_secs_f64()
    );
    (r, screen)
}

#[test]
fn fb_sets_640x480_and_draws_the_test_pattern() {
    require_qemu!();

    let (r, screen) = fb_screen("hold", "qemu-fb-640x480");

    assert_eq!(r.get("bochs"), Some("found"));
    assert_eq!(r.get("bars"), Some("preset"), "SeaBIOS assigns BARs");
    assert_eq!(r.number("pci_class"), Some(0x03_8000));
    let id = r.number("dispi_id").unwrap();
    assert!((0xb0c0..=0xb0c5).contains(&id), "{id:#x}");
    assert_eq!(r.number("vram_kib"), r.number("bar0_size_kib"));
    assert_eq!(r.number("qext_byteorder"), Some(0x1e1e_1e1e));
    for (key, value) in [
        ("xres", 640),
        ("yres", 480),
        ("bpp", 32),
        ("virt_width", 640),
    ] {
        assert_eq!(r.number(key), Some(value), "{key}");
    }
    assert_eq!(r.number("enable"), Some(0x41));
    assert!(r.has("drawn"));
    assert_eq!((screen.width, screen.height), (640, 480));
    // Background, the red rectangle's corners and inside, the green band.
    for (x, y, rgb) in [
        (0, 0, 0x20_2020),
        (639, 479, 0x20_2020),
        (99, 100, 0x20_2020),
        (100, 50, 0xff_0000),
        (199, 149, 0xff_0000),
        (150, 100, 0xff_0000),
        (200, 100, 0x20_2020),
        (150, 150, 0x20_2020),
        (0, 300, 0x00_ff00),
        (639, 309, 0x00_ff00),
        (320, 299, 0x20_2020),
        (320, 310, 0x20_2020),
    ] {
        assert_eq!(screen.pixel(x, y), rgb, "pixel ({x}, {y})");
    }
}

#[test]
fn fb_takes_its_mode_from_the_command_line() {
    require_qemu!();

    let (r, screen) = fb_screen("mode=800x600 hold", "qemu-fb-800x600");

    assert_eq!(r.number("xres"), Some(800));
    assert_eq!(r.number("yres"), Some(600));
    assert_eq!(r.number("stride"), Some(3200));
    assert_eq!((screen.width, screen.height), (800, 600));
    assert_eq!(screen.pixel(799, 305), 0x00_ff00);
    assert_eq!(screen.pixel(799, 599), 0x20_2020);
    assert_eq!(screen.pixel(150, 100), 0xff_0000);
}

#[test]
fn kbd_echoes_the_set1_scancodes_of_typed_keys() {
    require_qemu!();
    let mut q = qemu("kbd").spawn();
    let r = q.wait_for_line("kbd=ready");
    assert_eq!(r.get("kbd_enable_ack"), Some("0xfa"));

    q.hmp("sendkey a");
    q.hmp("sendkey esc");
    let r = finished(&mut q);

    assert_eq!(r.all("scancode"), ["0x1e", "0x9e", "0x01", "0x81"]);
    let cmdbyte = r.number("cmdbyte_new").unwrap();
    assert_eq!(cmdbyte & 0x40, 0x40, "translation on: {cmdbyte:#x}");
    assert_eq!(cmdbyte & 0x10, 0, "keyboard enabled: {cmdbyte:#x}");
}

#[test]
fn smp_brings_up_every_application_processor() {
    require_qemu!();
    let mut q = qemu("smp").cpus(2).append("cpus=2").spawn();

    let r = finished(&mut q);

    assert_eq!(r.number("cpus_up"), Some(2));
    assert_eq!(r.number("bsp_apic_id"), Some(0));
    assert_eq!(r.all("ap"), ["1 up"]);
}

#[test]
fn power_button_press_is_seen_and_s5_powers_off() {
    require_qemu!();
    // QEMU's PIIX4 takes SLP_TYP 0 as S5.
    let mut q = qemu("power").append("s5=0").spawn();
    q.wait_for_line("power=armed");

    q.hmp("system_powerdown");
    let status = q.wait_exit();

    let r = q.report();
    assert!(
        status.success(),
        "a clean power-off, not debug-exit: {status}"
    );
    assert!(r.has("power=button"), "{}", q.serial_text());
    assert!(r.has("done"));
    assert_eq!(r.number("pm1_sts_cleared").map(|s| s & 0x100), Some(0));
    assert!(!r.has("poweroff=failed"));
    eprintln!(
        "pm_base={:?} pm_source={:?}",
        r.get("pm_base"),
        r.get("pm_source")
    );
}

fn reset_twice(cmdline: &str) {
    let mut q = qemu("reset").append(cmdline).reboot(true).spawn();

    let r = finished(&mut q);

    assert_eq!(r.all("boot_count"), ["0", "1"]);
    assert_eq!(r.count("resetting"), 1);
    assert_eq!(r.count("guest=reset"), 2);
}

#[test]
fn reset_through_port_cf9_reboots_the_machine() {
    require_qemu!();
    reset_twice("");
}

#[test]
fn reset_through_the_i8042_reboots_the_machine() {
    require_qemu!();
    reset_twice("via=kbd");
}

#[test]
fn crash_triple_faults_and_the_machine_stops() {
    require_qemu!();
    // With -no-reboot a triple fault ends QEMU with status 0.
    let mut q = qemu("crash").spawn();

    let status = q.wait_exit();

    let r = q.report();
    assert!(status.success(), "{status}");
    assert!(r.has("crashing"), "{}", q.serial_text());
    assert!(!r.has("done"));
    assert!(!r.has("crash=survived"));
}

#[test]
fn portio_does_its_count_between_the_markers() {
    require_qemu!();
    let mut q = qemu("portio").append("count=1000").spawn();

    let r = finished(&mut q);

    assert_eq!(r.number("count"), Some(1000));
    // SeaBIOS logs to the debug port first; the guest's markers come last.
    assert!(
        q.debugcon().ends_with(b"SE"),
        "debug port ends with the markers"
    );
}

fn last_tick(q: &Qemu) -> u64 {
    q.report()
        .all("tick")
        .last()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

#[test]
fn spin_stops_ticking_while_paused() {
    require_qemu!();
    let mut q = qemu("spin").append("every=20000").spawn();
    q.wait_for("tick=2", |r| r.has("tick=2"));

    q.hmp("stop");
    std::thread::sleep(Duration::from_millis(300));
    let paused_at = last_tick(&q);
    std::thread::sleep(Duration::from_millis(1500));
    let still = last_tick(&q);
    let dots = q.debugcon();
    q.hmp("cont");
    q.wait_for("a tick after resuming", |r| {
        r.all("tick").last().and_then(|t| t.parse::<u64>().ok()) > Some(still)
    });

    assert_eq!(paused_at, still, "ticks while paused");
    assert!(dots.ends_with(b"."), "ticks reach the debug port too");
    assert!(q.report().has("spinning"));
}

#[test]
fn demo_draws_the_test_card_and_types_what_the_keyboard_sends() {
    require_qemu!();
    let mut q = qemu("demo").args(["-device", "bochs-display"]).spawn();
    let r = q.wait_for_line("demo=ready");
    assert_eq!(
        r.get("idle"),
        Some("hlt"),
        "timer interrupts reach the guest"
    );

    for key in ["h", "i", "shift-1", "ret", "v"] {
        q.hmp(&format!("sendkey {key}"));
    }
    q.wait_for_text("the typed text on COM1", |t| {
        t.ends_with("demo=ready\nhi!\nv")
    });
    let screen = q.screendump("qemu-demo");
    eprintln!(
        "typed and captured after {:.1} s",
        q.elapsed().as_secs_f64()
    );

    assert_eq!((screen.width, screen.height), (800, 600));
    // Eight bars of 100 pixels over the top half, then grey.
    let bars = [
        0xc0_c0c0, 0xc0_c000, 0x00_c0c0, 0x00_c000, 0xc0_00c0, 0xc0_0000, 0x00_00c0, 0x00_0000,
    ];
    for (i, rgb) in (0u32..).zip(bars) {
        assert_eq!(screen.pixel(i * 100 + 50, 10), rgb, "bar {i}");
        assert_eq!(screen.pixel(i * 100 + 50, 299), rgb, "bar {i}");
    }
    assert_eq!(screen.pixel(5, 300), 0x50_5050);
    let count = |x0: u32, y0: u32, x1: u32, y1: u32, rgb: u32| {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| screen.pixel(x, y) == rgb)
            .count()
    };
    // The title's glyphs (white) and the typed text (pale green) are there.
    assert!(count(16, 316, 480, 348, 0xff_ffff) > 500, "title drawn");
    assert!(count(24, 384, 72, 416, 0xe0_ffe0) > 100, "\"hi!\" drawn");
    assert!(count(24, 416, 40, 448, 0xe0_ffe0) > 20, "\"v\" drawn");
}
