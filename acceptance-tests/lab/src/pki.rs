//! Certificates the lab's emulators issue: maintenance self-signed certs, node certs signed by
//! a config's OS CA, the Kubernetes API server cert and the admin kubeconfig.
//!
//! Keys arrive the way Talos configs carry them: PEM with `ED25519 PRIVATE KEY` (PKCS#8 inside),
//! `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1, what Go writes for P-256).

use std::net::IpAddr;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A failure to read or issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The PEM text held no block of the wanted kind.
    #[error("no {0} PEM block")]
    MissingPem(&'static str),
    /// rcgen could not read a key or sign a certificate.
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    /// A SEC1 EC key could not be re-wrapped as PKCS#8.
    #[error("unsupported EC private key encoding")]
    Sec1,
}

/// The client's PEM reader: Talos labels Ed25519 keys `ED25519 PRIVATE KEY`, which the common
/// readers skip.
pub use castle::talos::client::tls::pem_blocks;

/// Encodes DER as PEM with the given label.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first certificate of a PEM text.
pub fn certificate_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    pem_blocks(pem)
        .into_iter()
        .find(|(l, _)| l == "CERTIFICATE")
        .map(|(_, der)| CertificateDer::from(der))
        .ok_or(PkiError::MissingPem("CERTIFICATE"))
}

/// The PKCS#8 DER of the first private key of a PEM text.
pub fn private_key_pkcs8(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (label, der) = pem_blocks(pem)
        .into_iter()
        .find(|(l, _)| l.ends_with("PRIVATE KEY"))
        .ok_or(PkiError::MissingPem("PRIVATE KEY"))?;
    if label == "EC PRIVATE KEY" {
        sec1_p256_to_pkcs8(&der)
    } else {
        Ok(der)
    }
}

/// An rcgen key pair from PEM (any of the encodings above).
pub fn key_pair(pem: &str) -> Result<KeyPair, PkiError> {
    Ok(KeyPair::try_from(private_key_pkcs8(pem)?.as_slice())?)
}

/// The rustls form of a key from PEM.
pub fn rustls_key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        private_key_pkcs8(pem)?,
    )))
}

/// Reads one DER TLV with a short or long length; returns (tag, value, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn der(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(value);
    out
}

/// Wraps a SEC1 P-256 key in PKCS#8, dropping the curve parameters ([0]) that ring refuses
/// inside PKCS#8 (the AlgorithmIdentifier already names the curve).
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (0x30, mut body, _) = tlv(sec1).ok_or(PkiError::Sec1)? else {
        return Err(PkiError::Sec1);
    };
    let mut inner = Vec::new();
    while !body.is_empty() {
        let (tag, value, rest) = tlv(body).ok_or(PkiError::Sec1)?;
        if tag != 0xa0 {
            inner.extend(der(tag, value));
        }
        body = rest;
    }
    let ec_private_key = der(0x30, &inner);
    // id-ecPublicKey and prime256v1.
    let algorithm: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut pkcs8 = vec![0x02, 0x01, 0x00];
    pkcs8.extend_from_slice(algorithm);
    pkcs8.extend(der(0x04, &ec_private_key));
    Ok(der(0x30, &pkcs8))
}

/// A CA read back from a config (certificate PEM and key PEM), able to sign leaves.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// PEM of the CA certificate as given (what clients trust).
    pub cert_pem: String,
}

impl Ca {
    /// Reads a CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = key_pair(key_pem)?;
        let der = certificate_der(cert_pem)?;
        // rcgen needs the issuer as a `Certificate`: re-create it from the parsed params. Only
        // its subject and key are used for signing, so the leaf still chains to the original.
        let params = CertificateParams::from_ca_cert_der(&der)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert,
            key,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// Creates a fresh CA (for the lab's own foreign clusters and for tests).
    pub fn generate(
        common_name: &str,
        organization: &str,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(alg)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, &[organization]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Ok(Ca {
            cert,
            key,
            cert_pem,
        })
    }

    /// PEM of the CA key (PKCS#8); Ed25519 keys get Talos's `ED25519 PRIVATE KEY` label.
    pub fn key_pem(&self) -> String {
        if self.key.algorithm() == &rcgen::PKCS_ED25519 {
            to_pem("ED25519 PRIVATE KEY", &self.key.serialize_der())
        } else {
            self.key.serialize_pem()
        }
    }

    /// Issues a leaf: returns (certificate PEM, key PEM). `server_ips` become IP SANs and make
    /// it a server certificate; otherwise it is a client certificate.
    pub fn issue(
        &self,
        common_name: &str,
        organizations: &[&str],
        server_ips: &[IpAddr],
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(alg)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        // Every leaf gets its own subject: one equal to its issuer's reads as self-signed.
        params.distinguished_name = dn(common_name, organizations);
        params.subject_alt_names = server_ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if server_ips.is_empty() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        };
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let key_pem = if alg == &rcgen::PKCS_ED25519 {
            to_pem("ED25519 PRIVATE KEY", &key.serialize_der())
        } else {
            key.serialize_pem()
        };
        Ok((cert.pem(), key_pem))
    }
}

impl Ca {
    /// Issues an etcd member's certificate: server and client use (etcd peers dial each other
    /// with it), `ips` as IP SANs. Returns (certificate PEM, key PEM).
    pub fn issue_peer(
        &self,
        common_name: &str,
        ips: &[IpAddr],
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name, &[]);
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn dn(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A self-signed server certificate for `ip` (maintenance mode): (cert PEM, key PEM).
pub fn self_signed_server(ip: IpAddr) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(&format!("maintenance-{ip}"), &["talos"]);
    params.subject_alt_names = vec![SanType::IpAddress(ip)];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Subject CN and Organizations of a certificate, for authorization decisions.
pub fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let orgs = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, orgs))
}

/// The ring provider, installed explicitly in every config the lab builds.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sec1_p256_key_with_curve_parameters_is_accepted() {
        // SEC1 as Go writes it: version, key, [0] curve OID, [1] public key.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = key.serialize_der();
        // Take the ECPrivateKey out of the PKCS#8 and add the [0] parameters Go includes.
        let (_, body, _) = tlv(&pkcs8).unwrap();
        let (_, _, rest) = tlv(body).unwrap(); // version
        let (_, _, rest) = tlv(rest).unwrap(); // algorithm
        let (_, octets, _) = tlv(rest).unwrap();
        let (_, ec, _) = tlv(octets).unwrap();
        let (t1, v1, rest) = tlv(ec).unwrap();
        let (t2, v2, rest) = tlv(rest).unwrap();
        let mut inner = der(t1, v1);
        inner.extend(der(t2, v2));
        inner.extend(der(
            0xa0,
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        ));
        inner.extend_from_slice(rest);
        let sec1 = der(0x30, &inner);
        let pem = to_pem("EC PRIVATE KEY", &sec1);
        let back = key_pair(&pem).unwrap();
        assert_eq!(back.public_key_der(), key.public_key_der());
    }
}
