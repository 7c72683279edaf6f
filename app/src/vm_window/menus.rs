//! The window's menus, actions and keyboard shortcuts: Send Key, View, the
//! "vm" action group and the shortcut controllers.

use adw::prelude::*;
use gettextrs::gettext;
use gtk::{gio, glib};
use relm4::prelude::*;
use vireo_console::ViewMode;

use super::{VmMsg, VmWindow};

/// X keysyms used by the Send Key menu.
mod keysym {
    pub const CONTROL_L: u32 = 0xffe3;
    pub const ALT_L: u32 = 0xffe9;
    pub const DELETE: u32 = 0xffff;
    pub const BACKSPACE: u32 = 0xff08;
    pub const PRINT: u32 = 0xff61;
    pub const F1: u32 = 0xffbe;
}

/// The keys a Send Key item names (`ctrl-alt-del`, `ctrl-alt-backspace`,
/// `ctrl-alt-f1` … `ctrl-alt-f12`, `print`), as keysyms pressed in order.
pub(super) fn send_key_combo(name: &str) -> Option<Vec<u32>> {
    use keysym::*;
    let ctrl_alt = |k: u32| vec![CONTROL_L, ALT_L, k];
    match name {
        "ctrl-alt-del" => Some(ctrl_alt(DELETE)),
        "ctrl-alt-backspace" => Some(ctrl_alt(BACKSPACE)),
        "print" => Some(vec![PRINT]),
        _ => {
            let n: u32 = name.strip_prefix("ctrl-alt-f")?.parse().ok()?;
            (1..=12).contains(&n).then(|| ctrl_alt(F1 + n - 1))
        }
    }
}

/// The Send Key menu (shared by the header bar and the fullscreen toolbar).
pub(super) fn send_key_menu() -> gio::Menu {
    let menu = gio::Menu::new();
    let top = gio::Menu::new();
    top.append(
        Some(&gettext("Ctrl+Alt+Del")),
        Some("vm.send-key::ctrl-alt-del"),
    );
    top.append(
        Some(&gettext("Ctrl+Alt+Backspace")),
        Some("vm.send-key::ctrl-alt-backspace"),
    );
    menu.append_section(None, &top);
    let f = gio::Menu::new();
    for n in 1..=12 {
        // Translators: a key combination, e.g. "Ctrl+Alt+F1".
        let label = gettext("Ctrl+Alt+F{n}").replace("{n}", &n.to_string());
        f.append(Some(&label), Some(&format!("vm.send-key::ctrl-alt-f{n}")));
    }
    menu.append_section(None, &f);
    let p = gio::Menu::new();
    p.append(Some(&gettext("Print Screen")), Some("vm.send-key::print"));
    menu.append_section(None, &p);
    menu
}

/// The View menu: view modes, fullscreen, screenshot. `resize_refused`
/// says why the guest cannot follow the window's size, once known: the
/// item is then greyed out and says so.
pub(super) fn view_menu(resize_refused: Option<&str>) -> gio::Menu {
    let menu = gio::Menu::new();
    let modes = gio::Menu::new();
    modes.append(
        Some(&gettext("Scale to Window")),
        Some("vm.view-mode::scale"),
    );
    modes.append(
        Some(&gettext("Original Size (1:1)")),
        Some("vm.view-mode::1:1"),
    );
    match resize_refused {
        None => modes.append(
            Some(&gettext("Resize Guest to Window")),
            Some("vm.view-mode::resize"),
        ),
        Some(why) => {
            let item = gio::MenuItem::new(
                Some(&gettext(
                    "Resize Guest to Window (not possible for this guest)",
                )),
                Some("vm.resize-unavailable"),
            );
            item.set_attribute_value("tooltip", Some(&why.to_variant()));
            modes.append_item(&item);
        }
    }
    menu.append_section(None, &modes);
    let other = gio::Menu::new();
    other.append(Some(&gettext("Fullscreen")), Some("vm.fullscreen"));
    other.append(Some(&gettext("Save Screenshot…")), Some("vm.screenshot"));
    menu.append_section(None, &other);
    menu
}

pub(super) fn mode_name(mode: ViewMode) -> &'static str {
    match mode {
        ViewMode::Scale => "scale",
        ViewMode::OneToOne => "1:1",
        ViewMode::ResizeGuest => "resize",
    }
}

/// The window's actions, in the "vm" group.
pub(super) fn actions(sender: &ComponentSender<VmWindow>) -> gio::SimpleActionGroup {
    let actions = gio::SimpleActionGroup::new();
    let add = |name: &str,
               param: Option<&glib::VariantTy>,
               msg: fn(Option<&glib::Variant>) -> Option<VmMsg>| {
        let a = gio::SimpleAction::new(name, param);
        let s = sender.clone();
        a.connect_activate(move |_, p| {
            if let Some(m) = msg(p) {
                s.input(m);
            }
        });
        actions.add_action(&a);
    };
    add("send-key", Some(glib::VariantTy::STRING), |p| {
        p.and_then(|p| p.str())
            .map(|s| VmMsg::SendKey(s.to_owned()))
    });
    add("fullscreen", None, |_| Some(VmMsg::ToggleFullscreen));
    add("screenshot", None, |_| Some(VmMsg::Screenshot));
    add("run", None, |_| Some(VmMsg::Run));
    add("reconnect", None, |_| Some(VmMsg::ReconnectNow));
    add("page", Some(glib::VariantTy::STRING), |p| {
        p.and_then(|p| p.str()).map(|s| VmMsg::Page(s.to_owned()))
    });
    let mode = gio::SimpleAction::new_stateful(
        "view-mode",
        Some(glib::VariantTy::STRING),
        &"scale".to_variant(),
    );
    let s = sender.clone();
    mode.connect_activate(move |_, p| {
        let m = match p.and_then(|p| p.str()) {
            Some("1:1") => ViewMode::OneToOne,
            Some("resize") => ViewMode::ResizeGuest,
            _ => ViewMode::Scale,
        };
        s.input(VmMsg::SetViewMode(m));
    });
    actions.add_action(&mode);
    // Stands for the resize mode once the guest turned it down: never
    // enabled, so its menu item is greyed out.
    let unavailable = gio::SimpleAction::new("resize-unavailable", None);
    unavailable.set_enabled(false);
    actions.add_action(&unavailable);
    actions
}

/// The window's shortcuts: the first on the window, in the bubble phase
/// (while the console holds the keyboard it stops every key before they
/// get there); the second, in the capture phase, for the serial page.
pub(super) fn shortcuts() -> (gtk::ShortcutController, gtk::ShortcutController) {
    let shortcuts = gtk::ShortcutController::new();
    shortcuts.set_scope(gtk::ShortcutScope::Local);
    // The serial terminal takes every key too; switching pages from it
    // works as in GNOME Terminal's tabs: Alt+number, caught before the
    // terminal sees it.
    let page_keys = gtk::ShortcutController::new();
    page_keys.set_propagation_phase(gtk::PropagationPhase::Capture);
    let shortcut =
        |c: &gtk::ShortcutController, trigger: &str, action: &str, arg: Option<glib::Variant>| {
            let s = gtk::Shortcut::new(
                gtk::ShortcutTrigger::parse_string(trigger),
                Some(gtk::NamedAction::new(action)),
            );
            s.set_arguments(arg.as_ref());
            c.add_shortcut(s);
        };
    shortcut(&shortcuts, "F11", "vm.fullscreen", None);
    shortcut(&shortcuts, "<Control>s", "vm.screenshot", None);
    for (i, page) in ["console", "serial", "details", "performance"]
        .into_iter()
        .enumerate()
    {
        let trigger = format!("<Alt>{}", i + 1);
        shortcut(&shortcuts, &trigger, "vm.page", Some(page.to_variant()));
        shortcut(&page_keys, &trigger, "vm.page", Some(page.to_variant()));
    }
    for (i, m) in ["scale", "1:1", "resize"].into_iter().enumerate() {
        let trigger = format!("<Control>{}", i + 1);
        shortcut(&shortcuts, &trigger, "vm.view-mode", Some(m.to_variant()));
    }
    (shortcuts, page_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_key_names_cover_ctrl_alt_del_backspace_f1_to_f12_and_print() {
        assert_eq!(
            send_key_combo("ctrl-alt-del"),
            Some(vec![0xffe3, 0xffe9, 0xffff])
        );
        assert_eq!(
            send_key_combo("ctrl-alt-backspace"),
            Some(vec![0xffe3, 0xffe9, 0xff08])
        );
        assert_eq!(
            send_key_combo("ctrl-alt-f1"),
            Some(vec![0xffe3, 0xffe9, 0xffbe])
        );
        // F12 is XK_F12 = 0xffc9.
        assert_eq!(
            send_key_combo("ctrl-alt-f12"),
            Some(vec![0xffe3, 0xffe9, 0xffc9])
        );
        assert_eq!(send_key_combo("print"), Some(vec![0xff61]));
        assert_eq!(send_key_combo("ctrl-alt-f13"), None);
        assert_eq!(send_key_combo("ctrl-alt-f0"), None);
        assert_eq!(send_key_combo("nonsense"), None);
    }
}
