//! The Vireo desktop app. `main.rs` only calls [`run`].

pub mod config;
mod connection;
mod engine;
mod i18n;
mod remote;
mod serial_view;
mod vm_details;
mod vm_list;
mod vm_perf;
mod vm_row;
mod vm_window;
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

    // virt-manager's option: open this domain's console at start-up.
    let mut start = window::Start::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--show-domain-console" => start.show_console = args.next(),
            // virt-manager's option: the connection it is on.
            "-c" | "--connect" => start.connect = args.next(),
            _ => {}
        }
    }

    // Initialises GTK and libadwaita, so the display exists from here on.
    let app = relm4::RelmApp::new(config::APP_ID).with_args(Vec::new());
    relm4::set_global_css(include_str!("../../resources/style.css"));
    app.run::<window::ManagerWindow>(start);
    glib::ExitCode::SUCCESS
}
