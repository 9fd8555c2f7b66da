//! Where and how to reach the broker: the URL's scheme, host and port, TLS, and opening the
//! byte stream (TCP, TLS, WebSockets) the MQTT session runs on.
//!
//! Every file (CA, certificate, key) is read and checked here, once, before the first
//! connection: a wrong path or a bad key stops `topicrule run` at start with its name,
//! rather than failing every reconnection later.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use rumqttc::tokio_rustls::rustls::{self, pki_types, ClientConfig, RootCertStore};
use rumqttc::tokio_rustls::TlsConnector;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::{Host, Url};

use crate::config::Broker;

/// The byte stream of a connection, whatever carries it.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket, when the stream is plain TCP (no TLS, no WebSocket): what `Pace`
    /// reads in batches.
    fn plain_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Stream for TcpStream {
    fn plain_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Stream for rumqttc::tokio_rustls::client::TlsStream<TcpStream> {}

impl Stream
    for ws_stream_tungstenite::WsStream<async_tungstenite::tokio::TokioAdapter<Box<dyn Stream>>>
{
}

/// Where the broker is and how to speak to it.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub host: String,
    pub port: u16,
    tls: Option<Arc<ClientConfig>>,
    /// The whole URL, for MQTT over WebSockets.
    websocket: Option<String>,
}

/// The endpoint of `broker.url`, with TLS set up from `ca_file`, `cert_file` and `key_file`.
pub(super) fn endpoint(broker: &Broker) -> anyhow::Result<Endpoint> {
    let text = broker.url.trim();
    let url = Url::parse(text).with_context(|| {
        format!("invalid broker URL `{text}`: expected mqtt://, mqtts://, ws:// or wss://")
    })?;
    let scheme = url.scheme();
    let (default_port, tls, websocket) = match scheme {
        "mqtt" | "tcp" => (1883, false, false),
        "mqtts" | "ssl" | "tls" => (8883, true, false),
        "ws" => (80, false, true),
        "wss" => (443, true, true),
        _ => bail!(
            "unsupported broker URL scheme `{scheme}://`: use mqtt://, mqtts://, ws:// or wss://"
        ),
    };
    let host = match url.host() {
        Some(Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => String::new(),
    };
    if host.is_empty() {
        bail!("invalid broker URL `{text}`: no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        let user = url.username();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        bail!(
            "the broker URL `{scheme}://{user}:***@{}{port}` carries credentials: set [broker] username = \"{user}\" and password (or password_file, TOPICRULE_BROKER_PASSWORD) instead, which stay out of logs",
            url.host_str().unwrap_or_default()
        );
    }
    let port = url.port().unwrap_or(default_port);
    let uses_tls_files = [&broker.ca_file, &broker.cert_file, &broker.key_file]
        .iter()
        .any(|f| f.is_some());
    if uses_tls_files && !tls {
        bail!("`ca_file`, `cert_file` and `key_file` need a TLS URL (mqtts:// or wss://), not `{text}`");
    }
    Ok(Endpoint {
        host,
        port,
        tls: if tls {
            Some(tls_configuration(broker)?)
        } else {
            None
        },
        websocket: websocket.then(|| text.to_owned()),
    })
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The host name does not resolve.
    Unresolved(String),
    /// The TLS handshake's verdict on the certificates or protocols: trying again meets the
    /// same one.
    Untrusted(String),
    /// Anything else (the broker down, the network): worth trying again.
    Failed(String),
}

impl From<String> for OpenError {
    fn from(why: String) -> OpenError {
        OpenError::Failed(why)
    }
}

impl Endpoint {
    /// Opens the byte stream: TCP, then TLS and the WebSocket handshake when the URL asks.
    pub async fn open(&self) -> Result<Box<dyn Stream>, OpenError> {
        let addresses: Vec<_> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| OpenError::Unresolved(format!("cannot resolve `{}`: {e}", self.host)))?
            .collect();
        let tcp = TcpStream::connect(&addresses[..])
            .await
            .map_err(|e| format!("cannot reach {}:{}: {e}", self.host, self.port))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("`{}` is not a TLS server name: {e}", self.host))?;
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        let why = format!("TLS handshake with {}: {e}", self.host);
                        // rustls's own verdicts (a certificate not trusted, for another name,
                        // expired; no common protocol) come as InvalidData: the same
                        // settings meet the same verdict.
                        if e.kind() == std::io::ErrorKind::InvalidData {
                            OpenError::Untrusted(why)
                        } else {
                            OpenError::Failed(why)
                        }
                    })?;
                Box::new(tls)
            }
        };
        let Some(url) = &self.websocket else {
            return Ok(stream);
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("invalid WebSocket URL `{url}`: {e}"))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "mqtt".parse().expect("a valid header"),
        );
        let (socket, response) = async_tungstenite::tokio::client_async(request, stream)
            .await
            .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if protocol.map(str::trim) != Some("mqtt") {
            return Err(OpenError::Failed(format!(
                "{url} does not speak MQTT over WebSockets (its Sec-WebSocket-Protocol is {protocol:?})"
            )));
        }
        Ok(Box::new(ws_stream_tungstenite::WsStream::new(socket)))
    }
}

/// A rustls configuration: the CA of `ca_file` (or the system's), and the client certificate
/// of `cert_file` and `key_file` when both are set.
fn tls_configuration(broker: &Broker) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = match &broker.ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    // The provider is named rather than taken from the process default, which is ambiguous
    // (and panics) when several crates enable different rustls back ends.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_root_certificates(roots);
    let config = match (&broker.cert_file, &broker.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .with_context(|| {
                format!("`{}` does not go with `{}`", key.display(), cert.display())
            })?,
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => bail!("`cert_file` is set without `key_file`: mutual TLS needs both"),
        (None, Some(_)) => bail!("`key_file` is set without `cert_file`: mutual TLS needs both"),
    };
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> anyhow::Result<Vec<pki_types::CertificateDer<'static>>> {
    use pki_types::pem::PemObject as _;
    let certs = pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificates of `{}`", path.display()))?;
    if certs.is_empty() {
        bail!("`{}` holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn private_key(path: &Path) -> anyhow::Result<pki_types::PrivateKeyDer<'static>> {
    use pki_types::pem::PemObject as _;
    pki_types::PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a PEM private key from `{}`", path.display()))
}

fn roots_from_file(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        bail!("`{}` holds no usable CA certificate", path.display());
    }
    Ok(roots)
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("a system CA certificate could not be loaded: {error}");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        bail!("no system CA certificates found: set `ca_file`");
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(url: &str) -> Broker {
        Broker {
            url: url.into(),
            ..Broker::default()
        }
    }

    #[test]
    fn plain_urls_give_host_and_port() {
        let e = endpoint(&broker("mqtt://example.org")).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("example.org", 1883));
        let e = endpoint(&broker("tcp://[::1]:1884/")).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1884));
        let e = endpoint(&broker("wss://Broker.example:443/mqtt")).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("broker.example", 443));
    }

    #[test]
    fn websocket_urls_are_kept_whole() {
        let e = endpoint(&broker("ws://127.0.0.1:9001/mqtt")).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 9001));
        assert_eq!(e.websocket.as_deref(), Some("ws://127.0.0.1:9001/mqtt"));
        assert!(e.tls.is_none());
    }

    #[test]
    fn bad_urls_and_misplaced_tls_files_are_refused() {
        let err = |b: &Broker| endpoint(b).err().expect("accepted").to_string();
        assert!(err(&broker("http://x")).contains("unsupported broker URL scheme"));
        assert!(err(&broker("127.0.0.1:1883")).contains("invalid broker URL"));
        assert!(err(&broker("mqtt://x:port")).contains("invalid broker URL"));
        assert!(err(&broker("mqtt://")).contains("no host"));
        assert!(err(&broker("mqtt://:1883")).contains("invalid broker URL"));
        let credentials = err(&broker("mqtt://dev:s3cret@10.0.0.2:1883/"));
        assert!(credentials.contains("`mqtt://dev:***@10.0.0.2:1883` carries credentials"));
        assert!(!credentials.contains("s3cret"), "{credentials}");
        let mut b = broker("mqtt://x");
        b.ca_file = Some("ca.pem".into());
        assert!(err(&b).contains("need a TLS URL"));
        let mut b = broker("mqtts://x");
        b.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(err(&b).contains("/nonexistent/ca.pem"));
    }
}
