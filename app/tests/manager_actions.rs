//! The manager window's toolbar, context menu and Delete dialog against a
//! real session engine, driven from the keyboard through the window's
//! actions (xdotool keys): Ctrl+R runs the selected VM, the Menu key opens
//! the row's context menu, Delete asks which disk images to delete.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vireo_tests::desktop::{Reaper, Xvfb, artifacts_dir};
use vireo_tests::engine::{Session, guest, kvm_or_skip, serial};

/// Waits (60 s at most) until the app's log has `count` lines with `line`.
fn wait_log(log: &Path, line: &str, count: usize) {
    vireo_tests::desktop::wait_log(log, line, count, Duration::from_secs(60));
}

/// Waits until `done` holds, checking every 100 ms for 30 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A domain booting the spin guest, with `disk` as its one disk when given.
fn domain(name: &str, disk: Option<&Path>) -> String {
    let disk = disk.map_or(String::new(), |d| {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
            d.display()
        )
    });
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel></os>\
         <devices>{disk}<graphics type='vnc'/></devices></domain>",
        guest("spin").display()
    )
}

/// The app on `session`'s engine, its window id and its log.
fn start_app(x: &Xvfb, session: &Session) -> (Reaper, String, PathBuf) {
    let log = session.dir.path().join("app.log");
    let mut app = x.spawn_with(
        Path::new(env!("CARGO_BIN_EXE_vireo")),
        &[],
        &[
            ("XDG_RUNTIME_DIR", session.runtime.as_os_str()),
            ("XDG_DATA_HOME", session.data.as_os_str()),
            ("VIREO_LOG", std::ffi::OsStr::new("vireo_app=debug")),
        ],
        Some(std::fs::File::create(&log).unwrap()),
    );
    x.wait_for_window("Vireo", &mut app, Duration::from_secs(60));
    // Mapped and drawn: xdotool can focus it.
    wait_log(&log, "first frame drawn", 1);
    // Not GTK's 1x1 client leader, which has the same title.
    let window = x
        .visible_windows("Vireo")
        .into_iter()
        .next()
        .expect("the manager window is visible");
    (app, window, log)
}

/// The app's visible top-level windows other than `main`: its dialogs
/// (each a window of its own without a window manager).
fn dialog(x: &Xvfb, main: &str) -> String {
    let mut found = None;
    wait_until("a dialog window", || {
        let out = std::process::Command::new("xdotool")
            .env("DISPLAY", &x.display)
            .args(["search", "--onlyvisible", "--classname", "vireo"])
            .output()
            .unwrap();
        found = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|w| *w != main)
            .map(str::to_owned);
        found.is_some()
    });
    found.unwrap()
}

/// How many pixels differ between two screenshots of the same size.
fn pixels_changed(a: &Path, b: &Path) -> usize {
    let a = image::open(a).unwrap().to_rgb8();
    let b = image::open(b).unwrap().to_rgb8();
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

#[test]
fn toolbar_run_starts_the_selected_vm_and_its_state_follows_vireoctl() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    session.define(&domain("demo", None));
    let x = Xvfb::start();
    let (_app, window, log) = start_app(&x, &session);
    wait_log(&log, "vm demo: shut off", 1);
    wait_log(&log, "selected demo", 1);

    // Run (the toolbar's win.run) on the selected VM.
    x.type_keys(&window, &["ctrl+r"]);
    wait_log(&log, "run on demo", 1);
    session.wait_state("demo", "running", Duration::from_secs(30));
    wait_log(&log, "vm demo: running", 1);
    x.screenshot(
        &window,
        &artifacts_dir().join("manager-toolbar-running.png"),
    );

    // From outside the app: the row follows the engine's events.
    session.ok(&["destroy", "demo"]);
    wait_log(&log, "vm demo: shut off", 2);
    session.ok(&["start", "demo"]);
    wait_log(&log, "vm demo: running", 2);
    session.ok(&["destroy", "demo"]);
    wait_log(&log, "vm demo: shut off", 3);

    // Activating the selected row (Enter; a double click) opens the VM.
    x.type_keys(&window, &["Return"]);
    wait_log(&log, "vm demo: window opened", 1);
}

#[test]
fn context_menu_force_off_stops_a_running_vm_after_confirmation() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    session.define(&domain("demo", None));
    session.ok(&["start", "demo"]);
    let x = Xvfb::start();
    let (_app, window, log) = start_app(&x, &session);
    wait_log(&log, "vm demo: running", 1);
    wait_log(&log, "selected demo", 1);
    // Let the list draw before the reference shot.
    std::thread::sleep(Duration::from_secs(1));
    let before = artifacts_dir().join("manager-before-context-menu.png");
    x.screenshot("root", &before);

    // The Menu key opens the selected row's context menu.
    x.type_keys(&window, &["Menu"]);
    wait_log(&log, "context menu shown", 1);
    std::thread::sleep(Duration::from_secs(1));
    let menu = artifacts_dir().join("manager-context-menu.png");
    x.screenshot("root", &menu);
    let changed = pixels_changed(&before, &menu);
    assert!(
        changed > 5000,
        "the context menu did not show ({changed} pixels changed): {}",
        menu.display()
    );

    // For a running VM the menu holds Open (focused), Run (disabled),
    // Pause, Shut Down, Reboot, Reset, Force Off and Delete (disabled):
    // five steps down, skipping Run, is Force Off.
    x.type_keys(&window, &["Down", "Down", "Down", "Down", "Down", "Return"]);
    wait_log(&log, "force-off on demo", 1);
    wait_log(&log, "confirmation shown", 1);
    assert!(
        session.state("demo").starts_with("running"),
        "Force Off acted before the confirmation"
    );
    std::thread::sleep(Duration::from_secs(1));
    x.screenshot(
        "root",
        &artifacts_dir().join("manager-force-off-confirm.png"),
    );

    // Cancel is the default; Tab moves to Force Off.
    x.type_keys(&dialog(&x, &window), &["Tab", "Return"]);
    session.wait_state("demo", "shut off", Duration::from_secs(30));
    wait_log(&log, "vm demo: shut off", 1);
}

#[test]
fn delete_removes_the_vm_and_only_the_ticked_disk_images() {
    if !kvm_or_skip() {
        return;
    }
    let _one_at_a_time = serial();
    let session = Session::new();
    let images = session.dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (a, b) = (images.join("a.img"), images.join("b.img"));
    for image in [&a, &b] {
        std::fs::File::create(image)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
    }
    session.define(&domain("vm-a", Some(&a)));
    session.define(&domain("vm-b", Some(&b)));
    let x = Xvfb::start();
    let (_app, window, log) = start_app(&x, &session);
    wait_log(&log, "vm vm-a: shut off", 1);
    wait_log(&log, "vm vm-b: shut off", 1);

    // The first VM is selected; which one depends on the engine's order.
    wait_until("a selection", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("selected vm-")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let first = if text.contains("selected vm-a") {
        "vm-a"
    } else {
        "vm-b"
    };
    let (first_image, second, second_image) = if first == "vm-a" {
        (&a, "vm-b", &b)
    } else {
        (&b, "vm-a", &a)
    };

    // Delete, tick the image (the first check box has the focus), then
    // Tab past Cancel to Delete.
    x.type_keys(&window, &["Delete"]);
    wait_log(&log, "delete dialog shown", 1);
    std::thread::sleep(Duration::from_secs(1));
    let confirm = dialog(&x, &window);
    x.type_keys(&confirm, &["space"]);
    x.screenshot("root", &artifacts_dir().join("manager-delete-ticked.png"));
    x.type_keys(&confirm, &["Tab", "Tab", "Return"]);
    wait_log(&log, &format!("vm {first}: undefined"), 1);
    wait_until("the ticked image to go", || !first_image.exists());
    let list = session.ok(&["list", "--all", "--name"]);
    assert!(!list.contains(first), "{first} still listed:\n{list}");

    // The other VM is selected now; delete it without ticking its image.
    wait_log(&log, &format!("selected {second}"), 1);
    x.type_keys(&window, &["Delete"]);
    wait_log(&log, "delete dialog shown", 2);
    std::thread::sleep(Duration::from_secs(1));
    x.screenshot("root", &artifacts_dir().join("manager-delete-unticked.png"));
    x.type_keys(&dialog(&x, &window), &["Tab", "Tab", "Return"]);
    wait_log(&log, &format!("vm {second}: undefined"), 1);
    let list = session.ok(&["list", "--all", "--name"]);
    assert!(!list.contains(second), "{second} still listed:\n{list}");
    assert!(
        second_image.exists(),
        "the unticked image {} was deleted",
        second_image.display()
    );
}

/// The VM names in the order the app listed them (its log).
fn listed_order(log: &Path, count: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.split("connection vireo:///session: vm ").nth(1) else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(": shut off")
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    assert_eq!(names.len(), count, "listed: {names:?}");
    names
}

#[test]
fn keyboard_selection_and_scroll_survive_engine_events_in_a_long_list() {
    let _one_at_a_time = serial();
    let session = Session::new();
    const VMS: usize = 40;
    for i in 0..VMS {
        session.define(&domain(&format!("vm-{i:02}"), None));
    }
    let x = Xvfb::start();
    let (_app, window, log) = start_app(&x, &session);
    wait_until("all VMs listed", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("connection vireo:///session: vm ")
            .count()
            >= VMS
    });
    let order = listed_order(&log, VMS);
    // The first VM is selected and has the keyboard.
    wait_log(&log, &format!("selected {}", order[0]), 1);

    // End goes to the last row (the list scrolls: 40 rows do not fit),
    // Up moves back over one VM, Down forward again; the header above
    // the first VM is never selected.
    x.type_keys(&window, &["End"]);
    wait_log(&log, &format!("selected {}", order[VMS - 1]), 1);
    x.type_keys(&window, &["Up", "Up"]);
    wait_log(&log, &format!("selected {}", order[VMS - 3]), 1);
    x.type_keys(&window, &["Down"]);
    wait_log(&log, &format!("selected {}", order[VMS - 2]), 1);
    x.screenshot(&window, &artifacts_dir().join("manager-long-list-end.png"));
    let before = artifacts_dir().join("manager-long-list-before-events.png");
    std::thread::sleep(Duration::from_millis(500));
    x.screenshot(&window, &before);

    // Live updates: the first VM (scrolled out of view) goes, a new one
    // comes at the end, and the selection stays where it was.
    let selections = std::fs::read_to_string(&log)
        .unwrap()
        .matches("selected ")
        .count();
    session.ok(&["undefine", &order[0]]);
    wait_log(&log, &format!("vm {}: undefined", order[0]), 1);
    session.define(&domain("vm-zz", None));
    wait_log(&log, "vm vm-zz: shut off", 1);
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("selected ").count(),
        selections,
        "the selection moved:\n{text}"
    );
    let after = artifacts_dir().join("manager-long-list-after-events.png");
    x.screenshot(&window, &after);
    // Nor did the list scroll: the same rows show in the same places
    // (the overlay scrollbar's strip at the right edge aside).
    let (a, b) = (
        image::open(&before).unwrap().to_rgb8(),
        image::open(&after).unwrap().to_rgb8(),
    );
    let moved = a
        .enumerate_pixels()
        .filter(|(x, y, p)| *x + 24 < a.width() && b.get_pixel(*x, *y) != *p)
        .count();
    assert!(
        moved < 100,
        "{moved} pixels changed: the list scrolled ({} and {})",
        before.display(),
        after.display()
    );

    // Enter opens the VM still selected.
    x.type_keys(&window, &["Return"]);
    wait_log(&log, &format!("vm {}: window opened", order[VMS - 2]), 1);
}

/// The box of the selected row in a screenshot: the light, bluish pixels
/// of its tint (nothing else in the list is blue while no VM runs).
fn selected_row_box(shot: &Path) -> Option<(u32, u32, u32, u32)> {
    let img = image::open(shot).unwrap().to_rgb8();
    let (mut x0, mut y0, mut x1, mut y1, mut n) = (u32::MAX, u32::MAX, 0, 0, 0u32);
    for (x, y, p) in img.enumerate_pixels() {
        let [r, g, b] = p.0.map(u16::from);
        if y > 60 && r > 180 && b > 235 && b > r + 12 && b > g + 4 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            n += 1;
        }
    }
    (n > 1000).then_some((x0, y0, x1, y1))
}

fn pointer(x: &Xvfb, window: &str, at: (u32, u32), clicks: &[&str]) {
    let ok = std::process::Command::new("xdotool")
        .env("DISPLAY", &x.display)
        .args(["mousemove", "--sync", "--window", window])
        .args([at.0.to_string(), at.1.to_string()])
        .args(clicks)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "xdotool {clicks:?} failed");
}

#[test]
fn right_click_selects_the_row_under_the_pointer_and_double_click_opens_it() {
    let _one_at_a_time = serial();
    let session = Session::new();
    session.define(&domain("vm-a", None));
    session.define(&domain("vm-b", None));
    let x = Xvfb::start();
    let (_app, window, log) = start_app(&x, &session);
    wait_until("both VMs listed", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("connection vireo:///session: vm ")
            .count()
            >= 2
    });
    let order = listed_order(&log, 2);
    wait_log(&log, &format!("selected {}", order[0]), 1);

    // Find the selected (first) row once the window has laid out; the
    // second row is right under it, as tall.
    let shot = artifacts_dir().join("manager-pointer-before.png");
    let mut found = None;
    wait_until("the selected row drawn", || {
        x.screenshot(&window, &shot);
        found = selected_row_box(&shot);
        found.is_some()
    });
    let (x0, y0, x1, y1) = found.unwrap();
    let second = (x0.midpoint(x1), y1 + (y1 - y0) / 2 + 2);

    pointer(&x, &window, second, &["click", "3"]);
    wait_log(&log, &format!("selected {}", order[1]), 1);
    wait_log(&log, "context menu shown", 1);
    std::thread::sleep(Duration::from_secs(1));
    let menu = artifacts_dir().join("manager-pointer-menu.png");
    x.screenshot("root", &menu);
    let before = artifacts_dir().join("manager-pointer-before-root.png");
    x.type_keys(&window, &["Escape"]);
    std::thread::sleep(Duration::from_millis(500));
    x.screenshot("root", &before);
    let changed = pixels_changed(&before, &menu);
    assert!(
        changed > 5000,
        "the context menu did not show ({changed} pixels changed): {}",
        menu.display()
    );

    // A double click on the first row selects and opens it.
    pointer(
        &x,
        &window,
        (x0.midpoint(x1), y0.midpoint(y1)),
        &["click", "--repeat", "2", "--delay", "80", "1"],
    );
    wait_log(&log, &format!("selected {}", order[0]), 2);
    wait_log(&log, &format!("vm {}: window opened", order[0]), 1);
}
