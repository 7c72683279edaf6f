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

use std::path::PathBuf;

use adw::prelude::*;
use gettextrs::gettext;
use gtk::{gio, glib};
use relm4::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::Domain;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::proto::{DomainInfo, DomainState, Event, Lifecycle, Request, Response};
use vireo_console::{ConsoleEvent, ConsoleView, Input, ResizeRefused, Session, ViewMode};

use crate::engine::Endpoint;
use crate::serial_view::SerialView;
use crate::vm_details;
use crate::vm_perf::PerfPage;

/// X keysyms used by the Send Key menu.
mod keysym {
    pub const CONTROL_L: u32 = 0xffe3;
    pub const ALT_L: u32 = 0xffe9;
    pub const DELETE: u32 = 0xffff;
    pub const BACKSPACE: u32 = 0xff08;
    pub const PRINT: u32 = 0xff61;
    pub const F1: u32 = 0xffbe;
}

/// The keys a Send Key item names (`ctrl-alt-del`, `ctrl-alt-backspace`,
/// `ctrl-alt-f1` … `ctrl-alt-f12`, `print`), as keysyms pressed in order.
pub fn send_key_combo(name: &str) -> Option<Vec<u32>> {
    use keysym::*;
    let ctrl_alt = |k: u32| vec![CONTROL_L, ALT_L, k];
    match name {
        "ctrl-alt-del" => Some(ctrl_alt(DELETE)),
        "ctrl-alt-backspace" => Some(ctrl_alt(BACKSPACE)),
        "print" => Some(vec![PRINT]),
        _ => {
            let n: u32 = name.strip_prefix("ctrl-alt-f")?.parse().ok()?;
            (1..=12).contains(&n).then(|| ctrl_alt(F1 + n - 1))
        }
    }
}

/// The Send Key menu (shared by the header bar and the fullscreen toolbar).
fn send_key_menu() -> gio::Menu {
    let menu = gio::Menu::new();
    let top = gio::Menu::new();
    top.append(
        Some(&gettext("Ctrl+Alt+Del")),
        Some("vm.send-key::ctrl-alt-del"),
    );
    top.append(
        Some(&gettext("Ctrl+Alt+Backspace")),
        Some("vm.send-key::ctrl-alt-backspace"),
    );
    menu.append_section(None, &top);
    let f = gio::Menu::new();
    for n in 1..=12 {
        // Translators: a key combination, e.g. "Ctrl+Alt+F1".
        let label = gettext("Ctrl+Alt+F{n}").replace("{n}", &n.to_string());
        f.append(Some(&label), Some(&format!("vm.send-key::ctrl-alt-f{n}")));
    }
    menu.append_section(None, &f);
    let p = gio::Menu::new();
    p.append(Some(&gettext("Print Screen")), Some("vm.send-key::print"));
    menu.append_section(None, &p);
    menu
}

/// The View menu: view modes, fullscreen, screenshot. `resize_refused`
/// says why the guest cannot follow the window's size, once known: the
/// item is then greyed out and says so.
fn view_menu(resize_refused: Option<&str>) -> gio::Menu {
    let menu = gio::Menu::new();
    let modes = gio::Menu::new();
    modes.append(
        Some(&gettext("Scale to Window")),
        Some("vm.view-mode::scale"),
    );
    modes.append(
        Some(&gettext("Original Size (1:1)")),
        Some("vm.view-mode::1:1"),
    );
    match resize_refused {
        None => modes.append(
            Some(&gettext("Resize Guest to Window")),
            Some("vm.view-mode::resize"),
        ),
        Some(why) => {
            let item = gio::MenuItem::new(
                Some(&gettext(
                    "Resize Guest to Window (not possible for this guest)",
                )),
                Some("vm.resize-unavailable"),
            );
            item.set_attribute_value("tooltip", Some(&why.to_variant()));
            modes.append_item(&item);
        }
    }
    menu.append_section(None, &modes);
    let other = gio::Menu::new();
    other.append(Some(&gettext("Fullscreen")), Some("vm.fullscreen"));
    other.append(Some(&gettext("Save Screenshot…")), Some("vm.screenshot"));
    menu.append_section(None, &other);
    menu
}

fn mode_name(mode: ViewMode) -> &'static str {
    match mode {
        ViewMode::Scale => "scale",
        ViewMode::OneToOne => "1:1",
        ViewMode::ResizeGuest => "resize",
    }
}

/// The window's actions, in the "vm" group.
fn actions(sender: &ComponentSender<VmWindow>) -> gio::SimpleActionGroup {
    let actions = gio::SimpleActionGroup::new();
    let add = |name: &str,
               param: Option<&glib::VariantTy>,
               msg: fn(Option<&glib::Variant>) -> Option<VmMsg>| {
        let a = gio::SimpleAction::new(name, param);
        let s = sender.clone();
        a.connect_activate(move |_, p| {
            if let Some(m) = msg(p) {
                s.input(m);
            }
        });
        actions.add_action(&a);
    };
    add("send-key", Some(glib::VariantTy::STRING), |p| {
        p.and_then(|p| p.str())
            .map(|s| VmMsg::SendKey(s.to_owned()))
    });
    add("fullscreen", None, |_| Some(VmMsg::ToggleFullscreen));
    add("screenshot", None, |_| Some(VmMsg::Screenshot));
    add("run", None, |_| Some(VmMsg::Run));
    add("page", Some(glib::VariantTy::STRING), |p| {
        p.and_then(|p| p.str()).map(|s| VmMsg::Page(s.to_owned()))
    });
    let mode = gio::SimpleAction::new_stateful(
        "view-mode",
        Some(glib::VariantTy::STRING),
        &"scale".to_variant(),
    );
    let s = sender.clone();
    mode.connect_activate(move |_, p| {
        let m = match p.and_then(|p| p.str()) {
            Some("1:1") => ViewMode::OneToOne,
            Some("resize") => ViewMode::ResizeGuest,
            _ => ViewMode::Scale,
        };
        s.input(VmMsg::SetViewMode(m));
    });
    actions.add_action(&mode);
    // Stands for the resize mode once the guest turned it down: never
    // enabled, so its menu item is greyed out.
    let unavailable = gio::SimpleAction::new("resize-unavailable", None);
    unavailable.set_enabled(false);
    actions.add_action(&unavailable);
    actions
}

/// The window's shortcuts: the first on the window, in the bubble phase
/// (while the console holds the keyboard it stops every key before they
/// get there); the second, in the capture phase, for the serial page.
fn shortcuts() -> (gtk::ShortcutController, gtk::ShortcutController) {
    let shortcuts = gtk::ShortcutController::new();
    shortcuts.set_scope(gtk::ShortcutScope::Local);
    // The serial terminal takes every key too; switching pages from it
    // works as in GNOME Terminal's tabs: Alt+number, caught before the
    // terminal sees it.
    let page_keys = gtk::ShortcutController::new();
    page_keys.set_propagation_phase(gtk::PropagationPhase::Capture);
    let shortcut =
        |c: &gtk::ShortcutController, trigger: &str, action: &str, arg: Option<glib::Variant>| {
            let s = gtk::Shortcut::new(
                gtk::ShortcutTrigger::parse_string(trigger),
                Some(gtk::NamedAction::new(action)),
            );
            s.set_arguments(arg.as_ref());
            c.add_shortcut(s);
        };
    shortcut(&shortcuts, "F11", "vm.fullscreen", None);
    shortcut(&shortcuts, "<Control>s", "vm.screenshot", None);
    for (i, page) in ["console", "serial", "details", "performance"]
        .into_iter()
        .enumerate()
    {
        let trigger = format!("<Alt>{}", i + 1);
        shortcut(&shortcuts, &trigger, "vm.page", Some(page.to_variant()));
        shortcut(&page_keys, &trigger, "vm.page", Some(page.to_variant()));
    }
    for (i, m) in ["scale", "1:1", "resize"].into_iter().enumerate() {
        let trigger = format!("<Control>{}", i + 1);
        shortcut(&shortcuts, &trigger, "vm.view-mode", Some(m.to_variant()));
    }
    (shortcuts, page_keys)
}

/// The console page: the screen or the "off" page, the grab hint and the
/// fullscreen toolbar over it.
#[derive(Debug)]
struct ConsolePage {
    overlay: gtk::Overlay,
    console_stack: gtk::Stack,
    off_page: adw::StatusPage,
    run_button: gtk::Button,
    grab_hint: gtk::Revealer,
    grab_label: gtk::Label,
    top_bar: gtk::Revealer,
}

impl ConsolePage {
    fn new(console: &ConsoleView) -> Self {
        let off_page = adw::StatusPage::new();
        off_page.set_icon_name(Some("computer-symbolic"));
        let run_button = gtk::Button::with_label(&gettext("Run"));
        run_button.set_halign(gtk::Align::Center);
        run_button.add_css_class("pill");
        run_button.add_css_class("suggested-action");
        run_button.set_action_name(Some("vm.run"));
        off_page.set_child(Some(&run_button));
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
            grab_hint,
            grab_label,
            top_bar,
        }
    }
}

/// The widgets the window updates.
#[derive(Debug)]
struct Ui {
    header: adw::HeaderBar,
    view_button: gtk::MenuButton,
    stack: adw::ViewStack,
    console_stack: gtk::Stack,
    off_page: adw::StatusPage,
    run_button: gtk::Button,
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
    connecting: bool,
    state: Option<DomainState>,
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
    /// The console is connected.
    Attached(Session, UnboundedReceiver<ConsoleEvent>),
    /// It could not be.
    Failed(String),
    /// The VM is not running.
    Off(DomainInfo),
    /// The window's own engine connection is up.
    Connected(AsyncClient),
    /// Something for this window arrived on it.
    Incoming(Incoming),
    /// The domain's details.
    Details(Box<DomainInfo>, Option<Box<Domain>>),
    /// The serial console is open.
    SerialAttached(AsyncClient),
    /// Bytes from the serial console.
    SerialOutput(Vec<u8>),
    /// The serial console ended or could not open.
    SerialClosed(String),
    /// Another client (named) holds the serial console, or (`None`) no
    /// longer does.
    SerialHeld(Option<String>),
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
        ui.off_page.set_description(details);
        ui.run_button.set_visible(
            self.client.is_some()
                && self.session.is_none()
                && !self.state.is_some_and(DomainState::is_active),
        );
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

    fn show_details(&mut self, info: &DomainInfo, domain: Option<&Domain>) {
        let mut sections = vec![vm_details::overview(info, domain)];
        if let Some(d) = domain {
            sections.extend(vm_details::hardware(d));
        }
        let old = std::mem::take(&mut self.ui.details_groups);
        self.ui.details_groups = vm_details::show(&self.ui.details, old, &sections);
        tracing::info!(
            "details {}: uuid {} state {}",
            self.name,
            info.summary.uuid,
            info.summary.state.as_virsh()
        );
    }

    fn fetch_details(&self, sender: &ComponentSender<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let name = self.name.clone();
        sender.oneshot_command(async move {
            let info = match client
                .call(Request::DomInfo {
                    domain: name.clone(),
                })
                .await
            {
                Ok(Response::Info { info }) => info,
                Ok(other) => {
                    return VmCmd::Error(
                        gettext("Could not read the virtual machine’s details"),
                        format!("unexpected answer {other:?}"),
                    );
                }
                Err(e) => {
                    return VmCmd::Error(
                        gettext("Could not read the virtual machine’s details"),
                        e.to_string(),
                    );
                }
            };
            let domain = match client
                .call(Request::DumpXml {
                    domain: name,
                    inactive: false,
                })
                .await
            {
                Ok(Response::Xml { xml }) => Domain::from_xml(&xml).ok().map(Box::new),
                _ => None,
            };
            VmCmd::Details(Box::new(info), domain)
        });
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

    fn open_serial(&mut self, sender: &ComponentSender<Self>) {
        if self.serial_client.is_some() || self.serial_connecting {
            return;
        }
        self.serial_connecting = true;
        let name = self.name.clone();
        let endpoint = self.endpoint.clone();
        sender.command(move |out, shutdown| {
            shutdown
                .register(async move {
                    let (client, mut incoming) = match endpoint.open_serial(&name).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = out.send(VmCmd::SerialClosed(e));
                            return;
                        }
                    };
                    let _ = out.send(VmCmd::SerialAttached(client));
                    while let Some(msg) = incoming.recv().await {
                        let cmd = match msg {
                            Incoming::ConsoleOutput(data) => VmCmd::SerialOutput(data),
                            Incoming::ConsoleClosed => {
                                VmCmd::SerialClosed("the serial console ended".into())
                            }
                            Incoming::Disconnected(why) => VmCmd::SerialClosed(why),
                            Incoming::ConsoleHeld(by) => VmCmd::SerialHeld(Some(by)),
                            Incoming::ConsoleReleased => VmCmd::SerialHeld(None),
                            Incoming::Event(_) => continue,
                        };
                        let end = matches!(cmd, VmCmd::SerialClosed(_));
                        if out.send(cmd).is_err() || end {
                            return;
                        }
                    }
                })
                .drop_on_shutdown()
        });
    }

    fn set_state(&mut self, state: DomainState, reason: &str, sender: &ComponentSender<Self>) {
        self.state = Some(state);
        if state.is_active() {
            sender.input(VmMsg::Reconnect);
        } else {
            self.perf.clear();
            if self.session.is_none() {
                self.show_off(state, reason);
            }
        }
    }

    /// Says on the console page that the VM is off (or crashed, and why).
    fn show_off(&mut self, state: DomainState, reason: &str) {
        tracing::info!("console {}: the VM is off", self.name);
        self.message = Some(if state == DomainState::Crashed {
            (
                gettext("The virtual machine crashed"),
                // Translators: {reason} is the engine's text.
                gettext("{reason}. Run it again to see its screen here.")
                    .replace("{reason}", reason),
            )
        } else {
            (
                gettext("The virtual machine is off"),
                gettext("Run it to see its screen here."),
            )
        });
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
        console.connect_grab_changed(move |g| s.input(VmMsg::Grab(g)));

        let model = VmWindow {
            name: name.clone(),
            client,
            endpoint,
            console,
            session: None,
            connecting: false,
            state: None,
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
            VmMsg::SendKey(name) => {
                if let (Some(s), Some(keys)) = (&self.session, send_key_combo(&name)) {
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
            VmMsg::Closed(why) => {
                tracing::info!("console {}: closed: {why}", self.name);
                self.session = None;
                self.message = Some((gettext("The virtual machine is off"), String::new()));
                // Ask why (off or crashed), and refresh the details.
                sender.input(VmMsg::Reconnect);
            }
            VmMsg::Run => {
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
            VmMsg::Endpoint(endpoint) => {
                tracing::info!("vm window {}: connection back", self.name);
                self.endpoint = endpoint;
                self.client = None;
                self.watch(&sender);
                sender.input(VmMsg::Reconnect);
            }
            VmMsg::Reconnect => {
                if self.session.is_some() || self.connecting {
                    return;
                }
                self.connecting = true;
                let name = self.name.clone();
                let client = self.client.clone();
                let endpoint = self.endpoint.clone();
                sender.oneshot_command(async move {
                    // Ask first, so a VM that is off gets a plain sentence
                    // rather than the engine's refusal to attach.
                    if let Some(c) = &client
                        && let Ok(Response::Info { info }) = c
                            .call(Request::DomInfo {
                                domain: name.clone(),
                            })
                            .await
                        && !info.summary.state.is_active()
                    {
                        return VmCmd::Off(info);
                    }
                    match endpoint.open_console(&name).await {
                        Ok((session, events)) => VmCmd::Attached(session, events),
                        Err(e) => VmCmd::Failed(e),
                    }
                });
                self.open_serial(&sender);
            }
            VmMsg::SetViewMode(mode) => {
                if mode == ViewMode::ResizeGuest
                    && let Some(why) = &self.resize_unsupported
                {
                    self.toast(
                        &gettext("This virtual machine’s screen cannot be resized from here"),
                        why.clone(),
                        &sender,
                    );
                    return;
                }
                tracing::info!("console {}: view mode {}", self.name, mode_name(mode));
                self.console.set_mode(mode);
                if let Some(a) = self.ui.actions.lookup_action("view-mode") {
                    a.change_state(&mode_name(mode).to_variant());
                }
            }
            VmMsg::Resized(result) => match result {
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
                            &sender,
                        );
                    }
                }
                Err(ResizeRefused::Failed(why)) => {
                    tracing::info!("console {}: resize failed: {why}", self.name);
                }
            },
            VmMsg::Grab(grabbed) => {
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
            VmMsg::HideHint(serial) => {
                if serial == self.hint_serial {
                    self.ui.grab_hint.set_reveal_child(false);
                }
            }
            VmMsg::ToggleFullscreen => {
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
            VmMsg::Fullscreened(full) => {
                tracing::info!("console {}: fullscreen {full}", self.name);
                self.ui.header.set_visible(!full);
                self.ui.top_bar.set_reveal_child(false);
            }
            VmMsg::PointerY(y) => {
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
            VmMsg::Screenshot => {
                if self.console.screenshot_png().is_none() {
                    tracing::info!("console {}: no screen to save", self.name);
                    return;
                }
                tracing::info!("console {}: save screenshot", self.name);
                let dialog = gtk::FileChooserNative::new(
                    Some(&gettext("Save Screenshot")),
                    Some(root),
                    gtk::FileChooserAction::Save,
                    Some(&gettext("_Save")),
                    Some(&gettext("_Cancel")),
                );
                let filter = gtk::FileFilter::new();
                filter.set_name(Some(&gettext("PNG images")));
                filter.add_mime_type("image/png");
                dialog.add_filter(&filter);
                let folder = glib::user_special_dir(glib::UserDirectory::Pictures)
                    .filter(|p| p.is_dir())
                    .unwrap_or_else(glib::home_dir);
                let _ = dialog.set_current_folder(Some(&gio::File::for_path(folder)));
                let stamp = glib::DateTime::now_local()
                    .and_then(|t| t.format("%Y-%m-%d %H-%M-%S"))
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                // Translators: the suggested file name of a screenshot,
                // e.g. "demo 2024-05-01 12-00-00.png".
                dialog.set_current_name(
                    &gettext("{name} {date}.png")
                        .replace("{name}", &self.name)
                        .replace("{date}", &stamp),
                );
                let s = sender.clone();
                dialog.connect_response(move |d, response| {
                    let path = (response == gtk::ResponseType::Accept)
                        .then(|| d.file().and_then(|f| f.path()))
                        .flatten();
                    s.input(VmMsg::SaveScreenshot(path));
                    d.destroy();
                });
                dialog.show();
                self.save_dialog = Some(dialog);
            }
            VmMsg::SaveScreenshot(path) => {
                self.save_dialog = None;
                let (Some(path), Some(png)) = (path, self.console.screenshot_png()) else {
                    return;
                };
                let png = png.to_vec();
                sender.oneshot_command(async move {
                    let tmp = path.with_extension("png.part");
                    let written = tokio::fs::write(&tmp, &png).await;
                    match written.and(tokio::fs::rename(&tmp, &path).await) {
                        Ok(()) => VmCmd::Saved(path),
                        Err(e) => {
                            let _ = tokio::fs::remove_file(&tmp).await;
                            VmCmd::Error(
                                gettext("Could not save the screenshot"),
                                format!("{}: {e}", path.display()),
                            )
                        }
                    }
                });
            }
            VmMsg::SerialInput(data) => {
                // (The engine would drop it while another client holds
                // the console.)
                if !self.serial.input_enabled() {
                    tracing::debug!("serial {}: input while held, not sent", self.name);
                } else if let Some(c) = self.serial_client.clone() {
                    sender.oneshot_command(async move {
                        match c.console_input(&data).await {
                            Ok(()) => VmCmd::Done,
                            Err(e) => VmCmd::SerialClosed(e.to_string()),
                        }
                    });
                }
            }
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
            VmCmd::Attached(session, events) => {
                self.connecting = false;
                let input = sender.input_sender().clone();
                let resized = sender.input_sender().clone();
                self.console.attach(
                    session.clone(),
                    events,
                    move |r| resized.emit(VmMsg::Resized(r)),
                    move |why| input.emit(VmMsg::Closed(why)),
                );
                self.session = Some(session.clone());
                self.message = None;
                self.state = Some(DomainState::Running);
                if self.ui.stack.visible_child_name().as_deref() == Some("console") {
                    self.console.focus_widget().grab_focus();
                }
                tracing::info!("console {}: attached", self.name);
                self.fetch_details(&sender);
            }
            VmCmd::Failed(why) => {
                self.connecting = false;
                tracing::info!("console {}: {why}", self.name);
                self.message = Some((gettext("The console is not available"), why));
            }
            VmCmd::Off(info) => {
                self.connecting = false;
                self.state = Some(info.summary.state);
                self.show_off(info.summary.state, &info.summary.reason);
                self.show_details(&info, None);
                self.fetch_details(&sender);
            }
            VmCmd::Connected(client) => {
                self.client = Some(client);
                self.fetch_details(&sender);
                if self.session.is_none() && self.message.is_some() {
                    sender.input(VmMsg::Reconnect);
                }
            }
            VmCmd::Incoming(Incoming::Event(Event::Lifecycle { name, change, .. })) => {
                if name != self.name {
                    return;
                }
                tracing::info!("vm window {}: {change:?}", self.name);
                match change {
                    Lifecycle::Started | Lifecycle::Resumed => {
                        self.set_state(DomainState::Running, "", &sender)
                    }
                    Lifecycle::Paused => self.set_state(DomainState::Paused, "", &sender),
                    Lifecycle::Stopped { reason } => {
                        self.set_state(DomainState::Shutoff, &reason, &sender)
                    }
                    Lifecycle::Crashed { reason } => {
                        self.set_state(DomainState::Crashed, &reason, &sender)
                    }
                    Lifecycle::Defined | Lifecycle::Undefined => {}
                }
                self.fetch_details(&sender);
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
            VmCmd::Details(info, domain) => {
                self.state = Some(info.summary.state);
                self.show_details(&info, domain.as_deref());
            }
            VmCmd::SerialAttached(client) => {
                self.serial_connecting = false;
                self.serial_client = Some(client);
                self.serial.set_connected(true);
                tracing::info!("serial {}: attached", self.name);
            }
            VmCmd::SerialOutput(data) => {
                tracing::debug!("serial {}: output \"{}\"", self.name, data.escape_ascii());
                self.serial.feed(&data);
            }
            VmCmd::SerialHeld(by) => {
                self.serial.set_held(by.as_deref());
                match by {
                    Some(by) => tracing::info!(
                        "serial {}: held by {by}: banner shown, input enabled {}",
                        self.name,
                        self.serial.input_enabled()
                    ),
                    None => tracing::info!(
                        "serial {}: released: banner hidden, input enabled {}",
                        self.name,
                        self.serial.input_enabled()
                    ),
                }
            }
            VmCmd::SerialClosed(why) => {
                tracing::info!("serial {}: closed: {why}", self.name);
                self.serial_connecting = false;
                self.serial_client = None;
                self.serial.set_connected(false);
            }
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
        let _ = root;
        self.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_key_names_cover_ctrl_alt_del_backspace_f1_to_f12_and_print() {
        assert_eq!(
            send_key_combo("ctrl-alt-del"),
            Some(vec![0xffe3, 0xffe9, 0xffff])
        );
        assert_eq!(
            send_key_combo("ctrl-alt-backspace"),
            Some(vec![0xffe3, 0xffe9, 0xff08])
        );
        assert_eq!(
            send_key_combo("ctrl-alt-f1"),
            Some(vec![0xffe3, 0xffe9, 0xffbe])
        );
        // F12 is XK_F12 = 0xffc9.
        assert_eq!(
            send_key_combo("ctrl-alt-f12"),
            Some(vec![0xffe3, 0xffe9, 0xffc9])
        );
        assert_eq!(send_key_combo("print"), Some(vec![0xff61]));
        assert_eq!(send_key_combo("ctrl-alt-f13"), None);
        assert_eq!(send_key_combo("ctrl-alt-f0"), None);
        assert_eq!(send_key_combo("nonsense"), None);
    }
}
