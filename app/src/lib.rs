//! The Vireo desktop app. `main.rs` only calls [`run`].

pub mod config;
mod engine;
mod i18n;
mod vm_row;
mod window;

use gtk::{gio, glib};

/// Starts the app and returns its exit code.
pub fn run() -> glib::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    i18n::init();
    gio::resources_register_include!("vireo.gresource").expect("bundled resources are valid");
    glib::set_application_name(&gettextrs::gettext("Vireo"));

    // Initialises GTK and libadwaita, so the display exists from here on.
    let app = relm4::RelmApp::new(config::APP_ID);
    relm4::set_global_css(include_str!("../../resources/style.css"));
    app.run::<window::ManagerWindow>(());
    glib::ExitCode::SUCCESS
}
