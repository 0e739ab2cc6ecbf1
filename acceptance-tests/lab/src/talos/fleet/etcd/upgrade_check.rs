//! Whether etcd can lose a control plane for its upgrade, asked of the cluster's real etcd.
//!
//! Talos: internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0)
//! `Upgrade` runs, on a control plane and without `force`, `ValidateForUpgrade`
//! (internal/pkg/etcd/etcd.go): the member list; two members are refused; then each member in
//! turn must have started (a name) and answer a quorum read of the key `health` through its own
//! client URLs within `QuorumCheckTimeout` (15 s, `ValidateQuorum`). Each refusal is a plain
//! error (gRPC Unknown) "error validating etcd for upgrade: …".

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tonic::Status;

use super::client::EtcdError;
use super::Fleet;

/// Talos's `QuorumCheckTimeout`.
const QUORUM_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

fn refuse(why: String) -> Status {
    Status::unknown(format!("error validating etcd for upgrade: {why}"))
}

impl Fleet {
    /// `ValidateForUpgrade` for the control plane at `address`.
    pub(crate) async fn validate_etcd_for_upgrade(&self, address: IpAddr) -> Result<(), Status> {
        let (client, endpoints) = self.etcd_call(address, "upgrade")?;
        let mut members = None;
        let mut last = None;
        for endpoint in endpoints {
            match client.members(endpoint).await {
                Ok(list) => {
                    members = Some(list);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(members) = members else {
            return Err(refuse(
                last.map_or("no etcd endpoint answers".into(), |e| e.to_string()),
            ));
        };
        if members.len() == 2 {
            return Err(refuse(
                "etcd member count(2) is insufficient to maintain quorum if upgrade commences"
                    .into(),
            ));
        }
        for member in &members {
            if member.hostname.is_empty() {
                return Err(refuse(format!(
                    "etcd member {:016x} is not started, all members must be running to perform an upgrade",
                    member.id
                )));
            }
            let started = Instant::now();
            let health = match member.client_address() {
                Some(a) => client.quorum_read(a).await,
                None => Err(EtcdError::Decode("member without client URLs".into())),
            };
            if let Err(e) = health {
                let reason = match e {
                    // Talos's client keeps dialling until the quorum check's deadline.
                    EtcdError::Unreachable { .. } => {
                        let deadline = self.scaled(QUORUM_CHECK_TIMEOUT);
                        tokio::time::sleep(deadline.saturating_sub(started.elapsed())).await;
                        "context deadline exceeded".to_string()
                    }
                    other => other.to_string(),
                };
                return Err(refuse(format!(
                    "etcd member {:016x} is not healthy; all members must be healthy to perform an upgrade: {reason}",
                    member.id
                )));
            }
        }
        Ok(())
    }
}
