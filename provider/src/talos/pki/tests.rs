//! PKI checks: certificates parsed back with x509-parser.

use std::sync::OnceLock;

use ::time::macros::datetime;
use ::time::{Duration, OffsetDateTime};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use x509_parser::oid_registry;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::*;

/// The injected clock of every PKI test.
pub(crate) const NOW: OffsetDateTime = datetime!(2025-01-15 12:00:00 UTC);

/// One bundle for the whole test binary: RSA 4096 generation is the slow part.
pub(crate) fn bundle() -> &'static SecretsBundle {
    static BUNDLE: OnceLock<SecretsBundle> = OnceLock::new();
    BUNDLE.get_or_init(|| SecretsBundle::generate(NOW).expect("bundle generation"))
}

fn der_of(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    p.contents
}

fn with_cert<R>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let der = der_of(pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("certificate DER");
    f(&cert)
}

fn organizations(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap().to_string())
        .collect()
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    let alg = &cert.public_key().algorithm;
    if alg.algorithm == oid_registry::OID_SIG_ED25519 {
        "ed25519".into()
    } else if alg.algorithm == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(curve, oid_registry::OID_EC_P256, "curve is P-256");
        "p256".into()
    } else {
        format!("{}", alg.algorithm)
    }
}

fn verify_against(leaf_pem: &str, ca_pem: &str) {
    let ca_der = der_of(ca_pem);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    with_cert(leaf_pem, |leaf| {
        leaf.verify_signature(Some(ca.public_key()))
            .expect("leaf signed by its CA");
        assert_eq!(leaf.issuer(), ca.subject(), "leaf names its CA as issuer");
        assert_ne!(leaf.subject(), ca.subject(), "leaf has its own subject");
    });
}

#[test]
fn every_ca_is_a_ten_year_signing_ca_with_its_algorithm_and_organization() {
    let b = bundle();
    let cases = [
        (
            &b.os_ca,
            "ed25519",
            vec!["talos".to_string()],
            "ED25519 PRIVATE KEY",
        ),
        (
            &b.kubernetes_ca,
            "p256",
            vec!["kubernetes".to_string()],
            "EC PRIVATE KEY",
        ),
        (&b.aggregator_ca, "p256", vec![], "EC PRIVATE KEY"),
        (
            &b.etcd_ca,
            "p256",
            vec!["etcd".to_string()],
            "EC PRIVATE KEY",
        ),
    ];
    let mut subjects = Vec::new();
    for (ca, alg, orgs, label) in cases {
        assert!(
            ca.key.starts_with(&format!("-----BEGIN {label}-----\n")),
            "{}",
            ca.key
        );
        with_cert(&ca.crt, |c| {
            assert_eq!(key_algorithm(c), alg);
            assert_eq!(organizations(c), orgs);
            assert!(c.is_ca());
            let ku = c.key_usage().unwrap().unwrap().value;
            assert!(ku.key_cert_sign() && ku.digital_signature());
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            assert_eq!(c.validity().not_before.to_datetime(), NOW);
            assert_eq!(
                c.validity().not_after.to_datetime(),
                NOW + Duration::days(3650)
            );
            // Self-signed: the CA verifies with its own key.
            c.verify_signature(None).expect("self-signed CA");
            subjects.push(c.subject().to_string());
        });
    }
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 4, "every CA has its own subject");
}

#[test]
fn service_account_key_is_rsa_4096_pkcs1() {
    let b = bundle();
    assert!(b
        .service_account_key
        .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&b.service_account_key).unwrap();
    assert_eq!(key.size() * 8, 4096);
}

#[test]
fn tokens_and_secrets_have_the_talos_formats() {
    let b = bundle();
    for t in [&b.bootstrap_token, &b.trustd_token] {
        let (id, secret) = t.split_once('.').unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16), "{t}");
    }
    assert_ne!(b.bootstrap_token, b.trustd_token);
    for s in [&b.cluster_secret, &b.secretbox_secret] {
        assert_eq!(STANDARD.decode(s).unwrap().len(), 32);
    }
    // cluster.id is URL-safe base64, as Talos writes it.
    assert_eq!(URL_SAFE.decode(&b.cluster_id).unwrap().len(), 32);
}

#[test]
fn a_bundle_reloaded_from_json_still_signs_leaves_its_cas_accept() {
    let json = serde_json::to_string(bundle()).unwrap();
    let reloaded: SecretsBundle = serde_json::from_str(&json).unwrap();
    assert_eq!(&reloaded, bundle());
    let later = NOW + Duration::days(400);
    let tc = issue_talosconfig(&reloaded, "homelab", &["10.0.0.11".into()], later).unwrap();
    verify_against(&tc.certificate.crt, &bundle().os_ca.crt);
    let kc = issue_admin_kubeconfig(&reloaded, "homelab", "https://10.0.0.10:6443", later).unwrap();
    verify_against(&kc.certificate.crt, &bundle().kubernetes_ca.crt);
}

#[test]
fn talosconfig_carries_an_os_admin_ed25519_client_certificate_for_one_year() {
    let b = bundle();
    let tc =
        issue_talosconfig(b, "homelab", &["10.0.0.11".into(), "10.0.0.12".into()], NOW).unwrap();
    let file: talosconfig::TalosconfigFile = serde_yaml::from_str(&tc.yaml).unwrap();
    assert_eq!(file.context, "homelab");
    let ctx = &file.contexts["homelab"];
    assert_eq!(ctx.endpoints, ["10.0.0.11", "10.0.0.12"]);
    // No nodes, as `talosctl gen config` writes it: a bare talosctl command reaches no node.
    assert!(ctx.nodes.is_empty());
    assert!(!tc.yaml.contains("nodes"), "{}", tc.yaml);
    assert_eq!(STANDARD.decode(&ctx.ca).unwrap(), b.os_ca.crt.as_bytes());
    let crt = String::from_utf8(STANDARD.decode(&ctx.crt).unwrap()).unwrap();
    let key = String::from_utf8(STANDARD.decode(&ctx.key).unwrap()).unwrap();
    assert_eq!(crt, tc.certificate.crt);
    assert!(key.starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));
    with_cert(&crt, |c| {
        assert_eq!(key_algorithm(c), "ed25519");
        assert_eq!(organizations(c), ["os:admin"]);
        assert!(!c.is_ca());
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        // 10 s of allowed clock skew, as Talos issues client certificates.
        assert_eq!(
            c.validity().not_before.to_datetime(),
            NOW - Duration::seconds(10)
        );
        assert_eq!(
            c.validity().not_after.to_datetime(),
            NOW + Duration::days(365)
        );
    });
    verify_against(&crt, &b.os_ca.crt);
    assert_eq!(tc.certificate.not_after, "2026-01-15T12:00:00Z");
}

#[test]
fn admin_kubeconfig_is_a_system_masters_p256_certificate_kubectl_can_read() {
    let b = bundle();
    let kc = issue_admin_kubeconfig(b, "homelab", "https://10.0.0.10:6443", NOW).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&kc.yaml).unwrap();
    assert_eq!(doc["apiVersion"], "v1");
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "admin@homelab");
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"], "homelab");
    assert_eq!(cluster["cluster"]["server"], "https://10.0.0.10:6443");
    let ca = cluster["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    assert_eq!(STANDARD.decode(ca).unwrap(), b.kubernetes_ca.crt.as_bytes());
    let user = &doc["users"][0];
    assert_eq!(user["name"], "admin@homelab");
    let crt = user["user"]["client-certificate-data"].as_str().unwrap();
    let crt = String::from_utf8(STANDARD.decode(crt).unwrap()).unwrap();
    let key = user["user"]["client-key-data"].as_str().unwrap();
    let key = String::from_utf8(STANDARD.decode(key).unwrap()).unwrap();
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_eq!(doc["contexts"][0]["context"]["cluster"], "homelab");
    assert_eq!(doc["contexts"][0]["context"]["user"], "admin@homelab");
    with_cert(&crt, |c| {
        assert_eq!(key_algorithm(c), "p256");
        assert_eq!(organizations(c), ["system:masters"]);
        assert_eq!(
            c.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "admin"
        );
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert_eq!(
            c.validity().not_after.to_datetime(),
            NOW + Duration::days(365)
        );
    });
    verify_against(&crt, &b.kubernetes_ca.crt);
}

#[test]
fn credentials_are_renewed_within_thirty_days_of_expiry() {
    let kc = issue_admin_kubeconfig(bundle(), "homelab", "https://10.0.0.10:6443", NOW).unwrap();
    let c = &kc.certificate;
    assert!(!c.needs_renewal(NOW).unwrap());
    assert!(!c.needs_renewal(NOW + Duration::days(334)).unwrap());
    assert!(c.needs_renewal(NOW + Duration::days(335)).unwrap());
    assert!(c.needs_renewal(NOW + Duration::days(400)).unwrap());
}

#[test]
fn a_tampered_ca_key_is_refused_with_the_item_named() {
    let mut b = bundle().clone();
    b.kubernetes_ca.key =
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".into();
    let err = issue_admin_kubeconfig(&b, "x", "https://h:6443", NOW).unwrap_err();
    assert!(err.to_string().contains("Kubernetes CA"), "{err}");
}

#[test]
#[ignore = "writes credentials to $CASTLE_PKI_DUMP for checks with openssl/kubectl"]
fn dump_credentials_for_external_tools() {
    let dir = std::path::PathBuf::from(std::env::var("CASTLE_PKI_DUMP").unwrap());
    let b = bundle();
    let now = OffsetDateTime::now_utc();
    let kc = issue_admin_kubeconfig(b, "homelab", "https://10.0.0.10:6443", now).unwrap();
    let tc = issue_talosconfig(b, "homelab", &["10.0.0.11".into()], now).unwrap();
    std::fs::write(dir.join("kubeconfig"), &kc.yaml).unwrap();
    std::fs::write(dir.join("talosconfig"), &tc.yaml).unwrap();
    std::fs::write(dir.join("k8s-ca.crt"), &b.kubernetes_ca.crt).unwrap();
    std::fs::write(dir.join("k8s-ca.key"), &b.kubernetes_ca.key).unwrap();
    std::fs::write(dir.join("admin.crt"), &kc.certificate.crt).unwrap();
    std::fs::write(dir.join("admin.key"), &kc.certificate.key).unwrap();
    std::fs::write(dir.join("os-ca.crt"), &b.os_ca.crt).unwrap();
    std::fs::write(dir.join("os-admin.crt"), &tc.certificate.crt).unwrap();
    std::fs::write(dir.join("sa.key"), &b.service_account_key).unwrap();
}
