//! The manager window: connections, and the VMs under each, following the
//! engine's events live.

use adw::prelude::*;
use gettextrs::gettext;
use relm4::factory::FactoryVecDeque;
use relm4::prelude::*;
use vireo_api::ConnectUri;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::proto::{DomainState, DomainSummary, Event, Lifecycle, Request};

use std::collections::HashMap;

use crate::config;
use crate::engine;
use crate::vm_row::{RowRequest, VmAction, VmRow};
use crate::vm_window::VmWindow;

/// The main window of the app.
#[derive(Debug)]
pub struct ManagerWindow {
    local: ConnectUri,
    status: String,
    client: Option<AsyncClient>,
    vms: FactoryVecDeque<VmRow>,
    toasts: adw::ToastOverlay,
    /// Open VM windows, by domain name.
    windows: HashMap<String, Controller<VmWindow>>,
    /// A console to open once connected (`--show-domain-console`).
    pending_console: Option<String>,
}

/// Input from widgets.
#[derive(Debug)]
pub enum Msg {
    /// A row's button was pressed.
    Row(RowRequest),
    /// Show the full text of an error.
    ShowDetails(String, String),
    /// Do `action` to a domain, confirmed where needed; `remove_storage`
    /// goes with [`VmAction::Delete`].
    Perform {
        /// The domain.
        name: String,
        /// What to do.
        action: VmAction,
        /// Delete the disk images too.
        remove_storage: bool,
    },
}

/// Results of work done off the GTK thread.
#[derive(Debug)]
pub enum CmdOut {
    /// Connected; the domains as listed.
    Connected(AsyncClient, Vec<DomainSummary>),
    /// The engine could not be reached.
    ConnectFailed(String),
    /// An event or the end of the connection.
    Incoming(Incoming),
    /// A call failed.
    Failed {
        /// The translated headline.
        headline: String,
        /// The engine's message.
        details: String,
    },
    /// A call succeeded; events carry the consequences.
    Done,
    /// What deleting a domain would remove: its disk images.
    DeleteInfo {
        /// The domain.
        name: String,
        /// Image files its disks name.
        disks: Vec<String>,
    },
}

impl ManagerWindow {
    fn set_state(&mut self, name: &str, state: Option<DomainState>) {
        let mut guard = self.vms.guard();
        let index = guard.iter().position(|r| r.name == name);
        match (index, state) {
            (Some(i), Some(state)) => {
                if let Some(row) = guard.get_mut(i) {
                    row.state = state;
                    if !state.is_active() {
                        row.clear_stats();
                    }
                }
            }
            (Some(i), None) => {
                guard.remove(i);
            }
            (None, Some(state)) => {
                guard.push_back((name.to_owned(), state));
            }
            (None, None) => {}
        }
        if let Some(state) = state {
            tracing::info!("vm {name}: {}", state.as_virsh());
        } else {
            tracing::info!("vm {name}: undefined");
        }
    }

    fn open_vm(&mut self, name: &str) {
        if let Some(existing) = self.windows.get(name)
            && existing.widget().is_visible()
        {
            existing.widget().present();
            return;
        }
        let controller = VmWindow::builder()
            .launch((name.to_owned(), self.client.clone()))
            .detach();
        relm4::main_application().add_window(controller.widget());
        controller.widget().present();
        self.windows.insert(name.to_owned(), controller);
    }

    fn toast(&self, headline: &str, details: String, sender: &ComponentSender<Self>) {
        let toast = adw::Toast::new(headline);
        toast.set_button_label(Some(&gettext("Details")));
        let sender = sender.clone();
        let title = headline.to_owned();
        toast.connect_button_clicked(move |_| {
            sender.input(Msg::ShowDetails(title.clone(), details.clone()));
        });
        self.toasts.add_toast(toast);
    }
}

#[relm4::component(pub)]
impl Component for ManagerWindow {
    /// A domain whose console to open once connected.
    type Init = Option<String>;
    type Input = Msg;
    type Output = ();
    type CommandOutput = CmdOut;

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

                #[local_ref]
                toasts -> adw::ToastOverlay {
                    set_vexpand: true,

                    gtk::ScrolledWindow {
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
                                        #[watch]
                                        set_subtitle: &format!("{} — {}", model.local, model.status),
                                        add_prefix = &gtk::Image {
                                            set_icon_name: Some("computer-symbolic"),
                                        },
                                    },
                                },

                                #[local_ref]
                                vm_list -> gtk::ListBox {
                                    set_selection_mode: gtk::SelectionMode::None,
                                    add_css_class: "boxed-list",
                                    #[watch]
                                    set_visible: !model.vms.is_empty(),
                                },

                                adw::StatusPage {
                                    set_vexpand: true,
                                    set_icon_name: Some("dev.vireo.Vireo-symbolic"),
                                    set_title: &gettext("No Virtual Machines"),
                                    set_description: Some(&gettext(
                                        "Virtual machines on this connection will appear here.",
                                    )),
                                    #[watch]
                                    set_visible: model.vms.is_empty(),
                                },
                            },
                        },
                    },
                },
            },
        }
    }

    fn init(
        pending_console: Self::Init,
        root: Self::Root,
        sender: ComponentSender<Self>,
    ) -> ComponentParts<Self> {
        if let Some(display) = gtk::gdk::Display::default() {
            gtk::IconTheme::for_display(&display).add_resource_path("/dev/vireo/Vireo/icons");
        }
        if config::PROFILE == "Devel" {
            root.add_css_class("devel");
        }
        let vms = FactoryVecDeque::builder()
            .launch(gtk::ListBox::default())
            .forward(sender.input_sender(), Msg::Row);
        let model = ManagerWindow {
            local: ConnectUri::session(),
            status: gettext("Connecting…"),
            client: None,
            vms,
            toasts: adw::ToastOverlay::new(),
            windows: HashMap::new(),
            pending_console,
        };
        let vm_list = model.vms.widget();
        let toasts = &model.toasts;
        let widgets = view_output!();

        sender.command(|out, shutdown| {
            shutdown
                .register(async move {
                    let (client, mut incoming) = match engine::connect_session().await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = out.send(CmdOut::ConnectFailed(e));
                            return;
                        }
                    };
                    match client.call(Request::ListDomains { all: true }).await {
                        Ok(vireo_api::proto::Response::Domains { domains }) => {
                            let _ = out.send(CmdOut::Connected(client, domains));
                        }
                        Ok(other) => {
                            let _ = out.send(CmdOut::ConnectFailed(format!(
                                "unexpected answer to list: {other:?}"
                            )));
                            return;
                        }
                        Err(e) => {
                            let _ = out.send(CmdOut::ConnectFailed(e.to_string()));
                            return;
                        }
                    }
                    while let Some(i) = incoming.recv().await {
                        let last = matches!(i, Incoming::Disconnected(_));
                        if out.send(CmdOut::Incoming(i)).is_err() || last {
                            break;
                        }
                    }
                })
                .drop_on_shutdown()
        });
        ComponentParts { model, widgets }
    }

    fn update(&mut self, msg: Self::Input, sender: ComponentSender<Self>, root: &Self::Root) {
        match msg {
            Msg::Row(RowRequest {
                name,
                action: VmAction::Open,
            }) => self.open_vm(&name),
            Msg::Row(RowRequest {
                name,
                action: action @ (VmAction::ForceOff | VmAction::Reset),
            }) => confirm(root, &name, action, &sender),
            Msg::Row(RowRequest {
                name,
                action: VmAction::Delete,
            }) => {
                let Some(client) = self.client.clone() else {
                    return;
                };
                let headline = gettext("Could not delete “{name}”").replace("{name}", &name);
                sender.oneshot_command(async move {
                    let request = Request::DumpXml {
                        domain: name.clone(),
                        inactive: true,
                    };
                    match client.call(request).await {
                        Ok(vireo_api::proto::Response::Xml { xml }) => CmdOut::DeleteInfo {
                            disks: disk_images(&xml),
                            name,
                        },
                        Ok(other) => CmdOut::Failed {
                            headline,
                            details: format!("unexpected answer: {other:?}"),
                        },
                        Err(e) => CmdOut::Failed {
                            headline,
                            details: e.to_string(),
                        },
                    }
                });
            }
            Msg::Row(RowRequest { name, action }) => sender.input(Msg::Perform {
                name,
                action,
                remove_storage: false,
            }),
            Msg::Perform {
                name,
                action,
                remove_storage,
            } => {
                let Some(client) = self.client.clone() else {
                    return;
                };
                let request = match action {
                    VmAction::Open => return,
                    VmAction::Reboot => Request::Reboot {
                        domain: name.clone(),
                    },
                    VmAction::Reset => Request::Reset {
                        domain: name.clone(),
                    },
                    VmAction::Delete => Request::Undefine {
                        domain: name.clone(),
                        remove_all_storage: remove_storage,
                    },
                    VmAction::Run => Request::Start {
                        domain: name.clone(),
                    },
                    VmAction::Pause => Request::Suspend {
                        domain: name.clone(),
                    },
                    VmAction::Resume => Request::Resume {
                        domain: name.clone(),
                    },
                    VmAction::ShutDown => Request::Shutdown {
                        domain: name.clone(),
                    },
                    VmAction::ForceOff => Request::Destroy {
                        domain: name.clone(),
                    },
                };
                // Translated here, on the GTK thread.
                let headline = match action {
                    VmAction::Open => String::new(),
                    VmAction::Reboot => gettext("Could not reboot “{name}”"),
                    VmAction::Reset => gettext("Could not reset “{name}”"),
                    VmAction::Delete => gettext("Could not delete “{name}”"),
                    VmAction::Run => gettext("Could not start “{name}”"),
                    VmAction::Pause => gettext("Could not pause “{name}”"),
                    VmAction::Resume => gettext("Could not resume “{name}”"),
                    VmAction::ShutDown => gettext("Could not shut down “{name}”"),
                    VmAction::ForceOff => gettext("Could not force off “{name}”"),
                }
                .replace("{name}", &name);
                sender.oneshot_command(async move {
                    match client.call(request).await {
                        Ok(_) => CmdOut::Done,
                        Err(e) => CmdOut::Failed {
                            headline,
                            details: e.to_string(),
                        },
                    }
                });
            }
            Msg::ShowDetails(title, details) => {
                let dialog = adw::MessageDialog::new(Some(root), Some(&title), Some(&details));
                dialog.add_response("close", &gettext("Close"));
                dialog.present();
            }
        }
    }

    fn update_cmd(&mut self, out: CmdOut, sender: ComponentSender<Self>, _root: &Self::Root) {
        match out {
            CmdOut::Connected(client, domains) => {
                self.client = Some(client);
                self.status = gettext("Connected");
                for d in domains {
                    self.set_state(&d.name, Some(d.state));
                }
                if let Some(name) = self.pending_console.take() {
                    self.open_vm(&name);
                }
            }
            CmdOut::ConnectFailed(e) => {
                self.status = gettext("Not connected");
                self.toast(&gettext("Could not connect to the engine"), e, &sender);
            }
            CmdOut::Incoming(Incoming::Event(Event::Lifecycle { name, change, .. })) => {
                let state = match change {
                    Lifecycle::Defined => {
                        // A redefinition keeps the state; a new domain is off.
                        let known = self.vms.iter().any(|r| r.name == name);
                        if known {
                            return;
                        }
                        Some(DomainState::Shutoff)
                    }
                    Lifecycle::Undefined => None,
                    Lifecycle::Started | Lifecycle::Resumed => {
                        if let Some(w) = self.windows.get(&name) {
                            w.emit(crate::vm_window::VmMsg::Reconnect);
                        }
                        Some(DomainState::Running)
                    }
                    Lifecycle::Paused => Some(DomainState::Paused),
                    Lifecycle::Stopped { .. } => Some(DomainState::Shutoff),
                    Lifecycle::Crashed { .. } => Some(DomainState::Crashed),
                };
                self.set_state(&name, state);
            }
            CmdOut::Incoming(Incoming::Event(Event::Stats { domains })) => {
                let mut guard = self.vms.guard();
                for stats in &domains {
                    let Some(i) = guard.iter().position(|r| r.name == stats.name) else {
                        continue;
                    };
                    if let Some(row) = guard.get_mut(i)
                        && let Some(usage) = row.add_stats(stats)
                    {
                        tracing::debug!("vm {}: cpu {:.0}%", stats.name, usage * 100.0);
                    }
                }
            }
            CmdOut::Incoming(Incoming::Disconnected(why)) => {
                self.client = None;
                self.status = gettext("Disconnected");
                self.toast(&gettext("Lost the connection to the engine"), why, &sender);
            }
            CmdOut::Incoming(_) => {}
            CmdOut::Failed { headline, details } => self.toast(&headline, details, &sender),
            CmdOut::Done => {}
            CmdOut::DeleteInfo { name, disks } => confirm_delete(_root, &name, disks, &sender),
        }
    }
}

/// The image files a domain's disks name.
fn disk_images(xml: &str) -> Vec<String> {
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
fn confirm(
    root: &adw::ApplicationWindow,
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
    let (sender, name) = (sender.clone(), name.to_owned());
    dialog.connect_response(None, move |_, response| {
        if response == "do" {
            sender.input(Msg::Perform {
                name: name.clone(),
                action,
                remove_storage: false,
            });
        }
    });
    dialog.present();
}

/// Asks before deleting a VM, offering to delete its disk images (listed).
fn confirm_delete(
    root: &adw::ApplicationWindow,
    name: &str,
    disks: Vec<String>,
    sender: &ComponentSender<ManagerWindow>,
) {
    let dialog = adw::MessageDialog::new(
        Some(root),
        Some(&gettext("Delete “{name}”?").replace("{name}", name)),
        Some(&gettext("The virtual machine's definition is removed.")),
    );
    let check = gtk::CheckButton::with_label(&gettext("Also delete its disk images:"));
    let list = gtk::Box::new(gtk::Orientation::Vertical, 6);
    if disks.is_empty() {
        check.set_sensitive(false);
        list.append(&gtk::Label::new(Some(&gettext("It has no disk images."))));
    } else {
        list.append(&check);
        for d in &disks {
            let label = gtk::Label::new(Some(d));
            label.set_xalign(0.0);
            label.set_margin_start(24);
            label.set_selectable(true);
            label.add_css_class("monospace");
            list.append(&label);
        }
    }
    dialog.set_extra_child(Some(&list));
    dialog.add_response("cancel", &gettext("Cancel"));
    dialog.add_response("delete", &gettext("Delete"));
    dialog.set_response_appearance("delete", adw::ResponseAppearance::Destructive);
    dialog.set_default_response(Some("cancel"));
    let (sender, name) = (sender.clone(), name.to_owned());
    dialog.connect_response(None, move |_, response| {
        if response == "delete" {
            sender.input(Msg::Perform {
                name: name.clone(),
                action: VmAction::Delete,
                remove_storage: check.is_active(),
            });
        }
    });
    dialog.present();
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
