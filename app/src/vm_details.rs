//! The VM window's Details page: an overview (name, UUID, state, vCPUs,
//! memory, boot source) and the read-only hardware list, both read from
//! the engine's `dominfo` and the domain's XML.

use adw::prelude::*;
use gettextrs::gettext;
use vireo_api::Domain;
use vireo_api::proto::{DomainInfo, DomainState};

/// One group of the page: a title and (label, value) rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The group title, translated.
    pub title: String,
    /// Rows: a translated label and its value.
    pub rows: Vec<(String, String)>,
}

/// A state in the words the manager window uses.
pub fn state_label(state: DomainState) -> String {
    match state {
        DomainState::Running => gettext("Running"),
        DomainState::Paused => gettext("Paused"),
        DomainState::Shutoff => gettext("Off"),
        DomainState::Crashed => gettext("Crashed"),
    }
}

/// Memory in KiB as MiB or GiB.
fn kib_label(kib: u64) -> String {
    if kib >= 1 << 20 && kib.is_multiple_of(1 << 20) {
        gettext("{n} GiB").replace("{n}", &(kib >> 20).to_string())
    } else {
        gettext("{n} MiB").replace("{n}", &(kib >> 10).to_string())
    }
}

/// How the domain boots, from `<os>`.
pub fn boot_source(domain: &Domain) -> String {
    let os = &domain.os;
    if let Some(kernel) = &os.kernel {
        gettext("Direct kernel boot: {path}").replace("{path}", kernel)
    } else if let Some(loader) = &os.loader {
        gettext("Firmware: {path}").replace("{path}", loader)
    } else {
        gettext("Firmware (default)")
    }
}

/// The overview group.
pub fn overview(info: &DomainInfo, domain: Option<&Domain>) -> Section {
    let mut rows = vec![
        (gettext("Name"), info.summary.name.clone()),
        (gettext("UUID"), info.summary.uuid.to_string()),
        (gettext("State"), state_label(info.summary.state)),
        (gettext("vCPUs"), info.vcpus.to_string()),
        (gettext("Memory"), kib_label(info.memory_kib)),
    ];
    if let Some(d) = domain {
        rows.push((gettext("Boot source"), boot_source(d)));
    }
    if let Some(pid) = info.pid {
        rows.push((gettext("VMM process"), pid.to_string()));
    }
    rows.push((
        gettext("Start with the engine"),
        if info.autostart {
            gettext("Yes")
        } else {
            gettext("No")
        },
    ));
    Section {
        title: gettext("Overview"),
        rows,
    }
}

/// The hardware list, one group per device.
pub fn hardware(domain: &Domain) -> Vec<Section> {
    let mut out = Vec::new();
    let mut cpu = vec![(gettext("Count"), domain.vcpu.count.to_string())];
    if let Some(arch) = &domain.os.os_type.arch {
        cpu.push((gettext("Architecture"), arch.clone()));
    }
    out.push(Section {
        title: gettext("Processors"),
        rows: cpu,
    });
    let mut mem = Vec::new();
    if let Ok(bytes) = domain.memory_bytes() {
        mem.push((gettext("Maximum"), kib_label(bytes >> 10)));
    }
    if let Some(current) = &domain.current_memory
        && let Ok(bytes) = current.bytes("currentMemory")
    {
        mem.push((gettext("At boot"), kib_label(bytes >> 10)));
    }
    out.push(Section {
        title: gettext("Memory"),
        rows: mem,
    });
    let os = &domain.os;
    let mut boot = vec![(gettext("Source"), boot_source(domain))];
    if let Some(initrd) = &os.initrd {
        boot.push((gettext("Initial RAM disk"), initrd.clone()));
    }
    if let Some(cmdline) = os.cmdline.as_ref().filter(|c| !c.is_empty()) {
        boot.push((gettext("Kernel command line"), cmdline.clone()));
    }
    if let Some(machine) = &os.os_type.machine {
        boot.push((gettext("Machine"), machine.clone()));
    }
    out.push(Section {
        title: gettext("Boot"),
        rows: boot,
    });
    for disk in &domain.devices.disks {
        let mut rows = vec![(gettext("Device"), disk.device.clone())];
        let source = disk
            .source
            .as_ref()
            .and_then(|s| s.file.clone().or_else(|| s.dev.clone()));
        rows.push((gettext("Source"), source.unwrap_or_else(|| gettext("None"))));
        if let Some(format) = disk.driver.as_ref().and_then(|d| d.format.clone()) {
            rows.push((gettext("Format"), format));
        }
        if let Some(bus) = &disk.target.bus {
            rows.push((gettext("Bus"), bus.clone()));
        }
        out.push(Section {
            // Translators: a disk in the hardware list, e.g. "Disk vda".
            title: gettext("Disk {target}").replace("{target}", &disk.target.dev),
            rows,
        });
    }
    for g in &domain.devices.graphics {
        let mut rows = vec![(gettext("Type"), g.kind.to_uppercase())];
        if let Some(listen) = &g.listen {
            rows.push((gettext("Listen address"), listen.clone()));
        }
        if let Some(socket) = &g.socket {
            rows.push((gettext("Socket"), socket.clone()));
        }
        rows.push((gettext("Video"), gettext("bochs-display")));
        out.push(Section {
            title: gettext("Display"),
            rows,
        });
    }
    for (i, s) in domain.devices.serials.iter().enumerate() {
        let mut rows = vec![(gettext("Type"), s.kind.clone())];
        if let Some(path) = s.source.as_ref().and_then(|s| s.path.clone()) {
            rows.push((gettext("Path"), path));
        }
        out.push(Section {
            // Translators: a serial port in the hardware list, e.g. "Serial 1".
            title: gettext("Serial {n}").replace("{n}", &(i + 1).to_string()),
            rows,
        });
    }
    if domain.devices.serials.is_empty() {
        out.push(Section {
            title: gettext("Serial 1"),
            rows: vec![(
                gettext("Type"),
                gettext("Built-in COM1 (the serial console)"),
            )],
        });
    }
    out.push(Section {
        title: gettext("Input"),
        rows: vec![
            (gettext("Keyboard"), gettext("PS/2 (built in)")),
            (gettext("Mouse"), gettext("PS/2 (built in)")),
        ],
    });
    out
}

/// Shows `sections` as preference groups in `page`, replacing `old`;
/// returns the new groups.
pub fn show(
    page: &adw::PreferencesPage,
    old: Vec<adw::PreferencesGroup>,
    sections: &[Section],
) -> Vec<adw::PreferencesGroup> {
    for g in old {
        page.remove(&g);
    }
    sections
        .iter()
        .map(|s| {
            let group = adw::PreferencesGroup::new();
            group.set_title(&s.title);
            for (label, value) in &s.rows {
                let row = adw::ActionRow::new();
                row.set_title(label);
                let v = gtk::Label::new(Some(value));
                v.set_selectable(true);
                v.set_ellipsize(gtk::pango::EllipsizeMode::Middle);
                v.set_tooltip_text(Some(value));
                v.set_xalign(1.0);
                v.add_css_class("dim-label");
                row.add_suffix(&v);
                group.add(&row);
            }
            page.add(&group);
            group
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='kvm'><name>demo</name>\
        <uuid>6f1b7c3e-1111-4a7e-9d2a-0123456789ab</uuid>\
        <memory unit='MiB'>64</memory><vcpu>2</vcpu>\
        <os><type arch='x86_64'>hvm</type><kernel>/boot/demo.elf</kernel>\
        <cmdline>mode=1024x768</cmdline></os>\
        <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
        <source file='/var/lib/demo.qcow2'/><target dev='vda' bus='virtio'/></disk>\
        <graphics type='vnc'/></devices></domain>";

    fn find<'a>(sections: &'a [Section], title: &str) -> &'a Section {
        sections
            .iter()
            .find(|s| s.title == title)
            .unwrap_or_else(|| panic!("no section {title} in {sections:#?}"))
    }

    fn value<'a>(s: &'a Section, label: &str) -> &'a str {
        &s.rows.iter().find(|r| r.0 == label).unwrap().1
    }

    #[test]
    fn hardware_list_names_cpus_memory_boot_disk_display_and_input() {
        let d = Domain::from_xml(XML).unwrap();
        let hw = hardware(&d);
        assert_eq!(value(find(&hw, "Processors"), "Count"), "2");
        assert_eq!(value(find(&hw, "Memory"), "Maximum"), "64 MiB");
        let boot = find(&hw, "Boot");
        assert_eq!(value(boot, "Source"), "Direct kernel boot: /boot/demo.elf");
        assert_eq!(value(boot, "Kernel command line"), "mode=1024x768");
        let disk = find(&hw, "Disk vda");
        assert_eq!(value(disk, "Source"), "/var/lib/demo.qcow2");
        assert_eq!(value(disk, "Format"), "qcow2");
        assert_eq!(value(disk, "Bus"), "virtio");
        assert_eq!(value(find(&hw, "Display"), "Type"), "VNC");
        find(&hw, "Input");
        find(&hw, "Serial 1");
    }

    #[test]
    fn memory_shows_whole_gibibytes_as_gib() {
        assert_eq!(kib_label(2 << 20), "2 GiB");
        assert_eq!(kib_label(1536 << 10), "1536 MiB");
    }
}
