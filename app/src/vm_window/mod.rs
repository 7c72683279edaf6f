//! One VM's window, with three pages as virt-manager has them: the
//! **Console** (the embedded VNC view, with view modes, keyboard grab, Send
//! Key, fullscreen and screenshots, and the serial console as a second
//! console page), the **Details** (overview and hardware list) and the
//! **Performance** graphs.
//!
//! The window keeps its own engine connection with events on, so it
//! follows its domain (state, statistics) without the manager window.
//!
//! Keyboard shortcuts work while the console does not hold the keyboard
//! (press Ctrl+Alt to release it): F11 fullscreen, Ctrl+S screenshot,
//! Alt+1…4 the pages, Ctrl+1…3 the view modes, F10 the Send Key menu.

mod attach;
mod console_page;
mod details;
mod menus;
mod screenshot;
mod serial;

use std::path::PathBuf;

use adw::prelude::*;
use gettextrs::gettext;
use gtk::{gio, glib};
use relm4::prelude::*;
use vireo_api::Domain;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::proto::{DomainInfo, DomainState, Event, Lifecycle, Request};
use vireo_console::{ConsoleView, Input, ResizeRefused, Session, ViewMode};

use self::attach::{Attach, AttachResult};
use self::console_page::ConsolePage;
use self::menus::{actions, mode_name, send_key_combo, send_key_menu, shortcuts, view_menu};
use self::serial::SerialCmd;
use crate::engine::Endpoint;
use crate::serial_view::SerialView;
use crate::vm_perf::PerfPage;

/// The widgets the window updates.
#[derive(Debug)]
struct Ui {
    header: adw::HeaderBar,
    view_button: gtk::MenuButton,
    stack: adw::ViewStack,
    console_stack: gtk::Stack,
    off_page: adw::StatusPage,
    run_button: gtk::Button,
    reconnect_button: gtk::Button,
    grab_hint: gtk::Revealer,
    grab_label: gtk::Label,
    top_bar: gtk::Revealer,
    toasts: adw::ToastOverlay,
    details: adw::PreferencesPage,
    details_groups: Vec<adw::PreferencesGroup>,
    actions: gio::SimpleActionGroup,
}

/// A VM window.
#[derive(Debug)]
pub struct VmWindow {
    name: String,
    /// The engine connection for calls (the window's own once its event
    /// connection is up, the manager's until then).
    client: Option<AsyncClient>,
    /// Where the window's streams go: the connection the VM belongs to.
    endpoint: Endpoint,
    console: ConsoleView,
    session: Option<Session>,
    /// Attach attempts and automatic retries (`attach.rs`).
    attach: Attach,
    /// The message page says the console is not available while the VM
    /// runs (Reconnect is shown).
    console_failed: bool,
    state: Option<DomainState>,
    /// Lifecycle events seen, so that details asked for before one do
    /// not set the state back.
    state_events: u64,
    /// Why the console is not shown (translated), and the details.
    message: Option<(String, String)>,
    /// Why the guest cannot be resized to the window, once known.
    resize_unsupported: Option<String>,
    serial: SerialView,
    serial_client: Option<AsyncClient>,
    serial_connecting: bool,
    perf: PerfPage,
    ui: Ui,
    /// Bumped on every grab change, so only the latest hides the hint.
    hint_serial: u64,
    /// The open Save Screenshot dialog (a native dialog lives only as
    /// long as someone holds it).
    save_dialog: Option<gtk::FileChooserNative>,
}

/// Input to a VM window.
#[derive(Debug)]
pub enum VmMsg {
    /// Press a key combination by its Send Key name.
    SendKey(String),
    /// The console session ended.
    Closed(String),
    /// Start the VM.
    Run,
    /// The VM (re)started, or may have: connect the console.
    Reconnect,
    /// Reconnect was pressed: connect the console now, with a fresh budget
    /// of automatic retries.
    ReconnectNow,
    /// The window was closed: no more automatic retries.
    WindowClosed,
    /// The VM's connection is back (a remote host reconnected): follow its
    /// events again and reconnect the console and serial streams.
    Endpoint(Endpoint),
    /// Fit the screen this way.
    SetViewMode(ViewMode),
    /// The answer to a guest resize request.
    Resized(Result<(), ResizeRefused>),
    /// The console took or released the keyboard.
    Grab(bool),
    /// Hide the grab hint if nothing changed since `serial`.
    HideHint(u64),
    /// Enter or leave fullscreen.
    ToggleFullscreen,
    /// The window entered or left fullscreen.
    Fullscreened(bool),
    /// The pointer is at this height in the window (fullscreen toolbar).
    PointerY(f64),
    /// Ask where to save a screenshot.
    Screenshot,
    /// Save the shown screen here (`None`: the dialog was cancelled).
    SaveScreenshot(Option<PathBuf>),
    /// Typed into the serial console.
    SerialInput(Vec<u8>),
    /// Show this page.
    Page(String),
    /// Show an error's full text.
    ShowDetails(String, String),
    /// Read the domain's details again.
    RefreshDetails,
}

/// Results of work off the GTK thread.
#[derive(Debug)]
pub enum VmCmd {
    /// Attach attempt number `.0` ended.
    Attach(u64, AttachResult),
    /// The automatic retry with this token is due.
    RetryDue(u64),
    /// The window's own engine connection is up.
    Connected(AsyncClient),
    /// Something for this window arrived on it.
    Incoming(Incoming),
    /// The domain's details, asked for after `.2` lifecycle events.
    Details(Box<DomainInfo>, Option<Box<Domain>>, u64),
    /// The serial console's stream.
    Serial(SerialCmd),
    /// A call failed: headline (translated) and details.
    Error(String, String),
    /// A screenshot was saved here.
    Saved(PathBuf),
    /// Nothing to do.
    Done,
}

impl VmWindow {
    fn toast(&self, headline: &str, details: String, sender: &ComponentSender<Self>) {
        let toast = adw::Toast::new(headline);
        toast.set_button_label(Some(&gettext("Details")));
        let sender = sender.clone();
        let title = headline.to_owned();
        toast.connect_button_clicked(move |_| {
            sender.input(VmMsg::ShowDetails(title.clone(), details.clone()));
        });
        self.ui.toasts.add_toast(toast);
    }

    /// Brings the widgets in line with the model.
    fn refresh(&self) {
        let ui = &self.ui;
        let (title, details) = match &self.message {
            Some(m) => (m.0.as_str(), Some(m.1.as_str())),
            None => ("", None),
        };
        ui.off_page.set_title(title);
        // The description is Pango markup; the engine's text may hold
        // '<' (e.g. "no <graphics type='vnc'>").
        ui.off_page
            .set_description(details.map(glib::markup_escape_text).as_deref());
        ui.run_button.set_visible(
            self.client.is_some()
                && self.session.is_none()
                && !self.state.is_some_and(DomainState::is_active),
        );
        ui.reconnect_button
            .set_visible(self.session.is_none() && self.console_failed);
        ui.console_stack
            .set_visible_child_name(if self.message.is_some() {
                "message"
            } else {
                "console"
            });
        let has_screen = self.session.is_some();
        for name in ["send-key", "screenshot"] {
            if let Some(a) = ui.actions.lookup_action(name) {
                a.downcast::<gio::SimpleAction>()
                    .expect("simple action")
                    .set_enabled(has_screen);
            }
        }
    }

    /// The window's own connection, for this domain's events.
    fn watch(&self, sender: &ComponentSender<Self>) {
        let endpoint = self.endpoint.clone();
        sender.command(move |out, shutdown| {
            shutdown
                .register(async move {
                    let (client, mut incoming) = match endpoint.client(true).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = out
                                .send(VmCmd::Error(gettext("Could not connect to the engine"), e));
                            return;
                        }
                    };
                    if out.send(VmCmd::Connected(client)).is_err() {
                        return;
                    }
                    while let Some(msg) = incoming.recv().await {
                        let end = matches!(msg, Incoming::Disconnected(_));
                        if out.send(VmCmd::Incoming(msg)).is_err() || end {
                            return;
                        }
                    }
                })
                .drop_on_shutdown()
        });
    }

    /// The guest answered a resize request.
    fn resized(&mut self, result: Result<(), ResizeRefused>, sender: &ComponentSender<Self>) {
        match result {
            Ok(()) => tracing::info!("console {}: guest resized", self.name),
            Err(ResizeRefused::Unsupported(why)) => {
                tracing::info!("console {}: resize unsupported: {why}", self.name);
                self.ui
                    .view_button
                    .set_menu_model(Some(&view_menu(Some(&why))));
                self.resize_unsupported = Some(why.clone());
                if self.console.mode() == ViewMode::ResizeGuest {
                    self.console.set_mode(ViewMode::Scale);
                    if let Some(a) = self.ui.actions.lookup_action("view-mode") {
                        a.change_state(&"scale".to_variant());
                    }
                    self.toast(
                        &gettext("This virtual machine’s screen cannot be resized from here"),
                        why,
                        sender,
                    );
                }
            }
            Err(ResizeRefused::Failed(why)) => {
                tracing::info!("console {}: resize failed: {why}", self.name);
            }
        }
    }

    fn set_view_mode(&mut self, mode: ViewMode, sender: &ComponentSender<Self>) {
        if mode == ViewMode::ResizeGuest
            && let Some(why) = &self.resize_unsupported
        {
            self.toast(
                &gettext("This virtual machine’s screen cannot be resized from here"),
                why.clone(),
                sender,
            );
            return;
        }
        tracing::info!("console {}: view mode {}", self.name, mode_name(mode));
        self.console.set_mode(mode);
        if let Some(a) = self.ui.actions.lookup_action("view-mode") {
            a.change_state(&mode_name(mode).to_variant());
        }
    }

    /// The console took or released the keyboard: the hint says how to
    /// get it back or out, for a few seconds.
    fn grab(&mut self, grabbed: bool, sender: &ComponentSender<Self>) {
        tracing::info!(
            "console {}: keyboard {}",
            self.name,
            if grabbed { "grabbed" } else { "released" }
        );
        self.ui.grab_label.set_text(&if grabbed {
            gettext("Press Ctrl+Alt to release the keyboard")
        } else {
            gettext("Click the screen to send the keyboard to the virtual machine")
        });
        self.ui.grab_hint.set_reveal_child(true);
        self.hint_serial += 1;
        let serial = self.hint_serial;
        let s = sender.clone();
        glib::timeout_add_local_once(std::time::Duration::from_secs(4), move || {
            s.input(VmMsg::HideHint(serial));
        });
    }

    /// The pointer moved: in fullscreen, the toolbar shows near the top.
    fn pointer_y(&self, y: f64, root: &adw::Window) {
        if root.is_fullscreen() {
            let shown = self.ui.top_bar.reveals_child();
            let limit = if shown {
                f64::from(self.ui.top_bar.height()) + 32.0
            } else {
                8.0
            };
            let show = y <= limit;
            if show != shown {
                tracing::info!("console {}: fullscreen toolbar shown: {show}", self.name);
            }
            self.ui.top_bar.set_reveal_child(show);
        }
    }

    fn toggle_fullscreen(&self, root: &adw::Window) {
        tracing::info!(
            "console {}: fullscreen requested: {}",
            self.name,
            !root.is_fullscreen()
        );
        if root.is_fullscreen() {
            root.unfullscreen();
        } else {
            self.ui.stack.set_visible_child_name("console");
            root.fullscreen();
        }
    }

    fn send_key(&self, name: &str) {
        if let (Some(s), Some(keys)) = (&self.session, send_key_combo(name)) {
            tracing::info!("console {}: send key {name}", self.name);
            for &keysym in &keys {
                s.send(Input::Key { keysym, down: true });
            }
            for &keysym in keys.iter().rev() {
                s.send(Input::Key {
                    keysym,
                    down: false,
                });
            }
        }
    }

    fn run(&self, sender: &ComponentSender<Self>) {
        if let Some(client) = self.client.clone() {
            let name = self.name.clone();
            sender.oneshot_command(async move {
                match client.call(Request::Start { domain: name }).await {
                    // The Started event reconnects the console.
                    Ok(_) => VmCmd::Done,
                    Err(e) => VmCmd::Error(
                        gettext("Could not start the virtual machine"),
                        e.to_string(),
                    ),
                }
            });
        }
    }

    fn lifecycle(&mut self, change: Lifecycle, sender: &ComponentSender<Self>) {
        tracing::info!("vm window {}: {change:?}", self.name);
        match change {
            Lifecycle::Started | Lifecycle::Resumed => {
                self.set_state(DomainState::Running, "", sender)
            }
            Lifecycle::Paused => self.set_state(DomainState::Paused, "", sender),
            Lifecycle::Stopped { reason } => self.set_state(DomainState::Shutoff, &reason, sender),
            Lifecycle::Crashed { reason } => self.set_state(DomainState::Crashed, &reason, sender),
            Lifecycle::Defined | Lifecycle::Undefined => {}
        }
        self.fetch_details(sender);
    }
}

impl Component for VmWindow {
    /// The domain's name, the manager's engine connection and where its
    /// streams go.
    type Init = (String, Option<AsyncClient>, Endpoint);
    type Input = VmMsg;
    type Output = ();
    type CommandOutput = VmCmd;
    type Root = adw::Window;
    type Widgets = ();

    fn init_root() -> adw::Window {
        adw::Window::builder()
            .default_width(860)
            .default_height(700)
            .build()
    }

    fn init(
        (name, client, endpoint): Self::Init,
        root: Self::Root,
        sender: ComponentSender<Self>,
    ) -> ComponentParts<Self> {
        root.set_title(Some(&gettext("{name} – Vireo").replace("{name}", &name)));

        let actions = actions(&sender);
        root.insert_action_group("vm", Some(&actions));

        let (shortcuts, page_keys) = shortcuts();
        root.add_controller(shortcuts);

        let console = ConsoleView::new();
        let ConsolePage {
            overlay: console_overlay,
            console_stack,
            off_page,
            run_button,
            reconnect_button,
            grab_hint,
            grab_label,
            top_bar,
        } = ConsolePage::new(&console);

        // On the whole window, in window coordinates: its top rows may be
        // the window's border rather than the console.
        let motion = gtk::EventControllerMotion::new();
        let s = sender.clone();
        motion.connect_motion(move |_, _, y| s.input(VmMsg::PointerY(y)));
        root.add_controller(motion);

        let serial_sender = sender.clone();
        let serial = SerialView::new(move |data| serial_sender.input(VmMsg::SerialInput(data)));
        serial.widget().add_controller(page_keys);
        let perf = PerfPage::new();
        let details = adw::PreferencesPage::new();

        let stack = adw::ViewStack::new();
        stack.set_vexpand(true);
        stack
            .add_titled(&console_overlay, Some("console"), &gettext("Console"))
            .set_icon_name(Some("computer-symbolic"));
        stack
            .add_titled(serial.widget(), Some("serial"), &gettext("Serial"))
            .set_icon_name(Some("utilities-terminal-symbolic"));
        stack
            .add_titled(&details, Some("details"), &gettext("Details"))
            .set_icon_name(Some("dialog-information-symbolic"));
        stack
            .add_titled(perf.widget(), Some("performance"), &gettext("Performance"))
            .set_icon_name(Some("power-profile-performance-symbolic"));
        // Weak: the stack owns this handler and, through its pages, both
        // widgets.
        let c = console.focus_widget().downgrade();
        let ser = serial.terminal().downgrade();
        let s = sender.clone();
        stack.connect_visible_child_name_notify(move |st| {
            let page = st.visible_child_name().unwrap_or_default();
            tracing::info!("vm window: page {page}");
            match page.as_str() {
                "console" => {
                    if let Some(w) = c.upgrade() {
                        w.grab_focus();
                    }
                }
                "serial" => {
                    if let Some(w) = ser.upgrade() {
                        w.grab_focus();
                    }
                }
                "details" => s.input(VmMsg::RefreshDetails),
                _ => {}
            }
        });

        let switcher = adw::ViewSwitcherTitle::new();
        switcher.set_stack(Some(&stack));
        switcher.set_title(&name);
        let header = adw::HeaderBar::new();
        header.set_title_widget(Some(&switcher));
        let keys_button = gtk::MenuButton::new();
        keys_button.set_icon_name("input-keyboard-symbolic");
        keys_button.set_tooltip_text(Some(&gettext("Send Key")));
        keys_button.set_menu_model(Some(&send_key_menu()));
        keys_button.set_primary(true);
        header.pack_end(&keys_button);
        let view_button = gtk::MenuButton::new();
        view_button.set_icon_name("view-fullscreen-symbolic");
        view_button.set_tooltip_text(Some(&gettext("View")));
        view_button.set_menu_model(Some(&view_menu(None)));
        header.pack_end(&view_button);

        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&stack));
        // In a narrow window the switcher moves to a bar at the bottom.
        let switcher_bar = adw::ViewSwitcherBar::new();
        switcher_bar.set_stack(Some(&stack));
        switcher
            .bind_property("title-visible", &switcher_bar, "reveal")
            .sync_create()
            .build();
        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&header);
        content.append(&toasts);
        content.append(&switcher_bar);
        root.set_content(Some(&content));
        let s = sender.clone();
        root.connect_fullscreened_notify(move |w| s.input(VmMsg::Fullscreened(w.is_fullscreen())));
        let s = sender.clone();
        root.connect_close_request(move |_| {
            s.input(VmMsg::WindowClosed);
            glib::Propagation::Proceed
        });

        let s = sender.clone();
        console.connect_grab_changed(move |g| s.input(VmMsg::Grab(g)));

        let model = VmWindow {
            name: name.clone(),
            client,
            endpoint,
            console,
            session: None,
            attach: Attach::default(),
            console_failed: false,
            state: None,
            state_events: 0,
            message: None,
            resize_unsupported: None,
            serial,
            serial_client: None,
            serial_connecting: false,
            perf,
            ui: Ui {
                header,
                view_button,
                stack,
                console_stack,
                off_page,
                run_button,
                reconnect_button,
                grab_hint,
                grab_label,
                top_bar,
                toasts,
                details,
                details_groups: Vec::new(),
                actions,
            },
            hint_serial: 0,
            save_dialog: None,
        };

        model.watch(&sender);
        model.refresh();
        model.fetch_details(&sender);
        sender.input(VmMsg::Reconnect);
        ComponentParts { model, widgets: () }
    }

    fn update(&mut self, msg: VmMsg, sender: ComponentSender<Self>, root: &Self::Root) {
        match msg {
            VmMsg::SendKey(name) => self.send_key(&name),
            VmMsg::Closed(why) => self.console_closed(why, &sender, root),
            VmMsg::Run => self.run(&sender),
            VmMsg::Endpoint(endpoint) => {
                tracing::info!("vm window {}: connection back", self.name);
                self.endpoint = endpoint;
                self.client = None;
                self.watch(&sender);
                // An attempt through the old connection may never answer.
                self.attach.reset();
                self.reconnect(true, &sender);
            }
            VmMsg::Reconnect => self.reconnect(false, &sender),
            VmMsg::ReconnectNow => {
                tracing::info!("console {}: Reconnect pressed", self.name);
                self.attach.reset();
                self.reconnect(true, &sender);
            }
            VmMsg::WindowClosed => {
                tracing::info!("vm window {}: closed", self.name);
                self.attach.stop_retrying();
            }
            VmMsg::SetViewMode(mode) => self.set_view_mode(mode, &sender),
            VmMsg::Resized(result) => self.resized(result, &sender),
            VmMsg::Grab(grabbed) => self.grab(grabbed, &sender),
            VmMsg::HideHint(serial) => {
                if serial == self.hint_serial {
                    self.ui.grab_hint.set_reveal_child(false);
                }
            }
            VmMsg::ToggleFullscreen => self.toggle_fullscreen(root),
            VmMsg::Fullscreened(full) => {
                tracing::info!("console {}: fullscreen {full}", self.name);
                self.ui.header.set_visible(!full);
                self.ui.top_bar.set_reveal_child(false);
            }
            VmMsg::PointerY(y) => self.pointer_y(y, root),
            VmMsg::Screenshot => self.ask_screenshot(root, &sender),
            VmMsg::SaveScreenshot(path) => self.save_screenshot(path, &sender),
            VmMsg::SerialInput(data) => self.serial_input(data, &sender),
            VmMsg::Page(page) => self.ui.stack.set_visible_child_name(&page),
            VmMsg::RefreshDetails => self.fetch_details(&sender),
            VmMsg::ShowDetails(title, details) => {
                let dialog = adw::MessageDialog::new(Some(root), Some(&title), Some(&details));
                dialog.add_response("close", &gettext("Close"));
                dialog.present();
            }
        }
        self.refresh();
    }

    fn update_cmd(&mut self, cmd: VmCmd, sender: ComponentSender<Self>, root: &Self::Root) {
        match cmd {
            VmCmd::Attach(generation, result) => {
                self.attach_answer(generation, result, &sender, root)
            }
            VmCmd::RetryDue(token) => self.retry_due(token, &sender, root),
            VmCmd::Connected(client) => {
                self.client = Some(client);
                self.fetch_details(&sender);
                // Ask again with the check this connection allows (an
                // attempt without it may have got the engine's refusal
                // for a VM that is off); a pending retry will.
                if self.session.is_none() && self.message.is_some() && !self.attach.retry_pending()
                {
                    sender.input(VmMsg::Reconnect);
                }
            }
            VmCmd::Incoming(Incoming::Event(Event::Lifecycle { name, change, .. })) => {
                if name == self.name {
                    self.lifecycle(change, &sender);
                }
            }
            VmCmd::Incoming(Incoming::Event(Event::Stats { domains })) => {
                if let Some(stats) = domains.iter().find(|d| d.name == self.name) {
                    self.perf.add(stats);
                }
            }
            VmCmd::Incoming(Incoming::Disconnected(why)) => {
                self.toast(&gettext("Lost the connection to the engine"), why, &sender);
            }
            VmCmd::Incoming(_) => {}
            VmCmd::Details(info, domain, events) => {
                // A lifecycle event since the question is newer news.
                if events == self.state_events {
                    self.state = Some(info.summary.state);
                }
                self.show_details(&info, domain.as_deref());
            }
            VmCmd::Serial(cmd) => self.serial_cmd(cmd),
            VmCmd::Error(headline, details) => {
                tracing::info!("vm window {}: {headline}: {details}", self.name);
                self.toast(&headline, details, &sender);
            }
            VmCmd::Saved(path) => {
                tracing::info!(
                    "console {}: screenshot saved to {}",
                    self.name,
                    path.display()
                );
                self.toast(
                    &gettext("Screenshot saved"),
                    path.display().to_string(),
                    &sender,
                );
            }
            VmCmd::Done => {}
        }
        self.refresh();
    }
}
