//! Importing libvirt domain XML as written by `virsh dumpxml` or
//! `virt-install --print-xml`.
//!
//! The document text is the stored definition: nothing the user wrote is
//! dropped or reformatted. The typed [`Domain`] is derived from it, and
//! every element Vireo does not act on is listed by path (e.g.
//! `domain/devices/interface`) so the user is told, not silently ignored.
//! Malformed documents are refused with the line, column and element where
//! the parser stopped.

use quick_xml::events::Event;
use quick_xml::reader::Reader;
use uuid::Uuid;

use crate::domain::{Domain, DomainError, MAX_XML_DEPTH};

/// The element paths Vireo applies. Anything else is kept and reported.
/// A `<disk>` vireo-vmm cannot attach (another bus, a network source, …) is
/// reported as a whole, by [`Disk::unsupported`](crate::domain::Disk::unsupported)'s
/// path (`domain/devices/disk[target/@bus='sata']`).
pub const SUPPORTED: &[&str] = &[
    "domain",
    "domain/name",
    "domain/uuid",
    "domain/title",
    "domain/description",
    "domain/memory",
    "domain/currentMemory",
    "domain/vcpu",
    "domain/os",
    "domain/os/type",
    "domain/os/kernel",
    "domain/os/initrd",
    "domain/os/cmdline",
    "domain/features",
    "domain/features/acpi",
    "domain/features/apic",
    "domain/devices",
    "domain/devices/disk",
    "domain/devices/disk/driver",
    "domain/devices/disk/source",
    "domain/devices/disk/target",
    "domain/devices/disk/readonly",
    "domain/devices/disk/serial",
    "domain/devices/serial",
    "domain/devices/serial/source",
    "domain/devices/serial/target",
    "domain/devices/serial/log",
    "domain/devices/console",
    "domain/devices/console/target",
    "domain/devices/graphics",
    "domain/devices/video",
    "domain/devices/video/model",
];

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The document is not well-formed XML.
    #[error("malformed domain XML at line {line}, column {column}, in <{element}>: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (characters).
        column: usize,
        /// The path of the element the parser was in (`domain/devices/disk`).
        element: String,
        /// What the parser found.
        message: String,
    },
    /// Well-formed, but not a valid domain.
    #[error(transparent)]
    Invalid(#[from] DomainError),
}

/// A parsed document.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The typed model.
    pub domain: Domain,
    /// The document as given.
    pub xml: String,
    /// Element paths kept but not acted on, in document order, once each.
    pub unsupported: Vec<String>,
    /// Byte offset just after `</name>` (where a generated `<uuid>` goes).
    name_end: Option<usize>,
    /// Byte offsets just after the start tag of each `<interface>` that has
    /// no `<mac>` (where a generated one goes).
    macless: Vec<usize>,
}

impl Imported {
    /// Parses and validates `xml`.
    pub fn parse(xml: &str) -> Result<Self, ImportError> {
        let mut scan = scan(xml, &[])?;
        let domain = Domain::from_xml(xml)?;
        let disks: Vec<Option<String>> = domain
            .devices
            .disks
            .iter()
            .map(|d| d.unsupported())
            .collect();
        if disks.iter().any(Option::is_some) {
            scan = self::scan(xml, &disks)?;
        }
        Ok(Self {
            domain,
            xml: xml.to_owned(),
            unsupported: scan.unsupported,
            name_end: scan.name_end,
            macless: scan.macless,
        })
    }

    /// Gives every `<interface>` without a `<mac>` one, as libvirt does:
    /// `52:54:00` (QEMU's prefix, which libvirt uses for KVM guests) and
    /// three random bytes. Returns the addresses added, in document order.
    pub fn ensure_macs(&mut self) -> Vec<String> {
        let mut added = Vec::new();
        let offsets = std::mem::take(&mut self.macless);
        for &at in offsets.iter().rev() {
            let r = Uuid::new_v4();
            let b = r.as_bytes();
            let mac = format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]);
            let indent = line_indent(&self.xml, at);
            self.xml
                .insert_str(at, &format!("\n{indent}  <mac address='{mac}'/>"));
            added.push(mac);
        }
        added.reverse();
        added
    }

    /// Sets the UUID when the document has none, inserting `<uuid>` after
    /// `<name>` in the stored text (libvirt's place for it).
    pub fn ensure_uuid(&mut self, uuid: Uuid) {
        if self.domain.uuid.is_some() {
            return;
        }
        self.domain.uuid = Some(uuid);
        let at = self.name_end.unwrap_or(0);
        let indent = line_indent(&self.xml, at);
        let text = format!("\n{indent}<uuid>{uuid}</uuid>");
        self.xml.insert_str(at, &text);
        for offset in &mut self.macless {
            if *offset >= at {
                *offset += text.len();
            }
        }
    }
}

/// The whitespace that starts the line holding byte `at`.
fn line_indent(text: &str, at: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[start..at]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// What [`scan`] learns about a document.
struct Scan {
    unsupported: Vec<String>,
    name_end: Option<usize>,
    macless: Vec<usize>,
}

/// Walks the document: checks it is well-formed with a `<domain>` root and
/// collects unsupported element paths, where `</name>` ends and which
/// interfaces lack a MAC address. `disks[n]` is the path to report for the
/// n-th `<disk>` when it cannot be attached (its children are then not
/// reported separately).
fn scan(xml: &str, disks: &[Option<String>]) -> Result<Scan, ImportError> {
    let mut disk_index = 0;
    // quick-xml skips a byte order mark without counting it in its
    // positions: read without it and count it here.
    let body = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let bom = xml.len() - body.len();
    let mut reader = Reader::from_str(body);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    // Depth at which an unsupported subtree began; its children are not
    // reported separately.
    let mut skipping: Option<usize> = None;
    let mut unsupported: Vec<String> = Vec::new();
    // The same paths, for a check that stays linear in their number.
    let mut reported = std::collections::HashSet::new();
    let mut name_end = None;
    let mut macless = Vec::new();
    // The open <interface>: where its start tag ends, and whether it has a <mac>.
    let mut interface: Option<(usize, bool)> = None;
    let mut seen_root = false;
    let syntax = |stack: &[String], offset: usize, message: String| {
        let (line, column) = position(xml, offset);
        ImportError::Syntax {
            line,
            column,
            element: if stack.is_empty() {
                "document".to_owned()
            } else if stack.len() > 8 {
                // A hostile depth would make the message as long as the
                // document: the top and the innermost elements say where.
                format!(
                    "{}/…/{}",
                    stack[..3].join("/"),
                    stack[stack.len() - 3..].join("/")
                )
            } else {
                stack.join("/")
            },
            message,
        }
    };
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                return Err(syntax(
                    &stack,
                    bom + reader.error_position() as usize,
                    e.to_string(),
                ));
            }
        };
        let (name, empty) = match &event {
            Event::Start(s) => (s.name(), false),
            Event::Empty(s) => (s.name(), true),
            Event::End(_) => {
                if stack.len() == 2 && stack[1] == "name" && name_end.is_none() {
                    name_end = Some(bom + reader.buffer_position() as usize);
                }
                if stack.len() == 3
                    && stack[2] == "interface"
                    && let Some((at, false)) = interface.take()
                {
                    macless.push(at);
                }
                stack.pop();
                if skipping.is_some_and(|d| stack.len() < d) {
                    skipping = None;
                }
                continue;
            }
            Event::Text(t) => {
                if stack.is_empty() && !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(syntax(
                        &stack,
                        bom + reader.buffer_position() as usize,
                        "text outside the <domain> element".into(),
                    ));
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(name.as_ref()).into_owned();
        if stack.is_empty() {
            if seen_root {
                return Err(syntax(
                    &stack,
                    bom + reader.buffer_position() as usize,
                    format!("a second root element <{name}> after </domain>"),
                ));
            }
            if name != "domain" {
                return Err(syntax(
                    &stack,
                    bom + reader.buffer_position() as usize,
                    format!("the root element is <{name}>, expected <domain>"),
                ));
            }
            seen_root = true;
        }
        if stack.len() >= MAX_XML_DEPTH {
            return Err(syntax(
                &stack,
                bom + reader.buffer_position() as usize,
                format!("<{name}> is nested deeper than {MAX_XML_DEPTH} elements"),
            ));
        }
        stack.push(name);
        let path = stack.join("/");
        if path == "domain/devices/interface" && !empty {
            interface = Some((bom + reader.buffer_position() as usize, false));
        } else if path == "domain/devices/interface/mac"
            && let Some((_, has_mac)) = interface.as_mut()
        {
            *has_mac = true;
        }
        let disk = if path == "domain/devices/disk" {
            disk_index += 1;
            disks.get(disk_index - 1).cloned().flatten()
        } else {
            None
        };
        if skipping.is_none()
            && let Some(report) =
                disk.or_else(|| (!SUPPORTED.contains(&path.as_str())).then(|| path.clone()))
        {
            if reported.insert(report.clone()) {
                unsupported.push(report);
            }
            skipping = Some(stack.len());
        }
        if empty {
            stack.pop();
            if skipping.is_some_and(|d| stack.len() < d) {
                skipping = None;
            }
        }
    }
    if !stack.is_empty() {
        return Err(syntax(
            &stack,
            xml.len(),
            format!(
                "the document ends before </{}> closes",
                stack.last().map_or("", String::as_str)
            ),
        ));
    }
    if !seen_root {
        return Err(syntax(&stack, 0, "no <domain> element".into()));
    }
    Ok(Scan {
        unsupported,
        name_end,
        macless,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT_INSTALL: &str = r#"<domain type="kvm">
  <name>t</name>
  <memory>262144</memory>
  <currentMemory>262144</currentMemory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64">hvm</type>
    <kernel>/tmp/k</kernel>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <clock offset="utc"/>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type="usb" model="ich9-uhci1">
      <master startport="0"/>
    </controller>
    <controller type="usb" model="ich9-uhci2"/>
    <console type="pty"/>
    <graphics type="vnc" port="-1"/>
  </devices>
</domain>
"#;

    #[test]
    fn unsupported_elements_are_listed_once_by_path_and_kept() {
        let imp = Imported::parse(VIRT_INSTALL).unwrap();
        assert_eq!(
            imp.unsupported,
            [
                "domain/clock",
                "domain/devices/emulator",
                "domain/devices/controller"
            ]
        );
        assert_eq!(imp.xml, VIRT_INSTALL);
        assert_eq!(imp.domain.vcpu.count, 2);
    }

    #[test]
    fn generated_uuid_goes_after_name_with_its_indentation() {
        let mut imp = Imported::parse(VIRT_INSTALL).unwrap();
        let uuid = Uuid::new_v4();
        imp.ensure_uuid(uuid);
        assert!(imp.xml.starts_with(&format!(
            "<domain type=\"kvm\">\n  <name>t</name>\n  <uuid>{uuid}</uuid>\n  <memory>"
        )));
        let again = Imported::parse(&imp.xml).unwrap();
        assert_eq!(again.domain.uuid, Some(uuid));
        assert_eq!(again.xml, imp.xml);
    }

    #[test]
    fn interfaces_without_mac_get_one_and_others_keep_theirs() {
        let xml = VIRT_INSTALL.replace(
            "    <console type=\"pty\"/>\n",
            "    <interface type=\"network\">\n      <source network=\"default\"/>\n    </interface>\n    \
             <interface type=\"user\"><mac address=\"52:54:00:00:00:01\"/></interface>\n",
        );
        let mut imp = Imported::parse(&xml).unwrap();
        // The UUID goes in first: the interfaces' offsets must follow.
        imp.ensure_uuid(Uuid::new_v4());
        let added = imp.ensure_macs();
        assert_eq!(added.len(), 1);
        assert!(added[0].starts_with("52:54:00:"), "{added:?}");
        assert!(
            imp.xml.contains(&format!(
                "    <interface type=\"network\">\n      <mac address='{}'/>\n      <source",
                added[0]
            )),
            "{}",
            imp.xml
        );
        assert!(imp.xml.contains("52:54:00:00:00:01"));
        // A second pass finds nothing to add.
        assert!(Imported::parse(&imp.xml).unwrap().ensure_macs().is_empty());
    }

    #[test]
    fn mismatched_tag_reports_line_column_and_element() {
        let bad = VIRT_INSTALL.replace("</kernel>", "</kernal>");
        let err = Imported::parse(&bad).unwrap_err();
        let ImportError::Syntax {
            line,
            column,
            ref element,
            ref message,
        } = err
        else {
            panic!("{err}");
        };
        assert_eq!((line, element.as_str()), (8, "domain/os/kernel"));
        assert!(column > 1, "{column}");
        assert!(message.contains("kernal"), "{message}");
        assert!(
            err.to_string()
                .starts_with("malformed domain XML at line 8, column ")
        );
    }

    #[test]
    fn truncated_document_and_wrong_root_are_refused() {
        let err = Imported::parse("<domain type='kvm'>\n  <name>x</name>\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("in <domain>: the document ends before </domain> closes"),
            "{err}"
        );
        let err = Imported::parse("<network><name>x</name></network>").unwrap_err();
        assert!(err.to_string().contains("expected <domain>"), "{err}");
    }

    #[test]
    fn schema_errors_name_the_element() {
        let bad = VIRT_INSTALL.replace("<vcpu>2</vcpu>", "<vcpu>0</vcpu>");
        let err = Imported::parse(&bad).unwrap_err();
        assert!(err.to_string().starts_with("<vcpu>:"), "{err}");
    }

    #[test]
    fn virtio_disks_are_applied_and_other_disks_listed_as_a_whole() {
        let xml = VIRT_INSTALL.replace(
            "    <console type=\"pty\"/>\n",
            "    <disk type=\"file\" device=\"disk\">\n      \
             <driver name=\"qemu\" type=\"qcow2\" cache=\"none\"/>\n      \
             <source file=\"/i/a.qcow2\"/>\n      <target dev=\"vda\" bus=\"virtio\"/>\n      \
             <serial>abc</serial>\n      <boot order=\"1\"/>\n    </disk>\n    \
             <disk type=\"file\" device=\"cdrom\">\n      <target dev=\"sda\" bus=\"sata\"/>\n      \
             <readonly/>\n      <address type=\"drive\"/>\n    </disk>\n",
        );
        let imp = Imported::parse(&xml).unwrap();
        assert_eq!(
            imp.unsupported,
            [
                "domain/clock",
                "domain/devices/emulator",
                "domain/devices/controller",
                "domain/devices/disk/boot",
                "domain/devices/disk[target/@bus='sata']",
            ]
        );
        assert_eq!(imp.xml, xml);
        assert_eq!(imp.domain.devices.disks.len(), 2);
    }
}
