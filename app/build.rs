//! Compiles the GResource bundle and the translations at build time, so a
//! plain `cargo build` produces a runnable app.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let resources = root.join("resources");
    let po = root.join("po");

    glib_build_tools::compile_resources(
        &[resources.to_str().unwrap()],
        resources.join("vireo.gresource.xml").to_str().unwrap(),
        "vireo.gresource",
    );

    // po/LINGUAS → $OUT_DIR/locale/<lang>/LC_MESSAGES/vireo.mo
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("locale");
    println!("cargo:rerun-if-changed={}", po.join("LINGUAS").display());
    let linguas = fs::read_to_string(po.join("LINGUAS")).expect("po/LINGUAS is missing");
    for lang in linguas
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let src = po.join(format!("{lang}.po"));
        println!("cargo:rerun-if-changed={}", src.display());
        let dir = out.join(lang).join("LC_MESSAGES");
        fs::create_dir_all(&dir).unwrap();
        let status = Command::new("msgfmt")
            .arg("--check")
            .arg("-o")
            .arg(dir.join("vireo.mo"))
            .arg(&src)
            .status()
            .expect("msgfmt not found: install gettext (make run does)");
        assert!(status.success(), "msgfmt failed on {}", src.display());
    }
    println!("cargo:rustc-env=VIREO_BUILD_LOCALEDIR={}", out.display());
}
