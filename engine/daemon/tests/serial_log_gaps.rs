//! Where the engine's copies of a domain's output could have had gaps, end
//! to end with real `vireod`, `vireoctl` and `vireo-vmm`:
//!
//! - an engine started again while a domain runs appends to the
//!   `<serial><log>` what the guest printed while no engine ran (as far as
//!   the VMM's `serial.log` still holds it, never its punched zeros), and
//!   so does one that finds the VMM ended meanwhile;
//! - the VMM's own log, punched out past its cap, still explains the exit.
//!
//! The `spin every=1` guest prints ~25 KB/s of deterministic output, so
//! the `<log>` is checked byte for byte against what it printed.

mod spin;

use std::path::Path;
use std::process::Command;

use spin::{settled, size, spin_output, start_engine, start_logged_spin, wait_for_len};
use vireo_tests::engine::{Session, bin, guest, kvm_or_skip, serial, signal, wait_gone};

/// The engine is killed while the guest prints, and the guest prints on
/// for a while before an engine runs again: returns the `<log>`'s size
/// when the engine died and `serial.log`'s when the new one started.
fn restart_engine_later(s: &Session, log: &Path, file: &Path, meanwhile: u64) -> (u64, u64) {
    wait_for_len(log, 4096);
    s.kill_daemon();
    let logged = size(log);
    wait_for_len(file, size(file) + meanwhile);
    let printed = size(file);
    // vireoctl starts it again; it re-attaches to the running VMM.
    start_engine(s, &[]);
    assert_eq!(s.state("spin").split_whitespace().next(), Some("running"));
    (logged, printed)
}

#[test]
fn the_log_gets_what_the_guest_printed_while_no_engine_ran() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    start_engine(&s, &[]);
    let (log, file) = start_logged_spin(&s, "spin");
    let (logged, printed) = restart_engine_later(&s, &log, &file, 16 * 1024);
    assert!(logged + 16 * 1024 <= printed);
    wait_for_len(&file, printed + 8192);
    s.ok(&["destroy", "spin"]);

    let total = settled(|| size(&file)) as usize;
    let got = settled(|| std::fs::read(&log).unwrap());
    assert_eq!(got.len(), total, "the <log> has gaps or repeats");
    assert!(
        got == spin_output(total),
        "the <log> differs from what the guest printed"
    );
}

#[test]
fn the_log_gets_what_a_vmm_printed_before_it_ended_while_no_engine_ran() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    start_engine(&s, &[]);
    let (log, file) = start_logged_spin(&s, "spin");
    wait_for_len(&log, 4096);
    s.kill_daemon();
    wait_for_len(&file, size(&log) + 16 * 1024);
    // The engine's processes are gone: what is left is the VMM.
    let vmms = s.processes();
    assert_eq!(vmms.len(), 1, "{vmms:?}");
    signal(vmms[0], libc::SIGKILL);
    wait_gone(vmms[0]);
    let total = size(&file) as usize;

    start_engine(&s, &[]);
    assert_eq!(s.state("spin").split_whitespace().next(), Some("shut"));
    let got = settled(|| std::fs::read(&log).unwrap());
    assert_eq!(got.len(), total, "the <log> has gaps or repeats");
    assert!(
        got == spin_output(total),
        "the <log> differs from what the guest printed"
    );
}

#[test]
fn a_missed_span_the_vmm_punched_out_is_skipped_without_zeros() {
    if !kvm_or_skip() {
        return;
    }
    const CAP: u64 = 32 * 1024;
    const KEEP: u64 = 16 * 1024;
    let _serial = serial();
    let s = Session::new();
    start_engine(
        &s,
        &[
            ("VIREO_VMM_SERIAL_LOG_CAP", CAP.to_string()),
            ("VIREO_VMM_SERIAL_LOG_KEEP", KEEP.to_string()),
        ],
    );
    let (log, file) = start_logged_spin(&s, "spin");
    // Far enough that what was printed after the engine died is punched
    // out in part.
    let (logged, _) = restart_engine_later(&s, &log, &file, 3 * CAP);
    s.ok(&["destroy", "spin"]);

    let total = settled(|| size(&file)) as usize;
    let printed = spin_output(total);
    let got = settled(|| std::fs::read(&log).unwrap());
    assert!(!got.contains(&0), "the <log> has a hole's zeros");
    let head = got.iter().zip(&printed).take_while(|(a, b)| a == b).count();
    let tail = got.len() - head;
    assert!(
        head as u64 >= logged,
        "the <log> lost what it had ({head} of {logged} bytes)"
    );
    assert!(
        got[head..] == printed[total - tail..],
        "after {head} bytes, the <log> is not the output's tail"
    );
    // The intact part of the missed span is there: at least what the VMM
    // keeps.
    assert!(
        tail as u64 >= KEEP && head + tail < total,
        "{head} + {tail} of {total} bytes"
    );
}

#[test]
fn a_punched_vmm_log_still_explains_the_exit() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vmm_log = dir.path().join("vmm.log");
    // vireo-vmm at debug level logs each of portio's writes to port 0x80,
    // far past its (small) cap.
    let out = std::fs::File::create(&vmm_log).unwrap();
    let status = Command::new(bin("vireo-vmm"))
        .arg("--kernel")
        .arg(guest("portio"))
        .args(["--cmdline", "count=6000"])
        .args(["--trim-stderr", "--log-cap", "16384", "--log-keep", "8192"])
        .env("VIREO_LOG", "debug")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "isa-debug-exit 0");
    let text = std::fs::read(&vmm_log).unwrap();
    assert!(
        text.len() > 64 * 1024 && text[0] == 0,
        "the log was not punched ({} bytes)",
        text.len()
    );
    // With the status (the engine's own child) and without (re-attached).
    for status in [Some(status), None] {
        let meaning = vireod::vmm::exit_meaning(status, false, &vmm_log);
        assert_eq!(meaning.reason, "guest exited with code 0", "{status:?}");
        assert!(!meaning.crashed);
    }
    let last = vireod::vmm::last_line(&vmm_log).unwrap();
    assert!(
        last.ends_with("guest wrote 0x0 to isa-debug-exit"),
        "{last}"
    );
}
