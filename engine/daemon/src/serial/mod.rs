//! The serial console of each running domain: a bounded backlog of COM1's
//! output, the live stream after it, the libvirt-style `<log>` copy, and
//! who may type.
//!
//! vireo-vmm appends every byte COM1 prints to `serial.log` in the
//! domain's runtime directory, synchronously, from the first instruction
//! on. The engine follows that file for as long as the domain runs,
//! whether or not anyone is attached: the guest never waits for a reader,
//! and the engine keeps only the newest [`BACKLOG`] bytes in memory,
//! however much the guest prints.
//! Reading the file rather than the VMM's serial socket means nothing
//! printed before the engine connected is missed, and a restarted engine
//! finds its backlog again from the file's tail. A connection to the
//! serial socket only says when to read (see
//! [`SerialConsole::spawn_follower`]); inotify is not used, as closing an
//! inotify instance waits for an RCU grace period, which held the engine's
//! socket and lock for a while after it died.
//!
//! Every byte has an offset in one stream that starts when the domain
//! starts (a reset or reboot goes on in the same stream; a new start
//! begins a new one, so the backlog is cleared). A session begins at the
//! oldest offset the ring holds and reads forward, so the backlog and the
//! live output are one contiguous run: nothing is lost or repeated at the
//! boundary. Before a session starts, the engine reads the file to its end,
//! so the backlog holds everything printed before the attach. A session
//! too slow to keep up skips to the oldest byte still held.
//!
//! Input goes to the VMM's serial socket, on one connection per domain
//! whose receive side is shut (its output is the file's).
//!
//! While an exclusive session (`vireoctl console`, as libvirt's) holds the
//! console, the watchers' input is dropped. A watcher that asks (`notify`,
//! the app's Serial page) is told so in its stream: [`Next::Held`] with the
//! holder's client name when a session takes the console (again on a
//! `force` takeover; at once when it attaches to a held console), and
//! `Next::Held(None)` when the session ends.
//!
//! The VMM keeps the file's allocation bounded by punching out its old
//! part (all but the newest 1 MiB or more; vireo-vmm's `SERIAL_FILE_KEEP`)
//! without moving any offset. The engine never needs older bytes: it
//! follows the file closely, and after a restart it rebuilds its
//! [`BACKLOG`] from the newest 64 KiB. Should it fall far behind all the
//! same (stopped, starved), what it has not read yet may have become a
//! hole, which reads as zeros: each read holds a lock the VMM's punch
//! respects and reads only up to the next hole (`source`), and a hole is
//! skipped to the next data, the intact tail. Its zeros reach neither the
//! consoles nor the `<log>`, and no byte the engine read is lost to a punch.
//!
//! The `<log>` file is rotated as libvirt's virtlogd does with its default
//! `max_size` and `max_backups`: it never passes [`LOG_MAX_SIZE`] bytes
//! (cut after the last line end among the 80 bytes before the limit, else
//! at the limit); then FILE.1 becomes FILE.2, FILE.0 FILE.1, FILE FILE.0
//! (the oldest of [`LOG_MAX_BACKUPS`] backups is dropped) and a new FILE
//! is begun. `append='on'` goes on in the current FILE across starts;
//! `append='off'` removes FILE and its backups first, as virtlogd's
//! truncation does. How far into `serial.log` the `<log>` has got is kept
//! beside it (`serial.logged`), so an engine started again while the
//! domain runs first appends what the guest printed while no engine ran
//! (as far as `serial.log` still holds it).
//!
//! The parts: `ring` the backlog, `source` reading the VMM's file, `log`
//! the `<log>` file and its mark; here the console, its follower thread
//! and the sessions.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use vireo_api::proto::{ApiError, ErrorCode};

mod log;
mod ring;
mod source;
#[cfg(test)]
mod testing;

use log::LogMark;
pub use log::{LOG_MAX_BACKUPS, LOG_MAX_SIZE, RotatingLog, backup_path, open_log};
pub use ring::{Ring, Slice};
use source::{Chunk, read_chunk};

/// How many of the newest bytes of a domain's serial output the engine
/// keeps for a console that attaches later: 64 KiB, the size of QEMU's
/// `ringbuf` chardev by default (a few screens of a boot log).
pub const BACKLOG: usize = 64 * 1024;

/// The most a session gets in one message.
const CHUNK: usize = 16 * 1024;

/// How often the file is read while the VMM's serial socket is not
/// connected.
const POLL: Duration = Duration::from_millis(50);
/// How often it is read anyway.
const BACKSTOP: Duration = Duration::from_secs(1);
/// The shortest time between two reads of the file while output streams.
const BATCH: Duration = Duration::from_millis(10);

/// One running domain's serial console.
pub struct SerialConsole {
    name: String,
    state: Mutex<State>,
    /// Bumped whenever bytes arrive or the console closes.
    changed: watch::Sender<u64>,
    /// The VMM's serial socket, for input.
    socket: PathBuf,
    input: tokio::sync::Mutex<Option<tokio::net::UnixStream>>,
    next_session: AtomicU64,
    /// The exclusive session's client name, or `None`; set under the
    /// state's lock, so notices follow the holder changes in order.
    held: watch::Sender<Option<String>>,
}

impl std::fmt::Debug for SerialConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialConsole")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

struct State {
    ring: Ring,
    /// vireo-vmm's `serial.log`, read up to `pos`; `None` once the domain
    /// has stopped.
    source: Option<File>,
    source_path: PathBuf,
    /// The offset in `source` read next.
    pos: u64,
    /// The domain's `<serial><log file>`, and how far it has got (no mark
    /// when its file could not be opened).
    log: Option<(RotatingLog, Option<LogMark>)>,
    /// Bytes before this offset are not logged (an earlier engine did).
    log_from: u64,
    closed: bool,
    /// The exclusive session and how to end it.
    holder: Option<(u64, watch::Sender<bool>)>,
}

impl State {
    /// Reads the source to its end into the ring (and the log); whether
    /// anything arrived.
    fn pump(&mut self) -> bool {
        let Some(source) = self.source.take() else {
            return false;
        };
        let mut grew = false;
        let mut buf = [0u8; 8192];
        loop {
            let (n, next) = match read_chunk(&source, self.pos, &mut buf) {
                Ok(Chunk::End) => break,
                Ok(Chunk::Bytes(n)) => (n, None),
                Ok(Chunk::Gap { next }) => (0, Some(next)),
                Ok(Chunk::Overrun { bytes, next }) => {
                    tracing::warn!(
                        "'{}': the engine stalled while reading serial output and the VMM \
                         freed it meanwhile",
                        self.source_path.display()
                    );
                    (bytes, Some(next))
                }
                Err(e) => {
                    tracing::warn!("cannot read '{}': {e}", self.source_path.display());
                    break;
                }
            };
            grew |= n > 0;
            self.take(&buf[..n]);
            if let Some(next) = next {
                let gap = next.saturating_sub(self.pos);
                if gap == 0 {
                    // Nothing to skip after all: read on later.
                    break;
                }
                tracing::warn!(
                    "'{}': {gap} bytes of serial output were freed by the VMM before they \
                     were read; going on with the newest",
                    self.source_path.display()
                );
                grew = true;
                self.ring.skip(gap);
                self.pos = next;
                self.mark();
            }
        }
        self.source = Some(source);
        grew
    }

    /// Takes the guest's bytes at `pos` into the ring and the log.
    fn take(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let at = self.pos;
        self.pos += data.len() as u64;
        self.ring.push(data);
        let new = usize::try_from(self.log_from.saturating_sub(at))
            .map_or(&[][..], |old| data.get(old..).unwrap_or_default());
        if !new.is_empty()
            && let Some((log, _)) = self.log.as_mut()
            && let Err(e) = log.write(new)
        {
            tracing::warn!(
                "serial log '{}' no longer written: {e}",
                log.path().display()
            );
            self.log = None;
        }
        self.mark();
    }

    /// Records how far the log has got.
    fn mark(&mut self) {
        if let Some((_, Some(mark))) = self.log.as_ref()
            && let Err(e) = mark.set(self.pos.max(self.log_from))
        {
            tracing::warn!("'{}': {e}", LogMark::path(&self.source_path).display());
        }
    }
}

impl SerialConsole {
    /// The console of domain `name`, whose VMM writes `source` and serves
    /// `socket`; `log` is its `<serial><log>` file, opened. Without
    /// `resume`, `source` is read from its start. With `resume` (an engine
    /// re-attaching to a running VMM), the backlog is the newest
    /// [`BACKLOG`] bytes already in `source`, and the log gets what an
    /// earlier engine had not logged (as far as `source` still holds it;
    /// from the mark it left beside `source`), then what comes after.
    pub fn new(
        name: &str,
        source: &Path,
        socket: &Path,
        log: Option<(File, PathBuf)>,
        resume: bool,
    ) -> Result<Arc<Self>, String> {
        let file =
            File::open(source).map_err(|e| format!("cannot read '{}': {e}", source.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let log = match log {
            Some((file, path)) => {
                let log = RotatingLog::new(file, path.clone())
                    .map_err(|e| format!("serial log '{}': {e}", path.display()))?;
                let mark = if resume {
                    LogMark::open(source)
                } else {
                    LogMark::create(source)
                };
                // Without a mark the console and the `<log>` go on; only
                // an engine re-attaching later cannot tell what is logged.
                let mark = mark
                    .inspect_err(|e| {
                        tracing::warn!(
                            "'{}': {e}; serial output printed while no engine runs will not \
                             be logged",
                            LogMark::path(source).display()
                        );
                    })
                    .ok();
                Some((log, mark))
            }
            None => None,
        };
        let console = Self::without_output(name, socket);
        {
            let mut state = console.lock();
            if resume {
                // What was logged before (all there is, without a mark).
                let logged = log
                    .as_ref()
                    .and_then(|(_, mark)| mark.as_ref()?.get())
                    .filter(|&m| m <= len)
                    .unwrap_or(len);
                state.log_from = logged;
                state.pos = logged.min(len.saturating_sub(BACKLOG as u64));
            }
            state.source = Some(file);
            state.source_path = source.to_owned();
            state.log = log;
            if resume {
                state.pump();
            }
        }
        Ok(console)
    }

    /// A console whose output cannot be read (its file is gone): input
    /// only.
    pub fn without_output(name: &str, socket: &Path) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(Self {
            name: name.to_owned(),
            state: Mutex::new(State {
                ring: Ring::new(BACKLOG),
                source: None,
                source_path: PathBuf::new(),
                pos: 0,
                log: None,
                log_from: 0,
                closed: false,
                holder: None,
            }),
            changed,
            socket: socket.to_owned(),
            input: tokio::sync::Mutex::new(None),
            next_session: AtomicU64::new(1),
            held: watch::Sender::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what the VMM wrote and tells the sessions.
    fn pump(&self) {
        let mut state = self.lock();
        if state.pump() {
            self.changed.send_replace(state.ring.end());
        }
    }

    /// Follows the VMM's output until [`SerialConsole::close`], on a thread
    /// of its own. The VMM appends to the file before it copies the bytes
    /// to its serial socket's clients, so a connection to that socket is
    /// the doorbell: when it has bytes, the file has them too. Only the
    /// file is read for content (the socket's copy may drop bytes for a
    /// slow reader). Until the socket answers (the VMM binds it just after
    /// its control socket) and after it closes, the file is read every
    /// [`POLL`]. A guest printing on and on rings for every byte: the file
    /// is then read every [`BATCH`], and a blocking read (not the async
    /// reactor, whose edge-triggered wake-ups would come per byte) waits
    /// for the bell.
    pub fn spawn_follower(self: &Arc<Self>) {
        let console = self.clone();
        let spawned = std::thread::Builder::new()
            .name("serial-follower".into())
            .spawn(move || console.follow());
        if let Err(e) = spawned {
            tracing::error!("cannot follow the serial output of '{}': {e}", self.name);
        }
    }

    fn follow(&self) {
        use std::os::unix::net::UnixStream;
        let mut doorbell: Option<UnixStream> = None;
        // The socket closed: the VMM is ending.
        let mut ended = false;
        let mut scratch = vec![0u8; CHUNK];
        let mut last_pump: Option<std::time::Instant> = None;
        loop {
            if let Some(since) = last_pump.map(|t| t.elapsed())
                && since < BATCH
            {
                std::thread::sleep(BATCH - since);
            }
            last_pump = Some(std::time::Instant::now());
            self.pump();
            if self.lock().closed {
                return;
            }
            if doorbell.is_none() && !ended {
                doorbell = UnixStream::connect(&self.socket)
                    .and_then(|s| s.set_read_timeout(Some(BACKSTOP)).map(|()| s))
                    .ok();
            }
            let Some(bell) = doorbell.as_mut() else {
                std::thread::sleep(POLL);
                continue;
            };
            match bell.read(&mut scratch) {
                Ok(0) => {
                    // Poll until the engine closes the console.
                    doorbell = None;
                    ended = true;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    doorbell = None;
                    ended = true;
                }
            }
        }
    }

    /// The VMM has exited: reads its last output, ends the sessions (after
    /// they have read everything) and closes the log.
    pub fn close(&self) {
        let mut state = self.lock();
        state.pump();
        state.source = None;
        state.closed = true;
        if let Some((log, _)) = state.log.take()
            && let Err(e) = log.sync()
        {
            tracing::warn!("serial log '{}': {e}", log.path().display());
        }
        let end = state.ring.end();
        drop(state);
        self.changed.send_replace(end);
    }

    /// Starts a session at the oldest byte held. `exclusive` asks for the
    /// console's one interactive session (refused while another holds it
    /// unless `force`, which ends that one).
    pub fn attach(
        self: &Arc<Self>,
        exclusive: bool,
        force: bool,
    ) -> Result<ConsoleSession, ApiError> {
        self.attach_as(exclusive, force, false, "")
    }

    /// [`SerialConsole::attach`] for the client named `client`; a watcher
    /// (not `exclusive`) with `notify` also reads [`Next::Held`] notices.
    pub fn attach_as(
        self: &Arc<Self>,
        exclusive: bool,
        force: bool,
        notify: bool,
        client: &str,
    ) -> Result<ConsoleSession, ApiError> {
        let mut state = self.lock();
        if state.pump() {
            self.changed.send_replace(state.ring.end());
        }
        if state.closed {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "Requested operation is not valid: domain '{}' is not running",
                    self.name
                ),
            ));
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let displaced = if exclusive {
            if let Some((_, kick)) = &state.holder {
                if !force {
                    return Err(ApiError::new(
                        ErrorCode::InvalidState,
                        "operation failed: Active console session exists for this domain",
                    ));
                }
                kick.send_replace(true);
            }
            let (kick, displaced) = watch::channel(false);
            state.holder = Some((id, kick));
            self.held.send_replace(Some(client.to_owned()));
            Some(displaced)
        } else {
            None
        };
        let held = (notify && !exclusive).then(|| {
            let mut held = self.held.subscribe();
            if held.borrow().is_some() {
                // Already held: the watcher hears it first.
                held.mark_changed();
            }
            held
        });
        Ok(ConsoleSession {
            console: self.clone(),
            id,
            exclusive,
            pos: state.ring.start(),
            changed: self.changed.subscribe(),
            displaced,
            held,
        })
    }

    /// Sends `data` to the guest for session `id`, unless another session
    /// holds the console exclusively. Returns whether it was sent.
    async fn input(&self, id: u64, exclusive: bool, data: &[u8]) -> std::io::Result<bool> {
        let allowed = match &self.lock().holder {
            Some((holder, _)) => exclusive && *holder == id,
            None => !exclusive,
        };
        if !allowed {
            return Ok(false);
        }
        let mut input = self.input.lock().await;
        if input.is_none() {
            let stream = std::os::unix::net::UnixStream::connect(&self.socket)?;
            // The VMM's copy of the output on this connection is not
            // needed (the file has it): with the receive side shut, the
            // VMM stops sending it.
            stream.shutdown(std::net::Shutdown::Read)?;
            stream.set_nonblocking(true)?;
            *input = Some(tokio::net::UnixStream::from_std(stream)?);
        }
        let Some(stream) = input.as_mut() else {
            return Ok(false);
        };
        match stream.write_all(data).await {
            Ok(()) => Ok(true),
            Err(e) => {
                *input = None;
                Err(e)
            }
        }
    }
}

/// What a session reads next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Output, in order.
    Output(Vec<u8>),
    /// The domain stopped and everything was read.
    Ended,
    /// Another session took the console (`force`).
    Displaced,
    /// (Watchers with `notify`.) An exclusive session, of the client
    /// named, now holds the console; `None`: it ended.
    Held(Option<String>),
}

/// One client's view of a console, from the oldest byte held on.
#[derive(Debug)]
pub struct ConsoleSession {
    console: Arc<SerialConsole>,
    id: u64,
    exclusive: bool,
    pos: u64,
    changed: watch::Receiver<u64>,
    displaced: Option<watch::Receiver<bool>>,
    /// A notified watcher's view of the holder.
    held: Option<watch::Receiver<Option<String>>>,
}

impl ConsoleSession {
    /// The next output, waiting for it.
    pub async fn next(&mut self) -> Next {
        loop {
            self.changed.borrow_and_update();
            if let Some(d) = self.displaced.as_mut()
                && *d.borrow_and_update()
            {
                return Next::Displaced;
            }
            if let Some(h) = self.held.as_mut()
                && h.has_changed().unwrap_or(false)
            {
                return Next::Held(h.borrow_and_update().clone());
            }
            {
                let state = self.console.lock();
                let slice = state.ring.read(self.pos, CHUNK);
                if slice.skipped > 0 {
                    tracing::debug!(
                        "a slow console of '{}' missed {} bytes",
                        self.console.name,
                        slice.skipped
                    );
                }
                self.pos = slice.next;
                if !slice.data.is_empty() {
                    return Next::Output(slice.data);
                }
                if state.closed {
                    return Next::Ended;
                }
            }
            let displaced = async {
                match self.displaced.as_mut() {
                    Some(d) => {
                        let _ = d.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            // (`changed()` marks what it saw as seen: the notice is made
            // here, not at the loop's top.)
            let held = async {
                if let Some(h) = self.held.as_mut()
                    && h.changed().await.is_ok()
                {
                    return h.borrow_and_update().clone();
                }
                std::future::pending().await
            };
            tokio::select! {
                r = self.changed.changed() => if r.is_err() { return Next::Ended },
                () = displaced => {}
                by = held => return Next::Held(by),
            }
        }
    }

    /// The handle that sends this session's input.
    pub fn input(&self) -> ConsoleInput {
        ConsoleInput {
            console: self.console.clone(),
            id: self.id,
            exclusive: self.exclusive,
        }
    }
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        let mut state = self.console.lock();
        if state.holder.as_ref().is_some_and(|(id, _)| *id == self.id) {
            state.holder = None;
            self.console.held.send_replace(None);
        }
    }
}

/// Sends a session's input to the guest.
#[derive(Debug, Clone)]
pub struct ConsoleInput {
    console: Arc<SerialConsole>,
    id: u64,
    exclusive: bool,
}

impl ConsoleInput {
    /// Sends `data` unless another session holds the console; errors are
    /// the VMM socket's.
    pub async fn send(&self, data: &[u8]) -> std::io::Result<bool> {
        self.console.input(self.id, self.exclusive, data).await
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::testing::{open_append, stream};
    use super::*;

    #[tokio::test]
    async fn sessions_read_backlog_then_live_output_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        let mut vmm = File::create(&source).unwrap();
        vmm.write_all(b"before\n").unwrap();
        let log = dir.path().join("console.log");
        let console = SerialConsole::new(
            "d",
            &source,
            &dir.path().join("none.sock"),
            Some((open_log(&log, false).unwrap(), log.clone())),
            false,
        )
        .unwrap();
        console.spawn_follower();
        let mut first = console.attach(false, false).unwrap();
        assert_eq!(first.next().await, Next::Output(b"before\n".to_vec()));
        vmm.write_all(b"after\n").unwrap();
        assert_eq!(first.next().await, Next::Output(b"after\n".to_vec()));
        let mut second = console.attach(true, false).unwrap();
        assert_eq!(
            second.next().await,
            Next::Output(b"before\nafter\n".to_vec())
        );
        // One exclusive session: a second is refused, or takes over.
        let refused = console.attach(true, false).unwrap_err();
        assert!(refused.message.contains("Active console session exists"));
        let mut third = console.attach(true, true).unwrap();
        assert_eq!(second.next().await, Next::Displaced);
        vmm.write_all(b"end").unwrap();
        console.close();
        assert_eq!(
            third.next().await,
            Next::Output(b"before\nafter\nend".to_vec())
        );
        assert_eq!(third.next().await, Next::Ended);
        assert_eq!(first.next().await, Next::Output(b"end".to_vec()));
        assert_eq!(first.next().await, Next::Ended);
        assert_eq!(std::fs::read(&log).unwrap(), b"before\nafter\nend");
        assert!(console.attach(false, false).is_err());
    }

    /// What the VMM does to the file's old part.
    fn punch(file: &File, len: u64) {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on a descriptor `file` owns; plain integers.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                len as libc::off_t,
            )
        };
        assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
    }

    /// Reads a session until it has `n` bytes.
    async fn take(s: &mut ConsoleSession, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            match s.next().await {
                Next::Output(d) => got.extend(d),
                other => panic!("{other:?} after {} bytes", got.len()),
            }
        }
        got
    }

    #[tokio::test]
    async fn a_punched_out_part_is_skipped_never_shown_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        let mut vmm = open_append(&source);
        vmm.write_all(&stream(0..8192)).unwrap();
        let log = dir.path().join("console.log");
        let console = SerialConsole::new(
            "d",
            &source,
            &dir.path().join("none.sock"),
            Some((open_log(&log, false).unwrap(), log.clone())),
            false,
        )
        .unwrap();
        let mut early = console.attach(false, false).unwrap();
        assert_eq!(take(&mut early, 8192).await, stream(0..8192));

        // The engine falls behind; the VMM frees the first 48 KiB, past
        // what the engine read.
        vmm.write_all(&stream(8192..98304)).unwrap();
        punch(&vmm, 49152);
        let mut late = console.attach(false, false).unwrap();
        assert_eq!(take(&mut late, 49152).await, stream(49152..98304));
        assert_eq!(take(&mut early, 49152).await, stream(49152..98304));
        // More output runs on from there.
        vmm.write_all(&stream(98304..100000)).unwrap();
        console.close();
        assert_eq!(take(&mut late, 1696).await, stream(98304..100000));
        assert_eq!(late.next().await, Next::Ended);
        assert_eq!(
            std::fs::read(&log).unwrap(),
            [stream(0..8192), stream(49152..100000)].concat(),
            "the <log> has the bytes before and after the hole, and no zeros"
        );
    }

    #[tokio::test]
    async fn a_mark_that_cannot_be_kept_costs_only_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        let mut vmm = open_append(&source);
        vmm.write_all(&stream(0..100)).unwrap();
        // `serial.logged` cannot be opened (a directory in its place).
        std::fs::create_dir(LogMark::path(&source)).unwrap();
        let log = dir.path().join("console.log");
        for resume in [false, true] {
            let console = SerialConsole::new(
                "d",
                &source,
                &dir.path().join("none.sock"),
                Some((open_log(&log, false).unwrap(), log.clone())),
                resume,
            )
            .unwrap();
            assert!(console.lock().log.as_ref().unwrap().1.is_none());
            let mut s = console.attach(false, false).unwrap();
            assert_eq!(take(&mut s, 100).await, stream(0..100), "resume: {resume}");
            vmm.write_all(&stream(100..200)).unwrap();
            console.close();
            assert_eq!(
                take(&mut s, 100).await,
                stream(100..200),
                "resume: {resume}"
            );
            // Started: the <log> has everything; re-attached without a
            // mark: what comes after.
            let logged = if resume { 100..200 } else { 0..200 };
            assert_eq!(std::fs::read(&log).unwrap(), stream(logged));
            let mut f = std::fs::File::create(&source).unwrap();
            f.write_all(&stream(0..100)).unwrap();
            vmm = open_append(&source);
        }
    }

    #[tokio::test]
    async fn a_garbled_mark_on_resume_logs_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        let log = dir.path().join("console.log");
        std::fs::write(&source, stream(0..300)).unwrap();
        // A mark longer than its line, as a hand edit may leave it.
        let garbled = format!("{:020}\n{}\n", 100, "x".repeat(40));
        std::fs::write(LogMark::path(&source), &garbled).unwrap();
        let open = || {
            SerialConsole::new(
                "d",
                &source,
                &dir.path().join("none.sock"),
                Some((open_log(&log, true).unwrap(), log.clone())),
                true,
            )
            .unwrap()
        };
        // Read from its first line: what was printed after offset 100.
        open().close();
        assert_eq!(std::fs::read(&log).unwrap(), stream(100..300));
        // And rewritten in place: the next engine goes on from there.
        let mut vmm = open_append(&source);
        vmm.write_all(&stream(300..350)).unwrap();
        open().close();
        assert_eq!(std::fs::read(&log).unwrap(), stream(100..350));
    }

    #[tokio::test]
    async fn a_resumed_backlog_skips_a_hole_in_the_tail() {
        // (Only with a VMM keeping less than the backlog, as tests make it.)
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        std::fs::write(&source, stream(0..131072)).unwrap();
        punch(&File::options().write(true).open(&source).unwrap(), 98304);
        let console =
            SerialConsole::new("d", &source, &dir.path().join("s.sock"), None, true).unwrap();
        let mut s = console.attach(false, false).unwrap();
        assert_eq!(take(&mut s, 32768).await, stream(98304..131072));
        console.close();
        assert_eq!(s.next().await, Next::Ended);
    }

    #[tokio::test]
    async fn a_dropped_exclusive_session_frees_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        std::fs::write(&source, vec![b'x'; BACKLOG + 10]).unwrap();
        let console =
            SerialConsole::new("d", &source, &dir.path().join("s.sock"), None, true).unwrap();
        let mut s = console.attach(true, false).unwrap();
        // Resumed from a long file: the newest BACKLOG bytes.
        match s.next().await {
            Next::Output(d) => assert_eq!(d.len(), CHUNK),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.pos, CHUNK as u64);
        drop(s);
        console.attach(true, false).unwrap();
    }

    #[tokio::test]
    async fn notified_watchers_hear_of_each_holder_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("serial.log");
        std::fs::write(&source, b"").unwrap();
        let console =
            SerialConsole::new("d", &source, &dir.path().join("s.sock"), None, false).unwrap();
        let mut notified = console.attach_as(false, false, true, "app").unwrap();
        let mut plain = console.attach_as(false, false, false, "old").unwrap();
        let first = console.attach_as(true, false, false, "vireoctl 1").unwrap();
        assert_eq!(notified.next().await, Next::Held(Some("vireoctl 1".into())));
        // A watcher attaching to a held console hears it first.
        let mut late = console.attach_as(false, false, true, "late").unwrap();
        assert_eq!(late.next().await, Next::Held(Some("vireoctl 1".into())));
        // A takeover is a new holder; its end frees the console.
        let second = console.attach_as(true, true, false, "vireoctl 2").unwrap();
        assert_eq!(notified.next().await, Next::Held(Some("vireoctl 2".into())));
        // The displaced session's drop does not free it.
        drop(first);
        drop(second);
        assert_eq!(notified.next().await, Next::Held(None));
        // Changes a watcher has not read yet coalesce into the newest.
        assert_eq!(late.next().await, Next::Held(None));
        console.close();
        assert_eq!(notified.next().await, Next::Ended);
        // A watcher that did not ask hears nothing of it.
        assert_eq!(plain.next().await, Next::Ended);
    }
}
