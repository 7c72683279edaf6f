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
}

impl ManagerWindow {
    fn set_state(&mut self, name: &str, state: Option<DomainState>) {
        let mut guard = self.vms.guard();
        let index = guard.iter().position(|r| r.name == name);
        match (index, state) {
            (Some(i), Some(state)) => {
                if let Some(row) = guard.get_mut(i) {
                    row.state = state;
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
        let controller = VmWindow::builder().launch(name.to_owned()).detach();
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
            Msg::Row(RowRequest { name, action }) => {
                let Some(client) = self.client.clone() else {
                    return;
                };
                let request = match action {
                    VmAction::Open => return,
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
                    Lifecycle::Started | Lifecycle::Resumed => Some(DomainState::Running),
                    Lifecycle::Paused => Some(DomainState::Paused),
                    Lifecycle::Stopped { .. } => Some(DomainState::Shutoff),
                    Lifecycle::Crashed { .. } => Some(DomainState::Crashed),
                };
                self.set_state(&name, state);
            }
            CmdOut::Incoming(Incoming::Disconnected(why)) => {
                self.client = None;
                self.status = gettext("Disconnected");
                self.toast(&gettext("Lost the connection to the engine"), why, &sender);
            }
            CmdOut::Incoming(_) => {}
            CmdOut::Failed { headline, details } => self.toast(&headline, details, &sender),
            CmdOut::Done => {}
        }
    }
}
