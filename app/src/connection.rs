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

use crate::engine;
use crate::vm_row::{RowRequest, VmRow};

/// Where a connection leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The per-user engine on this computer, started on demand.
    LocalSession,
}

impl Target {
    /// The connection URI.
    pub fn uri(&self) -> ConnectUri {
        match self {
            Target::LocalSession => ConnectUri::session(),
        }
    }

    /// The name shown in the section header.
    pub fn title(&self) -> String {
        match self {
            // Translators: the connection to the engine on this computer,
            // as virt-manager shows "QEMU/KVM".
            Target::LocalSession => gettext("Vireo (local)"),
        }
    }

    fn icon(&self) -> &'static str {
        match self {
            Target::LocalSession => "computer-symbolic",
        }
    }

    /// Connects with events on. Runs off the GTK thread; errors are plain
    /// English (the window translates the headline).
    pub async fn connect(self) -> Result<(AsyncClient, UnboundedReceiver<Incoming>), String> {
        match self {
            Target::LocalSession => engine::connect_session().await,
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
}

impl ConnState {
    fn label(self) -> String {
        match self {
            ConnState::Connecting => gettext("Connecting…"),
            ConnState::Connected => gettext("Connected"),
            ConnState::Disconnected => gettext("Disconnected"),
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
