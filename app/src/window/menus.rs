//! The manager window's menus.

use adw::prelude::*;
use gettextrs::gettext;
use gtk::gio;
use relm4::prelude::*;

/// The main menu.
pub(super) fn main_menu() -> gio::Menu {
    let menu = gio::Menu::new();
    menu.append(
        Some(&gettext("Add Connection…")),
        Some("win.add-connection"),
    );
    menu
}

/// The Shut Down button's menu.
pub(super) fn shutdown_menu() -> gio::Menu {
    let menu = gio::Menu::new();
    menu.append(Some(&gettext("Shut Down")), Some("win.shutdown"));
    menu.append(Some(&gettext("Reboot")), Some("win.reboot"));
    menu.append(Some(&gettext("Reset…")), Some("win.reset"));
    menu.append(Some(&gettext("Force Off…")), Some("win.force-off"));
    menu
}

/// A row's context menu: the toolbar's actions.
pub(super) fn row_menu() -> gio::Menu {
    let menu = gio::Menu::new();
    let open = gio::Menu::new();
    open.append(Some(&gettext("Open")), Some("win.open"));
    menu.append_section(None, &open);
    let run = gio::Menu::new();
    run.append(Some(&gettext("Run")), Some("win.run"));
    for (label, action) in [
        (gettext("Pause"), "win.pause"),
        (gettext("Resume"), "win.resume"),
    ] {
        let item = gio::MenuItem::new(Some(&label), Some(action));
        item.set_attribute_value("hidden-when", Some(&"action-disabled".to_variant()));
        run.append_item(&item);
    }
    menu.append_section(None, &run);
    menu.append_section(None, &shutdown_menu());
    let delete = gio::Menu::new();
    delete.append(Some(&gettext("Delete…")), Some("win.delete"));
    menu.append_section(None, &delete);
    menu
}
