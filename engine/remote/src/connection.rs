//! One SSH connection to a host, carrying every stream to its engine as a
//! separate `direct-streamlocal@openssh.com` channel.

mod auth;
mod host_key;
mod target;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::{ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncWrite};
use vireo_api::ConnectUri;
use vireo_api::client::{AsyncClient, ClientError, Incoming};
use vireo_api::uri::Scope;

use self::auth::Auth;
pub use self::host_key::key_type_name;
use self::host_key::{Handler, check_host_key};
pub use self::target::{Settings, Target};
use crate::error::RemoteError;
use crate::prompt::Prompter;

/// A byte stream to the remote engine: one SSH channel.
pub type RemoteStream = russh::ChannelStream<client::Msg>;

/// The system engine's socket, the same on every host.
pub const SYSTEM_SOCKET: &str = "/run/vireo/vireod.sock";

/// How long TCP connection and SSH handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

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
