//! The confirmations before actions that lose data.

use adw::prelude::*;
use gettextrs::gettext;
use relm4::prelude::*;

use super::{ManagerWindow, Msg};
use crate::vm_row::VmAction;

/// The image files a domain's disks name.
pub(super) fn disk_images(xml: &str) -> Vec<String> {
    vireo_api::Domain::from_xml(xml)
        .map(|d| {
            d.devices
                .disks
                .into_iter()
                .filter(|disk| disk.device == "disk")
                .filter_map(|disk| disk.source.and_then(|s| s.file))
                .collect()
        })
        .unwrap_or_default()
}

/// Asks before an action that loses the guest's unsaved state.
pub(super) fn confirm(
    root: &adw::ApplicationWindow,
    conn: usize,
    name: &str,
    action: VmAction,
    sender: &ComponentSender<ManagerWindow>,
) {
    let (heading, body, verb) = match action {
        VmAction::ForceOff => (
            gettext("Force Off “{name}”?"),
            gettext(
                "The machine stops at once, as if its power cord were pulled. Unsaved work in it is lost.",
            ),
            gettext("Force Off"),
        ),
        _ => (
            gettext("Reset “{name}”?"),
            gettext(
                "The machine restarts at once, as if its reset button were pressed. Unsaved work in it is lost.",
            ),
            gettext("Reset"),
        ),
    };
    let dialog = adw::MessageDialog::new(
        Some(root),
        Some(&heading.replace("{name}", name)),
        Some(&body),
    );
    dialog.add_response("cancel", &gettext("Cancel"));
    dialog.add_response("do", &verb);
    dialog.set_response_appearance("do", adw::ResponseAppearance::Destructive);
    dialog.set_default_response(Some("cancel"));
    dialog.set_close_response("cancel");
    let (sender, name) = (sender.clone(), name.to_owned());
    dialog.connect_response(None, move |_, response| {
        if response == "do" {
            sender.input(Msg::Perform {
                conn,
                name: name.clone(),
                action,
                remove_storage: Vec::new(),
            });
        }
    });
    dialog.present();
    tracing::info!("confirmation shown");
}

/// Asks before deleting a VM, offering to delete each of its disk images
/// (none ticked at first).
pub(super) fn confirm_delete(
    root: &adw::ApplicationWindow,
    conn: usize,
    name: &str,
    disks: Vec<String>,
    sender: &ComponentSender<ManagerWindow>,
) {
    let dialog = adw::MessageDialog::new(
        Some(root),
        Some(&gettext("Delete “{name}”?").replace("{name}", name)),
        Some(&gettext("The virtual machine's definition is removed.")),
    );
    let list = gtk::Box::new(gtk::Orientation::Vertical, 6);
    let mut checks = Vec::new();
    if disks.is_empty() {
        list.append(&gtk::Label::new(Some(&gettext("It has no disk images."))));
    } else {
        let heading = gtk::Label::new(Some(&gettext("Also delete these disk images:")));
        heading.set_xalign(0.0);
        list.append(&heading);
        for path in disks {
            let check = gtk::CheckButton::with_label(&path);
            check.set_tooltip_text(Some(&path));
            if let Some(label) = check.last_child().and_downcast::<gtk::Label>() {
                label.set_ellipsize(gtk::pango::EllipsizeMode::Start);
            }
            list.append(&check);
            checks.push((check, path));
        }
    }
    dialog.set_extra_child(Some(&list));
    dialog.add_response("cancel", &gettext("Cancel"));
    dialog.add_response("delete", &gettext("Delete"));
    dialog.set_response_appearance("delete", adw::ResponseAppearance::Destructive);
    dialog.set_default_response(Some("cancel"));
    dialog.set_close_response("cancel");
    let (sender, name) = (sender.clone(), name.to_owned());
    let first = checks.first().map(|(c, _)| c.clone());
    dialog.connect_response(None, move |_, response| {
        if response == "delete" {
            let remove_storage = checks
                .iter()
                .filter(|(c, _)| c.is_active())
                .map(|(_, p)| p.clone())
                .collect();
            sender.input(Msg::Perform {
                conn,
                name: name.clone(),
                action: VmAction::Delete,
                remove_storage,
            });
        }
    });
    dialog.present();
    // The keyboard starts on the first image's box.
    if let Some(first) = first {
        first.grab_focus();
    }
    tracing::info!("delete dialog shown");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_dialog_lists_only_disk_images() {
        let xml = "<domain type='kvm'><name>d</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
                   <os><type>hvm</type></os><devices>\
                   <disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda'/></disk>\
                   <disk type='file' device='cdrom'><source file='/iso/b.iso'/><target dev='sda'/></disk>\
                   <disk type='file' device='disk'><target dev='vdb'/></disk>\
                   </devices></domain>";
        assert_eq!(disk_images(xml), vec!["/img/a.qcow2".to_owned()]);
        assert!(disk_images("<not xml").is_empty());
    }
}
