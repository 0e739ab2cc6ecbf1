//! The emulator over HTTPS, with a certificate from a private CA: a self-hosted Infisical
//! behind a company or homelab CA, which clients must be told to trust.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{router, Lab};
use crate::pki::{self, Ca, PkiError};

/// A private CA and the server certificate it signed for the listener's address.
pub struct PrivateCa {
    /// PEM of the CA certificate: what a client must trust.
    pub ca_pem: String,
    server: Arc<ServerConfig>,
}

impl PrivateCa {
    /// A fresh CA, and a server certificate for `ip` signed by it.
    pub fn generate(ip: IpAddr) -> Result<Self, PkiError> {
        let ca = Ca::generate(
            "castle lab private CA",
            "castle-lab",
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?;
        let (cert_pem, key_pem) = ca.issue(
            "infisical.lab",
            &["castle-lab"],
            &[ip],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?;
        let chain = vec![
            pki::certificate_der(&cert_pem)?,
            pki::certificate_der(&ca.cert_pem)?,
        ];
        let mut server = ServerConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .map_err(|_| PkiError::Sec1)?
            .with_no_client_auth()
            .with_single_cert(chain, pki::rustls_key(&key_pem)?)
            .map_err(|_| PkiError::MissingPem("server key"))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca.cert_pem.clone(),
            server: Arc::new(server),
        })
    }
}

/// Serves the emulator over TLS on `listener` until `shutdown` completes.
pub async fn run_tls(
    listener: TcpListener,
    lab: Arc<Lab>,
    ca: &PrivateCa,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, router(lab), ca, shutdown).await
}

/// Serves `app` over TLS with the CA's server certificate on `listener` until `shutdown`.
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    ca: &PrivateCa,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    // Connections live in the set: when this future ends, they all close.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            // A client that does not trust the CA ends the handshake: nothing to serve.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
