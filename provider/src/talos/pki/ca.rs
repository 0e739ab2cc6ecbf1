//! Certificate authorities of a cluster: generation and reloading from stored PEM.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::keys;
use super::{sign_err, PkiError, Result};

/// CAs live ten years, as Talos makes them.
pub(crate) const CA_VALIDITY: Duration = Duration::days(3650);

/// The key algorithm of a CA (and of the leaves castle issues from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Ed25519: the Talos OS (apid/trustd) CA.
    Ed25519,
    /// ECDSA P-256 with SHA-256: Kubernetes, aggregator and etcd CAs.
    EcdsaP256,
}

impl CaKind {
    pub(crate) fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKind::Ed25519 => &rcgen::PKCS_ED25519,
            CaKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }

    /// Generates a fresh key pair of this kind.
    pub(crate) fn generate_key(self, what: &str) -> Result<KeyPair> {
        KeyPair::generate_for(self.algorithm())
            .map_err(sign_err(&format!("generate the {what} key")))
    }

    /// Encodes a key of this kind the way Talos stores it.
    pub(crate) fn key_to_pem(self, key: &KeyPair) -> Result<String> {
        match self {
            CaKind::Ed25519 => keys::ed25519_to_talos_pem(key.serialized_der()),
            CaKind::EcdsaP256 => keys::p256_to_sec1_pem(key.serialized_der()),
        }
    }

    /// Loads a key of this kind from its Talos PEM.
    pub(crate) fn key_from_pem(self, what: &str, pem: &str) -> Result<KeyPair> {
        let der = match self {
            CaKind::Ed25519 => keys::ed25519_from_talos_pem(what, pem)?,
            CaKind::EcdsaP256 => keys::p256_from_sec1_pem(what, pem)?,
        };
        KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), self.algorithm())
            .map_err(sign_err(&format!("load the {what} key")))
    }

    fn from_key_pem(what: &str, pem: &str) -> Result<CaKind> {
        if pem.contains(keys::ED25519_LABEL) {
            Ok(CaKind::Ed25519)
        } else if pem.contains(keys::EC_LABEL) {
            Ok(CaKind::EcdsaP256)
        } else {
            Err(PkiError::BadPem {
                what: what.into(),
                reason: "unknown private key label".into(),
            })
        }
    }
}

/// A CA certificate and its private key, both PEM (as Talos puts them, base64-wrapped, in configs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAuthority {
    /// The CA certificate, PEM.
    pub crt: String,
    /// The CA private key, PEM (`ED25519 PRIVATE KEY` or `EC PRIVATE KEY`).
    pub key: String,
}

impl CertificateAuthority {
    /// Generates a self-signed CA valid ten years from `now`.
    ///
    /// Every CA gets its own common name so no two certificates of a cluster share a subject.
    pub fn generate(
        kind: CaKind,
        common_name: &str,
        organization: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let what = format!("{common_name} CA");
        let key = kind.generate_key(&what)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(org) = organization {
            dn.push(DnType::OrganizationName, org);
        }
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now;
        params.not_after = now.checked_add(CA_VALIDITY).ok_or(PkiError::Time)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(sign_err(&format!("sign the {what}")))?;
        Ok(Self {
            crt: cert.pem(),
            key: kind.key_to_pem(&key)?,
        })
    }

    /// The key algorithm, read from the stored key's PEM label.
    pub fn kind(&self) -> Result<CaKind> {
        CaKind::from_key_pem("CA key", &self.key)
    }

    /// base64 of the certificate PEM, the form Talos configs and kubeconfigs carry.
    pub fn crt_base64(&self) -> String {
        STANDARD.encode(self.crt.as_bytes())
    }

    /// base64 of the key PEM.
    pub fn key_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    /// Rebuilds what rcgen needs to sign a leaf: the CA's parameters and its key pair.
    ///
    /// The CA certificate is re-signed in memory only to get an issuer object; its subject and
    /// key identifier come from the stored PEM, so leaves chain to the stored certificate.
    pub(crate) fn issuer(&self, what: &str) -> Result<(rcgen::Certificate, KeyPair)> {
        let kind = self.kind()?;
        let key = kind.key_from_pem(what, &self.key)?;
        let params = CertificateParams::from_ca_cert_pem(&self.crt)
            .map_err(sign_err(&format!("parse the {what} certificate")))?;
        let cert = params
            .self_signed(&key)
            .map_err(sign_err(&format!("load the {what}")))?;
        Ok((cert, key))
    }
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Clear the top bit so the DER INTEGER stays positive without padding.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
