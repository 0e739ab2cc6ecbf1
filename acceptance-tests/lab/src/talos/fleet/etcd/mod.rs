//! etcd on the control planes: a real etcd per node (see `service.rs`), the VIP election held
//! on it (`vip.rs`), and the Talos API calls answered from it: Bootstrap, EtcdMemberList,
//! EtcdRemoveMemberByID, EtcdLeaveCluster, the etcd service in ServiceList.

mod client;
mod service;
mod upgrade_check;
mod vip;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::Status;

pub use client::Member;
use client::{EtcdClient, EtcdError};
use service::{dir_has_entries, Order, Spec};

/// The lease TTL of a VIP election session: `concurrency.NewSession`'s default, which Talos's
/// VIP operator keeps (Talos: controllers/network/operator/vip.go (v1.12.0); etcd:
/// client/v3/concurrency/session.go `defaultSessionTTL`). Lab-scaled.
const VIP_LEASE_TTL: Duration = Duration::from_secs(60);

/// How long a gracefully stopped etcd has between SIGTERM and SIGKILL (Talos:
/// internal/app/machined/pkg/system/runner/runner.go (v1.12.0) `GracefulShutdownTimeout`).
/// Lab-scaled.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running service of a node: its task (which owns the etcd process) and its orders.
struct Service {
    /// Tells its reports from those of a service of an earlier boot still going down.
    id: u64,
    task: JoinHandle<()>,
    orders: mpsc::UnboundedSender<Order>,
}

use super::config::{MachineConfig, MachineType};
use super::{hostname, Fleet, FleetError, Node, Phase, State};
use crate::pki::Ca;

/// The etcd of one node, as the fleet tracks it.
#[derive(Default)]
pub(crate) struct NodeEtcd {
    /// The service of this boot; it owns the etcd process.
    service: Option<Service>,
    /// The next start creates a new cluster (Bootstrap).
    bootstrap: bool,
    /// Left its cluster (EtcdLeaveCluster): the service stays stopped until the next boot.
    left: bool,
    /// The process runs.
    pub(crate) running: bool,
    /// The last quorum read answered.
    pub(crate) healthy: bool,
    /// This node's key is the oldest of the VIP election, as its own etcd says (`vip.rs`).
    pub(crate) vip_leader: bool,
    /// This node's member ID, from its own etcd.
    pub(crate) member_id: Option<u64>,
    /// The member list its etcd gave last.
    pub(crate) members: Vec<Member>,
    /// Client with a certificate of the cluster's etcd CA, made once per config.
    client: Option<(Arc<MachineConfig>, EtcdClient)>,
}

/// How the etcd of a node stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    /// Talos stops its services (reboot, shutdown, reset, leave, bootstrap): the VIP
    /// election is resigned, etcd gets SIGTERM, and SIGKILL after this grace.
    Graceful(Duration),
    /// The machine is gone at once (power cut, VM stopped or deleted, the lab quits):
    /// SIGKILL, nothing resigned, the election key stays until its lease expires.
    Hard,
}

impl NodeEtcd {
    /// The machine goes down: etcd stops; the next boot starts it again, even after a leave.
    /// A Bootstrap whose etcd has not written its data yet is lost: Talos keeps the request
    /// only in the service it loads (Talos: internal/app/machined/pkg/system/services/etcd.go
    /// (v1.12.0) `BootstrapEtcd` loads an `Etcd{Bootstrap: true}`), so the next boot waits to
    /// join, or to be bootstrapped again.
    pub(crate) fn power_down(&mut self, how: Stop) {
        self.stop(how);
        self.left = false;
        self.bootstrap = false;
    }

    /// Stops the service and forgets what it reported. A graceful stop finishes in the
    /// background (resign, SIGTERM, grace, SIGKILL).
    pub(crate) fn stop(&mut self, how: Stop) {
        if let Some(service) = self.service.take() {
            match how {
                Stop::Graceful(grace) => {
                    if service.orders.send(Order::Stop { grace }).is_err() {
                        service.task.abort();
                    }
                }
                Stop::Hard => service.task.abort(),
            }
        }
        self.running = false;
        self.healthy = false;
        self.vip_leader = false;
        self.member_id = None;
        self.members.clear();
    }

    /// Asks the service to resign the VIP election for this boot; the receiver answers once
    /// it did (or at once when no service runs).
    pub(crate) fn resign(&self) -> oneshot::Receiver<()> {
        let (done, answer) = oneshot::channel();
        match &self.service {
            Some(service) => {
                let _ = service.orders.send(Order::Resign(done));
            }
            None => {
                let _ = done.send(());
            }
        }
        answer
    }
}

/// Moves the etcd data directory of a node aside and deletes it in the background: a process
/// still dying cannot write into the next one.
pub(crate) fn wipe_etcd(disk: &Path) {
    let data = Spec::data_dir(disk);
    if !data.exists() {
        return;
    }
    let aside = disk.join(format!("etcd.wiped-{}", rand::random::<u32>()));
    if std::fs::rename(&data, &aside).is_ok() {
        std::thread::spawn(move || std::fs::remove_dir_all(aside));
    } else {
        let _ = std::fs::remove_dir_all(&data);
    }
}

fn unknown(context: &str, e: EtcdError) -> Status {
    Status::unknown(format!("{context}: {e}"))
}

impl Node {
    /// The etcd data directory is not empty (Talos reads `/var/lib/etcd`).
    pub(crate) fn etcd_data(&self) -> bool {
        dir_has_entries(&Spec::data_dir(&self.disk))
    }

    /// A client of the cluster's etcd with this node's config.
    fn etcd_client(&mut self) -> Result<EtcdClient, Status> {
        let config = self.config.clone().ok_or_else(super::no_config)?;
        if let Some((c, client)) = &self.etcd.client {
            if Arc::ptr_eq(c, &config) {
                return Ok(client.clone());
            }
        }
        let client = etcd_client(&config)
            .map_err(|e| Status::unknown(format!("error building etcd client TLS config: {e}")))?;
        self.etcd.client = Some((config, client.clone()));
        Ok(client)
    }
}

fn etcd_ca(config: &MachineConfig) -> Result<Ca, String> {
    let (Some(crt), Some(key)) = (&config.etcd_ca_crt, &config.etcd_ca_key) else {
        return Err("cluster.etcd.ca is missing from the configuration".into());
    };
    Ca::from_pem(crt, key).map_err(|e| e.to_string())
}

fn etcd_client(config: &MachineConfig) -> Result<EtcdClient, String> {
    let ca = etcd_ca(config)?;
    // Talos: the `admin` client certificate of the etcd CA (`secrets/etcd.go`).
    let (crt, key) = ca
        .issue("admin", &[], &[], &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| e.to_string())?;
    EtcdClient::new(&ca.cert_pem, &crt, &key)
}

/// Writes the node's etcd certificates (one for serving and peering, with the node's address,
/// as Talos issues `/system/secrets/etcd/{peer,server}.crt` from the etcd CA).
fn write_pki(disk: &Path, config: &MachineConfig, address: IpAddr) -> Result<(), String> {
    let ca = etcd_ca(config)?;
    let (crt, key) = ca
        // etcd checks a peer's client certificate against the connection's source address,
        // which the kernel picks as 127.0.0.1 between two loopback addresses (on a real network
        // it is the node's own address).
        .issue_peer(
            &hostname(config, address),
            &[address, IpAddr::from([127, 0, 0, 1])],
        )
        .map_err(|e| e.to_string())?;
    let pki = disk.join("pki");
    std::fs::create_dir_all(&pki).map_err(|e| e.to_string())?;
    for (file, text) in [
        ("ca.crt", &ca.cert_pem),
        ("etcd.crt", &crt),
        ("etcd.key", &key),
    ] {
        std::fs::write(pki.join(file), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl Fleet {
    /// Starts the etcd service of a settled, running control plane, unless it runs already, the
    /// node left its cluster in this boot, or the `stop_etcd` fault holds it down.
    pub(crate) fn start_etcd(&self, state: &mut State, address: IpAddr) {
        let binary = self.inner.options.etcd_binary.clone();
        let Some(node) = state.nodes.get_mut(&address) else {
            return;
        };
        let Some(config) = node.config.clone() else {
            return;
        };
        if config.machine_type != MachineType::Controlplane
            || !matches!(node.phase, Phase::Running { .. })
            || node.etcd.service.is_some()
            || node.etcd.left
            || node.faults.etcd_stopped
        {
            return;
        }
        let client = match node.etcd_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%address, "etcd cannot start: {}", e.message());
                return;
            }
        };
        if let Err(e) = write_pki(&node.disk, &config, address) {
            tracing::warn!(%address, "etcd cannot start: {e}");
            return;
        }
        // Talos runs the VIP operator when the config names a VIP; the lab does not campaign
        // for a control plane whose kube-apiserver cannot start (config::apiserver_refusal).
        let vip = config
            .vip
            .filter(|_| config.apiserver_refusal.is_none())
            .map(|vip| (vip, self.scaled(VIP_LEASE_TTL)));
        let id = rand::random();
        let spec = Spec {
            id,
            binary,
            address,
            name: hostname(&config, address),
            disk: node.disk.clone(),
            client,
            bootstrap: node.etcd.bootstrap,
            vip,
        };
        let (orders, received) = mpsc::unbounded_channel();
        node.etcd.service = Some(Service {
            id,
            task: tokio::spawn(service::run(self.clone(), spec, received)),
            orders,
        });
    }

    /// A graceful stop with the lab-scaled grace.
    pub(crate) fn graceful(&self) -> Stop {
        Stop::Graceful(self.scaled(STOP_GRACE))
    }

    /// Reported by the campaign: whether this node leads the VIP election. The VIP follows.
    pub(super) fn vip_leader(&self, address: IpAddr, service: u64, leads: bool) {
        let Ok(mut state) = self.lock() else { return };
        let Some(node) = reporting(&mut state, address, service) else {
            return;
        };
        if node.etcd.vip_leader == leads {
            return;
        }
        node.etcd.vip_leader = leads;
        self.reconcile_kube(&mut state);
    }

    /// Once a node that came up running has settled, its etcd service starts.
    pub(crate) fn after_settle(&self, address: IpAddr) {
        let fleet = self.clone();
        let settle = self.scaled(self.inner.options.settle_delay);
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            if let Ok(mut state) = fleet.lock() {
                fleet.start_etcd(&mut state, address);
            }
        });
    }

    /// Reported by the service: the process started.
    pub(super) fn etcd_started(&self, address: IpAddr, service: u64) {
        if let Ok(mut state) = self.lock() {
            if let Some(node) = reporting(&mut state, address, service) {
                node.etcd.running = true;
                // The data directory holds the member now: a later start reuses it.
                node.etcd.bootstrap = false;
            }
        }
    }

    /// Reported by the service: the process exited.
    pub(super) fn etcd_stopped(&self, address: IpAddr, service: u64) {
        self.etcd_health(address, service, false, None, Vec::new());
        if let Ok(mut state) = self.lock() {
            if let Some(node) = reporting(&mut state, address, service) {
                node.etcd.running = false;
                node.etcd.vip_leader = false;
            }
            // A VIP holder whose etcd stopped gives the VIP up.
            self.reconcile_kube(&mut state);
        }
    }

    /// Reported by the service: the result of a health pass. The Kubernetes API follows etcd
    /// health.
    pub(super) fn etcd_health(
        &self,
        address: IpAddr,
        service: u64,
        healthy: bool,
        member_id: Option<u64>,
        members: Vec<Member>,
    ) {
        let Ok(mut state) = self.lock() else { return };
        let Some(node) = reporting(&mut state, address, service) else {
            return;
        };
        let changed = node.etcd.healthy != healthy;
        node.etcd.healthy = healthy;
        // A learner has an ID before it is healthy; a member whose etcd stopped answering
        // keeps the ID it had.
        if member_id.is_some() {
            node.etcd.member_id = member_id;
        }
        node.etcd.members = members;
        if changed {
            self.reconcile_kube(&mut state);
        }
    }

    /// Addresses of the etcd client endpoints of the node's cluster, as Talos's
    /// `NewClientFromControlPlaneIPs` knows them: the control planes whose etcd is healthy
    /// (they run the API server), the node itself first when `local`.
    pub(super) fn etcd_endpoints(&self, address: IpAddr, local: bool) -> Vec<IpAddr> {
        self.lock()
            .map(|state| endpoints(&state, address, local))
            .unwrap_or_default()
    }

    /// The Bootstrap call.
    ///
    /// Talos: `internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go` (v1.12.0)
    /// `Bootstrap`: refused until the node is up, on workers, and with `AlreadyExists` only
    /// when *this node's* data directory is not empty; then `BootstrapEtcd`
    /// (`services/etcd.go`) stops the joining etcd and starts a new one-member cluster. A
    /// control plane still waiting to join therefore starts a second cluster.
    pub(crate) fn bootstrap(&self, address: IpAddr) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        let node = state.serving(address)?;
        if !self.settled(node) {
            return Err(Status::failed_precondition(
                "bootstrap is not available yet",
            ));
        }
        if state.config_of(address)?.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "bootstrap can only be performed on a control plane node",
            ));
        }
        let node = state.serving_mut(address)?;
        if node.etcd_data() {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        // Talos: `BootstrapEtcd` stops the waiting etcd service (a graceful stop).
        node.etcd.stop(self.graceful());
        node.etcd.bootstrap = true;
        node.etcd.left = false;
        if let Some(off) = node.faults.power_cycle_in_bootstrap.take() {
            // The power goes before etcd writes its data; the answer gets out first.
            let fleet = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = fleet.power_cycle(address, off);
            });
            return Ok(());
        }
        self.start_etcd(&mut state, address);
        Ok(())
    }

    /// The client and endpoints for an etcd call on the node at `address`; Talos refuses etcd
    /// calls on workers (`checkControlplane`).
    fn etcd_call(&self, address: IpAddr, api: &str) -> Result<(EtcdClient, Vec<IpAddr>), Status> {
        let client = {
            let mut state = self.lock_api()?;
            if state.config_of(address)?.machine_type != MachineType::Controlplane {
                return Err(Status::unimplemented(format!(
                    "{api} is only available on control plane nodes"
                )));
            }
            state.serving_mut(address)?.etcd_client()?
        };
        Ok((client, self.etcd_endpoints(address, true)))
    }

    /// The EtcdMemberList call, answered by the first etcd of the cluster that answers.
    ///
    /// Talos: `v1alpha1_server.go` (v1.12.0) `EtcdMemberList`.
    pub(crate) async fn etcd_members(&self, address: IpAddr) -> Result<Vec<Member>, Status> {
        let (client, endpoints) = self.etcd_call(address, "member list")?;
        let mut last = None;
        for endpoint in endpoints {
            match client.members(endpoint).await {
                Ok(members) => return Ok(members),
                Err(e @ EtcdError::Unreachable { .. }) => last = Some(e),
                Err(e) => return Err(Status::unknown(e.to_string())),
            }
        }
        Err(unreachable(last))
    }

    /// The EtcdRemoveMemberByID call.
    ///
    /// Talos: `v1alpha1_server.go` (v1.12.0) `EtcdRemoveMemberByID`: NotFound when etcd does
    /// not know the member.
    pub(crate) async fn remove_etcd_member(&self, address: IpAddr, id: u64) -> Result<(), Status> {
        let (client, endpoints) = self.etcd_call(address, "etcd remove member")?;
        match remove_member(&client, &endpoints, id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_member_not_found() => Err(Status::not_found(e.to_string())),
            Err(e) => Err(unknown("failed to remove member", e)),
        }
    }

    /// The EtcdLeaveCluster call: the node removes its own member, stops etcd and wipes its
    /// data directory.
    ///
    /// Talos: `internal/pkg/etcd/etcd.go` (v1.12.0) `LeaveCluster`.
    pub(crate) async fn leave_etcd(&self, address: IpAddr) -> Result<(), Status> {
        let (client, endpoints) = self.etcd_call(address, "etcd leave")?;
        let (known, running) = {
            let state = self.lock_api()?;
            let etcd = &state.serving(address)?.etcd;
            (etcd.member_id, etcd.service.is_some())
        };
        let member_id = match known {
            Some(id) => Some(id),
            None if running => member_by_peer_url(&client, &endpoints, address).await,
            None => None,
        }
        .ok_or_else(|| Status::unknown("failed to leave cluster: etcd is not running"))?;
        remove_patiently(&client, &endpoints, member_id)
            .await
            .map_err(|e| unknown("failed to leave cluster", e))?;
        let mut state = self.lock_api()?;
        let grace = self.graceful();
        let node = state.serving_mut(address)?;
        // Talos stops the service gracefully; the VIP operator's resign goes through the
        // local etcd, whose member is gone: a key it held stays until its lease expires.
        node.etcd.stop(grace);
        node.etcd.left = true;
        wipe_etcd(&node.disk);
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// A graceful reset leaves etcd on its way down (Talos `LeaveCluster` in the reset
    /// sequence, retried while the cluster is unhealthy), then runs `then`. Returns false when
    /// the node is no member (`then` is not run).
    pub(crate) fn leave_etcd_then(
        &self,
        state: &mut State,
        address: IpAddr,
        then: impl FnOnce(&Fleet, &mut State) + Send + 'static,
    ) -> bool {
        let Some(node) = state.nodes.get_mut(&address) else {
            return false;
        };
        if node.etcd.service.is_none() {
            return false;
        }
        let known = node.etcd.member_id;
        let Ok(client) = node.etcd_client() else {
            return false;
        };
        // Talos's reset drains and removes the pods before it leaves etcd: the kubelet
        // lifecycle's teardown makes the VIP operator resign while etcd still serves.
        let resigned = node.etcd.resign();
        let endpoints = endpoints(state, address, true);
        let fleet = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), resigned).await;
            // A member that joined a moment ago may not have reported its ID yet: its peer URL
            // names it in the others' lists.
            let id = match known {
                Some(id) => Some(id),
                None => member_by_peer_url(&client, &endpoints, address).await,
            };
            if let Some(id) = id {
                if let Err(e) = remove_patiently(&client, &endpoints, id).await {
                    tracing::warn!(%address, "leaving etcd in a graceful reset failed: {e}");
                }
            }
            if let Ok(mut state) = fleet.lock() {
                then(&fleet, &mut state);
            }
        });
        true
    }

    /// The `lose_etcd_member` fault: the node's member is removed from its cluster behind its
    /// back (through another member), and its etcd stops for good.
    pub(crate) fn lose_etcd_member(
        &self,
        state: &mut State,
        address: IpAddr,
    ) -> Result<(), FleetError> {
        let node = state.node_mut(address)?;
        let Some(id) = node.etcd.member_id else {
            return Err(FleetError::Fault(format!(
                "{address} is not an etcd member"
            )));
        };
        let client = node
            .etcd_client()
            .map_err(|e| FleetError::Fault(e.message().to_string()))?;
        let mut endpoints = endpoints(state, address, false);
        endpoints.push(address);
        tokio::spawn(async move {
            let _ = remove_patiently(&client, &endpoints, id).await;
        });
        Ok(())
    }

    /// Whether the etcd service of this node is running, and healthy.
    pub(crate) fn etcd_service(&self, state: &State, address: IpAddr) -> (bool, bool) {
        state
            .nodes
            .get(&address)
            .map_or((false, false), |n| (n.etcd.running, n.etcd.healthy))
    }
}

/// The node whose current etcd service is `service`: a service stopped meanwhile (still
/// going down gracefully) reports nothing.
fn reporting(state: &mut State, address: IpAddr, service: u64) -> Option<&mut Node> {
    state
        .nodes
        .get_mut(&address)
        .filter(|n| n.etcd.service.as_ref().is_some_and(|s| s.id == service))
}

/// The etcd endpoints of the node's cluster as Talos knows them (see
/// [`Fleet::etcd_endpoints`]).
fn endpoints(state: &State, address: IpAddr, local: bool) -> Vec<IpAddr> {
    let Some(cluster_id) = state
        .nodes
        .get(&address)
        .and_then(|n| n.config.as_ref())
        .map(|c| c.cluster_id.clone())
    else {
        return vec![];
    };
    let mut endpoints: Vec<IpAddr> = Vec::new();
    if local && state.nodes.get(&address).is_some_and(|n| n.etcd.healthy) {
        endpoints.push(address);
    }
    endpoints.extend(
        state
            .nodes
            .iter()
            .filter(|(a, n)| {
                **a != address
                    && n.etcd.healthy
                    && n.config
                        .as_ref()
                        .is_some_and(|c| c.cluster_id == cluster_id)
            })
            .map(|(a, _)| *a),
    );
    endpoints
}

/// The ID of the member whose peer URL is the node's, from the first list that answers.
async fn member_by_peer_url(
    client: &EtcdClient,
    endpoints: &[IpAddr],
    address: IpAddr,
) -> Option<u64> {
    let url = client::peer_url(address);
    for endpoint in endpoints {
        if let Ok(members) = client.members(*endpoint).await {
            return members
                .iter()
                .find(|m| m.peer_urls.contains(&url))
                .map(|m| m.id);
        }
    }
    None
}

/// `MemberRemove` through the first endpoint that answers.
async fn remove_member(
    client: &EtcdClient,
    endpoints: &[IpAddr],
    id: u64,
) -> Result<(), EtcdError> {
    let mut last = None;
    for endpoint in endpoints {
        match client.remove(*endpoint, id).await {
            Err(e @ EtcdError::Unreachable { .. }) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| EtcdError::Decode("no etcd endpoint is known".into())))
}

/// Talos's `LeaveCluster` removal: retried while etcd refuses with "unhealthy cluster" (a
/// member connected for less than etcd's health interval) or "server stopped", for five
/// minutes in Talos, half a minute in the lab; a member already gone is done.
async fn remove_patiently(
    client: &EtcdClient,
    endpoints: &[IpAddr],
    id: u64,
) -> Result<(), EtcdError> {
    let mut attempts = 0;
    loop {
        match remove_member(client, endpoints, id).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_member_not_found() => return Ok(()),
            Err(e) if e.is_transient() && attempts < 60 => attempts += 1,
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn unreachable(last: Option<EtcdError>) -> Status {
    match last {
        Some(e) => Status::unknown(e.to_string()),
        None => Status::unknown("no etcd endpoint answers"),
    }
}

/// The node disks of the fleet.
pub(crate) fn node_disk(disks: &Path, address: IpAddr) -> PathBuf {
    disks.join(address.to_string())
}
