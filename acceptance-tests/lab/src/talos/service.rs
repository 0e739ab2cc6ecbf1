//! The gRPC services of one emulated node: `machine.MachineService` and
//! `storage.StorageService`, answering from the fleet's state.
//!
//! Maintenance mode accepts `Version`, `Disks`, `ServiceList` and `ApplyConfiguration`; every
//! other call answers `Unimplemented` ("… is not available in maintenance mode"), as the
//! maintenance service of Talos leaves everything else unimplemented. In configured mode, the
//! TLS layer already demanded a client certificate of the OS CA; calls that change the node also
//! need the `os:admin` role in its Organization, else `PermissionDenied`.

// Handlers answer with tonic `Status` / axum `Response` errors by design of those frameworks.
#![allow(clippy::result_large_err)]

use std::io::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use castle::talos::proto::common;
use castle::talos::proto::machine::{self, machine_service_server::MachineService};
use castle::talos::proto::storage::{self, storage_service_server::StorageService};
use rustls::pki_types::CertificateDer;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::config::{self, MachineType};
use super::fleet::{After, Fleet, Phase};
use crate::pki::Ca;

/// Which API the node is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No config yet: self-signed TLS, no client certificate.
    Maintenance,
    /// Configured: mutual TLS with the config's OS CA.
    Configured,
}

/// The roles of the client, from its certificate's Organizations (empty in maintenance mode).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Organizations of the client certificate, e.g. `os:admin`.
    pub roles: Vec<String>,
}

impl Peer {
    pub(crate) fn from_certificates(certs: Option<&[CertificateDer<'static>]>) -> Self {
        let roles = certs
            .and_then(|c| c.first())
            .and_then(|leaf| crate::pki::subject(leaf))
            .map(|(_, orgs)| orgs)
            .unwrap_or_default();
        Peer { roles }
    }
}

/// One node's API as served on one connection mode.
#[derive(Clone)]
pub struct NodeApi {
    pub(crate) fleet: Fleet,
    pub(crate) address: IpAddr,
    pub(crate) mode: Mode,
}

type Result<T> = std::result::Result<Response<T>, Status>;

fn poisoned<T>(_: T) -> Status {
    Status::internal("emulator state poisoned")
}

impl NodeApi {
    fn metadata(&self) -> Option<common::Metadata> {
        Some(common::Metadata {
            hostname: self.address.to_string(),
            ..Default::default()
        })
    }

    /// Refuses calls maintenance mode does not offer.
    fn configured_only(&self, rpc: &str) -> std::result::Result<(), Status> {
        match self.mode {
            Mode::Configured => Ok(()),
            Mode::Maintenance => Err(Status::unimplemented(format!(
                "{rpc} is not available in maintenance mode"
            ))),
        }
    }

    /// Calls that change the node need `os:admin`.
    fn admin<T>(&self, request: &Request<T>) -> std::result::Result<(), Status> {
        if self.mode == Mode::Maintenance {
            return Ok(());
        }
        let roles = request
            .extensions()
            .get::<Peer>()
            .map(|p| p.roles.clone())
            .unwrap_or_default();
        if roles.iter().any(|r| r == "os:admin") {
            Ok(())
        } else {
            Err(Status::permission_denied("not authorized"))
        }
    }
}

#[tonic::async_trait]
impl MachineService for NodeApi {
    async fn apply_configuration(
        &self,
        request: Request<machine::ApplyConfigurationRequest>,
    ) -> Result<machine::ApplyConfigurationResponse> {
        self.admin(&request)?;
        let request = request.into_inner();
        let mode = machine::apply_configuration_request::Mode::try_from(request.mode)
            .map_err(|_| Status::invalid_argument("unknown apply mode"))?;
        let mut state = self.fleet.lock().map_err(poisoned)?;
        let node = state
            .nodes
            .get_mut(&self.address)
            .ok_or_else(|| Status::unavailable("node is gone"))?;
        if let Some(reason) = node.faults.reject_next_config.take() {
            return Err(Status::invalid_argument(reason));
        }
        let parsed =
            config::parse(&request.data, &node.talos_version).map_err(Status::invalid_argument)?;
        let reply = |mode_details: &str| {
            Response::new(machine::ApplyConfigurationResponse {
                messages: vec![machine::ApplyConfiguration {
                    metadata: self.metadata(),
                    warnings: vec![],
                    mode: request.mode,
                    mode_details: mode_details.to_string(),
                }],
            })
        };
        if request.dry_run {
            return Ok(reply("Dry run: the config is valid and would be applied"));
        }
        use machine::apply_configuration_request::Mode as M;
        match (self.mode, mode) {
            (Mode::Maintenance, _) => {
                // Installing writes the installer image's release to disk: that is what the
                // node runs after the reboot, whatever it booted from.
                if let Some(version) = parsed.install_version.clone() {
                    node.pending_version = Some(version);
                }
                if let Some(image) = parsed.install_image.clone() {
                    node.installed_images.push(image);
                }
                node.config = Some(Arc::new(parsed));
                self.fleet
                    .start_reboot(&mut state, self.address, true, After::Running);
                Ok(reply(
                    "Applied configuration; the node installs and reboots",
                ))
            }
            (Mode::Configured, M::Staged) => {
                Ok(reply("Staged configuration to be applied after a reboot"))
            }
            (Mode::Configured, M::Reboot) => {
                node.config = Some(Arc::new(parsed));
                self.fleet
                    .start_reboot(&mut state, self.address, false, After::Running);
                Ok(reply("Applied configuration with a reboot"))
            }
            (Mode::Configured, _) => {
                node.config = Some(Arc::new(parsed));
                self.fleet.reconcile_kube(&mut state);
                Ok(reply("Applied configuration without a reboot"))
            }
        }
    }

    async fn bootstrap(
        &self,
        request: Request<machine::BootstrapRequest>,
    ) -> Result<machine::BootstrapResponse> {
        self.configured_only("Bootstrap")?;
        self.admin(&request)?;
        let mut state = self.fleet.lock().map_err(poisoned)?;
        let node = state
            .nodes
            .get(&self.address)
            .ok_or_else(|| Status::unavailable("node is gone"))?;
        let config = node
            .config
            .clone()
            .ok_or_else(|| Status::failed_precondition("no configuration"))?;
        if config.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "bootstrap can only be performed on a control plane node",
            ));
        }
        if !self.fleet.settled(node) {
            return Err(Status::failed_precondition(
                "bootstrap is not available yet",
            ));
        }
        let etcd_data = node.etcd_data;
        let cluster = state.clusters.entry(config.cluster_id.clone()).or_default();
        if etcd_data || cluster.bootstrapped {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        cluster.bootstrapped = true;
        // The bootstrapped node first, then every other settled control plane joins.
        self.fleet.join_etcd(&mut state, self.address);
        let others: Vec<IpAddr> = state
            .nodes
            .keys()
            .copied()
            .filter(|a| *a != self.address)
            .collect();
        for other in others {
            self.fleet.join_etcd(&mut state, other);
        }
        self.fleet.reconcile_kube(&mut state);
        Ok(Response::new(machine::BootstrapResponse {
            messages: vec![machine::Bootstrap {
                metadata: self.metadata(),
            }],
        }))
    }

    async fn etcd_member_list(
        &self,
        _request: Request<machine::EtcdMemberListRequest>,
    ) -> Result<machine::EtcdMemberListResponse> {
        self.configured_only("EtcdMemberList")?;
        let state = self.fleet.lock().map_err(poisoned)?;
        let node = state
            .nodes
            .get(&self.address)
            .ok_or_else(|| Status::unavailable("node is gone"))?;
        let config = node
            .config
            .clone()
            .ok_or_else(|| Status::failed_precondition("no configuration"))?;
        if config.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "etcd is not running on a worker node",
            ));
        }
        let cluster = state.clusters.get(&config.cluster_id);
        let members = cluster.map(|c| c.members.clone()).unwrap_or_default();
        // Only a member's etcd answers; a node that lost its membership has no etcd to ask.
        if !members.iter().any(|m| m.address == self.address) {
            return Err(Status::failed_precondition(
                "etcd is not running on this node",
            ));
        }
        let members = members
            .into_iter()
            .map(|m| machine::EtcdMember {
                id: m.id,
                hostname: m.hostname,
                peer_urls: vec![format!("https://{}:2380", m.address)],
                client_urls: vec![format!("https://{}:2379", m.address)],
                is_learner: false,
            })
            .collect();
        Ok(Response::new(machine::EtcdMemberListResponse {
            messages: vec![machine::EtcdMembers {
                metadata: self.metadata(),
                legacy_members: vec![],
                members,
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        request: Request<machine::EtcdRemoveMemberByIdRequest>,
    ) -> Result<machine::EtcdRemoveMemberByIdResponse> {
        self.configured_only("EtcdRemoveMemberByID")?;
        self.admin(&request)?;
        let id = request.into_inner().member_id;
        let mut state = self.fleet.lock().map_err(poisoned)?;
        let cluster_id = self.cluster_of(&state)?;
        let cluster = state.clusters.entry(cluster_id).or_default();
        let before = cluster.members.len();
        cluster.members.retain(|m| m.id != id);
        if cluster.members.len() == before {
            return Err(Status::not_found(format!("etcd member {id:x} not found")));
        }
        self.fleet.reconcile_kube(&mut state);
        Ok(Response::new(machine::EtcdRemoveMemberByIdResponse {
            messages: vec![machine::EtcdRemoveMemberById {
                metadata: self.metadata(),
            }],
        }))
    }

    async fn etcd_leave_cluster(
        &self,
        request: Request<machine::EtcdLeaveClusterRequest>,
    ) -> Result<machine::EtcdLeaveClusterResponse> {
        self.configured_only("EtcdLeaveCluster")?;
        self.admin(&request)?;
        let mut state = self.fleet.lock().map_err(poisoned)?;
        let cluster_id = self.cluster_of(&state)?;
        if let Some(cluster) = state.clusters.get_mut(&cluster_id) {
            cluster.members.retain(|m| m.address != self.address);
        }
        if let Some(node) = state.nodes.get_mut(&self.address) {
            node.etcd_data = false;
        }
        self.fleet.reconcile_kube(&mut state);
        Ok(Response::new(machine::EtcdLeaveClusterResponse {
            messages: vec![machine::EtcdLeaveCluster {
                metadata: self.metadata(),
            }],
        }))
    }

    type KubeconfigStream =
        Pin<Box<dyn Stream<Item = std::result::Result<common::Data, Status>> + Send>>;

    async fn kubeconfig(&self, _request: Request<()>) -> Result<Self::KubeconfigStream> {
        self.configured_only("Kubeconfig")?;
        let config = {
            let state = self.fleet.lock().map_err(poisoned)?;
            let node = state
                .nodes
                .get(&self.address)
                .ok_or_else(|| Status::unavailable("node is gone"))?;
            node.config
                .clone()
                .ok_or_else(|| Status::failed_precondition("no configuration"))?
        };
        if config.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "kubeconfig is only available on control plane nodes",
            ));
        }
        let (Some(crt), Some(key)) = (config.k8s_ca_crt.as_deref(), config.k8s_ca_key.as_deref())
        else {
            return Err(Status::failed_precondition(
                "cluster.ca is missing from the configuration",
            ));
        };
        let archive = admin_kubeconfig_archive(&config.cluster_name, &config.endpoint, crt, key)
            .map_err(|e| Status::internal(format!("kubeconfig: {e}")))?;
        // Several chunks, as the real stream sends, so that clients must concatenate.
        let metadata = self.metadata();
        let chunks: Vec<_> = archive
            .chunks(512)
            .map(|c| {
                Ok(common::Data {
                    metadata: metadata.clone(),
                    bytes: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn reboot(
        &self,
        request: Request<machine::RebootRequest>,
    ) -> Result<machine::RebootResponse> {
        self.configured_only("Reboot")?;
        self.admin(&request)?;
        let mut state = self.fleet.lock().map_err(poisoned)?;
        self.fleet
            .start_reboot(&mut state, self.address, false, After::Running);
        Ok(Response::new(machine::RebootResponse {
            messages: vec![machine::Reboot {
                metadata: self.metadata(),
                actor_id: "castle-lab".into(),
            }],
        }))
    }

    async fn reset(
        &self,
        request: Request<machine::ResetRequest>,
    ) -> Result<machine::ResetResponse> {
        self.configured_only("Reset")?;
        self.admin(&request)?;
        let graceful = request.into_inner().graceful;
        let mut state = self.fleet.lock().map_err(poisoned)?;
        let cluster_id = self.cluster_of(&state)?;
        // A graceful reset leaves etcd first; a forced one leaves a dead member behind.
        if graceful {
            if let Some(cluster) = state.clusters.get_mut(&cluster_id) {
                cluster.members.retain(|m| m.address != self.address);
            }
        }
        if let Some(node) = state.nodes.get_mut(&self.address) {
            node.config = None;
            node.etcd_data = false;
        }
        self.fleet
            .start_reboot(&mut state, self.address, false, After::Maintenance);
        Ok(Response::new(machine::ResetResponse {
            messages: vec![machine::Reset {
                metadata: self.metadata(),
                actor_id: "castle-lab".into(),
            }],
        }))
    }

    async fn service_list(&self, _request: Request<()>) -> Result<machine::ServiceListResponse> {
        let state = self.fleet.lock().map_err(poisoned)?;
        let node = state
            .nodes
            .get(&self.address)
            .ok_or_else(|| Status::unavailable("node is gone"))?;
        let service = |id: &str, running: bool, healthy: bool| machine::ServiceInfo {
            id: id.to_string(),
            state: if running { "Running" } else { "Waiting" }.to_string(),
            events: Some(machine::ServiceEvents::default()),
            health: Some(machine::ServiceHealth {
                unknown: !running,
                healthy,
                last_message: if healthy {
                    String::new()
                } else {
                    "not healthy yet".into()
                },
                last_change: None,
            }),
        };
        let mut services = vec![service("apid", true, true), service("machined", true, true)];
        if let (Mode::Configured, Some(config)) = (self.mode, node.config.as_ref()) {
            let settled = self.fleet.settled(node);
            services.push(service("containerd", true, true));
            services.push(service("kubelet", settled, settled));
            if config.machine_type == MachineType::Controlplane {
                let member = state
                    .clusters
                    .get(&config.cluster_id)
                    .is_some_and(|c| c.members.iter().any(|m| m.address == self.address));
                services.push(service("etcd", settled, member));
                services.push(service("trustd", true, true));
                // kube-apiserver is a static pod, not a Talos service; the lab lists it so that
                // its failure to start is visible where an operator looks first.
                if let Some(reason) = &config.apiserver_refusal {
                    let mut failed = service("kube-apiserver", false, false);
                    failed.state = "Failed".into();
                    if let Some(health) = failed.health.as_mut() {
                        health.unknown = false;
                        health.last_message = reason.clone();
                    }
                    services.push(failed);
                }
            }
        }
        services.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(machine::ServiceListResponse {
            messages: vec![machine::ServiceList {
                metadata: self.metadata(),
                services,
            }],
        }))
    }

    async fn upgrade(
        &self,
        request: Request<machine::UpgradeRequest>,
    ) -> Result<machine::UpgradeResponse> {
        self.configured_only("Upgrade")?;
        self.admin(&request)?;
        let image = request.into_inner().image;
        let tag = image
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        if config::version_line(&tag).is_none() {
            return Err(Status::invalid_argument(format!(
                "installer image {image:?} has no supported Talos version tag"
            )));
        }
        let mut state = self.fleet.lock().map_err(poisoned)?;
        if let Some(node) = state.nodes.get_mut(&self.address) {
            node.pending_version = Some(tag);
            node.installed_images.push(image.clone());
        }
        self.fleet
            .start_reboot(&mut state, self.address, true, After::Running);
        Ok(Response::new(machine::UpgradeResponse {
            messages: vec![machine::Upgrade {
                metadata: self.metadata(),
                ack: "Upgrade request received".into(),
                actor_id: "castle-lab".into(),
            }],
        }))
    }

    async fn version(&self, _request: Request<()>) -> Result<machine::VersionResponse> {
        let state = self.fleet.lock().map_err(poisoned)?;
        let node = state
            .nodes
            .get(&self.address)
            .ok_or_else(|| Status::unavailable("node is gone"))?;
        Ok(Response::new(machine::VersionResponse {
            messages: vec![machine::Version {
                metadata: self.metadata(),
                version: Some(machine::VersionInfo {
                    tag: node.talos_version.clone(),
                    sha: "castlelab".into(),
                    built: String::new(),
                    go_version: "go1.24".into(),
                    os: "linux".into(),
                    arch: "amd64".into(),
                }),
                platform: Some(machine::PlatformInfo {
                    name: "metal".into(),
                    mode: "metal".into(),
                }),
                features: Some(machine::FeaturesInfo { rbac: true }),
            }],
        }))
    }
}

impl NodeApi {
    fn cluster_of(&self, state: &super::fleet::State) -> std::result::Result<String, Status> {
        state
            .nodes
            .get(&self.address)
            .and_then(|n| n.config.as_ref())
            .map(|c| c.cluster_id.clone())
            .ok_or_else(|| Status::failed_precondition("no configuration"))
    }
}

#[tonic::async_trait]
impl StorageService for NodeApi {
    async fn disks(&self, _request: Request<()>) -> Result<storage::DisksResponse> {
        let installed = {
            let state = self.fleet.lock().map_err(poisoned)?;
            let node = state
                .nodes
                .get(&self.address)
                .ok_or_else(|| Status::unavailable("node is gone"))?;
            matches!(node.phase, Phase::Running { .. })
        };
        let disk = storage::Disk {
            size: 64 * 1024 * 1024 * 1024,
            model: "QEMU HARDDISK".into(),
            device_name: "/dev/sda".into(),
            name: "sda".into(),
            serial: "castle-lab-0".into(),
            bus_path: "/pci0000:00/0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/".into(),
            system_disk: installed,
            subsystem: "/sys/class/block".into(),
            ..Default::default()
        };
        Ok(Response::new(storage::DisksResponse {
            messages: vec![storage::Disks {
                metadata: self.metadata(),
                disks: vec![disk],
            }],
        }))
    }
}

/// The .tar.gz holding the admin kubeconfig (one file named `kubeconfig`).
fn admin_kubeconfig_archive(
    cluster_name: &str,
    endpoint: &str,
    ca_crt: &str,
    ca_key: &str,
) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let ca = Ca::from_pem(ca_crt, ca_key)?;
    let (cert, key) = ca.issue(
        "admin",
        &["system:masters"],
        &[],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )?;
    let name = if cluster_name.is_empty() {
        "talos"
    } else {
        cluster_name
    };
    let context = format!("admin@{name}");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": { "server": endpoint, "certificate-authority-data": b64(ca_crt) } }],
        "users": [{ "name": context, "user": { "client-certificate-data": b64(&cert), "client-key-data": b64(&key) } }],
        "contexts": [{ "name": context, "context": { "cluster": name, "namespace": "default", "user": context } }],
        "current-context": context,
    });
    let yaml = serde_yaml::to_string(&kubeconfig)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(yaml.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "kubeconfig", yaml.as_bytes())?;
        tar.finish()?;
    }
    gz.flush()?;
    Ok(gz.finish()?)
}
