//! The console page's widgets: the screen, or a status page (the VM is off,
//! or its console is not available) with Run and Reconnect; the keyboard
//! grab hint and the fullscreen toolbar over it.

use adw::prelude::*;
use gettextrs::gettext;
use vireo_console::ConsoleView;

use super::menus::send_key_menu;

/// The console page: the screen or the message page, the grab hint and
/// the fullscreen toolbar over it.
#[derive(Debug)]
pub(super) struct ConsolePage {
    pub overlay: gtk::Overlay,
    pub console_stack: gtk::Stack,
    pub off_page: adw::StatusPage,
    pub run_button: gtk::Button,
    pub reconnect_button: gtk::Button,
    pub grab_hint: gtk::Revealer,
    pub grab_label: gtk::Label,
    pub top_bar: gtk::Revealer,
}

impl ConsolePage {
    pub fn new(console: &ConsoleView) -> Self {
        let off_page = adw::StatusPage::new();
        off_page.set_icon_name(Some("computer-symbolic"));
        let run_button = gtk::Button::with_label(&gettext("Run"));
        run_button.set_halign(gtk::Align::Center);
        run_button.add_css_class("pill");
        run_button.add_css_class("suggested-action");
        run_button.set_action_name(Some("vm.run"));
        // Shown while the VM runs but its console could not be attached:
        // tries again at once, with a fresh budget of automatic retries.
        let reconnect_button = gtk::Button::with_label(&gettext("Reconnect"));
        reconnect_button.set_halign(gtk::Align::Center);
        reconnect_button.add_css_class("pill");
        reconnect_button.add_css_class("suggested-action");
        reconnect_button.set_action_name(Some("vm.reconnect"));
        reconnect_button.set_visible(false);
        let buttons = gtk::Box::new(gtk::Orientation::Vertical, 12);
        buttons.set_halign(gtk::Align::Center);
        buttons.append(&run_button);
        buttons.append(&reconnect_button);
        off_page.set_child(Some(&buttons));
        let console_stack = gtk::Stack::new();
        console_stack.add_named(console.widget(), Some("console"));
        console_stack.add_named(&off_page, Some("message"));

        let grab_label = gtk::Label::new(None);
        grab_label.add_css_class("osd");
        grab_label.add_css_class("vireo-grab-hint");
        grab_label.set_margin_top(6);
        grab_label.set_margin_bottom(6);
        grab_label.set_margin_start(12);
        grab_label.set_margin_end(12);
        let grab_hint = gtk::Revealer::new();
        grab_hint.set_transition_type(gtk::RevealerTransitionType::Crossfade);
        grab_hint.set_child(Some(&grab_label));
        grab_hint.set_halign(gtk::Align::Center);
        grab_hint.set_valign(gtk::Align::End);
        grab_hint.set_margin_bottom(12);
        grab_hint.set_can_target(false);

        let top_box = gtk::Box::new(gtk::Orientation::Horizontal, 6);
        top_box.add_css_class("toolbar");
        top_box.add_css_class("osd");
        let send_key = gtk::MenuButton::new();
        send_key.set_icon_name("input-keyboard-symbolic");
        send_key.set_tooltip_text(Some(&gettext("Send Key")));
        send_key.set_menu_model(Some(&send_key_menu()));
        top_box.append(&send_key);
        let shot = gtk::Button::from_icon_name("camera-photo-symbolic");
        shot.set_tooltip_text(Some(&gettext("Save Screenshot")));
        shot.set_action_name(Some("vm.screenshot"));
        top_box.append(&shot);
        let leave = gtk::Button::from_icon_name("view-restore-symbolic");
        leave.set_tooltip_text(Some(&gettext("Leave Fullscreen")));
        leave.set_action_name(Some("vm.fullscreen"));
        top_box.append(&leave);
        let top_bar = gtk::Revealer::new();
        top_bar.set_transition_type(gtk::RevealerTransitionType::SlideDown);
        top_bar.set_child(Some(&top_box));
        top_bar.set_halign(gtk::Align::Center);
        top_bar.set_valign(gtk::Align::Start);

        let console_overlay = gtk::Overlay::new();
        console_overlay.set_child(Some(&console_stack));
        console_overlay.add_overlay(&grab_hint);
        console_overlay.add_overlay(&top_bar);
        Self {
            overlay: console_overlay,
            console_stack,
            off_page,
            run_button,
            reconnect_button,
            grab_hint,
            grab_label,
            top_bar,
        }
    }
}
