//! The manager window: connections, and the VMs under each.

use adw::prelude::*;
use gettextrs::gettext;
use relm4::prelude::*;
use vireo_api::ConnectUri;

use crate::config;

/// The main window of the app.
#[derive(Debug)]
pub struct ManagerWindow {
    local: ConnectUri,
}

#[relm4::component(pub)]
impl SimpleComponent for ManagerWindow {
    type Init = ();
    type Input = ();
    type Output = ();

    view! {
        adw::ApplicationWindow {
            set_title: Some(&gettext("Vireo")),
            set_default_size: (760, 520),

            #[wrap(Some)]
            set_content = &gtk::Box {
                set_orientation: gtk::Orientation::Vertical,

                adw::HeaderBar {
                    #[wrap(Some)]
                    set_title_widget = &adw::WindowTitle {
                        set_title: &gettext("Vireo"),
                        set_subtitle: &gettext("Virtual Machines"),
                    },
                },

                gtk::ScrolledWindow {
                    set_vexpand: true,
                    set_hscrollbar_policy: gtk::PolicyType::Never,

                    adw::Clamp {
                        set_maximum_size: 720,
                        set_margin_top: 18,
                        set_margin_bottom: 18,
                        set_margin_start: 12,
                        set_margin_end: 12,

                        gtk::Box {
                            set_orientation: gtk::Orientation::Vertical,
                            set_spacing: 12,

                            gtk::Label {
                                set_label: &gettext("Connections"),
                                set_xalign: 0.0,
                                add_css_class: "heading",
                            },

                            gtk::ListBox {
                                set_selection_mode: gtk::SelectionMode::None,
                                add_css_class: "boxed-list",

                                adw::ActionRow {
                                    set_title: &gettext("This Computer"),
                                    set_subtitle: &model.local.to_string(),
                                    add_prefix = &gtk::Image {
                                        set_icon_name: Some("computer-symbolic"),
                                    },
                                },
                            },

                            adw::StatusPage {
                                set_vexpand: true,
                                set_icon_name: Some("dev.vireo.Vireo-symbolic"),
                                set_title: &gettext("No Virtual Machines"),
                                set_description: Some(&gettext(
                                    "Virtual machines on this connection will appear here.",
                                )),
                            },
                        },
                    },
                },
            },
        }
    }

    fn init(
        _init: Self::Init,
        root: Self::Root,
        _sender: ComponentSender<Self>,
    ) -> ComponentParts<Self> {
        if let Some(display) = gtk::gdk::Display::default() {
            gtk::IconTheme::for_display(&display).add_resource_path("/dev/vireo/Vireo/icons");
        }
        if config::PROFILE == "Devel" {
            root.add_css_class("devel");
        }
        let model = ManagerWindow {
            local: ConnectUri::session(),
        };
        let widgets = view_output!();
        ComponentParts { model, widgets }
    }
}
