//! The serial console's backlog, live stream, sessions and `<log>` file,
//! end to end: real `vireod`, `vireoctl` and `vireo-vmm` with the `spin`,
//! `echo` and `hello` test guests. The VMM's own `serial.log` (every byte
//! COM1 printed, written by vireo-vmm) is the reference each stream is
//! checked against.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vireo_api::client::{Client, ClientError};
use vireo_api::proto::{Request, ServerMessage};
use vireo_tests::engine::{Session, bin, domain_xml, guest, kvm_or_skip, serial};
use vireod::serial::BACKLOG;

const BOOT: Duration = Duration::from_secs(60);

/// An API connection with a console open on it and what it received.
struct Console {
    client: Client<UnixStream, UnixStream>,
    got: Vec<u8>,
    closed: bool,
    /// The held/released notices (`notify`), each with how many output
    /// bytes had arrived before it.
    notices: Vec<(Option<String>, usize)>,
}

impl Console {
    fn open(s: &Session, domain: &str, exclusive: bool, force: bool) -> Result<Self, ClientError> {
        Self::open_with(s, domain, exclusive, force, false)
    }

    fn open_with(
        s: &Session,
        domain: &str,
        exclusive: bool,
        force: bool,
        notify: bool,
    ) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(s.socket()).unwrap();
        // A guard against a hung test, not a timing assertion.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let reader = stream.try_clone().unwrap();
        let mut client = Client::handshake(reader, stream, "serial-e2e", false).unwrap();
        client.call(Request::OpenConsole {
            domain: domain.into(),
            exclusive,
            force,
            notify,
        })?;
        Ok(Self {
            client,
            got: Vec::new(),
            closed: false,
            notices: Vec::new(),
        })
    }

    fn read_one(&mut self) {
        match self.client.next_message().unwrap() {
            ServerMessage::ConsoleOutput { data } => self.got.extend(data),
            ServerMessage::ConsoleClosed => self.closed = true,
            ServerMessage::ConsoleHeld { by } => self.notices.push((Some(by), self.got.len())),
            ServerMessage::ConsoleReleased => self.notices.push((None, self.got.len())),
            other => panic!("{other:?}"),
        }
    }

    /// Reads until `done(received)` or the console closes.
    fn read_until(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + BOOT;
        while !done(&self.got) {
            assert!(!self.closed, "the console closed before {what}");
            assert!(Instant::now() < deadline, "no {what} in time");
            self.read_one();
        }
    }

    /// Reads until `n` notices have arrived.
    fn read_notices(&mut self, n: usize) {
        let deadline = Instant::now() + BOOT;
        while self.notices.len() < n {
            assert!(!self.closed, "the console closed before notice {n}");
            assert!(
                Instant::now() < deadline,
                "no notice {n} in time; got {:?}",
                self.notices
            );
            self.read_one();
        }
    }

    /// Reads until the engine closes the console.
    fn read_to_close(&mut self) {
        let deadline = Instant::now() + BOOT;
        while !self.closed {
            assert!(Instant::now() < deadline, "the console did not close");
            self.read_one();
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(hay).contains(needle)
}

/// The `tick=N` numbers of the complete lines in `bytes` (the first line
/// may be cut by the backlog's start, the last by the read's end).
fn ticks(bytes: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop();
    lines
        .iter()
        .skip(1)
        .filter_map(|l| l.strip_prefix("tick="))
        .map(|n| n.parse().unwrap_or_else(|_| panic!("bad tick line {n:?}")))
        .collect()
}

/// Asserts the numbers run on without a gap or repeat.
fn assert_consecutive(ticks: &[u64], what: &str) {
    assert!(ticks.len() > 10, "{what}: only {} ticks", ticks.len());
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{what}: tick {} follows {}",
            pair[1],
            pair[0]
        );
    }
}

/// Where `got` (a stream starting inside the log) sits in `log`: the
/// offset of its first complete `tick=` line, checked byte for byte.
fn assert_is_a_run_of(log: &[u8], got: &[u8], what: &str) {
    let first_nl = got.iter().position(|&b| b == b'\n').unwrap();
    let rest = &got[first_nl..];
    let second_nl = rest[1..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let line = String::from_utf8_lossy(&rest[..=second_nl]).into_owned();
    let at = String::from_utf8_lossy(log)
        .find(&line)
        .unwrap_or_else(|| panic!("{what}: {line:?} is not in the VMM's log"));
    let start = at - first_nl;
    assert!(
        log.len() >= start + got.len() && log[start..start + got.len()] == *got,
        "{what}: the {} bytes received are not the VMM's bytes {start}..",
        got.len()
    );
}

/// `vireoctl console` with a stdin kept open, its stdout collected.
struct CtlConsole {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl CtlConsole {
    fn spawn(s: &Session, args: &[&str]) -> Self {
        let mut child = Command::new(bin("vireoctl"))
            .args(args)
            .env_remove("VIREO_DEFAULT_URI")
            .env("XDG_RUNTIME_DIR", &s.runtime)
            .env("XDG_DATA_HOME", &s.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self { child, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, want: &str) {
        let deadline = Instant::now() + BOOT;
        while !self.text().contains(want) {
            assert!(
                Instant::now() < deadline,
                "vireoctl console never showed {want:?}; it showed {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_text(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (boundedly) for the process to end; its status and stderr.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                return (status, err);
            }
            assert!(Instant::now() < deadline, "vireoctl console did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CtlConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_bytes(s: &Session, uuid: &uuid::Uuid) -> Vec<u8> {
    std::fs::read(s.serial_path(uuid)).unwrap_or_default()
}

#[test]
fn console_opened_after_boot_starts_with_what_the_guest_printed_before() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let uuid = s.boot("late", "spin", "every=100000", "tick=2", BOOT);

    // Through the API, as the app's Serial page opens it.
    let mut c = Console::open(&s, "late", false, false).unwrap();
    c.read_until("tick=3", |g| contains(g, "tick=3\n"));
    // Through vireoctl, as a user would.
    let ctl = CtlConsole::spawn(&s, &["console", "late"]);
    ctl.wait_for("tick=4\n");

    // Both start at the guest's first byte and run on from there.
    let log = log_bytes(&s, &uuid);
    assert!(
        log.starts_with(&c.got),
        "the console's bytes are not the start of the VMM's log:\n{:?}\n{:?}",
        c.text(),
        String::from_utf8_lossy(&log)
    );
    assert!(
        c.text()
            .starts_with("\nguest=spin\nevery=100000\nspinning\ntick=1\n")
    );
    let shown = ctl.text();
    let after_banner = shown
        .split_once("Escape character is ^] (Ctrl + ])\n")
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("no banner: {shown:?}"));
    assert!(
        String::from_utf8_lossy(&log_bytes(&s, &uuid)).starts_with(after_banner),
        "vireoctl console's output is not the start of the VMM's log: {after_banner:?}"
    );
    s.ok(&["destroy", "late"]);
    c.read_to_close();
    // Everything the guest printed, once, then the close.
    assert_eq!(c.got, log_bytes(&s, &uuid));
}

#[test]
fn backlog_keeps_the_newest_bytes_and_joins_the_live_stream_without_gap_or_repeat() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    s.define(&domain_xml("chatty", &guest("spin"), "every=1"));
    s.ok(&["start", "chatty"]);
    let uuid = s.info("chatty").summary.uuid;

    // Nobody attached: the guest prints on, far past the backlog's size.
    let deadline = Instant::now() + BOOT;
    while log_bytes(&s, &uuid).len() < 2 * BACKLOG + BACKLOG / 2 {
        assert!(Instant::now() < deadline, "the guest stopped printing");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.state("chatty"), "running (booted)");

    // Paused, the backlog is exactly the newest BACKLOG bytes.
    s.ok(&["suspend", "chatty"]);
    let paused = log_bytes(&s, &uuid);
    let mut c = Console::open(&s, "chatty", true, false).unwrap();
    c.read_until("the backlog", |g| g.len() >= BACKLOG);
    assert_eq!(c.got.len(), BACKLOG, "more than the backlog while paused");
    assert!(
        c.got == paused[paused.len() - BACKLOG..],
        "the backlog is not the newest {BACKLOG} bytes of the VMM's log"
    );

    // Resumed, the live output continues it byte for byte.
    s.ok(&["resume", "chatty"]);
    c.read_until("live output", |g| g.len() >= BACKLOG + 20_000);
    let log = log_bytes(&s, &uuid);
    let from = paused.len() - BACKLOG;
    assert!(
        log[from..from + c.got.len()] == *c.got,
        "backlog + live output differ from the VMM's log"
    );
    assert_consecutive(&ticks(&c.got), "paused attach");

    // Attaching while the guest prints as fast as it can: each console's
    // stream is one unbroken run of the guest's output.
    for round in 0..5 {
        let mut c = Console::open(&s, "chatty", false, false).unwrap();
        c.read_until("output", |g| g.len() >= BACKLOG + 8_000);
        let what = format!("attach {round}");
        assert_consecutive(&ticks(&c.got), &what);
        assert_is_a_run_of(&log_bytes(&s, &uuid), &c.got, &what);
        std::thread::sleep(Duration::from_millis(37 * round));
    }
    s.ok(&["destroy", "chatty"]);
}

#[test]
fn backlog_goes_on_across_a_reset_and_an_engine_restart_and_starts_afresh_with_the_next_start() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let uuid = s.boot("again", "spin", "every=100000", "tick=1", BOOT);
    s.ok(&["reset", "again"]);
    let deadline = Instant::now() + BOOT;
    while String::from_utf8_lossy(&log_bytes(&s, &uuid))
        .matches("guest=spin")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the guest did not boot again");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A console user sees the reset: both boots are in the backlog.
    let mut c = Console::open(&s, "again", false, false).unwrap();
    c.read_until("both boots", |g| {
        String::from_utf8_lossy(g).matches("guest=spin").count() == 2
    });
    assert!(log_bytes(&s, &uuid).starts_with(&c.got));

    // An engine that died and came back finds the backlog in the VMM's
    // file: still both boots, from the first byte.
    drop(c);
    s.kill_daemon();
    s.ok(&["list"]);
    let mut c = Console::open(&s, "again", false, false).unwrap();
    c.read_until("both boots", |g| {
        String::from_utf8_lossy(g).matches("guest=spin").count() == 2
    });
    assert!(c.text().starts_with("\nguest=spin\n"), "{}", c.text());
    assert!(log_bytes(&s, &uuid).starts_with(&c.got));

    // A new start is a new backlog.
    s.ok(&["destroy", "again"]);
    c.read_to_close();
    s.ok(&["start", "again"]);
    s.wait_serial(&uuid, "tick=1", BOOT);
    let mut c = Console::open(&s, "again", false, false).unwrap();
    c.read_until("tick=1", |g| contains(g, "tick=1\n"));
    assert_eq!(c.text().matches("guest=spin").count(), 1, "{}", c.text());
    assert!(c.text().starts_with("\nguest=spin\n"), "{}", c.text());
    s.ok(&["destroy", "again"]);
}

#[test]
fn one_console_session_as_virsh_force_takes_it_over_and_watchers_see_everything() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let uuid = s.boot("echo", "echo", "", "echo=ready", BOOT);

    // A watcher (what the app's VM window opens, asking for the held and
    // released notices), an older-style watcher that does not ask, and
    // virsh-style sessions.
    let mut watcher = Console::open_with(&s, "echo", false, false, true).unwrap();
    let mut plain = Console::open(&s, "echo", false, false).unwrap();
    let mut first = CtlConsole::spawn(&s, &["console", "echo"]);
    first.wait_for("echo=ready\n");
    assert!(
        first
            .text()
            .starts_with("Connected to domain 'echo'\nEscape character is ^] (Ctrl + ])\n"),
        "{:?}",
        first.text()
    );
    watcher.read_notices(1);
    let holder = watcher.notices[0].0.clone().unwrap();
    assert!(holder.starts_with("vireoctl "), "{holder:?}");

    // A second session is refused as libvirt refuses it: virsh prints its
    // banner before it asks for the console, then the error.
    let second = s.ctl(&["console", "echo"]);
    assert!(!second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "Connected to domain 'echo'\nEscape character is ^] (Ctrl + ])\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&second.stderr),
        "error: operation failed: Active console session exists for this domain\n"
    );

    // While a session holds the console, only its keys reach the guest.
    watcher.client.console_input(b"w").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    first.type_text("a");
    first.wait_for("A");
    watcher.read_until("the session's echo", |g| contains(g, "A"));
    assert!(
        !String::from_utf8_lossy(&log_bytes(&s, &uuid)).contains('W'),
        "the watcher's key reached the guest while a session held the console"
    );

    // --force ends the first session and takes over.
    let mut forced = CtlConsole::spawn(&s, &["console", "--force", "echo"]);
    forced.wait_for("echo=ready\nA");
    let (status, _) = first.wait_exit();
    assert!(status.success());
    // The takeover is a new holder, told before the new session's echo.
    watcher.read_notices(2);
    assert_eq!(watcher.notices[1].0.as_deref(), Some(holder.as_str()));
    forced.type_text("b");
    forced.wait_for("AB");
    watcher.read_until("the new session's echo", |g| contains(g, "AB"));
    assert!(!contains(&watcher.got[..watcher.notices[1].1], "B"));

    // Once the session is gone, watchers type again.
    let (status, _) = {
        drop(forced.child.stdin.take());
        forced.wait_exit()
    };
    assert!(status.success());
    // The end of the session is told, then watchers type again.
    watcher.read_notices(3);
    assert_eq!(watcher.notices[2].0, None);
    // (The engine notices the session's end a moment after vireoctl exits:
    // keys sent before that are dropped.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&log_bytes(&s, &uuid)).contains("ABC") {
        assert!(Instant::now() < deadline, "the watcher's key never arrived");
        watcher.client.console_input(b"c").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.read_until("the watcher's echo", |g| contains(g, "ABC"));
    watcher.client.console_input(b"q").unwrap();
    watcher.read_until("the end", |g| contains(g, "done\n"));
    watcher.read_to_close();
    // The watcher saw the whole run, from the backlog on, and exactly the
    // three notices, in order: held (before the first session's echo),
    // held again by the takeover, released.
    assert_eq!(watcher.got, log_bytes(&s, &uuid));
    let notices: Vec<Option<&str>> = watcher.notices.iter().map(|n| n.0.as_deref()).collect();
    assert_eq!(
        notices,
        [Some(holder.as_str()), Some(holder.as_str()), None]
    );
    assert!(!contains(&watcher.got[..watcher.notices[0].1], "A"));
    // The watcher that did not ask got no notice (read_one panics on any
    // other message) and the same bytes.
    plain.read_to_close();
    assert_eq!(plain.got, watcher.got);

    // A shut-off domain is refused before virsh's banner.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.info("echo").summary.state != vireo_api::proto::DomainState::Shutoff {
        assert!(Instant::now() < deadline, "the echo guest did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let off = s.ctl(&["console", "echo"]);
    assert!(!off.status.success());
    assert_eq!(String::from_utf8_lossy(&off.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&off.stderr),
        "error: The domain is not running\n"
    );
}

#[test]
fn serial_log_file_is_written_as_the_domain_xml_asks() {
    if !kvm_or_skip() {
        return;
    }
    let _serial = serial();
    let s = Session::new();
    let file = s.dir.path().join("com1.log");
    let xml = |append: &str| {
        domain_xml("logged", &guest("hello"), "").replace(
            "<graphics",
            &format!(
                "<serial type='pty'>\n      <log file='{}' append='{append}'/>\n      \
                 <target port='0'/>\n      <alias name='serial0'/>\n    </serial>\n    <graphics",
                file.display()
            ),
        )
    };
    s.define(&xml("off"));
    // The element and its neighbours are kept as written.
    let dumped = s.ok(&["dumpxml", "logged"]);
    assert!(dumped.contains(&format!("<log file='{}' append='off'/>", file.display())));
    assert!(dumped.contains("<alias name='serial0'/>"), "{dumped}");

    let run = |s: &Session| {
        s.ok(&["start", "logged"]);
        s.wait_state("logged", "shut off", BOOT);
    };
    run(&s);
    let uuid = s.info("logged").summary.uuid;
    let once = log_bytes(&s, &uuid);
    assert!(contains(&once, "hello from pvh"));
    assert_eq!(std::fs::read(&file).unwrap(), once);
    // append='off' starts the file again.
    run(&s);
    assert_eq!(std::fs::read(&file).unwrap(), once);
    // append='on' keeps the earlier runs.
    s.define(&xml("on"));
    run(&s);
    assert_eq!(std::fs::read(&file).unwrap(), [once.clone(), once].concat());

    // A log that cannot be written stops the start, naming the file.
    let bad = s.dir.path().join("missing-dir/com1.log");
    s.define(&xml("off").replace(&file.display().to_string(), &bad.display().to_string()));
    let out = s.ctl(&["start", "logged"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("serial log '{}'", bad.display())) && err.contains("No such file"),
        "{err}"
    );
    // Relative paths are refused when defined.
    let out = s.ctl_with_input(
        &["define", "-"],
        Some(&xml("off").replace(&file.display().to_string(), "com1.log")),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file 'com1.log' is not an absolute path")
    );
}
