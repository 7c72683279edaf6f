//! Host keys checked as OpenSSH does: `~/.ssh/known_hosts` then
//! `/etc/ssh/ssh_known_hosts`, with plain and hashed (`|1|salt|hash`) host
//! names, `[host]:port` for ports other than 22, wildcards, negation and the
//! `@revoked` marker (`@cert-authority` lines are skipped: we do not accept
//! host certificates).

use std::io::Write;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};

use crate::config::glob_match;

/// What the files say about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is recorded for this host.
    Known,
    /// No key of this type is recorded for the host.
    Unknown,
    /// Another key of the same type is recorded: a possible attack.
    Changed {
        /// The file that holds the recorded key.
        file: PathBuf,
        /// Its 1-based line.
        line: usize,
    },
    /// The key is marked `@revoked`.
    Revoked {
        /// The file.
        file: PathBuf,
        /// Its 1-based line.
        line: usize,
    },
}

/// The name known_hosts files use for `host` on `port`.
pub fn host_entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key's fingerprint as OpenSSH prints it (`SHA256:…`, unpadded base64).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The known_hosts files, in the order they are checked; the first is the
/// one new keys are added to.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    /// The user's file (written to).
    pub user_file: PathBuf,
    /// Read-only files checked after it.
    pub system_files: Vec<PathBuf>,
}

impl KnownHosts {
    /// `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`.
    pub fn standard(home: &Path) -> Self {
        Self {
            user_file: home.join(".ssh").join("known_hosts"),
            system_files: vec![PathBuf::from("/etc/ssh/ssh_known_hosts")],
        }
    }

    /// Checks `key` for `host`:`port`. Unreadable files count as empty, as
    /// in OpenSSH.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = host_entry_name(host, port);
        let Ok(blob) = key.to_bytes() else {
            return Verdict::Unknown;
        };
        let algorithm = key.algorithm().to_string();
        let mut changed = None;
        for file in std::iter::once(&self.user_file).chain(&self.system_files) {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                let Some(entry) = parse_line(line) else {
                    continue;
                };
                if entry.marker == Some("@cert-authority") || !hosts_match(entry.hosts, &name) {
                    continue;
                }
                let same_key = BASE64
                    .decode(entry.key_base64.as_bytes())
                    .is_ok_and(|b| b == blob);
                if entry.marker == Some("@revoked") {
                    if same_key {
                        return Verdict::Revoked {
                            file: file.clone(),
                            line: i + 1,
                        };
                    }
                    continue;
                }
                if same_key {
                    return Verdict::Known;
                }
                if entry.key_type == algorithm && changed.is_none() {
                    changed = Some(Verdict::Changed {
                        file: file.clone(),
                        line: i + 1,
                    });
                }
            }
        }
        changed.unwrap_or(Verdict::Unknown)
    }

    /// Appends `host`:`port`'s key to the user's file (creating `~/.ssh`
    /// with mode 0700 when missing), as OpenSSH does after a "yes".
    pub fn add(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
        let path = &self.user_file;
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create '{}': {e}", dir.display()))?;
        }
        let openssh = key
            .to_openssh()
            .map_err(|e| format!("cannot encode the host key: {e}"))?;
        // Drop the comment: "type base64".
        let key_text: String = openssh.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let existing = std::fs::read(path).unwrap_or_default();
        let mut line = String::new();
        if existing.last().is_some_and(|&b| b != b'\n') {
            line.push('\n');
        }
        line.push_str(&format!("{} {key_text}\n", host_entry_name(host, port)));
        let err =
            |e: std::io::Error| format!("cannot add the host key to '{}': {e}", path.display());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(())
    }
}

struct Line<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key_type: &'a str,
    key_base64: &'a str,
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = if first.starts_with('@') {
        let m = first;
        first = fields.next()?;
        Some(m)
    } else {
        None
    };
    Some(Line {
        marker,
        hosts: first,
        key_type: fields.next()?,
        key_base64: fields.next()?,
    })
}

/// Whether a comma-separated host pattern list matches `name` (already in
/// `[host]:port` form when the port is not 22).
fn hosts_match(patterns: &str, name: &str) -> bool {
    let name_lc = name.to_ascii_lowercase();
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(hashed) = p.strip_prefix("|1|") {
            if hashed_matches(hashed, name) {
                matched = true;
            }
        } else if let Some(neg) = p.strip_prefix('!') {
            if glob_match(&neg.to_ascii_lowercase(), &name_lc) {
                return false;
            }
        } else if glob_match(&p.to_ascii_lowercase(), &name_lc) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash`: HMAC-SHA1 of the name keyed with the salt.
fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two distinct ed25519 public keys.
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    fn files(user: &str) -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let user_file = dir.path().join("known_hosts");
        std::fs::write(&user_file, user).unwrap();
        let kh = KnownHosts {
            user_file,
            system_files: vec![dir.path().join("missing")],
        };
        (dir, kh)
    }

    #[test]
    fn plain_bracketed_and_wildcard_entries() {
        let (_d, kh) = files(&format!(
            "# comment\nother.example {KEY_B}\n[host.example]:2222 {KEY_A}\n*.lan,!bad.lan {KEY_A}\n"
        ));
        assert_eq!(kh.check("host.example", 2222, &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("host.example", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check("pi.lan", 22, &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("bad.lan", 22, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(
            kh.check("other.example", 22, &key(KEY_A)),
            Verdict::Changed {
                file: kh.user_file.clone(),
                line: 2
            }
        );
    }

    #[test]
    fn hashed_entries_as_ssh_keygen_writes_them() {
        // "|1|" entry for "[localhost]:13265" (HMAC-SHA1 with a random salt):
        // computed here the way ssh-keygen -H does, then checked.
        let salt = [7u8; 20];
        let mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[localhost]:13265")
            .finalize()
            .into_bytes();
        let entry = format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&mac));
        let (_d, kh) = files(&format!("{entry} {KEY_A}\n"));
        assert_eq!(kh.check("localhost", 13265, &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("localhost", 22, &key(KEY_A)), Verdict::Unknown);
        assert!(matches!(
            kh.check("localhost", 13265, &key(KEY_B)),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn revoked_keys_are_refused_and_added_keys_are_found() {
        let (_d, kh) = files(&format!("@revoked * {KEY_B}"));
        assert!(matches!(
            kh.check("any", 22, &key(KEY_B)),
            Verdict::Revoked { line: 1, .. }
        ));
        kh.add("new.example", 2200, &key(KEY_A)).unwrap();
        assert_eq!(kh.check("new.example", 2200, &key(KEY_A)), Verdict::Known);
        let text = std::fs::read_to_string(&kh.user_file).unwrap();
        assert!(
            text.ends_with(&format!("\n[new.example]:2200 {KEY_A}\n")),
            "{text}"
        );
    }
}
