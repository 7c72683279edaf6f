//! The messages: client → engine ([`ClientMessage`], opening with
//! [`Hello`]), engine → client ([`ServerMessage`]), the [`Request`]s a call
//! carries and the [`Response`]s a reply carries.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage::{PoolSummary, StorageRequest, VolumeSummary};

use super::{ApiError, DomainInfo, DomainStats, DomainSummary, Event};

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
    /// [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION) of the client.
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
    /// Sent to a watcher that opened the console with `notify`: an
    /// exclusive session (`vireoctl console`) now holds the console, so this
    /// connection's input is dropped until [`ServerMessage::ConsoleReleased`].
    /// Sent again when another session takes it over with `force`, and
    /// first thing after the reply when the console is already held.
    ConsoleHeld {
        /// The holding client's name from its hello, e.g. `vireoctl 0.1.0`.
        by: String,
    },
    /// Sent to a watcher that opened the console with `notify`: the
    /// exclusive session ended; this connection's input reaches the guest
    /// again.
    ConsoleReleased,
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
    ///
    /// A watcher that says `notify` is told when an exclusive session
    /// starts and ends ([`ServerMessage::ConsoleHeld`],
    /// [`ServerMessage::ConsoleReleased`]). It is asked for because older
    /// clients treat a message type they do not know as a malformed frame
    /// and drop the connection; older engines ignore the field.
    OpenConsole {
        /// The domain.
        domain: String,
        /// Hold the console as its one interactive session.
        #[serde(default)]
        exclusive: bool,
        /// With `exclusive`: take the console from the session holding it.
        #[serde(default)]
        force: bool,
        /// Without `exclusive`: send the held/released notices.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        notify: bool,
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

/// The sentence a peer with another protocol version gets.
pub fn version_mismatch(ours: u32, theirs: u32) -> String {
    format!(
        "protocol version mismatch: the engine speaks Vireo protocol {ours}, the client speaks \
         {theirs}; install matching versions of the engine and its clients"
    )
}
