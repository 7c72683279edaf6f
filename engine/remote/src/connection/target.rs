//! Where to connect: a `vireo+ssh://` URI or a `ProxyJump` hop resolved
//! with `~/.ssh/config`, and the local files a connection reads.

use std::path::PathBuf;

use vireo_api::ConnectUri;
use vireo_api::uri::{Scope, Transport};

use crate::config::{Env, SshConfig};
use crate::error::RemoteError;
use crate::known_hosts::KnownHosts;

/// The authentication methods we implement, in OpenSSH's default order (its
/// `PreferredAuthentications` default less gssapi-with-mic and hostbased).
pub const DEFAULT_AUTHENTICATIONS: [&str; 3] = ["publickey", "keyboard-interactive", "password"];

/// OpenSSH's default `NumberOfPasswordPrompts`.
pub const DEFAULT_PASSWORD_PROMPTS: u32 = 3;

/// The local files and settings a connection reads (by default the
/// user's; tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Home directory, user name (`~`, `%d`, `%u`, the default login).
    pub env: Env,
    /// `~/.ssh/config`.
    pub config_file: PathBuf,
    /// Where host keys are looked up and recorded.
    pub known_hosts: KnownHosts,
    /// The agent's socket (`SSH_AUTH_SOCK`), if any.
    pub agent: Option<PathBuf>,
}

impl Settings {
    /// The current user's: `$HOME/.ssh/…`, `SSH_AUTH_SOCK`.
    pub fn from_env() -> Self {
        let env = Env::current();
        Self::for_home(
            env,
            std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        )
    }

    /// The standard files under `env.home`.
    pub fn for_home(env: Env, agent: Option<PathBuf>) -> Self {
        Self {
            config_file: env.home.join(".ssh").join("config"),
            known_hosts: KnownHosts::standard(&env.home),
            agent,
            env,
        }
    }
}

/// Where to connect, after `~/.ssh/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as the user named it (the known_hosts name uses it too,
    /// as OpenSSH's `HostKeyAlias`-less default uses the host name given).
    pub alias: String,
    /// The address dialled.
    pub hostname: String,
    /// TCP port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// Private key files to try.
    pub identity_files: Vec<PathBuf>,
    /// Hosts to jump through (`ProxyJump`), first one first.
    pub proxy_jump: Vec<String>,
    /// Authentication methods in the order they are tried
    /// (`PreferredAuthentications`; [`DEFAULT_AUTHENTICATIONS`] unless set).
    /// Names other than `publickey`, `keyboard-interactive` and `password`
    /// are skipped.
    pub authentications: Vec<String>,
    /// How many times a password, keyboard-interactive answers or a key's
    /// passphrase are asked for (`NumberOfPasswordPrompts`, 3 by default).
    pub password_prompts: u32,
    /// Which engine.
    pub scope: Scope,
    /// An explicit engine socket (`?socket=`).
    pub socket: Option<String>,
}

impl Target {
    /// Resolves a `vireo+ssh://` URI with `~/.ssh/config`.
    pub fn from_uri(uri: &ConnectUri, settings: &Settings) -> Result<Self, RemoteError> {
        let Transport::Ssh {
            user,
            host,
            port,
            socket,
        } = &uri.transport
        else {
            return Err(RemoteError::NotRemote(uri.to_string()));
        };
        let mut t = Self::from_destination(host, settings)?;
        if let Some(u) = user {
            t.user = u.clone();
        }
        if let Some(p) = port {
            t.port = *p;
        }
        t.scope = uri.scope;
        t.socket = socket.clone();
        Ok(t)
    }

    /// Resolves `[user@]host[:port]` (a `ProxyJump` hop) with the config.
    pub fn from_destination(dest: &str, settings: &Settings) -> Result<Self, RemoteError> {
        let (user, hostport) = match dest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, dest),
        };
        let (host, port) = split_host_port(hostport);
        let config = SshConfig::load(&settings.config_file, &settings.env)?;
        let hc = config.resolve(host, &settings.env);
        let mut identity_files = hc.identity_files;
        if identity_files.is_empty() {
            // OpenSSH's defaults, used only when no IdentityFile is set.
            let ssh = settings.env.home.join(".ssh");
            identity_files = ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|n| ssh.join(n))
                .collect();
        }
        Ok(Self {
            alias: host.to_owned(),
            hostname: hc.hostname.unwrap_or_else(|| host.to_owned()),
            port: port.or(hc.port).unwrap_or(22),
            user: user
                .or(hc.user)
                .unwrap_or_else(|| settings.env.local_user.clone()),
            identity_files,
            proxy_jump: hc.proxy_jump.unwrap_or_default(),
            authentications: hc.preferred_authentications.unwrap_or_else(|| {
                DEFAULT_AUTHENTICATIONS
                    .iter()
                    .map(|m| (*m).to_owned())
                    .collect()
            }),
            password_prompts: hc
                .number_of_password_prompts
                .unwrap_or(DEFAULT_PASSWORD_PROMPTS),
            scope: Scope::Session,
            socket: None,
        })
    }

    pub(super) fn display(&self) -> String {
        crate::known_hosts::host_entry_name(&self.alias, self.port)
    }
}

fn split_host_port(text: &str) -> (&str, Option<u16>) {
    if let Some(rest) = text.strip_prefix('[')
        && let Some((h, after)) = rest.split_once(']')
    {
        return (h, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (text, None),
        },
        _ => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split_user_host_and_port() {
        assert_eq!(split_host_port("h:2200"), ("h", Some(2200)));
        assert_eq!(split_host_port("[::1]:22"), ("::1", Some(22)));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("h"), ("h", None));
    }

    #[test]
    fn uri_and_config_combine_uri_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
        std::fs::write(
            dir.path().join(".ssh/config"),
            "Host lab\n HostName 127.0.0.9\n Port 2022\n User labuser\n IdentityFile ~/k\n",
        )
        .unwrap();
        let settings = Settings::for_home(
            Env {
                home: dir.path().to_owned(),
                local_user: "me".into(),
            },
            None,
        );
        let uri: ConnectUri = "vireo+ssh://lab/system".parse().unwrap();
        let t = Target::from_uri(&uri, &settings).unwrap();
        assert_eq!(
            (t.hostname.as_str(), t.port, t.user.as_str()),
            ("127.0.0.9", 2022, "labuser")
        );
        assert_eq!(t.identity_files, vec![dir.path().join("k")]);
        assert_eq!(t.scope, Scope::System);
        let uri: ConnectUri = "vireo+ssh://root@lab:22/session?socket=/s".parse().unwrap();
        let t = Target::from_uri(&uri, &settings).unwrap();
        assert_eq!((t.port, t.user.as_str()), (22, "root"));
        assert_eq!(t.socket.as_deref(), Some("/s"));
        let t = Target::from_uri(&"vireo+ssh://other/session".parse().unwrap(), &settings).unwrap();
        assert_eq!(t.user, "me");
        assert_eq!(t.identity_files.len(), 3, "OpenSSH's default key files");
    }
}
