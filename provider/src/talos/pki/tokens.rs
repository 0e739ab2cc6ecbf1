//! Random tokens and secrets of a cluster.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use rand::Rng as _;

const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A Kubernetes-style bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}` (Talos uses the same form for
/// `cluster.token` and `machine.token`).
pub fn random_token() -> String {
    let mut rng = rand::rngs::OsRng;
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| TOKEN_ALPHABET[rng.gen_range(0..TOKEN_ALPHABET.len())] as char)
            .collect()
    };
    let id = pick(6);
    let secret = pick(16);
    format!("{id}.{secret}")
}

/// `len` random bytes in URL-safe base64 (with padding), as Talos writes `cluster.id`.
// Talos: pkg/machinery/config/generate/secrets/bundle.go (v1.12.0) base64.URLEncoding.
pub fn random_base64_url(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rngs::OsRng.fill(bytes.as_mut_slice());
    URL_SAFE.encode(bytes)
}

/// `len` random bytes, standard base64 (`cluster.secret`, secretbox secret).
pub fn random_base64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rngs::OsRng.fill(bytes.as_mut_slice());
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_bootstrap_token_shape() {
        for _ in 0..50 {
            let t = random_token();
            let (id, secret) = t.split_once('.').unwrap();
            assert_eq!(id.len(), 6);
            assert_eq!(secret.len(), 16);
            assert!(t
                .chars()
                .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()));
        }
        assert_ne!(random_token(), random_token());
    }

    #[test]
    fn random_secrets_are_32_bytes_of_standard_base64() {
        let s = random_base64(32);
        assert_eq!(STANDARD.decode(&s).unwrap().len(), 32);
    }
}
