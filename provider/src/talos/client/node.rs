//! `NodeClient`: the calls castle makes on one Talos node.

use std::io::Read as _;
use std::net::IpAddr;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::connect::{connect, ConnectOptions};
use super::error::TalosError;
use super::tls::{insecure_config, mtls_config, Credentials};
use crate::talos::proto::common;
use crate::talos::proto::cosi::resource::{self as cosi, state_client::StateClient};
use crate::talos::proto::machine::{self, machine_service_client::MachineServiceClient};
use crate::talos::proto::storage::{self, storage_service_client::StorageServiceClient};

pub use crate::talos::proto::machine::apply_configuration_request::Mode as ApplyMode;

/// One system extension a node runs (an ExtensionStatus's `metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Its name, e.g. `iscsi-tools` (official extensions drop the `siderolabs/` prefix here).
    pub name: String,
    /// Its version; for the Image Factory's `schematic` extension, the schematic id.
    pub version: String,
}

impl Extension {
    /// Reads an ExtensionStatus spec (`image: ...`, `metadata: {name, version, ...}`).
    fn from_spec(yaml: &str) -> Option<Extension> {
        let spec: serde_yaml::Value = serde_yaml::from_str(yaml).ok()?;
        let metadata = spec.get("metadata")?;
        let field = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Some(Extension {
            name: field("name")?,
            version: field("version").unwrap_or_default(),
        })
    }
}

/// A connection to one node's Talos API (one connection per node: castle addresses each node
/// directly rather than routing through another one).
#[derive(Debug, Clone)]
pub struct NodeClient {
    address: IpAddr,
    machine: MachineServiceClient<Channel>,
    storage: StorageServiceClient<Channel>,
    state: StateClient<Channel>,
    node_header: Option<String>,
}

/// Outcome of [`NodeClient::bootstrap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// This call bootstrapped etcd.
    Bootstrapped,
    /// etcd had been bootstrapped before (`AlreadyExists`): the goal is reached all the same.
    AlreadyBootstrapped,
}

/// Which partitions [`NodeClient::reset`] wipes: always STATE and EPHEMERAL, so that the node
/// forgets its config and comes back in maintenance mode.
const RESET_PARTITIONS: [&str; 2] = ["STATE", "EPHEMERAL"];

/// Reads `metadata.status` / `metadata.error` of a reply message: a node's failure behind a
/// proxy arrives there with an OK gRPC status.
fn check_metadata(
    rpc: &'static str,
    metadata: Option<&common::Metadata>,
) -> Result<(), TalosError> {
    let Some(m) = metadata else { return Ok(()) };
    if let Some(status) = m.status.as_ref().filter(|s| s.code != 0) {
        return Err(TalosError::Node {
            rpc,
            hostname: m.hostname.clone(),
            code: tonic::Code::from_i32(status.code),
            message: if status.message.is_empty() {
                m.error.clone()
            } else {
                status.message.clone()
            },
        });
    }
    if !m.error.is_empty() {
        return Err(TalosError::Node {
            rpc,
            hostname: m.hostname.clone(),
            code: tonic::Code::Unknown,
            message: m.error.clone(),
        });
    }
    Ok(())
}

/// Takes the one message of a unary reply, after checking every message's metadata.
fn single<T>(
    rpc: &'static str,
    messages: Vec<T>,
    metadata: impl Fn(&T) -> Option<&common::Metadata>,
) -> Result<T, TalosError> {
    for m in &messages {
        check_metadata(rpc, metadata(m))?;
    }
    messages.into_iter().next().ok_or(TalosError::Unexpected {
        rpc,
        detail: "reply holds no message".into(),
    })
}

fn status_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> TalosError {
    move |status| TalosError::Status {
        rpc,
        code: status.code(),
        status: Box::new(status),
    }
}

impl NodeClient {
    /// Connects to a node in maintenance mode (no client certificate, server not verified).
    pub async fn connect_insecure(
        address: IpAddr,
        options: &ConnectOptions,
    ) -> Result<Self, TalosError> {
        let channel = connect(address, options, insecure_config()?).await?;
        Ok(Self::from_channel(address, channel))
    }

    /// Connects to a configured node with mutual TLS.
    pub async fn connect(
        address: IpAddr,
        credentials: &Credentials,
        options: &ConnectOptions,
    ) -> Result<Self, TalosError> {
        let channel = connect(address, options, mtls_config(credentials)?).await?;
        Ok(Self::from_channel(address, channel))
    }

    fn from_channel(address: IpAddr, channel: Channel) -> Self {
        // Talos allows configs of a few MiB (inline manifests); the API's limit is 32 MiB.
        const MAX: usize = 32 * 1024 * 1024;
        NodeClient {
            address,
            machine: MachineServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX)
                .max_encoding_message_size(MAX),
            storage: StorageServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX)
                .max_encoding_message_size(MAX),
            state: StateClient::new(channel),
            node_header: None,
        }
    }

    /// Adds the `node` metadata header to every call, asking the endpoint to forward to `node`.
    pub fn with_node_header(mut self, node: impl Into<String>) -> Self {
        self.node_header = Some(node.into());
        self
    }

    /// The address this client dials.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(node) = &self.node_header {
            if let Ok(value) = MetadataValue::try_from(node.as_str()) {
                request.metadata_mut().insert("node", value);
            }
        }
        request
    }

    /// `MachineService/Version`.
    pub async fn version(&self) -> Result<machine::Version, TalosError> {
        let reply = self.machine.clone().version(self.request(())).await;
        let reply = reply.map_err(status_error("Version"))?.into_inner();
        single("Version", reply.messages, |m| m.metadata.as_ref())
    }

    /// `StorageService/Disks`: the maintenance probe (answers without a client certificate only
    /// in maintenance mode).
    pub async fn disks(&self) -> Result<Vec<storage::Disk>, TalosError> {
        let reply = self.storage.clone().disks(self.request(())).await;
        let reply = reply.map_err(status_error("Disks"))?.into_inner();
        Ok(single("Disks", reply.messages, |m| m.metadata.as_ref())?.disks)
    }

    /// `MachineService/ApplyConfiguration` with the YAML of a machine config.
    pub async fn apply_configuration(
        &self,
        yaml: &[u8],
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<machine::ApplyConfiguration, TalosError> {
        let request = machine::ApplyConfigurationRequest {
            data: yaml.to_vec(),
            mode: mode as i32,
            dry_run,
            try_mode_timeout: None,
        };
        let reply = self
            .machine
            .clone()
            .apply_configuration(self.request(request))
            .await;
        let reply = reply
            .map_err(status_error("ApplyConfiguration"))?
            .into_inner();
        single("ApplyConfiguration", reply.messages, |m| {
            m.metadata.as_ref()
        })
    }

    /// `MachineService/Bootstrap`. `AlreadyExists` is success: etcd was bootstrapped by an
    /// earlier call whose result was lost.
    pub async fn bootstrap(&self) -> Result<BootstrapOutcome, TalosError> {
        let request = machine::BootstrapRequest::default();
        let result = match self.machine.clone().bootstrap(self.request(request)).await {
            Ok(reply) => single("Bootstrap", reply.into_inner().messages, |m| {
                m.metadata.as_ref()
            })
            .map(|_| ()),
            Err(status) => Err(status_error("Bootstrap")(status)),
        };
        match result {
            Ok(()) => Ok(BootstrapOutcome::Bootstrapped),
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                Ok(BootstrapOutcome::AlreadyBootstrapped)
            }
            Err(e) => Err(e),
        }
    }

    /// `MachineService/EtcdMemberList` as seen by this node.
    pub async fn etcd_member_list(&self) -> Result<Vec<machine::EtcdMember>, TalosError> {
        let request = machine::EtcdMemberListRequest { query_local: false };
        let reply = self
            .machine
            .clone()
            .etcd_member_list(self.request(request))
            .await;
        let reply = reply.map_err(status_error("EtcdMemberList"))?.into_inner();
        Ok(single("EtcdMemberList", reply.messages, |m| m.metadata.as_ref())?.members)
    }

    /// `MachineService/EtcdRemoveMemberByID`: removes another (dead) member.
    pub async fn etcd_remove_member_by_id(&self, member_id: u64) -> Result<(), TalosError> {
        let request = machine::EtcdRemoveMemberByIdRequest { member_id };
        let reply = self
            .machine
            .clone()
            .etcd_remove_member_by_id(self.request(request))
            .await;
        let reply = reply
            .map_err(status_error("EtcdRemoveMemberByID"))?
            .into_inner();
        single("EtcdRemoveMemberByID", reply.messages, |m| {
            m.metadata.as_ref()
        })
        .map(|_| ())
    }

    /// `MachineService/EtcdLeaveCluster`: this node leaves etcd.
    pub async fn etcd_leave_cluster(&self) -> Result<(), TalosError> {
        let request = machine::EtcdLeaveClusterRequest {};
        let reply = self
            .machine
            .clone()
            .etcd_leave_cluster(self.request(request))
            .await;
        let reply = reply
            .map_err(status_error("EtcdLeaveCluster"))?
            .into_inner();
        single("EtcdLeaveCluster", reply.messages, |m| m.metadata.as_ref()).map(|_| ())
    }

    /// `MachineService/ServiceList`.
    pub async fn service_list(&self) -> Result<Vec<machine::ServiceInfo>, TalosError> {
        let reply = self.machine.clone().service_list(self.request(())).await;
        let reply = reply.map_err(status_error("ServiceList"))?.into_inner();
        Ok(single("ServiceList", reply.messages, |m| m.metadata.as_ref())?.services)
    }

    /// `MachineService/Reset`, wiping STATE and EPHEMERAL so that the node returns to
    /// maintenance mode. `graceful` leaves etcd first (control planes).
    pub async fn reset(&self, graceful: bool, reboot: bool) -> Result<(), TalosError> {
        let request = machine::ResetRequest {
            graceful,
            reboot,
            system_partitions_to_wipe: RESET_PARTITIONS
                .iter()
                .map(|label| machine::ResetPartitionSpec {
                    label: label.to_string(),
                    wipe: true,
                })
                .collect(),
            user_disks_to_wipe: vec![],
            mode: machine::reset_request::WipeMode::SystemDisk as i32,
        };
        let reply = self.machine.clone().reset(self.request(request)).await;
        let reply = reply.map_err(status_error("Reset"))?.into_inner();
        single("Reset", reply.messages, |m| m.metadata.as_ref()).map(|_| ())
    }

    /// `MachineService/Reboot`.
    pub async fn reboot(&self) -> Result<(), TalosError> {
        let request = machine::RebootRequest {
            mode: machine::reboot_request::Mode::Default as i32,
        };
        let reply = self.machine.clone().reboot(self.request(request)).await;
        let reply = reply.map_err(status_error("Reboot"))?.into_inner();
        single("Reboot", reply.messages, |m| m.metadata.as_ref()).map(|_| ())
    }

    /// `MachineService/Upgrade` to an installer image; returns the node's acknowledgement.
    pub async fn upgrade(
        &self,
        image: &str,
        preserve: bool,
        stage: bool,
        force: bool,
    ) -> Result<String, TalosError> {
        let request = machine::UpgradeRequest {
            image: image.to_string(),
            preserve,
            stage,
            force,
            reboot_mode: machine::upgrade_request::RebootMode::Default as i32,
        };
        let reply = self.machine.clone().upgrade(self.request(request)).await;
        let reply = reply.map_err(status_error("Upgrade"))?.into_inner();
        Ok(single("Upgrade", reply.messages, |m| m.metadata.as_ref())?.ack)
    }

    /// The system extensions the node runs, as `talosctl get extensions` lists them: the
    /// ExtensionStatus resources of the `runtime` namespace (Talos:
    /// pkg/machinery/resources/runtime/extension_status.go (v1.12.0)), listed through the COSI
    /// resource API Talos serves beside MachineService. An Image Factory image also carries an
    /// extension named `schematic` whose version is the schematic id.
    pub async fn extensions(&self) -> Result<Vec<Extension>, TalosError> {
        let request = cosi::ListRequest {
            namespace: "runtime".into(),
            r#type: "ExtensionStatuses.runtime.talos.dev".into(),
        };
        let reply = self.state.clone().list(self.request(request)).await;
        let mut stream = reply.map_err(status_error("List"))?.into_inner();
        let mut extensions = Vec::new();
        while let Some(item) = stream.message().await.map_err(status_error("List"))? {
            let yaml = item
                .resource
                .and_then(|r| r.spec)
                .map(|s| s.yaml_spec)
                .unwrap_or_default();
            if let Some(extension) = Extension::from_spec(&yaml) {
                extensions.push(extension);
            }
        }
        Ok(extensions)
    }

    /// The release the node runs, as `talosctl get version` reads it: the `version` resource
    /// of type `Versions.runtime.talos.dev` (Talos: pkg/machinery/resources/runtime/
    /// version.go, written by controllers/runtime/version.go from the running release).
    /// Unlike `MachineService/Version`, which machined's maintenance server keeps for the
    /// Admin role (internal/app/maintenance/server.go (v1.12.0) `Version`: "API is not
    /// implemented in maintenance mode"), every release serves it to a client without a
    /// certificate in maintenance mode: v1.10 to v1.12 register the COSI state there for
    /// readers, v1.13's apid lets readers list.
    pub async fn release(&self) -> Result<String, TalosError> {
        let request = cosi::ListRequest {
            namespace: "runtime".into(),
            r#type: "Versions.runtime.talos.dev".into(),
        };
        let reply = self.state.clone().list(self.request(request)).await;
        let mut stream = reply.map_err(status_error("List"))?.into_inner();
        while let Some(item) = stream.message().await.map_err(status_error("List"))? {
            let yaml = item
                .resource
                .and_then(|r| r.spec)
                .map(|s| s.yaml_spec)
                .unwrap_or_default();
            let tag = yaml
                .lines()
                .find_map(|l| l.trim().strip_prefix("version:"))
                .map(|v| v.trim().trim_matches('"').to_string());
            if let Some(tag) = tag.filter(|t| !t.is_empty()) {
                return Ok(tag);
            }
        }
        Err(TalosError::Unexpected {
            rpc: "List",
            detail: "no Versions.runtime.talos.dev resource holds a version".into(),
        })
    }

    /// The node's boot id (`MachineService/Read` of `/proc/sys/kernel/random/boot_id`): it
    /// changes with every boot, which is how talosctl tells that a reboot happened (Talos:
    /// cmd/talosctl/pkg/talos/action/tracker.go (v1.12.0) `getBootID`).
    pub async fn boot_id(&self) -> Result<String, TalosError> {
        let request = machine::ReadRequest {
            path: "/proc/sys/kernel/random/boot_id".into(),
        };
        let reply = self.machine.clone().read(self.request(request)).await;
        let mut stream = reply.map_err(status_error("Read"))?.into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(status_error("Read"))? {
            check_metadata("Read", chunk.metadata.as_ref())?;
            bytes.extend_from_slice(&chunk.bytes);
        }
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// `MachineService/Kubeconfig`: the admin kubeconfig of the cluster (control planes only).
    /// The stream carries a .tar.gz; this returns the bytes of the file inside.
    pub async fn kubeconfig(&self) -> Result<Vec<u8>, TalosError> {
        let reply = self.machine.clone().kubeconfig(self.request(())).await;
        let mut stream = reply.map_err(status_error("Kubeconfig"))?.into_inner();
        let mut archive = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(status_error("Kubeconfig"))? {
            check_metadata("Kubeconfig", chunk.metadata.as_ref())?;
            archive.extend_from_slice(&chunk.bytes);
        }
        untar_kubeconfig(&archive)
    }
}

/// Extracts the single `kubeconfig` file of the archive the Kubeconfig RPC streams.
pub(crate) fn untar_kubeconfig(archive: &[u8]) -> Result<Vec<u8>, TalosError> {
    let broken = |detail: String| TalosError::Unexpected {
        rpc: "Kubeconfig",
        detail,
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().map_err(|e| broken(e.to_string()))? {
        let mut entry = entry.map_err(|e| broken(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| broken(e.to_string()))?
            .into_owned();
        if path.file_name().is_some_and(|n| n == "kubeconfig") {
            let mut out = Vec::new();
            entry
                .read_to_end(&mut out)
                .map_err(|e| broken(e.to_string()))?;
            return Ok(out);
        }
    }
    Err(broken("archive holds no kubeconfig file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::proto::google::rpc::Status;

    #[test]
    fn a_failure_in_metadata_is_an_error_even_with_an_ok_status() {
        let m = common::Metadata {
            hostname: "cp-1".into(),
            error: "boom".into(),
            status: Some(Status {
                code: tonic::Code::FailedPrecondition as i32,
                message: "not yet".into(),
                details: vec![],
            }),
        };
        let err = check_metadata("Bootstrap", Some(&m)).unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition));
        assert!(err.to_string().contains("not yet"));
        let only_error = common::Metadata {
            error: "boom".into(),
            ..Default::default()
        };
        assert!(check_metadata("Bootstrap", Some(&only_error)).is_err());
        assert!(check_metadata("Bootstrap", Some(&common::Metadata::default())).is_ok());
    }

    #[test]
    fn kubeconfig_is_taken_out_of_the_tar_gz() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        {
            let mut tar = tar::Builder::new(&mut gz);
            let data = b"apiVersion: v1\n";
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            tar.append_data(&mut header, "kubeconfig", &data[..])
                .unwrap();
            tar.finish().unwrap();
        }
        let archive = gz.finish().unwrap();
        assert_eq!(untar_kubeconfig(&archive).unwrap(), b"apiVersion: v1\n");
        assert!(untar_kubeconfig(b"not an archive").is_err());
    }
}
