//! Client certificates issued from a cluster CA (talosconfig and kubeconfig credentials).

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::ca::{random_serial, CaKind, CertificateAuthority};
use super::{sign_err, PkiError, Result};

/// Client credentials are renewed when they have less than this left.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// A client certificate, its key, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Certificate, PEM.
    pub crt: String,
    /// Private key, PEM in the Talos form of its algorithm.
    pub key: String,
    /// Expiry, RFC 3339 (UTC).
    pub not_after: String,
}

impl IssuedCertificate {
    /// Whether the certificate expires within [`RENEW_BEFORE`] of `now` (or already has).
    pub fn needs_renewal(&self, now: OffsetDateTime) -> Result<bool> {
        needs_renewal(&self.not_after, now)
    }
}

/// Whether a credential expiring at `not_after` (RFC 3339) must be renewed at `now`.
pub fn needs_renewal(not_after: &str, now: OffsetDateTime) -> Result<bool> {
    let expiry = OffsetDateTime::parse(not_after, &Rfc3339).map_err(|_| PkiError::Time)?;
    Ok(expiry - now <= RENEW_BEFORE)
}

/// How far before `now` a client certificate starts to be valid.
pub(crate) const ALLOWED_TIME_SKEW: Duration = Duration::seconds(10);

/// What a client certificate says about its holder.
pub(crate) struct ClientSubject<'a> {
    pub common_name: &'a str,
    pub organization: &'a str,
}

/// Issues a ClientAuth certificate from `ca`, valid `validity` from `now`.
pub(crate) fn issue_client_certificate(
    ca: &CertificateAuthority,
    ca_name: &str,
    subject: ClientSubject<'_>,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<IssuedCertificate> {
    let (issuer, issuer_key) = ca.issuer(ca_name)?;
    // The leaf uses the CA's algorithm: Ed25519 under the OS CA, P-256 under the Kubernetes CA.
    let kind: CaKind = ca.kind()?;
    let key = kind.generate_key("client")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, subject.organization);
    dn.push(DnType::CommonName, subject.common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    // Valid from 10 s in the past, as Talos issues it, so a node whose clock is a little
    // behind Terraform's host accepts it at once.
    // Talos: pkg/kubeconfig/generate.go (v1.12.0) allowedTimeSkew.
    params.not_before = now - ALLOWED_TIME_SKEW;
    let not_after = now.checked_add(validity).ok_or(PkiError::Time)?;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer, &issuer_key)
        .map_err(sign_err(&format!(
            "sign a client certificate with the {ca_name}"
        )))?;
    // X.509 time has whole seconds; report exactly what the certificate says.
    let not_after = not_after
        .replace_nanosecond(0)
        .map_err(|_| PkiError::Time)?;
    Ok(IssuedCertificate {
        crt: cert.pem(),
        key: kind.key_to_pem(&key)?,
        not_after: not_after
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|_| PkiError::Time)?,
    })
}
