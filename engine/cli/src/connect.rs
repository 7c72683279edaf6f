//! Reaching an engine: the local socket for a `vireo://` URI, starting the
//! session engine on demand; `vireo+ssh://` through `remote.rs`.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vireo_api::ConnectUri;
use vireo_api::client::{Client, ClientError};
use vireo_api::proto::{DomainInfo, DomainStats, Request, Response};
use vireo_api::uri::{Scope, Transport};
use vireod::paths::EnginePaths;

/// An open connection to an engine.
pub struct Connection {
    client: Client<UnixStream, UnixStream>,
}

fn client_name() -> String {
    format!("vireoctl {}", env!("CARGO_PKG_VERSION"))
}

fn connect(socket: &Path) -> Result<Client<UnixStream, UnixStream>, ClientError> {
    Client::connect_unix(socket, &client_name(), false)
}

impl Connection {
    /// Connects to the engine `uri` names, starting the session engine
    /// when it is not running.
    pub fn open(uri: &ConnectUri) -> Result<Self, String> {
        if let Transport::Ssh { .. } = uri.transport {
            let client = crate::remote::open(uri, &client_name())?;
            return Ok(Self { client });
        }
        let paths = EnginePaths::for_scope(uri.scope, |k| std::env::var(k).ok())
            .map_err(|e| format!("failed to connect to the hypervisor\nerror: {e}"))?;
        let socket = paths.socket();
        let fail = |e: ClientError| format!("failed to connect to the hypervisor\nerror: {e}");
        match connect(&socket) {
            Ok(client) => return Ok(Self { client }),
            Err(ClientError::Connect { source, .. })
                if uri.scope == Scope::Session
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) => {}
            Err(e) => return Err(fail(e)),
        }
        vireod::launch::spawn_engine(&paths)
            .map_err(|e| format!("failed to connect to the hypervisor\nerror: {e}"))?;
        let deadline = Instant::now() + vireod::launch::START_TIMEOUT;
        loop {
            match connect(&socket) {
                Ok(client) => return Ok(Self { client }),
                Err(e) if Instant::now() > deadline => return Err(fail(e)),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The engine's version.
    pub fn engine_version(&self) -> String {
        self.client.engine_version().to_owned()
    }

    /// Sends a request.
    pub fn call(&mut self, request: Request) -> Result<Response, String> {
        self.client.call(request).map_err(|e| e.to_string())
    }

    /// A domain's details.
    pub fn info(&mut self, domain: &str) -> Result<DomainInfo, String> {
        match self.call(Request::DomInfo {
            domain: domain.to_owned(),
        })? {
            Response::Info { info } => Ok(info),
            _ => Err("unexpected answer".into()),
        }
    }

    /// A domain's name (the user may have given its UUID).
    pub fn name_of(&mut self, domain: &str) -> Result<String, String> {
        Ok(self.info(domain)?.summary.name)
    }

    /// A domain's XML.
    pub fn xml(&mut self, domain: &str, inactive: bool) -> Result<String, String> {
        match self.call(Request::DumpXml {
            domain: domain.to_owned(),
            inactive,
        })? {
            Response::Xml { xml } => Ok(xml),
            _ => Err("unexpected answer".into()),
        }
    }

    /// A running domain's statistics.
    pub fn stats(&mut self, domain: &str) -> Result<DomainStats, String> {
        match self.call(Request::DomStats {
            domain: domain.to_owned(),
        })? {
            Response::Stats { stats } => Ok(stats),
            _ => Err("unexpected answer".into()),
        }
    }

    /// The underlying client, for calls with progress and streams.
    pub fn client(&mut self) -> &mut Client<UnixStream, UnixStream> {
        &mut self.client
    }

    /// The underlying client.
    pub fn into_client(self) -> Client<UnixStream, UnixStream> {
        self.client
    }
}
