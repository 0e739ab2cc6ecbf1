//! Private-key encodings Talos expects, converted to and from what ring (via rcgen) can load.
//!
//! ring generates PKCS#8 v2 documents; Talos (Go) wants Ed25519 keys as PKCS#8 v1 under the PEM
//! label `ED25519 PRIVATE KEY`, and ECDSA keys as SEC1 `EC PRIVATE KEY` with the curve named.
//! Both layouts have a fixed length for one curve, so the conversions are byte templates checked
//! strictly rather than a general DER parser.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{PkiError, Result};

/// PEM label of Talos Ed25519 keys.
pub(crate) const ED25519_LABEL: &str = "ED25519 PRIVATE KEY";
/// PEM label of SEC1 ECDSA keys.
pub(crate) const EC_LABEL: &str = "EC PRIVATE KEY";

// ring's PKCS#8 v2 Ed25519: SEQUENCE { v1, alg, OCTET STRING { OCTET STRING seed }, [1] pub }.
const ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
// PKCS#8 v1 Ed25519 as Go and OpenSSL write it: no public key.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
// ring's PKCS#8 for P-256, up to the 32-byte private scalar (SEC1 inside without parameters).
const P256_PKCS8_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
// Between scalar and public point: [1] BIT STRING, no unused bits.
const P256_PUB_TAG: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
// SEC1 ECPrivateKey with the named curve, as Go's x509.MarshalECPrivateKey writes it.
const P256_SEC1_PREFIX: [u8; 7] = [0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
const P256_SEC1_PARAMS: [u8; 12] = [
    0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
];

/// PEM-encodes DER under a label (64-column body, trailing newline).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes a single PEM block, checking its label.
pub(crate) fn pem_decode(what: &str, label: &str, pem: &str) -> Result<Vec<u8>> {
    let bad = |reason: &str| PkiError::BadPem {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| bad(&format!("no `{label}` PEM block")))?;
    let rest = &pem[start + begin.len()..];
    let stop = rest
        .find(&end)
        .ok_or_else(|| bad("unterminated PEM block"))?;
    let body: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|_| bad("PEM body is not base64"))
}

/// ring's Ed25519 PKCS#8 (v2) → Talos PEM (v1 inside, `ED25519 PRIVATE KEY`).
pub(crate) fn ed25519_to_talos_pem(ring_pkcs8: &[u8]) -> Result<String> {
    if ring_pkcs8.len() < 48 || ring_pkcs8[..16] != ED25519_V2_PREFIX {
        return Err(PkiError::BadPem {
            what: "generated Ed25519 key".into(),
            reason: "unexpected PKCS#8 layout".into(),
        });
    }
    let mut der = ED25519_V1_PREFIX.to_vec();
    der.extend_from_slice(&ring_pkcs8[16..48]);
    Ok(pem_encode(ED25519_LABEL, &der))
}

/// Talos Ed25519 PEM → PKCS#8 v1 DER (which rcgen loads unchecked).
pub(crate) fn ed25519_from_talos_pem(what: &str, pem: &str) -> Result<Vec<u8>> {
    let der = pem_decode(what, ED25519_LABEL, pem)?;
    if der.len() != 48 || der[..16] != ED25519_V1_PREFIX {
        return Err(PkiError::BadPem {
            what: what.into(),
            reason: "not an Ed25519 PKCS#8 key".into(),
        });
    }
    Ok(der)
}

/// ring's P-256 PKCS#8 → SEC1 `EC PRIVATE KEY` PEM with the curve named.
pub(crate) fn p256_to_sec1_pem(ring_pkcs8: &[u8]) -> Result<String> {
    let ok = ring_pkcs8.len() == 138
        && ring_pkcs8[..36] == P256_PKCS8_PREFIX
        && ring_pkcs8[68..73] == P256_PUB_TAG;
    if !ok {
        return Err(PkiError::BadPem {
            what: "generated ECDSA key".into(),
            reason: "unexpected PKCS#8 layout".into(),
        });
    }
    let mut der = P256_SEC1_PREFIX.to_vec();
    der.extend_from_slice(&ring_pkcs8[36..68]);
    der.extend_from_slice(&P256_SEC1_PARAMS);
    der.extend_from_slice(&P256_PUB_TAG);
    der.extend_from_slice(&ring_pkcs8[73..138]);
    Ok(pem_encode(EC_LABEL, &der))
}

/// SEC1 `EC PRIVATE KEY` PEM (P-256, curve named) → the PKCS#8 form ring loads.
pub(crate) fn p256_from_sec1_pem(what: &str, pem: &str) -> Result<Vec<u8>> {
    let der = pem_decode(what, EC_LABEL, pem)?;
    let ok = der.len() == 121
        && der[..7] == P256_SEC1_PREFIX
        && der[39..51] == P256_SEC1_PARAMS
        && der[51..56] == P256_PUB_TAG;
    if !ok {
        return Err(PkiError::BadPem {
            what: what.into(),
            reason: "not a P-256 SEC1 key".into(),
        });
    }
    let mut pkcs8 = P256_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&der[7..39]);
    pkcs8.extend_from_slice(&P256_PUB_TAG);
    pkcs8.extend_from_slice(&der[56..121]);
    Ok(pkcs8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_keys_survive_the_round_trip_through_sec1() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = p256_to_sec1_pem(kp.serialized_der()).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        let back = p256_from_sec1_pem("test", &pem).unwrap();
        assert_eq!(back, kp.serialized_der());
    }

    #[test]
    fn ed25519_keys_reload_from_the_talos_label() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let pem = ed25519_to_talos_pem(kp.serialized_der()).unwrap();
        assert!(pem.starts_with("-----BEGIN ED25519 PRIVATE KEY-----\n"));
        let der = ed25519_from_talos_pem("test", &pem).unwrap();
        let again = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types_der(&der),
            &rcgen::PKCS_ED25519,
        )
        .unwrap();
        assert_eq!(again.public_key_raw(), kp.public_key_raw());
    }

    fn rustls_pki_types_der(der: &[u8]) -> rustls::pki_types::PrivatePkcs8KeyDer<'static> {
        rustls::pki_types::PrivatePkcs8KeyDer::from(der.to_vec())
    }
}
