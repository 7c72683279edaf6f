fn main() -> gtk::glib::ExitCode {
    vireo_app::run()
}
