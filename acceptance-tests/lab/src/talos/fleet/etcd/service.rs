//! The etcd service of one control plane: a real `etcd` process on the node's address, started
//! the way Talos's etcd service starts it, restarted when it exits, and watched for health.
//!
//! Talos: `internal/app/machined/pkg/system/services/etcd.go` (v1.12.0): `argsForControlPlane`
//! (a new cluster when bootstrapped, `existing` when joining, nothing when the data directory
//! holds a member already), `buildInitialCluster`/`addMember` (remove a member with the same
//! name, `MemberAddAsLearner`, retried every few seconds), `promoteMember` (retried until the
//! learner caught up), `Runner` (restarted forever), `HealthFunc` (`ValidateQuorum`); and
//! `internal/app/machined/pkg/controllers/etcd/advertised_peer.go` (v1.12.0): once the local
//! etcd is healthy, its member's peer URLs are updated (`MemberUpdate`) to the address it
//! advertises now, so a member whose machine came back at another address follows it without
//! leaving the cluster.
//!
//! Stopping it: a graceful stop (reboot, shutdown, reset, leave, bootstrap) first resigns the
//! node's VIP election (see `vip.rs`), then sends etcd SIGTERM and SIGKILL only if it is still
//! there after the grace period (Talos: `internal/app/machined/pkg/system/runner/containerd/
//! containerd.go` (v1.12.0) `Run` on stop: SIGTERM, then SIGKILL after
//! `GracefulShutdownTimeout`, 10 s by default in `runner/runner.go`, which `services/etcd.go`
//! does not change). A hard power-off kills it at once, with nothing resigned.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use super::client::{peer_url, EtcdClient, EtcdError, Member, CLIENT_PORT, PEER_PORT};
use super::vip::Campaign;
use crate::talos::Fleet;

/// How often a running etcd is checked (quorum read, member list, promotion).
const HEALTH_PERIOD: Duration = Duration::from_millis(250);
/// Pause between two join attempts (Talos: 3 s ± 1 s).
const JOIN_RETRY: Duration = Duration::from_millis(500);
/// Pause before a process that exited is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(300);

/// Runs `etcd` with the arguments after it. A line on its standard input sends etcd SIGTERM
/// (a graceful stop); the end of its standard input sends SIGKILL: when the lab drops the pipe
/// (a hard power-off, the grace of a graceful stop over) or dies, even by SIGKILL, its etcd
/// processes go with it. No orphan survives the lab.
const WRAPPER: &str = r#"exec 3<&0; "$@" </dev/null & p=$!; { read _ <&3 && { kill -TERM $p 2>/dev/null; read _ <&3; }; kill -9 $p 2>/dev/null; } & wait $p"#;

/// What the fleet asks of a running service.
pub(crate) enum Order {
    /// Resign the VIP election for this boot (the kubelet lifecycle is torn down); answered
    /// once done.
    Resign(oneshot::Sender<()>),
    /// Stop gracefully: resign, SIGTERM, SIGKILL after `grace`.
    Stop { grace: Duration },
}

/// What the service needs to start etcd on one node.
pub(crate) struct Spec {
    /// This service's identity in its reports.
    pub(crate) id: u64,
    pub(crate) binary: PathBuf,
    pub(crate) address: IpAddr,
    /// Member name: the node's hostname.
    pub(crate) name: String,
    /// The node's disk: `etcd/` (data), `pki/`, `etcd.log`.
    pub(crate) disk: PathBuf,
    pub(crate) client: EtcdClient,
    /// Start a new one-member cluster (Bootstrap) rather than joining one.
    pub(crate) bootstrap: bool,
    /// The VIP this control plane campaigns for, if any, and its session's lease TTL.
    pub(crate) vip: Option<(IpAddr, Duration)>,
}

impl Spec {
    pub(crate) fn data_dir(disk: &Path) -> PathBuf {
        disk.join("etcd")
    }
}

/// How this start of etcd finds its cluster.
enum Start {
    /// The data directory holds a member: etcd ignores the initial cluster.
    Existing,
    /// Bootstrap: a new cluster of this one member.
    New,
    /// Joined as a learner with this ID; the initial cluster is the member list after the add.
    Join { initial: String, learner: u64 },
}

/// The service's life on one boot of the node: find the cluster once (Talos's `PreFunc`), then
/// run etcd with those arguments forever, reporting health to the fleet, until `orders` says
/// stop. Aborted on a hard power-off: the process dies with its pipe.
pub(crate) async fn run(fleet: Fleet, spec: Spec, mut orders: mpsc::UnboundedReceiver<Order>) {
    let data = Spec::data_dir(&spec.disk);
    let start = loop {
        if dir_has_entries(&data) {
            break Start::Existing;
        }
        if spec.bootstrap {
            break Start::New;
        }
        match join(&fleet, &spec).await {
            Ok(start) => break start,
            Err(e) => {
                tracing::debug!(address = %spec.address, "etcd is waiting to join the cluster: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(JOIN_RETRY) => {}
                    // Not started yet: nothing to resign or terminate.
                    order = orders.recv() => match order {
                        Some(Order::Resign(done)) => { let _ = done.send(()); }
                        Some(Order::Stop { .. }) | None => return,
                    },
                }
            }
        }
    };
    let mut learner = match &start {
        Start::Join { learner, .. } => Some(*learner),
        _ => None,
    };
    let mut campaign = spec
        .vip
        .map(|(vip, ttl)| Campaign::new(vip, spec.name.clone(), ttl));
    let args = arguments(&spec, &start);
    loop {
        let (mut child, mut pipe) = match spawn(&spec, &args) {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(address = %spec.address, "unable to start etcd: {e}");
                tokio::time::sleep(RESTART_PAUSE).await;
                continue;
            }
        };
        fleet.etcd_started(spec.address, spec.id);
        loop {
            tokio::select! {
                _ = child.wait() => break,
                _ = tokio::time::sleep(HEALTH_PERIOD) => {
                    check(&fleet, &spec, &mut learner, campaign.as_mut()).await;
                }
                order = orders.recv() => match order {
                    Some(Order::Resign(done)) => {
                        if let Some(campaign) = campaign.as_mut() {
                            campaign.resign(&spec.client, spec.address).await;
                            fleet.vip_leader(spec.address, spec.id, false);
                        }
                        let _ = done.send(());
                    }
                    Some(Order::Stop { grace }) => {
                        // The fleet forgot this service's reports already.
                        if let Some(campaign) = campaign.as_mut() {
                            campaign.resign(&spec.client, spec.address).await;
                        }
                        terminate(&fleet, spec.address, &mut child, &mut pipe, grace).await;
                        return;
                    }
                    // The fleet dropped the service without a word: as a hard stop.
                    None => return,
                },
            }
        }
        drop(pipe);
        if let Some(campaign) = campaign.as_mut() {
            campaign.lost();
        }
        fleet.etcd_stopped(spec.address, spec.id);
        tokio::time::sleep(RESTART_PAUSE).await;
    }
}

/// SIGTERM, then SIGKILL if etcd is still there after `grace`; the lab's own shutdown cuts the
/// grace short.
async fn terminate(
    fleet: &Fleet,
    address: IpAddr,
    child: &mut Child,
    pipe: &mut ChildStdin,
    grace: Duration,
) {
    let _ = pipe.write_all(b"term\n").await;
    let _ = pipe.flush().await;
    let mut lab_stops = fleet.inner.shutdown.subscribe();
    tokio::select! {
        _ = child.wait() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::info!(%address, "etcd did not stop within its grace period: SIGKILL");
        }
        _ = lab_stops.wait_for(|stopped| *stopped) => {}
    }
}

/// One health pass: quorum read and member list from the local etcd, then promotion of this
/// node's learner through the other members, then a step of the VIP campaign.
async fn check(
    fleet: &Fleet,
    spec: &Spec,
    learner: &mut Option<u64>,
    campaign: Option<&mut Campaign>,
) {
    let healthy = spec.client.quorum_read(spec.address).await.is_ok();
    let listed = spec.client.members_and_self(spec.address).await.ok();
    if let Some(id) = *learner {
        let promoted = listed
            .as_ref()
            .and_then(|(_, m)| m.iter().find(|m| m.id == id))
            .is_some_and(|m| !m.is_learner);
        if promoted || promote(fleet, spec, id).await {
            *learner = None;
        }
    }
    if healthy {
        if let Some((me, members)) = &listed {
            advertise_peer_url(spec, *me, members).await;
        }
    }
    let (me, members) = listed.map_or((None, vec![]), |(me, m)| (Some(me), m));
    fleet.etcd_health(spec.address, spec.id, healthy, me, members);
    if let Some(campaign) = campaign {
        if let Some(leads) = campaign.step(&spec.client, spec.address, healthy).await {
            fleet.vip_leader(spec.address, spec.id, leads);
        }
    }
}

/// Talos's `AdvertisedPeerController`: the local member's peer URLs are the address the node
/// advertises (its first routed address); when they differ, `MemberUpdate` through the local
/// etcd. The other members reach it at the new URL from then on.
async fn advertise_peer_url(spec: &Spec, me: u64, members: &[Member]) {
    let wanted = vec![peer_url(spec.address)];
    let Some(member) = members.iter().find(|m| m.id == me) else {
        return;
    };
    if member.peer_urls == wanted {
        return;
    }
    match spec
        .client
        .update_peer_urls(spec.address, me, &wanted)
        .await
    {
        Ok(()) => tracing::info!(address = %spec.address, "updated etcd peer URLs to {wanted:?}"),
        Err(e) => tracing::debug!(address = %spec.address, "unable to update etcd peer URLs: {e}"),
    }
}

/// Talos's `promoteMember`: `MemberPromote` through any other member; refused until the learner
/// has caught up with the leader.
async fn promote(fleet: &Fleet, spec: &Spec, id: u64) -> bool {
    for peer in fleet.etcd_endpoints(spec.address, false) {
        if spec.client.promote(peer, id).await.is_ok() {
            tracing::info!(address = %spec.address, "etcd member promoted");
            return true;
        }
    }
    false
}

/// Talos's `addMember` through the first member that answers: remove a member with this node's
/// name (a stale one from an earlier life), add this node as a learner.
async fn join(fleet: &Fleet, spec: &Spec) -> Result<Start, EtcdError> {
    let mut last = None;
    for peer in fleet.etcd_endpoints(spec.address, false) {
        match add_member(spec, peer).await {
            Ok(start) => return Ok(start),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| EtcdError::Decode("no etcd endpoint is known yet".into())))
}

async fn add_member(spec: &Spec, peer: IpAddr) -> Result<Start, EtcdError> {
    let client = &spec.client;
    for member in client.members(peer).await? {
        if member.hostname == spec.name {
            client.remove(peer, member.id).await?;
        }
    }
    let (learner, members) = client.add_learner(peer, &peer_url(spec.address)).await?;
    Ok(Start::Join {
        initial: initial_cluster(&members, learner, &spec.name),
        learner,
    })
}

/// `name=peer-url,...` of the member list, this node's entry under its own name.
fn initial_cluster(members: &[Member], me: u64, name: &str) -> String {
    members
        .iter()
        .flat_map(|m| {
            let n = if m.id == me { name } else { &m.hostname };
            m.peer_urls.iter().map(move |u| format!("{n}={u}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn arguments(spec: &Spec, start: &Start) -> Vec<String> {
    let ip = spec.address;
    let pki = spec.disk.join("pki");
    let pki = |f: &str| pki.join(f).display().to_string();
    let mut args = vec![
        format!("--name={}", spec.name),
        format!("--data-dir={}", Spec::data_dir(&spec.disk).display()),
        format!("--listen-client-urls=https://{ip}:{CLIENT_PORT}"),
        format!("--advertise-client-urls=https://{ip}:{CLIENT_PORT}"),
        format!("--listen-peer-urls=https://{ip}:{PEER_PORT}"),
        format!("--initial-advertise-peer-urls=https://{ip}:{PEER_PORT}"),
        // Mutual TLS on both ports with the cluster's etcd CA, as Talos's
        // `argsForControlPlane` sets them.
        "--client-cert-auth=true".into(),
        format!("--trusted-ca-file={}", pki("ca.crt")),
        format!("--cert-file={}", pki("etcd.crt")),
        format!("--key-file={}", pki("etcd.key")),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={}", pki("ca.crt")),
        format!("--peer-cert-file={}", pki("etcd.crt")),
        format!("--peer-key-file={}", pki("etcd.key")),
        // Lab speed: elections within a second, a small backend.
        "--heartbeat-interval=50".into(),
        "--election-timeout=750".into(),
        "--quota-backend-bytes=67108864".into(),
        "--snapshot-count=10000".into(),
        "--logger=zap".into(),
        "--log-level=warn".into(),
    ];
    match start {
        Start::Existing => {}
        Start::New => {
            args.push(format!(
                "--initial-cluster={}=https://{ip}:{PEER_PORT}",
                spec.name
            ));
            args.push("--initial-cluster-state=new".into());
        }
        Start::Join { initial, .. } => {
            args.push(format!("--initial-cluster={initial}"));
            args.push("--initial-cluster-state=existing".into());
        }
    }
    args
}

/// Starts the wrapper and etcd. The returned pipe must be held while etcd should run: tokio's
/// `Child::wait` would close a pipe left in the child.
fn spawn(spec: &Spec, args: &[String]) -> std::io::Result<(Child, ChildStdin)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.disk.join("etcd.log"))?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg("etcd-service")
        .arg(&spec.binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the etcd wrapper"))?;
    Ok((child, pipe))
}

/// Whether a directory exists and holds something (Talos checks `/var/lib/etcd` this way).
pub(crate) fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}
