//! What desktops read about the app must pass the freedesktop validators.

use std::path::{Path, PathBuf};
use std::process::Command;

fn resource(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../resources")
        .join(name)
}

fn run(tool: &str, args: &[&str], file: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); `make test` installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{tool} rejected {}:\n{text}",
        file.display()
    );
    text
}

#[test]
fn desktop_file_passes_desktop_file_validate() {
    let text = run(
        "desktop-file-validate",
        &[],
        &resource("dev.vireo.Vireo.desktop"),
    );
    assert!(
        text.trim().is_empty(),
        "desktop-file-validate warns:\n{text}"
    );
}

#[test]
fn metainfo_passes_appstreamcli_validate() {
    let text = run(
        "appstreamcli",
        &["validate", "--no-net"],
        &resource("dev.vireo.Vireo.metainfo.xml"),
    );
    assert!(!text.contains("W:") && !text.contains("E:"), "{text}");
}
