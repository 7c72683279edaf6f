//! The manager window: the connections, each with its VMs, following the
//! engines' events live; a toolbar and a context menu acting on the
//! selected VM.

mod connections;
mod dialogs;
mod menus;
mod selection;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use adw::prelude::*;
use gettextrs::gettext;
use gtk::{gdk, gio, glib};
use relm4::prelude::*;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::proto::{DomainState, DomainSummary, Event, Lifecycle, Request, Response};

use self::dialogs::{confirm, confirm_delete, disk_images};
use self::menus::{main_menu, row_menu, shutdown_menu};
use crate::config;
use crate::connection::{ConnState, ConnectError, Connection, Target};
use crate::engine::Endpoint;
use crate::remote::{self, AddFields, PromptRequest, Saved};
use crate::vm_list::{self, Entry};
use crate::vm_row::VmAction;
use crate::vm_window::VmWindow;

/// The main window of the app.
#[derive(Debug)]
pub struct ManagerWindow {
    /// The connections, in the order shown; an index names one.
    conns: Vec<Connection>,
    /// The selected VM: (connection, name).
    selected: Option<(usize, String)>,
    /// The window actions acting on the selected VM.
    actions: HashMap<VmAction, gio::SimpleAction>,
    toasts: adw::ToastOverlay,
    /// Open VM windows, by connection and domain name.
    windows: HashMap<(usize, String), Controller<VmWindow>>,
    /// A console to open once connected (`--show-domain-console`), on the
    /// connection with this URI (`--connect`, else the local one).
    pending_console: Option<(String, String)>,
    /// The remembered remote connections, and their file.
    saved: Vec<Saved>,
    saved_path: Option<std::path::PathBuf>,
    /// The connections' sections, one `gio::ListStore` of entries each,
    /// flattened into the list.
    sections: gio::ListStore,
    /// The list's selection: the selected VM.
    selection: gtk::SingleSelection,
    /// The list of every connection's header and VMs.
    list: gtk::ListView,
    /// The VM rows' context menu.
    menu: gtk::PopoverMenu,
}

/// How the app was started.
#[derive(Debug, Default)]
pub struct Start {
    /// Open this domain's console once connected.
    pub show_console: Option<String>,
    /// The connection that domain is on (URI); the local one when `None`.
    pub connect: Option<String>,
}

/// What the connection menu does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnOp {
    /// Connect now.
    Connect,
    /// Disconnect (and stop retrying).
    Disconnect,
    /// Disconnect and forget it.
    Remove,
}

/// Input from widgets.
#[derive(Debug)]
pub enum Msg {
    /// The row of VM `.1` on connection `.0` was activated (double
    /// click, Enter).
    Activated(usize, String),
    /// The list's selection changed.
    SelectionChanged,
    /// A toolbar button, menu item or shortcut: act on the selected VM.
    Action(VmAction),
    /// A right click on VM `.1` of connection `.0`: select it and show the
    /// context menu at `.2` (the list's coordinates).
    RowMenu(usize, String, (f64, f64)),
    /// The Menu key: the context menu of the selected row.
    MenuKey,
    /// Show the full text of an error.
    ShowDetails(String, String),
    /// A connection's menu item.
    Conn(ConnOp, usize),
    /// Show the Add Connection dialog.
    AddConnection,
    /// The Add Connection dialog's result.
    Added(AddFields),
    /// A connecting task's question for the user.
    Prompt(PromptRequest),
    /// Do `action` to a domain, confirmed where needed; `remove_storage`
    /// (the disk images to delete) goes with [`VmAction::Delete`].
    Perform {
        /// The connection.
        conn: usize,
        /// The domain.
        name: String,
        /// What to do.
        action: VmAction,
        /// Disk images to delete with it.
        remove_storage: Vec<String>,
    },
}

/// Results of work done off the GTK thread.
#[derive(Debug)]
pub enum CmdOut {
    /// Connection `.0`'s attempt `.1` is up; the domains as listed.
    Connected(usize, u64, Endpoint, AsyncClient, Vec<DomainSummary>),
    /// Connection `.0`'s attempt `.1` could not reach the engine.
    ConnectFailed(usize, u64, ConnectError),
    /// Time for connection `.0`'s retry after attempt `.1`.
    Retry(usize, u64),
    /// An event on connection `.0`, or its end.
    Incoming(usize, Incoming),
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
        /// The connection.
        conn: usize,
        /// The domain.
        name: String,
        /// Image files its disks name.
        disks: Vec<String>,
    },
}

impl ManagerWindow {
    fn open_vm(&mut self, conn: usize, name: &str) {
        let key = (conn, name.to_owned());
        if let Some(existing) = self.windows.get(&key)
            && existing.widget().is_visible()
        {
            existing.widget().present();
            return;
        }
        let client = self.conns.get(conn).and_then(|c| c.client.clone());
        let endpoint = self
            .conns
            .get(conn)
            .and_then(|c| c.endpoint.clone())
            .unwrap_or(Endpoint::Local);
        let controller = VmWindow::builder()
            .launch((name.to_owned(), client, endpoint))
            .detach();
        relm4::main_application().add_window(controller.widget());
        controller.widget().present();
        tracing::info!("vm {name}: window opened");
        self.windows.insert(key, controller);
    }

    fn toast(&self, headline: &str, details: String, sender: &ComponentSender<Self>) {
        tracing::info!("toast: {headline}");
        let toast = adw::Toast::new(headline);
        toast.set_button_label(Some(&gettext("Details")));
        let sender = sender.clone();
        let title = headline.to_owned();
        toast.connect_button_clicked(move |_| {
            sender.input(Msg::ShowDetails(title.clone(), details.clone()));
        });
        self.toasts.add_toast(toast);
    }

    /// Starts `action` on a VM: opens it, asks first, or calls the engine.
    fn act(
        &mut self,
        conn: usize,
        name: String,
        action: VmAction,
        root: &adw::ApplicationWindow,
        sender: &ComponentSender<Self>,
    ) {
        match action {
            VmAction::Open => self.open_vm(conn, &name),
            VmAction::ForceOff | VmAction::Reset => confirm(root, conn, &name, action, sender),
            VmAction::Delete => {
                let Some(client) = self.conns.get(conn).and_then(|c| c.client.clone()) else {
                    return;
                };
                let headline = gettext("Could not delete “{name}”").replace("{name}", &name);
                sender.oneshot_command(async move {
                    let request = Request::DumpXml {
                        domain: name.clone(),
                        inactive: true,
                    };
                    match client.call(request).await {
                        Ok(Response::Xml { xml }) => CmdOut::DeleteInfo {
                            conn,
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
            _ => sender.input(Msg::Perform {
                conn,
                name,
                action,
                remove_storage: Vec::new(),
            }),
        }
    }
}

/// Logs the first frame the window draws (what the start-up benchmark
/// waits for) and, at trace level under `vireo_app::frames`, how long each
/// frame took from before-paint to after-paint.
fn log_frames(window: &adw::ApplicationWindow) {
    let Some(clock) = window.frame_clock() else {
        return;
    };
    let started = Rc::new(Cell::new(0i64));
    let first = Rc::new(Cell::new(true));
    let s = started.clone();
    clock.connect_before_paint(move |_| s.set(glib::monotonic_time()));
    clock.connect_after_paint(move |_| {
        if first.replace(false) {
            tracing::info!("first frame drawn");
        }
        tracing::trace!(
            target: "vireo_app::frames",
            "frame {} us",
            glib::monotonic_time() - started.get()
        );
    });
}

#[relm4::component(pub)]
impl Component for ManagerWindow {
    /// How the app was started.
    type Init = Start;
    type Input = Msg;
    type Output = ();
    type CommandOutput = CmdOut;

    view! {
        adw::ApplicationWindow {
            set_title: Some(&gettext("Vireo")),
            set_default_size: (800, 560),

            #[wrap(Some)]
            set_content = &gtk::Box {
                set_orientation: gtk::Orientation::Vertical,

                adw::HeaderBar {
                    pack_start = &gtk::Button {
                        set_icon_name: "list-add-symbolic",
                        set_action_name: Some("win.new"),
                        set_tooltip_text: Some(&gettext(
                            "New Virtual Machine (not available yet)",
                        )),
                    },
                    pack_start = &gtk::Button {
                        set_icon_name: "video-display-symbolic",
                        set_action_name: Some("win.open"),
                        set_tooltip_text: Some(&gettext("Open")),
                    },
                    pack_start = &gtk::Button {
                        set_icon_name: "media-playback-start-symbolic",
                        set_action_name: Some("win.run"),
                        set_tooltip_text: Some(&gettext("Run")),
                    },
                    pack_start = &gtk::Button {
                        #[watch]
                        set_icon_name: if model.selected_state() == Some(DomainState::Paused) {
                            "media-playback-start-symbolic"
                        } else {
                            "media-playback-pause-symbolic"
                        },
                        #[watch]
                        set_action_name: Some(
                            if model.selected_state() == Some(DomainState::Paused) {
                                "win.resume"
                            } else {
                                "win.pause"
                            },
                        ),
                        #[watch]
                        set_tooltip_text: Some(
                            &if model.selected_state() == Some(DomainState::Paused) {
                                gettext("Resume")
                            } else {
                                gettext("Pause")
                            },
                        ),
                    },
                    pack_start = &adw::SplitButton {
                        set_icon_name: "system-shutdown-symbolic",
                        set_action_name: Some("win.shutdown"),
                        set_tooltip_text: Some(&gettext("Shut Down")),
                        set_dropdown_tooltip: &gettext("Reboot, Reset or Force Off"),
                        set_menu_model: Some(&shutdown_menu()),
                    },
                    pack_end = &gtk::MenuButton {
                        set_icon_name: "open-menu-symbolic",
                        set_primary: true,
                        set_tooltip_text: Some(&gettext("Main Menu")),
                        set_menu_model: Some(&main_menu()),
                    },
                    pack_end = &gtk::Button {
                        set_icon_name: "user-trash-symbolic",
                        set_action_name: Some("win.delete"),
                        set_tooltip_text: Some(&gettext("Delete…")),
                    },

                    #[wrap(Some)]
                    set_title_widget = &adw::WindowTitle {
                        set_title: &gettext("Vireo"),
                        set_subtitle: &gettext("Virtual Machines"),
                    },
                },

                #[local_ref]
                toasts -> adw::ToastOverlay {
                    set_vexpand: true,

                    // The list is the scrollable (so it recycles its rows),
                    // clamped as the sections were.
                    gtk::ScrolledWindow {
                        set_hscrollbar_policy: gtk::PolicyType::Never,

                        #[wrap(Some)]
                        set_child = &adw::ClampScrollable {
                            set_maximum_size: 720,
                            set_margin_start: 12,
                            set_margin_end: 12,

                            #[wrap(Some)]
                            #[local_ref]
                            set_child = list -> gtk::ListView {
                                add_css_class: "vireo-vm-list",
                                set_single_click_activate: false,
                            },
                        },
                    },
                },
            },
        }
    }

    fn init(
        start: Self::Init,
        root: Self::Root,
        sender: ComponentSender<Self>,
    ) -> ComponentParts<Self> {
        if let Some(display) = gdk::Display::default() {
            gtk::IconTheme::for_display(&display).add_resource_path("/dev/vireo/Vireo/icons");
        }
        if config::PROFILE == "Devel" {
            root.add_css_class("devel");
        }
        root.connect_realize(log_frames);

        let mut actions = HashMap::new();
        for action in VmAction::ALL {
            let a = gio::SimpleAction::new(action.action_name(), None);
            a.set_enabled(false);
            let s = sender.clone();
            a.connect_activate(move |_, _| s.input(Msg::Action(action)));
            root.add_action(&a);
            actions.insert(action, a);
        }
        // Until the New VM wizard exists.
        let new = gio::SimpleAction::new("new", None);
        new.set_enabled(false);
        root.add_action(&new);
        for (name, op) in [
            ("conn-connect", ConnOp::Connect),
            ("conn-disconnect", ConnOp::Disconnect),
            ("conn-remove", ConnOp::Remove),
        ] {
            let a = gio::SimpleAction::new(name, Some(glib::VariantTy::UINT32));
            let s = sender.clone();
            a.connect_activate(move |_, id| {
                if let Some(id) = id.and_then(|v| v.get::<u32>()) {
                    s.input(Msg::Conn(op, id as usize));
                }
            });
            root.add_action(&a);
        }
        let add = gio::SimpleAction::new("add-connection", None);
        let s = sender.clone();
        add.connect_activate(move |_, _| s.input(Msg::AddConnection));
        root.add_action(&add);
        let menu_key = gio::SimpleAction::new("context-menu", None);
        let s = sender.clone();
        menu_key.connect_activate(move |_, _| s.input(Msg::MenuKey));
        root.add_action(&menu_key);
        let app = relm4::main_application();
        app.set_accels_for_action("win.context-menu", &["Menu", "<Shift>F10"]);
        app.set_accels_for_action("win.open", &["<Primary>o"]);
        app.set_accels_for_action("win.run", &["<Primary>r"]);
        app.set_accels_for_action("win.pause", &["<Primary>p"]);
        app.set_accels_for_action("win.resume", &["<Primary><Shift>p"]);
        app.set_accels_for_action("win.delete", &["Delete"]);
        app.set_accels_for_action("win.add-connection", &["<Primary><Shift>a"]);

        // One list over every connection's section (see vm_list).
        let sections = gio::ListStore::new::<gio::ListStore>();
        let selection =
            gtk::SingleSelection::new(Some(gtk::FlattenListModel::new(Some(sections.clone()))));
        selection.set_autoselect(false);
        selection.set_can_unselect(true);
        let list = gtk::ListView::new(Some(selection.clone()), Some(vm_list::factory()));
        let s = sender.clone();
        selection.connect_selected_notify(move |_| s.input(Msg::SelectionChanged));
        let s = sender.clone();
        list.connect_activate(move |list, pos| {
            if let Some((conn, name)) = list
                .model()
                .and_then(|m| m.item(pos))
                .and_downcast::<Entry>()
                .and_then(|e| e.vm())
            {
                s.input(Msg::Activated(conn, name));
            }
        });
        let click = gtk::GestureClick::new();
        click.set_button(gdk::BUTTON_SECONDARY);
        let s = sender.clone();
        click.connect_pressed(move |gesture, _, x, y| {
            let Some(list) = gesture.widget().and_downcast::<gtk::ListView>() else {
                return;
            };
            if let Some((conn, name)) = vm_list::row_at(&list, x, y)
                .and_then(|r| r.entry())
                .and_then(|e| e.vm())
            {
                gesture.set_state(gtk::EventSequenceState::Claimed);
                s.input(Msg::RowMenu(conn, name, (x, y)));
            }
        });
        list.add_controller(click);
        vm_list::set_accessible_label(&list, &gettext("Virtual Machines"));
        let menu = gtk::PopoverMenu::from_model(Some(&row_menu()));
        menu.set_parent(&list);
        menu.set_has_arrow(false);
        menu.set_halign(gtk::Align::Start);

        let mut model = ManagerWindow {
            conns: Vec::new(),
            selected: None,
            actions,
            toasts: adw::ToastOverlay::new(),
            windows: HashMap::new(),
            pending_console: start.show_console.map(|name| {
                // Compared in its canonical spelling.
                let uri = match start.connect {
                    Some(c) => c
                        .parse::<vireo_api::ConnectUri>()
                        .map(|u| u.to_string())
                        .unwrap_or(c),
                    None => Target::LocalSession.uri().to_string(),
                };
                (uri, name)
            }),
            saved: Vec::new(),
            saved_path: remote::config_path(),
            sections: sections.clone(),
            selection: selection.clone(),
            list: list.clone(),
            menu: menu.clone(),
        };
        let toasts = &model.toasts;
        let list = &model.list;
        let widgets = view_output!();

        model.add_connection(Target::LocalSession, true, &sender);
        let saved = match &model.saved_path {
            Some(path) => remote::load(path),
            None => Ok(Vec::new()),
        };
        match saved {
            Ok(saved) => {
                for s in &saved {
                    if let Ok(uri) = s.uri.parse() {
                        model.add_connection(Target::Remote { uri }, s.autoconnect, &sender);
                    }
                }
                model.saved = saved;
            }
            Err(e) => model.toast(&gettext("Could not read the saved connections"), e, &sender),
        }
        ComponentParts { model, widgets }
    }

    fn update(&mut self, msg: Self::Input, sender: ComponentSender<Self>, root: &Self::Root) {
        match msg {
            Msg::Activated(conn, name) => self.act(conn, name, VmAction::Open, root, &sender),
            Msg::SelectionChanged => self.note_selection(),
            Msg::Action(action) => {
                if let Some((conn, name)) = self.selected.clone() {
                    tracing::info!("{} on {name}", action.action_name());
                    self.act(conn, name, action, root, &sender);
                }
            }
            Msg::RowMenu(conn, name, at) => {
                if let Some(entry) = self.conns.get(conn).and_then(|c| c.vm(&name)).cloned() {
                    self.select(conn, &entry, true);
                    self.context_menu(Some(at));
                }
            }
            Msg::MenuKey => {
                if self.selected.is_some() {
                    self.context_menu(None);
                }
            }
            Msg::Perform {
                conn,
                name,
                action,
                remove_storage,
            } => {
                let Some(client) = self.conns.get(conn).and_then(|c| c.client.clone()) else {
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
                        remove_all_storage: false,
                        remove_storage,
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
            Msg::Conn(op, id) => {
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                match op {
                    ConnOp::Connect => {
                        if matches!(c.state, ConnState::Disconnected | ConnState::Retrying(_)) {
                            c.backoff = 1;
                            self.start_connect(id, &sender);
                        }
                    }
                    ConnOp::Disconnect | ConnOp::Remove => {
                        c.wanted = false;
                        c.generation += 1;
                        c.set_state(ConnState::Disconnected);
                        c.set_error(None);
                        c.clear_vms();
                        if self.selected.as_ref().is_some_and(|(s, _)| *s == id) {
                            self.selected = None;
                        }
                        if op == ConnOp::Remove {
                            c.remove_section();
                            // Its VM windows go with it.
                            self.windows.retain(|(conn, _), w| {
                                if *conn == id {
                                    w.widget().close();
                                }
                                *conn != id
                            });
                            let uri = c.target.uri().to_string();
                            self.saved.retain(|s| s.uri != uri);
                            self.save_connections(&sender);
                            tracing::info!("connection {uri}: removed");
                        }
                    }
                }
            }
            Msg::AddConnection => {
                let taken: std::collections::HashSet<String> = self
                    .conns
                    .iter()
                    .filter(|c| !c.removed)
                    .map(|c| c.target.uri().to_string())
                    .collect();
                let s = sender.clone();
                remote::add_connection_dialog(
                    root,
                    move |uri| taken.contains(uri),
                    move |fields| s.input(Msg::Added(fields)),
                );
            }
            Msg::Added(AddFields { uri, autoconnect }) => {
                tracing::info!("connection {uri}: added");
                self.saved.push(Saved {
                    uri: uri.to_string(),
                    autoconnect,
                });
                self.save_connections(&sender);
                self.add_connection(Target::Remote { uri }, true, &sender);
            }
            Msg::Prompt(request) => remote::show_prompt(root, request),
            Msg::ShowDetails(title, details) => {
                let dialog = adw::MessageDialog::new(Some(root), Some(&title), Some(&details));
                dialog.add_response("close", &gettext("Close"));
                dialog.present();
            }
        }
        self.update_actions();
    }

    fn update_cmd(&mut self, out: CmdOut, sender: ComponentSender<Self>, root: &Self::Root) {
        match out {
            CmdOut::Connected(conn, generation, endpoint, client, domains) => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                if c.generation != generation {
                    return;
                }
                let cancel = c.cancel.take();
                c.set_state(ConnState::Connected);
                c.cancel = cancel;
                c.client = Some(client);
                c.endpoint = Some(endpoint.clone());
                c.backoff = 1;
                c.set_error(None);
                let reconnect = std::mem::replace(&mut c.was_connected, true);
                // The list as it is now: gone domains leave it, new ones
                // join it in one change.
                let listed: std::collections::HashSet<&str> =
                    domains.iter().map(|d| d.name.as_str()).collect();
                let mut changes: Vec<(String, Option<DomainState>)> = c
                    .vm_names()
                    .into_iter()
                    .filter(|n| !listed.contains(n.as_str()))
                    .map(|n| (n, None))
                    .collect();
                changes.extend(domains.iter().map(|d| (d.name.clone(), Some(d.state))));
                self.apply_states(conn, changes);
                if reconnect {
                    for ((c, _), w) in &self.windows {
                        if *c == conn {
                            w.emit(crate::vm_window::VmMsg::Endpoint(endpoint.clone()));
                        }
                    }
                }
                let uri = self.conns[conn].target.uri().to_string();
                if self
                    .pending_console
                    .as_ref()
                    .is_some_and(|(u, _)| *u == uri)
                    && let Some((_, name)) = self.pending_console.take()
                {
                    self.open_vm(conn, &name);
                }
            }
            CmdOut::ConnectFailed(conn, generation, e) => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                if c.generation != generation {
                    return;
                }
                tracing::info!("connection {}: failed: {}", c.target.uri(), e.message);
                if let Some(host) = &e.host_key_changed {
                    // Refused, never retried: the user has to look.
                    c.wanted = false;
                    c.set_state(ConnState::Disconnected);
                    c.set_error(Some(&gettext(
                        "The host key has changed: connection refused",
                    )));
                    let headline =
                        gettext("The host key of {host} has changed").replace("{host}", host);
                    self.toast(&headline, e.message, &sender);
                    return;
                }
                if e.cancelled {
                    // As virt-manager: a declined login stops the retries
                    // until the user chooses Connect; no error toast for
                    // the user's own choice.
                    tracing::info!(
                        "connection {}: login cancelled, not retried",
                        c.target.uri()
                    );
                    c.wanted = false;
                    c.set_state(ConnState::Disconnected);
                    c.set_error(Some(&gettext("Login cancelled")));
                    return;
                }
                c.set_error(Some(&e.message));
                let retrying = c.was_connected && c.wanted && c.target.is_remote();
                self.schedule_retry(conn, &sender);
                if !retrying {
                    self.toast(
                        &gettext("Could not connect to the engine"),
                        e.message,
                        &sender,
                    );
                }
            }
            CmdOut::Retry(conn, generation) => {
                if self
                    .conns
                    .get(conn)
                    .is_some_and(|c| c.generation == generation && c.wanted)
                {
                    self.start_connect(conn, &sender);
                }
            }
            CmdOut::Incoming(conn, Incoming::Event(Event::Lifecycle { name, change, .. })) => {
                let state = match change {
                    Lifecycle::Defined => {
                        // A redefinition keeps the state; a new domain is off.
                        let known = self
                            .conns
                            .get(conn)
                            .is_some_and(|c| c.vm_state(&name).is_some());
                        if known {
                            return;
                        }
                        Some(DomainState::Shutoff)
                    }
                    Lifecycle::Undefined => None,
                    Lifecycle::Started | Lifecycle::Resumed => {
                        if let Some(w) = self.windows.get(&(conn, name.clone())) {
                            w.emit(crate::vm_window::VmMsg::Reconnect);
                        }
                        Some(DomainState::Running)
                    }
                    Lifecycle::Paused => Some(DomainState::Paused),
                    Lifecycle::Stopped { .. } => Some(DomainState::Shutoff),
                    Lifecycle::Crashed { .. } => Some(DomainState::Crashed),
                };
                self.set_state(conn, &name, state);
            }
            CmdOut::Incoming(conn, Incoming::Event(Event::Stats { domains })) => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                for stats in &domains {
                    if let Some(usage) = c.add_stats(stats) {
                        tracing::debug!("vm {}: cpu {:.0}%", stats.name, usage * 100.0);
                    }
                }
            }
            CmdOut::Incoming(conn, Incoming::Disconnected(why)) => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                if c.state != ConnState::Connected {
                    return;
                }
                tracing::info!("connection {}: lost: {why}", c.target.uri());
                c.set_error(Some(&why));
                self.schedule_retry(conn, &sender);
                self.toast(&gettext("Lost the connection to the engine"), why, &sender);
            }
            CmdOut::Incoming(..) => {}
            CmdOut::Failed { headline, details } => self.toast(&headline, details, &sender),
            CmdOut::Done => {}
            CmdOut::DeleteInfo { conn, name, disks } => {
                confirm_delete(root, conn, &name, disks, &sender);
            }
        }
        self.update_actions();
    }
}
