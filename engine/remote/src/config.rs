//! The part of `~/.ssh/config` that decides where and as whom we connect:
//! `Host` blocks (patterns with `*`, `?` and `!negation`), `Match all`,
//! `HostName`, `Port`, `User`, `IdentityFile`, `ProxyJump`, `Include`, and
//! how to authenticate: `PreferredAuthentications` and
//! `NumberOfPasswordPrompts`. As in OpenSSH, the first value found for a
//! keyword wins, except `IdentityFile`, whose values add up. Other keywords
//! are ignored.

use std::path::{Path, PathBuf};

/// What the configuration says about one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`, with `%h` expanded.
    pub hostname: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `User`.
    pub user: Option<String>,
    /// `IdentityFile`s, in order, with `~` and `%d`/`%u`/`%h`/`%r` expanded.
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump` (`none` is kept as an empty list).
    pub proxy_jump: Option<Vec<String>>,
    /// `PreferredAuthentications`: method names in the order to try them
    /// (names we do not implement are kept; the connection skips them).
    pub preferred_authentications: Option<Vec<String>>,
    /// `NumberOfPasswordPrompts`: how many times a password,
    /// keyboard-interactive answer or key passphrase is asked for.
    pub number_of_password_prompts: Option<u32>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read '{}': {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A keyword has a value we cannot use.
    #[error("{}:{line}: {message}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One configuration line that applies under a condition.
#[derive(Debug, Clone)]
struct Entry {
    /// The `Host` patterns in force (empty: before any `Host`, applies to all).
    patterns: Vec<String>,
    keyword: String,
    value: String,
    path: PathBuf,
    line: usize,
}

/// A parsed configuration (with `Include`s read).
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    entries: Vec<Entry>,
}

/// Where `~` and `%d` point, and who `%u` is, for expansion.
#[derive(Debug, Clone)]
pub struct Env {
    /// The local home directory.
    pub home: PathBuf,
    /// The local user name.
    pub local_user: String,
}

impl Env {
    /// From `HOME` and `USER`/`LOGNAME` (falling back to the password database).
    pub fn current() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self {
            home,
            local_user: local_user_name(),
        }
    }
}

/// The local user's login name.
pub fn local_user_name() -> String {
    if let Some(name) = std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|n| !n.is_empty())
    {
        return name;
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    // SAFETY: getpwuid returns null or a pointer to a static record that
    // stays valid until the next getpw* call on this thread; we copy the
    // name out at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return uid.to_string();
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let pw_name = unsafe { (*pw).pw_name };
    // SAFETY: pw_name is a NUL-terminated string in that record.
    let name = unsafe { std::ffi::CStr::from_ptr(pw_name) };
    name.to_string_lossy().into_owned()
}

impl SshConfig {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.read_file(path, env, 0)?;
        Ok(config)
    }

    /// Parses configuration text (for tests and `Include`).
    pub fn parse(text: &str, path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.read_text(text, path, env, 0, &mut Vec::new())?;
        Ok(config)
    }

    fn read_file(&mut self, path: &Path, env: &Env, depth: usize) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        self.read_text(&text, path, env, depth, &mut Vec::new())
    }

    fn read_text(
        &mut self,
        text: &str,
        path: &Path,
        env: &Env,
        depth: usize,
        patterns: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let bad = |line: usize, message: String| ConfigError::Bad {
            path: path.to_owned(),
            line,
            message,
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(trimmed);
            let keyword = keyword.to_ascii_lowercase();
            let args = split_args(rest).map_err(|m| bad(line, m))?;
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(bad(line, "'Host' needs at least one pattern".into()));
                    }
                    *patterns = args;
                }
                "match" => {
                    // Only `Match all` is understood; other criteria make
                    // the block never apply (we cannot evaluate them).
                    *patterns = if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                        vec!["*".into()]
                    } else {
                        vec!["!*".into()]
                    };
                }
                "include" => {
                    if depth >= 8 {
                        return Err(bad(line, "'Include' nested too deeply".into()));
                    }
                    for arg in args {
                        let expanded = expand_tilde(&arg, env);
                        let full = if expanded.is_absolute() {
                            expanded
                        } else {
                            env.home.join(".ssh").join(expanded)
                        };
                        for file in glob_files(&full) {
                            // An included file starts in the including block.
                            let mut inner = patterns.clone();
                            let text = match std::fs::read_to_string(&file) {
                                Ok(t) => t,
                                Err(source) => {
                                    return Err(ConfigError::Read { path: file, source });
                                }
                            };
                            self.read_text(&text, &file, env, depth + 1, &mut inner)?;
                        }
                    }
                }
                _ => {
                    // The authentication keywords take exactly one value (as
                    // OpenSSH, which refuses extra arguments).
                    let name = match keyword.as_str() {
                        "numberofpasswordprompts" => Some("NumberOfPasswordPrompts"),
                        "preferredauthentications" => Some("PreferredAuthentications"),
                        _ => None,
                    };
                    if let Some(name) = name
                        && args.len() > 1
                    {
                        let hint = if name == "PreferredAuthentications" {
                            " (separate methods with commas, no spaces)"
                        } else {
                            ""
                        };
                        return Err(bad(
                            line,
                            format!("'{name}' takes one value, not {}{hint}", args.len()),
                        ));
                    }
                    let Some(value) = args.into_iter().next() else {
                        return Err(bad(line, format!("'{keyword}' has no value")));
                    };
                    if keyword == "port" && value.parse::<u16>().ok().filter(|&p| p != 0).is_none()
                    {
                        return Err(bad(line, format!("bad port '{value}'")));
                    }
                    if keyword == "numberofpasswordprompts" && value.parse::<u32>().is_err() {
                        return Err(bad(
                            line,
                            format!(
                                "bad NumberOfPasswordPrompts '{value}' (a whole number is needed)"
                            ),
                        ));
                    }
                    self.entries.push(Entry {
                        patterns: patterns.clone(),
                        keyword,
                        value,
                        path: path.to_owned(),
                        line,
                    });
                }
            }
        }
        Ok(())
    }

    /// The settings for the host alias `host` (as the user typed it).
    pub fn resolve(&self, host: &str, env: &Env) -> HostConfig {
        let mut out = HostConfig::default();
        let mut proxy_seen = false;
        for e in &self.entries {
            if !e.patterns.is_empty() && !host_matches(host, &e.patterns) {
                continue;
            }
            match e.keyword.as_str() {
                "hostname" if out.hostname.is_none() => {
                    out.hostname = Some(e.value.replace("%h", host).replace("%%", "%"));
                }
                "port" if out.port.is_none() => out.port = e.value.parse().ok(),
                "user" if out.user.is_none() => out.user = Some(e.value.clone()),
                "identityfile" => {
                    if e.value.eq_ignore_ascii_case("none") {
                        continue;
                    }
                    out.identity_files.push(PathBuf::from(expand_tokens(
                        &expand_tilde(&e.value, env).to_string_lossy(),
                        host,
                        env,
                    )));
                }
                "preferredauthentications" if out.preferred_authentications.is_none() => {
                    out.preferred_authentications = Some(
                        e.value
                            .split(',')
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                "numberofpasswordprompts" if out.number_of_password_prompts.is_none() => {
                    out.number_of_password_prompts = e.value.parse().ok();
                }
                "proxyjump" if !proxy_seen => {
                    proxy_seen = true;
                    out.proxy_jump = Some(if e.value.eq_ignore_ascii_case("none") {
                        Vec::new()
                    } else {
                        e.value.split(',').map(str::to_owned).collect()
                    });
                }
                _ => {}
            }
        }
        // %r in IdentityFile is the remote user, known only now.
        let remote_user = out.user.clone().unwrap_or_else(|| env.local_user.clone());
        for f in &mut out.identity_files {
            let s = f.to_string_lossy().replace("%r", &remote_user);
            *f = PathBuf::from(s);
        }
        out
    }

    /// Where a keyword's value came from, for error messages.
    pub fn origin(&self, host: &str, keyword: &str) -> Option<String> {
        self.entries
            .iter()
            .find(|e| {
                e.keyword == keyword && (e.patterns.is_empty() || host_matches(host, &e.patterns))
            })
            .map(|e| format!("{}:{}", e.path.display(), e.line))
    }
}

fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (&line[..end], rest)
}

/// Splits arguments on whitespace, honouring double quotes.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(args);
        };
        if first == '#' {
            return Ok(args);
        }
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => arg.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
}

/// Whether `host` matches a `Host` line: some positive pattern matches and
/// no negated one does.
fn host_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob_match(&neg.to_ascii_lowercase(), &host.to_ascii_lowercase()) {
                return false;
            }
        } else if glob_match(&p.to_ascii_lowercase(), &host.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcards, as OpenSSH's `match_pattern`.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn expand_tilde(value: &str, env: &Env) -> PathBuf {
    if value == "~" {
        env.home.clone()
    } else if let Some(rest) = value.strip_prefix("~/") {
        env.home.join(rest)
    } else {
        PathBuf::from(value)
    }
}

fn expand_tokens(value: &str, host: &str, env: &Env) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&env.home.to_string_lossy()),
            Some('u') => out.push_str(&env.local_user),
            Some('h') => out.push_str(host),
            Some('%') => out.push('%'),
            // %r is filled in once the user is known.
            Some('r') => out.push_str("%r"),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The files an `Include` pattern names (`*` in the last component only).
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if pattern.exists() {
            vec![pattern.to_owned()]
        } else {
            Vec::new()
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            home: PathBuf::from("/home/ann"),
            local_user: "ann".into(),
        }
    }

    const CONFIG: &str = "\
# comment
IdentityFile ~/.ssh/global_key

Host box box.example !nope
    HostName 192.0.2.7
    Port 2222
    User root
    IdentityFile %d/.ssh/box_%r
    ProxyJump jump1,alice@jump2:2200

Host *.lan
    HostName %h.internal
    User=lanuser

Host *
    User fallback
    Port 22
";

    #[test]
    fn first_value_wins_and_identity_files_add_up() {
        let c = SshConfig::parse(CONFIG, Path::new("cfg"), &env()).unwrap();
        let h = c.resolve("box", &env());
        assert_eq!(h.hostname.as_deref(), Some("192.0.2.7"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.user.as_deref(), Some("root"));
        assert_eq!(
            h.identity_files,
            vec![
                PathBuf::from("/home/ann/.ssh/global_key"),
                PathBuf::from("/home/ann/.ssh/box_root")
            ]
        );
        assert_eq!(
            h.proxy_jump,
            Some(vec!["jump1".to_owned(), "alice@jump2:2200".to_owned()])
        );
    }

    #[test]
    fn wildcards_negation_and_token_expansion() {
        let c = SshConfig::parse(CONFIG, Path::new("cfg"), &env()).unwrap();
        let h = c.resolve("printer.lan", &env());
        assert_eq!(h.hostname.as_deref(), Some("printer.lan.internal"));
        assert_eq!(h.user.as_deref(), Some("lanuser"));
        assert_eq!(h.port, Some(22));
        let other = c.resolve("elsewhere", &env());
        assert_eq!(other.hostname, None);
        assert_eq!(other.user.as_deref(), Some("fallback"));
        assert!(!host_matches("nope", &["box".into(), "!nope".into()]));
        assert!(glob_match("h?st*", "host.example"));
        assert!(!glob_match("h?st", "hoost"));
    }

    #[test]
    fn bad_lines_are_named_with_file_and_line() {
        let err =
            SshConfig::parse("Host a\n  Port 99999\n", Path::new("/x/config"), &env()).unwrap_err();
        assert_eq!(err.to_string(), "/x/config:2: bad port '99999'");
        let err = SshConfig::parse("Host\n", Path::new("/x/config"), &env()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/config:1: 'Host' needs at least one pattern"
        );
    }

    #[test]
    fn authentication_settings_first_value_wins() {
        let text = "\
Host pw
    PreferredAuthentications password,keyboard-interactive
    NumberOfPasswordPrompts 1
Host *
    PreferredAuthentications publickey
    NumberOfPasswordPrompts 5
";
        let c = SshConfig::parse(text, Path::new("cfg"), &env()).unwrap();
        let h = c.resolve("pw", &env());
        assert_eq!(
            h.preferred_authentications,
            Some(vec!["password".into(), "keyboard-interactive".into()])
        );
        assert_eq!(h.number_of_password_prompts, Some(1));
        let other = c.resolve("elsewhere", &env());
        assert_eq!(
            other.preferred_authentications,
            Some(vec!["publickey".into()])
        );
        assert_eq!(other.number_of_password_prompts, Some(5));
        let none = SshConfig::parse("", Path::new("cfg"), &env())
            .unwrap()
            .resolve("x", &env());
        assert_eq!(
            (
                none.preferred_authentications,
                none.number_of_password_prompts
            ),
            (None, None)
        );
    }

    #[test]
    fn bad_authentication_settings_are_named() {
        let err = SshConfig::parse(
            "Host a\n  NumberOfPasswordPrompts three\n",
            Path::new("/x/config"),
            &env(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/config:2: bad NumberOfPasswordPrompts 'three' (a whole number is needed)"
        );
        let err = SshConfig::parse(
            "PreferredAuthentications password, publickey\n",
            Path::new("/x/config"),
            &env(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/config:1: 'PreferredAuthentications' takes one value, not 2 (separate methods \
             with commas, no spaces)"
        );
    }

    #[test]
    fn include_reads_other_files_relative_to_dot_ssh() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
        std::fs::write(ssh.join("conf.d/a.conf"), "Host inc\n  Port 7\n").unwrap();
        let env = Env {
            home: dir.path().to_owned(),
            local_user: "ann".into(),
        };
        let c = SshConfig::parse("Include conf.d/*.conf\n", &ssh.join("config"), &env).unwrap();
        assert_eq!(c.resolve("inc", &env).port, Some(7));
        assert_eq!(
            c.origin("inc", "port").unwrap(),
            format!("{}:2", ssh.join("conf.d/a.conf").display())
        );
    }
}
