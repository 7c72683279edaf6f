//! Build-time constants. Packagers override them with environment variables
//! at build time (`VIREO_LOCALEDIR`, `VIREO_PROFILE`).

/// `Devel` for development builds, so they can be installed beside a release.
pub const PROFILE: &str = match option_env!("VIREO_PROFILE") {
    Some(p) => p,
    None if cfg!(debug_assertions) => "Devel",
    None => "",
};

/// The application ID (`.Devel` in development builds).
pub const APP_ID: &str = if PROFILE.is_empty() {
    "dev.vireo.Vireo"
} else {
    "dev.vireo.Vireo.Devel"
};

/// The gettext domain.
pub const GETTEXT_PACKAGE: &str = "vireo";

/// Where compiled translations live: an installed path, or the ones built
/// next to the binary by `build.rs`.
pub const LOCALEDIR: &str = match option_env!("VIREO_LOCALEDIR") {
    Some(d) => d,
    None => env!("VIREO_BUILD_LOCALEDIR"),
};

/// The version shown in the About dialog.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
