//! The fleet: every emulated node, the clusters their configs form, and what each Talos API call
//! does to them. One file per behaviour:
//!
//! | file | behaviour |
//! | --- | --- |
//! | `mod.rs` | the nodes, adding and removing machines, what the admin API shows |
//! | `power.rs` | power off/on, reboots, the Reboot call |
//! | `readdress.rs` | a configured machine booted with another address keeps its config and etcd member |
//! | `apply.rs` | ApplyConfiguration and its modes |
//! | `install.rs` | the disk image that does not install, an ISO boot that does, Upgrade and the Image Factory images it pulls |
//! | `reset.rs` | Reset |
//! | `etcd/` | a real etcd per control plane (`service.rs`), its JSON-gateway client (`client.rs`), Bootstrap and the etcd calls (`mod.rs`) |
//! | `kube.rs` | the Kubernetes API on the VIP and control planes, its Node objects, Kubeconfig |
//! | `faults.rs` | injected faults |
//! | `clashes.rs` | VMs started on an address another running VM held |
//!
//! All state sits behind one `std::sync::Mutex` that is never held across an `.await`; each
//! node has a task (`server::node_loop`) that serves whatever the state says and is woken
//! through a `watch` channel when the state changes. Methods answering the Talos API return the
//! gRPC status a real node would; `service.rs` only translates the protocol.

// Answers to the Talos API are tonic `Status` errors, as in `service.rs`.
#![allow(clippy::result_large_err)]

mod apply;
mod boot;
mod clashes;
mod etcd;
mod faults;
mod install;
mod kube;
mod power;
mod readdress;
mod reset;
mod trustd;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

use super::config::{self, MachineConfig, MachineType};
use super::server;
use crate::factory::Factory;
use crate::pki;

pub use clashes::AddressClash;
pub use etcd::Member;
pub use faults::{Fault, Faults};
pub(crate) use power::{After, Phase};

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
    /// Time a node keeps serving after it answered a Reboot, Reset, Upgrade or an apply that
    /// reboots: cordon, drain, leave etcd, stop services.
    pub drain_delay: Duration,
    /// Time an Upgrade request takes before it answers: Talos pulls and checks the installer
    /// image inside the request.
    pub pull_delay: Duration,
    /// Time after coming back up before bootstrap is possible and etcd joins.
    pub settle_delay: Duration,
    /// Time after registration before a Kubernetes node is Ready.
    pub kube_ready_delay: Duration,
    /// Time from power-on to the Talos API answering (firmware, kernel, machined), for nodes
    /// started with [`Fleet::add_booting_node`] or [`Fleet::power_on`].
    pub boot_delay: Duration,
    /// Talos version of nodes added without one: the template's release.
    pub default_talos_version: String,
    /// System extensions of the template's disk image (official names, e.g.
    /// `siderolabs/iscsi-tools`): what a node booted from it runs until an upgrade.
    pub template_extensions: Vec<String>,
    /// Nodes boot an ISO and install `machine.install.image` when they get a config, instead
    /// of booting the template's disk image (which is installed already and keeps its release).
    pub iso_boot: bool,
    /// The Image Factory installer references are resolved against.
    pub factory: Factory,
    /// Where the nodes' disks live (one folder per address: etcd data, certificates, logs).
    /// `None` (unless `$CASTLE_LAB_DISKS` names one): a temporary folder, deleted with the
    /// fleet.
    pub disk_dir: Option<PathBuf>,
    /// The etcd binary every control plane runs (Debian's `etcd-server`).
    pub etcd_binary: PathBuf,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            talos_port: 50000,
            kube_port: 6443,
            time_scale: 1.0,
            install_delay: Duration::from_millis(1500),
            reboot_delay: Duration::from_millis(1000),
            drain_delay: Duration::from_millis(1000),
            pull_delay: Duration::from_millis(1000),
            settle_delay: Duration::from_millis(300),
            kube_ready_delay: Duration::from_millis(1000),
            boot_delay: Duration::from_millis(2000),
            default_talos_version: "v1.12.0".into(),
            template_extensions: Vec::new(),
            iso_boot: false,
            factory: Factory::default(),
            disk_dir: std::env::var_os("CASTLE_LAB_DISKS").map(PathBuf::from),
            etcd_binary: std::env::var_os("CASTLE_LAB_ETCD")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/usr/bin/etcd".into()),
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
    /// The node's disk folder could not be made.
    #[error("unable to prepare the disk {} of a node", .0.display())]
    Disk(PathBuf, #[source] std::io::Error),
    /// `power_on` of a node that is not powered off.
    #[error("node {0} is already powered on")]
    PoweredOn(IpAddr),
}

pub(crate) struct Node {
    pub(crate) talos_version: String,
    pub(crate) phase: Phase,
    pub(crate) config: Option<Arc<MachineConfig>>,
    pub(crate) faults: Faults,
    /// Connections closed at once under the `drop_connections` fault, since the node appeared.
    pub(crate) connections_dropped: u64,
    /// The machine's disk: what survives a power cycle (etcd data).
    pub(crate) disk: PathBuf,
    /// Its etcd, on control planes.
    pub(crate) etcd: etcd::NodeEtcd,
    /// Version to run after the pending reboot (upgrade).
    pub(crate) pending_version: Option<String>,
    /// System extensions it runs (official names), from its image.
    pub(crate) extensions: Vec<String>,
    /// The Image Factory schematic of its image, if it came from the factory.
    pub(crate) schematic: Option<String>,
    /// Extensions and schematic to run after the pending reboot (upgrade).
    pub(crate) pending_extensions: Option<(Vec<String>, Option<String>)>,
    /// Installer images written to disk, oldest first (install, then each upgrade).
    pub(crate) installed_images: Vec<String>,
    /// Boots since the machine appeared: each reboot and each power-on that came up.
    pub(crate) boots: u64,
    wake: watch::Sender<u64>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    /// Wakes the node's task so that it serves what the state now says.
    fn wake(&self) {
        self.wake.send_modify(|g| *g += 1);
    }
}

#[derive(Default)]
pub(crate) struct Cluster {
    /// The control plane holding the VIP.
    pub(crate) vip_holder: Option<IpAddr>,
    /// Kubernetes nodes deleted through the API, with the boot they were deleted in: they come
    /// back when the node boots again (kubelet re-registers).
    deleted: HashMap<String, SystemTime>,
    kube: Option<kube::KubeServing>,
}

pub(crate) struct State {
    pub(crate) nodes: BTreeMap<IpAddr, Node>,
    pub(crate) clusters: HashMap<String, Cluster>,
}

impl State {
    /// The node at `address`, for the fleet's own API.
    fn node_mut(&mut self, address: IpAddr) -> Result<&mut Node, FleetError> {
        self.nodes
            .get_mut(&address)
            .ok_or(FleetError::NoSuchNode(address))
    }

    /// The node at `address`, for the Talos API: a node removed while a call was in flight is
    /// gone from the network.
    pub(crate) fn serving(&self, address: IpAddr) -> Result<&Node, Status> {
        self.nodes.get(&address).ok_or_else(gone)
    }

    fn serving_mut(&mut self, address: IpAddr) -> Result<&mut Node, Status> {
        self.nodes.get_mut(&address).ok_or_else(gone)
    }

    /// The installed config of the node at `address`.
    pub(crate) fn config_of(&self, address: IpAddr) -> Result<Arc<MachineConfig>, Status> {
        self.serving(address)?.config.clone().ok_or_else(no_config)
    }
}

/// What a node removed mid-call answers.
fn gone() -> Status {
    Status::unavailable("node is gone")
}

/// What a node without a config answers to calls that need one.
fn no_config() -> Status {
    Status::failed_precondition("no configuration")
}

fn poisoned<T>(_: T) -> Status {
    Status::internal("emulator state poisoned")
}

pub(crate) struct Inner {
    pub(crate) options: FleetOptions,
    /// The folder holding every node's disk.
    pub(crate) disks: PathBuf,
    /// Whether `disks` is a temporary folder of this fleet.
    temporary_disks: bool,
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
    /// Address clashes seen by the wiring (see `clashes.rs`).
    clashes: Mutex<Vec<AddressClash>>,
}

/// Handle on the emulated fleet. Cheap to clone; all clones see the same nodes.
#[derive(Clone)]
pub struct Fleet {
    pub(crate) inner: Arc<Inner>,
}

/// One service of a node, as ServiceList shows it.
pub(crate) struct ServiceState {
    pub(crate) id: &'static str,
    pub(crate) running: bool,
    pub(crate) healthy: bool,
    /// Why the service failed and stays down, if it did.
    pub(crate) failure: Option<String>,
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
    /// The etcd member list as this node's etcd gave it last (empty when it does not run).
    pub etcd_members: Vec<Member>,
    /// This node's etcd member ID, while its etcd is healthy or was last.
    pub etcd_member_id: Option<u64>,
    /// Whether its etcd answers a quorum read.
    pub etcd_healthy: bool,
    /// Whether it holds its cluster's VIP.
    pub vip: bool,
    /// Active faults.
    pub faults: Faults,
    /// Connections the node closed at once under `drop_connections` (for tests: the fault
    /// was met).
    pub connections_dropped: u64,
    /// Installer images written to disk, oldest first (for tests: what was installed).
    pub installed_images: Vec<String>,
    /// Boots since the machine appeared: reboots and power-ons that came up (for tests: the
    /// machine went down and came back).
    pub boots: u64,
    /// System extensions the node runs, as `talosctl get extensions` names them.
    pub extensions: Vec<String>,
    /// The Image Factory schematic of the image it runs, if any.
    pub schematic: Option<String>,
    /// The kinds of the documents of the config it runs (`v1alpha1` for the main one).
    pub config_documents: Vec<String>,
    /// Why kube-apiserver does not start on this control plane, if it does not.
    pub kube_apiserver_failure: Option<String>,
}

impl Fleet {
    /// An empty fleet. Nodes start serving as they are added; everything stops on
    /// [`Fleet::shutdown`].
    pub fn new(options: FleetOptions) -> Self {
        let (shutdown, _) = watch::channel(false);
        let (disks, temporary_disks) = match &options.disk_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "castle-lab-disks-{}-{:x}",
                    std::process::id(),
                    rand::random::<u64>()
                )),
                true,
            ),
        };
        Fleet {
            inner: Arc::new(Inner {
                options,
                disks,
                temporary_disks,
                state: Mutex::new(State {
                    nodes: BTreeMap::new(),
                    clusters: HashMap::new(),
                }),
                shutdown,
                clashes: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, State>, FleetError> {
        self.inner.state.lock().map_err(|_| FleetError::Poisoned)
    }

    /// The lock, for the Talos API.
    pub(crate) fn lock_api(&self) -> Result<MutexGuard<'_, State>, Status> {
        self.inner.state.lock().map_err(poisoned)
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
        // A new machine has a blank disk.
        let disk = etcd::node_disk(&self.inner.disks, address);
        let _ = std::fs::remove_dir_all(&disk);
        std::fs::create_dir_all(&disk).map_err(|e| FleetError::Disk(disk.clone(), e))?;
        // The template's disk image: its release, extensions and schematic.
        let extensions = self.inner.options.template_extensions.clone();
        let schematic = Some(self.inner.options.factory.preload(&extensions));
        let (wake, wake_rx) = watch::channel(0);
        let task = tokio::spawn(server::node_loop(
            self.clone(),
            address,
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
                connections_dropped: 0,
                disk,
                etcd: Default::default(),
                pending_version: None,
                extensions,
                schematic,
                pending_extensions: None,
                installed_images: Vec::new(),
                boots: 0,
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
        let mut node = node;
        node.etcd.stop(etcd::Stop::Hard);
        if let Some(task) = node.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&node.disk);
        self.reconcile_kube(&mut state);
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
                let vip = cluster_id
                    .as_ref()
                    .and_then(|id| state.clusters.get(id))
                    .is_some_and(|c| c.vip_holder == Some(*address));
                NodeSummary {
                    address: *address,
                    talos_version: node.talos_version.clone(),
                    state: node.phase.name(),
                    machine_type: node.config.as_ref().map(|c| c.machine_type),
                    hostname: node.config.as_ref().and_then(|c| c.hostname.clone()),
                    cluster_id,
                    etcd_members: node.etcd.members.clone(),
                    etcd_member_id: node.etcd.member_id,
                    etcd_healthy: node.etcd.healthy,
                    vip,
                    faults: node.faults.clone(),
                    connections_dropped: node.connections_dropped,
                    installed_images: node.installed_images.clone(),
                    boots: node.boots,
                    extensions: node.extensions.clone(),
                    schematic: node.schematic.clone(),
                    config_documents: node
                        .config
                        .as_ref()
                        .map(|c| c.documents.clone())
                        .unwrap_or_default(),
                    kube_apiserver_failure: node
                        .config
                        .as_ref()
                        .and_then(|c| c.apiserver_refusal.clone()),
                }
            })
            .collect()
    }

    /// The v1alpha1 document of the config the node runs (`None` without one), secrets and
    /// all: for tests of what a node was given.
    pub fn running_config(&self, address: IpAddr) -> Result<Option<serde_json::Value>, FleetError> {
        let mut state = self.lock()?;
        let node = state.node_mut(address)?;
        Ok(node.config.as_ref().map(|c| c.v1alpha1.clone()))
    }

    /// The ServiceList call: what runs on the node, and whether it is healthy. Maintenance mode
    /// (`configured` false) runs apid and machined only.
    pub(crate) fn services(
        &self,
        address: IpAddr,
        configured: bool,
    ) -> Result<Vec<ServiceState>, Status> {
        let state = self.lock_api()?;
        let node = state.serving(address)?;
        let service = |id, running, healthy| ServiceState {
            id,
            running,
            healthy,
            failure: None,
        };
        let mut services = vec![service("apid", true, true), service("machined", true, true)];
        if let (true, Some(config)) = (configured, node.config.as_ref()) {
            let settled = self.settled(node);
            services.push(service("containerd", true, true));
            services.push(service("kubelet", settled, settled));
            if config.machine_type == MachineType::Controlplane {
                let (running, healthy) = self.etcd_service(&state, address);
                services.push(service("etcd", running, healthy));
                services.push(service("trustd", true, true));
                // kube-apiserver is a static pod, not a Talos service; the lab lists it when it
                // cannot start, so the reason shows where an operator looks first.
                if let Some(reason) = &config.apiserver_refusal {
                    services.push(ServiceState {
                        failure: Some(reason.clone()),
                        ..service("kube-apiserver", false, false)
                    });
                }
            }
        }
        Ok(services)
    }

    /// Stops every node and Kubernetes listener.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        if let Ok(mut state) = self.lock() {
            for node in state.nodes.values_mut() {
                node.etcd.stop(etcd::Stop::Hard);
                if let Some(task) = node.task.take() {
                    task.abort();
                }
            }
            for cluster in state.clusters.values_mut() {
                if let Some(kube) = cluster.kube.take() {
                    kube.stop();
                }
            }
        }
    }

    /// Waits until [`Fleet::shutdown`] is called.
    pub async fn stopped(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.temporary_disks {
            let _ = std::fs::remove_dir_all(&self.disks);
        }
    }
}

/// The node's name in Kubernetes and etcd: the configured hostname, else derived from the
/// address.
pub(crate) fn hostname(config: &MachineConfig, address: IpAddr) -> String {
    config
        .hostname
        .clone()
        .unwrap_or_else(|| format!("talos-{}", address.to_string().replace(['.', ':'], "-")))
}
