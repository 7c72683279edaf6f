//! Save Screenshot: a file dialog in the Pictures folder with a dated
//! name, then the shown screen written as PNG (to a temporary file renamed
//! into place).

use std::path::PathBuf;

use adw::prelude::*;
use gettextrs::gettext;
use gtk::{gio, glib};
use relm4::prelude::*;

use super::{VmCmd, VmMsg, VmWindow};

impl VmWindow {
    /// Asks where to save the shown screen.
    pub(super) fn ask_screenshot(&mut self, root: &adw::Window, sender: &ComponentSender<Self>) {
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

    /// Writes the shown screen to `path` (`None`: the dialog was
    /// cancelled).
    pub(super) fn save_screenshot(
        &mut self,
        path: Option<PathBuf>,
        sender: &ComponentSender<Self>,
    ) {
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
}
