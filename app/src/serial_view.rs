//! The VM window's serial console page: a VTE terminal (GTK 4 build of
//! VTE) fed with the domain's COM1 output through the engine's
//! `OpenConsole` stream; what is typed into it goes back as console input.
//!
//! The page watches the console (it never holds it). While an exclusive
//! session holds it (`vireoctl console`), the engine drops the page's
//! input and says so; the page then shows a warning bar naming the other
//! client and turns the terminal's input off until the session ends.
//!
//! VTE is reached through `vte4-sys`: the safe `vte4` 0.10 crate needs
//! gtk4's `v4_10` feature, which Debian 12's GTK 4.8 cannot satisfy. Only
//! two functions are called directly (`vte_terminal_new`,
//! `vte_terminal_feed`); the rest goes through GObject properties and
//! signals.

use std::rc::Rc;

use gettextrs::gettext;
use gtk::glib;
use gtk::glib::translate::{FromGlibPtrNone, ToGlibPtr};
use gtk::prelude::*;

/// A VTE terminal widget.
#[derive(Debug, Clone)]
pub struct Terminal(gtk::Widget);

impl Terminal {
    fn new() -> Self {
        // SAFETY: vte_terminal_new has no preconditions (GTK is initialised
        // before any window is built); it returns a new, floating widget.
        let raw = unsafe { vte_sys::vte_terminal_new() } as *mut gtk::ffi::GtkWidget;
        // SAFETY: `raw` is a valid GtkWidget; from_glib_none sinks the
        // floating reference, so the wrapper owns it.
        let widget = unsafe { gtk::Widget::from_glib_none(raw) };
        Self(widget)
    }

    /// Shows `data` as if the program in the terminal had written it.
    fn feed(&self, data: &[u8]) {
        let ptr: *mut gtk::ffi::GtkWidget = self.0.to_glib_none().0;
        // SAFETY: the widget is a VteTerminal (made by vte_terminal_new
        // above) and alive while `self` holds it; `data` is valid for
        // `data.len()` bytes for the call, which copies them.
        unsafe {
            vte_sys::vte_terminal_feed(
                ptr as *mut vte_sys::VteTerminal,
                data.as_ptr(),
                data.len() as isize,
            );
        }
    }

    /// The widget.
    fn widget(&self) -> &gtk::Widget {
        &self.0
    }

    /// Calls `f` with the text typed into the terminal ("commit").
    fn connect_commit(&self, f: impl Fn(&str) + 'static) {
        self.0.connect_local("commit", false, move |args| {
            if let Some(Ok(text)) = args.get(1).map(|v| v.get::<String>()) {
                f(&text);
            }
            None::<glib::Value>
        });
    }
}

/// The serial page.
#[derive(Debug, Clone)]
pub struct SerialView {
    root: gtk::Box,
    terminal: Terminal,
    /// Shown while disconnected (adw::Banner needs libadwaita 1.3).
    banner: gtk::Revealer,
    /// Shown while another client holds the console.
    held: gtk::Revealer,
    held_label: gtk::Label,
}

impl SerialView {
    /// A disconnected terminal; `on_input` gets the bytes typed into it.
    pub fn new(on_input: impl Fn(Vec<u8>) + 'static) -> Self {
        let terminal = Terminal::new();
        let w = terminal.widget();
        w.set_hexpand(true);
        w.set_vexpand(true);
        w.set_property("scrollback-lines", 10_000u32);
        w.set_property(
            "font-desc",
            gtk::pango::FontDescription::from_string("Monospace 11"),
        );
        let on_input = Rc::new(on_input);
        terminal.connect_commit(move |text| on_input(text.as_bytes().to_vec()));
        let label = gtk::Label::new(Some(&gettext(
            "The serial console is not connected: the virtual machine is off",
        )));
        label.set_wrap(true);
        label.set_margin_top(6);
        label.set_margin_bottom(6);
        label.add_css_class("dim-label");
        let banner = gtk::Revealer::new();
        banner.set_child(Some(&label));
        // (gtk::InfoBar is deprecated from GTK 4.10 on: a revealed bar
        // of our own instead.)
        let held_label = gtk::Label::new(None);
        held_label.set_wrap(true);
        held_label.set_xalign(0.0);
        held_label.set_hexpand(true);
        let icon = gtk::Image::from_icon_name("dialog-warning-symbolic");
        let bar = gtk::Box::new(gtk::Orientation::Horizontal, 12);
        bar.set_margin_top(6);
        bar.set_margin_bottom(6);
        bar.set_margin_start(12);
        bar.set_margin_end(12);
        bar.append(&icon);
        bar.append(&held_label);
        bar.add_css_class("serial-held");
        let provider = gtk::CssProvider::new();
        provider.load_from_data(
            "box.serial-held { background-color: #f6d32d; color: #000000; \
             border-radius: 6px; padding: 6px; }",
        );
        bar.style_context()
            .add_provider(&provider, gtk::STYLE_PROVIDER_PRIORITY_APPLICATION);
        let held = gtk::Revealer::new();
        held.set_child(Some(&bar));
        let root = gtk::Box::new(gtk::Orientation::Vertical, 0);
        root.append(&banner);
        root.append(&held);
        let scroller = gtk::ScrolledWindow::new();
        scroller.set_child(Some(terminal.widget()));
        scroller.set_vexpand(true);
        root.append(&scroller);
        let view = Self {
            root,
            terminal,
            banner,
            held,
            held_label,
        };
        view.set_connected(false);
        view
    }

    /// The widget to put in the window.
    pub fn widget(&self) -> &gtk::Widget {
        self.root.upcast_ref()
    }

    /// The terminal, to focus.
    pub fn terminal(&self) -> &gtk::Widget {
        self.terminal.widget()
    }

    /// Shows bytes from the guest.
    pub fn feed(&self, data: &[u8]) {
        self.terminal.feed(data);
    }

    /// Says whether the console is connected; a new connection starts on a
    /// fresh line.
    pub fn set_connected(&self, connected: bool) {
        if connected {
            self.terminal.feed(b"\r\n");
            self.banner.set_reveal_child(false);
        } else {
            self.banner.set_reveal_child(true);
            self.set_held(None);
        }
    }

    /// Says whether another client (`by`, e.g. `vireoctl 0.1.0`) holds the
    /// console: its bar shows and the terminal takes no input while it
    /// does.
    pub fn set_held(&self, by: Option<&str>) {
        match by {
            Some(by) => {
                let client = if by.starts_with("vireoctl ") {
                    format!("“vireoctl console” ({by})")
                } else {
                    by.to_owned()
                };
                self.held_label.set_text(
                    &gettext(
                        "Another client, {client}, has the serial console. Typing here is \
                         disabled until it disconnects.",
                    )
                    .replace("{client}", &client),
                );
                self.held.set_reveal_child(true);
            }
            None => self.held.set_reveal_child(false),
        }
        self.terminal
            .widget()
            .set_property("input-enabled", by.is_none());
    }

    /// Whether the terminal takes input now (off while another client
    /// holds the console).
    pub fn input_enabled(&self) -> bool {
        self.terminal.widget().property::<bool>("input-enabled")
    }
}
