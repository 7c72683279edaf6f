//! The GTK side of the console: a widget that shows a [`Framebuffer`].

use gtk::prelude::*;
use gtk::{gdk, glib};

use crate::framebuffer::Framebuffer;

/// Shows the remote screen, scaled to the widget while keeping its aspect.
#[derive(Debug, Clone)]
pub struct ConsoleView {
    picture: gtk::Picture,
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
        picture.add_css_class("vireo-console");
        Self { picture }
    }

    /// The widget to put in a container.
    pub fn widget(&self) -> &gtk::Widget {
        self.picture.upcast_ref()
    }

    /// Shows the framebuffer's current contents.
    pub fn show(&self, fb: &Framebuffer) {
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
}
