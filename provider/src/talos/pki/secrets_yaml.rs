//! The secrets bundle in the format `talosctl gen secrets` writes (`secrets.yaml`), both ways:
//! castle keeps a cluster's identity in Terraform state in this form, and a user migrating an
//! existing cluster brings that cluster's file.
//!
//! Facts of the format (Talos: pkg/machinery/config/generate/secrets/bundle.go, v1.12.0): top-level
//! `cluster` (`id`, `secret`), `secrets` (`bootstraptoken`, `secretboxencryptionsecret`, older
//! clusters `aescbcencryptionsecret`), `trustdinfo` (`token`) and `certs` (`etcd`, `k8s`,
//! `k8saggregator`, `os` with `crt` and `key`; `k8sserviceaccount` with `key` only). Certificates
//! and keys are PEM, base64-encoded once more.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::ca::{CaKind, CertificateAuthority};
use super::{PkiError, Result, SecretsBundle};

#[derive(Debug, Serialize, Deserialize)]
struct File {
    cluster: ClusterIdentity,
    secrets: Secrets,
    trustdinfo: Trustd,
    certs: Certs,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClusterIdentity {
    id: String,
    secret: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Secrets {
    bootstraptoken: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secretboxencryptionsecret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aescbcencryptionsecret: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Trustd {
    token: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pair {
    crt: String,
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyOnly {
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Certs {
    etcd: Pair,
    k8s: Pair,
    k8saggregator: Pair,
    k8sserviceaccount: KeyOnly,
    os: Pair,
}

fn bad(what: &str, reason: impl Into<String>) -> PkiError {
    PkiError::BadPem {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn unwrap_pem(what: &str, encoded: &str) -> Result<String> {
    let bytes = STANDARD.decode(encoded.trim()).map_err(|_| {
        bad(
            what,
            "not base64 (talosctl gen secrets writes base64 of the PEM)",
        )
    })?;
    let pem = String::from_utf8(bytes).map_err(|_| bad(what, "not PEM text"))?;
    if !pem.contains("-----BEGIN ") {
        return Err(bad(what, "not a PEM block"));
    }
    Ok(pem)
}

fn ca(what: &str, pair: &Pair, kind: CaKind) -> Result<CertificateAuthority> {
    let ca = CertificateAuthority {
        crt: unwrap_pem(&format!("{what} certificate (certs.{what}.crt)"), &pair.crt)?,
        key: unwrap_pem(&format!("{what} key (certs.{what}.key)"), &pair.key)?,
    };
    let found = ca.kind()?;
    if found != kind {
        return Err(bad(
            &format!("{what} key (certs.{what}.key)"),
            format!("expected a {kind:?} key, found {found:?}"),
        ));
    }
    // Proves the pair is usable: the key loads and the certificate parses as a CA.
    ca.issuer(&format!("{what} CA"))?;
    Ok(ca)
}

fn required(what: &str, value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(bad(what, "empty"));
    }
    Ok(value.to_string())
}

impl SecretsBundle {
    /// Reads a `talosctl gen secrets` file. Every CA must load (the key matches its kind and
    /// the certificate parses), so a bad file is refused before any node sees it.
    pub fn from_talos_yaml(text: &str) -> Result<Self> {
        let file: File = serde_yaml::from_str(text).map_err(|e| {
            // serde_yaml may quote the offending value: only a missing field's name and the
            // position are repeated, never the contents.
            let message = e.to_string();
            let what = match message.find("missing field") {
                Some(at) => message[at..]
                    .split(" at ")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => "unexpected content".to_string(),
            };
            let place = e
                .location()
                .map(|l| format!(" at line {}", l.line()))
                .unwrap_or_default();
            bad(
                "secrets YAML",
                format!("not a talosctl gen secrets file: {what}{place}"),
            )
        })?;
        let secretbox = match (
            &file.secrets.secretboxencryptionsecret,
            &file.secrets.aescbcencryptionsecret,
        ) {
            (Some(secret), _) => required("secrets.secretboxencryptionsecret", secret)?,
            (None, Some(_)) => {
                return Err(bad(
                    "secrets YAML",
                    "it has only an aescbcencryptionsecret: castle configures secretbox encryption. Add a \
                     secretboxencryptionsecret (32 random bytes, base64) before migrating",
                ))
            }
            (None, None) => return Err(bad("secrets YAML", "secrets.secretboxencryptionsecret is missing")),
        };
        let service_account_key = unwrap_pem(
            "service-account key (certs.k8sserviceaccount.key)",
            &file.certs.k8sserviceaccount.key,
        )?;
        Ok(SecretsBundle {
            os_ca: ca("os", &file.certs.os, CaKind::Ed25519)?,
            kubernetes_ca: ca("k8s", &file.certs.k8s, CaKind::EcdsaP256)?,
            aggregator_ca: ca(
                "k8saggregator",
                &file.certs.k8saggregator,
                CaKind::EcdsaP256,
            )?,
            etcd_ca: ca("etcd", &file.certs.etcd, CaKind::EcdsaP256)?,
            service_account_key,
            bootstrap_token: required("secrets.bootstraptoken", &file.secrets.bootstraptoken)?,
            trustd_token: required("trustdinfo.token", &file.trustdinfo.token)?,
            cluster_id: required("cluster.id", &file.cluster.id)?,
            cluster_secret: required("cluster.secret", &file.cluster.secret)?,
            secretbox_secret: secretbox,
        })
    }

    /// Writes the bundle as `talosctl gen secrets` does, so the file also works with talosctl
    /// (`talosctl gen config --with-secrets`).
    pub fn to_talos_yaml(&self) -> Result<String> {
        let pair = |ca: &CertificateAuthority| Pair {
            crt: ca.crt_base64(),
            key: ca.key_base64(),
        };
        let file = File {
            cluster: ClusterIdentity {
                id: self.cluster_id.clone(),
                secret: self.cluster_secret.clone(),
            },
            secrets: Secrets {
                bootstraptoken: self.bootstrap_token.clone(),
                secretboxencryptionsecret: Some(self.secretbox_secret.clone()),
                aescbcencryptionsecret: None,
            },
            trustdinfo: Trustd {
                token: self.trustd_token.clone(),
            },
            certs: Certs {
                etcd: pair(&self.etcd_ca),
                k8s: pair(&self.kubernetes_ca),
                k8saggregator: pair(&self.aggregator_ca),
                k8sserviceaccount: KeyOnly {
                    key: self.service_account_key_base64(),
                },
                os: pair(&self.os_ca),
            },
        };
        serde_yaml::to_string(&file).map_err(|source| PkiError::Yaml {
            what: "secrets".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn bundle() -> SecretsBundle {
        SecretsBundle::for_checks(OffsetDateTime::now_utc()).unwrap()
    }

    #[test]
    fn a_bundle_written_as_talos_secrets_yaml_reads_back_identical() {
        let b = bundle();
        let text = b.to_talos_yaml().unwrap();
        for key in [
            "cluster:",
            "bootstraptoken:",
            "secretboxencryptionsecret:",
            "trustdinfo:",
            "k8sserviceaccount:",
            "k8saggregator:",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
        assert_eq!(SecretsBundle::from_talos_yaml(&text).unwrap(), b);
    }

    #[test]
    fn a_file_with_the_os_and_etcd_keys_swapped_is_refused_naming_the_entry() {
        let b = bundle();
        let mut swapped = b.clone();
        swapped.os_ca.key = b.etcd_ca.key.clone();
        let text = swapped.to_talos_yaml().unwrap();
        let error = SecretsBundle::from_talos_yaml(&text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("certs.os.key"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_talos_secrets_is_refused_without_echoing_it() {
        let error =
            SecretsBundle::from_talos_yaml("cluster:\n  id: x\n  secret: hunter2-very-secret\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("not a talosctl gen secrets file"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn an_aescbc_only_file_is_refused_with_what_to_add() {
        let text = bundle()
            .to_talos_yaml()
            .unwrap()
            .replace("secretboxencryptionsecret", "aescbcencryptionsecret");
        let error = SecretsBundle::from_talos_yaml(&text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("secretboxencryptionsecret"), "{error}");
    }
}
