//! Dialling one node: TCP, then TLS with our own rustls config, then HTTP/2 for tonic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use super::error::TalosError;

/// Port of apid, the Talos API.
pub const TALOS_API_PORT: u16 = 50000;

/// How to reach a node.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// TCP port of the Talos API (50000 everywhere but in unusual tests).
    pub port: u16,
    /// Bound on TCP connect plus TLS handshake. It covers only dialling: a call that hangs
    /// afterwards is bounded by the caller's own `tokio::time::timeout`.
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            port: TALOS_API_PORT,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Opens a gRPC channel to `address` with the given rustls config.
///
/// The connection is made eagerly so that TLS failures (a node of another cluster) show up
/// here, as [`TalosError::Connect`], not on the first call.
pub async fn connect(
    address: IpAddr,
    options: &ConnectOptions,
    tls: rustls::ClientConfig,
) -> Result<Channel, TalosError> {
    let target = SocketAddr::new(address, options.port);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let timeout = options.connect_timeout;
    // The URI only names the target for HTTP/2's :authority; the connector below dials the
    // address itself, so no DNS is ever involved. The scheme is `http` because tonic, built
    // without its own TLS, refuses `https`: TLS is done by the connector instead.
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .and_then(|endpoint| endpoint.user_agent(crate::USER_AGENT))
        .map_err(|source| TalosError::Connect { address, source })?;
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let dial = async {
                let tcp = tokio::net::TcpStream::connect(target).await?;
                tcp.set_nodelay(true)?;
                // Talos certificates name IP addresses, so the server name is the IP itself.
                tls.connect(ServerName::IpAddress(address.into()), tcp)
                    .await
            };
            match tokio::time::timeout(timeout, dial).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS connection to {target} within {timeout:?}"),
                )),
            }
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| TalosError::Connect { address, source })
}
