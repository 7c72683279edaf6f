//! The manager window's list: every connection's section in one
//! `gtk::ListView`, its row widgets recycled as it scrolls.
//!
//! GTK 4.8 (Debian 12) has no list sections (they came in 4.12), so the
//! model is flat: a `gtk::FlattenListModel` over one `gio::ListStore` per
//! connection, each holding that connection's header [`Entry`], then its
//! VMs (or a "No virtual machines" line). Headers and that line are items
//! that can be neither selected nor activated; the `gtk::SingleSelection`
//! over the whole list is the selected VM.
//!
//! Why one list rather than a `ListView` per section: a `ListView` only
//! recycles when it is the scrollable itself; several in one scrolled box
//! are each given their whole height and build a widget for every item, as
//! the `gtk::ListBox` did. One list also makes the keyboard move across
//! sections as before.
//!
//! Row widgets ([`Row`]) are bound to an entry while they show it and
//! follow its `changed` signal; an entry's data lives in the entry, so a
//! VM scrolled out of view costs an object and its samples, not widgets.
//! (Its texts are translated in `connection.rs` and `vm_row.rs`.)

use std::cell::{Ref, RefCell};

use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::glib::subclass::Signal;
use gtk::{gio, glib};
use vireo_api::proto::{DomainState, DomainStats};

use crate::vm_row::{Vm, draw_sparkline, state_icon};

/// What an item of the list is.
#[derive(Debug, Default)]
pub enum Kind {
    /// "No virtual machines", under a header whose connection lists none.
    #[default]
    Empty,
    /// A connection's header.
    Header(Header),
    /// A VM.
    Vm(Vm),
}

/// What a connection's header shows.
#[derive(Debug)]
pub struct Header {
    /// The connection's name.
    pub title: String,
    /// Its URI, and the last error's first line under it.
    pub description: String,
    /// Its state, in words.
    pub status: String,
    /// Whether it is connecting (a spinner turns).
    pub busy: bool,
    /// The symbolic icon of its kind (this computer, a remote host).
    pub icon: &'static str,
    /// The ⋮ menu (Connect, Disconnect, Remove).
    pub menu: Option<gio::Menu>,
}

mod entry_imp {
    use std::sync::OnceLock;

    use super::*;

    #[derive(Debug, Default)]
    pub struct Entry {
        pub kind: RefCell<Kind>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Entry {
        const NAME: &'static str = "VireoListEntry";
        type Type = super::Entry;
    }

    impl ObjectImpl for Entry {
        fn signals() -> &'static [Signal] {
            static SIGNALS: OnceLock<Vec<Signal>> = OnceLock::new();
            SIGNALS.get_or_init(|| vec![Signal::builder("changed").build()])
        }
    }
}

glib::wrapper! {
    /// One item of the list: a header, a VM or the empty line. Emits
    /// `changed` when what it shows changes.
    pub struct Entry(ObjectSubclass<entry_imp::Entry>);
}

impl Entry {
    /// An entry showing `kind`.
    pub fn new(kind: Kind) -> Self {
        let entry: Self = glib::Object::new();
        *entry.imp().kind.borrow_mut() = kind;
        entry
    }

    /// What it shows.
    pub fn kind(&self) -> Ref<'_, Kind> {
        self.imp().kind.borrow()
    }

    /// Changes what it shows and tells its row.
    pub fn update<R>(&self, f: impl FnOnce(&mut Kind) -> R) -> R {
        let r = f(&mut self.imp().kind.borrow_mut());
        self.emit_by_name::<()>("changed", &[]);
        r
    }

    /// Whether it is a VM (selectable, activatable).
    pub fn is_vm(&self) -> bool {
        matches!(*self.kind(), Kind::Vm(_))
    }

    /// The VM's connection and name.
    pub fn vm(&self) -> Option<(usize, String)> {
        match &*self.kind() {
            Kind::Vm(vm) => Some((vm.conn, vm.name.clone())),
            _ => None,
        }
    }

    /// The VM's state.
    pub fn vm_state(&self) -> Option<DomainState> {
        match &*self.kind() {
            Kind::Vm(vm) => Some(vm.state),
            _ => None,
        }
    }

    /// Sets the VM's state (its statistics go when it is not active).
    pub fn set_vm_state(&self, state: DomainState) {
        self.update(|k| {
            if let Kind::Vm(vm) = k {
                vm.state = state;
                if !state.is_active() {
                    vm.clear_stats();
                }
            }
        });
    }

    /// Takes a VM's statistics sample; returns the CPU usage it implies.
    pub fn add_stats(&self, stats: &DomainStats) -> Option<f64> {
        self.update(|k| match k {
            Kind::Vm(vm) => vm.add_stats(stats),
            _ => None,
        })
    }

    /// Changes a header.
    pub fn update_header(&self, f: impl FnOnce(&mut Header)) {
        self.update(|k| {
            if let Kind::Header(h) = k {
                f(h);
            }
        });
    }
}

/// A header row's widgets: name over URI (and error); spinner, kind,
/// state, ⋮ menu.
#[derive(Debug)]
pub struct HeaderParts {
    root: gtk::Box,
    title: gtk::Label,
    description: gtk::Label,
    spinner: gtk::Spinner,
    icon: gtk::Image,
    status: gtk::Label,
    menu: gtk::MenuButton,
}

impl HeaderParts {
    fn new() -> Self {
        let p = Self {
            root: gtk::Box::new(gtk::Orientation::Horizontal, 6),
            title: gtk::Label::new(None),
            description: gtk::Label::new(None),
            spinner: gtk::Spinner::new(),
            icon: gtk::Image::new(),
            status: gtk::Label::new(None),
            menu: gtk::MenuButton::new(),
        };
        p.root.set_hexpand(true);
        p.root.add_css_class("vireo-conn-header");
        let texts = gtk::Box::new(gtk::Orientation::Vertical, 2);
        texts.set_hexpand(true);
        texts.set_valign(gtk::Align::Center);
        p.title.set_xalign(0.0);
        p.title.set_ellipsize(gtk::pango::EllipsizeMode::End);
        p.title.add_css_class("heading");
        p.description.set_xalign(0.0);
        p.description.set_wrap(true);
        p.description.set_wrap_mode(gtk::pango::WrapMode::WordChar);
        p.description.add_css_class("dim-label");
        p.description.add_css_class("caption");
        texts.append(&p.title);
        texts.append(&p.description);
        p.status.add_css_class("dim-label");
        p.menu.set_icon_name("view-more-symbolic");
        p.menu.add_css_class("flat");
        p.menu
            .set_tooltip_text(Some(&crate::connection::menu_label()));
        p.root.append(&texts);
        for w in [
            p.spinner.upcast_ref::<gtk::Widget>(),
            p.icon.upcast_ref(),
            p.status.upcast_ref(),
            p.menu.upcast_ref(),
        ] {
            w.set_valign(gtk::Align::Center);
            p.root.append(w);
        }
        p
    }

    fn show(&self, h: &Header) {
        self.title.set_label(&h.title);
        self.description.set_label(&h.description);
        self.status.set_label(&h.status);
        self.spinner.set_visible(h.busy);
        self.spinner.set_spinning(h.busy);
        self.icon.set_icon_name(Some(h.icon));
        self.menu.set_menu_model(h.menu.as_ref());
        self.menu.set_visible(h.menu.is_some());
    }
}

mod row_imp {
    use super::*;

    #[derive(Debug, Default)]
    pub struct Row {
        pub entry: RefCell<Option<super::Entry>>,
        pub handler: RefCell<Option<glib::SignalHandlerId>>,
        // A VM: state icon, name over state/CPU/memory, CPU sparkline.
        pub vm: gtk::Box,
        pub icon: gtk::Image,
        pub name: gtk::Label,
        pub subtitle: gtk::Label,
        pub spark: gtk::DrawingArea,
        // A header's widgets, made when the row first shows one (most
        // rows only ever show VMs).
        pub header: std::cell::OnceCell<HeaderParts>,
        // "No virtual machines".
        pub empty: gtk::Label,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Row {
        const NAME: &'static str = "VireoListRow";
        type Type = super::Row;
        type ParentType = gtk::Box;
    }

    impl ObjectImpl for Row {
        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();

            self.vm.set_spacing(12);
            self.vm.set_hexpand(true);
            self.vm.add_css_class("vireo-vm");
            self.icon.set_valign(gtk::Align::Center);
            let texts = gtk::Box::new(gtk::Orientation::Vertical, 2);
            texts.set_hexpand(true);
            texts.set_valign(gtk::Align::Center);
            self.name.set_xalign(0.0);
            self.name.set_ellipsize(gtk::pango::EllipsizeMode::End);
            self.subtitle.set_xalign(0.0);
            self.subtitle.set_ellipsize(gtk::pango::EllipsizeMode::End);
            self.subtitle.add_css_class("dim-label");
            self.subtitle.add_css_class("caption");
            texts.append(&self.name);
            texts.append(&self.subtitle);
            self.spark.set_content_width(90);
            self.spark.set_content_height(28);
            self.spark.set_valign(gtk::Align::Center);
            self.spark
                .set_tooltip_text(Some(&crate::vm_row::cpu_usage_label()));
            let row = obj.downgrade();
            // Reads the bound VM's samples; nothing is cached per row.
            self.spark.set_draw_func(move |_, cr, w, h| {
                let Some(row) = row.upgrade() else {
                    return;
                };
                if let Some(entry) = row.imp().entry.borrow().as_ref()
                    && let Kind::Vm(vm) = &*entry.kind()
                {
                    draw_sparkline(vm.cpu(), cr, w, h);
                }
            });
            self.vm.append(&self.icon);
            self.vm.append(&texts);
            self.vm.append(&self.spark);

            self.empty.set_label(&crate::connection::no_vms_label());
            self.empty.add_css_class("dim-label");
            self.empty.set_hexpand(true);
            self.empty.set_margin_top(12);
            self.empty.set_margin_bottom(12);

            BoxExt::append(&*obj, &self.vm);
            BoxExt::append(&*obj, &self.empty);
        }

        fn dispose(&self) {
            self.obj().unbind();
        }
    }

    impl WidgetImpl for Row {}
    impl BoxImpl for Row {}
}

glib::wrapper! {
    /// The widget a list item shows: a VM, a header or the empty line,
    /// whichever its entry is (rows are recycled between kinds).
    pub struct Row(ObjectSubclass<row_imp::Row>)
        @extends gtk::Box, gtk::Widget,
        @implements gtk::Buildable, gtk::ConstraintTarget, gtk::Orientable;
}

impl Default for Row {
    fn default() -> Self {
        glib::Object::new()
    }
}

impl Row {
    /// The entry it shows.
    pub fn entry(&self) -> Option<Entry> {
        self.imp().entry.borrow().clone()
    }

    /// Shows `entry` and follows its changes.
    pub fn bind(&self, entry: &Entry) {
        self.unbind();
        let row = self.downgrade();
        let handler = entry.connect_local("changed", false, move |_| {
            if let Some(row) = row.upgrade() {
                row.refresh();
            }
            None
        });
        self.imp().handler.replace(Some(handler));
        self.imp().entry.replace(Some(entry.clone()));
        self.refresh();
    }

    /// Stops following its entry.
    pub fn unbind(&self) {
        let imp = self.imp();
        if let (Some(entry), Some(handler)) = (imp.entry.take(), imp.handler.take()) {
            entry.disconnect(handler);
        }
    }

    fn refresh(&self) {
        let imp = self.imp();
        let entry = imp.entry.borrow();
        let Some(entry) = entry.as_ref() else {
            return;
        };
        let kind = entry.kind();
        imp.vm.set_visible(matches!(*kind, Kind::Vm(_)));
        if let Some(parts) = imp.header.get() {
            parts.root.set_visible(matches!(*kind, Kind::Header(_)));
        }
        imp.empty.set_visible(matches!(*kind, Kind::Empty));
        let label = match &*kind {
            Kind::Vm(vm) => {
                let subtitle = vm.subtitle();
                imp.icon.set_icon_name(Some(state_icon(vm.state)));
                imp.name.set_label(&vm.name);
                imp.subtitle.set_label(&subtitle);
                imp.spark.queue_draw();
                format!("{}, {subtitle}", vm.name)
            }
            Kind::Header(h) => {
                let parts = imp.header.get_or_init(|| {
                    let parts = HeaderParts::new();
                    BoxExt::append(self, &parts.root);
                    parts
                });
                parts.show(h);
                format!("{}, {}", h.title, h.status)
            }
            Kind::Empty => crate::connection::no_vms_label(),
        };
        set_accessible_label(self, &label);
    }
}

/// Sets `widget`'s accessible label (what a screen reader says for it).
/// `gtk_accessible_update_property_value` is in GTK since 4.0; gtk4-rs and
/// gtk4-sys offer it only with their 4.10 feature, which Debian 12's GTK
/// 4.8 cannot have, so it is declared here.
pub fn set_accessible_label(widget: &impl IsA<gtk::Widget>, label: &str) {
    use glib::translate::ToGlibPtr;
    // SAFETY: the signature is GTK's own (gtk/gtkaccessible.h, since 4.0):
    // the accessible, the number of properties, and arrays of that many
    // properties and GValues; Debian 12's libgtk-4 exports it.
    unsafe extern "C" {
        fn gtk_accessible_update_property_value(
            accessible: *mut gtk::ffi::GtkAccessible,
            n_properties: std::ffi::c_int,
            properties: *mut gtk::ffi::GtkAccessibleProperty,
            values: *const glib::gobject_ffi::GValue,
        );
    }
    let value = label.to_value();
    let mut property = [gtk::ffi::GTK_ACCESSIBLE_PROPERTY_LABEL];
    let accessible = widget.as_ref().as_ptr().cast::<gtk::ffi::GtkAccessible>();
    // SAFETY: every GtkWidget implements GtkAccessible; one property and
    // one initialised string GValue (the type LABEL takes), both alive for
    // the call; GTK copies the value.
    unsafe {
        gtk_accessible_update_property_value(
            accessible,
            1,
            property.as_mut_ptr(),
            value.to_glib_none().0,
        );
    }
}

/// The list's item factory: one [`Row`] per list item, bound to the
/// entries scrolled into view; only VMs can be selected and activated.
pub fn factory() -> gtk::SignalListItemFactory {
    let factory = gtk::SignalListItemFactory::new();
    factory.connect_setup(|_, item| {
        if let Some(item) = item.downcast_ref::<gtk::ListItem>() {
            item.set_child(Some(&Row::default()));
        }
    });
    factory.connect_bind(|_, item| {
        let Some(item) = item.downcast_ref::<gtk::ListItem>() else {
            return;
        };
        let (Some(row), Some(entry)) = (
            item.child().and_downcast::<Row>(),
            item.item().and_downcast::<Entry>(),
        ) else {
            return;
        };
        let vm = entry.is_vm();
        item.set_selectable(vm);
        item.set_activatable(vm);
        // The list item's own widget (`row` in CSS) takes the style: a
        // header is not a card and does not light up under the pointer.
        if let Some(widget) = WidgetExt::parent(&row) {
            let header = matches!(*entry.kind(), Kind::Header(_));
            for (class, on) in [
                ("vireo-header-item", header),
                ("vireo-vm-item", vm),
                ("vireo-empty-item", !vm && !header),
            ] {
                if on {
                    widget.add_css_class(class);
                } else {
                    widget.remove_css_class(class);
                }
            }
        }
        row.bind(&entry);
    });
    factory.connect_unbind(|_, item| {
        if let Some(row) = item
            .downcast_ref::<gtk::ListItem>()
            .and_then(|i| i.child())
            .and_downcast::<Row>()
        {
            row.unbind();
        }
    });
    factory
}

/// The row widget under `(x, y)` in `list` (its coordinates), if any.
pub fn row_at(list: &gtk::ListView, x: f64, y: f64) -> Option<Row> {
    let mut widget = list.pick(x, y, gtk::PickFlags::DEFAULT);
    while let Some(w) = widget {
        if let Ok(row) = w.clone().downcast::<Row>() {
            return Some(row);
        }
        if w == *list.upcast_ref::<gtk::Widget>() {
            return None;
        }
        widget = WidgetExt::parent(&w);
    }
    None
}

/// The row widget showing `entry`, while it is scrolled into view.
pub fn row_of(list: &gtk::ListView, entry: &Entry) -> Option<Row> {
    let mut child = list.first_child();
    while let Some(c) = child {
        if let Some(row) = c.first_child().and_downcast::<Row>()
            && row.entry().as_ref() == Some(entry)
        {
            return Some(row);
        }
        child = c.next_sibling();
    }
    None
}
