//! gettext set-up: the app follows the desktop's language (LANG/LC_*).

use gettextrs::{LocaleCategory, bind_textdomain_codeset, bindtextdomain, setlocale, textdomain};

use crate::config::{GETTEXT_PACKAGE, LOCALEDIR};

pub fn init() {
    setlocale(LocaleCategory::LcAll, "");
    // A missing catalogue is not an error: the app shows English.
    let _ = bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
    let _ = bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
    let _ = textdomain(GETTEXT_PACKAGE);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every source file that calls gettext is listed in po/POTFILES, and
    /// every listed file exists (Loupe's and Fractal's CI check this too).
    #[test]
    fn potfiles_lists_exactly_the_translatable_sources() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let listed: BTreeSet<String> = fs::read_to_string(root.join("po/POTFILES"))
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let mut files = Vec::new();
        rust_files(&root.join("app/src"), &mut files);
        rust_files(&root.join("display/console/src"), &mut files);
        let needed: BTreeSet<String> = files
            .iter()
            .filter(|p| {
                let text = fs::read_to_string(p).unwrap();
                text.contains("gettext(")
                    || text.contains("ngettext(")
                    || text.contains("pgettext(")
            })
            .filter(|p| !p.ends_with("i18n.rs"))
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let missing: Vec<_> = needed.difference(&listed).collect();
        assert!(missing.is_empty(), "add to po/POTFILES: {missing:?}");
        for f in &listed {
            assert!(root.join(f).exists(), "po/POTFILES lists missing file {f}");
        }
    }
}
