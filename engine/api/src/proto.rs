//! The engine protocol: typed messages in length-prefixed JSON frames.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes
//! of JSON. Frames larger than [`MAX_FRAME`] are refused before anything is
//! allocated, so a peer that sends garbage (say, `GET / HTTP/1.1`, which reads
//! as a 1.2 GB length) is disconnected at once.
//!
//! A connection opens with a handshake: the client sends
//! [`ClientMessage::Hello`] with its [`PROTOCOL_VERSION`]; the engine answers
//! [`ServerMessage::Welcome`] or [`ServerMessage::Rejected`] with a sentence
//! saying why. Then the client sends [`ClientMessage::Call`]s, each with an
//! id, and the engine answers each with a [`ServerMessage::Reply`] carrying
//! the same id (replies may come in any order). A client that asked for
//! events in its hello also receives [`ServerMessage::Event`]s at any time.
//! Serial console bytes travel as [`ClientMessage::ConsoleInput`] and
//! [`ServerMessage::ConsoleOutput`] on the same connection, so one byte
//! stream (a unix socket, an SSH channel) carries everything. Volume
//! bytes (`StreamData`) travel in binary frames (see [`STREAM_FRAME`]).

use std::any::{Any, TypeId};
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::storage::{PoolSummary, StorageRequest, VolumeSummary};

/// The protocol version this build speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u32 = 1;

/// The first payload byte of a volume stream chunk (which JSON text never
/// starts with): `[0][call id: u64 big-endian][bytes]`, the binary form of
/// [`ClientMessage::StreamData`] and [`ServerMessage::StreamData`], so
/// volume bytes cross without base64 or JSON.
pub const STREAM_FRAME: u8 = 0;

/// The largest frame payload either side accepts: 16 MiB (a screenshot of a
/// 4K screen as PNG fits; nothing else comes close).
pub const MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the connection was closed")]
    Closed,
    /// A frame announced a payload above [`MAX_FRAME`].
    #[error(
        "frame of {0} bytes exceeds the {MAX_FRAME}-byte limit (is the peer speaking the Vireo protocol?)"
    )]
    TooLarge(usize),
    /// The payload is not a message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

/// Client → engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first message of every connection.
    Hello(Hello),
    /// One request; answered by a reply with the same id.
    Call {
        /// Chosen by the client, echoed in the reply.
        id: u64,
        /// What to do.
        request: Request,
    },
    /// Bytes typed into the serial console opened on this connection.
    ConsoleInput {
        /// The bytes.
        #[serde(with = "crate::base64")]
        data: Vec<u8>,
    },
    /// A chunk of the upload started by call `id` (see [`crate::storage`]
    /// for the flow control), at most [`crate::storage::STREAM_CHUNK`] bytes.
    StreamData {
        /// The upload's call id.
        id: u64,
        /// The bytes.
        #[serde(with = "crate::base64")]
        data: Vec<u8>,
    },
    /// How many bytes of the download started by call `id` the client has
    /// received and consumed (flow control).
    StreamAck {
        /// The download's call id.
        id: u64,
        /// Bytes received so far.
        received: u64,
    },
}

/// The client's half of the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the client.
    pub protocol: u32,
    /// A name for logs, e.g. `vireoctl 0.1.0`.
    pub client: String,
    /// Whether the engine should push [`Event`]s to this connection.
    #[serde(default)]
    pub events: bool,
}

/// Engine → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The handshake succeeded.
    Welcome {
        /// The engine's protocol version.
        protocol: u32,
        /// The engine's version, e.g. `0.1.0`.
        engine: String,
    },
    /// The handshake failed; the engine closes the connection.
    Rejected {
        /// Why, as a sentence.
        reason: String,
    },
    /// The answer to the call with this id.
    Reply {
        /// The call's id.
        id: u64,
        /// The outcome.
        result: Result<Response, ApiError>,
    },
    /// Something happened on the engine.
    Event(Event),
    /// Bytes from the serial console opened on this connection.
    ConsoleOutput {
        /// The bytes.
        #[serde(with = "crate::base64")]
        data: Vec<u8>,
    },
    /// The serial console opened on this connection ended: the VM stopped,
    /// or another session took it over (`force`).
    ConsoleClosed,
    /// A chunk of the download started by call `id`.
    StreamData {
        /// The download's call id.
        id: u64,
        /// The bytes.
        #[serde(with = "crate::base64")]
        data: Vec<u8>,
    },
    /// How far the long operation started by call `id` has come; for an
    /// upload, `done` is also the flow-control credit (see
    /// [`crate::storage`]).
    Progress {
        /// The call's id.
        id: u64,
        /// Bytes done.
        done: u64,
        /// Bytes in total.
        total: u64,
    },
}

/// What a client can ask. Domains are named by name or UUID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The engine's version.
    Version,
    /// Domains: running ones, or all with `all`.
    ListDomains {
        /// Include inactive domains.
        all: bool,
    },
    /// Defines (or redefines) a domain from libvirt XML.
    Define {
        /// The document.
        xml: String,
    },
    /// Removes a domain's definition.
    Undefine {
        /// The domain.
        domain: String,
        /// Also delete the disk images it names.
        remove_all_storage: bool,
        /// Also delete these of its disk images (source paths or target
        /// names such as `vda`, as virsh's `--storage`); anything else is
        /// refused before anything is deleted.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove_storage: Vec<String>,
    },
    /// The domain's XML (the live one while it runs, unless `inactive`).
    DumpXml {
        /// The domain.
        domain: String,
        /// The persistent definition even while it runs.
        inactive: bool,
    },
    /// Name, UUID, state, resources.
    DomInfo {
        /// The domain.
        domain: String,
    },
    /// Boots a defined domain.
    Start {
        /// The domain.
        domain: String,
    },
    /// Presses the ACPI power button.
    Shutdown {
        /// The domain.
        domain: String,
    },
    /// Restarts the guest (a machine reset: vireo-vmm has no ACPI reboot).
    Reboot {
        /// The domain.
        domain: String,
    },
    /// Resets the machine at once.
    Reset {
        /// The domain.
        domain: String,
    },
    /// Stops the VM at once (power cord pulled).
    Destroy {
        /// The domain.
        domain: String,
    },
    /// Pauses the vCPUs.
    Suspend {
        /// The domain.
        domain: String,
    },
    /// Resumes paused vCPUs.
    Resume {
        /// The domain.
        domain: String,
    },
    /// Marks a domain to start when the engine starts (or unmarks it).
    SetAutostart {
        /// The domain.
        domain: String,
        /// On or off.
        enabled: bool,
    },
    /// CPU and memory statistics of a running domain.
    DomStats {
        /// The domain.
        domain: String,
    },
    /// The visible screen as PNG.
    Screenshot {
        /// The domain.
        domain: String,
    },
    /// Presses keys together (in order) and releases them (in reverse),
    /// as `virsh send-key` does: XT set-1 scancodes, `0xE0xx` for extended
    /// keys.
    SendKey {
        /// The domain.
        domain: String,
        /// The scancodes.
        keys: Vec<u16>,
    },
    /// Where the domain's VNC server listens.
    VncDisplay {
        /// The domain.
        domain: String,
    },
    /// Turns this connection into the domain's VNC stream: after the
    /// successful reply, the bytes that follow in both directions are RFB,
    /// unframed (as HTTP CONNECT does). Send it as the only call on a fresh
    /// connection (over SSH: a fresh channel); replies to calls still in
    /// flight are dropped.
    AttachVnc {
        /// The domain.
        domain: String,
    },
    /// Attaches this connection to the domain's serial console: output then
    /// arrives as [`ServerMessage::ConsoleOutput`], input goes as
    /// [`ClientMessage::ConsoleInput`]. The output starts with the backlog
    /// (the newest bytes COM1 printed since the domain started, up to the
    /// engine's backlog size) and goes on live, without a byte lost or
    /// repeated in between.
    ///
    /// Any number of connections may watch a console at once. One of them
    /// at a time may hold it `exclusive`ly, as libvirt's console session
    /// (`virsh console`): a second exclusive open is refused unless it
    /// says `force`, which ends the first (it gets
    /// [`ServerMessage::ConsoleClosed`]). While an exclusive session is
    /// open, only its input reaches the guest; the other watchers see the
    /// output and their input is dropped. Without one, every watcher's
    /// input reaches the guest.
    OpenConsole {
        /// The domain.
        domain: String,
        /// Hold the console as its one interactive session.
        #[serde(default)]
        exclusive: bool,
        /// With `exclusive`: take the console from the session holding it.
        #[serde(default)]
        force: bool,
    },
    /// Storage pools and volumes.
    Storage(StorageRequest),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Done, nothing to report.
    Done,
    /// The engine's version.
    Version {
        /// e.g. `0.1.0`.
        engine: String,
    },
    /// Domains, sorted running first (by id), then by name.
    Domains {
        /// One row each.
        domains: Vec<DomainSummary>,
    },
    /// A domain was defined.
    Defined {
        /// Its name.
        name: String,
        /// Its UUID (generated if the XML had none).
        uuid: Uuid,
        /// Elements kept in the stored XML that Vireo does not act on, by
        /// path (e.g. `domain/devices/interface`; a disk vireo-vmm cannot
        /// attach as `domain/devices/disk[target/@bus='sata']`).
        unsupported: Vec<String>,
    },
    /// A domain was undefined.
    Undefined {
        /// Disk images deleted with it.
        removed_storage: Vec<String>,
    },
    /// A domain's XML.
    Xml {
        /// The document.
        xml: String,
    },
    /// A domain's details.
    Info {
        /// The details.
        info: DomainInfo,
    },
    /// A running domain's statistics.
    Stats {
        /// The figures.
        stats: DomainStats,
    },
    /// A PNG image.
    Screenshot {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The PNG file.
        #[serde(with = "crate::base64")]
        png: Vec<u8>,
    },
    /// Where the VNC server listens.
    VncDisplay {
        /// The unix socket, once vireo-vmm serves VNC.
        socket: Option<String>,
    },
    /// Storage pools, sorted by name.
    Pools {
        /// One row each.
        pools: Vec<PoolSummary>,
    },
    /// One pool's details.
    Pool {
        /// The details.
        pool: PoolSummary,
    },
    /// Volumes of a pool, sorted by name.
    Volumes {
        /// One row each.
        volumes: Vec<VolumeSummary>,
    },
    /// One volume's details (after create, clone, resize, upload, info).
    Volume {
        /// The details.
        volume: VolumeSummary,
    },
    /// A download finished.
    Transferred {
        /// Bytes sent.
        bytes: u64,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The broad cause, for clients that react to it.
    pub code: ErrorCode,
    /// What went wrong, as a sentence.
    pub message: String,
}

impl ApiError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Broad error causes, as libvirt's error codes group them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No domain has that name or UUID.
    NoDomain,
    /// The XML is malformed or invalid.
    InvalidXml,
    /// The operation does not fit the domain's state.
    InvalidState,
    /// A name or UUID is already taken.
    Exists,
    /// The request is not supported.
    Unsupported,
    /// No storage pool has that name or UUID.
    NoStoragePool,
    /// No storage volume has that name or path.
    NoStorageVolume,
    /// An argument is invalid (a volume name, a size).
    InvalidArgument,
    /// The engine failed (I/O, the VMM).
    Internal,
}

/// A domain's state, as libvirt names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Running.
    Running,
    /// Paused by `suspend`.
    Paused,
    /// Not running.
    Shutoff,
    /// Stopped because the guest or the VMM crashed.
    Crashed,
}

impl DomainState {
    /// virsh's words: `running`, `paused`, `shut off`, `crashed`.
    pub fn as_virsh(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Shutoff => "shut off",
            Self::Crashed => "crashed",
        }
    }

    /// libvirt's `virDomainState` number, for `domstats`.
    pub fn number(self) -> u32 {
        match self {
            Self::Running => 1,
            Self::Paused => 3,
            Self::Shutoff => 5,
            Self::Crashed => 6,
        }
    }

    /// Whether a VMM process exists for the domain.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// One row of `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSummary {
    /// The id while running.
    pub id: Option<u32>,
    /// The name.
    pub name: String,
    /// The UUID.
    pub uuid: Uuid,
    /// The state.
    pub state: DomainState,
    /// Why it is in that state (`booted`, `destroyed`, `crashed: …`).
    pub reason: String,
}

/// `dominfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// The list row.
    pub summary: DomainSummary,
    /// `<os><type>` (`hvm`).
    pub os_type: String,
    /// vCPUs.
    pub vcpus: u32,
    /// `<memory>` in KiB.
    pub max_memory_kib: u64,
    /// Boot memory in KiB.
    pub memory_kib: u64,
    /// Total vCPU time while running, in nanoseconds.
    pub cpu_time_ns: Option<u64>,
    /// Whether a definition is stored.
    pub persistent: bool,
    /// Whether it starts with the engine.
    pub autostart: bool,
    /// vireo-vmm's PID while running.
    pub pid: Option<u32>,
}

/// Statistics of a running domain, from vireo-vmm's `stats` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStats {
    /// The domain's name.
    pub name: String,
    /// The domain's UUID.
    pub uuid: Uuid,
    /// The state when sampled.
    pub state: DomainState,
    /// One entry per vCPU.
    pub vcpus: Vec<VcpuStats>,
    /// Guest RAM in bytes.
    pub guest_memory_bytes: u64,
    /// Framebuffer VRAM in bytes.
    pub vram_bytes: u64,
    /// The VMM's resident memory in bytes.
    pub rss_bytes: Option<u64>,
    /// Milliseconds since the Unix epoch when sampled.
    pub timestamp_ms: u64,
    /// One entry per attached disk, in definition order (absent from an
    /// older engine).
    #[serde(default)]
    pub disks: Vec<DiskStats>,
}

impl DomainStats {
    /// Total vCPU time in nanoseconds.
    pub fn cpu_time_ns(&self) -> u64 {
        self.vcpus.iter().map(|v| v.cpu_time_ns).sum()
    }
}

/// One disk's I/O since the VM booted (virsh `domblkstat`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskStats {
    /// The target device, e.g. `vda`.
    pub target: String,
    /// Reads completed.
    pub rd_req: u64,
    /// Bytes read.
    pub rd_bytes: u64,
    /// Writes completed.
    pub wr_req: u64,
    /// Bytes written.
    pub wr_bytes: u64,
    /// Flushes completed.
    pub flush_req: u64,
    /// Failed requests.
    pub errs: u64,
}

/// One vCPU's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuStats {
    /// The vCPU index.
    pub id: u32,
    /// Time spent running guest code and handling its exits, in nanoseconds.
    pub cpu_time_ns: u64,
    /// VM exits.
    pub exits: u64,
}

/// Something that happened on the engine, pushed to subscribed clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A domain changed.
    Lifecycle {
        /// Its name.
        name: String,
        /// Its UUID.
        uuid: Uuid,
        /// What happened.
        change: Lifecycle,
    },
    /// Periodic statistics of every running domain.
    Stats {
        /// One entry per running domain.
        domains: Vec<DomainStats>,
    },
}

/// Lifecycle changes, as libvirt's domain events name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Defined or redefined.
    Defined,
    /// Undefined.
    Undefined,
    /// Started.
    Started,
    /// Paused.
    Paused,
    /// Resumed.
    Resumed,
    /// Stopped: powered off, destroyed or failed.
    Stopped {
        /// `shutdown`, `destroyed`, `failed: …`, …
        reason: String,
    },
    /// The guest or the VMM crashed.
    Crashed {
        /// What the VMM reported.
        reason: String,
    },
}

/// The sentence a peer with another protocol version gets.
pub fn version_mismatch(ours: u32, theirs: u32) -> String {
    format!(
        "protocol version mismatch: the engine speaks Vireo protocol {ours}, the client speaks \
         {theirs}; install matching versions of the engine and its clients"
    )
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME {
        Err(FrameError::TooLarge(len))
    } else {
        Ok(())
    }
}

/// The bytes in front of a stream chunk's data: the frame's length, then
/// [`STREAM_FRAME`] and the call id.
pub const STREAM_HEADER: usize = 4 + 1 + 8;

/// The header of a stream frame carrying `len` bytes of call `id`.
fn stream_header(id: u64, len: usize) -> Result<[u8; STREAM_HEADER], FrameError> {
    let payload = 1 + 8 + len;
    check_len(payload)?;
    let mut header = [0u8; STREAM_HEADER];
    header[..4].copy_from_slice(&(payload as u32).to_be_bytes());
    header[4] = STREAM_FRAME;
    header[5..].copy_from_slice(&id.to_be_bytes());
    Ok(header)
}

/// The call id and bytes of a message that is a stream chunk.
fn as_stream_chunk<T: Any>(msg: &T) -> Option<(u64, &[u8])> {
    let any = msg as &dyn Any;
    match (
        any.downcast_ref::<ClientMessage>(),
        any.downcast_ref::<ServerMessage>(),
    ) {
        (Some(ClientMessage::StreamData { id, data }), _)
        | (_, Some(ServerMessage::StreamData { id, data })) => Some((*id, data)),
        _ => None,
    }
}

fn malformed(why: &str) -> FrameError {
    FrameError::Malformed(serde::de::Error::custom(why))
}

/// A stream chunk as a message of type `T`.
fn stream_message<T: Any>(id: u64, data: Vec<u8>) -> Result<T, FrameError> {
    let msg: Box<dyn Any> = if TypeId::of::<T>() == TypeId::of::<ClientMessage>() {
        Box::new(ClientMessage::StreamData { id, data })
    } else if TypeId::of::<T>() == TypeId::of::<ServerMessage>() {
        Box::new(ServerMessage::StreamData { id, data })
    } else {
        return Err(malformed("a stream frame where a message was expected"));
    };
    msg.downcast::<T>()
        .map(|m| *m)
        .map_err(|_| malformed("a stream frame of the wrong type"))
}

/// Encodes one message as a frame (length prefix included).
pub fn encode<T: Serialize + Any>(msg: &T) -> Result<Vec<u8>, FrameError> {
    if let Some((id, data)) = as_stream_chunk(msg) {
        let mut buf = Vec::with_capacity(STREAM_HEADER + data.len());
        buf.extend_from_slice(&stream_header(id, data.len())?);
        buf.extend_from_slice(data);
        return Ok(buf);
    }
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    let len = buf.len() - 4;
    check_len(len)?;
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// The call id and bytes of a stream frame's payload, borrowed; `None` for
/// a message frame (see [`decode`]).
pub fn stream_chunk(payload: &[u8]) -> Result<Option<(u64, &[u8])>, FrameError> {
    let Some((&STREAM_FRAME, rest)) = payload.split_first() else {
        return Ok(None);
    };
    let Some((id, data)) = rest.split_first_chunk::<8>() else {
        return Err(malformed("a stream frame shorter than its header"));
    };
    Ok(Some((u64::from_be_bytes(*id), data)))
}

/// Decodes a frame's payload.
pub fn decode<T: DeserializeOwned + Any>(payload: &[u8]) -> Result<T, FrameError> {
    match stream_chunk(payload)? {
        Some((id, data)) => stream_message(id, data.to_vec()),
        None => Ok(serde_json::from_slice(payload)?),
    }
}

/// Steps the pair of buffers `a` then `b` past `n` written bytes.
fn advance<'a>(a: &mut &'a [u8], b: &mut &'a [u8], n: usize) {
    if n < a.len() {
        *a = &a[n..];
    } else {
        *b = &b[n - a.len()..];
        *a = &[];
    }
}

/// Writes a stream chunk straight from `data` (one vectored write; no
/// frame is built in memory).
pub fn write_stream_chunk<W: Write>(w: &mut W, id: u64, data: &[u8]) -> Result<(), FrameError> {
    let header = stream_header(id, data.len())?;
    let (mut a, mut b) = (&header[..], data);
    while !a.is_empty() {
        match w.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => advance(&mut a, &mut b, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    w.write_all(b)?;
    w.flush()?;
    Ok(())
}

/// Writes one message to a blocking stream.
pub fn write_message<W: Write, T: Serialize + Any>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    if let Some((id, data)) = as_stream_chunk(msg) {
        return write_stream_chunk(w, id, data);
    }
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one message from a blocking stream.
pub fn read_message<R: Read, T: DeserializeOwned + Any>(r: &mut R) -> Result<T, FrameError> {
    let mut payload = Vec::new();
    decode(read_frame(r, &mut payload)?)
}

/// Reads one frame from a blocking stream into `buf`, whose memory is
/// reused from frame to frame (it only grows, to the largest frame read),
/// and returns its payload: for [`stream_chunk`] or [`decode`]. Loops that
/// receive many stream chunks read them this way, without an allocation
/// per chunk.
pub fn read_frame<'a, R: Read>(r: &mut R, buf: &'a mut Vec<u8>) -> Result<&'a [u8], FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    }
    let len = u32::from_be_bytes(len) as usize;
    check_len(len)?;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    r.read_exact(&mut buf[..len])?;
    Ok(&buf[..len])
}

/// Writes one message to an async stream.
pub async fn write_message_async<W: AsyncWrite + Unpin, T: Serialize + Any>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    if let Some((id, data)) = as_stream_chunk(msg) {
        // Header and bytes go out as they are, not copied into one frame.
        let header = stream_header(id, data.len())?;
        let (mut a, mut b) = (&header[..], data);
        while !a.is_empty() {
            let n = w
                .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                .await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            advance(&mut a, &mut b, n);
        }
        w.write_all(b).await?;
    } else {
        w.write_all(&encode(msg)?).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Reads one message from an async stream.
pub async fn read_message_async<R: AsyncRead + Unpin, T: DeserializeOwned + Any>(
    r: &mut R,
) -> Result<T, FrameError> {
    read_message_async_with(r, Vec::new).await
}

/// Like [`read_message_async`], with the bytes of a stream chunk read
/// straight into the buffer `spare` returns (resized to fit; its memory is
/// reused when it has the capacity), so a receiver that recycles the
/// buffers of chunks it has consumed allocates nothing per chunk.
pub async fn read_message_async_with<R, T, F>(r: &mut R, spare: F) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned + Any,
    F: FnOnce() -> Vec<u8>,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => {
            other?;
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    check_len(len)?;
    // The stream frame's kind and call id, or the start of a message.
    let mut head = [0u8; STREAM_HEADER - 4];
    let head_len = len.min(head.len());
    r.read_exact(&mut head[..head_len]).await?;
    if head_len == head.len()
        && let Some((id, _)) = stream_chunk(&head)?
    {
        let mut data = spare();
        data.resize(len - head_len, 0);
        r.read_exact(&mut data).await?;
        return stream_message(id, data);
    }
    let mut payload = vec![0u8; len];
    payload[..head_len].copy_from_slice(&head[..head_len]);
    r.read_exact(&mut payload[head_len..]).await?;
    decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + Any + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode(&msg).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: T = read_message(&mut &frame[..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn open_console_from_an_older_client_is_a_watcher() {
        let old: Request =
            serde_json::from_str(r#"{"op":"open_console","domain":"demo"}"#).unwrap();
        assert_eq!(
            old,
            Request::OpenConsole {
                domain: "demo".into(),
                exclusive: false,
                force: false,
            }
        );
        round_trip(ClientMessage::Call {
            id: 3,
            request: Request::OpenConsole {
                domain: "demo".into(),
                exclusive: true,
                force: true,
            },
        });
    }

    #[test]
    fn every_message_kind_round_trips() {
        let uuid = Uuid::new_v4();
        round_trip(ClientMessage::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            client: "test".into(),
            events: true,
        }));
        round_trip(ClientMessage::Call {
            id: 7,
            request: Request::Undefine {
                domain: "demo".into(),
                remove_all_storage: true,
                remove_storage: vec!["vdb".into()],
            },
        });
        round_trip(ClientMessage::ConsoleInput {
            data: vec![0, 1, 0x1d, 255],
        });
        round_trip(ClientMessage::Call {
            id: 9,
            request: Request::Storage(StorageRequest::UploadVolume {
                pool: Some("default".into()),
                volume: "disk.qcow2".into(),
                length: 5,
            }),
        });
        round_trip(ClientMessage::Call {
            id: 10,
            request: Request::Storage(StorageRequest::ListPools { all: true }),
        });
        round_trip(ClientMessage::StreamData {
            id: 9,
            data: vec![1, 2, 3],
        });
        round_trip(ClientMessage::StreamAck { id: 9, received: 3 });
        round_trip(ServerMessage::Progress {
            id: 9,
            done: 1,
            total: 5,
        });
        round_trip(ServerMessage::StreamData {
            id: 9,
            data: vec![4, 5],
        });
        round_trip(ServerMessage::Reply {
            id: 10,
            result: Ok(Response::Volumes {
                volumes: vec![VolumeSummary {
                    name: "a".into(),
                    path: "/p/a".into(),
                    format: crate::storage::VolumeFormat::Raw,
                    capacity: 1,
                    allocation: 0,
                    backing: None,
                }],
            }),
        });
        round_trip(ServerMessage::Reply {
            id: 7,
            result: Ok(Response::Screenshot {
                width: 2,
                height: 1,
                png: (0..=255).collect(),
            }),
        });
        round_trip(ServerMessage::Reply {
            id: 8,
            result: Err(ApiError::new(ErrorCode::NoDomain, "no domain 'x'")),
        });
        round_trip(ServerMessage::Event(Event::Lifecycle {
            name: "demo".into(),
            uuid,
            change: Lifecycle::Crashed {
                reason: "triple fault".into(),
            },
        }));
        round_trip(ServerMessage::Event(Event::Stats {
            domains: vec![DomainStats {
                name: "demo".into(),
                uuid,
                state: DomainState::Running,
                vcpus: vec![VcpuStats {
                    id: 0,
                    cpu_time_ns: 5,
                    exits: 9,
                }],
                guest_memory_bytes: 1 << 20,
                vram_bytes: 4 << 20,
                rss_bytes: None,
                timestamp_ms: 1,
                disks: vec![DiskStats {
                    target: "vda".into(),
                    rd_req: 1,
                    rd_bytes: 512,
                    wr_req: 2,
                    wr_bytes: 1024,
                    flush_req: 3,
                    errs: 0,
                }],
            }],
        }));
    }

    #[tokio::test]
    async fn async_and_blocking_framing_agree() {
        let msg = ClientMessage::Call {
            id: 1,
            request: Request::ListDomains { all: true },
        };
        let mut buf = Vec::new();
        write_message_async(&mut buf, &msg).await.unwrap();
        assert_eq!(buf, encode(&msg).unwrap());
        let back: ClientMessage = read_message_async(&mut &buf[..]).await.unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn stream_chunks_travel_as_binary_frames() {
        let msg = ServerMessage::StreamData {
            id: 0x0102,
            data: vec![0xff, 0, 7],
        };
        let frame = encode(&msg).unwrap();
        assert_eq!(
            frame,
            [
                0,
                0,
                0,
                12,
                STREAM_FRAME,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                2,
                0xff,
                0,
                7
            ]
        );
        let back: ServerMessage = read_message(&mut &frame[..]).unwrap();
        assert_eq!(back, msg);
        // A client message of the same shape, too.
        let up: ClientMessage = decode(&frame[4..]).unwrap();
        assert_eq!(
            up,
            ClientMessage::StreamData {
                id: 0x0102,
                data: vec![0xff, 0, 7]
            }
        );
        // Truncated headers and unexpected places are malformed.
        let err = decode::<ServerMessage>(&[STREAM_FRAME, 1, 2]).unwrap_err();
        assert!(err.to_string().contains("shorter than its header"), "{err}");
        let err = decode::<serde_json::Value>(&frame[4..]).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    /// A writer that takes at most a few bytes per call, as a full socket
    /// buffer does.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stream_chunks_are_written_and_read_without_building_frames() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut out = Trickle(Vec::new());
        write_stream_chunk(&mut out, 9, &data).unwrap();
        let msg = ClientMessage::StreamData {
            id: 9,
            data: data.clone(),
        };
        assert_eq!(out.0, encode(&msg).unwrap());
        let mut again = Trickle(Vec::new());
        write_message(&mut again, &msg).unwrap();
        assert_eq!(again.0, out.0);

        // One buffer serves a chunk, a message, then a smaller chunk.
        let mut wire = out.0.clone();
        wire.extend(
            encode(&ClientMessage::StreamAck {
                id: 9,
                received: 100,
            })
            .unwrap(),
        );
        wire.extend(
            encode(&ClientMessage::StreamData {
                id: 9,
                data: vec![5; 3],
            })
            .unwrap(),
        );
        let mut r = &wire[..];
        let mut buf = Vec::new();
        let payload = read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(stream_chunk(payload).unwrap(), Some((9, &data[..])));
        let payload = read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(stream_chunk(payload).unwrap(), None);
        let ack: ClientMessage = decode(payload).unwrap();
        assert_eq!(
            ack,
            ClientMessage::StreamAck {
                id: 9,
                received: 100
            }
        );
        let payload = read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(stream_chunk(payload).unwrap(), Some((9, &[5u8, 5, 5][..])));
        assert_eq!(buf.len(), 1 + 8 + 100, "the buffer was reused, not regrown");
        assert!(matches!(
            read_frame(&mut r, &mut buf),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn async_reads_put_chunks_into_the_spare_buffer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let chunk = ServerMessage::StreamData {
                id: 3,
                data: vec![1, 2, 3, 4],
            };
            let (mut a, mut b) = tokio::io::duplex(7);
            let writer = async {
                write_message_async(&mut a, &chunk).await.unwrap();
                let reply = ServerMessage::Progress {
                    id: 3,
                    done: 4,
                    total: 4,
                };
                write_message_async(&mut a, &reply).await.unwrap();
                // A stream frame too short for its header.
                a.write_all(&[0, 0, 0, 3, STREAM_FRAME, 1, 2])
                    .await
                    .unwrap();
            };
            let reader = async {
                // A used buffer, longer than the chunk: cut to size.
                let spare = vec![9u8; 64];
                let memory = spare.as_ptr();
                let got: ServerMessage = read_message_async_with(&mut b, || spare).await.unwrap();
                assert_eq!(got, chunk);
                let ServerMessage::StreamData { data, .. } = got else {
                    unreachable!()
                };
                assert_eq!(
                    data.as_ptr(),
                    memory,
                    "the chunk landed in the spare buffer"
                );
                let got: ServerMessage = read_message_async_with(&mut b, || panic!("not a chunk"))
                    .await
                    .unwrap();
                assert!(matches!(got, ServerMessage::Progress { done: 4, .. }));
                let err = read_message_async::<_, ServerMessage>(&mut b)
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains("shorter than its header"), "{err}");
            };
            tokio::join!(writer, reader);
        });
    }

    #[test]
    fn oversized_frame_is_refused_before_reading_it() {
        // "GET " read as a length is 1.2 GB.
        let err = read_message::<_, ClientMessage>(&mut &b"GET / HTTP/1.1\r\n"[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(0x4745_5420)), "{err}");
        assert!(err.to_string().contains("exceeds the 16777216-byte limit"));
    }

    #[test]
    fn garbage_payload_is_a_malformed_message() {
        let mut frame = 5u32.to_be_bytes().to_vec();
        frame.extend_from_slice(b"{oops");
        let err = read_message::<_, ClientMessage>(&mut &frame[..]).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        // Valid JSON of the wrong shape is refused too.
        let frame = encode(&serde_json::json!({"type": "launch_missiles"})).unwrap();
        let err = read_message::<_, ClientMessage>(&mut &frame[..]).unwrap_err();
        assert!(err.to_string().starts_with("malformed message"), "{err}");
    }

    #[test]
    fn clean_close_and_truncated_frame_are_told_apart() {
        let err = read_message::<_, ClientMessage>(&mut &b""[..]).unwrap_err();
        assert!(matches!(err, FrameError::Closed));
        let mut frame = encode(&ClientMessage::ConsoleInput { data: vec![1] }).unwrap();
        frame.truncate(frame.len() - 2);
        let err = read_message::<_, ClientMessage>(&mut &frame[..]).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }

    #[test]
    fn states_use_virsh_words() {
        assert_eq!(DomainState::Shutoff.as_virsh(), "shut off");
        assert_eq!(DomainState::Running.number(), 1);
    }
}
