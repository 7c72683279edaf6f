//! Remote hosts: the connections the user added (remembered in
//! `$XDG_CONFIG_HOME/vireo/connections.json`), the Add Connection dialog,
//! and the [`Prompter`] that asks SSH's questions (passphrases, passwords,
//! keyboard-interactive answers, unknown host keys) as dialogs on the GTK
//! thread while the connecting task waits for the answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adw::prelude::*;
use gettextrs::gettext;
use serde::{Deserialize, Serialize};
use vireo_api::ConnectUri;
use vireo_api::uri::{Scope, Transport};
use vireo_remote::{Prompter, Question, UnknownHost};

/// A remembered connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// `vireo+ssh://…`.
    pub uri: String,
    /// Connect when the app starts.
    #[serde(default)]
    pub autoconnect: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    connections: Vec<Saved>,
}

/// `$XDG_CONFIG_HOME/vireo/connections.json` (`~/.config/…` by default).
pub fn config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("vireo").join("connections.json"))
}

/// The remembered connections; a missing file is an empty list, a broken
/// one an error naming the file.
pub fn load(path: &Path) -> Result<Vec<Saved>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: File = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a valid connections file: {e}", path.display()))?;
    let mut out = Vec::new();
    for saved in file.connections {
        match saved.uri.parse::<ConnectUri>() {
            Ok(u) if matches!(u.transport, Transport::Ssh { .. }) => out.push(saved),
            Ok(_) => tracing::warn!("{}: {} is not a remote URI", path.display(), saved.uri),
            Err(e) => tracing::warn!("{}: {}: {e}", path.display(), saved.uri),
        }
    }
    Ok(out)
}

/// Writes the list atomically (a temporary file renamed over the old one).
pub fn save(path: &Path, connections: &[Saved]) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(&File {
        connections: connections.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// What the Add Connection dialog's fields make, or why they do not.
/// Messages are translated.
pub fn uri_from_fields(
    host: &str,
    user: &str,
    port: &str,
    system: bool,
) -> Result<ConnectUri, String> {
    let host = host.trim();
    let user = user.trim();
    let port = port.trim();
    if host.is_empty() {
        return Err(gettext("Enter the host’s name or address."));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || "/@?#:".contains(c))
    {
        return Err(gettext(
            "The host name cannot contain spaces or any of / @ ? # : (enter the port in its own field).",
        ));
    }
    if user
        .chars()
        .any(|c| c.is_whitespace() || "/@?#:".contains(c))
    {
        return Err(gettext(
            "The user name cannot contain spaces or any of / @ ? # :.",
        ));
    }
    let port = if port.is_empty() {
        None
    } else {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                return Err(gettext("The port must be a number from 1 to 65535."));
            }
        }
    };
    let uri = ConnectUri {
        transport: Transport::Ssh {
            user: (!user.is_empty()).then(|| user.to_owned()),
            host: host.to_owned(),
            port,
            socket: None,
        },
        scope: if system {
            Scope::System
        } else {
            Scope::Session
        },
    };
    // What is shown and saved must read back the same.
    match uri.to_string().parse::<ConnectUri>() {
        Ok(back) if back == uri => Ok(uri),
        _ => Err(gettext("The host name is not valid.")),
    }
}

/// One question for the user, and where the answer goes.
#[derive(Debug)]
pub struct PromptRequest {
    /// What to ask.
    pub kind: PromptKind,
    /// The answers (one per field), or `None` when declined.
    pub reply: std::sync::mpsc::Sender<Option<Vec<String>>>,
}

/// What is asked.
#[derive(Debug, Clone)]
pub enum PromptKind {
    /// An encrypted key's passphrase.
    Passphrase(PathBuf),
    /// A password.
    Password {
        /// Login name.
        user: String,
        /// Host.
        host: String,
        /// Whether the previous password was refused.
        retry: bool,
    },
    /// A keyboard-interactive round.
    Keyboard {
        /// The round's name.
        name: String,
        /// Its instructions.
        instructions: String,
        /// Its questions.
        questions: Vec<Question>,
        /// Whether the previous answers were refused.
        retry: bool,
    },
    /// Whether to trust an unknown host key.
    HostKey(UnknownHost),
}

/// Asks through the GTK thread: `post` hands the request to the window,
/// which shows a dialog and answers on the request's channel.
pub struct DialogPrompter {
    post: Arc<dyn Fn(PromptRequest) + Send + Sync>,
}

impl DialogPrompter {
    /// A prompter handing its questions to `post`.
    pub fn new(post: impl Fn(PromptRequest) + Send + Sync + 'static) -> Self {
        Self {
            post: Arc::new(post),
        }
    }

    fn ask(&self, kind: PromptKind) -> Option<Vec<String>> {
        let (reply, answer) = std::sync::mpsc::channel();
        (self.post)(PromptRequest { kind, reply });
        // Called from the connecting task: let the runtime's other tasks
        // run while the user answers.
        let wait = move || answer.recv().ok().flatten();
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

impl Prompter for DialogPrompter {
    fn passphrase(&self, key: &Path) -> Option<String> {
        self.ask(PromptKind::Passphrase(key.to_owned()))
            .and_then(|mut a| a.pop())
    }

    fn password(&self, user: &str, host: &str, retry: bool) -> Option<String> {
        self.ask(PromptKind::Password {
            user: user.to_owned(),
            host: host.to_owned(),
            retry,
        })
        .and_then(|mut a| a.pop())
    }

    fn keyboard_interactive(
        &self,
        name: &str,
        instructions: &str,
        questions: &[Question],
        retry: bool,
    ) -> Option<Vec<String>> {
        if questions.is_empty() {
            return Some(Vec::new());
        }
        self.ask(PromptKind::Keyboard {
            name: name.to_owned(),
            instructions: instructions.to_owned(),
            questions: questions.to_vec(),
            retry,
        })
    }

    fn confirm_host_key(&self, host: &UnknownHost) -> bool {
        self.ask(PromptKind::HostKey(host.clone())).is_some()
    }
}

/// `body` with OpenSSH's "Permission denied, please try again." before it
/// when the previous answer was refused.
fn with_retry(retry: bool, body: String) -> String {
    if !retry {
        return body;
    }
    let denied = gettext("Permission denied, please try again.");
    if body.is_empty() {
        denied
    } else {
        format!("{denied}\n\n{body}")
    }
}

/// `text`'s lines joined by single spaces (for the log).
fn one_line(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shows `request` as a dialog over `parent` and answers it when closed.
pub fn show_prompt(parent: &impl IsA<gtk::Window>, request: PromptRequest) {
    let PromptRequest { kind, reply } = request;
    let (heading, body, fields, accept): (String, String, Vec<(String, bool)>, String) =
        match &kind {
            PromptKind::Passphrase(key) => (
                gettext("Passphrase Needed"),
                gettext("Enter the passphrase of the key “{key}”.")
                    .replace("{key}", &key.display().to_string()),
                vec![(gettext("Passphrase"), false)],
                gettext("Unlock"),
            ),
            PromptKind::Password { user, host, retry } => (
                gettext("Password Needed"),
                with_retry(
                    *retry,
                    gettext("Enter the password of {user} on {host}.")
                        .replace("{user}", user)
                        .replace("{host}", host),
                ),
                vec![(gettext("Password"), false)],
                gettext("Log In"),
            ),
            PromptKind::Keyboard {
                name,
                instructions,
                questions,
                retry,
            } => (
                if name.is_empty() {
                    gettext("The Server Asks")
                } else {
                    name.clone()
                },
                with_retry(*retry, instructions.clone()),
                questions
                    .iter()
                    .map(|q| (q.prompt.trim().to_owned(), q.echo))
                    .collect(),
                gettext("Send"),
            ),
            PromptKind::HostKey(host) => (
                gettext("Unknown Host Key"),
                // Translators: {host}, {type} (ED25519, RSA…) and
                // {fingerprint} (SHA256:…) come from SSH.
                gettext(
                    "The authenticity of host “{host}” can’t be established.\n\n{type} key fingerprint is\n{fingerprint}\n\nCompare it with the key the host’s administrator gave you. If you trust it, it is added to {file}.",
                )
                .replace("{host}", &host.host)
                .replace("{type}", &host.key_type)
                .replace("{fingerprint}", &host.fingerprint)
                .replace("{file}", &host.known_hosts),
                Vec::new(),
                // Translators: the underscore marks the Alt+key mnemonic.
                gettext("Trust and _Connect"),
            ),
        };
    let dialog = adw::MessageDialog::new(Some(parent), Some(&heading), Some(&body));
    dialog.set_title(Some(&heading));
    dialog.set_body_use_markup(false);
    let group = gtk::Box::new(gtk::Orientation::Vertical, 6);
    let mut entries: Vec<gtk::Editable> = Vec::new();
    for (label, echo) in &fields {
        let title = gtk::Label::new(Some(label));
        title.set_xalign(0.0);
        group.append(&title);
        let entry: gtk::Editable = if *echo {
            gtk::Entry::new().upcast()
        } else {
            let p = gtk::PasswordEntry::new();
            p.set_show_peek_icon(true);
            p.upcast()
        };
        // Enter answers as the default button does. `response()` alone
        // only emits the signal: the dialog (and what was typed) would stay
        // on screen, so it is closed too (its close response is then
        // ignored: only the first response answers).
        let d = dialog.clone();
        let answer = move || {
            d.response("accept");
            d.close();
        };
        if let Some(e) = entry.downcast_ref::<gtk::Entry>() {
            e.connect_activate(move |_| answer());
        } else if let Some(e) = entry.downcast_ref::<gtk::PasswordEntry>() {
            e.connect_activate(move |_| answer());
        }
        group.append(&entry);
        entries.push(entry);
    }
    if !entries.is_empty() {
        dialog.set_extra_child(Some(&group));
    }
    dialog.add_response("cancel", &gettext("Cancel"));
    dialog.add_response("accept", &accept);
    dialog.set_response_appearance("accept", adw::ResponseAppearance::Suggested);
    dialog.set_close_response("cancel");
    dialog.set_default_response(Some(if entries.is_empty() {
        "cancel"
    } else {
        "accept"
    }));
    let first = entries.first().cloned();
    let reply = std::cell::Cell::new(Some(reply));
    dialog.connect_response(None, move |_, response| {
        let Some(reply) = reply.take() else {
            return;
        };
        let answer =
            (response == "accept").then(|| entries.iter().map(|e| e.text().to_string()).collect());
        let _ = reply.send(answer);
    });
    dialog.present();
    if let Some(first) = first {
        first.grab_focus();
    }
    match &kind {
        PromptKind::HostKey(h) => {
            tracing::info!(
                "host key dialog shown: {} {} {}",
                h.host,
                h.key_type,
                h.fingerprint
            )
        }
        PromptKind::Passphrase(_) => tracing::info!("passphrase dialog shown"),
        // The text as shown (never an answer), on one line.
        PromptKind::Password { retry, .. } => {
            tracing::info!(
                "password dialog shown (retry: {retry}): {}",
                one_line(&body)
            )
        }
        PromptKind::Keyboard { retry, .. } => {
            tracing::info!(
                "keyboard-interactive dialog shown (retry: {retry}): {}",
                one_line(&body)
            )
        }
    }
}

/// The fields of the Add Connection dialog.
#[derive(Debug)]
pub struct AddFields {
    /// The URI.
    pub uri: ConnectUri,
    /// Connect at start-up.
    pub autoconnect: bool,
}

/// Shows the Add Connection dialog; `done` gets the new connection. `taken`
/// says whether a URI is already in the list.
pub fn add_connection_dialog(
    parent: &impl IsA<gtk::Window>,
    taken: impl Fn(&str) -> bool + 'static,
    done: impl Fn(AddFields) + 'static,
) {
    let dialog = adw::MessageDialog::new(
        Some(parent),
        Some(&gettext("Add Connection")),
        Some(&gettext(
            "Connect to the Vireo engine on another computer over SSH. Settings in ~/.ssh/config apply.",
        )),
    );
    dialog.set_title(Some(&gettext("Add Connection")));
    let list = gtk::ListBox::new();
    list.add_css_class("boxed-list");
    list.set_selection_mode(gtk::SelectionMode::None);
    let host = adw::EntryRow::new();
    host.set_title(&gettext("Host"));
    let user = adw::EntryRow::new();
    user.set_title(&gettext("User (optional)"));
    let port = adw::EntryRow::new();
    port.set_title(&gettext("Port (optional)"));
    port.set_input_purpose(gtk::InputPurpose::Digits);
    let scopes = gtk::StringList::new(&[&gettext("System"), &gettext("Session")]);
    let scope = adw::ComboRow::new();
    scope.set_title(&gettext("Engine"));
    scope.set_subtitle(&gettext(
        "System: the host’s shared engine. Session: your user’s own engine there.",
    ));
    scope.set_model(Some(&scopes));
    let auto = gtk::Switch::new();
    auto.set_valign(gtk::Align::Center);
    let auto_row = adw::ActionRow::new();
    auto_row.set_title(&gettext("Connect at start-up"));
    auto_row.add_suffix(&auto);
    auto_row.set_activatable_widget(Some(&auto));
    for row in [
        host.upcast_ref::<gtk::Widget>(),
        user.upcast_ref(),
        port.upcast_ref(),
        scope.upcast_ref(),
        auto_row.upcast_ref(),
    ] {
        list.append(row);
    }
    let error = gtk::Label::new(None);
    error.add_css_class("error");
    error.set_wrap(true);
    error.set_xalign(0.0);
    let preview = gtk::Label::new(None);
    preview.add_css_class("dim-label");
    preview.set_xalign(0.0);
    preview.set_selectable(true);
    let content = gtk::Box::new(gtk::Orientation::Vertical, 12);
    content.append(&list);
    content.append(&preview);
    content.append(&error);
    dialog.set_extra_child(Some(&content));
    dialog.add_response("cancel", &gettext("Cancel"));
    dialog.add_response("add", &gettext("Add"));
    dialog.set_response_appearance("add", adw::ResponseAppearance::Suggested);
    dialog.set_close_response("cancel");
    dialog.set_default_response(Some("add"));

    let taken = std::rc::Rc::new(taken);
    let fields = {
        let (host, user, port, scope) = (host.clone(), user.clone(), port.clone(), scope.clone());
        let taken = taken.clone();
        move || {
            let uri = uri_from_fields(
                &host.text(),
                &user.text(),
                &port.text(),
                scope.selected() == 0,
            )?;
            if taken(&uri.to_string()) {
                return Err(gettext("This connection is already in the list."));
            }
            Ok(uri)
        }
    };
    let fields = std::rc::Rc::new(fields);
    let validate = {
        let (dialog, error, preview, fields, host) = (
            dialog.clone(),
            error.clone(),
            preview.clone(),
            fields.clone(),
            host.clone(),
        );
        move || {
            let result = fields();
            dialog.set_response_enabled("add", result.is_ok());
            match result {
                Ok(uri) => {
                    error.set_visible(false);
                    preview.set_label(&uri.to_string());
                    preview.set_visible(true);
                }
                Err(e) => {
                    // An empty form is not an error yet.
                    error.set_visible(!host.text().trim().is_empty());
                    error.set_label(&e);
                    preview.set_visible(false);
                }
            }
        }
    };
    let validate = std::rc::Rc::new(validate);
    for entry in [&host, &user, &port] {
        let v = validate.clone();
        entry.connect_changed(move |_| v());
    }
    let v = validate.clone();
    scope.connect_selected_notify(move |_| v());
    validate();
    // Enter in any field adds, when the fields are valid.
    for entry in [&host, &user, &port] {
        let (d, fields) = (dialog.clone(), fields.clone());
        entry.connect_entry_activated(move |_| {
            if fields().is_ok() {
                // `response()` only emits the signal; the button closes.
                d.response("add");
                d.close();
            }
        });
    }
    dialog.connect_response(None, move |_, response| {
        if response == "add"
            && let Ok(uri) = fields()
        {
            done(AddFields {
                uri,
                autoconnect: auto.is_active(),
            });
        }
    });
    dialog.present();
    host.grab_focus();
    tracing::info!("add connection dialog shown");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_make_uris_and_bad_ones_are_named() {
        let u = uri_from_fields("host.example", "ann", "2222", true).unwrap();
        assert_eq!(u.to_string(), "vireo+ssh://ann@host.example:2222/system");
        let u = uri_from_fields(" h ", "", "", false).unwrap();
        assert_eq!(u.to_string(), "vireo+ssh://h/session");
        assert!(uri_from_fields("", "", "", true).is_err());
        assert!(uri_from_fields("a b", "", "", true).is_err());
        assert!(uri_from_fields("h:22", "", "", true).is_err());
        assert!(uri_from_fields("h", "a@b", "", true).is_err());
        assert!(uri_from_fields("h", "", "0", true).is_err());
        assert!(uri_from_fields("h", "", "70000", true).is_err());
        assert!(uri_from_fields("h", "", "x", true).is_err());
    }

    #[test]
    fn saved_connections_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vireo").join("connections.json");
        assert_eq!(load(&path).unwrap(), Vec::new());
        let list = vec![Saved {
            uri: "vireo+ssh://ann@h:2222/system".into(),
            autoconnect: true,
        }];
        save(&path, &list).unwrap();
        assert_eq!(load(&path).unwrap(), list);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("connections.json"), "{e}");
    }
}
