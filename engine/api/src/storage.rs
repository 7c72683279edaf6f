//! Storage pools and volumes, as libvirt's storage API names them.
//!
//! A pool is a folder of image files (libvirt's `dir` pool), defined by
//! libvirt storage-pool XML (`<pool type='dir'>` with `<name>`, `<uuid>`
//! and `<target><path>`); a volume is one image file in it, named by its
//! plain file name. Requests travel inside [`crate::proto::Request::Storage`].
//!
//! `vol-upload` and `vol-download` stream the file's bytes through the API
//! connection in chunks of at most [`STREAM_CHUNK`] bytes, with flow control:
//!
//! - Upload: the client sends the call, then waits for the engine's first
//!   [`crate::proto::ServerMessage::Progress`] (`done` = 0) before sending
//!   [`crate::proto::ClientMessage::StreamData`]. Every progress message
//!   says how many bytes the engine has written to disk; the client never
//!   has more than [`STREAM_WINDOW`] bytes sent beyond that. An engine that
//!   receives more drops the connection, so a fast sender cannot grow the
//!   engine's memory.
//! - Download: the engine sends [`crate::proto::ServerMessage::StreamData`]
//!   and never more than [`STREAM_WINDOW`] bytes beyond what the client
//!   acknowledged with [`crate::proto::ClientMessage::StreamAck`].
//!
//! Both end with the call's reply. Other long operations (clone) send
//! progress messages for their call id too.

use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The largest chunk of a volume stream, sent in one binary frame (see
/// [`crate::proto::STREAM_FRAME`]).
pub const STREAM_CHUNK: usize = 1 << 20;

/// How many bytes of a stream may be in flight, unacknowledged: enough to
/// keep a fast link with some latency busy (an SSH connection at 1 Gbit/s
/// and 50 ms round trips holds about 6 MiB), while one stream never holds
/// more than this in the engine's memory.
pub const STREAM_WINDOW: u64 = 16 << 20;

/// A volume's on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeFormat {
    /// Plain bytes.
    Raw,
    /// QEMU copy-on-write.
    Qcow2,
    /// VMware's format (read only through conversion).
    Vmdk,
}

impl VolumeFormat {
    /// The name libvirt and qemu-img use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
        }
    }

    /// Parses `raw`, `qcow2` or `vmdk`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            "vmdk" => Ok(Self::Vmdk),
            other => Err(format!(
                "unsupported volume format '{other}' (raw, qcow2 or vmdk)"
            )),
        }
    }
}

/// What clients can ask about storage. Pools are named by name or UUID;
/// volumes by their name in `pool`, or, without a pool, by their path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StorageRequest {
    /// Pools: active ones, or all with `all`.
    ListPools {
        /// Include inactive pools.
        all: bool,
    },
    /// Defines (or redefines, while inactive) a pool from libvirt XML.
    DefinePool {
        /// The `<pool>` document.
        xml: String,
    },
    /// The pool's XML.
    PoolXml {
        /// The pool.
        pool: String,
    },
    /// The pool's details.
    PoolInfo {
        /// The pool.
        pool: String,
    },
    /// Creates the pool's folder (`pool-build`).
    BuildPool {
        /// The pool.
        pool: String,
    },
    /// Removes an inactive pool's folder, which must be empty
    /// (`pool-delete`).
    DeletePool {
        /// The pool.
        pool: String,
    },
    /// Activates a pool and scans its folder.
    StartPool {
        /// The pool.
        pool: String,
    },
    /// Deactivates a pool (its files stay).
    DestroyPool {
        /// The pool.
        pool: String,
    },
    /// Removes an inactive pool's definition (its files stay).
    UndefinePool {
        /// The pool.
        pool: String,
    },
    /// Scans the pool's folder again.
    RefreshPool {
        /// The pool.
        pool: String,
    },
    /// Marks a pool to start with the engine (or unmarks it).
    SetPoolAutostart {
        /// The pool.
        pool: String,
        /// On or off.
        enabled: bool,
    },
    /// The volumes of an active pool, by name.
    ListVolumes {
        /// The pool.
        pool: String,
    },
    /// Creates a volume (`vol-create-as`).
    CreateVolume {
        /// The pool.
        pool: String,
        /// The new volume's file name.
        name: String,
        /// Its capacity in bytes.
        capacity: u64,
        /// Bytes to allocate now (raw only; the rest stays sparse).
        allocation: Option<u64>,
        /// Raw or qcow2.
        format: VolumeFormat,
        /// A backing volume (qcow2 only): its name in the pool or its path.
        backing: Option<String>,
        /// The backing volume's format (probed when absent).
        backing_format: Option<VolumeFormat>,
    },
    /// A volume's details.
    VolumeInfo {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The volume.
        volume: String,
    },
    /// A volume's XML.
    VolumeXml {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The volume.
        volume: String,
    },
    /// Deletes a volume's file.
    DeleteVolume {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The volume.
        volume: String,
    },
    /// Changes a volume's capacity.
    ResizeVolume {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The volume.
        volume: String,
        /// The new capacity in bytes.
        capacity: u64,
        /// Allow a smaller capacity (data at the end is lost).
        shrink: bool,
    },
    /// Copies a volume into a new one in the same pool.
    CloneVolume {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The source volume.
        volume: String,
        /// The new volume's file name.
        new_name: String,
    },
    /// Creates a volume from another one, converted (`vol-create-from`;
    /// e.g. a vmdk imported as qcow2 or raw). Sends progress like clone.
    CreateVolumeFrom {
        /// The pool of the new volume.
        pool: String,
        /// The new volume's file name.
        name: String,
        /// Its capacity in bytes (`None`: the input volume's); never
        /// smaller than the input volume's.
        capacity: Option<u64>,
        /// Raw or qcow2.
        format: VolumeFormat,
        /// The input volume's pool (`None`: `pool`, or `input` is a path).
        input_pool: Option<String>,
        /// The input volume: its name or its path.
        input: String,
    },
    /// Replaces a volume's bytes with `length` bytes streamed by the client.
    UploadVolume {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The volume.
        volume: String,
        /// How many bytes follow.
        length: u64,
    },
    /// Streams a volume's bytes to the client.
    DownloadVolume {
        /// The pool (`None`: `volume` is a path).
        pool: Option<String>,
        /// The volume.
        volume: String,
    },
}

/// A pool, as `pool-list --details` and `pool-info` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSummary {
    /// The name.
    pub name: String,
    /// The UUID.
    pub uuid: Uuid,
    /// Whether it is started.
    pub active: bool,
    /// Whether it starts with the engine.
    pub autostart: bool,
    /// Whether a definition is stored (always, for now).
    pub persistent: bool,
    /// Its folder.
    pub path: String,
    /// The file system's size in bytes (active pools).
    pub capacity: Option<u64>,
    /// Bytes used on the file system (active pools).
    pub allocation: Option<u64>,
    /// Bytes free for unprivileged users (active pools).
    pub available: Option<u64>,
}

/// A volume, as `vol-list --details` and `vol-info` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSummary {
    /// The file name.
    pub name: String,
    /// The file's path (libvirt's key too).
    pub path: String,
    /// Its format.
    pub format: VolumeFormat,
    /// The size the guest sees.
    pub capacity: u64,
    /// Bytes the file occupies on the host.
    pub allocation: u64,
    /// The backing file named in its header.
    pub backing: Option<String>,
}

impl VolumeSummary {
    /// libvirt's `<volume>` XML.
    pub fn to_xml(&self) -> String {
        let mut xml = format!(
            "<volume type='file'>\n  <name>{}</name>\n  <key>{}</key>\n  \
             <capacity unit='bytes'>{}</capacity>\n  <allocation unit='bytes'>{}</allocation>\n  \
             <target>\n    <path>{}</path>\n    <format type='{}'/>\n  </target>\n",
            escape(&self.name),
            escape(&self.path),
            self.capacity,
            self.allocation,
            escape(&self.path),
            self.format.as_str()
        );
        if let Some(backing) = &self.backing {
            xml.push_str(&format!(
                "  <backingStore>\n    <path>{}</path>\n  </backingStore>\n",
                escape(backing)
            ));
        }
        xml.push_str("</volume>\n");
        xml
    }
}

/// A new volume as libvirt's `<volume>` XML describes it (`vol-create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDef {
    /// The file name.
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes to allocate now.
    pub allocation: Option<u64>,
    /// `<target><format type=…>` (raw when absent).
    pub format: VolumeFormat,
    /// `<backingStore><path>`.
    pub backing: Option<String>,
    /// `<backingStore><format type=…>`.
    pub backing_format: Option<VolumeFormat>,
}

#[derive(Deserialize)]
struct VolumeXmlDoc {
    name: Option<String>,
    capacity: Option<crate::domain::Size>,
    allocation: Option<crate::domain::Size>,
    target: Option<VolTargetXml>,
    #[serde(rename = "backingStore")]
    backing_store: Option<VolTargetXml>,
}

#[derive(Deserialize)]
struct VolTargetXml {
    path: Option<String>,
    format: Option<FormatXml>,
}

#[derive(Deserialize)]
struct FormatXml {
    #[serde(rename = "@type")]
    kind: String,
}

impl VolumeDef {
    /// Reads `<volume>` XML; sizes default to bytes, as in libvirt.
    pub fn parse(xml: &str) -> Result<Self, String> {
        Self::parse_with(xml, true).map(|(def, _)| def)
    }

    /// Reads `<volume>` XML for `vol-create-from`, where `<capacity>` may
    /// be left out (the input volume's capacity); returns the definition
    /// (capacity 0 when absent) and whether `<capacity>` was given.
    pub fn parse_for_copy(xml: &str) -> Result<(Self, bool), String> {
        Self::parse_with(xml, false)
    }

    fn parse_with(xml: &str, need_capacity: bool) -> Result<(Self, bool), String> {
        if !xml.contains("<volume") {
            return Err("invalid storage volume XML: the root element must be <volume>".into());
        }
        let doc: VolumeXmlDoc = crate::domain::deserialize(xml.trim_start_matches('\u{feff}'))
            .map_err(|e| format!("invalid storage volume XML: {e}"))?;
        let name = doc.name.map(|n| n.trim().to_owned()).unwrap_or_default();
        check_volume_name(&name)?;
        let bytes = |size: Option<crate::domain::Size>, element: &'static str| {
            size.map(|mut s| {
                s.unit = Some(s.unit.unwrap_or_else(|| "bytes".to_owned()));
                s.bytes(element)
                    .map_err(|e| format!("invalid storage volume XML: {e}"))
            })
            .transpose()
        };
        let capacity = bytes(doc.capacity, "capacity")?;
        if need_capacity && capacity.is_none() {
            return Err("invalid storage volume XML: <capacity> is missing".into());
        }
        let has_capacity = capacity.is_some();
        let capacity = capacity.unwrap_or(0);
        let allocation = bytes(doc.allocation, "allocation")?;
        let format = |t: Option<&VolTargetXml>| {
            t.and_then(|t| t.format.as_ref())
                .map(|f| VolumeFormat::parse(&f.kind))
                .transpose()
        };
        Ok((
            Self {
                name,
                capacity,
                allocation,
                format: format(doc.target.as_ref())?.unwrap_or(VolumeFormat::Raw),
                backing_format: format(doc.backing_store.as_ref())?,
                backing: doc.backing_store.and_then(|b| b.path),
            },
            has_capacity,
        ))
    }
}

/// A `dir` pool's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDef {
    /// The name.
    pub name: String,
    /// The UUID (generated when the XML has none).
    pub uuid: Option<Uuid>,
    /// The folder, absolute.
    pub path: String,
}

#[derive(Deserialize)]
struct PoolXmlDoc {
    #[serde(rename = "@type")]
    kind: Option<String>,
    name: Option<String>,
    uuid: Option<String>,
    target: Option<TargetXml>,
}

#[derive(Deserialize)]
struct TargetXml {
    path: Option<String>,
}

impl PoolDef {
    /// Reads `<pool type='dir'>` XML; other elements (capacity, source,
    /// permissions) are ignored.
    pub fn parse(xml: &str) -> Result<Self, String> {
        let root = xml
            .trim_start_matches('\u{feff}')
            .trim_start()
            .trim_start_matches(|c| c != '<');
        let doc: PoolXmlDoc = crate::domain::deserialize(root)
            .map_err(|e| format!("invalid storage pool XML: {e}"))?;
        if !xml.contains("<pool") {
            return Err("invalid storage pool XML: the root element must be <pool>".into());
        }
        match doc.kind.as_deref() {
            Some("dir") => {}
            Some(other) => {
                return Err(format!(
                    "unsupported storage pool type '{other}': only 'dir' pools are supported"
                ));
            }
            None => return Err("invalid storage pool XML: <pool> has no type attribute".into()),
        }
        let name = doc.name.map(|n| n.trim().to_owned()).unwrap_or_default();
        check_pool_name(&name)?;
        let uuid = match doc.uuid.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => Some(
                u.parse::<Uuid>()
                    .map_err(|e| format!("invalid storage pool XML: <uuid> '{u}': {e}"))?,
            ),
        };
        let path = doc
            .target
            .and_then(|t| t.path)
            .map(|p| p.trim().to_owned())
            .unwrap_or_default();
        if path.is_empty() {
            return Err("invalid storage pool XML: a dir pool needs <target><path>".into());
        }
        if !Path::new(&path).is_absolute() {
            return Err(format!(
                "invalid storage pool XML: the target path '{path}' must be absolute"
            ));
        }
        let path = normalize(&path);
        Ok(Self { name, uuid, path })
    }

    /// libvirt's XML, with the sizes of an active pool.
    pub fn to_xml(&self, sizes: Option<(u64, u64, u64)>) -> String {
        let mut xml = format!("<pool type='dir'>\n  <name>{}</name>\n", escape(&self.name));
        if let Some(uuid) = self.uuid {
            xml.push_str(&format!("  <uuid>{uuid}</uuid>\n"));
        }
        let (capacity, allocation, available) = sizes.unwrap_or((0, 0, 0));
        xml.push_str(&format!(
            "  <capacity unit='bytes'>{capacity}</capacity>\n  \
             <allocation unit='bytes'>{allocation}</allocation>\n  \
             <available unit='bytes'>{available}</available>\n  <source>\n  </source>\n  \
             <target>\n    <path>{}</path>\n  </target>\n</pool>\n",
            escape(&self.path)
        ));
        xml
    }
}

/// Removes `.`, empty and trailing components of an absolute path (`..`
/// stays: the path is used as given, like libvirt does).
fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// A pool name: not empty, no `/`, no control characters.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("invalid storage pool XML: <name> is missing or empty".into());
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "invalid pool name '{name}': a pool name cannot contain '/' or control characters"
        ));
    }
    Ok(())
}

/// A volume name is a plain file name in the pool's folder: not empty, no
/// `/`, not starting with `.` (so neither `..` nor hidden or temporary
/// files), no control characters, at most 255 bytes.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else if name.len() > 255 {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid volume name '{}': {why}; a volume name is a plain file name in the pool's folder",
        name.escape_debug()
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_pool_xml_round_trips() {
        let xml = "<pool type='dir'>\n  <name>images</name>\n  \
                   <uuid>3e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid>\n  \
                   <capacity unit='bytes'>0</capacity>\n  <source/>\n  \
                   <target>\n    <path>/var/lib/x/./images/</path>\n    \
                   <permissions><mode>0711</mode></permissions>\n  </target>\n</pool>\n";
        let def = PoolDef::parse(xml).unwrap();
        assert_eq!(def.name, "images");
        assert_eq!(def.path, "/var/lib/x/images");
        assert_eq!(PoolDef::parse(&def.to_xml(Some((3, 2, 1)))).unwrap(), def);
        assert!(def.to_xml(None).contains("<path>/var/lib/x/images</path>"));
    }

    #[test]
    fn bad_pool_xml_is_refused_with_a_reason() {
        let cases = [
            ("<pool type='netfs'><name>n</name></pool>", "only 'dir'"),
            ("<pool><name>n</name></pool>", "no type"),
            (
                "<pool type='dir'><target><path>/x</path></target></pool>",
                "<name>",
            ),
            ("<pool type='dir'><name>n</name></pool>", "<target><path>"),
            (
                "<pool type='dir'><name>n</name><target><path>rel</path></target></pool>",
                "absolute",
            ),
            (
                "<pool type='dir'><name>a/b</name><target><path>/x</path></target></pool>",
                "'/'",
            ),
            ("<pool type='dir'><name>n</name", "invalid storage pool XML"),
            (
                "<pool type='dir'><name>n</name><uuid>zz</uuid><target><path>/x</path></target></pool>",
                "<uuid>",
            ),
        ];
        for (xml, want) in cases {
            let err = PoolDef::parse(xml).unwrap_err();
            assert!(err.contains(want), "{xml}: {err}");
        }
    }

    #[test]
    fn volume_xml_for_vol_create_is_read_with_units_and_backing() {
        let v = VolumeDef::parse(
            "<volume type='file'><name>d.qcow2</name><capacity unit='G'>2</capacity>\
             <allocation>0</allocation><target><format type='qcow2'/></target>\
             <backingStore><path>/p/base.img</path><format type='raw'/></backingStore></volume>",
        )
        .unwrap();
        assert_eq!(v.name, "d.qcow2");
        assert_eq!(v.capacity, 2 << 30);
        assert_eq!(v.allocation, Some(0));
        assert_eq!(v.format, VolumeFormat::Qcow2);
        assert_eq!(v.backing.as_deref(), Some("/p/base.img"));
        assert_eq!(v.backing_format, Some(VolumeFormat::Raw));
        let plain =
            VolumeDef::parse("<volume><name>r</name><capacity>4096</capacity></volume>").unwrap();
        assert_eq!((plain.capacity, plain.format), (4096, VolumeFormat::Raw));
        for (xml, want) in [
            (
                "<volume><name>../x</name><capacity>1</capacity></volume>",
                "invalid volume name",
            ),
            ("<volume><name>x</name></volume>", "<capacity> is missing"),
            (
                "<volume><name>x</name><capacity unit='parsec'>1</capacity></volume>",
                "unit",
            ),
            ("<pool/>", "<volume>"),
            (
                "<volume><name>x</name><capacity>1</capacity><target><format type='iso'/></target></volume>",
                "unsupported volume format",
            ),
        ] {
            let err = VolumeDef::parse(xml).unwrap_err();
            assert!(err.contains(want), "{xml}: {err}");
        }
    }

    #[test]
    fn volume_xml_for_vol_create_from_may_leave_out_the_capacity() {
        let (def, given) = VolumeDef::parse_for_copy(
            "<volume><name>imported.qcow2</name><target><format type='qcow2'/></target></volume>",
        )
        .unwrap();
        assert_eq!(
            (def.name.as_str(), def.format, given),
            ("imported.qcow2", VolumeFormat::Qcow2, false)
        );
        let (def, given) = VolumeDef::parse_for_copy(
            "<volume><name>r</name><capacity unit='M'>8</capacity></volume>",
        )
        .unwrap();
        assert_eq!(
            (def.capacity, def.format, given),
            (8 << 20, VolumeFormat::Raw, true)
        );
        assert!(VolumeDef::parse_for_copy("<volume><capacity>1</capacity></volume>").is_err());
    }

    #[test]
    fn volume_names_are_plain_file_names() {
        for ok in ["disk.qcow2", "a b", "x..y", "ünï"] {
            check_volume_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            ".hidden",
            "a\nb",
        ] {
            let err = check_volume_name(bad).unwrap_err();
            assert!(err.starts_with("invalid volume name"), "{err}");
        }
        assert!(check_volume_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn volume_xml_names_path_format_and_backing() {
        let v = VolumeSummary {
            name: "a&b".into(),
            path: "/p/a&b".into(),
            format: VolumeFormat::Qcow2,
            capacity: 10,
            allocation: 4,
            backing: Some("/p/base".into()),
        };
        let xml = v.to_xml();
        assert!(xml.contains("<name>a&amp;b</name>"));
        assert!(xml.contains("<format type='qcow2'/>"));
        assert!(xml.contains("<backingStore>\n    <path>/p/base</path>"));
    }
}
