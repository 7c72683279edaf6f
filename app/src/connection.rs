//! One connection of the manager window: where it leads, its state, and
//! the section that lists its VMs (a header with the connection's name and
//! state, then a list of [`VmRow`]s). The window keeps a `Vec` of these;
//! adding a remote host is adding a [`Target`] to it.

use adw::prelude::*;
use gettextrs::gettext;
use relm4::factory::FactoryVecDeque;
use relm4::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::ConnectUri;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::proto::DomainState;

use crate::engine::{self, Endpoint};
use crate::vm_row::{RowRequest, VmRow};

/// Where a connection leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The per-user engine on this computer, started on demand.
    LocalSession,
    /// An engine on another host, over SSH (`vireo+ssh://…`).
    Remote {
        /// Its URI.
        uri: ConnectUri,
    },
}

impl Target {
    /// The connection URI.
    pub fn uri(&self) -> ConnectUri {
        match self {
            Target::LocalSession => ConnectUri::session(),
            Target::Remote { uri } => uri.clone(),
        }
    }

    /// The name shown in the section header.
    pub fn title(&self) -> String {
        match self {
            // Translators: the connection to the engine on this computer,
            // as virt-manager shows "QEMU/KVM".
            Target::LocalSession => gettext("Vireo (local)"),
            Target::Remote { uri } => match &uri.transport {
                vireo_api::uri::Transport::Ssh { user, host, .. } => {
                    let who = match user {
                        Some(u) => format!("{u}@{host}"),
                        None => host.clone(),
                    };
                    // Translators: a remote host's connection; {host} is
                    // its name, as entered.
                    gettext("Vireo on {host}").replace("{host}", &who)
                }
                vireo_api::uri::Transport::Local => uri.to_string(),
            },
        }
    }

    fn icon(&self) -> &'static str {
        match self {
            Target::LocalSession => "computer-symbolic",
            Target::Remote { .. } => "network-server-symbolic",
        }
    }

    /// Whether this is a remote host (retried when dropped, removable).
    pub fn is_remote(&self) -> bool {
        matches!(self, Target::Remote { .. })
    }

    /// Connects with events on; a remote host gets one SSH connection,
    /// asking `prompter` its questions. Runs off the GTK thread; errors are
    /// plain English (the window translates the headline).
    pub async fn connect(
        self,
        prompter: std::sync::Arc<dyn vireo_remote::Prompter>,
    ) -> Result<(Endpoint, AsyncClient, UnboundedReceiver<Incoming>), ConnectError> {
        match self {
            Target::LocalSession => {
                let (c, rx) = engine::connect_session().await?;
                Ok((Endpoint::Local, c, rx))
            }
            Target::Remote { uri } => {
                let settings = vireo_remote::Settings::from_env();
                let conn = vireo_remote::Connection::connect_uri(&uri, &settings, &*prompter)
                    .await
                    .map_err(|e| ConnectError {
                        host_key_changed: match &e {
                            vireo_remote::RemoteError::HostKeyChanged { host, .. } => {
                                Some(host.clone())
                            }
                            _ => None,
                        },
                        message: e.to_string(),
                    })?;
                let endpoint = Endpoint::Remote(std::sync::Arc::new(conn));
                let (c, rx) = endpoint.client(true).await?;
                Ok((endpoint, c, rx))
            }
        }
    }
}

/// Why connecting failed: plain English, and the host whose key changed
/// when that was why (refused, shown as such).
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// What failed.
    pub message: String,
    /// The host (as known_hosts names it) whose recorded key differs.
    pub host_key_changed: Option<String>,
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        Self {
            message,
            host_key_changed: None,
        }
    }
}

/// A connection's state, as its header shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Reaching the engine.
    Connecting,
    /// Talking to the engine.
    Connected,
    /// Not connected (failed or lost).
    Disconnected,
    /// Lost, trying again in this many seconds.
    Retrying(u64),
}

impl ConnState {
    fn log_name(self) -> String {
        match self {
            ConnState::Connecting => "connecting".into(),
            ConnState::Connected => "connected".into(),
            ConnState::Disconnected => "disconnected".into(),
            ConnState::Retrying(n) => format!("retrying in {n} s"),
        }
    }

    fn label(self) -> String {
        match self {
            ConnState::Connecting => gettext("Connecting…"),
            ConnState::Connected => gettext("Connected"),
            ConnState::Disconnected => gettext("Disconnected"),
            // Translators: {n} is a number of seconds.
            ConnState::Retrying(n) => {
                gettext("Disconnected, retrying in {n} s").replace("{n}", &n.to_string())
            }
        }
    }
}

/// A connection and its section of the window.
#[derive(Debug)]
pub struct Connection {
    /// Its state.
    pub state: ConnState,
    /// The API client while connected.
    pub client: Option<AsyncClient>,
    /// Where it leads.
    pub target: Target,
    /// Its streams' way to the engine while connected (one SSH connection
    /// for a remote host).
    pub endpoint: Option<Endpoint>,
    /// Bumped on every connect and disconnect, so the results of an older
    /// attempt are ignored.
    pub generation: u64,
    /// The next retry's delay, in seconds (1 doubling to 60).
    pub backoff: u64,
    /// Whether the user wants it connected (retry when it drops).
    pub wanted: bool,
    /// Whether it has ever connected (a later connect is a reconnect).
    pub was_connected: bool,
    /// Ends the running connection's event task.
    pub cancel: Option<tokio::sync::oneshot::Sender<()>>,
    /// Its VMs, one row each.
    pub vms: FactoryVecDeque<VmRow>,
    /// The section: header and list.
    pub section: adw::PreferencesGroup,
    /// The context menu of its rows.
    pub menu: gtk::PopoverMenu,
    status: gtk::Label,
    spinner: gtk::Spinner,
}

impl Connection {
    /// A disconnected connection to `target` with an empty list whose rows
    /// report to `forward`, and whose context menu shows `menu`.
    pub fn new<M: Send + 'static>(
        target: Target,
        menu: &gtk::gio::Menu,
        sender: &relm4::Sender<M>,
        forward: impl Fn(RowRequest) -> M + Send + 'static,
    ) -> Self {
        let list = gtk::ListBox::new();
        list.set_selection_mode(gtk::SelectionMode::Single);
        // A click selects, a double click (or Enter) opens.
        list.set_activate_on_single_click(false);
        list.add_css_class("boxed-list");
        let empty = gtk::Label::new(Some(&gettext("No virtual machines")));
        empty.add_css_class("dim-label");
        empty.set_margin_top(12);
        empty.set_margin_bottom(12);
        list.set_placeholder(Some(&empty));
        let vms = FactoryVecDeque::builder()
            .launch(list)
            .forward(sender, forward);

        let status = gtk::Label::new(None);
        status.add_css_class("dim-label");
        let spinner = gtk::Spinner::new();
        let suffix = gtk::Box::new(gtk::Orientation::Horizontal, 6);
        suffix.set_valign(gtk::Align::Center);
        suffix.append(&spinner);
        suffix.append(&gtk::Image::from_icon_name(target.icon()));
        suffix.append(&status);

        let section = adw::PreferencesGroup::new();
        section.set_title(&target.title());
        section.set_description(Some(&target.uri().to_string()));
        section.set_header_suffix(Some(&suffix));
        section.add(vms.widget());

        let popover = gtk::PopoverMenu::from_model(Some(menu));
        popover.set_parent(vms.widget());
        popover.set_has_arrow(false);
        popover.set_halign(gtk::Align::Start);

        let mut conn = Self {
            state: ConnState::Disconnected,
            client: None,
            target: target.clone(),
            endpoint: None,
            generation: 0,
            backoff: 1,
            wanted: true,
            was_connected: false,
            cancel: None,
            vms,
            section,
            menu: popover,
            status,
            spinner,
        };
        conn.set_state(ConnState::Connecting);
        conn
    }

    /// Shows `state` in the header.
    pub fn set_state(&mut self, state: ConnState) {
        self.state = state;
        self.status.set_label(&state.label());
        self.spinner.set_spinning(state == ConnState::Connecting);
        self.spinner.set_visible(state == ConnState::Connecting);
        if state != ConnState::Connected {
            self.client = None;
            self.endpoint = None;
            if let Some(cancel) = self.cancel.take() {
                let _ = cancel.send(());
            }
        }
        tracing::info!("connection {}: {}", self.target.uri(), state.log_name());
    }

    /// Shows why it is not connected (or nothing) under its name.
    pub fn set_error(&self, error: Option<&str>) {
        let uri = self.target.uri().to_string();
        match error {
            // The first line: OpenSSH's warnings go on for a screen.
            Some(e) => {
                let first = e.lines().find(|l| !l.trim().is_empty()).unwrap_or(e);
                self.section
                    .set_description(Some(&format!("{uri}\n{}", first.trim())));
            }
            None => self.section.set_description(Some(&uri)),
        }
    }

    /// Adds the header's menu (Connect, Disconnect, Remove).
    pub fn add_menu(&self, model: &gtk::gio::Menu) {
        let button = gtk::MenuButton::new();
        button.set_icon_name("view-more-symbolic");
        button.set_menu_model(Some(model));
        button.add_css_class("flat");
        button.set_tooltip_text(Some(&gettext("Connection")));
        if let Some(suffix) = self.spinner.parent().and_downcast::<gtk::Box>() {
            suffix.append(&button);
        }
    }

    /// The list of VM rows.
    pub fn list(&self) -> &gtk::ListBox {
        self.vms.widget()
    }

    /// The state of the VM called `name`, if listed.
    pub fn vm_state(&self, name: &str) -> Option<DomainState> {
        self.vms.iter().find(|r| r.name == name).map(|r| r.state)
    }
}
