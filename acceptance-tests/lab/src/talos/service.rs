//! The gRPC services of one emulated node: `machine.MachineService`,
//! `storage.StorageService` and the COSI `cosi.resource.State` (extensions only), answering
//! from the fleet's state.
//!
//! Maintenance mode answers what the node's release answers a client without a certificate
//! (see `maintenance.rs`: up to v1.12 `Disks`, the COSI resources and `ApplyConfiguration`;
//! from v1.13 also `Version` and `ServiceList`). In configured mode, the
//! TLS layer already demanded a client certificate of the OS CA; calls that change the node also
//! need the `os:admin` role in its Organization, else `PermissionDenied`.

// Handlers answer with tonic `Status` / axum `Response` errors by design of those frameworks.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::pin::Pin;

use castle::talos::proto::common;
use castle::talos::proto::cosi::resource::{self as cosi, state_server::State};
use castle::talos::proto::machine::{self, machine_service_server::MachineService};
use castle::talos::proto::storage::{self, storage_service_server::StorageService};
use rustls::pki_types::CertificateDer;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::fleet::{Fleet, Phase};
use super::maintenance;

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

impl NodeApi {
    fn metadata(&self) -> Option<common::Metadata> {
        Some(common::Metadata {
            hostname: self.address.to_string(),
            ..Default::default()
        })
    }

    /// In maintenance mode, refuses what the node's release refuses a client without a
    /// certificate (see `maintenance.rs`).
    fn gate(&self, rpc: &str) -> std::result::Result<(), Status> {
        match self.mode {
            Mode::Configured => Ok(()),
            Mode::Maintenance => self.maintenance_server()?.admit(rpc),
        }
    }

    fn maintenance_server(&self) -> std::result::Result<maintenance::Server, Status> {
        let state = self.fleet.lock_api()?;
        Ok(maintenance::Server::of(
            &state.serving(self.address)?.talos_version,
        ))
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
        self.gate("ApplyConfiguration")?;
        self.admin(&request)?;
        let request = request.into_inner();
        let maintenance = match self.mode {
            Mode::Maintenance => Some(self.maintenance_server()?),
            Mode::Configured => None,
        };
        let mode = machine::apply_configuration_request::Mode::try_from(request.mode)
            .map_err(|_| Status::invalid_argument("unknown apply mode"))?;
        let applied = self.fleet.apply_config(
            self.address,
            self.mode == Mode::Maintenance,
            &request.data,
            mode,
            request.dry_run,
        )?;
        Ok(Response::new(machine::ApplyConfigurationResponse {
            messages: vec![machine::ApplyConfiguration {
                metadata: self.metadata(),
                warnings: vec![],
                mode: applied.mode(mode) as i32,
                mode_details: applied.details(maintenance).to_string(),
            }],
        }))
    }

    async fn bootstrap(
        &self,
        request: Request<machine::BootstrapRequest>,
    ) -> Result<machine::BootstrapResponse> {
        self.gate("Bootstrap")?;
        self.admin(&request)?;
        self.fleet.bootstrap(self.address)?;
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
        self.gate("EtcdMemberList")?;
        let members = self.fleet.etcd_members(self.address).await?;
        Ok(Response::new(machine::EtcdMemberListResponse {
            messages: vec![machine::EtcdMembers {
                metadata: self.metadata(),
                legacy_members: members.iter().map(|m| m.hostname.clone()).collect(),
                members: members
                    .into_iter()
                    .map(|m| machine::EtcdMember {
                        id: m.id,
                        hostname: m.hostname,
                        peer_urls: m.peer_urls,
                        client_urls: m.client_urls,
                        is_learner: m.is_learner,
                    })
                    .collect(),
            }],
        }))
    }

    async fn etcd_remove_member_by_id(
        &self,
        request: Request<machine::EtcdRemoveMemberByIdRequest>,
    ) -> Result<machine::EtcdRemoveMemberByIdResponse> {
        self.gate("EtcdRemoveMemberByID")?;
        self.admin(&request)?;
        let id = request.into_inner().member_id;
        self.fleet.remove_etcd_member(self.address, id).await?;
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
        self.gate("EtcdLeaveCluster")?;
        self.admin(&request)?;
        self.fleet.leave_etcd(self.address).await?;
        Ok(Response::new(machine::EtcdLeaveClusterResponse {
            messages: vec![machine::EtcdLeaveCluster {
                metadata: self.metadata(),
            }],
        }))
    }

    type KubeconfigStream =
        Pin<Box<dyn Stream<Item = std::result::Result<common::Data, Status>> + Send>>;

    async fn kubeconfig(&self, _request: Request<()>) -> Result<Self::KubeconfigStream> {
        self.gate("Kubeconfig")?;
        let archive = self.fleet.kubeconfig(self.address)?;
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

    type ReadStream = Pin<Box<dyn Stream<Item = std::result::Result<common::Data, Status>> + Send>>;

    async fn read(&self, request: Request<machine::ReadRequest>) -> Result<Self::ReadStream> {
        self.gate("Read")?;
        self.admin(&request)?;
        let path = request.into_inner().path;
        let bytes = self.fleet.read_file(self.address, &path)?;
        let data = common::Data {
            metadata: self.metadata(),
            bytes,
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(vec![Ok(data)]))))
    }

    async fn reboot(
        &self,
        request: Request<machine::RebootRequest>,
    ) -> Result<machine::RebootResponse> {
        self.gate("Reboot")?;
        self.admin(&request)?;
        self.fleet.reboot(self.address)?;
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
        self.gate("Reset")?;
        self.admin(&request)?;
        self.fleet
            .reset(self.address, request.into_inner().graceful)?;
        Ok(Response::new(machine::ResetResponse {
            messages: vec![machine::Reset {
                metadata: self.metadata(),
                actor_id: "castle-lab".into(),
            }],
        }))
    }

    async fn service_list(&self, _request: Request<()>) -> Result<machine::ServiceListResponse> {
        self.gate("ServiceList")?;
        let mut services: Vec<machine::ServiceInfo> = self
            .fleet
            .services(self.address, self.mode == Mode::Configured)?
            .into_iter()
            .map(|s| machine::ServiceInfo {
                id: s.id.to_string(),
                state: match (&s.failure, s.running) {
                    (Some(_), _) => "Failed",
                    (None, true) => "Running",
                    (None, false) => "Waiting",
                }
                .to_string(),
                events: Some(machine::ServiceEvents::default()),
                health: Some(machine::ServiceHealth {
                    unknown: !s.running && s.failure.is_none(),
                    healthy: s.healthy,
                    last_message: match (&s.failure, s.healthy) {
                        (Some(reason), _) => reason.clone(),
                        (None, true) => String::new(),
                        (None, false) => "not healthy yet".into(),
                    },
                    last_change: None,
                }),
            })
            .collect();
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
        self.gate("Upgrade")?;
        self.admin(&request)?;
        let request = request.into_inner();
        self.fleet
            .upgrade(self.address, &request.image, request.force)
            .await?;
        Ok(Response::new(machine::UpgradeResponse {
            messages: vec![machine::Upgrade {
                metadata: self.metadata(),
                ack: "Upgrade request received".into(),
                actor_id: "castle-lab".into(),
            }],
        }))
    }

    async fn version(&self, _request: Request<()>) -> Result<machine::VersionResponse> {
        self.gate("Version")?;
        let tag = self
            .fleet
            .lock_api()?
            .serving(self.address)?
            .talos_version
            .clone();
        Ok(Response::new(machine::VersionResponse {
            messages: vec![machine::Version {
                metadata: self.metadata(),
                version: Some(machine::VersionInfo {
                    tag,
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

#[tonic::async_trait]
impl StorageService for NodeApi {
    async fn disks(&self, _request: Request<()>) -> Result<storage::DisksResponse> {
        let installed = matches!(
            self.fleet.lock_api()?.serving(self.address)?.phase,
            Phase::Running { .. }
        );
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

/// The COSI resource API, for the resource types castle lists: the node's system extensions
/// (`talosctl get extensions`; Talos: pkg/machinery/resources/runtime/extension_status.go
/// (v1.12.0), ids `0`, `1`, ... in load order; an Image Factory image carries one more,
/// `schematic`, whose version is the schematic id) and its release (`talosctl get version`:
/// pkg/machinery/resources/runtime/version.go, id `version`, written by
/// controllers/runtime/version.go from the running release). Served in maintenance mode too:
/// machined's maintenance server registers the COSI state for readers
/// (internal/app/maintenance/server.go (v1.12.0) `Register`), apid lets readers list (v1.13).
#[tonic::async_trait]
impl State for NodeApi {
    type ListStream =
        Pin<Box<dyn Stream<Item = std::result::Result<cosi::ListResponse, Status>> + Send>>;

    async fn list(&self, request: Request<cosi::ListRequest>) -> Result<Self::ListStream> {
        let request = request.into_inner();
        let (extensions, schematic, release) = {
            let state = self.fleet.lock_api()?;
            let node = state.serving(self.address)?;
            (
                node.extensions.clone(),
                node.schematic.clone(),
                node.talos_version.clone(),
            )
        };
        let (owner, specs): (&str, Vec<(String, String)>) = match (
            request.namespace.as_str(),
            request.r#type.as_str(),
        ) {
            ("runtime", "ExtensionStatuses.runtime.talos.dev") => {
                let mut specs: Vec<String> = extensions
                    .iter()
                    .map(|e| {
                        let name = e.rsplit('/').next().unwrap_or(e);
                        format!(
                            "image: {name}.sqsh\nmetadata:\n    name: {name}\n    version: v1.0.0\n    author: Sidero Labs\n    description: castle-lab\n"
                        )
                    })
                    .collect();
                if let Some(id) = schematic {
                    specs.push(format!(
                        "image: schematic.sqsh\nmetadata:\n    name: schematic\n    version: {id}\n    author: Image Factory\n    description: This extension holds the schematic ID.\n"
                    ));
                }
                let specs = specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, spec)| (i.to_string(), spec))
                    .collect();
                ("runtime.ExtensionStatusController", specs)
            }
            ("runtime", "Versions.runtime.talos.dev") => (
                "runtime.VersionController",
                vec![("version".into(), format!("version: {release}\n"))],
            ),
            _ => {
                return Err(Status::not_found(format!(
                    "resource type {:?} in namespace {:?} is not served by castle-lab",
                    request.r#type, request.namespace
                )))
            }
        };
        let items: Vec<std::result::Result<cosi::ListResponse, Status>> = specs
            .into_iter()
            .map(|(id, yaml_spec)| {
                Ok(cosi::ListResponse {
                    resource: Some(cosi::Resource {
                        metadata: Some(cosi::Metadata {
                            namespace: request.namespace.clone(),
                            r#type: request.r#type.clone(),
                            id,
                            version: "1".into(),
                            owner: owner.into(),
                            phase: "running".into(),
                        }),
                        spec: Some(cosi::Spec {
                            proto_spec: Vec::new(),
                            yaml_spec,
                        }),
                    }),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}
