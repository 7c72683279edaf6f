//! One SSH connection to a host, carrying every stream to its engine as a
//! separate `direct-streamlocal@openssh.com` channel.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, ChannelOpenFailure, MethodKind};
use tokio::io::{AsyncRead, AsyncWrite};
use vireo_api::ConnectUri;
use vireo_api::client::{AsyncClient, ClientError, Incoming};
use vireo_api::uri::{Scope, Transport};

use crate::config::{Env, SshConfig};
use crate::error::RemoteError;
use crate::known_hosts::{KnownHosts, Verdict, fingerprint};
use crate::prompt::{Prompter, Question, UnknownHost};

/// A byte stream to the remote engine: one SSH channel.
pub type RemoteStream = russh::ChannelStream<client::Msg>;

/// The system engine's socket, the same on every host.
pub const SYSTEM_SOCKET: &str = "/run/vireo/vireod.sock";

/// How long TCP connection and SSH handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

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

    fn display(&self) -> String {
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

/// The russh callbacks: records the server's key (checked against
/// known_hosts before anything is sent to the server) and refuses a
/// different key on a later re-key.
struct Handler {
    key: Arc<Mutex<Option<PublicKey>>>,
    /// The reason the server gave when it ended the connection.
    disconnect: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates are not supported: the host must present a
        // plain key, checked against known_hosts.
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let mut slot = self.key.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            // A re-key must present the key the user accepted.
            Some(first) => Ok(first == key),
            None => {
                *slot = Some(key.clone());
                Ok(true)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                *self.disconnect.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.message);
                Ok(())
            }
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// OpenSSH's name for a key type in its messages.
pub fn key_type_name(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ED25519".into(),
        Algorithm::Ecdsa { .. } => "ECDSA".into(),
        Algorithm::Rsa { .. } => "RSA".into(),
        Algorithm::Dsa => "DSA".into(),
        other => other.to_string().to_uppercase(),
    }
}

/// One authenticated SSH connection to a host.
pub struct Connection {
    handle: Handle<Handler>,
    target: Target,
    socket: String,
    /// The connection to the previous `ProxyJump` hop, kept open.
    _jump: Option<Box<Connection>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

fn ssh_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        // Big windows keep console frames flowing without waiting for
        // window adjustments on each megabyte.
        window_size: 8 << 20,
        ..Default::default()
    })
}

impl Connection {
    /// Connects to the host `uri` names, authenticates, and finds the
    /// engine's socket there.
    pub async fn connect_uri(
        uri: &ConnectUri,
        settings: &Settings,
        prompter: &dyn Prompter,
    ) -> Result<Self, RemoteError> {
        let target = Target::from_uri(uri, settings)?;
        Self::connect(target, settings, prompter).await
    }

    /// Connects to `target`.
    pub async fn connect(
        target: Target,
        settings: &Settings,
        prompter: &dyn Prompter,
    ) -> Result<Self, RemoteError> {
        let mut jump = None;
        for hop in &target.proxy_jump {
            let mut hop_target = Target::from_destination(hop, settings)?;
            // The hop's own ProxyJump is ignored; the chain is the target's.
            hop_target.proxy_jump.clear();
            let conn = match jump.take() {
                None => Self::connect_direct(hop_target, settings, prompter, None).await?,
                Some(prev) => Self::connect_via(prev, hop_target, settings, prompter).await?,
            };
            jump = Some(conn);
        }
        let mut conn = match jump {
            None => Self::connect_direct(target, settings, prompter, None).await?,
            Some(prev) => Self::connect_via(prev, target, settings, prompter).await?,
        };
        conn.socket = conn.find_socket().await?;
        Ok(conn)
    }

    fn connect_via<'a>(
        prev: Connection,
        target: Target,
        settings: &'a Settings,
        prompter: &'a dyn Prompter,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Self, RemoteError>> + Send + 'a>> {
        Box::pin(async move {
            let channel = prev
                .handle
                .channel_open_direct_tcpip(
                    target.hostname.clone(),
                    target.port as u32,
                    "127.0.0.1",
                    0,
                )
                .await
                .map_err(|e| RemoteError::Unreachable {
                    host: target.alias.clone(),
                    address: format!(
                        "{}:{} (through the jump host {})",
                        target.hostname, target.port, prev.target.alias
                    ),
                    source: std::io::Error::other(e.to_string()),
                })?;
            let stream = channel.into_stream();
            Self::handshake(stream, target, settings, prompter, Some(Box::new(prev))).await
        })
    }

    async fn connect_direct(
        target: Target,
        settings: &Settings,
        prompter: &dyn Prompter,
        jump: Option<Box<Connection>>,
    ) -> Result<Self, RemoteError> {
        let address = format!("{}:{}", target.hostname, target.port);
        let unreachable = |source| RemoteError::Unreachable {
            host: target.alias.clone(),
            address: address.clone(),
            source,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((target.hostname.as_str(), target.port)),
        )
        .await
        .map_err(|_| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        })?
        .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        Self::handshake(tcp, target, settings, prompter, jump).await
    }

    async fn handshake<S>(
        stream: S,
        target: Target,
        settings: &Settings,
        prompter: &dyn Prompter,
        jump: Option<Box<Connection>>,
    ) -> Result<Self, RemoteError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let key = Arc::new(Mutex::new(None));
        let disconnect = Arc::new(Mutex::new(None));
        let handler = Handler {
            key: key.clone(),
            disconnect: disconnect.clone(),
        };
        let ssh_err = |e: russh::Error| RemoteError::Ssh {
            host: target.alias.clone(),
            message: e.to_string(),
        };
        let mut handle = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client::connect_stream(ssh_config(), stream, handler),
        )
        .await
        .map_err(|_| RemoteError::Ssh {
            host: target.alias.clone(),
            message: "the SSH handshake timed out".into(),
        })?
        .map_err(ssh_err)?;

        let server_key = key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| RemoteError::Ssh {
                host: target.alias.clone(),
                message: "the server presented no host key".into(),
            })?;
        check_host_key(&target, &server_key, settings, prompter)?;
        Auth::new(&mut handle, &target, settings, prompter, &disconnect)
            .run()
            .await?;
        Ok(Self {
            handle,
            socket: String::new(),
            target,
            _jump: jump,
        })
    }

    /// Where the engine socket is on the remote host.
    async fn find_socket(&self) -> Result<String, RemoteError> {
        if let Some(s) = &self.target.socket {
            return Ok(s.clone());
        }
        match self.target.scope {
            Scope::System => Ok(SYSTEM_SOCKET.to_owned()),
            Scope::Session => {
                let out = self
                    .exec("printf '%s\\n' \"${XDG_RUNTIME_DIR:-/run/user/$(id -u)}\"")
                    .await?;
                let dir = out.stdout.trim();
                if out.status != Some(0) || !dir.starts_with('/') {
                    return Err(RemoteError::Channel {
                        host: self.target.alias.clone(),
                        what: "the remote user's runtime directory".into(),
                        message: format!(
                            "the remote shell printed '{dir}' (exit status {:?}): {}",
                            out.status,
                            out.stderr.trim()
                        ),
                    });
                }
                Ok(format!("{dir}/vireo/vireod.sock"))
            }
        }
    }

    /// The resolved target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The remote engine's socket path.
    pub fn engine_socket(&self) -> &str {
        &self.socket
    }

    /// Whether the SSH connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command` on the host (through the user's shell) and collects
    /// its output.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, RemoteError> {
        let fail = |e: russh::Error| RemoteError::Channel {
            host: self.target.alias.clone(),
            what: "a command channel".into(),
            message: e.to_string(),
        };
        let mut channel = self.handle.channel_open_session().await.map_err(fail)?;
        channel.exec(true, command).await.map_err(fail)?;
        let mut out = ExecOutput::default();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, channel.wait())
                .await
                .map_err(|_| RemoteError::Channel {
                    host: self.target.alias.clone(),
                    what: format!("the command '{command}'"),
                    message: "it did not finish in time".into(),
                })?;
            match msg {
                Some(ChannelMsg::Data { data }) => stdout.extend_from_slice(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => stderr.extend_from_slice(&data),
                Some(ChannelMsg::ExitStatus { exit_status }) => out.status = Some(exit_status),
                Some(ChannelMsg::Failure) => {
                    return Err(RemoteError::Channel {
                        host: self.target.alias.clone(),
                        what: format!("the command '{command}'"),
                        message: "the server refused to run it".into(),
                    });
                }
                Some(_) => {}
                None => break,
            }
        }
        out.stdout = String::from_utf8_lossy(&stdout).into_owned();
        out.stderr = String::from_utf8_lossy(&stderr).into_owned();
        Ok(out)
    }

    /// A new channel to the unix socket `path` on the host.
    pub async fn open_socket(&self, path: &str) -> Result<RemoteStream, russh::Error> {
        Ok(self
            .handle
            .channel_open_direct_streamlocal(path)
            .await?
            .into_stream())
    }

    /// A new channel to the engine: for an API client, a console or a
    /// serial stream. A failure says why (no engine, no permission).
    pub async fn open_engine(&self) -> Result<RemoteStream, RemoteError> {
        match self.open_socket(&self.socket).await {
            Ok(s) => Ok(s),
            Err(e) => Err(self.diagnose(e).await),
        }
    }

    /// Explains a refused channel to the engine socket: asks the host what
    /// is at the path.
    async fn diagnose(&self, error: russh::Error) -> RemoteError {
        let host = self.target.alias.clone();
        let socket = self.socket.clone();
        if let russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited) =
            error
        {
            return RemoteError::Channel {
                host,
                what: format!("a channel to {socket}"),
                message: "the SSH server does not allow forwarding to unix sockets (sshd_config: \
                          AllowStreamLocalForwarding, DisableForwarding)"
                    .into(),
            };
        }
        let probe = format!(
            "p='{}'; if [ -S \"$p\" ]; then if [ -r \"$p\" ] && [ -w \"$p\" ]; then echo stale; \
             else echo denied; fi; elif [ -e \"$p\" ]; then echo other; \
             elif [ -e \"$(dirname \"$p\")\" ] && ! [ -x \"$(dirname \"$p\")\" ]; then echo denied; \
             else echo missing; fi",
            socket.replace('\'', "'\\''")
        );
        let answer = match self.exec(&probe).await {
            Ok(out) => out.stdout.trim().to_owned(),
            Err(_) => String::new(),
        };
        let hint = match self.target.scope {
            Scope::Session => format!(
                "start it there as {} (for example `ssh {}@{} vireoctl list`, which starts the \
                 session engine, or run `vireod` in a login session)",
                self.target.user, self.target.user, self.target.alias
            ),
            Scope::System => format!(
                "start it there with `sudo systemctl start vireod` on {}",
                self.target.alias
            ),
        };
        match answer.as_str() {
            "denied" => RemoteError::EngineDenied {
                host,
                socket,
                user: self.target.user.clone(),
            },
            "missing" => RemoteError::NoEngine {
                host,
                socket,
                why: "does not exist".into(),
                hint,
            },
            "stale" => RemoteError::NoEngine {
                host,
                socket,
                why: "refuses connections (the engine has stopped)".into(),
                hint,
            },
            "other" => RemoteError::Channel {
                host,
                what: format!("a channel to {socket}"),
                message: "the path exists but is not a socket".into(),
            },
            _ => RemoteError::Channel {
                host,
                what: format!("a channel to {socket}"),
                message: error.to_string(),
            },
        }
    }

    /// Starts the remote user's session engine, as `vireoctl` does locally
    /// (detached, in its own session, logging to `RUNTIME/vireo/vireod.log`),
    /// and waits until its socket answers. Only for `/session` without an
    /// explicit `?socket=`; fails with [`RemoteError::NoEngine`] naming
    /// what is missing (e.g. `vireod` not in the remote `PATH`).
    pub async fn start_session_engine(&self) -> Result<(), RemoteError> {
        let host = self.target.alias.clone();
        let no_engine = |why: &str, hint: &str| RemoteError::NoEngine {
            host: host.clone(),
            socket: self.socket.clone(),
            why: why.to_owned(),
            hint: hint.to_owned(),
        };
        if self.target.scope != Scope::Session || self.target.socket.is_some() {
            return Err(no_engine(
                "does not answer",
                "only the default session engine is started on demand",
            ));
        }
        let script = "rt=\"${XDG_RUNTIME_DIR:-/run/user/$(id -u)}\"; \
             command -v vireod >/dev/null 2>&1 || { echo no-vireod; exit 0; }; \
             mkdir -p \"$rt/vireo\" || exit 1; \
             XDG_RUNTIME_DIR=\"$rt\" setsid vireod </dev/null >>\"$rt/vireo/vireod.log\" 2>&1 & \
             echo started";
        let out = self.exec(script).await?;
        match out.stdout.trim() {
            "started" => {}
            "no-vireod" => {
                return Err(no_engine(
                    "does not exist and vireod is not in the remote PATH",
                    &format!(
                        "install Vireo on {host}, or start the engine there as {} with `vireod`",
                        self.target.user
                    ),
                ));
            }
            other => {
                return Err(no_engine(
                    "does not exist and starting vireod failed",
                    &format!("the remote shell said: {other} {}", out.stderr.trim()),
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.open_socket(&self.socket).await {
                Ok(_) => return Ok(()),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(no_engine(
                        &format!("did not appear after starting vireod ({e})"),
                        &format!("see vireod.log in the remote runtime directory on {host}"),
                    ));
                }
            }
        }
    }

    /// A new channel to the engine, starting the remote session engine
    /// first when it is not running (as `vireoctl` does locally).
    pub async fn open_engine_or_start(&self) -> Result<RemoteStream, RemoteError> {
        match self.open_engine().await {
            Err(RemoteError::NoEngine { .. })
                if self.target.scope == Scope::Session && self.target.socket.is_none() =>
            {
                self.start_session_engine().await?;
                self.open_engine().await
            }
            other => other,
        }
    }

    /// An API client on a new channel.
    pub async fn api_client(
        &self,
        client_name: &str,
        events: bool,
    ) -> Result<(AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Incoming>), RemoteError> {
        let stream = self.open_engine().await?;
        AsyncClient::handshake(stream, client_name, events)
            .await
            .map_err(|e| self.api_error(e))
    }

    /// A domain's VNC stream on a new channel (see [`vireo_api::client::attach_vnc`]).
    pub async fn attach_vnc(
        &self,
        client_name: &str,
        domain: &str,
    ) -> Result<RemoteStream, RemoteError> {
        let stream = self.open_engine().await?;
        vireo_api::client::attach_vnc(stream, client_name, domain)
            .await
            .map_err(|e| self.api_error(e))
    }

    fn api_error(&self, e: ClientError) -> RemoteError {
        RemoteError::Channel {
            host: self.target.alias.clone(),
            what: format!("the engine at {}", self.socket),
            message: e.to_string(),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// A finished remote command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (`None` when the server sent none, e.g. killed by a signal).
    pub status: Option<u32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

fn check_host_key(
    target: &Target,
    key: &PublicKey,
    settings: &Settings,
    prompter: &dyn Prompter,
) -> Result<(), RemoteError> {
    let name = target.display();
    let key_type = key_type_name(key);
    let fp = fingerprint(key);
    match settings.known_hosts.check(&target.alias, target.port, key) {
        Verdict::Known => Ok(()),
        Verdict::Changed { file, line } => Err(RemoteError::HostKeyChanged {
            host: name,
            key_type,
            fingerprint: fp,
            file,
            line,
        }),
        Verdict::Revoked { file, line } => Err(RemoteError::HostKeyRevoked {
            host: name,
            key_type,
            fingerprint: fp,
            file,
            line,
        }),
        Verdict::Unknown => {
            let known_hosts = settings.known_hosts.user_file.display().to_string();
            let question = UnknownHost {
                host: name.clone(),
                key_type: key_type.clone(),
                fingerprint: fp.clone(),
                known_hosts: known_hosts.clone(),
            };
            if !prompter.confirm_host_key(&question) {
                return Err(RemoteError::HostKeyNotAccepted {
                    host: name,
                    key_type,
                    fingerprint: fp,
                    known_hosts,
                });
            }
            settings
                .known_hosts
                .add(&target.alias, target.port, key)
                .map_err(|message| RemoteError::Ssh {
                    host: target.alias.clone(),
                    message,
                })
        }
    }
}

fn method_name(m: &MethodKind) -> String {
    <&str>::from(m).to_owned()
}

/// A method we can authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    PublicKey,
    KeyboardInteractive,
    Password,
}

impl Method {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "publickey" => Some(Self::PublicKey),
            "keyboard-interactive" => Some(Self::KeyboardInteractive),
            "password" => Some(Self::Password),
            _ => None,
        }
    }

    fn kind(self) -> MethodKind {
        match self {
            Self::PublicKey => MethodKind::PublicKey,
            Self::KeyboardInteractive => MethodKind::KeyboardInteractive,
            Self::Password => MethodKind::Password,
        }
    }
}

/// What one try of a method came to.
enum Step {
    /// Logged in.
    Success,
    /// Refused; the method may be tried again.
    Again,
    /// The method has nothing more to try (its tries are used up, or the
    /// user cancelled).
    Done,
}

/// Authentication as OpenSSH's client does it: the first method of
/// `PreferredAuthentications` (publickey, keyboard-interactive, password by
/// default) that the server still accepts is tried until it succeeds or
/// has nothing more to try, then the next. Public keys: the agent's, then
/// key files; keyboard-interactive and password: up to
/// `NumberOfPasswordPrompts` tries each, the later ones telling the user
/// the previous answer was refused; a cancelled prompt ends that method at
/// once.
struct Auth<'a> {
    handle: &'a mut Handle<Handler>,
    target: &'a Target,
    settings: &'a Settings,
    prompter: &'a dyn Prompter,
    disconnect: &'a Mutex<Option<String>>,
    /// What the server accepts now (it may change after each failure).
    offered: Vec<MethodKind>,
    /// What it accepted at first, for the error message.
    initially_offered: Vec<MethodKind>,
    tried: Vec<String>,
    kbd_tries: u32,
    /// Whether a keyboard-interactive request brought questions (OpenSSH
    /// asks again only then).
    kbd_questions_seen: bool,
    password_tries: u32,
}

impl<'a> Auth<'a> {
    fn new(
        handle: &'a mut Handle<Handler>,
        target: &'a Target,
        settings: &'a Settings,
        prompter: &'a dyn Prompter,
        disconnect: &'a Mutex<Option<String>>,
    ) -> Self {
        Self {
            handle,
            target,
            settings,
            prompter,
            disconnect,
            offered: Vec::new(),
            initially_offered: Vec::new(),
            tried: Vec::new(),
            kbd_tries: 0,
            kbd_questions_seen: false,
            password_tries: 0,
        }
    }

    fn user(&self) -> &'a str {
        self.target.user.as_str()
    }

    /// An SSH-level failure; when the server ended the connection (sshd
    /// after `MaxAuthTries` failures) it is a rejection naming its reason.
    fn ssh_err(&self, e: russh::Error) -> RemoteError {
        match self.closed() {
            Some(reason) if !self.tried.is_empty() => self.rejected(Some(reason)),
            _ => RemoteError::Ssh {
                host: self.target.alias.clone(),
                message: format!("during authentication: {e}"),
            },
        }
    }

    /// Why the connection ended, if it did (russh reports a connection
    /// closed while waiting for an answer as a plain failure).
    fn closed(&self) -> Option<String> {
        let reason = self
            .disconnect
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match reason {
            Some(r) => Some(r),
            None if self.handle.is_closed() => Some("no reason given".to_owned()),
            None => None,
        }
    }

    fn rejected(&self, closed: Option<String>) -> RemoteError {
        RemoteError::AuthRejected {
            user: self.user().to_owned(),
            host: self.target.alias.clone(),
            offered: self.initially_offered.iter().map(method_name).collect(),
            tried: self.tried.clone(),
            closed,
        }
    }

    fn note_tried(&mut self, what: &str) {
        if !self.tried.iter().any(|t| t == what) {
            self.tried.push(what.to_owned());
        }
    }

    fn note_cancelled(&mut self, method: &str) {
        let cancelled = format!("{method} (cancelled)");
        match self.tried.iter_mut().find(|t| *t == method) {
            Some(t) => *t = cancelled,
            None => self.tried.push(cancelled),
        }
    }

    /// Follows the server's list of methods it still accepts after a
    /// failure; true on success.
    fn update(&mut self, r: AuthResult) -> bool {
        match r {
            AuthResult::Success => true,
            AuthResult::Failure {
                remaining_methods, ..
            } => {
                if !remaining_methods.is_empty() {
                    self.offered = remaining_methods.to_vec();
                }
                false
            }
        }
    }

    async fn run(mut self) -> Result<(), RemoteError> {
        let user = self.user();
        let r = self.handle.authenticate_none(user).await;
        match r.map_err(|e| self.ssh_err(e))? {
            AuthResult::Success => return Ok(()),
            AuthResult::Failure {
                remaining_methods, ..
            } => self.offered = remaining_methods.to_vec(),
        }
        self.initially_offered = self.offered.clone();
        let order: Vec<Method> = self
            .target
            .authentications
            .iter()
            .filter_map(|m| Method::from_name(m))
            .collect();
        let mut done: Vec<Method> = Vec::new();
        // Bounded: every step that does not end a method uses one of its
        // limited tries (keys, or NumberOfPasswordPrompts prompts).
        loop {
            let Some(method) = order
                .iter()
                .copied()
                .find(|m| self.offered.contains(&m.kind()) && !done.contains(m))
            else {
                return Err(self.rejected(None));
            };
            let step = match method {
                Method::PublicKey => self.public_keys().await?,
                Method::KeyboardInteractive => self.keyboard_interactive().await?,
                Method::Password => self.password().await?,
            };
            match step {
                Step::Success => return Ok(()),
                Step::Again => {}
                Step::Done => done.push(method),
            }
            // No more questions once the server has hung up (sshd after
            // MaxAuthTries failures).
            if let Some(reason) = self.closed() {
                return Err(self.rejected(Some(reason)));
            }
        }
    }

    /// The agent's keys, then the key files, each once.
    async fn public_keys(&mut self) -> Result<Step, RemoteError> {
        let user = self.user();
        let mut agent_keys: Vec<PublicKey> = Vec::new();
        if let Some(sock) = &self.settings.agent
            && let Ok(mut agent) = AgentClient::connect_uds(sock).await
        {
            let identities = agent.request_identities().await.unwrap_or_default();
            for identity in identities {
                let key = identity.public_key().into_owned();
                agent_keys.push(key.clone());
                let hash = self.rsa_hash(&key).await;
                self.note_tried(&format!("agent key {}", fingerprint(&key)));
                match self
                    .handle
                    .authenticate_publickey_with(user, key, hash, &mut agent)
                    .await
                {
                    Ok(r) => {
                        if self.update(r) {
                            return Ok(Step::Success);
                        }
                    }
                    Err(e) => tracing::debug!("agent signing failed: {e}"),
                }
                if !self.offered.contains(&MethodKind::PublicKey) {
                    return Ok(Step::Done);
                }
            }
        }

        for path in &self.target.identity_files {
            if !self.offered.contains(&MethodKind::PublicKey) {
                break;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            // A key the agent already offered is not tried again.
            if let Ok(public) = std::fs::read_to_string(path.with_extension("pub"))
                .map_err(|_| ())
                .and_then(|t| PublicKey::from_openssh(t.trim()).map_err(|_| ()))
                && agent_keys.iter().any(|k| k.key_data() == public.key_data())
            {
                continue;
            }
            let Some(key) = load_key(&text, path, self.prompter, self.target.password_prompts)
            else {
                continue;
            };
            let hash = self.rsa_hash(key.public_key()).await;
            self.note_tried(&format!("key {}", path.display()));
            let r = self
                .handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await;
            let r = r.map_err(|e| self.ssh_err(e))?;
            if self.update(r) {
                return Ok(Step::Success);
            }
        }
        Ok(Step::Done)
    }

    /// The hash for an RSA key's signature: OpenSSH servers advertise
    /// rsa-sha2-512/256 in server-sig-algs; without that extension, assume
    /// SHA-256 (never SHA-1).
    async fn rsa_hash(&self, key: &PublicKey) -> Option<HashAlg> {
        if !matches!(key.algorithm(), Algorithm::Rsa { .. }) {
            return None;
        }
        match self.handle.best_supported_rsa_hash().await {
            Ok(Some(Some(h))) => Some(h),
            _ => Some(HashAlg::Sha256),
        }
    }

    /// One keyboard-interactive request and its question rounds.
    async fn keyboard_interactive(&mut self) -> Result<Step, RemoteError> {
        const NAME: &str = "keyboard-interactive";
        if self.kbd_tries >= self.target.password_prompts
            || (self.kbd_tries > 0 && !self.kbd_questions_seen)
        {
            return Ok(Step::Done);
        }
        self.kbd_tries += 1;
        // The first questions of a second or later try say the previous
        // answers were refused.
        let mut retry = self.kbd_tries > 1;
        self.note_tried(NAME);
        let user = self.user();
        let r = self
            .handle
            .authenticate_keyboard_interactive_start(user, None)
            .await;
        let mut reply = r.map_err(|e| self.ssh_err(e))?;
        let mut cancelled = false;
        // A server may ask many rounds; a bound keeps a broken one from
        // looping forever.
        for _ in 0..16 {
            match reply {
                KeyboardInteractiveAuthResponse::Success => return Ok(Step::Success),
                KeyboardInteractiveAuthResponse::Failure {
                    remaining_methods, ..
                } => {
                    if !remaining_methods.is_empty() {
                        self.offered = remaining_methods.to_vec();
                    }
                    return Ok(if cancelled { Step::Done } else { Step::Again });
                }
                KeyboardInteractiveAuthResponse::InfoRequest {
                    name,
                    instructions,
                    prompts,
                } => {
                    let questions: Vec<Question> = prompts
                        .into_iter()
                        .map(|p| Question {
                            prompt: p.prompt,
                            echo: p.echo,
                        })
                        .collect();
                    let answers = if questions.is_empty() {
                        Some(Vec::new())
                    } else if cancelled {
                        None
                    } else {
                        self.kbd_questions_seen = true;
                        let asked = self.prompter.keyboard_interactive(
                            &name,
                            &instructions,
                            &questions,
                            retry,
                        );
                        retry = false;
                        asked
                    };
                    let answers = match answers.filter(|a| a.len() == questions.len()) {
                        Some(a) => a,
                        None => {
                            // Cancelled. russh's session waits for the
                            // answers and cannot start another request in
                            // between, so empty ones end the exchange (what
                            // OpenSSH sends for an empty input); the method
                            // is not asked again.
                            cancelled = true;
                            self.note_cancelled(NAME);
                            vec![String::new(); questions.len()]
                        }
                    };
                    let r = self
                        .handle
                        .authenticate_keyboard_interactive_respond(answers)
                        .await;
                    reply = r.map_err(|e| self.ssh_err(e))?;
                }
            }
        }
        Ok(Step::Done)
    }

    /// One password prompt and request.
    async fn password(&mut self) -> Result<Step, RemoteError> {
        const NAME: &str = "password";
        if self.password_tries >= self.target.password_prompts {
            return Ok(Step::Done);
        }
        self.password_tries += 1;
        let retry = self.password_tries > 1;
        let user = self.user();
        let Some(password) = self.prompter.password(user, &self.target.alias, retry) else {
            self.note_cancelled(NAME);
            return Ok(Step::Done);
        };
        self.note_tried(NAME);
        let r = self.handle.authenticate_password(user, password).await;
        let r = r.map_err(|e| self.ssh_err(e))?;
        Ok(if self.update(r) {
            Step::Success
        } else {
            Step::Again
        })
    }
}

/// Reads a private key, asking for its passphrase when it is encrypted (up
/// to `prompts` times; an empty or cancelled answer stops, as in OpenSSH);
/// `None` when it cannot be used.
fn load_key(text: &str, path: &Path, prompter: &dyn Prompter, prompts: u32) -> Option<PrivateKey> {
    match russh::keys::decode_secret_key(text, None) {
        Ok(key) => return Some(key),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(e) => {
            tracing::debug!("skipping {}: {e}", path.display());
            return None;
        }
    }
    for _ in 0..prompts {
        let passphrase = prompter.passphrase(path).filter(|p| !p.is_empty())?;
        match russh::keys::decode_secret_key(text, Some(&passphrase)) {
            Ok(key) => return Some(key),
            Err(e) => tracing::debug!("{}: {e}", path.display()),
        }
    }
    None
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
