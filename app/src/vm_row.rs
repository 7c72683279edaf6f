//! One row of the manager window's VM list.

use adw::prelude::*;
use gettextrs::gettext;
use relm4::prelude::*;
use vireo_api::proto::DomainState;

/// What a row shows.
#[derive(Debug)]
pub struct VmRow {
    /// The domain's name (unique on its engine).
    pub name: String,
    /// Its state.
    pub state: DomainState,
}

/// Actions a row asks the window to perform on its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    /// Open its window (the console).
    Open,
    /// Start it.
    Run,
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
    /// Press the power button.
    ShutDown,
    /// Pull the plug.
    ForceOff,
    /// Restart the guest.
    Reboot,
    /// Press the reset button.
    Reset,
    /// Remove the definition (and, if asked, the disk images).
    Delete,
}

/// A row's request to its window.
#[derive(Debug)]
pub struct RowRequest {
    /// The domain.
    pub name: String,
    /// What to do.
    pub action: VmAction,
}

/// The translated word for a state.
pub fn state_label(state: DomainState) -> String {
    match state {
        DomainState::Running => gettext("Running"),
        DomainState::Paused => gettext("Paused"),
        DomainState::Shutoff => gettext("Shut Off"),
        DomainState::Crashed => gettext("Crashed"),
    }
}

fn state_icon(state: DomainState) -> &'static str {
    match state {
        DomainState::Running => "media-playback-start-symbolic",
        DomainState::Paused => "media-playback-pause-symbolic",
        DomainState::Shutoff => "system-shutdown-symbolic",
        DomainState::Crashed => "dialog-error-symbolic",
    }
}

#[relm4::factory(pub)]
impl FactoryComponent for VmRow {
    type Init = (String, DomainState);
    type Input = VmAction;
    type Output = RowRequest;
    type CommandOutput = ();
    type ParentWidget = gtk::ListBox;

    view! {
        adw::ActionRow {
            set_title: &self.name,
            set_activatable: true,
            connect_activated => VmAction::Open,
            #[watch]
            set_subtitle: &state_label(self.state),
            add_prefix = &gtk::Image {
                #[watch]
                set_icon_name: Some(state_icon(self.state)),
            },
            add_suffix = &gtk::Box {
                set_spacing: 6,
                set_valign: gtk::Align::Center,

                gtk::Button {
                    set_icon_name: "video-display-symbolic",
                    set_tooltip_text: Some(&gettext("Open")),
                    connect_clicked => VmAction::Open,
                },
                gtk::Button {
                    set_icon_name: "media-playback-start-symbolic",
                    set_tooltip_text: Some(&gettext("Run")),
                    #[watch]
                    set_visible: !self.state.is_active(),
                    connect_clicked => VmAction::Run,
                },
                gtk::Button {
                    set_icon_name: "media-playback-pause-symbolic",
                    set_tooltip_text: Some(&gettext("Pause")),
                    #[watch]
                    set_visible: self.state == DomainState::Running,
                    connect_clicked => VmAction::Pause,
                },
                gtk::Button {
                    set_icon_name: "media-playback-start-symbolic",
                    set_tooltip_text: Some(&gettext("Resume")),
                    #[watch]
                    set_visible: self.state == DomainState::Paused,
                    connect_clicked => VmAction::Resume,
                },
                gtk::Button {
                    set_icon_name: "system-shutdown-symbolic",
                    set_tooltip_text: Some(&gettext("Shut Down")),
                    #[watch]
                    set_visible: self.state.is_active(),
                    connect_clicked => VmAction::ShutDown,
                },
                gtk::Button {
                    set_icon_name: "process-stop-symbolic",
                    set_tooltip_text: Some(&gettext("Force Off")),
                    add_css_class: "destructive-action",
                    #[watch]
                    set_visible: self.state.is_active(),
                    connect_clicked => VmAction::ForceOff,
                },
                gtk::MenuButton {
                    set_icon_name: "view-more-symbolic",
                    set_tooltip_text: Some(&gettext("More")),
                    add_css_class: "flat",
                    #[wrap(Some)]
                    set_popover: popover = &gtk::Popover {
                        gtk::Box {
                            set_orientation: gtk::Orientation::Vertical,
                            gtk::Button {
                                set_label: &gettext("Reboot"),
                                add_css_class: "flat",
                                #[watch]
                                set_sensitive: self.state == DomainState::Running,
                                connect_clicked[sender, popover] => move |_| {
                                    popover.popdown();
                                    sender.input(VmAction::Reboot);
                                },
                            },
                            gtk::Button {
                                set_label: &gettext("Reset"),
                                add_css_class: "flat",
                                #[watch]
                                set_sensitive: self.state.is_active(),
                                connect_clicked[sender, popover] => move |_| {
                                    popover.popdown();
                                    sender.input(VmAction::Reset);
                                },
                            },
                            gtk::Button {
                                set_label: &gettext("Delete…"),
                                add_css_class: "flat",
                                #[watch]
                                set_sensitive: !self.state.is_active(),
                                connect_clicked[sender, popover] => move |_| {
                                    popover.popdown();
                                    sender.input(VmAction::Delete);
                                },
                            },
                        },
                    },
                },
            },
        }
    }

    fn init_model(init: Self::Init, _index: &DynamicIndex, _sender: FactorySender<Self>) -> Self {
        Self {
            name: init.0,
            state: init.1,
        }
    }

    fn update(&mut self, action: Self::Input, sender: FactorySender<Self>) {
        let _ = sender.output(RowRequest {
            name: self.name.clone(),
            action,
        });
    }
}
