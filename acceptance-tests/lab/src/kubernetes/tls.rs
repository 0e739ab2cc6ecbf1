//! TLS of the emulated API server and its accept loop.
//!
//! kube-apiserver requests a client certificate without requiring one, and judges it after the
//! handshake: an unknown or missing certificate is a 401 `Status`, not a TLS failure. The same
//! here: the handshake accepts any certificate (signatures still checked), then the chain is
//! verified against the cluster CA and the result rides along each request as an [`Identity`].

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::Identity;
use crate::pki::{self, Ca, PkiError};

/// Server TLS of one cluster's API, plus the verifier that turns a client certificate into an
/// [`Identity`].
pub struct KubeTls {
    server: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl KubeTls {
    /// A server certificate signed by the Kubernetes CA for `addresses` (VIP and control
    /// planes), and client verification against the same CA.
    pub fn new(ca_crt_pem: &str, ca_key_pem: &str, addresses: &[IpAddr]) -> Result<Self, PkiError> {
        let ca = Ca::from_pem(ca_crt_pem, ca_key_pem)?;
        let (cert_pem, key_pem) = ca.issue(
            "kube-apiserver",
            &["kube-master"],
            addresses,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pki::certificate_der(ca_crt_pem)?)
            .map_err(|_| PkiError::MissingPem("CA CERTIFICATE"))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), pki::provider())
                .build()
                .map_err(|_| PkiError::MissingPem("CA CERTIFICATE"))?;
        let chain = vec![
            pki::certificate_der(&cert_pem)?,
            pki::certificate_der(ca_crt_pem)?,
        ];
        let mut server = ServerConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .map_err(|_| PkiError::Sec1)?
            .with_client_cert_verifier(Arc::new(RequestAnyClientCert))
            .with_single_cert(chain, pki::rustls_key(&key_pem)?)
            .map_err(|_| PkiError::MissingPem("server key"))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(KubeTls {
            server: Arc::new(server),
            verifier,
        })
    }

    fn identity(&self, peer: Option<&[CertificateDer<'static>]>) -> Identity {
        let Some((leaf, intermediates)) = peer.and_then(|c| c.split_first()) else {
            return Identity::Anonymous;
        };
        if self
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_err()
        {
            return Identity::Anonymous;
        }
        match pki::subject(leaf) {
            Some((name, groups)) => Identity::User { name, groups },
            None => Identity::Anonymous,
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves. `tls` is read at each
/// accept, so the certificate can be re-issued when control planes join.
pub async fn run(
    listener: TcpListener,
    tls: Arc<RwLock<Arc<KubeTls>>>,
    router: Router<()>,
    shutdown: impl Future<Output = ()>,
) {
    // Connections live in the set: when this future ends or is aborted, they all close.
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
        let current = match tls.read() {
            Ok(t) => t.clone(),
            Err(_) => return,
        };
        let router = router.clone();
        connections.spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(current.server.clone());
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let identity = current.identity(stream.get_ref().1.peer_certificates());
            let app = router.layer(axum::Extension(identity));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Asks for a client certificate, accepts any (signatures are checked); see the module doc.
#[derive(Debug)]
struct RequestAnyClientCert;

impl ClientCertVerifier for RequestAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &pki::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &pki::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        pki::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
