//! The demo guest (`tests/guests/demo.c`) as tests look for it: its test
//! card's colour bars, and the guest running under QEMU with QEMU's own VNC
//! server, the reference our console is checked against.

use std::path::Path;

use crate::guest::{Flavor, build};
use crate::qemu::{Qemu, QemuBuilder, qemu_binary};

/// The eight 75% colour bars across the top of the test card.
pub const BARS: [[u8; 3]; 8] = [
    [0xc0, 0xc0, 0xc0],
    [0xc0, 0xc0, 0x00],
    [0x00, 0xc0, 0xc0],
    [0x00, 0xc0, 0x00],
    [0xc0, 0x00, 0xc0],
    [0xc0, 0x00, 0x00],
    [0x00, 0x00, 0xc0],
    [0x00, 0x00, 0x00],
];

/// Whether RGB pixels (3 bytes each, e.g. a screenshot) contain every bar
/// colour, allowing for a little scaling blur.
pub fn shows_test_card(rgb: &[u8]) -> bool {
    BARS.iter().all(|bar| {
        rgb.chunks_exact(3)
            .any(|p| p.iter().zip(bar).all(|(&a, &b)| a.abs_diff(b) <= 8))
    })
}

/// The demo guest under QEMU (bochs-display, VNC on the unix socket
/// `vnc`), once it says `demo=ready`; `None`, with a message, when QEMU is
/// not installed.
pub fn qemu_with_vnc(vnc: &Path) -> Option<Qemu> {
    if qemu_binary().is_none() {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return None;
    }
    let mut qemu = QemuBuilder::new(&build("demo", Flavor::Pvh))
        .args([
            "-device".to_owned(),
            "bochs-display".to_owned(),
            "-vnc".to_owned(),
            format!("unix:{}", vnc.display()),
        ])
        .spawn();
    qemu.wait_for_line("demo=ready");
    Some(qemu)
}
