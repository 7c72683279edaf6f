//! The translations are complete: every user-visible string in the files
//! `po/POTFILES` lists is translated in every language of `po/LINGUAS`, no
//! translation is fuzzy, and the desktop file and metainfo carry them
//! (`i18n.rs` checks that `po/POTFILES` lists every file). The template these tests build is kept as
//! `target/test-artifacts/vireo.pot` for translators.
//!
//! xgettext 0.21 (Debian 12) has no Rust lexer, and its C lexer misreads
//! Rust lifetimes (`'static`) as character constants, so Rust strings are
//! extracted here; the `.desktop` file and the AppStream metainfo go
//! through xgettext, which knows those formats.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vireo_tests::desktop::artifacts_dir;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files `po/POTFILES` lists.
fn potfiles() -> Vec<String> {
    std::fs::read_to_string(root().join("po/POTFILES"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The languages `po/LINGUAS` lists.
fn linguas() -> Vec<String> {
    std::fs::read_to_string(root().join("po/LINGUAS"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Reads the Rust string literal starting just after its opening quote;
/// returns its value and the rest of the text.
fn string_literal(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                '0' => out.push('\0'),
                // A line continuation skips the newline and leading blanks.
                '\n' => {
                    let rest = &s[i + 2..];
                    let trimmed = rest.trim_start();
                    let skip = rest.len() - trimmed.len();
                    let (value, tail) = string_literal(&rest[skip..])?;
                    out.push_str(&value);
                    return Some((out, tail));
                }
                'u' => {
                    let rest = &s[i + 2..];
                    let end = rest.find('}')?;
                    let code = u32::from_str_radix(rest.get(1..end)?, 16).ok()?;
                    out.push(char::from_u32(code)?);
                    let (value, tail) = string_literal(&rest[end + 1..])?;
                    out.push_str(&value);
                    return Some((out, tail));
                }
                other => panic!("unexpected escape \\{other} in a gettext string"),
            },
            c => out.push(c),
        }
    }
    None
}

/// Every `gettext("…")` literal in a Rust file.
fn rust_msgids(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("gettext(") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "gettext(".len()..];
        // `pgettext(`/`ngettext(` would need their own rules; none are used.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(lit) = trimmed.strip_prefix('"') {
            let (id, tail) = string_literal(lit).expect("an unterminated gettext string");
            ids.push(id);
            rest = tail;
        }
    }
    ids
}

fn po_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); `make test` installs gettext"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the template from `po/POTFILES` into the artifacts folder.
fn build_pot() -> PathBuf {
    let pot = artifacts_dir().join("vireo.pot");
    let mut text =
        String::from("msgid \"\"\nmsgstr \"\"\n\"Content-Type: text/plain; charset=UTF-8\\n\"\n\n");
    let mut seen = BTreeSet::new();
    let mut others = Vec::new();
    for file in potfiles() {
        if !file.ends_with(".rs") {
            others.push(file);
            continue;
        }
        let src = std::fs::read_to_string(root().join(&file))
            .unwrap_or_else(|e| panic!("po/POTFILES lists {file}, which cannot be read: {e}"));
        for id in rust_msgids(&src) {
            if !id.is_empty() && seen.insert(id.clone()) {
                text.push_str(&format!(
                    "#: {file}\nmsgid \"{}\"\nmsgstr \"\"\n\n",
                    po_escape(&id)
                ));
            }
        }
    }
    std::fs::write(&pot, text).unwrap();
    let pot_arg = pot.to_str().unwrap().to_owned();
    for file in others {
        let mut args = vec!["--join-existing", "--from-code=UTF-8", "-o", &pot_arg];
        if file.ends_with(".desktop") {
            args.extend(["--language=Desktop"]);
        }
        args.push(&file);
        run("xgettext", &args);
    }
    pot
}

#[test]
fn every_language_translates_every_string() {
    let pot = build_pot();
    let pot = pot.to_str().unwrap();
    for lang in linguas() {
        let po = format!("po/{lang}.po");
        let merged = artifacts_dir().join(format!("{lang}.merged.po"));
        let merged = merged.to_str().unwrap();
        run(
            "msgmerge",
            &["--quiet", "--no-fuzzy-matching", "-o", merged, &po, pot],
        );
        let untranslated = run("msgattrib", &["--untranslated", "--no-obsolete", merged]);
        let fuzzy = run("msgattrib", &["--only-fuzzy", "--no-obsolete", merged]);
        // msgattrib prints the header entry too; real entries have a
        // non-empty msgid.
        let entries = |s: &str| -> Vec<String> {
            s.split("\n\n")
                .filter(|e| e.contains("msgid") && !e.contains("msgid \"\"\nmsgstr"))
                .map(|e| e.trim().to_owned())
                .collect()
        };
        let (u, f) = (entries(&untranslated), entries(&fuzzy));
        assert!(
            u.is_empty() && f.is_empty(),
            "{po} is incomplete ({} untranslated, {} fuzzy); `msgmerge {po} \
             target/test-artifacts/vireo.pot` then translate:\n{}\n{}",
            u.len(),
            f.len(),
            u.join("\n\n"),
            f.join("\n\n")
        );
    }
}

/// The `{name}` placeholders the app fills with `str::replace`.
fn placeholders(s: &str) -> BTreeSet<&str> {
    s.split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect()
}

#[test]
fn translations_keep_every_placeholder() {
    for lang in linguas() {
        // One entry per line pair, with msgcat's --no-wrap layout.
        let po = run(
            "msgcat",
            &["--no-wrap", "--no-location", &format!("po/{lang}.po")],
        );
        let mut id = None;
        for line in po.lines() {
            if let Some(v) = line.strip_prefix("msgid \"") {
                id = Some(v.trim_end_matches('"').to_owned());
            } else if let Some(v) = line.strip_prefix("msgstr \"") {
                let text = v.trim_end_matches('"');
                if let Some(id) = id.take().filter(|_| !text.is_empty()) {
                    assert_eq!(
                        placeholders(&id),
                        placeholders(text),
                        "po/{lang}.po: the translation of {id:?} has other placeholders: {text:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn desktop_file_and_metainfo_merge_the_translations() {
    let dir = tempfile::tempdir().unwrap();
    let desktop = dir.path().join("dev.vireo.Vireo.desktop");
    let metainfo = dir.path().join("dev.vireo.Vireo.metainfo.xml");
    run(
        "msgfmt",
        &[
            "--desktop",
            "--template=resources/dev.vireo.Vireo.desktop",
            "-d",
            "po",
            "-o",
            desktop.to_str().unwrap(),
        ],
    );
    run(
        "msgfmt",
        &[
            "--xml",
            "--template=resources/dev.vireo.Vireo.metainfo.xml",
            "-d",
            "po",
            "-o",
            metainfo.to_str().unwrap(),
        ],
    );
    let d = std::fs::read_to_string(&desktop).unwrap();
    let m = std::fs::read_to_string(&metainfo).unwrap();
    for lang in linguas() {
        assert!(
            d.contains(&format!("Comment[{lang}]=")),
            "no {lang} Comment in the merged desktop file:\n{d}"
        );
        assert!(
            m.contains(&format!("xml:lang=\"{lang}\"")),
            "no {lang} text in the merged metainfo:\n{m}"
        );
    }
    run("desktop-file-validate", &[desktop.to_str().unwrap()]);
    run(
        "appstreamcli",
        &["validate", "--no-net", metainfo.to_str().unwrap()],
    );
}

#[test]
fn extraction_reads_rust_literals_as_rustc_does() {
    let src = r#"let a = gettext("Shut \"Down\""); let b: &'static str = x;
        ngettext("no", "nos", 2); my_gettext("no");
        gettext(
            "Two\nlines \u{2013} dash"
        );"#;
    assert_eq!(
        rust_msgids(src),
        vec!["Shut \"Down\"".to_owned(), "Two\nlines – dash".to_owned()]
    );
}
