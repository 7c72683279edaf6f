//! One connection of the manager window: where it leads, its state, and
//! its section of the window's list (a `gio::ListStore` of
//! [`Entry`]s: a header with the connection's name and state, then its
//! VMs). The window keeps a `Vec` of these; adding a remote host is adding
//! a [`Target`] to it.

use std::collections::HashMap;

use gettextrs::gettext;
use gtk::gio;
use gtk::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::ConnectUri;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::proto::DomainState;

use crate::engine::{self, Endpoint};
use crate::vm_list::{Entry, Header, Kind};
use crate::vm_row::Vm;

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
                        cancelled: e.cancelled_by_user(),
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

/// The line under a connection that lists no VMs.
pub fn no_vms_label() -> String {
    gettext("No virtual machines")
}

/// The tooltip of a connection's ⋮ menu.
pub fn menu_label() -> String {
    gettext("Connection")
}

/// Why connecting failed: plain English, the host whose key changed when
/// that was why (refused, shown as such), and whether the user cancelled a
/// login question (neither is retried on its own).
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// What failed.
    pub message: String,
    /// The host (as known_hosts names it) whose recorded key differs.
    pub host_key_changed: Option<String>,
    /// The user cancelled a password or keyboard-interactive question and
    /// nothing else logged in (`RemoteError::cancelled_by_user`): asking
    /// again on its own would bring back the question they declined.
    pub cancelled: bool,
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        Self {
            message,
            host_key_changed: None,
            cancelled: false,
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
    /// Its index in the window.
    id: usize,
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
    /// Its section of the list: the header, then the VMs in the engine's
    /// order (or the empty line).
    pub store: gio::ListStore,
    /// Whether it was removed (its section is gone).
    pub removed: bool,
    header: Entry,
    empty: Entry,
    /// Its VMs' entries by name.
    vms: HashMap<String, Entry>,
}

impl Connection {
    /// A disconnected connection to `target`, number `id` in the window,
    /// with an empty section.
    pub fn new(id: usize, target: Target) -> Self {
        let uri = target.uri().to_string();
        let header = Entry::new(Kind::Header(Header {
            title: target.title(),
            description: uri,
            status: String::new(),
            busy: false,
            icon: target.icon(),
            menu: None,
        }));
        let empty = Entry::new(Kind::Empty);
        let store = gio::ListStore::new::<Entry>();
        store.splice(0, 0, &[header.clone(), empty.clone()]);
        let mut conn = Self {
            id,
            state: ConnState::Disconnected,
            client: None,
            target,
            endpoint: None,
            generation: 0,
            backoff: 1,
            wanted: true,
            was_connected: false,
            cancel: None,
            store,
            removed: false,
            header,
            empty,
            vms: HashMap::new(),
        };
        conn.set_state(ConnState::Connecting);
        conn
    }

    /// Shows `state` in the header.
    pub fn set_state(&mut self, state: ConnState) {
        self.state = state;
        self.header.update_header(|h| {
            h.status = state.label();
            h.busy = state == ConnState::Connecting;
        });
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
        let description = match error {
            // The first line: OpenSSH's warnings go on for a screen.
            Some(e) => {
                let first = e.lines().find(|l| !l.trim().is_empty()).unwrap_or(e);
                format!("{uri}\n{}", first.trim())
            }
            None => uri,
        };
        self.header.update_header(|h| h.description = description);
    }

    /// Gives the header its menu (Connect, Disconnect, Remove).
    pub fn add_menu(&self, model: &gio::Menu) {
        let model = model.clone();
        self.header.update_header(|h| h.menu = Some(model));
    }

    /// The state of the VM called `name`, if listed.
    pub fn vm_state(&self, name: &str) -> Option<DomainState> {
        self.vms.get(name).and_then(Entry::vm_state)
    }

    /// The entry of the VM called `name`, if listed.
    pub fn vm(&self, name: &str) -> Option<&Entry> {
        self.vms.get(name)
    }

    /// The names of its VMs.
    pub fn vm_names(&self) -> Vec<String> {
        self.vms.keys().cloned().collect()
    }

    /// Its first VM in the list.
    pub fn first_vm(&self) -> Option<Entry> {
        self.store
            .item(1)
            .and_downcast::<Entry>()
            .filter(Entry::is_vm)
    }

    /// Applies state changes (`None`: undefined): known VMs change in
    /// place, gone ones leave, new ones join at the end in one change of
    /// the list.
    pub fn apply(&mut self, changes: &[(String, Option<DomainState>)]) {
        let mut added: Vec<Entry> = Vec::new();
        for (name, state) in changes {
            match (self.vms.get(name), state) {
                (Some(entry), Some(state)) => entry.set_vm_state(*state),
                (Some(_), None) => {
                    if let Some(entry) = self.vms.remove(name) {
                        match self.store.find(&entry) {
                            Some(i) => self.store.remove(i),
                            None => added.retain(|e| *e != entry),
                        }
                    }
                }
                (None, Some(state)) => {
                    let entry = Entry::new(Kind::Vm(Vm::new(self.id, name.clone(), *state)));
                    self.vms.insert(name.clone(), entry.clone());
                    added.push(entry);
                }
                (None, None) => {}
            }
        }
        if !added.is_empty() {
            self.show_empty(false);
            self.store.splice(self.store.n_items(), 0, &added);
        }
        self.show_empty(self.vms.is_empty());
    }

    /// Takes a VM's statistics; returns the CPU usage they imply.
    pub fn add_stats(&self, stats: &vireo_api::proto::DomainStats) -> Option<f64> {
        self.vms.get(&stats.name)?.add_stats(stats)
    }

    /// Forgets its VMs (disconnected).
    pub fn clear_vms(&mut self) {
        self.vms.clear();
        if !self.removed {
            self.store.splice(
                1,
                self.store.n_items() - 1,
                std::slice::from_ref(&self.empty),
            );
        }
    }

    /// Removes its section.
    pub fn remove_section(&mut self) {
        self.vms.clear();
        self.removed = true;
        self.store.remove_all();
    }

    /// Shows or hides "No virtual machines" under the header.
    fn show_empty(&self, show: bool) {
        if self.removed {
            return;
        }
        let shown = self.store.item(1).is_some_and(|e| e == self.empty);
        if show && !shown {
            self.store.insert(1, &self.empty);
        } else if !show && shown {
            self.store.remove(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use DomainState::*;

    use super::*;

    /// The section as its rows read.
    fn rows(c: &Connection) -> Vec<String> {
        (0..c.store.n_items())
            .map(|i| {
                let entry = c.store.item(i).and_downcast::<Entry>().unwrap();
                match &*entry.kind() {
                    Kind::Header(_) => "header".to_owned(),
                    Kind::Empty => "empty".to_owned(),
                    Kind::Vm(vm) => format!("{} {}", vm.name, vm.state.as_virsh()),
                }
            })
            .collect()
    }

    fn change(name: &str, state: Option<DomainState>) -> (String, Option<DomainState>) {
        (name.to_owned(), state)
    }

    #[test]
    fn a_section_is_its_header_then_its_vms_or_the_empty_line() {
        let mut c = Connection::new(3, Target::LocalSession);
        assert_eq!(rows(&c), ["header", "empty"]);

        c.apply(&[change("a", Some(Shutoff)), change("b", Some(Running))]);
        assert_eq!(rows(&c), ["header", "a shut off", "b running"]);
        assert_eq!(c.first_vm().and_then(|e| e.vm()), Some((3, "a".into())));

        // Changes happen in place (the same entry: a row keeps its
        // selection); a gone VM leaves, a new one joins at the end.
        let a = c.vm("a").unwrap().clone();
        c.apply(&[
            change("a", Some(Running)),
            change("c", Some(Paused)),
            change("b", None),
        ]);
        assert_eq!(rows(&c), ["header", "a running", "c paused"]);
        assert_eq!(c.store.item(1).and_downcast::<Entry>(), Some(a));
        assert_eq!(c.vm_state("a"), Some(Running));
        assert_eq!(c.vm_state("b"), None);

        // Defined and undefined in one batch: never listed.
        c.apply(&[change("d", Some(Shutoff)), change("d", None)]);
        assert_eq!(rows(&c), ["header", "a running", "c paused"]);

        c.apply(&[change("a", None), change("c", None)]);
        assert_eq!(rows(&c), ["header", "empty"]);

        c.apply(&[change("e", Some(Crashed))]);
        c.clear_vms();
        assert_eq!(rows(&c), ["header", "empty"]);
        assert_eq!(c.vm_state("e"), None);

        c.remove_section();
        assert!(rows(&c).is_empty());
        c.apply(&[change("f", Some(Shutoff))]);
        c.apply(&[change("f", None)]);
        assert!(rows(&c).is_empty(), "{:?}", rows(&c));
    }

    #[test]
    fn many_vms_join_the_list_in_one_change() {
        let mut c = Connection::new(0, Target::LocalSession);
        let changes = Rc::new(Cell::new(0));
        let n = changes.clone();
        c.store
            .connect_items_changed(move |_, _, _, _| n.set(n.get() + 1));
        let vms: Vec<_> = (0..500)
            .map(|i| change(&format!("vm-{i:03}"), Some(Shutoff)))
            .collect();
        c.apply(&vms);
        assert_eq!(c.store.n_items(), 501);
        // The empty line goes, the 500 come: two changes, not 500.
        assert_eq!(changes.get(), 2);
        assert_eq!(rows(&c)[500], "vm-499 shut off");
    }

    #[test]
    fn the_header_shows_state_and_error() {
        let mut c = Connection::new(0, Target::LocalSession);
        let header = |c: &Connection| match &*c.header.kind() {
            Kind::Header(h) => (h.status.clone(), h.busy, h.description.clone()),
            _ => unreachable!(),
        };
        assert_eq!(
            header(&c),
            (
                ConnState::Connecting.label(),
                true,
                "vireo:///session".into()
            )
        );
        c.set_state(ConnState::Retrying(4));
        c.set_error(Some("\n  no route to host\nmore"));
        assert_eq!(
            header(&c),
            (
                ConnState::Retrying(4).label(),
                false,
                "vireo:///session\nno route to host".into()
            )
        );
    }
}
