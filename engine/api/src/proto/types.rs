//! What requests and responses carry: [`ApiError`] with its [`ErrorCode`],
//! domain states, rows and statistics, and pushed [`Event`]s.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
