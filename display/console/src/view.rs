//! The GTK side of the console: a widget that shows a session's
//! [`Framebuffer`] scaled to fit, 1:1 (scrollable) or with the guest asked
//! to match the widget's size, and sends the keyboard and pointer to it.
//!
//! The keyboard is *grabbed* while the view has the focus: every key,
//! including the desktop's own shortcuts (Alt+Tab, Super) where the
//! windowing system lets us inhibit them, goes to the guest. Pressing
//! Ctrl+Alt together releases the grab (as virt-manager does); keys then go
//! to the app until the view is clicked again.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use gtk::glib::translate::IntoGlib;
use gtk::prelude::*;
use gtk::{gdk, glib};
use tokio::sync::mpsc;

use crate::framebuffer::Framebuffer;
use crate::session::{ConsoleEvent, Input, Session};

/// Called with the new keyboard grab state.
type GrabCallback = Box<dyn Fn(bool)>;

/// How the remote screen fits the widget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewMode {
    /// Scaled to the widget, keeping the aspect ratio.
    #[default]
    Scale,
    /// One remote pixel per widget pixel, scrollable when larger.
    OneToOne,
    /// The guest is asked to resize its screen to the widget (where the
    /// server and the guest allow it); shown scaled meanwhile.
    ResizeGuest,
}

/// Shows the remote screen and forwards input while it has the keyboard
/// focus.
#[derive(Clone)]
pub struct ConsoleView {
    scroller: gtk::ScrolledWindow,
    picture: gtk::Picture,
    /// The remote screen size, for mapping pointer positions.
    size: Rc<Cell<(u32, u32)>>,
    mode: Rc<Cell<ViewMode>>,
    /// Whether keys go to the guest.
    grabbed: Rc<Cell<bool>>,
    /// Keysyms pressed on the guest and not yet released.
    down: Rc<RefCell<BTreeSet<u32>>>,
    /// The session input, once attached.
    input: Rc<RefCell<Option<Session>>>,
    /// Called with the new grab state.
    on_grab: Rc<RefCell<Vec<GrabCallback>>>,
    /// The last size asked of the guest in [`ViewMode::ResizeGuest`].
    asked: Rc<Cell<(u16, u16)>>,
    resize_pending: Rc<Cell<bool>>,
}

impl Default for ConsoleView {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`ConsoleView`] that does not keep its widgets alive: what the
/// widgets' own event handlers hold, so the view and its controllers do
/// not keep each other alive in a cycle.
#[derive(Clone)]
struct WeakView {
    scroller: glib::WeakRef<gtk::ScrolledWindow>,
    picture: glib::WeakRef<gtk::Picture>,
    size: Rc<Cell<(u32, u32)>>,
    mode: Rc<Cell<ViewMode>>,
    grabbed: Rc<Cell<bool>>,
    down: Rc<RefCell<BTreeSet<u32>>>,
    input: Rc<RefCell<Option<Session>>>,
    on_grab: Rc<RefCell<Vec<GrabCallback>>>,
    asked: Rc<Cell<(u16, u16)>>,
    resize_pending: Rc<Cell<bool>>,
}

impl WeakView {
    fn upgrade(&self) -> Option<ConsoleView> {
        Some(ConsoleView {
            scroller: self.scroller.upgrade()?,
            picture: self.picture.upgrade()?,
            size: self.size.clone(),
            mode: self.mode.clone(),
            grabbed: self.grabbed.clone(),
            down: self.down.clone(),
            input: self.input.clone(),
            on_grab: self.on_grab.clone(),
            asked: self.asked.clone(),
            resize_pending: self.resize_pending.clone(),
        })
    }
}

impl std::fmt::Debug for ConsoleView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleView")
            .field("size", &self.size.get())
            .field("mode", &self.mode.get())
            .field("grabbed", &self.grabbed.get())
            .finish_non_exhaustive()
    }
}

impl ConsoleView {
    /// An empty console, scaled to fit.
    pub fn new() -> Self {
        let picture = gtk::Picture::new();
        picture.set_focusable(true);
        picture.set_can_focus(true);
        picture.add_css_class("vireo-console");
        let scroller = gtk::ScrolledWindow::new();
        scroller.set_hexpand(true);
        scroller.set_vexpand(true);
        scroller.set_child(Some(&picture));
        let view = Self {
            scroller,
            picture,
            size: Rc::new(Cell::new((0, 0))),
            mode: Rc::new(Cell::new(ViewMode::Scale)),
            grabbed: Rc::new(Cell::new(false)),
            down: Rc::default(),
            input: Rc::default(),
            on_grab: Rc::default(),
            asked: Rc::new(Cell::new((0, 0))),
            resize_pending: Rc::new(Cell::new(false)),
        };
        view.set_mode(ViewMode::Scale);
        view.add_focus_tracking();
        for adj in [view.scroller.hadjustment(), view.scroller.vadjustment()] {
            let w = view.downgrade();
            adj.connect_changed(move |_| {
                if let Some(v) = w.upgrade() {
                    v.schedule_guest_resize();
                }
            });
        }
        view
    }

    /// The widget to put in a container.
    pub fn widget(&self) -> &gtk::Widget {
        self.scroller.upcast_ref()
    }

    fn downgrade(&self) -> WeakView {
        WeakView {
            scroller: self.scroller.downgrade(),
            picture: self.picture.downgrade(),
            size: self.size.clone(),
            mode: self.mode.clone(),
            grabbed: self.grabbed.clone(),
            down: self.down.clone(),
            input: self.input.clone(),
            on_grab: self.on_grab.clone(),
            asked: self.asked.clone(),
            resize_pending: self.resize_pending.clone(),
        }
    }

    /// The widget that takes the keyboard focus.
    pub fn focus_widget(&self) -> &gtk::Widget {
        self.picture.upcast_ref()
    }

    /// The current view mode.
    pub fn mode(&self) -> ViewMode {
        self.mode.get()
    }

    /// Switches how the screen fits the widget.
    pub fn set_mode(&self, mode: ViewMode) {
        self.mode.set(mode);
        match mode {
            ViewMode::Scale | ViewMode::ResizeGuest => {
                self.picture.set_can_shrink(true);
                self.picture.set_content_fit(gtk::ContentFit::Contain);
                self.scroller
                    .set_policy(gtk::PolicyType::Never, gtk::PolicyType::Never);
            }
            ViewMode::OneToOne => {
                self.picture.set_can_shrink(false);
                self.picture.set_content_fit(gtk::ContentFit::ScaleDown);
                self.scroller
                    .set_policy(gtk::PolicyType::Automatic, gtk::PolicyType::Automatic);
            }
        }
        if mode == ViewMode::ResizeGuest {
            self.asked.set((0, 0));
            self.schedule_guest_resize();
        }
    }

    /// Whether keys currently go to the guest.
    pub fn is_grabbed(&self) -> bool {
        self.grabbed.get()
    }

    /// Calls `f` with the new state whenever the keyboard grab starts or
    /// ends.
    pub fn connect_grab_changed(&self, f: impl Fn(bool) + 'static) {
        self.on_grab.borrow_mut().push(Box::new(f));
    }

    /// The shown screen as PNG, or `None` before the first frame.
    pub fn screenshot_png(&self) -> Option<glib::Bytes> {
        let texture = self.picture.paintable()?.downcast::<gdk::Texture>().ok()?;
        Some(texture.save_to_png_bytes())
    }

    /// Shows the framebuffer's current contents.
    pub fn show(&self, fb: &Framebuffer) {
        self.size.set((fb.width(), fb.height()));
        if fb.width() == 0 || fb.height() == 0 {
            self.picture.set_paintable(None::<&gdk::Paintable>);
            return;
        }
        let bytes = glib::Bytes::from(fb.pixels());
        let texture = gdk::MemoryTexture::new(
            fb.width() as i32,
            fb.height() as i32,
            gdk::MemoryFormat::B8g8r8a8Premultiplied,
            &bytes,
            fb.stride(),
        );
        self.picture.set_paintable(Some(&texture));
    }

    /// Connects the view to a running session: redraws on its updates,
    /// sends keys and pointer events to it, calls `on_resize` with the
    /// answer to each guest-resize request, and `on_closed` with the reason
    /// when it ends.
    pub fn attach(
        &self,
        session: Session,
        mut events: mpsc::UnboundedReceiver<ConsoleEvent>,
        on_resize: impl Fn(Result<(), crate::ResizeRefused>) + 'static,
        on_closed: impl Fn(String) + 'static,
    ) {
        let first = self.input.borrow_mut().replace(session.clone()).is_none();
        if first {
            self.add_input();
        }
        self.asked.set((0, 0));
        self.resize_pending.set(false);
        let view = self.clone();
        glib::spawn_future_local(async move {
            let mut probed = false;
            while let Some(event) = events.recv().await {
                if let ConsoleEvent::Resized { width, height } = event
                    && !probed
                    && let (Ok(width), Ok(height)) = (u16::try_from(width), u16::try_from(height))
                {
                    // Learn at once whether the guest can follow the
                    // widget's size: ask for the size it has, a no-op
                    // where resizing is allowed.
                    probed = true;
                    view.resize_pending.set(true);
                    session.send(Input::ResizeDesktop { width, height });
                }
                match event {
                    ConsoleEvent::Resized { .. } | ConsoleEvent::Updated => {
                        let fb = session
                            .framebuffer()
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        view.show(&fb);
                    }
                    ConsoleEvent::Bell => view.picture.error_bell(),
                    ConsoleEvent::DesktopResize(result) => {
                        view.resize_pending.set(false);
                        on_resize(result);
                    }
                    ConsoleEvent::Closed(why) => {
                        view.set_grabbed(false);
                        on_closed(why);
                        break;
                    }
                }
            }
        });
    }

    fn send(&self, input: Input) {
        if let Some(s) = &*self.input.borrow() {
            s.send(input);
        }
    }

    /// Grabs or releases the keyboard. Releasing lets go of every key the
    /// guest still sees pressed, so none sticks.
    pub fn set_grabbed(&self, grab: bool) {
        if self.grabbed.replace(grab) == grab {
            return;
        }
        if !grab {
            let down: Vec<u32> = std::mem::take(&mut *self.down.borrow_mut())
                .into_iter()
                .collect();
            for keysym in down {
                self.send(Input::Key {
                    keysym,
                    down: false,
                });
            }
        }
        if grab {
            self.inhibit_shortcuts(50);
        } else if let Some(toplevel) = self.toplevel() {
            toplevel.restore_system_shortcuts();
        }
        for f in self.on_grab.borrow().iter() {
            f(grab);
        }
    }

    fn toplevel(&self) -> Option<gdk::Toplevel> {
        self.picture
            .native()
            .and_then(|n| n.surface())
            .and_then(|s| s.downcast::<gdk::Toplevel>().ok())
    }

    /// Keeps the desktop's shortcuts (Alt+Tab…) for the guest while the
    /// keyboard is grabbed. On X11 this is a keyboard grab, which fails
    /// while the window is not yet viewable (the focus can arrive first),
    /// so it is tried again, `tries` more times, 100 ms apart.
    fn inhibit_shortcuts(&self, tries: u32) {
        if !self.grabbed.get() {
            return;
        }
        if let Some(toplevel) = self.toplevel() {
            toplevel.inhibit_system_shortcuts(None::<&gdk::Event>);
            if toplevel.property::<bool>("shortcuts-inhibited") {
                tracing::debug!("console: system shortcuts inhibited");
                return;
            }
        }
        if tries == 0 {
            tracing::debug!("console: the system shortcuts could not be inhibited");
            return;
        }
        let w = self.downgrade();
        glib::timeout_add_local_once(Duration::from_millis(100), move || {
            if let Some(v) = w.upgrade() {
                v.inhibit_shortcuts(tries - 1);
            }
        });
    }

    /// Grab with the focus, release without it.
    fn add_focus_tracking(&self) {
        let focus = gtk::EventControllerFocus::new();
        let w = self.downgrade();
        focus.connect_enter(move |_| {
            if let Some(v) = w.upgrade() {
                v.set_grabbed(true);
            }
        });
        let w = self.downgrade();
        focus.connect_leave(move |_| {
            if let Some(v) = w.upgrade() {
                v.set_grabbed(false);
            }
        });
        self.picture.add_controller(focus);
    }

    /// Asks the guest for the widget's size (in `ResizeGuest` mode), once
    /// the size has settled for a moment.
    fn schedule_guest_resize(&self) {
        if self.mode.get() != ViewMode::ResizeGuest || self.input.borrow().is_none() {
            return;
        }
        let v = self.clone();
        glib::timeout_add_local_once(Duration::from_millis(300), move || {
            if v.mode.get() != ViewMode::ResizeGuest || v.resize_pending.get() {
                return;
            }
            let (w, h) = (v.scroller.width(), v.scroller.height());
            let (Ok(w), Ok(h)) = (u16::try_from(w), u16::try_from(h)) else {
                return;
            };
            if w < 64 || h < 64 || v.asked.get() == (w, h) {
                return;
            }
            v.asked.set((w, h));
            v.resize_pending.set(true);
            v.send(Input::ResizeDesktop {
                width: w,
                height: h,
            });
        });
    }

    fn add_input(&self) {
        let keys = gtk::EventControllerKey::new();
        let w = self.downgrade();
        keys.connect_key_pressed(move |_, keyval, _, state| {
            let Some(v) = w.upgrade() else {
                return glib::Propagation::Proceed;
            };
            if !v.grabbed.get() {
                return glib::Propagation::Proceed;
            }
            let keysym = keyval.into_glib();
            v.down.borrow_mut().insert(keysym);
            v.send(Input::Key { keysym, down: true });
            if is_release_combo(keyval, state) {
                v.set_grabbed(false);
            }
            glib::Propagation::Stop
        });
        let w = self.downgrade();
        keys.connect_key_released(move |_, keyval, _, _| {
            let Some(v) = w.upgrade() else {
                return;
            };
            let keysym = keyval.into_glib();
            if v.down.borrow_mut().remove(&keysym) {
                v.send(Input::Key {
                    keysym,
                    down: false,
                });
            }
        });
        self.picture.add_controller(keys);

        let buttons = Rc::new(Cell::new(0u8));
        let position = Rc::new(Cell::new((0u16, 0u16)));

        let motion = gtk::EventControllerMotion::new();
        let (w, b, pos) = (self.downgrade(), buttons.clone(), position.clone());
        motion.connect_motion(move |_, x, y| {
            let Some(view) = w.upgrade() else {
                return;
            };
            if let Some(p) = view.to_remote(x, y) {
                pos.set(p);
                view.send(Input::Pointer {
                    x: p.0,
                    y: p.1,
                    buttons: b.get(),
                });
            }
        });
        self.picture.add_controller(motion);

        let click = gtk::GestureClick::new();
        click.set_button(0);
        let (w, b, pos) = (self.downgrade(), buttons.clone(), position.clone());
        click.connect_pressed(move |g, _, x, y| {
            let Some(view) = w.upgrade() else {
                return;
            };
            view.picture.grab_focus();
            view.set_grabbed(true);
            b.set(b.get() | button_bit(g.current_button()));
            if let Some(p) = view.to_remote(x, y) {
                pos.set(p);
            }
            let (x, y) = pos.get();
            view.send(Input::Pointer {
                x,
                y,
                buttons: b.get(),
            });
        });
        let (w, b, pos) = (self.downgrade(), buttons.clone(), position.clone());
        click.connect_released(move |g, _, _, _| {
            let Some(view) = w.upgrade() else {
                return;
            };
            b.set(b.get() & !button_bit(g.current_button()));
            let (x, y) = pos.get();
            view.send(Input::Pointer {
                x,
                y,
                buttons: b.get(),
            });
        });
        self.picture.add_controller(click);

        let scroll = gtk::EventControllerScroll::new(gtk::EventControllerScrollFlags::VERTICAL);
        let (w, b, pos) = (self.downgrade(), buttons, position);
        scroll.connect_scroll(move |_, _, dy| {
            let Some(view) = w.upgrade() else {
                return glib::Propagation::Proceed;
            };
            if view.mode.get() == ViewMode::OneToOne && !view.grabbed.get() {
                // Not grabbed: the wheel scrolls the view.
                return glib::Propagation::Proceed;
            }
            // RFB wheel: button 4 (bit 3) up, button 5 (bit 4) down, as a click.
            let wheel = if dy < 0.0 { 1 << 3 } else { 1 << 4 };
            let (x, y) = pos.get();
            for buttons in [b.get() | wheel, b.get()] {
                view.send(Input::Pointer { x, y, buttons });
            }
            glib::Propagation::Stop
        });
        self.picture.add_controller(scroll);
    }

    /// Maps a widget position to the remote screen, undoing the scaling;
    /// `None` outside the picture.
    fn to_remote(&self, x: f64, y: f64) -> Option<(u16, u16)> {
        let (fw, fh) = self.size.get();
        map_to_remote(
            (x, y),
            (
                f64::from(self.picture.width()),
                f64::from(self.picture.height()),
            ),
            (fw, fh),
            self.mode.get() != ViewMode::OneToOne,
        )
    }
}

/// Whether this press completes the release combo: Ctrl+Alt.
fn is_release_combo(keyval: gdk::Key, state: gdk::ModifierType) -> bool {
    let ctrl = matches!(keyval, gdk::Key::Control_L | gdk::Key::Control_R);
    let alt = matches!(
        keyval,
        gdk::Key::Alt_L | gdk::Key::Alt_R | gdk::Key::Meta_L | gdk::Key::Meta_R
    );
    (ctrl && state.contains(gdk::ModifierType::ALT_MASK))
        || (alt && state.contains(gdk::ModifierType::CONTROL_MASK))
}

/// The RFB button bit for a GDK button number.
fn button_bit(button: u32) -> u8 {
    match button {
        1 => 1,      // left
        2 => 1 << 1, // middle
        3 => 1 << 2, // right
        _ => 0,
    }
}

/// Maps `pos` in a widget of `widget` size showing a `remote`-sized screen
/// scaled to fit (only down unless `upscale`) and centred, to remote pixel
/// coordinates.
pub fn map_to_remote(
    pos: (f64, f64),
    widget: (f64, f64),
    remote: (u32, u32),
    upscale: bool,
) -> Option<(u16, u16)> {
    let (rw, rh) = (f64::from(remote.0), f64::from(remote.1));
    if rw == 0.0 || rh == 0.0 || widget.0 <= 0.0 || widget.1 <= 0.0 {
        return None;
    }
    let mut scale = (widget.0 / rw).min(widget.1 / rh);
    if !upscale {
        scale = scale.min(1.0);
    }
    let (ox, oy) = ((widget.0 - rw * scale) / 2.0, (widget.1 - rh * scale) / 2.0);
    let (x, y) = ((pos.0 - ox) / scale, (pos.1 - oy) / scale);
    if x < 0.0 || y < 0.0 || x >= rw || y >= rh {
        return None;
    }
    Some((x as u16, y as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_maps_through_letterboxing() {
        // 800x600 shown in 1000x600: scale 1, 100 px bars left and right.
        assert_eq!(
            map_to_remote((100.0, 0.0), (1000.0, 600.0), (800, 600), true),
            Some((0, 0))
        );
        assert_eq!(
            map_to_remote((899.0, 599.0), (1000.0, 600.0), (800, 600), true),
            Some((799, 599))
        );
        assert_eq!(
            map_to_remote((50.0, 10.0), (1000.0, 600.0), (800, 600), true),
            None
        );
        // Scaled down by half.
        assert_eq!(
            map_to_remote((200.0, 150.0), (400.0, 300.0), (800, 600), true),
            Some((400, 300))
        );
        assert_eq!(
            map_to_remote((1.0, 1.0), (400.0, 300.0), (0, 0), true),
            None
        );
    }

    #[test]
    fn one_to_one_centres_a_small_screen_without_scaling_up() {
        // 400x300 in 800x600 at 1:1: 200/150 px margins.
        assert_eq!(
            map_to_remote((200.0, 150.0), (800.0, 600.0), (400, 300), false),
            Some((0, 0))
        );
        assert_eq!(
            map_to_remote((599.0, 449.0), (800.0, 600.0), (400, 300), false),
            Some((399, 299))
        );
        assert_eq!(
            map_to_remote((100.0, 100.0), (800.0, 600.0), (400, 300), false),
            None
        );
    }

    #[test]
    fn ctrl_alt_is_the_release_combo() {
        use gdk::ModifierType as M;
        assert!(is_release_combo(gdk::Key::Alt_L, M::CONTROL_MASK));
        assert!(is_release_combo(gdk::Key::Control_R, M::ALT_MASK));
        assert!(!is_release_combo(gdk::Key::Alt_L, M::empty()));
        assert!(!is_release_combo(
            gdk::Key::Delete,
            M::CONTROL_MASK | M::ALT_MASK
        ));
    }
}
