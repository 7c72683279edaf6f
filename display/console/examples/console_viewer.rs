//! A window with just the console widget, connected to a VNC unix socket:
//! `console_viewer SOCKET`. Used by the widget's tests under Xvfb.

use gtk::prelude::*;
use vireo_console::{ConsoleView, Session};

fn main() -> gtk::glib::ExitCode {
    let Some(socket) = std::env::args().nth(1) else {
        eprintln!("usage: console_viewer SOCKET");
        return gtk::glib::ExitCode::FAILURE;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let connected = runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(&socket).await?;
        Session::connect(stream, None)
            .await
            .map_err(std::io::Error::other)
    });
    let (session, events) = match connected {
        Ok(c) => c,
        Err(e) => {
            eprintln!("console_viewer: {e}");
            return gtk::glib::ExitCode::FAILURE;
        }
    };
    let app = gtk::Application::builder()
        .application_id("dev.vireo.ConsoleViewer")
        .flags(gtk::gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let parts = std::cell::RefCell::new(Some((session, events)));
    app.connect_activate(move |app| {
        let Some((session, events)) = parts.borrow_mut().take() else {
            return;
        };
        let view = ConsoleView::new();
        let window = gtk::ApplicationWindow::builder()
            .application(app)
            .title("Vireo console test")
            .default_width(820)
            .default_height(620)
            .child(view.widget())
            .build();
        let app = app.clone();
        view.attach(
            session,
            events,
            |_| {},
            move |why| {
                eprintln!("console_viewer: {why}");
                app.quit();
            },
        );
        window.present();
        view.focus_widget().grab_focus();
    });
    let code = app.run_with_args::<&str>(&[]);
    drop(runtime);
    code
}
