//! The GTK side of the console: a widget that shows a session's
//! [`Framebuffer`] scaled to fit, and sends the keyboard and pointer to it.

use std::cell::Cell;
use std::rc::Rc;

use gtk::glib::translate::IntoGlib;
use gtk::prelude::*;
use gtk::{gdk, glib};
use tokio::sync::mpsc;

use crate::framebuffer::Framebuffer;
use crate::session::{ConsoleEvent, Input, Session};

/// Shows the remote screen, scaled to the widget while keeping its aspect,
/// and forwards input while it has the keyboard focus.
#[derive(Debug, Clone)]
pub struct ConsoleView {
    picture: gtk::Picture,
    /// The remote screen size, for mapping pointer positions.
    size: Rc<Cell<(u32, u32)>>,
}

impl Default for ConsoleView {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleView {
    /// An empty console.
    pub fn new() -> Self {
        let picture = gtk::Picture::new();
        picture.set_can_shrink(true);
        picture.set_content_fit(gtk::ContentFit::Contain);
        picture.set_hexpand(true);
        picture.set_vexpand(true);
        picture.set_focusable(true);
        picture.set_can_focus(true);
        picture.add_css_class("vireo-console");
        Self {
            picture,
            size: Rc::new(Cell::new((0, 0))),
        }
    }

    /// The widget to put in a container.
    pub fn widget(&self) -> &gtk::Widget {
        self.picture.upcast_ref()
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
    /// sends keys and pointer events to it, and calls `on_closed` with the
    /// reason when it ends.
    pub fn attach(
        &self,
        session: Session,
        mut events: mpsc::UnboundedReceiver<ConsoleEvent>,
        on_closed: impl Fn(String) + 'static,
    ) {
        self.add_input(&session);
        let view = self.clone();
        glib::spawn_future_local(async move {
            while let Some(event) = events.recv().await {
                match event {
                    ConsoleEvent::Resized { .. } | ConsoleEvent::Updated => {
                        let fb = session
                            .framebuffer()
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        view.show(&fb);
                    }
                    ConsoleEvent::Bell => view.picture.error_bell(),
                    ConsoleEvent::Closed(why) => {
                        on_closed(why);
                        break;
                    }
                }
            }
        });
    }

    fn add_input(&self, session: &Session) {
        let keys = gtk::EventControllerKey::new();
        let s = session.clone();
        keys.connect_key_pressed(move |_, keyval, _, _| {
            s.send(Input::Key {
                keysym: keyval.into_glib(),
                down: true,
            });
            glib::Propagation::Stop
        });
        let s = session.clone();
        keys.connect_key_released(move |_, keyval, _, _| {
            s.send(Input::Key {
                keysym: keyval.into_glib(),
                down: false,
            });
        });
        self.picture.add_controller(keys);

        let buttons = Rc::new(Cell::new(0u8));
        let position = Rc::new(Cell::new((0u16, 0u16)));

        let motion = gtk::EventControllerMotion::new();
        let (s, view, b, pos) = (
            session.clone(),
            self.clone(),
            buttons.clone(),
            position.clone(),
        );
        motion.connect_motion(move |_, x, y| {
            if let Some(p) = view.to_remote(x, y) {
                pos.set(p);
                s.send(Input::Pointer {
                    x: p.0,
                    y: p.1,
                    buttons: b.get(),
                });
            }
        });
        self.picture.add_controller(motion);

        let click = gtk::GestureClick::new();
        click.set_button(0);
        let (s, view, b, pos) = (
            session.clone(),
            self.clone(),
            buttons.clone(),
            position.clone(),
        );
        click.connect_pressed(move |g, _, x, y| {
            view.picture.grab_focus();
            b.set(b.get() | button_bit(g.current_button()));
            if let Some(p) = view.to_remote(x, y) {
                pos.set(p);
            }
            let (x, y) = pos.get();
            s.send(Input::Pointer {
                x,
                y,
                buttons: b.get(),
            });
        });
        let (s, b, pos) = (session.clone(), buttons.clone(), position.clone());
        click.connect_released(move |g, _, _, _| {
            b.set(b.get() & !button_bit(g.current_button()));
            let (x, y) = pos.get();
            s.send(Input::Pointer {
                x,
                y,
                buttons: b.get(),
            });
        });
        self.picture.add_controller(click);

        let scroll = gtk::EventControllerScroll::new(gtk::EventControllerScrollFlags::VERTICAL);
        let (s, b, pos) = (session.clone(), buttons, position);
        scroll.connect_scroll(move |_, _, dy| {
            // RFB wheel: button 4 (bit 3) up, button 5 (bit 4) down, as a click.
            let wheel = if dy < 0.0 { 1 << 3 } else { 1 << 4 };
            let (x, y) = pos.get();
            for buttons in [b.get() | wheel, b.get()] {
                s.send(Input::Pointer { x, y, buttons });
            }
            glib::Propagation::Stop
        });
        self.picture.add_controller(scroll);
    }

    /// Maps a widget position to the remote screen, undoing the scaling of
    /// `ContentFit::Contain`; `None` outside the picture.
    fn to_remote(&self, x: f64, y: f64) -> Option<(u16, u16)> {
        let (fw, fh) = self.size.get();
        map_to_remote(
            (x, y),
            (
                f64::from(self.picture.width()),
                f64::from(self.picture.height()),
            ),
            (fw, fh),
        )
    }
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
/// scaled to fit and centred, to remote pixel coordinates.
pub fn map_to_remote(
    pos: (f64, f64),
    widget: (f64, f64),
    remote: (u32, u32),
) -> Option<(u16, u16)> {
    let (rw, rh) = (f64::from(remote.0), f64::from(remote.1));
    if rw == 0.0 || rh == 0.0 || widget.0 <= 0.0 || widget.1 <= 0.0 {
        return None;
    }
    let scale = (widget.0 / rw).min(widget.1 / rh);
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
            map_to_remote((100.0, 0.0), (1000.0, 600.0), (800, 600)),
            Some((0, 0))
        );
        assert_eq!(
            map_to_remote((899.0, 599.0), (1000.0, 600.0), (800, 600)),
            Some((799, 599))
        );
        assert_eq!(
            map_to_remote((50.0, 10.0), (1000.0, 600.0), (800, 600)),
            None
        );
        // Scaled down by half.
        assert_eq!(
            map_to_remote((200.0, 150.0), (400.0, 300.0), (800, 600)),
            Some((400, 300))
        );
        assert_eq!(map_to_remote((1.0, 1.0), (400.0, 300.0), (0, 0)), None);
    }
}
