//! Connection URIs, shaped like libvirt's.
//!
//! - `vireo:///session`: the per-user engine under `$XDG_RUNTIME_DIR`.
//! - `vireo:///system`: the system engine under `/run/vireo`.
//! - `vireo+ssh://[user@]host[:port]/system` (or `/session`): an engine on
//!   another host, reached over SSH. Like libvirt's ssh transport, it takes
//!   `?socket=/path` to name the remote engine's socket explicitly.

use std::fmt;
use std::str::FromStr;

/// The URI used when neither `-c` nor `VIREO_DEFAULT_URI` names one.
pub const DEFAULT_URI: &str = "vireo:///session";

/// Which engine on a host a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The calling user's own engine.
    Session,
    /// The host-wide engine.
    System,
}

impl Scope {
    fn as_path(self) -> &'static str {
        match self {
            Scope::Session => "/session",
            Scope::System => "/system",
        }
    }
}

/// How to reach the engine's host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// This machine, through a unix socket.
    Local,
    /// Another machine, through one SSH connection.
    Ssh {
        /// The login name, when the URI gives one (else `~/.ssh/config` or the local user).
        user: Option<String>,
        /// Host name or address, as written.
        host: String,
        /// TCP port, when the URI gives one.
        port: Option<u16>,
        /// The remote engine's socket (`?socket=/path`), when the URI names
        /// one; else the scope's usual place on that host.
        socket: Option<String>,
    },
}

/// A parsed connection URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectUri {
    /// Where the engine runs.
    pub transport: Transport,
    /// Which engine on that host.
    pub scope: Scope,
}

/// Why a string is not a connection URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The scheme is neither `vireo` nor `vireo+ssh`.
    #[error("unsupported URI scheme '{0}' (expected 'vireo' or 'vireo+ssh')")]
    Scheme(String),
    /// The text has no `scheme://` part.
    #[error("'{0}' is not a URI (expected e.g. vireo:///session)")]
    NotAUri(String),
    /// The path names no known engine.
    #[error("unknown engine path '{0}' (expected /session or /system)")]
    Path(String),
    /// A local URI carries a host.
    #[error(
        "a local 'vireo://' URI takes no host, found '{0}' (use vireo+ssh:// for remote hosts)"
    )]
    LocalWithHost(String),
    /// A remote URI has no host.
    #[error("a 'vireo+ssh://' URI needs a host name")]
    MissingHost,
    /// The port is not a number in 1..=65535.
    #[error("invalid port '{0}'")]
    Port(String),
    /// Query strings and fragments are not supported.
    #[error("URI parameters are not supported: '{0}'")]
    Parameters(String),
    /// A `vireo+ssh://` URI parameter other than `socket`, or a bad value.
    #[error("unsupported URI parameter '{0}' (vireo+ssh:// takes only socket=/absolute/path)")]
    Parameter(String),
}

impl ConnectUri {
    /// The local per-user engine.
    pub fn session() -> Self {
        Self {
            transport: Transport::Local,
            scope: Scope::Session,
        }
    }

    /// The local host-wide engine.
    pub fn system() -> Self {
        Self {
            transport: Transport::Local,
            scope: Scope::System,
        }
    }

    /// Whether the engine is on this machine.
    pub fn is_local(&self) -> bool {
        self.transport == Transport::Local
    }

    /// Resolves the URI to use: an explicit `-c` value first, then
    /// `VIREO_DEFAULT_URI` (passed in by the caller), then [`DEFAULT_URI`].
    pub fn resolve(explicit: Option<&str>, env_default: Option<&str>) -> Result<Self, UriError> {
        explicit
            .or(env_default.filter(|s| !s.is_empty()))
            .unwrap_or(DEFAULT_URI)
            .parse()
    }
}

impl FromStr for ConnectUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UriError::NotAUri(s.to_owned()))?;
        let is_ssh = scheme.eq_ignore_ascii_case("vireo+ssh");
        let (rest, query) = match rest.find(['?', '#']) {
            Some(pos) if is_ssh && rest[pos..].starts_with('?') && !rest.contains('#') => {
                (&rest[..pos], Some(&rest[pos + 1..]))
            }
            Some(pos) => return Err(UriError::Parameters(rest[pos..].to_owned())),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let scope = match path.trim_end_matches('/') {
            "/session" => Scope::Session,
            "/system" => Scope::System,
            other => return Err(UriError::Path(other.to_owned())),
        };
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "vireo" => {
                if !authority.is_empty() {
                    return Err(UriError::LocalWithHost(authority.to_owned()));
                }
                Transport::Local
            }
            "vireo+ssh" => {
                let mut transport = parse_ssh_authority(authority)?;
                if let (Some(q), Transport::Ssh { socket, .. }) = (query, &mut transport) {
                    *socket = Some(parse_socket_query(q)?);
                }
                transport
            }
            _ => return Err(UriError::Scheme(scheme.to_owned())),
        };
        Ok(Self { transport, scope })
    }
}

/// `socket=/path` (percent-encoded as in libvirt's URIs), the one
/// parameter a `vireo+ssh://` URI takes.
fn parse_socket_query(query: &str) -> Result<String, UriError> {
    let mut socket = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("socket", value)) => {
                let path = percent_decode(value)
                    .filter(|p| p.starts_with('/'))
                    .ok_or_else(|| UriError::Parameter(pair.to_owned()))?;
                socket = Some(path);
            }
            _ => return Err(UriError::Parameter(pair.to_owned())),
        }
    }
    socket.ok_or_else(|| UriError::Parameter(query.to_owned()))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_ssh_authority(authority: &str) -> Result<Transport, UriError> {
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
        Some((_, h)) => (None, h),
        None => (None, authority),
    };
    // An IPv6 literal is bracketed: [::1]:2222.
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, after) = stripped.split_once(']').ok_or(UriError::MissingHost)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError::Port(after.to_owned())),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::MissingHost);
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| UriError::Port(p.to_owned()))
        })
        .transpose()?;
    Ok(Transport::Ssh {
        user,
        host: host.to_owned(),
        port,
        socket: None,
    })
}

impl fmt::Display for ConnectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Local => write!(f, "vireo://{}", self.scope.as_path()),
            Transport::Ssh {
                user,
                host,
                port,
                socket,
            } => {
                f.write_str("vireo+ssh://")?;
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    f.write_str(host)?;
                }
                if let Some(port) = port {
                    write!(f, ":{port}")?;
                }
                f.write_str(self.scope.as_path())?;
                if let Some(socket) = socket {
                    write!(f, "?socket={}", percent_encode(socket))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_session_and_system() {
        assert_eq!("vireo:///session".parse(), Ok(ConnectUri::session()));
        assert_eq!("vireo:///system/".parse(), Ok(ConnectUri::system()));
    }

    #[test]
    fn parses_ssh_with_user_and_port() {
        let uri: ConnectUri = "vireo+ssh://alice@host.example:2222/system"
            .parse()
            .unwrap();
        assert_eq!(
            uri.transport,
            Transport::Ssh {
                user: Some("alice".into()),
                host: "host.example".into(),
                port: Some(2222),
                socket: None,
            }
        );
        assert_eq!(uri.scope, Scope::System);
        assert_eq!(
            uri.to_string(),
            "vireo+ssh://alice@host.example:2222/system"
        );
    }

    #[test]
    fn parses_bracketed_ipv6_host() {
        let uri: ConnectUri = "vireo+ssh://[::1]:22/session".parse().unwrap();
        assert_eq!(
            uri.transport,
            Transport::Ssh {
                user: None,
                host: "::1".into(),
                port: Some(22),
                socket: None,
            }
        );
        assert_eq!(uri.to_string(), "vireo+ssh://[::1]:22/session");
    }

    #[test]
    fn parses_the_socket_parameter_like_libvirt() {
        let uri: ConnectUri = "vireo+ssh://bob@h/session?socket=/tmp/my%20dir/vireod.sock"
            .parse()
            .unwrap();
        let Transport::Ssh { socket, .. } = &uri.transport else {
            panic!("{uri:?}");
        };
        assert_eq!(socket.as_deref(), Some("/tmp/my dir/vireod.sock"));
        assert_eq!(
            uri.to_string(),
            "vireo+ssh://bob@h/session?socket=/tmp/my%20dir/vireod.sock"
        );
        assert_eq!(uri.to_string().parse::<ConnectUri>(), Ok(uri));
    }

    #[test]
    fn rejects_bad_uris_with_a_reason() {
        let cases = [
            ("qemu:///system", UriError::Scheme("qemu".into())),
            ("session", UriError::NotAUri("session".into())),
            ("vireo:///nope", UriError::Path("/nope".into())),
            (
                "vireo://host/system",
                UriError::LocalWithHost("host".into()),
            ),
            ("vireo+ssh:///system", UriError::MissingHost),
            ("vireo+ssh://h:0/system", UriError::Port("0".into())),
            ("vireo+ssh://h:99999/system", UriError::Port("99999".into())),
            ("vireo:///system?x=1", UriError::Parameters("?x=1".into())),
            (
                "vireo+ssh://h/system?x=1",
                UriError::Parameter("x=1".into()),
            ),
            (
                "vireo+ssh://h/system?socket=rel",
                UriError::Parameter("socket=rel".into()),
            ),
            (
                "vireo+ssh://h/system#frag",
                UriError::Parameters("#frag".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ConnectUri>(), Err(want), "{text}");
        }
    }

    #[test]
    fn resolve_prefers_explicit_then_env_then_default() {
        let sys = Some("vireo:///system");
        assert_eq!(ConnectUri::resolve(sys, None), Ok(ConnectUri::system()));
        assert_eq!(ConnectUri::resolve(None, sys), Ok(ConnectUri::system()));
        assert_eq!(
            ConnectUri::resolve(None, Some("")),
            Ok(ConnectUri::session())
        );
        assert_eq!(ConnectUri::resolve(None, None), Ok(ConnectUri::session()));
    }
}
