//! What keeps a domain's serial output from filling the host, end to end:
//! real `vireod`, `vireoctl` and `vireo-vmm` with the `spin` guest printing
//! as fast as it can. vireo-vmm punches out the old part of its
//! `serial.log` (the engine's source, on the runtime dir's tmpfs), and the
//! engine rolls the `<serial><log>` file over as virtlogd does.
//!
//! The guest prints ~25 KB/s here, so the limits are made small for these
//! tests through their test-only environment variables (inherited by the
//! engine and the VMMs it starts): vireo-vmm's
//! `VIREO_VMM_SERIAL_LOG_CAP`/`_KEEP` and vireod's
//! `VIREO_SERIAL_LOG_MAX_SIZE`. The guest's output is deterministic, so
//! every stream is checked byte for byte against what it printed.

mod spin;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spin::{
    BOOT, logged, logged_spin, settled, spin_output, start, start_engine, start_logged_spin,
    wait_for_len,
};
use vireo_api::client::Client;
use vireo_api::proto::{Request, ServerMessage};
use vireo_tests::engine::{Session, kvm_or_skip, serial, signal};
use vireod::serial::{BACKLOG, LOG_MAX_BACKUPS, backup_path};

/// The VMM's limits in these tests: punch once 32 KiB are allocated,
/// keeping the newest 16 KiB.
const CAP: u64 = 32 * 1024;
const KEEP: u64 = 16 * 1024;
/// The `<log>` size limit in the rotation test.
const LOG_SIZE: u64 = 8 * 1024;

/// Starts the engine with the VMM's small [`CAP`] and [`KEEP`], then a
/// `spin every=1` domain `name` whose COM1 is logged (append off) to
/// `com1.log` in the session's directory; returns that `<log>` and the
/// VMM's `serial.log`.
fn start_capped_spin(s: &Session, name: &str) -> (PathBuf, PathBuf) {
    start_engine(
        s,
        &[
            ("VIREO_VMM_SERIAL_LOG_CAP", CAP.to_string()),
            ("VIREO_VMM_SERIAL_LOG_KEEP", KEEP.to_string()),
        ],
    );
    start_logged_spin(s, name)
}

/// An API connection with a console open on it.
fn open_console(s: &Session, domain: &str, exclusive: bool) -> Client<UnixStream, UnixStream> {
    let stream = UnixStream::connect(s.socket()).unwrap();
    // A guard against a hung test, not a timing assertion.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let reader = stream.try_clone().unwrap();
    let mut client = Client::handshake(reader, stream, "serial-limits", false).unwrap();
    client
        .call(Request::OpenConsole {
            domain: domain.into(),
            exclusive,
            force: false,
            notify: false,
        })
        .unwrap();
    client
}

/// Reads console output until there are at least `n` bytes.
fn read_console(c: &mut Client<UnixStream, UnixStream>, got: &mut Vec<u8>, n: usize) {
    let deadline = Instant::now() + BOOT;
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {} bytes came", got.len());
        match c.next_message().unwrap() {
            ServerMessage::ConsoleOutput { data } => got.extend(data),
            other => panic!("{other:?} after {} bytes", got.len()),
        }
    }
}

/// Waits until the file at `path` has at least `n` bytes, checking on the
/// way that no more than the cap (and the page being written) is
/// allocated once the VMM has passed it; returns the most seen allocated.
fn wait_for_size(path: &Path, n: u64) -> u64 {
    let deadline = Instant::now() + BOOT;
    let mut most = 0;
    loop {
        let meta = std::fs::metadata(path).unwrap();
        let allocated = meta.blocks() * 512;
        most = most.max(allocated);
        assert!(
            allocated <= CAP + 4096,
            "{allocated} bytes allocated for a {}-byte serial.log",
            meta.len()
        );
        if meta.len() >= n {
            return most;
        }
        assert!(Instant::now() < deadline, "the guest stopped printing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serial_file_stays_within_its_cap_while_consoles_and_the_log_get_every_byte() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let (log, file) = start_capped_spin(&s, "flood");

    // Far past the cap and the backlog: the size grows, the allocation
    // does not.
    let most = wait_for_size(&file, 3 * BACKLOG as u64 + 2 * CAP);
    assert!(most > KEEP, "nothing was ever allocated ({most} bytes)");
    s.ok(&["suspend", "flood"]);
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    let printed = spin_output(len);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), len, "the file's size is every byte printed");
    assert!(
        bytes[..len - CAP as usize].iter().all(|&b| b == 0),
        "the old part was not punched out"
    );
    assert!(
        bytes[len - KEEP as usize..] == printed[len - KEEP as usize..],
        "the newest {KEEP} bytes are not what the guest printed"
    );

    // A console attached now gets the newest BACKLOG bytes (four times
    // what the VMM's file still holds) and the live output after them.
    let mut c = open_console(&s, "flood", true);
    let mut got = Vec::new();
    read_console(&mut c, &mut got, BACKLOG);
    assert_eq!(got.len(), BACKLOG, "more than the backlog while paused");
    assert!(
        got == printed[len - BACKLOG..],
        "the backlog is not the newest {BACKLOG} bytes the guest printed"
    );
    s.ok(&["resume", "flood"]);
    read_console(&mut c, &mut got, BACKLOG + 20_000);
    let printed = spin_output(len - BACKLOG + got.len());
    assert!(
        got == printed[len - BACKLOG..],
        "backlog and live output differ from what the guest printed"
    );
    assert!(!got.contains(&0), "a console showed a hole's zeros");

    // The <log> has every byte, from the first on.
    s.ok(&["destroy", "flood"]);
    let total = settled(|| std::fs::read(&file).unwrap()).len();
    let logged = settled(|| std::fs::read(&log).unwrap());
    assert_eq!(logged.len(), total, "the <log> lost bytes");
    assert!(
        logged == spin_output(total),
        "the <log> differs from the output"
    );
}

#[test]
fn an_engine_that_fell_behind_skips_the_punched_part_without_showing_zeros() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let (log, file) = start_capped_spin(&s, "behind");
    wait_for_size(&file, 8 * 1024);

    // The engine stops while the guest prints on: its place in the file
    // is punched out under it.
    let pid = s.daemon_pid().expect("the engine's PID");
    let at_stop = std::fs::metadata(&file).unwrap().len();
    signal(pid, libc::SIGSTOP);
    let stopped = std::panic::catch_unwind(|| wait_for_size(&file, at_stop + 3 * CAP));
    signal(pid, libc::SIGCONT);
    stopped.unwrap();

    // A console after that shows the newest bytes, no zeros.
    s.ok(&["suspend", "behind"]);
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    let printed = spin_output(len);
    let mut c = open_console(&s, "behind", false);
    let mut got = Vec::new();
    // Everything it holds, which ends with the newest byte.
    let deadline = Instant::now() + BOOT;
    while got.len() < KEEP as usize || !printed.ends_with(&got) {
        assert!(
            Instant::now() < deadline && got.len() < BACKLOG,
            "the backlog is not the newest bytes the guest printed: {} bytes, zeros: {}",
            got.len(),
            got.contains(&0)
        );
        let want = got.len() + 1;
        read_console(&mut c, &mut got, want);
    }
    // (What the engine had read before the hole is gone from its backlog:
    // the backlog is what it read after it.)
    assert!(got.len() < BACKLOG, "the backlog reaches into the hole");
    assert!(
        got == printed[len - got.len()..],
        "the backlog is not the newest bytes the guest printed"
    );

    // The <log>: what the engine read before it stopped, then the tail
    // after the hole, nothing in between.
    s.ok(&["destroy", "behind"]);
    let total = settled(|| std::fs::read(&file).unwrap()).len();
    let printed = spin_output(total);
    let logged = settled(|| std::fs::read(&log).unwrap());
    assert!(!logged.contains(&0), "the <log> has a hole's zeros");
    let head = logged
        .iter()
        .zip(&printed)
        .take_while(|(a, b)| a == b)
        .count();
    let tail = logged.len() - head;
    assert!(
        head >= at_stop as usize / 2,
        "the <log> lost what came before the stop ({head} of {at_stop} bytes)"
    );
    assert!(
        logged[head..] == printed[total - tail..],
        "after {head} bytes, the <log> is not the output's tail"
    );
    assert!(
        tail >= KEEP as usize && head + tail < total,
        "no gap where the file was punched: {head} + {tail} of {total} bytes"
    );
}

#[test]
fn the_log_file_is_rolled_over_as_virtlogd_does() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    start_engine(&s, &[("VIREO_SERIAL_LOG_MAX_SIZE", LOG_SIZE.to_string())]);
    let log = s.dir.path().join("com1.log");
    // Oldest first: FILE.2, FILE.1, FILE.0, FILE.
    let files = || -> Vec<Vec<u8>> {
        (0..LOG_MAX_BACKUPS)
            .rev()
            .map(|i| backup_path(&log, i))
            .chain([log.clone()])
            .filter_map(|p| std::fs::read(p).ok())
            .collect()
    };
    let check = |what: &str, printed: &[u8]| {
        let got = settled(files);
        assert_eq!(got.len(), LOG_MAX_BACKUPS + 1, "{what}: files");
        assert!(
            !backup_path(&log, LOG_MAX_BACKUPS).exists(),
            "{what}: a 4th backup"
        );
        for (i, f) in got.iter().enumerate() {
            assert!(f.len() as u64 <= LOG_SIZE, "{what}: file {i} too long");
            if i < LOG_MAX_BACKUPS {
                assert!(
                    f.len() as u64 == LOG_SIZE
                        || (f.len() as u64 > LOG_SIZE - 80 && f.last() == Some(&b'\n')),
                    "{what}: file {i} was cut after {} bytes",
                    f.len()
                );
            }
        }
        let all = got.concat();
        assert!(
            all[..] == printed[printed.len() - all.len()..],
            "{what}: the files together are not the newest output"
        );
        assert!(all.len() as u64 > LOG_MAX_BACKUPS as u64 * (LOG_SIZE - 80));
    };
    let run = |name: &str| -> Vec<u8> {
        let (_, file) = start(&s, name);
        wait_for_len(&file, 6 * LOG_SIZE);
        s.ok(&["destroy", name]);
        let out = settled(|| std::fs::read(&file).unwrap());
        assert!(out == spin_output(out.len()));
        out
    };

    s.define(&logged_spin("rolled", &log, "off"));
    let first = run("rolled");
    check("append='off'", &first);

    // append='on': the next start goes on in the current file (checked
    // while the guest is paused, before its output rolls the first run's
    // away), and rolls over from there.
    s.define(&logged_spin("rolled", &log, "on"));
    let (uuid, file) = start(&s, "rolled");
    s.wait_serial(&uuid, "spinning", BOOT);
    s.ok(&["suspend", "rolled"]);
    let so_far = settled(|| std::fs::read(&file).unwrap());
    check(
        "append='on' after a start",
        &[first.clone(), so_far].concat(),
    );
    s.ok(&["resume", "rolled"]);
    wait_for_len(&file, 6 * LOG_SIZE);
    s.ok(&["destroy", "rolled"]);
    let second = settled(|| std::fs::read(&file).unwrap());
    assert!(second == spin_output(second.len()));
    check("append='on'", &[first, second].concat());

    // append='off' starts afresh: the backups go.
    s.define(&logged("quiet", "hello", "", &log, "off"));
    let (_, file) = start(&s, "quiet");
    s.wait_state("quiet", "shut off", BOOT);
    let out = settled(|| std::fs::read(&file).unwrap());
    assert!(String::from_utf8_lossy(&out).contains("hello from pvh"));
    assert_eq!(files(), [out], "append='off' kept old files");
}
