//! rustls client configurations for the two ways a Talos node speaks TLS.
//!
//! Every config installs the `ring` provider explicitly: the process-wide default provider is
//! not relied upon, because the provider and the lab may link several TLS stacks.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::error::TalosError;

/// What a talosconfig context holds to reach a configured node: the OS CA and a client
/// certificate (Ed25519) whose Organization carries the role (`os:admin`).
#[derive(Clone)]
pub struct Credentials {
    /// PEM of the cluster's OS CA certificate.
    pub ca_pem: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM of the client key (`ED25519 PRIVATE KEY` or `PRIVATE KEY`, PKCS#8 inside).
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    // The key must never land in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// Splits PEM text into (label, DER) blocks, whatever the label (the lab reads keys with it too).
pub fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    // Talos labels its Ed25519 keys `ED25519 PRIVATE KEY`, which the usual PEM readers skip,
    // so the few lines of PEM framing are read here.
    let mut out = Vec::new();
    let mut label: Option<String> = None;
    let mut body = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            label = Some(rest.trim_end_matches('-').to_string());
            body.clear();
        } else if line.starts_with("-----END ") {
            if let Some(l) = label.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
                    out.push((l, der));
                }
            }
        } else if label.is_some() {
            body.push_str(line);
        }
    }
    out
}

fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TalosError> {
    let certs: Vec<_> = pem_blocks(pem)
        .into_iter()
        .filter(|(l, _)| l == "CERTIFICATE")
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(TalosError::InvalidPem {
            what,
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TalosError> {
    pem_blocks(pem)
        .into_iter()
        .find(|(l, _)| l.ends_with("PRIVATE KEY"))
        .map(|(_, der)| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
        .ok_or(TalosError::InvalidPem {
            what: "client key",
            reason: "no PRIVATE KEY block".into(),
        })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TalosError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TalosError::TlsConfig)
}

/// Config for a node in maintenance mode: no client certificate, and the node's self-signed
/// certificate is accepted unverified (there is nothing to verify it against yet).
pub fn insecure_config() -> Result<ClientConfig, TalosError> {
    let mut config = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Config for a configured node: its certificate must chain to the OS CA and name the dialled
/// IP address; we present the talosconfig client certificate.
pub fn mtls_config(credentials: &Credentials) -> Result<ClientConfig, TalosError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&credentials.ca_pem, "CA certificate")? {
        roots.add(ca).map_err(TalosError::TlsConfig)?;
    }
    let chain = certificates(&credentials.cert_pem, "client certificate")?;
    let key = private_key(&credentials.key_pem)?;
    let mut config = builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TalosError::TlsConfig)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The verifier of maintenance mode: signatures are still checked (the handshake must be
/// sound), the certificate's issuer and names are not.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talos_ed25519_key_label_is_read() {
        let pem = "-----BEGIN ED25519 PRIVATE KEY-----\nAAEC\n-----END ED25519 PRIVATE KEY-----\n";
        let blocks = pem_blocks(pem);
        assert_eq!(
            blocks,
            vec![("ED25519 PRIVATE KEY".to_string(), vec![0, 1, 2])]
        );
        assert!(private_key(pem).is_ok());
    }

    #[test]
    fn a_ca_without_certificate_block_is_rejected() {
        assert!(matches!(
            certificates("garbage", "CA certificate"),
            Err(TalosError::InvalidPem {
                what: "CA certificate",
                ..
            })
        ));
    }
}
