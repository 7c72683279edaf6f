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

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use vireo_api::proto::{ApiError, ErrorCode};

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

/// The newest bytes of a stream, with their offsets in it.
#[derive(Debug)]
pub struct Ring {
    buf: std::collections::VecDeque<u8>,
    /// The offset just past the newest byte (the bytes the stream had).
    end: u64,
    cap: usize,
}

/// What [`Ring::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Slice {
    /// The bytes from the asked offset (or the oldest one held).
    pub data: Vec<u8>,
    /// The offset after them.
    pub next: u64,
    /// How many bytes between the asked offset and the oldest held were
    /// gone already.
    pub skipped: u64,
}

impl Ring {
    /// An empty ring keeping `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buf: std::collections::VecDeque::with_capacity(cap),
            end: 0,
            cap,
        }
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        let data = &data[data.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(data);
    }

    /// The offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// The offset after the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Up to `max` bytes from offset `from`.
    pub fn read(&self, from: u64, max: usize) -> Slice {
        let start = self.start();
        let skipped = start.saturating_sub(from);
        let from = from.clamp(start, self.end);
        let offset = (from - start) as usize;
        let n = max.min(self.buf.len() - offset);
        Slice {
            data: self.buf.range(offset..offset + n).copied().collect(),
            next: from + n as u64,
            skipped,
        }
    }
}

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
    /// vireo-vmm's `serial.log`, read up to where the ring is; `None` once
    /// the domain has stopped.
    source: Option<File>,
    source_path: PathBuf,
    /// The domain's `<serial><log file>`.
    log: Option<(File, PathBuf)>,
    closed: bool,
    /// The exclusive session and how to end it.
    holder: Option<(u64, watch::Sender<bool>)>,
}

impl State {
    /// Reads the source to its end into the ring (and the log); whether
    /// anything arrived.
    fn pump(&mut self) -> bool {
        let Some(source) = self.source.as_mut() else {
            return false;
        };
        let mut grew = false;
        let mut buf = [0u8; 8192];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("cannot read '{}': {e}", self.source_path.display());
                    break;
                }
            };
            grew = true;
            self.ring.push(&buf[..n]);
            if let Some((file, path)) = self.log.as_mut()
                && let Err(e) = file.write_all(&buf[..n])
            {
                tracing::warn!("serial log '{}' no longer written: {e}", path.display());
                self.log = None;
            }
        }
        grew
    }
}

/// Opens (creating, mode 0600) the `<serial><log file>` of a domain
/// starting now: emptied unless `append`.
pub fn open_log(path: &Path, append: bool) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).mode(0o600);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path).map_err(|e| {
        format!(
            "serial log '{}': {}",
            path.display(),
            crate::vmm::io_reason(&e)
        )
    })
}

impl SerialConsole {
    /// The console of domain `name`, whose VMM writes `source` and serves
    /// `socket`; `log` is its `<serial><log>` file, opened. With `resume`
    /// (an engine re-attaching to a running VMM), the backlog is the
    /// newest [`BACKLOG`] bytes already in `source` and the log gets only
    /// what comes after; otherwise `source` is read from its start.
    pub fn new(
        name: &str,
        source: &Path,
        socket: &Path,
        log: Option<(File, PathBuf)>,
        resume: bool,
    ) -> Result<Arc<Self>, String> {
        let mut file =
            File::open(source).map_err(|e| format!("cannot read '{}': {e}", source.display()))?;
        let mut ring = Ring::new(BACKLOG);
        if resume {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let from = len.saturating_sub(BACKLOG as u64);
            file.seek(SeekFrom::Start(from))
                .map_err(|e| format!("cannot read '{}': {e}", source.display()))?;
            let mut tail = Vec::new();
            (&mut file)
                .take(BACKLOG as u64)
                .read_to_end(&mut tail)
                .map_err(|e| format!("cannot read '{}': {e}", source.display()))?;
            ring.push(&tail);
        }
        let console = Self::without_output(name, socket);
        {
            let mut state = console.lock();
            state.ring = ring;
            state.source = Some(file);
            state.source_path = source.to_owned();
            state.log = log;
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
                log: None,
                closed: false,
                holder: None,
            }),
            changed,
            socket: socket.to_owned(),
            input: tokio::sync::Mutex::new(None),
            next_session: AtomicU64::new(1),
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
        if let Some((file, path)) = state.log.take()
            && let Err(e) = file.sync_data()
        {
            tracing::warn!("serial log '{}': {e}", path.display());
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
            Some(displaced)
        } else {
            None
        };
        Ok(ConsoleSession {
            console: self.clone(),
            id,
            exclusive,
            pos: state.ring.start(),
            changed: self.changed.subscribe(),
            displaced,
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
            tokio::select! {
                r = self.changed.changed() => if r.is_err() { return Next::Ended },
                () = displaced => {}
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
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes_with_their_offsets() {
        let mut r = Ring::new(8);
        r.push(b"abcdef");
        assert_eq!((r.start(), r.end()), (0, 6));
        r.push(b"ghij");
        assert_eq!((r.start(), r.end()), (2, 10));
        assert_eq!(
            r.read(0, 100),
            Slice {
                data: b"cdefghij".to_vec(),
                next: 10,
                skipped: 2
            }
        );
        assert_eq!(r.read(5, 3).data, b"fgh");
        assert_eq!(r.read(10, 3).data, b"");
        // More than the capacity at once: only its tail stays.
        r.push(b"0123456789AB");
        assert_eq!((r.start(), r.end()), (14, 22));
        assert_eq!(r.read(14, 100).data, b"456789AB");
    }

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
}
