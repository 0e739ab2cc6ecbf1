//! The VIP election of one control plane, held on the cluster's real etcd.
//!
//! Talos: `internal/app/machined/pkg/controllers/network/operator/vip.go` (v1.12.0) `campaign`:
//! once the local etcd is running and healthy, the operator opens a concurrency session on the
//! local etcd (`concurrency.NewSession`: a lease of the default 60 s TTL, kept alive while the
//! session lives), resigns an election it still leads from before (its hostname on the oldest
//! key), and campaigns on `talos:v1:vip:election:<vip>` (`constants.EtcdRootTalosKey`; the key
//! is `<prefix>/<lease ID in hex>` with the hostname as value). It holds the VIP while its key
//! is the oldest. Going down gracefully it resigns (deletes its key) and closes the session
//! (revokes the lease), both through its own etcd; a machine that dies leaves its key until its
//! lease expires, and only then does the next candidate lead. The session also ends when no
//! keep-alive succeeds for a TTL (clientv3's keep-alive deadline), e.g. without quorum.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{EtcdClient, EtcdError};

/// Talos's election key prefix for a VIP (`vip.etcdElectionKey`).
pub(crate) fn election_prefix(vip: IpAddr) -> String {
    format!("talos:v1:vip:election:{vip}")
}

/// A campaign for the VIP during one run of the local etcd.
pub(crate) struct Campaign {
    vip: IpAddr,
    /// This node's hostname: the value of its key.
    hostname: String,
    /// The session's lease TTL (Talos: `concurrency` default, 60 s, lab-scaled).
    ttl: Duration,
    session: Option<Session>,
    /// Resigned for this boot (the kubelet lifecycle is torn down): no new campaign.
    resigned: bool,
}

struct Session {
    lease: i64,
    key: String,
    /// The last keep-alive etcd accepted.
    kept: Instant,
    /// The next keep-alive is due (clientv3 renews at a third of the TTL).
    renew_at: Instant,
}

impl Campaign {
    pub(crate) fn new(vip: IpAddr, hostname: String, ttl: Duration) -> Self {
        Campaign {
            vip,
            hostname,
            ttl,
            session: None,
            resigned: false,
        }
    }

    /// One step, after a health pass of the local etcd at `local`: open the session and
    /// campaign once etcd is healthy, keep the lease alive, and say whether this node leads.
    /// `None`: nothing new learnt (etcd did not answer), the node keeps what it had.
    pub(crate) async fn step(
        &mut self,
        client: &EtcdClient,
        local: IpAddr,
        healthy: bool,
    ) -> Option<bool> {
        if self.resigned {
            return Some(false);
        }
        if self.session.is_none() {
            if !healthy {
                return None;
            }
            match self.open(client, local).await {
                Ok(session) => self.session = Some(session),
                Err(e) => {
                    tracing::debug!(address = %local, "VIP campaign failure: {e}");
                    return Some(false);
                }
            }
        }
        let session = self.session.as_mut()?;
        if Instant::now() >= session.renew_at {
            match client.keep_alive(local, session.lease).await {
                Ok(ttl) if ttl > 0 => {
                    session.kept = Instant::now();
                    session.renew_at = session.kept + self.ttl / 3;
                }
                // The lease is gone: the session is over, a new one campaigns again.
                Ok(_) => return self.end(local, "its etcd lease expired"),
                Err(EtcdError::Server { code: 5, .. }) => {
                    return self.end(local, "its etcd lease expired")
                }
                Err(_) if session.kept.elapsed() >= self.ttl => {
                    return self.end(local, "no keep-alive for a lease TTL")
                }
                Err(_) => {}
            }
        }
        let session = self.session.as_ref()?;
        match client
            .oldest_under(local, &format!("{}/", election_prefix(self.vip)))
            .await
        {
            Ok(leader) => Some(leader.is_some_and(|(key, _)| key == session.key)),
            Err(_) => None,
        }
    }

    /// A new session: a lease, a previous lead of ours resigned, our key put.
    async fn open(&self, client: &EtcdClient, local: IpAddr) -> Result<Session, EtcdError> {
        let ttl = self.ttl.as_secs_f64().ceil().max(1.0) as i64;
        let lease = client.grant_lease(local, ttl).await?;
        let prefix = format!("{}/", election_prefix(self.vip));
        // Still the leader of an election from before (a reboot shorter than the lease):
        // resign it to force a new election.
        if let Some((key, holder)) = client.oldest_under(local, &prefix).await? {
            if holder == self.hostname {
                tracing::info!(address = %local, "resigning from previous VIP election");
                client.delete(local, &key).await?;
            }
        }
        let key = format!("{prefix}{lease:x}");
        client
            .put_if_absent(local, &key, &self.hostname, lease)
            .await?;
        let now = Instant::now();
        Ok(Session {
            lease,
            key,
            kept: now,
            renew_at: now + self.ttl / 3,
        })
    }

    fn end(&mut self, local: IpAddr, why: &str) -> Option<bool> {
        tracing::info!(address = %local, "VIP election session closed: {why}");
        self.session = None;
        Some(false)
    }

    /// The local etcd stopped: the session cannot be closed; its key stays until its lease
    /// expires (or this node resigns it when it campaigns again).
    pub(crate) fn lost(&mut self) {
        self.session = None;
    }

    /// Graceful end (kubelet lifecycle torn down, etcd stopping): resign and close the session
    /// through the local etcd. When that etcd no longer serves (its member was removed), the
    /// key stays until the lease expires, as on Talos.
    pub(crate) async fn resign(&mut self, client: &EtcdClient, local: IpAddr) {
        self.resigned = true;
        let Some(session) = self.session.take() else {
            return;
        };
        let resigned = client.delete(local, &session.key).await;
        let closed = client.revoke_lease(local, session.lease).await;
        match (resigned, closed) {
            (Ok(()), Ok(())) => tracing::info!(address = %local, "resigned from the VIP election"),
            (Err(e), _) | (_, Err(e)) => tracing::info!(
                address = %local,
                "unable to resign from the VIP election, its key stays until its lease expires: {e}"
            ),
        }
    }
}
