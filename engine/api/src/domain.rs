//! The domain model, read from and written to libvirt domain XML.
//!
//! This module covers the part of libvirt's schema that Vireo acts on. It is
//! deliberately lenient on input (unknown elements are skipped here; keeping
//! them verbatim for round trips is the daemon's job) and strict on values it
//! uses: sizes, counts and units are validated and errors name the element.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a domain XML document was refused.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The XML is malformed or does not match the schema.
    #[error("invalid domain XML: {0}")]
    Xml(#[from] quick_xml::DeError),
    /// The document could not be written back.
    #[error("cannot write domain XML: {0}")]
    Write(#[from] quick_xml::SeError),
    /// A size element uses a unit libvirt does not know.
    #[error("<{element}>: unknown unit '{unit}'")]
    Unit {
        /// The element carrying the unit.
        element: &'static str,
        /// The unit as written.
        unit: String,
    },
    /// A disk cannot be used as written.
    #[error("<disk> '{target}': {reason}")]
    Disk {
        /// The disk's `<target dev>`.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is out of range.
    #[error("<{element}>: {reason}")]
    Invalid {
        /// The element carrying the value.
        element: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A virtual machine definition (`<domain>`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename = "domain")]
pub struct Domain {
    /// The hypervisor type (`kvm`).
    #[serde(rename = "@type")]
    pub kind: String,
    /// The unique, human-readable name.
    pub name: String,
    /// The unique identifier; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// A free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Maximum guest memory.
    pub memory: Size,
    /// Guest memory at boot, at most `memory`.
    #[serde(
        rename = "currentMemory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_memory: Option<Size>,
    /// Virtual CPUs.
    pub vcpu: Vcpu,
    /// How the guest boots.
    pub os: Os,
    /// Attached devices.
    #[serde(default)]
    pub devices: Devices,
}

/// A size with libvirt's unit attribute (`<memory unit='MiB'>256</memory>`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Size {
    /// The unit as written; libvirt's default is KiB.
    #[serde(rename = "@unit", default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The number of units.
    #[serde(rename = "$text")]
    pub value: u64,
}

impl Size {
    /// A size in MiB, written as libvirt writes it back.
    pub fn mib(value: u64) -> Self {
        Self {
            unit: Some("MiB".to_owned()),
            value,
        }
    }

    /// The size in bytes, following libvirt's unit table (`k`/`KiB` = 1024,
    /// `KB` = 1000, and so on up to exbibytes).
    pub fn bytes(&self, element: &'static str) -> Result<u64, DomainError> {
        let unit = self.unit.as_deref().unwrap_or("KiB");
        let scale: u64 = match unit {
            "b" | "bytes" => 1,
            "KB" => 1_000,
            "k" | "K" | "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "M" | "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "G" | "GiB" => 1 << 30,
            "TB" => 1_000_000_000_000,
            "T" | "TiB" => 1 << 40,
            "PB" => 1_000_000_000_000_000,
            "P" | "PiB" => 1 << 50,
            "EB" => 1_000_000_000_000_000_000,
            "E" | "EiB" => 1 << 60,
            other => {
                return Err(DomainError::Unit {
                    element,
                    unit: other.to_owned(),
                });
            }
        };
        self.value
            .checked_mul(scale)
            .ok_or_else(|| DomainError::Invalid {
                element,
                reason: format!("{} {unit} does not fit in 64 bits", self.value),
            })
    }
}

/// `<vcpu placement='static'>2</vcpu>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Vcpu {
    /// libvirt's placement attribute, kept as written.
    #[serde(
        rename = "@placement",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub placement: Option<String>,
    /// The number of virtual CPUs.
    #[serde(rename = "$text")]
    pub count: u32,
}

/// `<os>`: the machine type and the boot source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Os {
    /// `<type arch='x86_64' machine='…'>hvm</type>`.
    #[serde(rename = "type")]
    pub os_type: OsType,
    /// Firmware image (`<loader>`), for firmware boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loader: Option<String>,
    /// Kernel for a direct boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initial ramdisk for a direct boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line for a direct boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// `<type arch='x86_64'>hvm</type>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OsType {
    /// Guest architecture.
    #[serde(rename = "@arch", default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Machine type, as libvirt names it (kept, not interpreted).
    #[serde(rename = "@machine", default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Always `hvm` for KVM guests.
    #[serde(rename = "$text")]
    pub kind: String,
}

impl Default for OsType {
    fn default() -> Self {
        Self {
            arch: Some("x86_64".to_owned()),
            machine: None,
            kind: "hvm".to_owned(),
        }
    }
}

/// `<devices>`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Devices {
    /// Disks and CD-ROMs.
    #[serde(rename = "disk", default)]
    pub disks: Vec<Disk>,
    /// Serial ports.
    #[serde(rename = "serial", default)]
    pub serials: Vec<Serial>,
    /// Remote displays.
    #[serde(rename = "graphics", default)]
    pub graphics: Vec<Graphics>,
}

/// `<disk type='file' device='disk'>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Disk {
    /// Backing kind: `file`, `block`, …
    #[serde(rename = "@type")]
    pub kind: String,
    /// `disk` or `cdrom`.
    #[serde(rename = "@device", default = "default_disk_device")]
    pub device: String,
    /// Image format and cache mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DiskDriver>,
    /// Where the data lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DiskSource>,
    /// How the guest sees it (required: a missing one is refused by
    /// validation, naming the disk's source).
    #[serde(default)]
    pub target: DiskTarget,
    /// `<readonly/>`: the guest may not write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<Flag>,
    /// `<serial>`: the ID the guest reads (virtio-blk's get-id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

fn default_disk_device() -> String {
    "disk".to_owned()
}

/// An element whose presence is the value (`<readonly/>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Flag {}

/// `<driver name='qemu' type='qcow2' cache='none' discard='unmap' queues='2'/>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DiskDriver {
    /// Driver name (libvirt writes `qemu`).
    #[serde(rename = "@name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image format.
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Cache mode.
    #[serde(rename = "@cache", default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// What guest discards do: `unmap` or `ignore` (libvirt's default).
    #[serde(rename = "@discard", default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<String>,
    /// virtio-blk request queues, 1 to [`MAX_DISK_QUEUES`] (kept as
    /// written; see [`Disk::queues`]).
    #[serde(rename = "@queues", default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<String>,
}

/// `<source file='…'/>`, `<source dev='…'/>` or
/// `<source pool='…' volume='…'/>`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct DiskSource {
    /// Image path for file disks.
    #[serde(rename = "@file", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Device path for block disks.
    #[serde(rename = "@dev", default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Storage pool of a volume disk.
    #[serde(rename = "@pool", default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Volume name (in `pool`) of a volume disk.
    #[serde(rename = "@volume", default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

/// `<target dev='vda' bus='virtio'/>`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct DiskTarget {
    /// Guest device name.
    #[serde(rename = "@dev", default)]
    pub dev: String,
    /// Bus type.
    #[serde(rename = "@bus", default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// Image formats a disk may name in `<driver type>`.
pub const DISK_FORMATS: &[&str] = &["raw", "qcow2"];
/// Cache modes a disk may name in `<driver cache>` (`default` is
/// `writeback`, as in QEMU).
pub const DISK_CACHE_MODES: &[&str] = &["default", "none", "writeback", "writethrough"];
/// The most virtio-blk queues a disk may ask for (vireo-vmm's limit).
pub const MAX_DISK_QUEUES: u16 = 16;
/// virtio-blk's ID field: at most 20 bytes.
pub const MAX_DISK_SERIAL: usize = 20;

impl Disk {
    /// The bus as written, or as libvirt infers it from the target name
    /// (`vd*` virtio, `sd*` scsi, `hd*` ide, `fd*` fdc, `xvd*` xen).
    pub fn bus(&self) -> &str {
        if let Some(bus) = &self.target.bus {
            return bus;
        }
        let dev = self.target.dev.as_str();
        if dev.starts_with("vd") {
            "virtio"
        } else if dev.starts_with("sd") {
            "scsi"
        } else if dev.starts_with("hd") {
            "ide"
        } else if dev.starts_with("fd") {
            "fdc"
        } else if dev.starts_with("xvd") {
            "xen"
        } else {
            "unknown"
        }
    }

    /// The host path: `<source file>` for file disks, `<source dev>` for
    /// block disks.
    pub fn source_path(&self) -> Option<&str> {
        let source = self.source.as_ref()?;
        match self.kind.as_str() {
            "file" => source.file.as_deref(),
            "block" => source.dev.as_deref(),
            _ => None,
        }
        .filter(|p| !p.is_empty())
    }

    /// `<driver queues>` when it is a number from 1 to [`MAX_DISK_QUEUES`].
    pub fn queues(&self) -> Option<u16> {
        self.driver
            .as_ref()?
            .queues
            .as_deref()?
            .trim()
            .parse()
            .ok()
            .filter(|q| (1..=MAX_DISK_QUEUES).contains(q))
    }

    /// The pool and volume of a `<disk type='volume'>`, which the engine
    /// resolves to the volume's file when the domain starts.
    pub fn volume(&self) -> Option<(&str, &str)> {
        let source = self.source.as_ref().filter(|_| self.kind == "volume")?;
        match (source.pool.as_deref(), source.volume.as_deref()) {
            (Some(pool), Some(volume)) if !pool.is_empty() && !volume.is_empty() => {
                Some((pool, volume))
            }
            _ => None,
        }
    }

    /// What `domblklist` shows as the source: the path, or the volume name.
    pub fn source_name(&self) -> Option<&str> {
        self.source_path().or_else(|| self.volume().map(|(_, v)| v))
    }

    /// Whether the guest sees the disk read-only (`<readonly/>`, and every
    /// CD-ROM).
    pub fn read_only(&self) -> bool {
        self.readonly.is_some() || self.device == "cdrom"
    }

    /// The image format (`<driver type>`); libvirt's default is `raw`: the
    /// header is never probed, so a guest cannot turn its raw disk into a
    /// qcow2 naming host files as backing.
    pub fn format(&self) -> &str {
        self.driver
            .as_ref()
            .and_then(|d| d.format.as_deref())
            .unwrap_or("raw")
    }

    /// Why vireo-vmm cannot attach this disk, as the XPath-style element
    /// path the import warning lists (`domain/devices/disk[target/@bus='sata']`),
    /// or `None` when it is attached as virtio-blk. Unattached disks are
    /// kept in the definition, never attached under another bus.
    pub fn unsupported(&self) -> Option<String> {
        let base = "domain/devices/disk";
        if !["file", "block", "volume"].contains(&self.kind.as_str()) {
            return Some(format!("{base}[@type='{}']", self.kind));
        }
        if self.device != "disk" && self.device != "cdrom" {
            return Some(format!("{base}[@device='{}']", self.device));
        }
        if self.bus() != "virtio" {
            return Some(format!("{base}[target/@bus='{}']", self.bus()));
        }
        if self.source_name().is_none() {
            return Some(format!("{base}[not(source)]"));
        }
        None
    }

    fn validate(&self) -> Result<(), DomainError> {
        let invalid = |reason: String| DomainError::Disk {
            target: self.target.dev.clone(),
            reason,
        };
        if self.target.dev.is_empty() {
            return Err(DomainError::Invalid {
                element: "disk",
                reason: format!(
                    "the disk {} has no <target dev='…'>",
                    self.source_name()
                        .map_or_else(|| "without a source".to_owned(), |s| format!("'{s}'"))
                ),
            });
        }
        if let Some(path) = self.source_path()
            && !path.starts_with('/')
        {
            return Err(invalid(format!("source '{path}' is not an absolute path")));
        }
        let format = self.format();
        if !DISK_FORMATS.contains(&format) {
            return Err(invalid(format!(
                "driver type '{format}' is not supported (raw or qcow2; convert other images \
                 with 'qemu-img convert -O qcow2')"
            )));
        }
        let Some(driver) = &self.driver else {
            return self.validate_serial();
        };
        if let Some(cache) = driver.cache.as_deref()
            && !DISK_CACHE_MODES.contains(&cache)
        {
            return Err(invalid(format!(
                "cache mode '{cache}' is not supported (none, writeback or writethrough)"
            )));
        }
        if let Some(discard) = driver.discard.as_deref()
            && discard != "unmap"
            && discard != "ignore"
        {
            return Err(invalid(format!(
                "discard '{discard}' is not supported (unmap or ignore)"
            )));
        }
        if let Some(q) = &driver.queues
            && self.queues().is_none()
        {
            return Err(invalid(format!(
                "queues '{q}' is not a number from 1 to {MAX_DISK_QUEUES}"
            )));
        }
        self.validate_serial()
    }

    fn validate_serial(&self) -> Result<(), DomainError> {
        let Some(serial) = &self.serial else {
            return Ok(());
        };
        let reason = if serial.len() > MAX_DISK_SERIAL {
            format!(
                "serial '{serial}' is {} bytes; a virtio-blk ID holds at most {MAX_DISK_SERIAL}",
                serial.len()
            )
        } else if !serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_. +".contains(c))
        {
            format!("serial '{serial}' may only hold letters, digits, spaces and - _ . +")
        } else {
            return Ok(());
        };
        Err(DomainError::Disk {
            target: self.target.dev.clone(),
            reason,
        })
    }
}

/// `<serial type='file'><source path='…'/></serial>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Serial {
    /// `pty`, `file`, `unix`, …
    #[serde(rename = "@type")]
    pub kind: String,
    /// Where the output goes, for `file` and `unix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SerialSource>,
    /// `<log file='…' append='on|off'/>`: a copy of the port's output in a
    /// host file, as libvirt keeps it (the engine writes it for COM1, the
    /// first `<serial>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<SerialLog>,
}

/// `<log file='…' append='on|off'/>` of a serial port.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SerialLog {
    /// The host file (an absolute path).
    #[serde(rename = "@file", default)]
    pub file: String,
    /// `on` keeps what earlier runs wrote; `off` (libvirt's default)
    /// empties the file when the domain starts.
    #[serde(rename = "@append", default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
}

impl SerialLog {
    /// Whether a start appends to the file rather than emptying it.
    pub fn appends(&self) -> bool {
        self.append.as_deref() == Some("on")
    }

    fn validate(&self) -> Result<(), DomainError> {
        let invalid = |reason: String| DomainError::Invalid {
            element: "serial/log",
            reason,
        };
        if self.file.is_empty() {
            return Err(invalid("the log has no file='…'".into()));
        }
        if !self.file.starts_with('/') {
            return Err(invalid(format!(
                "file '{}' is not an absolute path",
                self.file
            )));
        }
        match self.append.as_deref() {
            None | Some("on") | Some("off") => Ok(()),
            Some(other) => Err(invalid(format!("append '{other}' is not 'on' or 'off'"))),
        }
    }
}

/// `<source path='…'/>` of a serial port.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SerialSource {
    /// The file or socket path.
    #[serde(rename = "@path", default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `<graphics type='vnc' …/>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Graphics {
    /// Only `vnc` is served.
    #[serde(rename = "@type")]
    pub kind: String,
    /// TCP port, or -1 with autoport.
    #[serde(rename = "@port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `yes` to pick a free port.
    #[serde(rename = "@autoport", default, skip_serializing_if = "Option::is_none")]
    pub autoport: Option<String>,
    /// Address to listen on.
    #[serde(rename = "@listen", default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Unix socket path instead of TCP.
    #[serde(rename = "@socket", default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// VNC password.
    #[serde(rename = "@passwd", default, skip_serializing_if = "Option::is_none")]
    pub passwd: Option<String>,
}

/// The deepest element nesting accepted in any XML document (domain, pool,
/// volume): libxml2's limit, so libvirt refuses deeper documents too.
pub const MAX_XML_DEPTH: usize = 256;

/// Reads `xml` into `T` with quick-xml's deserializer, after a linear
/// pass that refuses what the deserializer handles badly: nesting deeper
/// than [`MAX_XML_DEPTH`] and a `<!DOCTYPE>` after the root element starts
/// (ill-formed XML on which quick-xml 0.38 reaches an `unreachable!`). A
/// panic inside the deserializer all the same is an error, not a crash.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    xml: &str,
) -> Result<T, quick_xml::DeError> {
    use quick_xml::events::Event;
    let refuse = |offset: u64, what: &str| {
        let before = &xml.as_bytes()[..(offset as usize).min(xml.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        quick_xml::DeError::Custom(format!("line {line}: {what}"))
    };
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut seen_root = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                seen_root = true;
                if depth > MAX_XML_DEPTH {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    return Err(refuse(
                        reader.buffer_position(),
                        &format!("<{name}> is nested deeper than {MAX_XML_DEPTH} elements"),
                    ));
                }
            }
            Ok(Event::Empty(_)) => seen_root = true,
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::DocType(_)) if seen_root => {
                return Err(refuse(
                    reader.buffer_position(),
                    "a <!DOCTYPE> inside the document (it may only come before the root element)",
                ));
            }
            // Syntax errors are the deserializer's to report.
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    std::panic::catch_unwind(|| quick_xml::de::from_str(xml)).unwrap_or_else(|_| {
        Err(quick_xml::DeError::Custom(
            "the XML parser failed on this document".to_owned(),
        ))
    })
}

/// The largest guest Vireo will define: 16 TiB, as QEMU's x86 limit.
const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// The most vCPUs a domain may ask for (KVM's limit on these hosts).
pub const MAX_VCPUS: u32 = 1024;

impl Domain {
    /// Parses and validates a `<domain>` document.
    pub fn from_xml(xml: &str) -> Result<Self, DomainError> {
        let domain: Domain = deserialize(xml)?;
        domain.validate()?;
        Ok(domain)
    }

    /// Writes the domain as XML.
    pub fn to_xml(&self) -> Result<String, DomainError> {
        let mut out = String::new();
        let mut ser = quick_xml::se::Serializer::new(&mut out);
        ser.indent(' ', 2);
        self.serialize(ser)?;
        out.push('\n');
        Ok(out)
    }

    /// The `<log>` of COM1 (the first `<serial>`), which the engine
    /// writes while the domain runs.
    pub fn serial_log(&self) -> Option<&SerialLog> {
        self.devices.serials.first()?.log.as_ref()
    }

    /// Guest memory at boot, in bytes.
    pub fn memory_bytes(&self) -> Result<u64, DomainError> {
        match &self.current_memory {
            Some(cur) => cur.bytes("currentMemory"),
            None => self.memory.bytes("memory"),
        }
    }

    fn validate(&self) -> Result<(), DomainError> {
        let name = self.name.trim();
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(DomainError::Invalid {
                element: "name",
                reason: format!("'{}' is not a valid domain name", self.name),
            });
        }
        let max = self.memory.bytes("memory")?;
        if max == 0 || max > MAX_MEMORY_BYTES {
            return Err(DomainError::Invalid {
                element: "memory",
                reason: format!("{max} bytes is outside 1 byte … 16 TiB"),
            });
        }
        if let Some(cur) = &self.current_memory {
            let cur = cur.bytes("currentMemory")?;
            if cur > max {
                return Err(DomainError::Invalid {
                    element: "currentMemory",
                    reason: format!("{cur} bytes exceeds <memory> ({max} bytes)"),
                });
            }
        }
        if self.vcpu.count == 0 || self.vcpu.count > MAX_VCPUS {
            return Err(DomainError::Invalid {
                element: "vcpu",
                reason: format!("{} is outside 1 … {MAX_VCPUS}", self.vcpu.count),
            });
        }
        for log in self.devices.serials.iter().filter_map(|s| s.log.as_ref()) {
            log.validate()?;
        }
        let mut targets = std::collections::HashSet::new();
        for disk in &self.devices.disks {
            disk.validate()?;
            if !targets.insert(disk.target.dev.as_str()) {
                return Err(DomainError::Disk {
                    target: disk.target.dev.clone(),
                    reason: "two disks have this target".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
<domain type='kvm'>
  <name>demo</name>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>/path/vmlinuz</kernel>
      <initrd>/path/initrd</initrd><cmdline>console=ttyS0</cmdline></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/vireo/images/demo.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <serial type='file'><source path='/tmp/demo.log'/></serial>
    <graphics type='vnc' listen='127.0.0.1' port='5907' autoport='no'/>
    <video><model type='bochs'/></video>
    <input type='tablet' bus='virtio'/>
  </devices>
</domain>"#;

    #[test]
    fn parses_the_design_example() {
        let d = Domain::from_xml(DEMO).unwrap();
        assert_eq!(d.name, "demo");
        assert_eq!(d.memory_bytes().unwrap(), 256 << 20);
        assert_eq!(d.vcpu.count, 2);
        assert_eq!(d.os.kernel.as_deref(), Some("/path/vmlinuz"));
        assert_eq!(d.os.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(d.devices.disks.len(), 1);
        let disk = &d.devices.disks[0];
        assert_eq!(disk.target.dev, "vda");
        assert_eq!(
            disk.driver.as_ref().unwrap().format.as_deref(),
            Some("qcow2")
        );
        assert_eq!(d.devices.graphics[0].port, Some(5907));
        assert_eq!(
            d.devices.serials[0]
                .source
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/tmp/demo.log")
        );
    }

    #[test]
    fn round_trips_through_xml() {
        let d = Domain::from_xml(DEMO).unwrap();
        let again = Domain::from_xml(&d.to_xml().unwrap()).unwrap();
        assert_eq!(d, again);
    }

    #[test]
    fn memory_defaults_to_kib_and_knows_decimal_units() {
        let kib = Size {
            unit: None,
            value: 4,
        };
        assert_eq!(kib.bytes("memory").unwrap(), 4096);
        let gb = Size {
            unit: Some("GB".into()),
            value: 2,
        };
        assert_eq!(gb.bytes("memory").unwrap(), 2_000_000_000);
    }

    #[test]
    fn rejects_unknown_unit_naming_the_element() {
        let xml = DEMO.replace("unit='MiB'", "unit='furlongs'");
        let err = Domain::from_xml(&xml).unwrap_err().to_string();
        assert_eq!(err, "<memory>: unknown unit 'furlongs'");
    }

    #[test]
    fn rejects_zero_vcpus_and_oversized_memory() {
        let err = Domain::from_xml(&DEMO.replace("<vcpu>2", "<vcpu>0"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("<vcpu>:"), "{err}");
        let err = Domain::from_xml(&DEMO.replace(">256<", ">18446744073709551615<"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit in 64 bits"), "{err}");
    }

    #[test]
    fn rejects_malformed_xml() {
        assert!(matches!(
            Domain::from_xml("<domain type='kvm'><name>x</domain>"),
            Err(DomainError::Xml(_))
        ));
    }

    fn with_disks(disks: &str) -> String {
        format!(
            "<domain type='kvm'><name>d</name><memory>1024</memory><vcpu>1</vcpu>\
             <os><type>hvm</type></os><devices>{disks}</devices></domain>"
        )
    }

    #[test]
    fn disks_read_driver_readonly_serial_and_round_trip() {
        let xml = with_disks(
            "<disk type='file' device='disk'>\
               <driver name='qemu' type='qcow2' cache='none' discard='unmap' queues='4'/>\
               <source file='/i/a.qcow2'/><target dev='vda' bus='virtio'/>\
               <readonly/><serial>SN-1 x</serial></disk>\
             <disk type='block' device='cdrom'><source dev='/dev/sr0'/>\
               <target dev='vdb'/></disk>",
        );
        let d = Domain::from_xml(&xml).unwrap();
        let [a, b] = &d.devices.disks[..] else {
            panic!("{:?}", d.devices.disks)
        };
        let drv = a.driver.as_ref().unwrap();
        assert_eq!(
            (
                drv.cache.as_deref(),
                drv.discard.as_deref(),
                drv.queues.as_deref()
            ),
            (Some("none"), Some("unmap"), Some("4"))
        );
        assert_eq!(a.queues(), Some(4));
        assert_eq!(a.format(), "qcow2");
        assert!(a.read_only());
        assert_eq!(a.serial.as_deref(), Some("SN-1 x"));
        assert_eq!(a.source_path(), Some("/i/a.qcow2"));
        assert_eq!(a.unsupported(), None);
        // A block CD-ROM: bus inferred from 'vd', read-only, raw by default.
        assert_eq!(b.source_path(), Some("/dev/sr0"));
        assert_eq!(
            (b.bus(), b.format(), b.read_only()),
            ("virtio", "raw", true)
        );
        assert_eq!(b.unsupported(), None);
        let again = Domain::from_xml(&d.to_xml().unwrap()).unwrap();
        assert_eq!(again, d);
        assert!(d.to_xml().unwrap().contains("<readonly/>"));
    }

    #[test]
    fn disks_vireo_vmm_cannot_attach_are_named_by_path() {
        let xml = with_disks(
            "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>\
             <disk type='file' device='disk'><source file='/x'/><target dev='hda'/></disk>\
             <disk type='network' device='disk'><target dev='vdc' bus='virtio'/></disk>\
             <disk type='file' device='floppy'><source file='/f'/><target dev='fda'/></disk>\
             <disk type='file' device='cdrom'><target dev='vdd' bus='virtio'/></disk>\
             <disk type='volume'><source pool='p'/><target dev='vde'/></disk>\
             <disk type='volume'><source pool='p' volume='v.qcow2'/><target dev='vdf'/></disk>",
        );
        let d = Domain::from_xml(&xml).unwrap();
        let why: Vec<_> = d.devices.disks.iter().map(Disk::unsupported).collect();
        assert_eq!(
            why,
            [
                Some("domain/devices/disk[target/@bus='sata']".to_owned()),
                Some("domain/devices/disk[target/@bus='ide']".to_owned()),
                Some("domain/devices/disk[@type='network']".to_owned()),
                Some("domain/devices/disk[@device='floppy']".to_owned()),
                Some("domain/devices/disk[not(source)]".to_owned()),
                Some("domain/devices/disk[not(source)]".to_owned()),
                None,
            ]
        );
        let vol = &d.devices.disks[6];
        assert_eq!(vol.volume(), Some(("p", "v.qcow2")));
        assert_eq!(vol.source_name(), Some("v.qcow2"));
        assert_eq!(vol.source_path(), None);
    }

    #[test]
    fn bad_disk_drivers_are_refused_naming_the_disk() {
        let disk = |driver: &str| {
            let xml = with_disks(&format!(
                "<disk type='file'>{driver}<source file='/x'/><target dev='vdb'/></disk>"
            ));
            Domain::from_xml(&xml).unwrap_err().to_string()
        };
        assert_eq!(
            disk("<driver name='qemu' type='vmdk'/>"),
            "<disk> 'vdb': driver type 'vmdk' is not supported (raw or qcow2; convert other \
             images with 'qemu-img convert -O qcow2')"
        );
        assert!(
            disk("<driver type='raw' cache='directsync'/>").contains("cache mode 'directsync'")
        );
        assert!(disk("<driver discard='trim'/>").contains("discard 'trim'"));
        assert_eq!(
            disk("<driver queues='0'/>"),
            "<disk> 'vdb': queues '0' is not a number from 1 to 16"
        );
        assert!(disk("<driver queues='17'/>").contains("queues '17'"));
        assert!(disk("<driver queues='lots'/>").contains("queues 'lots'"));
        let untargeted = Domain::from_xml(&with_disks(
            "<disk type='file'><source file='/a.img'/></disk>",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            untargeted,
            "<disk>: the disk '/a.img' has no <target dev='…'>"
        );
        let long = Domain::from_xml(&with_disks(
            "<disk type='file'><source file='/x'/><target dev='vda'/>\
             <serial>123456789012345678901</serial></disk>",
        ))
        .unwrap_err()
        .to_string();
        assert!(long.contains("21 bytes"), "{long}");
        let twice = Domain::from_xml(&with_disks(
            "<disk type='file'><source file='/x'/><target dev='vda'/></disk>\
             <disk type='file'><source file='/y'/><target dev='vda'/></disk>",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(twice, "<disk> 'vda': two disks have this target");
        let relative = Domain::from_xml(&with_disks(
            "<disk type='file'><source file='a.img'/><target dev='vda'/></disk>",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            relative,
            "<disk> 'vda': source 'a.img' is not an absolute path"
        );
    }

    #[test]
    fn serial_log_is_read_and_checked() {
        let serial = |inner: &str| {
            Domain::from_xml(&with_disks(&format!(
                "<serial type='pty'><target port='0'/>{inner}</serial><serial type='pty'/>"
            )))
        };
        let d = serial("<log file='/var/log/c.log' append='on'/>").unwrap();
        let log = d.serial_log().unwrap();
        assert_eq!(log.file, "/var/log/c.log");
        assert!(log.appends());
        assert!(
            !serial("<log file='/c.log'/>")
                .unwrap()
                .serial_log()
                .unwrap()
                .appends()
        );
        assert!(serial("").unwrap().serial_log().is_none());
        let again = Domain::from_xml(&d.to_xml().unwrap()).unwrap();
        assert_eq!(again.serial_log(), d.serial_log());
        let err = |inner: &str| serial(inner).unwrap_err().to_string();
        assert_eq!(
            err("<log file='c.log'/>"),
            "<serial/log>: file 'c.log' is not an absolute path"
        );
        assert_eq!(
            err("<log file='/c.log' append='yes'/>"),
            "<serial/log>: append 'yes' is not 'on' or 'off'"
        );
        assert_eq!(err("<log/>"), "<serial/log>: the log has no file='…'");
    }
}
