//! The fleet: every emulated node, the clusters their configs form, and the state machine that
//! moves a node between maintenance, rebooting and running.
//!
//! All state sits behind one `std::sync::Mutex` that is never held across an `.await`; each
//! node has a task (`server::node_loop`) that serves whatever the state says and is woken
//! through a `watch` channel when the state changes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{self, MachineConfig, MachineType};
use super::server;
use crate::kubernetes::{self, KubeTls, NodeSource, NodeView};
use crate::pki::{self, Ca};

/// Timings and ports of the fleet. Delays are multiplied by `time_scale`.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Port of the Talos API on every node address.
    pub talos_port: u16,
    /// Port of the Kubernetes API on the VIP and control-plane addresses.
    pub kube_port: u16,
    /// Factor applied to every delay (0.1 makes the lab ten times faster).
    pub time_scale: f64,
    /// Unreachable time after a config is applied in maintenance mode (install and reboot).
    pub install_delay: Duration,
    /// Unreachable time of a reboot, reset or upgrade.
    pub reboot_delay: Duration,
    /// Time after coming back up before bootstrap is possible and etcd joins.
    pub settle_delay: Duration,
    /// Time after registration before a Kubernetes node is Ready.
    pub kube_ready_delay: Duration,
    /// Time from power-on to the Talos API answering (firmware, kernel, machined), for nodes
    /// started with [`Fleet::add_booting_node`] or [`Fleet::power_on`].
    pub boot_delay: Duration,
    /// Talos version of nodes added without one.
    pub default_talos_version: String,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            talos_port: 50000,
            kube_port: 6443,
            time_scale: 1.0,
            install_delay: Duration::from_millis(1500),
            reboot_delay: Duration::from_millis(1000),
            settle_delay: Duration::from_millis(300),
            kube_ready_delay: Duration::from_millis(1000),
            boot_delay: Duration::from_millis(2000),
            default_talos_version: "v1.12.0".into(),
        }
    }
}

/// A failure of a fleet operation (admin API, Rust API).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// `add_node` on an address that already has a node.
    #[error("node {0} already exists")]
    NodeExists(IpAddr),
    /// No node at this address.
    #[error("no node at {0}")]
    NoSuchNode(IpAddr),
    /// The emulator has no schema for this Talos version.
    #[error("unsupported Talos version {0:?} (schemas: v1.10 to v1.13)")]
    UnsupportedVersion(String),
    /// A certificate could not be made.
    #[error("certificate generation failed")]
    Pki(#[from] pki::PkiError),
    /// The fleet's lock was poisoned by a panic elsewhere.
    #[error("fleet state poisoned")]
    Poisoned,
    /// The fault needs a node in another state (e.g. `lose_etcd_member` on a non-member).
    #[error("{0}")]
    Fault(String),
    /// `power_on` of a node that is not powered off.
    #[error("node {0} is already powered on")]
    PoweredOn(IpAddr),
}

/// Faults to inject into one node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    /// Accept TCP connections and never answer (not even the TLS handshake).
    pub never_answer: bool,
    /// Accept TCP connections and close them at once.
    pub drop_connections: bool,
    /// The next ApplyConfiguration answers InvalidArgument with this reason.
    pub reject_next_config: Option<String>,
    /// Replaces install and reboot delays (before time scaling).
    #[serde(serialize_with = "ser_duration_ms")]
    pub slow_reboot: Option<Duration>,
}

fn ser_duration_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_millis() as u64).serialize(s)
}

/// One fault to inject, as the admin API names them.
#[derive(Debug, Clone)]
pub enum Fault {
    /// See [`Faults::never_answer`].
    NeverAnswer,
    /// See [`Faults::drop_connections`].
    DropConnections,
    /// See [`Faults::reject_next_config`].
    RejectNextConfig(String),
    /// See [`Faults::slow_reboot`].
    SlowReboot(Duration),
    /// The node holds the state of another cluster: configured, running, with an OS CA nobody
    /// else has, so it rejects our client certificates (the "ghost").
    ForeignCluster,
    /// The node's etcd member disappears from its cluster's member list.
    LoseEtcdMember,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum After {
    Maintenance,
    Running,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// The machine is off: nothing listens, its disk (config, etcd data) is kept.
    PoweredOff,
    Maintenance,
    Rebooting {
        until: Instant,
        then: After,
    },
    Running {
        since: Instant,
        wall: SystemTime,
    },
}

pub(crate) struct Node {
    pub(crate) talos_version: String,
    pub(crate) phase: Phase,
    pub(crate) config: Option<Arc<MachineConfig>>,
    pub(crate) faults: Faults,
    /// Whether the etcd data directory is non-empty (bootstrapped or joined).
    pub(crate) etcd_data: bool,
    /// Version to run after the pending reboot (upgrade).
    pub(crate) pending_version: Option<String>,
    /// Installer images written to disk, oldest first (install, then each upgrade).
    pub(crate) installed_images: Vec<String>,
    wake: watch::Sender<u64>,
    task: Option<JoinHandle<()>>,
}

/// One etcd member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Node address.
    pub address: IpAddr,
    /// Node hostname.
    pub hostname: String,
}

#[derive(Default)]
pub(crate) struct Cluster {
    pub(crate) bootstrapped: bool,
    pub(crate) members: Vec<Member>,
    /// Kubernetes nodes deleted through the API, with the boot they were deleted in: they come
    /// back when the node boots again (kubelet re-registers).
    deleted: HashMap<String, SystemTime>,
    kube: Option<KubeServing>,
}

struct KubeServing {
    tls: Arc<RwLock<Arc<KubeTls>>>,
    sans: Vec<IpAddr>,
    listeners: HashMap<IpAddr, JoinHandle<()>>,
}

pub(crate) struct State {
    pub(crate) nodes: BTreeMap<IpAddr, Node>,
    pub(crate) clusters: HashMap<String, Cluster>,
}

pub(crate) struct Inner {
    pub(crate) options: FleetOptions,
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
}

/// Handle on the emulated fleet. Cheap to clone; all clones see the same nodes.
#[derive(Clone)]
pub struct Fleet {
    pub(crate) inner: Arc<Inner>,
}

/// What the admin API shows of a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    /// Node address.
    pub address: IpAddr,
    /// Talos version the node runs.
    pub talos_version: String,
    /// `maintenance`, `booting` (booting, rebooting or installing), `running` or `off`
    /// (powered off, see [`Fleet::power_off`]).
    pub state: &'static str,
    /// `controlplane` or `worker` once configured.
    pub machine_type: Option<MachineType>,
    /// Hostname from the config.
    pub hostname: Option<String>,
    /// `cluster.id` of the config.
    pub cluster_id: Option<String>,
    /// Members of the node's cluster's etcd.
    pub etcd_members: Vec<Member>,
    /// Active faults.
    pub faults: Faults,
    /// Installer images written to disk, oldest first (for tests: what was installed).
    pub installed_images: Vec<String>,
    /// Why kube-apiserver does not start on this control plane, if it does not.
    pub kube_apiserver_failure: Option<String>,
}

impl Fleet {
    /// An empty fleet. Nodes start serving as they are added; everything stops on
    /// [`Fleet::shutdown`].
    pub fn new(options: FleetOptions) -> Self {
        let (shutdown, _) = watch::channel(false);
        Fleet {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(State {
                    nodes: BTreeMap::new(),
                    clusters: HashMap::new(),
                }),
                shutdown,
            }),
        }
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, State>, FleetError> {
        self.inner.state.lock().map_err(|_| FleetError::Poisoned)
    }

    /// The fleet's options.
    pub fn options(&self) -> &FleetOptions {
        &self.inner.options
    }

    /// A delay after time scaling.
    pub(crate) fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.inner.options.time_scale.max(0.0))
    }

    /// Adds a node in maintenance mode at `address` (port [`FleetOptions::talos_port`]).
    /// Must be called inside a tokio runtime.
    pub fn add_node(&self, address: IpAddr, talos_version: Option<&str>) -> Result<(), FleetError> {
        self.insert_node(address, talos_version, Phase::Maintenance)
    }

    /// Adds a machine with a blank disk that was just powered on at `address`: nothing listens
    /// for [`FleetOptions::boot_delay`], then it is in maintenance mode, as a VM booted from the
    /// Talos image. Must be called inside a tokio runtime.
    pub fn add_booting_node(
        &self,
        address: IpAddr,
        talos_version: Option<&str>,
    ) -> Result<(), FleetError> {
        let until = Instant::now() + self.scaled(self.inner.options.boot_delay);
        let phase = Phase::Rebooting {
            until,
            then: After::Maintenance,
        };
        self.insert_node(address, talos_version, phase)
    }

    fn insert_node(
        &self,
        address: IpAddr,
        talos_version: Option<&str>,
        phase: Phase,
    ) -> Result<(), FleetError> {
        let version = talos_version
            .unwrap_or(&self.inner.options.default_talos_version)
            .to_string();
        if config::version_line(&version).is_none() {
            return Err(FleetError::UnsupportedVersion(version));
        }
        let mut state = self.lock()?;
        if state.nodes.contains_key(&address) {
            return Err(FleetError::NodeExists(address));
        }
        let (wake, wake_rx) = watch::channel(0);
        let task = tokio::spawn(server::node_loop(
            self.clone(),
            address,
            wake_rx,
            self.inner.shutdown.subscribe(),
        ));
        state.nodes.insert(
            address,
            Node {
                talos_version: version,
                phase,
                config: None,
                faults: Faults::default(),
                etcd_data: false,
                pending_version: None,
                installed_images: Vec::new(),
                wake,
                task: Some(task),
            },
        );
        Ok(())
    }

    /// Removes a node (as if powered off for good): its listener closes, it leaves no etcd
    /// membership behind only if it had left before, like a real dead member.
    pub fn remove_node(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let node = state
            .nodes
            .remove(&address)
            .ok_or(FleetError::NoSuchNode(address))?;
        if let Some(task) = node.task {
            task.abort();
        }
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// Powers a node off, as a stopped VM: its listener closes and connections drop, but it
    /// keeps what is on its disk (installed config, etcd data, a pending upgrade), and its etcd
    /// member stays in the cluster as an unreachable one. [`Fleet::power_on`] boots it again.
    /// Powering off a node that is off does nothing.
    pub fn power_off(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let node = state
            .nodes
            .get_mut(&address)
            .ok_or(FleetError::NoSuchNode(address))?;
        // A node powered off in the middle of an install has its config on disk already (the
        // emulator writes it when the config is applied), so it boots configured.
        node.phase = Phase::PoweredOff;
        node.wake.send_modify(|g| *g += 1);
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// Powers on a node that [`Fleet::power_off`] stopped: after [`FleetOptions::boot_delay`]
    /// it runs its installed config (mutual TLS, rejoins etcd), or is in maintenance mode if it
    /// was never configured. A Kubernetes node deleted through the API comes back, as kubelet
    /// registers again.
    pub fn power_on(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let boot = self.scaled(self.inner.options.boot_delay);
        let node = state
            .nodes
            .get_mut(&address)
            .ok_or(FleetError::NoSuchNode(address))?;
        if !matches!(node.phase, Phase::PoweredOff) {
            return Err(FleetError::PoweredOn(address));
        }
        let then = if node.config.is_some() {
            After::Running
        } else {
            After::Maintenance
        };
        node.phase = Phase::Rebooting {
            until: Instant::now() + boot,
            then,
        };
        node.wake.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Addresses of all nodes.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.lock()
            .map(|s| s.nodes.keys().copied().collect())
            .unwrap_or_default()
    }

    /// State of every node.
    pub fn summaries(&self) -> Vec<NodeSummary> {
        let Ok(state) = self.lock() else {
            return vec![];
        };
        state
            .nodes
            .iter()
            .map(|(address, node)| {
                let cluster_id = node.config.as_ref().map(|c| c.cluster_id.clone());
                let etcd_members = cluster_id
                    .as_ref()
                    .and_then(|id| state.clusters.get(id))
                    .map(|c| c.members.clone())
                    .unwrap_or_default();
                NodeSummary {
                    address: *address,
                    talos_version: node.talos_version.clone(),
                    state: match node.phase {
                        Phase::Maintenance => "maintenance",
                        Phase::Rebooting { .. } => "booting",
                        Phase::Running { .. } => "running",
                        Phase::PoweredOff => "off",
                    },
                    machine_type: node.config.as_ref().map(|c| c.machine_type),
                    hostname: node.config.as_ref().and_then(|c| c.hostname.clone()),
                    cluster_id,
                    etcd_members,
                    faults: node.faults.clone(),
                    installed_images: node.installed_images.clone(),
                    kube_apiserver_failure: node
                        .config
                        .as_ref()
                        .and_then(|c| c.apiserver_refusal.clone()),
                }
            })
            .collect()
    }

    /// Injects a fault into a node.
    pub fn inject(&self, address: IpAddr, fault: Fault) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let node = state
            .nodes
            .get_mut(&address)
            .ok_or(FleetError::NoSuchNode(address))?;
        match fault {
            Fault::NeverAnswer => {
                node.faults.never_answer = true;
                node.wake.send_modify(|g| *g += 1);
            }
            Fault::DropConnections => {
                node.faults.drop_connections = true;
                node.wake.send_modify(|g| *g += 1);
            }
            Fault::RejectNextConfig(reason) => node.faults.reject_next_config = Some(reason),
            Fault::SlowReboot(d) => node.faults.slow_reboot = Some(d),
            Fault::ForeignCluster => {
                let config = foreign_config(address)?;
                node.config = Some(Arc::new(config));
                node.phase = Phase::Running {
                    since: Instant::now(),
                    wall: SystemTime::now(),
                };
                node.etcd_data = true;
                node.wake.send_modify(|g| *g += 1);
            }
            Fault::LoseEtcdMember => {
                let cluster_id = node.config.as_ref().map(|c| c.cluster_id.clone());
                let cluster = cluster_id.and_then(|id| state.clusters.get_mut(&id));
                let Some(cluster) =
                    cluster.filter(|c| c.members.iter().any(|m| m.address == address))
                else {
                    return Err(FleetError::Fault(format!(
                        "{address} is not an etcd member"
                    )));
                };
                cluster.members.retain(|m| m.address != address);
                self.reconcile_kube(&mut state);
            }
        }
        Ok(())
    }

    /// Clears every fault of a node (a hanging node starts answering again).
    pub fn clear_faults(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let node = state
            .nodes
            .get_mut(&address)
            .ok_or(FleetError::NoSuchNode(address))?;
        node.faults = Faults::default();
        node.wake.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Stops every node and Kubernetes listener.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        if let Ok(mut state) = self.lock() {
            for node in state.nodes.values_mut() {
                if let Some(task) = node.task.take() {
                    task.abort();
                }
            }
            for cluster in state.clusters.values_mut() {
                if let Some(kube) = cluster.kube.take() {
                    kube.listeners.values().for_each(JoinHandle::abort);
                }
            }
        }
    }

    /// Waits until [`Fleet::shutdown`] is called.
    pub async fn stopped(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Puts a node into a reboot that ends in `then`, and wakes its task so that its listener
    /// closes. The wake-up is delayed a little so the reply of the RPC that caused it gets out.
    pub(crate) fn start_reboot(
        &self,
        state: &mut State,
        address: IpAddr,
        install: bool,
        then: After,
    ) {
        let Some(node) = state.nodes.get_mut(&address) else {
            return;
        };
        let base = node.faults.slow_reboot.unwrap_or(if install {
            self.inner.options.install_delay
        } else {
            self.inner.options.reboot_delay
        });
        node.phase = Phase::Rebooting {
            until: Instant::now() + self.scaled(base),
            then,
        };
        let wake = node.wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake.send_modify(|g| *g += 1);
        });
        self.reconcile_kube(state);
    }

    /// Ends a due reboot. Called by the node's task when its sleep is over.
    pub(crate) fn finish_reboot(&self, address: IpAddr) {
        let Ok(mut state) = self.lock() else { return };
        let Some(node) = state.nodes.get_mut(&address) else {
            return;
        };
        let Phase::Rebooting { until, then } = node.phase else {
            return;
        };
        if Instant::now() < until {
            return;
        }
        if let Some(v) = node.pending_version.take() {
            node.talos_version = v;
        }
        node.phase = match then {
            After::Maintenance => Phase::Maintenance,
            After::Running => Phase::Running {
                since: Instant::now(),
                wall: SystemTime::now(),
            },
        };
        // etcd rejoins the cluster once the node has settled.
        if matches!(then, After::Running) {
            let fleet = self.clone();
            let settle = self.scaled(self.inner.options.settle_delay);
            tokio::spawn(async move {
                tokio::time::sleep(settle).await;
                if let Ok(mut state) = fleet.lock() {
                    fleet.join_etcd(&mut state, address);
                    fleet.reconcile_kube(&mut state);
                }
            });
        }
        self.reconcile_kube(&mut state);
    }

    /// Whether a running node has finished booting (bootstrap possible, kubelet up).
    pub(crate) fn settled(&self, node: &Node) -> bool {
        match node.phase {
            Phase::Running { since, .. } => {
                since.elapsed() >= self.scaled(self.inner.options.settle_delay)
            }
            _ => false,
        }
    }

    /// Adds a settled control plane of a bootstrapped cluster to etcd, if not a member yet.
    pub(crate) fn join_etcd(&self, state: &mut State, address: IpAddr) {
        let Some(node) = state.nodes.get(&address) else {
            return;
        };
        let Some(config) = node.config.clone() else {
            return;
        };
        if config.machine_type != MachineType::Controlplane || !self.settled(node) {
            return;
        }
        let cluster = state.clusters.entry(config.cluster_id.clone()).or_default();
        if !cluster.bootstrapped || cluster.members.iter().any(|m| m.address == address) {
            return;
        }
        cluster.members.push(Member {
            id: rand::random(),
            address,
            hostname: hostname(&config, address),
        });
        if let Some(node) = state.nodes.get_mut(&address) {
            node.etcd_data = true;
        }
    }

    /// Brings the Kubernetes API listeners of every cluster in line with the nodes: served on
    /// the VIP and on each running etcd member's address once the cluster is bootstrapped.
    pub(crate) fn reconcile_kube(&self, state: &mut State) {
        let ids: Vec<String> = state.clusters.keys().cloned().collect();
        for id in ids {
            self.reconcile_cluster_kube(state, &id);
        }
    }

    fn reconcile_cluster_kube(&self, state: &mut State, cluster_id: &str) {
        let same_cluster = |n: &Node| {
            n.config
                .as_ref()
                .is_some_and(|c| c.cluster_id == cluster_id)
        };
        let control_planes: Vec<(IpAddr, Arc<MachineConfig>)> = state
            .nodes
            .iter()
            .filter(|(_, n)| same_cluster(n))
            .filter_map(|(a, n)| n.config.clone().map(|c| (*a, c)))
            .filter(|(_, c)| c.machine_type == MachineType::Controlplane)
            .collect();
        let Some(cluster) = state.clusters.get_mut(cluster_id) else {
            return;
        };
        let members: Vec<IpAddr> = cluster.members.iter().map(|m| m.address).collect();
        let serving: Vec<IpAddr> = control_planes
            .iter()
            // A kube-apiserver that exits at start serves nothing (config::apiserver_refusal).
            .filter(|(_, c)| c.apiserver_refusal.is_none())
            .map(|(a, _)| *a)
            .filter(|a| members.contains(a))
            .filter(|a| {
                matches!(
                    state.nodes.get(a).map(|n| n.phase),
                    Some(Phase::Running { .. })
                )
            })
            .collect();
        let vip = control_planes.iter().find_map(|(_, c)| c.vip);
        let mut wanted = serving.clone();
        if let (Some(vip), false) = (vip, serving.is_empty()) {
            wanted.push(vip);
        }
        let ca = control_planes
            .iter()
            .find_map(|(_, c)| Some((c.k8s_ca_crt.clone()?, c.k8s_ca_key.clone()?)));
        let Some((ca_crt, ca_key)) = ca else { return };
        let mut sans: Vec<IpAddr> = control_planes.iter().map(|(a, _)| *a).chain(vip).collect();
        sans.sort();
        sans.dedup();
        // (Re-)issue the server certificate when the set of control planes changed.
        if !matches!(&cluster.kube, Some(k) if k.sans == sans) {
            let Ok(tls) = KubeTls::new(&ca_crt, &ca_key, &sans) else {
                return;
            };
            match &mut cluster.kube {
                Some(k) => {
                    if let Ok(mut slot) = k.tls.write() {
                        *slot = Arc::new(tls);
                    }
                    k.sans = sans;
                }
                None => {
                    cluster.kube = Some(KubeServing {
                        tls: Arc::new(RwLock::new(Arc::new(tls))),
                        sans,
                        listeners: HashMap::new(),
                    })
                }
            }
        }
        let Some(kube) = cluster.kube.as_mut() else {
            return;
        };
        kube.listeners.retain(|addr, task| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let kubelet_version = control_planes
            .first()
            .map(|(_, c)| c.kubelet_version.clone())
            .unwrap_or_default();
        for addr in wanted {
            if kube.listeners.contains_key(&addr) {
                continue;
            }
            let Ok(std_listener) =
                std::net::TcpListener::bind((addr, self.inner.options.kube_port))
            else {
                continue;
            };
            let _ = std_listener.set_nonblocking(true);
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                continue;
            };
            let source: Arc<dyn NodeSource> = Arc::new(ClusterNodes {
                fleet: self.clone(),
                cluster_id: cluster_id.to_string(),
            });
            let router = kubernetes::router(source, kubelet_version.clone());
            let mut stop = self.inner.shutdown.subscribe();
            let task = tokio::spawn(kubernetes::run(
                listener,
                kube.tls.clone(),
                router,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
            kube.listeners.insert(addr, task);
        }
    }
}

/// The node's name in Kubernetes: the configured hostname, else derived from the address.
pub(crate) fn hostname(config: &MachineConfig, address: IpAddr) -> String {
    config
        .hostname
        .clone()
        .unwrap_or_else(|| format!("talos-{}", address.to_string().replace(['.', ':'], "-")))
}

/// A config of a cluster that nobody else knows, for the foreign-cluster fault.
fn foreign_config(address: IpAddr) -> Result<MachineConfig, FleetError> {
    let os_ca = Ca::generate("talos", "talos", &rcgen::PKCS_ED25519)?;
    Ok(MachineConfig {
        machine_type: MachineType::Controlplane,
        hostname: Some(format!(
            "ghost-{}",
            address.to_string().replace(['.', ':'], "-")
        )),
        os_ca_key: Some(os_ca.key_pem()),
        os_ca_crt: os_ca.cert_pem,
        cluster_id: format!("foreign-{}", rand::random::<u64>()),
        cluster_name: "foreign".into(),
        endpoint: format!("https://{address}:6443"),
        k8s_ca_crt: None,
        k8s_ca_key: None,
        vip: None,
        apiserver_refusal: None,
        kubelet_version: "v1.31.0".into(),
        install_version: None,
        install_image: None,
    })
}

/// The nodes of one cluster as the Kubernetes API shows them.
struct ClusterNodes {
    fleet: Fleet,
    cluster_id: String,
}

impl ClusterNodes {
    fn views(&self, state: &State) -> Vec<NodeView> {
        let ready_after = self.fleet.scaled(
            self.fleet.inner.options.settle_delay + self.fleet.inner.options.kube_ready_delay,
        );
        let deleted = state.clusters.get(&self.cluster_id).map(|c| &c.deleted);
        let mut views: Vec<NodeView> = state
            .nodes
            .iter()
            .filter_map(|(address, node)| {
                let config = node
                    .config
                    .as_ref()
                    .filter(|c| c.cluster_id == self.cluster_id)?;
                let Phase::Running { since, wall } = node.phase else {
                    return None;
                };
                // kubelet registers once the node has settled.
                if !self.fleet.settled(node) {
                    return None;
                }
                let name = hostname(config, *address);
                if deleted.and_then(|d| d.get(&name)) == Some(&wall) {
                    return None;
                }
                Some(NodeView {
                    name,
                    internal_ip: *address,
                    control_plane: config.machine_type == MachineType::Controlplane,
                    ready: since.elapsed() >= ready_after,
                    created: wall,
                    kubelet_version: config.kubelet_version.clone(),
                    os_image: format!("Talos ({})", node.talos_version),
                })
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }
}

impl NodeSource for ClusterNodes {
    fn nodes(&self) -> Vec<NodeView> {
        self.fleet
            .lock()
            .map(|s| self.views(&s))
            .unwrap_or_default()
    }

    fn delete(&self, name: &str) -> Option<NodeView> {
        let mut state = self.fleet.lock().ok()?;
        let view = self.views(&state).into_iter().find(|v| v.name == name)?;
        state
            .clusters
            .entry(self.cluster_id.clone())
            .or_default()
            .deleted
            .insert(name.to_string(), view.created);
        Some(view)
    }
}
