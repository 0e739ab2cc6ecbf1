//! What a failed TLS handshake means: a server certificate castle does not trust is a setting
//! to fix, not a network hiccup, so clients report it at once instead of retrying it until
//! the timeout.

use std::error::Error as StdError;

/// rustls's verdict when `error` (or any cause below it) is rustls refusing the server's
/// certificate: an unknown issuer (a private CA not given in `ca_cert_pem`), a wrong name, an
/// expired or otherwise invalid certificate. `None` for every other failure.
pub fn untrusted_certificate(error: &(dyn StdError + 'static)) -> Option<String> {
    refusal_in(error).map(ToString::to_string)
}

/// Whether `error` is rustls refusing a certificate that no CA castle was given signed (an
/// unknown issuer, a signature that does not check): the server answering is not the one the
/// settings mean, and time will not change that, unlike a certificate not valid yet (a clock
/// still unsynced) or not yet naming a new address.
pub fn signed_by_another_ca(error: &(dyn StdError + 'static)) -> bool {
    use rustls::CertificateError as C;
    matches!(
        refusal_in(error),
        Some(rustls::Error::InvalidCertificate(
            C::UnknownIssuer | C::BadSignature
        ))
    )
}

/// rustls's refusal of the server's certificate anywhere in `error`'s causes.
fn refusal_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
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
            if let Some(verdict) = refusal(inner).or_else(|| refusal_in(inner)) {
                return Some(verdict);
            }
        }
        current = cause.source();
    }
    None
}

fn refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    match error.downcast_ref::<rustls::Error>()? {
        e @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            Some(e)
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

    #[test]
    fn only_another_cas_certificate_is_signed_by_another_ca() {
        let wrapped = |e: rustls::CertificateError| {
            Wrapper(std::io::Error::other(rustls::Error::InvalidCertificate(e)))
        };
        assert!(signed_by_another_ca(&wrapped(
            rustls::CertificateError::UnknownIssuer
        )));
        assert!(signed_by_another_ca(&wrapped(
            rustls::CertificateError::BadSignature
        )));
        // Untrusted too, but a clock or a certificate that catches up can cure these.
        assert!(!signed_by_another_ca(&wrapped(
            rustls::CertificateError::NotValidYet
        )));
        assert!(!signed_by_another_ca(&wrapped(
            rustls::CertificateError::NotValidForName
        )));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!signed_by_another_ca(&Wrapper(refused)));
    }
}
