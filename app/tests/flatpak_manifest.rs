//! The Flatpak manifest (`flatpak/dev.vireo.Vireo.json`) must be one that
//! flatpak-builder reads as written, must provide every shared library the
//! app binary links (from the GNOME runtime or a module of its own), and its
//! modules must match the runtime and the crates' feature levels. Flathub
//! cannot be reached here, so nothing is downloaded or built: the build
//! itself is checked where the runtime is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest_path() -> PathBuf {
    root().join("flatpak/dev.vireo.Vireo.json")
}

fn manifest() -> Value {
    let path = manifest_path();
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn modules(m: &Value) -> &Vec<Value> {
    m["modules"].as_array().expect("\"modules\" is a list")
}

fn module<'a>(m: &'a Value, name: &str) -> &'a Value {
    modules(m)
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("the manifest has no module \"{name}\""))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What each GNOME runtime this manifest may name ships, as far as the app
/// is concerned: the shared libraries it provides (the freedesktop base's
/// C runtime included), the GTK and libadwaita minor versions, and the VTE
/// series released with it (VTE is not in the runtime: a module builds it).
struct Runtime {
    version: &'static str,
    gtk4_minor: u32,
    adwaita_minor: u32,
    vte_minor: u32,
    libraries: &'static [&'static str],
}

const RUNTIMES: &[Runtime] = &[Runtime {
    version: "47",
    gtk4_minor: 16,
    adwaita_minor: 6,
    vte_minor: 78,
    libraries: &[
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libglib-2.0.so.0",
        "libgobject-2.0.so.0",
        "libgio-2.0.so.0",
        "libgtk-4.so.1",
        "libadwaita-1.so.0",
        "libpango-1.0.so.0",
        "libpangocairo-1.0.so.0",
        "libcairo.so.2",
        "libcairo-gobject.so.2",
        "libgdk_pixbuf-2.0.so.0",
        "libgraphene-1.0.so.0",
        "libharfbuzz.so.0",
    ],
}];

fn runtime(m: &Value) -> &'static Runtime {
    let version = m["runtime-version"].as_str().unwrap();
    RUNTIMES
        .iter()
        .find(|r| r.version == version)
        .unwrap_or_else(|| {
            panic!(
                "org.gnome.Platform {version} is not described in this test: add what it \
                 ships (and check the VTE module's series, which follows the GNOME release)"
            )
        })
}

/// The shared libraries a module of the manifest installs.
fn module_libraries(module: &Value) -> Vec<String> {
    let opts = strings(&module["config-opts"]);
    match module["name"].as_str() {
        Some("vte") => {
            let mut libs = Vec::new();
            if opts.contains(&"-Dgtk4=true") {
                libs.push("libvte-2.91-gtk4.so.0".to_owned());
            }
            if !opts.contains(&"-Dgtk3=false") {
                libs.push("libvte-2.91.so.0".to_owned());
            }
            libs
        }
        _ => Vec::new(),
    }
}

/// `NEEDED` entries of the app binary, as the dynamic loader reads them.
fn needed_libraries() -> Vec<String> {
    let bin = env!("CARGO_BIN_EXE_vireo");
    let out = Command::new("readelf")
        .args(["-d", bin])
        .output()
        .unwrap_or_else(|e| panic!("cannot run readelf ({e}); Debian: binutils"));
    assert!(out.status.success(), "readelf -d {bin} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let libs: Vec<String> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect();
    assert!(!libs.is_empty(), "no NEEDED entries in {bin}:\n{text}");
    libs
}

/// The `vN_M` feature the workspace enables on `crate_name` (the highest).
fn feature_minor(crate_name: &str, prefix: &str) -> u32 {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = cargo
        .lines()
        .find(|l| {
            l.starts_with(&format!("{crate_name} =")) || l.contains(&format!("\"{crate_name}\""))
        })
        .unwrap_or_else(|| panic!("{crate_name} is not in the workspace's dependencies"));
    line.split('"')
        .filter_map(|w| w.strip_prefix(prefix))
        .filter_map(|m| m.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no {prefix}N feature on: {line}"))
}

#[test]
fn flatpak_builder_reads_the_manifest_with_every_module_and_source() {
    let m = manifest();
    // flatpak-builder keeps its state in the working directory: a
    // temporary one, so nothing is left in the tree.
    let state = tempfile::tempdir().unwrap();
    let out = Command::new("flatpak-builder")
        .arg("--show-manifest")
        .arg(manifest_path().canonicalize().unwrap())
        .current_dir(state.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run flatpak-builder ({e}); `make test` installs it"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flatpak-builder --show-manifest: {stderr}"
    );
    // It drops what it cannot read with only a warning (an empty
    // cargo-sources.json loses the whole module's sources).
    assert!(
        !stderr.contains("WARNING") && !stderr.contains("Failed"),
        "flatpak-builder warns:\n{stderr}"
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |v: &Value| -> Vec<String> {
        modules(v)
            .iter()
            .map(|x| x["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&read), names(&m));
    for module in modules(&read) {
        let sources = module["sources"].as_array().map_or(0, Vec::len);
        assert!(
            sources > 0,
            "module {} lost its sources: {stderr}",
            module["name"]
        );
    }
    // Every crate Cargo.lock names, plus the tree itself.
    let vireo = module(&read, "vireo");
    let crates = vireo["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "archive")
        .count();
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let registry = lock
        .lines()
        .filter(|l| l.starts_with("source = \"registry+"))
        .count();
    assert_eq!(
        crates, registry,
        "one archive per crates.io crate in Cargo.lock"
    );
}

#[test]
fn cargo_sources_are_up_to_date_with_cargo_lock() {
    let out = Command::new("python3")
        .arg(root().join("build-aux/flatpak-cargo-sources"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-aux/flatpak-cargo-sources: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read(root().join("flatpak/cargo-sources.json")).unwrap();
    assert!(
        committed == out.stdout,
        "flatpak/cargo-sources.json does not match Cargo.lock: run build-aux/flatpak-cargo-sources"
    );
}

#[test]
fn every_library_the_app_links_comes_from_the_runtime_or_a_module() {
    let m = manifest();
    let rt = runtime(&m);
    let mut provided: Vec<String> = rt.libraries.iter().map(|l| (*l).to_owned()).collect();
    // Modules build in order: only those before the app's count.
    let app_index = modules(&m)
        .iter()
        .position(|x| x["name"] == "vireo")
        .expect("the manifest has no module \"vireo\"");
    for module in &modules(&m)[..app_index] {
        provided.extend(module_libraries(module));
    }
    let needed = needed_libraries();
    for lib in [
        "libgtk-4.so.1",
        "libadwaita-1.so.0",
        "libvte-2.91-gtk4.so.0",
    ] {
        assert!(
            needed.iter().any(|n| n == lib),
            "the app no longer links {lib}? {needed:?}"
        );
    }
    let missing: Vec<&String> = needed.iter().filter(|n| !provided.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "the app links {missing:?}, which neither org.gnome.Platform {} nor a module before \
         \"vireo\" provides",
        rt.version
    );
}

#[test]
fn modules_match_the_runtime_and_the_crates_feature_levels() {
    let m = manifest();
    assert_eq!(m["runtime"], "org.gnome.Platform");
    assert_eq!(m["sdk"], "org.gnome.Sdk");
    let rt = runtime(&m);
    // The Rust bindings' feature levels must be within the runtime's.
    let gtk = feature_minor("gtk", "v4_");
    assert!(
        gtk <= rt.gtk4_minor,
        "gtk4 feature v4_{gtk} needs GTK 4.{gtk}; GNOME {} has 4.{}",
        rt.version,
        rt.gtk4_minor
    );
    let adw = feature_minor("adw", "v1_");
    assert!(
        adw <= rt.adwaita_minor,
        "libadwaita feature v1_{adw}; GNOME {} has 1.{}",
        rt.version,
        rt.adwaita_minor
    );

    let vte = module(&m, "vte");
    assert_eq!(vte["buildsystem"], "meson");
    let opts = strings(&vte["config-opts"]);
    for opt in ["-Dgtk4=true", "-Dgtk3=false", "-Dgir=false", "-Dvapi=false"] {
        assert!(opts.contains(&opt), "the vte module lacks {opt}: {opts:?}");
    }
    let sources = vte["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");
    let src = &sources[0];
    assert_eq!(src["type"], "archive");
    let url = src["url"].as_str().unwrap();
    let sha = src["sha256"].as_str().unwrap_or_default();
    assert!(
        sha.len() == 64
            && sha
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase()),
        "the vte archive needs a sha256 (64 lower-case hex digits), not '{sha}'"
    );
    // https://download.gnome.org/sources/vte/0.MM/vte-0.MM.P.tar.xz: a
    // stable (even) release of the series GNOME released with the runtime.
    let rest = url
        .strip_prefix("https://download.gnome.org/sources/vte/")
        .unwrap_or_else(|| panic!("not a GNOME release tarball: {url}"));
    let (series, file) = rest.split_once('/').unwrap();
    let version = file
        .strip_prefix("vte-")
        .and_then(|f| f.strip_suffix(".tar.xz"))
        .unwrap_or_else(|| panic!("unexpected tarball name {file}"));
    assert!(
        version.starts_with(&format!("{series}.")),
        "{file} is not in the folder of its series {series}"
    );
    let minor: u32 = series.strip_prefix("0.").unwrap().parse().unwrap();
    assert_eq!(
        minor, rt.vte_minor,
        "VTE 0.{minor} with GNOME {}, whose VTE is 0.{}",
        rt.version, rt.vte_minor
    );
    let needed = feature_minor("vte4-sys", "v0_");
    assert!(
        minor >= needed,
        "vte4-sys feature v0_{needed} needs VTE 0.{needed}, the module builds 0.{minor}"
    );
}
