//! Telling apart the states a node address can be in, before deciding what to do with it.

use std::net::IpAddr;
use std::time::Duration;

use super::connect::ConnectOptions;
use super::error::{ErrorClass, TalosError};
use super::node::NodeClient;
use super::tls::Credentials;

/// What answers at a node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// A fresh node in maintenance mode, waiting for a config.
    Maintenance,
    /// A configured node that accepts our credentials; carries its Talos version tag.
    Configured {
        /// `Version.version.tag`, e.g. `v1.12.0`.
        talos_version: String,
    },
    /// A configured node of another cluster: TLS fails between its OS CA and ours.
    ForeignCluster,
    /// Nothing usable answers (down, rebooting, or hanging).
    Unreachable {
        /// The last failure, for the diagnostic.
        reason: String,
    },
}

/// Default bound of each probe step: a node on the LAN answers a handshake in milliseconds,
/// so a few seconds only cover a busy node without delaying the caller's own loop much.
pub const PROBE_STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes `address`: the maintenance probe first (insecure `Disks`), then `Version` over mTLS
/// with `credentials`. Each step is bounded by `options.connect_timeout` for dialling and by
/// [`PROBE_STEP_TIMEOUT`] for the call, so a hanging node is reported as unreachable.
pub async fn probe(
    address: IpAddr,
    credentials: &Credentials,
    options: &ConnectOptions,
) -> NodeState {
    let maintenance = async {
        let client = NodeClient::connect_insecure(address, options).await?;
        client.disks().await
    };
    let first_failure =
        match tokio::time::timeout(PROBE_STEP_TIMEOUT + options.connect_timeout, maintenance).await
        {
            Ok(Ok(_)) => return NodeState::Maintenance,
            Ok(Err(e)) => e,
            Err(_) => {
                return NodeState::Unreachable {
                    reason: "maintenance probe timed out".into(),
                }
            }
        };
    // Nothing listens or TCP/TLS could not even start: no point in the mTLS attempt.
    if let TalosError::Connect { source, .. } = &first_failure {
        if !source_mentions_tls(source) {
            return NodeState::Unreachable {
                reason: format!("{first_failure}: {}", chain(source)),
            };
        }
    }
    let configured = async {
        let client = NodeClient::connect(address, credentials, options).await?;
        client.version().await
    };
    match tokio::time::timeout(PROBE_STEP_TIMEOUT + options.connect_timeout, configured).await {
        Ok(Ok(version)) => NodeState::Configured {
            talos_version: version.version.map(|v| v.tag).unwrap_or_default(),
        },
        Ok(Err(e)) if e.class() == ErrorClass::ForeignCluster => NodeState::ForeignCluster,
        Ok(Err(e)) => NodeState::Unreachable { reason: chain(&e) },
        Err(_) => NodeState::Unreachable {
            reason: "mTLS probe timed out".into(),
        },
    }
}

/// The error and all its sources on one line. Layers that already quote their source's text
/// (io errors wrapped by hyper and tonic do) are not repeated.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cur = e.source();
    }
    line
}

fn source_mentions_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    // A refused or timed-out TCP connect reads as an io error of those kinds; anything else
    // got as far as TLS.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return !matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            );
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod chain_tests {
    use super::chain;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let err = Wrapper(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(chain(&err), "transport error: Connection refused");
    }
}
