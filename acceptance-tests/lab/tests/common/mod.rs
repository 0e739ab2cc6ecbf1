//! Helpers shared by the lab's tests.
#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use castle::talos::client::{ApplyMode, ConnectOptions, Credentials, NodeClient, NodeState};
use castle_lab::talos::{Fleet, FleetOptions};

/// A fast fleet: delays at a fifth of the defaults.
pub fn fleet() -> Fleet {
    Fleet::new(FleetOptions {
        time_scale: 0.2,
        ..FleetOptions::default()
    })
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn options() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let outcome = tokio::time::timeout(limit, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Waits until `address` answers mTLS with `credentials`.
pub async fn wait_configured(address: IpAddr, credentials: &Credentials) -> NodeClient {
    wait_for(
        "the node to come back with mTLS",
        Duration::from_secs(15),
        || async {
            NodeClient::connect(address, credentials, &options())
                .await
                .ok()
        },
    )
    .await
}

/// Waits until `address` answers the maintenance API (no client certificate).
pub async fn wait_maintenance(address: IpAddr) -> NodeClient {
    wait_for("maintenance API", Duration::from_secs(5), || async {
        NodeClient::connect_insecure(address, &options()).await.ok()
    })
    .await
}

/// Configures the node at `address` as castle does: `config` applied in maintenance mode, then
/// the node back from its install with mTLS for `credentials`.
pub async fn configure(address: IpAddr, config: &str, credentials: &Credentials) -> NodeClient {
    wait_maintenance(address)
        .await
        .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap();
    wait_configured(address, credentials).await
}

/// Waits until `probe` says `expected`.
pub async fn wait_state(address: IpAddr, credentials: &Credentials, expected: NodeState) {
    wait_for(
        &format!("{address} to be {expected:?}"),
        Duration::from_secs(15),
        || {
            let expected = expected.clone();
            async move {
                let state = castle::talos::client::probe(address, credentials, &options()).await;
                if state != expected {
                    eprintln!("{address}: {state:?}");
                }
                (state == expected).then_some(())
            }
        },
    )
    .await
}
