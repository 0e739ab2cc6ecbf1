//! What a failed TLS handshake means: a server certificate castle does not trust is a setting
//! to fix, not a network hiccup, so clients report it at once instead of retrying it until
//! the timeout.

use std::error::Error as StdError;

/// rustls's verdict when `error` (or any cause below it) is rustls refusing the server's
/// certificate: an unknown issuer (a private CA not given in `ca_cert_pem`), a wrong name, an
/// expired or otherwise invalid certificate. `None` for every other failure.
pub fn untrusted_certificate(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(cause) = current {
        if let Some(verdict) = refusal(cause) {
            return Some(verdict);
        }
        // `io::Error::source` skips the error it wraps, so look inside it too.
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(verdict) = refusal(inner).or_else(|| untrusted_certificate(inner)) {
                return Some(verdict);
            }
        }
        current = cause.source();
    }
    None
}

fn refusal(error: &(dyn StdError + 'static)) -> Option<String> {
    match error.downcast_ref::<rustls::Error>()? {
        e @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            Some(e.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport error as hyper and reqwest stack it: a wrapper whose cause is an I/O error
    /// holding rustls's verdict.
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn an_unknown_issuer_deep_in_the_chain_is_an_untrusted_certificate() {
        let refused = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(
            untrusted_certificate(&Wrapper(refused)).as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
    }

    #[test]
    fn a_refused_connection_is_not_a_certificate_problem() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(untrusted_certificate(&Wrapper(refused)), None);
        let other_tls = std::io::Error::other(rustls::Error::DecryptError);
        assert_eq!(untrusted_certificate(&Wrapper(other_tls)), None);
    }
}
