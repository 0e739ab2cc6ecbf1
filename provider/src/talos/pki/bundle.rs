//! The secrets bundle: every CA, key and token of one cluster.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ca::{CaKind, CertificateAuthority};
use super::tokens::{random_base64, random_base64_url, random_token};
use super::{PkiError, Result};

/// Talos has used RSA 4096 service-account keys since config contract 1.7.
const SERVICE_ACCOUNT_KEY_BITS: usize = 4096;

/// All secrets of a cluster. Serialises to JSON for the resource's private state; generated once
/// and then only reloaded, so configs and credentials stay stable across plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsBundle {
    /// OS (Talos API) CA, Ed25519, Organization `talos`.
    pub os_ca: CertificateAuthority,
    /// Kubernetes CA, ECDSA P-256, Organization `kubernetes`.
    pub kubernetes_ca: CertificateAuthority,
    /// Aggregator (front-proxy) CA, ECDSA P-256.
    pub aggregator_ca: CertificateAuthority,
    /// etcd CA, ECDSA P-256, Organization `etcd`.
    pub etcd_ca: CertificateAuthority,
    /// Service-account signing key, RSA 4096, PKCS#1 PEM (`RSA PRIVATE KEY`).
    pub service_account_key: String,
    /// Kubernetes bootstrap token (`cluster.token`).
    pub bootstrap_token: String,
    /// trustd token (`machine.token`).
    pub trustd_token: String,
    /// `cluster.id`: 32 random bytes, standard base64.
    pub cluster_id: String,
    /// `cluster.secret`: 32 random bytes, standard base64.
    pub cluster_secret: String,
    /// `cluster.secretboxEncryptionSecret`: 32 random bytes, standard base64.
    pub secretbox_secret: String,
}

impl SecretsBundle {
    /// Generates a new bundle whose CAs are valid ten years from `now`.
    ///
    /// Slow-ish: the RSA 4096 key takes a moment even optimised.
    pub fn generate(now: OffsetDateTime) -> Result<Self> {
        Self::generate_with(now, SERVICE_ACCOUNT_KEY_BITS)
    }

    /// A bundle of the same shape with a small service-account key, generated in a few
    /// milliseconds, for checking at plan time that configs generate and pass the schema. It
    /// must never be applied to a node.
    pub fn for_checks(now: OffsetDateTime) -> Result<Self> {
        Self::generate_with(now, 1024)
    }

    fn generate_with(now: OffsetDateTime, service_account_bits: usize) -> Result<Self> {
        let os_ca = CertificateAuthority::generate(CaKind::Ed25519, "talos", Some("talos"), now)?;
        let kubernetes_ca = CertificateAuthority::generate(
            CaKind::EcdsaP256,
            "kubernetes",
            Some("kubernetes"),
            now,
        )?;
        let aggregator_ca =
            CertificateAuthority::generate(CaKind::EcdsaP256, "front-proxy", None, now)?;
        let etcd_ca = CertificateAuthority::generate(CaKind::EcdsaP256, "etcd", Some("etcd"), now)?;
        let sa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, service_account_bits)
            .map_err(PkiError::Rsa)?;
        let service_account_key = sa
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(PkiError::RsaEncode)?
            .to_string();
        Ok(Self {
            os_ca,
            kubernetes_ca,
            aggregator_ca,
            etcd_ca,
            service_account_key,
            bootstrap_token: random_token(),
            trustd_token: random_token(),
            cluster_id: random_base64_url(32),
            cluster_secret: random_base64(32),
            secretbox_secret: random_base64(32),
        })
    }

    /// [`SecretsBundle::generate`] with the system clock.
    pub fn generate_now() -> Result<Self> {
        Self::generate(OffsetDateTime::now_utc())
    }

    /// base64 of the service-account key PEM, as `cluster.serviceAccount.key` carries it.
    pub fn service_account_key_base64(&self) -> String {
        STANDARD.encode(self.service_account_key.as_bytes())
    }
}
