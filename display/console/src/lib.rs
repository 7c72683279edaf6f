//! The console widget.
//!
//! [`framebuffer`] is the client-side copy of the guest's screen, updated
//! rectangle by rectangle as the remote-display client decodes them and free
//! of GTK, so it is tested on its own. [`view`] shows it in a GTK widget.

pub mod framebuffer;
pub mod session;
pub mod view;

pub use framebuffer::{Framebuffer, Rect};
pub use session::{ConsoleEvent, Input, ResizeRefused, Session};
pub use view::{ConsoleView, ViewMode};
