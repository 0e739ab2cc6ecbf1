//! The one error type of the Talos client, and how callers should treat each failure.

use std::net::IpAddr;

/// A failed call to the Talos machine API.
#[derive(Debug, thiserror::Error)]
pub enum TalosError {
    /// A PEM document (CA, client certificate or key) could not be read.
    #[error("invalid PEM for {what}: {reason}")]
    InvalidPem {
        /// Which input was wrong ("client key", "CA certificate"…).
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the TLS configuration built from the credentials.
    #[error("invalid TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    /// The node could not be reached or the TLS handshake failed.
    #[error("unable to connect to the Talos API at {address}")]
    Connect {
        /// The node address that was dialled.
        address: IpAddr,
        /// The transport error, with the TCP or TLS failure as its source.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call itself failed with a gRPC status.
    #[error("{rpc} failed: {code:?}: {}", status.message())]
    Status {
        /// Name of the RPC.
        rpc: &'static str,
        /// The status code, repeated here for matching.
        code: tonic::Code,
        /// The full status (its source chain carries transport and TLS failures); boxed because
        /// a `Status` is large and errors travel through every `Result` of the client.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The call succeeded but the node reported a failure in the reply's `metadata`
    /// (what apid does for a node behind it).
    #[error("{rpc} failed on node {hostname:?}: {code:?}: {message}")]
    Node {
        /// Name of the RPC.
        rpc: &'static str,
        /// `metadata.hostname` of the failing node.
        hostname: String,
        /// `metadata.status.code`, or `Unknown` when only `metadata.error` was set.
        code: tonic::Code,
        /// `metadata.status.message`, else `metadata.error`.
        message: String,
    },
    /// The reply did not have the expected shape (no message, broken archive…).
    #[error("{rpc} returned an unexpected reply: {detail}")]
    Unexpected {
        /// Name of the RPC.
        rpc: &'static str,
        /// What was unexpected.
        detail: String,
    },
}

/// What a caller should do with a [`TalosError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying cannot help (`InvalidArgument`, bad credentials on our side…).
    Final,
    /// The node is not ready yet, or not reachable: retry within the caller's timeout.
    Retryable,
    /// TLS rejected the other side: the node's certificate is not from our OS CA, or the node
    /// refused our client certificate. The node belongs to another cluster (a "ghost").
    ForeignCluster,
}

impl TalosError {
    /// The gRPC code of the failure, from the status or from the reply's metadata.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            TalosError::Status { code, .. } | TalosError::Node { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Decides between final, retryable and foreign-cluster failures.
    pub fn class(&self) -> ErrorClass {
        if self.is_tls_rejection() {
            return ErrorClass::ForeignCluster;
        }
        match self {
            TalosError::InvalidPem { .. } | TalosError::TlsConfig(_) => ErrorClass::Final,
            TalosError::Unexpected { .. } => ErrorClass::Final,
            TalosError::Connect { .. } => ErrorClass::Retryable,
            TalosError::Status { code, .. } | TalosError::Node { code, .. } => match code {
                // The node rejected the request itself: sending it again changes nothing.
                tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::Unimplemented
                | tonic::Code::NotFound => ErrorClass::Final,
                tonic::Code::Unknown if self.refused_for_good() => ErrorClass::Final,
                _ => ErrorClass::Retryable,
            },
        }
    }

    /// Talos answers several refusals that no retry cures as plain errors (gRPC Unknown), so
    /// only their text tells them from a passing failure:
    /// - a config that does not decode, in maintenance mode (Talos:
    ///   internal/app/maintenance/server.go (v1.12.0) `ApplyConfiguration`: "failed to parse
    ///   config");
    /// - an installer image that does not validate, or a release the node cannot upgrade to or
    ///   from (v1alpha1_server.go `Upgrade`, pkg/machinery/compatibility/talos_version.go
    ///   `UpgradeableFrom`);
    /// - an etcd that cannot lose this control plane: two members, a member not started, a
    ///   member not healthy (internal/pkg/etcd/etcd.go `ValidateForUpgrade`). castle waits for
    ///   every member to be healthy before it upgrades a control plane, so a member Talos still
    ///   finds wanting needs an operator: failing at once, with the node's reason, beats
    ///   retrying until the timeout.
    ///
    /// An upgrade mutex held by another upgrade ("failed to acquire upgrade mutex") passes with
    /// time: it stays retryable.
    fn refused_for_good(&self) -> bool {
        let message = match self {
            TalosError::Status { status, .. } => status.message(),
            TalosError::Node { message, .. } => message.as_str(),
            _ => return false,
        };
        [
            "failed to parse config",
            "error validating installer image",
            "error validating etcd for upgrade",
            "is too old to upgrade to Talos",
        ]
        .iter()
        .any(|needle| message.contains(needle))
    }

    /// The error with all its causes on one line, for diagnostics ("… transport error:
    /// connection refused").
    pub fn describe(&self) -> String {
        crate::talos::client::probe::chain(self)
    }

    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// Whether TLS failed because the node and we do not share a CA, in either direction.
    pub fn is_tls_rejection(&self) -> bool {
        let source: &(dyn std::error::Error + 'static) = match self {
            TalosError::Connect { source, .. } => source,
            TalosError::Status { status, .. } => status.as_ref(),
            _ => return false,
        };
        chain_has_tls_rejection(source)
    }
}

/// Walks an error's source chain looking for the rustls error of a CA mismatch.
///
/// Only a CA mismatch is settled: a node certificate not valid yet (Talos issues it at boot,
/// before its clock is synced) or not naming the address dialled (a node that just changed its
/// address reissues it) comes right with time, so those stay retryable.
///
/// tonic and hyper wrap the TLS failure in several layers (transport error, hyper error,
/// `io::Error`), and a server's alert only surfaces on the first read after a TLS 1.3 handshake,
/// so the rustls error can sit at any depth. The text fallback covers layers that keep only a
/// message: h2 wraps the `io::Error` without exposing it as a source, so a server's alert
/// (rustls sends `DecryptError` or `UnknownCA`, Go `bad certificate`) is only visible as text.
fn chain_has_tls_rejection(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            if is_ca_mismatch(tls) {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                if is_ca_mismatch(tls) {
                    return true;
                }
            }
        }
        let text = e.to_string();
        if [
            "UnknownIssuer",
            "UnknownCA",
            "BadCertificate",
            "BadSignature",
            "unknown ca",
            "bad certificate",
            "fatal alert: DecryptError",
            "fatal alert: CertificateUnknown",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

fn is_ca_mismatch(err: &rustls::Error) -> bool {
    use rustls::{AlertDescription as A, CertificateError as C};
    matches!(
        err,
        rustls::Error::InvalidCertificate(
            C::UnknownIssuer | C::BadSignature | C::BadEncoding | C::InvalidPurpose,
        ) | rustls::Error::AlertReceived(
            A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::DecryptError,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code) -> TalosError {
        TalosError::Status {
            rpc: "Bootstrap",
            code,
            status: Box::new(tonic::Status::new(code, "x")),
        }
    }

    #[test]
    fn invalid_argument_is_final_and_not_ready_is_retryable() {
        assert_eq!(
            status(tonic::Code::InvalidArgument).class(),
            ErrorClass::Final
        );
        assert_eq!(
            status(tonic::Code::FailedPrecondition).class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            status(tonic::Code::Unavailable).class(),
            ErrorClass::Retryable
        );
    }

    #[test]
    fn a_config_or_upgrade_talos_refuses_for_good_is_final_though_unknown() {
        let unknown = |text: &str| TalosError::Status {
            rpc: "Upgrade",
            code: tonic::Code::Unknown,
            status: Box::new(tonic::Status::unknown(text)),
        };
        for text in [
            "failed to parse config: unknown keys found during decoding",
            "error validating installer image \"x:v1.13.0\": host version 1.10.4 is too old to upgrade to Talos 1.13.0",
            "error validating etcd for upgrade: etcd member count(2) is insufficient to maintain quorum if upgrade commences",
            "error validating etcd for upgrade: etcd member 00000000000000ab is not started, all members must be running to perform an upgrade",
            "error validating etcd for upgrade: etcd member 00000000000000ab is not healthy; all members must be healthy to perform an upgrade: context deadline exceeded",
        ] {
            assert_eq!(unknown(text).class(), ErrorClass::Final, "{text}");
        }
        let text = "failed to acquire upgrade mutex: context deadline exceeded";
        assert_eq!(unknown(text).class(), ErrorClass::Retryable, "{text}");
    }

    #[test]
    fn an_unknown_ca_alert_inside_an_io_error_means_a_foreign_cluster() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        let status = tonic::Status::from_error(Box::new(io));
        let err = TalosError::Status {
            rpc: "Version",
            code: status.code(),
            status: Box::new(status),
        };
        assert_eq!(err.class(), ErrorClass::ForeignCluster);
    }

    #[test]
    fn a_node_certificate_not_valid_yet_or_for_another_address_is_waited_out() {
        for refusal in [
            rustls::CertificateError::NotValidYet,
            rustls::CertificateError::NotValidForName,
        ] {
            let io = std::io::Error::other(rustls::Error::InvalidCertificate(refusal));
            let status = tonic::Status::from_error(Box::new(io));
            let err = TalosError::Status {
                rpc: "Version",
                code: status.code(),
                status: Box::new(status),
            };
            assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
        }
    }
}
