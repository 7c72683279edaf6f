//! The app's connections to engines: the local session engine, started on
//! demand as `vireoctl` does, and remote ones over one SSH connection per
//! host ([`Endpoint::Remote`]): every API client, console and serial
//! stream of a connection goes through its endpoint. Everything here runs
//! on relm4's tokio runtime, never on the GTK thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::client::{AsyncClient, Incoming};
use vireo_api::uri::Scope;
use vireod::paths::EnginePaths;

/// Connects to the session engine with events on, starting it first when
/// no engine answers. Errors are plain English; the window translates the
/// headline and shows this text as the details.
pub async fn connect_session() -> Result<(AsyncClient, UnboundedReceiver<Incoming>), String> {
    let paths = EnginePaths::for_scope(Scope::Session, |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let socket = paths.socket();
    let client = format!("vireo {}", env!("CARGO_PKG_VERSION"));
    if let Ok(c) = AsyncClient::connect_unix(&socket, &client, true).await {
        return Ok(c);
    }
    let log_path = vireod::launch::spawn_engine(&paths)?;
    let deadline = Instant::now() + vireod::launch::START_TIMEOUT;
    loop {
        match AsyncClient::connect_unix(&socket, &client, true).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "the engine did not start within {} s ({e}); see {}",
                    vireod::launch::START_TIMEOUT.as_secs(),
                    log_path.display()
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The name the app gives itself to engines.
fn client_name() -> String {
    format!("vireo {}", env!("CARGO_PKG_VERSION"))
}

/// Where a connection's streams go: the local session engine's socket, or
/// channels of one SSH connection to a remote host.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// The local session engine.
    Local,
    /// A remote engine through this SSH connection.
    Remote(Arc<vireo_remote::Connection>),
}

impl Endpoint {
    /// An API client (with events when `events`).
    pub async fn client(
        &self,
        events: bool,
    ) -> Result<(AsyncClient, UnboundedReceiver<Incoming>), String> {
        match self {
            Endpoint::Local if events => connect_session().await,
            Endpoint::Local => {
                let paths = EnginePaths::for_scope(Scope::Session, |k| std::env::var(k).ok())
                    .map_err(|e| e.to_string())?;
                AsyncClient::connect_unix(&paths.socket(), &client_name(), false)
                    .await
                    .map_err(|e| e.to_string())
            }
            Endpoint::Remote(conn) => conn
                .api_client(&client_name(), events)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// `domain`'s graphical console (see [`open_console`]).
    pub async fn open_console(
        &self,
        domain: &str,
    ) -> Result<
        (
            vireo_console::Session,
            UnboundedReceiver<vireo_console::ConsoleEvent>,
        ),
        String,
    > {
        match self {
            Endpoint::Local => open_console(domain).await,
            Endpoint::Remote(conn) => {
                let stream = conn
                    .attach_vnc(&client_name(), domain)
                    .await
                    .map_err(|e| e.to_string())?;
                vireo_console::Session::connect(stream, None)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A client of its own, without events, for `domain`'s serial console:
    /// after `OpenConsole` the receiver gets its output, starting with the
    /// engine's backlog (what the guest printed before the window opened).
    pub async fn open_serial(
        &self,
        domain: &str,
    ) -> Result<(AsyncClient, UnboundedReceiver<Incoming>), String> {
        let (client, incoming) = self.client(false).await?;
        client
            // Watching, not holding: `vireoctl console` may still take
            // the console (the window then only shows the output).
            .call(vireo_api::proto::Request::OpenConsole {
                domain: domain.to_owned(),
                exclusive: false,
                force: false,
                // Told when such a session holds the console (and this
                // window's typing is dropped) and when it ends.
                notify: true,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok((client, incoming))
    }

    /// Whether the endpoint's transport has ended (a remote host's SSH
    /// connection dropped).
    pub fn is_closed(&self) -> bool {
        match self {
            Endpoint::Local => false,
            Endpoint::Remote(conn) => conn.is_closed(),
        }
    }
}

/// Opens `domain`'s graphical console: a fresh engine connection upgraded
/// to the domain's VNC stream, decoded by a console session.
pub async fn open_console(
    domain: &str,
) -> Result<
    (
        vireo_console::Session,
        UnboundedReceiver<vireo_console::ConsoleEvent>,
    ),
    String,
> {
    let paths = EnginePaths::for_scope(Scope::Session, |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let stream = tokio::net::UnixStream::connect(paths.socket())
        .await
        .map_err(|e| format!("cannot reach the engine: {e}"))?;
    let client = format!("vireo {}", env!("CARGO_PKG_VERSION"));
    let stream = vireo_api::client::attach_vnc(stream, &client, domain)
        .await
        .map_err(|e| e.to_string())?;
    vireo_console::Session::connect(stream, None)
        .await
        .map_err(|e| e.to_string())
}
