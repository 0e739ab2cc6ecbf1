//! `castle_talos_cluster`: PKI, machine configs, apply, bootstrap and health of a Talos cluster.
//!
//! `schema.rs` is what users write; `state.rs` maps it to the pure config library's spec;
//! `plan.rs` holds plan-time work; `credentials.rs` the talosconfig and kubeconfig. The work
//! itself is [`crate::talos::cluster`]: this file only sequences it.

mod credentials;
mod identity;
mod kubeconfig_file;
mod plan;
mod schema;
mod state;
mod vm_power;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tf_provider::schema::Schema;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};
use time::OffsetDateTime;
use tokio::time::Instant;

use state::ClusterSecrets;
pub use state::ClusterState;

use crate::provider::{ProviderData, Unavailable};
use crate::resources::diag::unable;
use crate::resources::timeouts::Operation;
use crate::talos::client::{probe, NodeState};
use crate::talos::cluster::{self, ClusterNode};
use crate::talos::config::bootstrap_manifests::ReleaseImages;
use crate::talos::config::{
    check_release_runs_kubernetes, earlier_contracts, generate_cluster_configs,
    generate_node_config_for, installer_image, schematic_id, ClusterSpec, KubernetesVersion,
    TalosVersion,
};
use crate::talos::factory;
use crate::talos::pki::SecretsBundle;

const CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The resource. It talks to the nodes directly; of the provider configuration it uses the
/// Image Factory, and the Proxmox client only to hand a node's address over to a new VM
/// (`vm_id`).
pub struct TalosClusterResource {
    data: Arc<ProviderData>,
}

impl TalosClusterResource {
    /// The resource over the provider's configuration.
    pub fn new(data: Arc<ProviderData>) -> Self {
        TalosClusterResource { data }
    }

    /// Sets the Image Factory host on a state read from Terraform, so its spec names the
    /// factory's installer.
    fn with_factory(&self, mut state: ClusterState) -> ClusterState {
        state.factory_host = self.data.factory().host().ok();
        state
    }

    /// Uploads the schematic of the configured extensions when the installer comes from the
    /// factory (idempotent; the vanilla schematic of no extension is known to every factory).
    async fn upload_schematic(&self, spec: &ClusterSpec) -> Result<(), cluster::ClusterError> {
        if spec.install_image.is_some() || spec.extensions.is_empty() {
            return Ok(());
        }
        let id = factory::upload_schematic(&self.data.factory(), &spec.extensions)
            .await
            .map_err(cluster::ClusterError::Credentials)?;
        tracing::info!(schematic = %id, "schematic uploaded to the Image Factory");
        Ok(())
    }

    /// Plan-time: `vm_id` needs the provider's Proxmox client.
    fn check_power(&self, diags: &mut Diagnostics, state: &ClusterState) -> Option<()> {
        let named: Vec<String> = node_entries(state)
            .filter(|e| !e.vm_id.is_null())
            .map(|e| e.name.as_ref_option().cloned().unwrap_or_default())
            .collect();
        if named.is_empty() {
            return Some(());
        }
        if let Err(Unavailable::Missing(message)) = self.data.proxmox() {
            diags.error(
                "vm_id needs the provider's proxmox block",
                format!(
                    "node {} sets vm_id, which castle uses to stop and start the node's VMs when its machine is replaced, \
                     but the provider has no Proxmox client: {message}. Configure the provider's proxmox block, or remove vm_id.",
                    named.join(", ")
                ),
                AttributePath::new("node"),
            );
            return None;
        }
        Some(())
    }

    /// Refuses a node without `mac_address` whose VM (`vm_id`, known at plan) has more than one
    /// NIC: castle then selects the machine's physical link by an alias that matches every
    /// NIC, and Talos configures no link for an alias matching several (ADR 0009). A VM that
    /// cannot be read is left to apply (it may be about to be created or replaced).
    async fn check_nics(&self, diags: &mut Diagnostics, state: &ClusterState) -> Option<()> {
        let Ok(client) = self.data.proxmox() else {
            return Some(());
        };
        let mut ok = true;
        for entry in node_entries(state).filter(|e| e.mac_address.is_null()) {
            let (Value::Value(name), Value::Value(vm)) = (&entry.name, &entry.vm_id) else {
                continue;
            };
            let Some((node, vmid)) = vm_power::parse_vm_id(vm) else {
                continue;
            };
            let read = client.vm_config(node, vmid);
            let Ok(Ok(config)) = tokio::time::timeout(Duration::from_secs(10), read).await else {
                continue;
            };
            let nics = config.nics();
            if nics.len() > 1 {
                ok = false;
                diags.error(
                    format!("Node {name} needs mac_address"),
                    format!(
                        "The VM of node {name} ({vm}) has {} NICs ({}), and without mac_address castle selects the \
                         machine's only physical link: Talos configures no link when that selection matches several, \
                         so the node would come up without its address. Set mac_address to the MAC of the NIC that \
                         carries {} (castle_proxmox_vm.x.mac_address for net0).",
                        nics.len(),
                        nics.join(", "),
                        entry.address.as_ref_option().map(String::as_str).unwrap_or("its address"),
                    ),
                    AttributePath::new("node"),
                );
            }
        }
        ok.then_some(())
    }

    /// The power over the nodes' VMs, when the provider has a Proxmox client.
    fn power(&self) -> Option<vm_power::ProxmoxPower> {
        self.data.proxmox().ok().map(vm_power::ProxmoxPower)
    }
}

/// The node blocks that are known.
fn node_entries(state: &ClusterState) -> impl Iterator<Item = &state::NodeEntry> {
    state
        .node
        .as_ref_option()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_ref_option())
}

fn deadline(state: &ClusterState, operation: Operation, default: Duration) -> Instant {
    let timeouts = state.timeouts.as_ref_option().cloned().unwrap_or_default();
    Instant::now() + timeouts.get(operation, default)
}

fn incomplete(diags: &mut Diagnostics, what: &str) -> Option<ClusterSpec> {
    diags.root_error(
        format!("Unable to {what}"),
        "some arguments are still unknown at apply time",
    );
    None
}

/// Sets the values that come out of an apply.
fn record(
    state: &mut ClusterState,
    configs: &BTreeMap<String, String>,
    issued: Option<credentials::Issued>,
) {
    state.machine_configs = plan::configs_value(configs);
    if let Some(issued) = issued {
        state.kubeconfig = Value::Value(issued.kubeconfig);
        state.talosconfig = Value::Value(issued.talosconfig);
        state.client_certificate_expires_at = Value::Value(issued.expires_at);
    }
}

#[async_trait]
impl Resource for TalosClusterResource {
    type State<'a> = ClusterState;
    type PrivateState<'a> = Option<ClusterSecrets>;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Value::Value(timeouts) = &config.timeouts {
            timeouts.validate(diags);
        }
        if let Value::Value(nodes) = &config.node {
            let mut seen = BTreeSet::new();
            for entry in nodes.iter().filter_map(|e| e.as_ref_option()) {
                let name = entry.name.as_ref_option().cloned().unwrap_or_default();
                if let Value::Value(role) = &entry.role {
                    if role != "controlplane" && role != "worker" {
                        diags.error(
                            "Invalid node role",
                            format!("node {name:?}: role {role:?} must be \"controlplane\" or \"worker\"."),
                            AttributePath::new("node"),
                        );
                    }
                }
                if let Value::Value(vm_id) = &entry.vm_id {
                    if vm_power::parse_vm_id(vm_id).is_none() {
                        diags.error(
                            "Invalid vm_id",
                            format!("node {name:?}: vm_id {vm_id:?} must be node/vmid, e.g. castle_proxmox_vm.x.id (\"pve1/105\")."),
                            AttributePath::new("node"),
                        );
                    }
                }
                if entry.name.is_value() && !seen.insert(name.clone()) {
                    diags.error(
                        "Duplicate node name",
                        format!("two node blocks are named {name:?}; names must be unique."),
                        AttributePath::new("node"),
                    );
                }
            }
        }
        if let Value::Value(kind) = &config.disk_encryption {
            if kind != "nodeID" && kind != "tpm" {
                diags.error(
                    "Invalid disk_encryption",
                    format!("{kind:?} must be \"nodeID\" (key derived from the node) or \"tpm\"."),
                    AttributePath::new("disk_encryption"),
                );
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        mut state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        state = self.with_factory(state);
        // A kubeconfig file changed or removed outside Terraform: null in state, so the plan
        // shows it and apply writes it again.
        if let (Value::Value(path), Value::Value(kubeconfig)) =
            (&state.kubeconfig_file, &state.kubeconfig)
        {
            if !kubeconfig_file::is_current(path, kubeconfig) {
                state.kubeconfig_file = Value::Null;
            }
        }
        let (Some(secrets), Some(spec)) = (&private_state, state.to_spec()) else {
            return Some((state, private_state));
        };
        let bundle = match secrets.bundle() {
            Ok(bundle) => bundle,
            Err(e) => {
                unable(diags, "read the cluster", e);
                return None;
            }
        };
        let Ok(access) = credentials::access(&spec, &bundle, secrets) else {
            return Some((state, private_state));
        };
        let nodes = credentials::cluster_nodes(&spec, &BTreeMap::new()).unwrap_or_default();
        let states = futures::future::join_all(
            nodes
                .iter()
                .map(|n| probe(n.ip, &access.talos, &access.connect)),
        )
        .await;
        // A node found back in maintenance mode (reset or reinstalled outside Terraform) has
        // lost its config: forget it in state so the plan shows it and apply re-applies it.
        if let Value::Value(versions) = &mut state.node_versions {
            for (node, node_state) in nodes.iter().zip(&states) {
                if let NodeState::Configured { talos_version } = node_state {
                    versions.insert(node.name.clone(), Value::Value(talos_version.clone()));
                }
            }
        }
        // A node that is not Ready (its machine stopped outside Terraform, say): named in a
        // warning, and its reported release forgotten, so the plan shows `node_versions`
        // changing and apply waits until the node is Ready again. Once it is, the next refresh
        // records its release again and the plan is empty.
        for unready in cluster::unready_nodes(&nodes, &states, &access.kube).await {
            warn_unready(diags, &nodes, &unready);
            if let Value::Value(versions) = &mut state.node_versions {
                versions.remove(&unready.name);
            }
        }
        let reported = cluster::reported_extensions(&nodes, &access).await;
        if state.node_extensions.is_value() && state.node_schematics.is_null() {
            state.node_schematics = Value::Value(BTreeMap::new());
        }
        if let Value::Value(names) = &mut state.node_extensions {
            for (name, extensions) in &reported {
                names.insert(name.clone(), extensions_value(&extensions.names));
            }
        }
        if let Value::Value(schematics) = &mut state.node_schematics {
            for (name, extensions) in &reported {
                match &extensions.schematic {
                    Some(id) => schematics.insert(name.clone(), Value::Value(id.clone())),
                    None => schematics.remove(name),
                };
            }
        }
        if let Value::Value(configs) = &mut state.machine_configs {
            for (node, node_state) in nodes.iter().zip(states) {
                match node_state {
                    NodeState::Maintenance => {
                        tracing::info!(node = %node.name, "node is in maintenance mode: its config will be applied again");
                        configs.remove(&node.name);
                    }
                    NodeState::ForeignCluster => diags.root_warning(
                        format!("Node {} belongs to another cluster", node.name),
                        format!(
                            "{} ({}) no longer accepts this cluster's certificates.",
                            node.name, node.ip
                        ),
                    ),
                    _ => {}
                }
            }
        }
        Some((state, private_state))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = self.with_factory(proposed_state);
        identity::check(diags, &state)?;
        self.check_power(diags, &state)?;
        self.check_nics(diags, &state).await?;
        plan::fill_defaults(&mut state);
        match state.to_spec() {
            Some(spec) => {
                plan::check_spec(&spec, None, diags).map(drop)?;
                warn_of_template_upgrades(diags, &spec);
            }
            None => plan::check_known(&state, diags)?,
        }
        state.kubeconfig = Value::Unknown;
        state.talosconfig = Value::Unknown;
        state.machine_configs = Value::Unknown;
        state.node_versions = Value::Unknown;
        state.node_extensions = Value::Unknown;
        state.node_schematics = Value::Unknown;
        state.client_certificate_expires_at = Value::Unknown;
        Some((state, None))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        proposed_state: Self::State<'a>,
        config_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut state = self.with_factory(proposed_state);
        let prior_state = self.with_factory(prior_state);
        identity::check(diags, &state)?;
        self.check_power(diags, &state)?;
        self.check_nics(diags, &state).await?;
        warn_of_replacements(diags, &prior_state, &state);
        let other_identity =
            identity::replaced(diags, &prior_state, &state, prior_private_state.as_ref())?;
        if other_identity || (state.name.is_value() && state.name != prior_state.name) {
            state.id = Value::Unknown;
            state.kubeconfig = Value::Unknown;
            state.talosconfig = Value::Unknown;
            state.machine_configs = Value::Unknown;
            state.node_versions = Value::Unknown;
            state.node_extensions = Value::Unknown;
            state.node_schematics = Value::Unknown;
            state.client_certificate_expires_at = Value::Unknown;
            if config_state.endpoint.is_null() {
                state.endpoint = Value::Unknown;
            }
            let cause = if other_identity { "secrets" } else { "name" };
            return Some((state, prior_private_state, vec![AttributePath::new(cause)]));
        }
        if config_state.endpoint.is_null() {
            // Not configured: it follows the VIP, or the first control plane, as they change.
            state.endpoint = Value::Null;
        }
        if config_state.kubernetes_version.is_null() {
            // Not configured: it follows the Talos release's default.
            state.kubernetes_version = Value::Null;
        }
        plan::fill_defaults(&mut state);
        if let (Value::Value(from), Value::Value(to)) =
            (&prior_state.kubernetes_version, &state.kubernetes_version)
        {
            if let Err(reason) = crate::talos::config::check_upgrade_path(from, to) {
                diags.error(
                    "Unsupported Kubernetes upgrade",
                    reason,
                    AttributePath::new("kubernetes_version"),
                );
                return None;
            }
        }
        let bundle = prior_private_state.as_ref().and_then(|s| s.bundle().ok());
        match (state.to_spec(), &bundle) {
            (Some(spec), Some(bundle)) => {
                let configs = plan::check_spec(&spec, Some(bundle), diags)?;
                plan::check_upgrade_from(&spec, &prior_state.node_versions, diags)?;
                state.machine_configs = plan::configs_value(&configs);
                // What apply will do, as the reconcile plans it: warn of upgrades, and leave
                // `node_versions` unknown where nodes will report something new.
                let prior_spec = prior_state.to_spec();
                let planned = prior_spec
                    .as_ref()
                    .map(|prior| current(&prior_state, prior))
                    .zip(desired(&state, &spec, &configs).ok());
                let steps = match (&planned, &prior_spec, &prior_private_state) {
                    (Some((current, desired)), Some(prior), Some(secrets)) => {
                        warn_of_upgrades(diags, &prior_state, &state, current, desired);
                        warn_of_moves(diags, current, desired);
                        let replaced = replaced_nodes(&prior_state, &state);
                        let access = credentials::access(prior, bundle, secrets).ok();
                        let mut current = current.clone();
                        current.unreachable = unreachable_control_planes(
                            &current,
                            desired,
                            &replaced,
                            access.as_ref(),
                        )
                        .await;
                        check_control_planes(diags, &current, desired, &replaced)?;
                        let steps = cluster::plan(Some(&current), desired);
                        check_known_releases(diags, &spec, &current, &steps, &replaced)?;
                        steps
                    }
                    _ => vec![],
                };
                let reports_change = planned.is_none()
                    || steps.iter().any(|s| {
                        matches!(
                            s,
                            cluster::Step::Upgrade { .. }
                                | cluster::Step::ApplyNew(_)
                                | cluster::Step::Replace(_)
                        )
                    });
                let same_nodes = prior_state
                    .node_versions
                    .as_ref_option()
                    .map(|v| v.keys().collect::<Vec<_>>())
                    == Some(spec.nodes.keys().collect::<Vec<_>>());
                state.node_versions = match &prior_state.node_versions {
                    _ if reports_change => Value::Unknown,
                    prior if same_nodes => prior.clone(),
                    // A node that did not report at refresh (not Ready, see `read`): apply
                    // waits for it and records what it reports then; the others stay.
                    Value::Value(prior) => Value::Value(
                        spec.nodes
                            .keys()
                            .map(|name| {
                                let known = prior.get(name).filter(|v| v.is_value());
                                (name.clone(), known.cloned().unwrap_or(Value::Unknown))
                            })
                            .collect(),
                    ),
                    _ => Value::Unknown,
                };
                // A node that left the configuration is gone from what apply reports, even when
                // the refresh already missed it (a scale-in resumed after a kill: the removed
                // node was reset and is not Ready, so `node_versions` lost it but these did not).
                (state.node_extensions, state.node_schematics) = if !reports_change && same_nodes {
                    (
                        only_nodes_of(&prior_state.node_extensions, &spec.nodes),
                        only_nodes_of(&prior_state.node_schematics, &spec.nodes),
                    )
                } else {
                    (Value::Unknown, Value::Unknown)
                };
                let inputs_changed = prior_state.to_spec().map(|p| plan::credential_inputs(&p))
                    != Some(plan::credential_inputs(&spec));
                let due = prior_private_state
                    .as_ref()
                    .map(|s| plan::renewal_due(s, OffsetDateTime::now_utc()))
                    .unwrap_or(true);
                if inputs_changed || due {
                    state.kubeconfig = Value::Unknown;
                    state.talosconfig = Value::Unknown;
                    state.client_certificate_expires_at = Value::Unknown;
                }
            }
            (spec, _) => {
                if spec.is_none() {
                    plan::check_known(&state, diags)?;
                }
                state.machine_configs = Value::Unknown;
                state.node_versions = Value::Unknown;
                state.node_extensions = Value::Unknown;
                state.node_schematics = Value::Unknown;
                state.kubeconfig = Value::Unknown;
                state.talosconfig = Value::Unknown;
                state.client_certificate_expires_at = Value::Unknown;
            }
        }
        Some((state, prior_private_state, vec![]))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let planned_state = self.with_factory(planned_state);
        let deadline = deadline(&planned_state, Operation::Create, CREATE_TIMEOUT);
        let spec = planned_state
            .to_spec()
            .or_else(|| incomplete(diags, "create the cluster"))?;
        let name = spec.name.clone();
        let now = OffsetDateTime::now_utc();
        // Given secrets were stored by Terraform before this create began: nodes that got them
        // from a run that was killed are this cluster's, and this create finishes their work.
        // Without them, the bundle is generated here and kept in private state (deprecated).
        let bundle = match identity::given(&planned_state) {
            Some(Ok(bundle)) => bundle,
            Some(Err(e)) => {
                unable(diags, &format!("create cluster {name}"), e);
                return None;
            }
            None => match tokio::task::spawn_blocking(move || SecretsBundle::generate(now)).await {
                Ok(Ok(bundle)) => bundle,
                Ok(Err(e)) => {
                    unable(diags, &format!("generate the PKI of cluster {name}"), e);
                    return None;
                }
                Err(e) => {
                    unable(diags, &format!("generate the PKI of cluster {name}"), e);
                    return None;
                }
            },
        };
        let mut secrets = ClusterSecrets {
            bundle: serde_json::to_string(&bundle).ok()?,
            ..Default::default()
        };
        let configs = match generate_cluster_configs(&spec, &bundle) {
            Ok(configs) => configs,
            Err(e) => {
                unable(
                    diags,
                    &format!("generate the machine configurations of cluster {name}"),
                    e,
                );
                return None;
            }
        };
        let issued = match credentials::issue(&spec, &bundle, &mut secrets, now) {
            Ok(issued) => issued,
            Err(e) => {
                unable(
                    diags,
                    &format!("issue the credentials of cluster {name}"),
                    e,
                );
                return None;
            }
        };
        let mut state = planned_state;
        record(&mut state, &configs, Some(issued));
        // Every value of the state a failed create saves must be known: what the nodes
        // report, even if that is nothing.
        state.node_versions = Value::Value(BTreeMap::new());
        state.node_extensions = Value::Value(BTreeMap::new());
        state.node_schematics = Value::Value(BTreeMap::new());
        let access = credentials::access(&spec, &bundle, &secrets);
        let nodes = credentials::cluster_nodes(&spec, &configs)
            .map(|nodes| with_earlier_contracts(nodes, &spec, &bundle));
        let (access, nodes) = match (access, nodes) {
            (Ok(access), Ok(nodes)) => (access, nodes),
            (Err(e), _) | (_, Err(e)) => {
                unable(diags, &format!("create cluster {name}"), e);
                return Some((state, Some(secrets)));
            }
        };
        let result = async {
            cluster::check_maintenance_releases(&nodes, &access).await?;
            self.upload_schematic(&spec).await?;
            let desired =
                desired(&state, &spec, &configs).map_err(cluster::ClusterError::Credentials)?;
            let steps = cluster::plan(None, &desired);
            let live = cluster::Live {
                access: &access,
                deadline,
                image: &desired.image,
                target: &desired.target,
                release_images: ReleaseImages {
                    coredns: &desired.coredns_image,
                    flannel: &desired.flannel_image,
                },
                extensions: desired.extensions.as_ref(),
                power: None,
            };
            cluster::execute(&steps, &nodes, &[], &live, &mut Default::default()).await
        }
        .await;
        let (versions, extensions) = cluster::reported(&nodes, &access).await;
        state.node_versions = versions_value(&versions);
        (state.node_extensions, state.node_schematics) = extensions_values(&extensions);
        if let Err(e) = result {
            unable(diags, &format!("create cluster {name}"), &e);
            // Keep the secrets: nodes may already run this cluster's CA (configs are applied to
            // all nodes at once). Terraform marks the resource tainted, and the next apply resets
            // those nodes back to maintenance mode and starts again: nothing to repair by hand.
            return Some((state, Some(secrets)));
        }
        write_kubeconfig_file(diags, &state);
        Some((state, Some(secrets)))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let planned_state = self.with_factory(planned_state);
        let prior_state = self.with_factory(prior_state);
        let deadline = deadline(&planned_state, Operation::Update, UPDATE_TIMEOUT);
        let spec = planned_state
            .to_spec()
            .or_else(|| incomplete(diags, "update the cluster"))?;
        let Some(mut secrets) = planned_private_state else {
            diags.root_error(
                "Unable to update the cluster",
                "its secrets are missing from state; recreate it with terraform apply -replace",
            );
            return None;
        };
        let bundle = match secrets.bundle() {
            Ok(bundle) => bundle,
            Err(e) => {
                unable(diags, "update the cluster", e);
                return None;
            }
        };
        let configs = match generate_cluster_configs(&spec, &bundle) {
            Ok(configs) => configs,
            Err(e) => {
                unable(diags, "generate the machine configurations", e);
                return None;
            }
        };
        let mut state = planned_state;
        let issued = if state.kubeconfig.is_unknown() {
            match credentials::issue(&spec, &bundle, &mut secrets, OffsetDateTime::now_utc()) {
                Ok(issued) => Some(issued),
                Err(e) => {
                    unable(diags, "renew the cluster credentials", e);
                    return None;
                }
            }
        } else {
            None
        };
        record(&mut state, &configs, issued);
        let result: Result<Reported, cluster::ClusterError> = async {
            let access = credentials::access(&spec, &bundle, &secrets)
                .map_err(cluster::ClusterError::Credentials)?;
            let nodes = credentials::cluster_nodes(&spec, &configs)
                .map(|nodes| with_earlier_contracts(nodes, &spec, &bundle))
                .map_err(cluster::ClusterError::Credentials)?;
            cluster::check_maintenance_releases(&nodes, &access).await?;
            self.upload_schematic(&spec).await?;
            let desired =
                desired(&state, &spec, &configs).map_err(cluster::ClusterError::Credentials)?;
            let prior_spec = prior_state.to_spec();
            let mut current = prior_spec
                .as_ref()
                .map(|prior| current(&prior_state, prior))
                .unwrap_or_default();
            // Control planes that do not answer leave first (see `cluster::leaving`).
            current.unreachable =
                unreachable_control_planes(&current, &desired, &[], Some(&access)).await;
            let steps = cluster::plan(Some(&current), &desired);
            let removed: Vec<ClusterNode> = current
                .nodes
                .iter()
                .filter(|n| !spec.nodes.contains_key(&n.name))
                .cloned()
                .collect();
            let power = self.power();
            let live = cluster::Live {
                access: &access,
                deadline,
                image: &desired.image,
                target: &desired.target,
                release_images: ReleaseImages {
                    coredns: &desired.coredns_image,
                    flannel: &desired.flannel_image,
                },
                extensions: desired.extensions.as_ref(),
                power: power.as_ref().map(|p| p as &dyn cluster::VmPower),
            };
            let mut report = cluster::Report::default();
            let result = cluster::execute(&steps, &nodes, &removed, &live, &mut report).await;
            for (node, outcome) in &report.not_reset {
                warn_unless_reset(diags, node, outcome);
            }
            result?;
            Ok(cluster::reported(&nodes, &access).await)
        }
        .await;
        let (versions, extensions) = match result {
            Ok(reported) => reported,
            Err(e) => {
                unable(diags, &format!("update cluster {}", spec.name), e);
                return None;
            }
        };
        if let Value::Value(old) = &prior_state.kubeconfig_file {
            if prior_state.kubeconfig_file != state.kubeconfig_file {
                if let Err(e) = kubeconfig_file::remove(old) {
                    diags.root_warning("The old kubeconfig file was not removed", e);
                }
            }
        }
        state.node_versions = versions_value(&versions);
        (state.node_extensions, state.node_schematics) = extensions_values(&extensions);
        write_kubeconfig_file(diags, &state);
        Some((state, Some(secrets)))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let deadline = deadline(&prior_state, Operation::Delete, DELETE_TIMEOUT);
        if let Value::Value(path) = &prior_state.kubeconfig_file {
            if let Err(e) = kubeconfig_file::remove(path) {
                diags.root_warning("The kubeconfig file was not removed", e);
            }
        }
        let Some(spec) = prior_state.to_spec() else {
            return Some(());
        };
        // The private state when Terraform passes it (a plain destroy); the talosconfig in
        // state when it does not (replacing a tainted cluster passes the create's empty one).
        let talos = match (&planned_private_state, &prior_state.talosconfig) {
            (Some(secrets), _) => secrets
                .bundle()
                .and_then(|bundle| credentials::access(&spec, &bundle, secrets))
                .map(|access| access.talos),
            (None, _) if prior_state.secrets.is_value() => identity::given(&prior_state)
                .unwrap_or_else(|| Err("no secrets".into()))
                .and_then(|bundle| credentials::talos_access(&spec, &bundle)),
            (None, Value::Value(talosconfig)) => credentials::talos_credentials(talosconfig),
            (None, _) => Err("no credentials in state".to_string()),
        };
        let talos = match talos {
            Ok(talos) => talos,
            Err(e) => {
                diags.root_warning(
                    format!("Nodes of cluster {} were not reset", spec.name),
                    format!("{e}. Reset them by hand (talosctl reset) before reusing them in another cluster."),
                );
                return Some(());
            }
        };
        let nodes = credentials::cluster_nodes(&spec, &BTreeMap::new()).ok()?;
        let outcomes =
            cluster::reset_nodes(&nodes, &talos, &Default::default(), true, deadline).await;
        let mut failed = false;
        for ((name, outcome), node) in outcomes.into_iter().zip(&nodes) {
            match outcome {
                Ok(outcome) => warn_unless_reset(diags, node, &outcome),
                Err(error) => {
                    failed = true;
                    unable(diags, &format!("reset node {name}"), error);
                }
            }
        }
        (!failed).then_some(())
    }
}

/// Writes `kubeconfig_file` when set. A failure is a warning, not an error: the cluster is up
/// and its state must be kept; the next plan shows the file as drift and apply tries again.
fn write_kubeconfig_file(diags: &mut Diagnostics, state: &ClusterState) {
    if let (Value::Value(path), Value::Value(kubeconfig)) =
        (&state.kubeconfig_file, &state.kubeconfig)
    {
        if let Err(e) = kubeconfig_file::write(path, kubeconfig) {
            diags.warning(
                "Unable to write the kubeconfig file",
                e,
                AttributePath::new("kubeconfig_file"),
            );
        }
    }
}

/// The plan's warning for a node that is not Ready: what Kubernetes and Talos say, and what
/// apply will do about it.
fn warn_unready(diags: &mut Diagnostics, nodes: &[ClusterNode], unready: &cluster::Unready) {
    let name = &unready.name;
    let ip = nodes
        .iter()
        .find(|n| &n.name == name)
        .map(|n| n.ip.to_string())
        .unwrap_or_default();
    let mut seen = Vec::new();
    if let Some(condition) = &unready.kubernetes {
        seen.push(format!(
            "Kubernetes reports {name} NotReady (Ready is {condition})"
        ));
    }
    if let Some(reason) = &unready.talos {
        seen.push(format!("its Talos API at {ip} does not answer ({reason})"));
    }
    let summary = if unready.kubernetes.is_some() {
        format!("Node {name} is NotReady")
    } else {
        format!("Node {name} does not answer")
    };
    let machine = if unready.talos.is_some() {
        " Its machine looks stopped or unreachable: castle_proxmox_vm starts a VM that was stopped outside Terraform."
    } else {
        ""
    };
    diags.root_warning(
        summary,
        format!(
            "{}.{machine} The next apply waits until {name} is Ready again (up to the update timeout). castle leaves \
             its pods and volume attachments to Kubernetes: it deletes none of them.",
            seen.join(", and ")
        ),
    );
}

/// A warning for a node that was not reset (gone, or taken over by another cluster).
fn warn_unless_reset(diags: &mut Diagnostics, node: &ClusterNode, outcome: &cluster::ResetOutcome) {
    match outcome {
        cluster::ResetOutcome::Reset | cluster::ResetOutcome::AlreadyInMaintenance => {}
        cluster::ResetOutcome::ForeignCluster => diags.root_warning(
            format!("Node {} was not reset", node.name),
            format!("{} ({}) no longer accepts this cluster's certificates: it was left as it is.", node.name, node.ip),
        ),
        cluster::ResetOutcome::Unreachable { last } => diags.root_warning(
            format!("Node {} was not reset", node.name),
            format!(
                "{} ({}) did not answer, so it was taken for gone and not reset (last answer: {last}). If the machine \
                 still exists, wipe it (talosctl reset, or recreate the VM) before reusing it in another cluster.",
                node.name, node.ip
            ),
        ),
    }
}

/// The cluster as the prior state left it, for the reconcile plan.
fn current(state: &ClusterState, prior: &ClusterSpec) -> cluster::Current {
    cluster::Current {
        nodes: credentials::cluster_nodes(prior, &BTreeMap::new()).unwrap_or_default(),
        applied: applied_configs(state),
        versions: match &state.node_versions {
            Value::Value(map) => map
                .iter()
                .filter_map(|(k, v)| v.as_ref_option().map(|v| (k.clone(), v.clone())))
                .collect(),
            _ => BTreeMap::new(),
        },
        extensions: match &state.node_extensions {
            Value::Value(map) => map
                .iter()
                .filter_map(|(k, v)| {
                    let list = v.as_ref_option()?;
                    let schematic = match &state.node_schematics {
                        Value::Value(ids) => ids.get(k).and_then(|id| id.as_ref_option().cloned()),
                        _ => None,
                    };
                    Some((
                        k.clone(),
                        cluster::Extensions {
                            names: list
                                .iter()
                                .filter_map(|e| e.as_ref_option().cloned())
                                .collect(),
                            schematic,
                        },
                    ))
                })
                .collect(),
            _ => BTreeMap::new(),
        },
        image: installer_image(prior).ok(),
        machines: machines(state),
        unreachable: BTreeSet::new(),
    }
}

/// The machine behind each node, as the node blocks name it (VM and MAC).
fn machines(state: &ClusterState) -> BTreeMap<String, cluster::Machine> {
    node_entries(state)
        .filter_map(|e| {
            Some((
                e.name.as_ref_option()?.clone(),
                cluster::Machine {
                    vm: e.vm_id.as_ref_option().cloned(),
                    mac: e.mac_address.as_ref_option().cloned(),
                },
            ))
        })
        .collect()
}

/// The nodes whose machine apply replaces: their VM (or MAC) changes, or is being replaced
/// and so is not known yet. A new MAC on a VM whose id is known and stays is not a new
/// machine: that VM is updated in place and boots with a new NIC, keeping its disk (apply
/// then only gives it the config that names the new MAC).
/// Plan-time: a node the apply configures anew (found in maintenance mode) whose release
/// state recorded is an older line than `talos_version` must run `kubernetes_version` before
/// its upgrade (see [`check_release_runs_kubernetes`]). A replaced node's recorded release was
/// its old machine's: its new machine is checked at apply, before anything is applied.
fn check_known_releases(
    diags: &mut Diagnostics,
    spec: &ClusterSpec,
    current: &cluster::Current,
    steps: &[cluster::Step],
    replaced: &[String],
) -> Option<()> {
    let mut ok = true;
    for step in steps {
        let cluster::Step::ApplyNew(names) = step else {
            continue;
        };
        for name in names.iter().filter(|n| !replaced.contains(n)) {
            let Some(release) = current.versions.get(name) else {
                continue;
            };
            if let Some(issue) = check_release_runs_kubernetes(spec, name, release) {
                ok = false;
                diags.error(
                    issue.summary,
                    issue.detail,
                    AttributePath::new("kubernetes_version"),
                );
            }
        }
    }
    ok.then_some(())
}

fn replaced_nodes(prior: &ClusterState, planned: &ClusterState) -> Vec<String> {
    let before: BTreeMap<&String, &state::NodeEntry> = node_entries(prior)
        .filter_map(|e| Some((e.name.as_ref_option()?, e)))
        .collect();
    let changes = |old: &Value<String>, new: &Value<String>| {
        old.is_value()
            && (new.is_unknown()
                || (new.is_value()
                    && !old
                        .as_ref_option()
                        .unwrap()
                        .eq_ignore_ascii_case(new.as_ref_option().unwrap())))
    };
    node_entries(planned)
        .filter_map(|e| {
            let name = e.name.as_ref_option()?;
            let old = before.get(name)?;
            let same_vm = old.vm_id.is_value() && old.vm_id == e.vm_id;
            (changes(&old.vm_id, &e.vm_id)
                || (!same_vm && changes(&old.mac_address, &e.mac_address)))
            .then(|| name.clone())
        })
        .collect()
}

/// The plan's warnings for nodes whose machine apply replaces (see [`replaced_nodes`]).
fn warn_of_replacements(diags: &mut Diagnostics, prior: &ClusterState, planned: &ClusterState) {
    let replaced = replaced_nodes(prior, planned);
    if replaced.is_empty() {
        return;
    }
    diags.root_warning(
        format!("The machine of {} will be replaced", replaced.join(", ")),
        "Its VM changes: apply takes the old machine out (a control plane leaves etcd first, the Node object \
         goes, the machine is reset and its VM stopped; a VM that is gone leaves its etcd member removed), then \
         starts the new VM at the same address, configures it and waits until it joined etcd as a voter and \
         the cluster is healthy. One node at a time, so etcd keeps its quorum.",
    );
    let unnamed: Vec<String> = node_entries(planned)
        .filter(|e| e.vm_id.is_null())
        .filter_map(|e| e.name.as_ref_option().cloned())
        .filter(|name| replaced.contains(name))
        .collect();
    if !unnamed.is_empty() {
        diags.root_warning(
            format!("Node {} has no vm_id: castle cannot tell its old VM from the new one", unnamed.join(", ")),
            "Without vm_id castle can neither stop the old VM nor start the new one, nor ask Proxmox whether the old \
             one is gone. With create_before_destroy the new VM waits, stopped, for the address while the old one \
             holds it, and apply refuses the replacement once it finds such a VM. Give the node block \
             vm_id = castle_proxmox_vm.<name>.id (examples/ha-cluster does), or replace such VMs without \
             create_before_destroy.",
        );
    }
}

/// The cluster as the configuration wants it, for the reconcile plan.
fn desired(
    state: &ClusterState,
    spec: &ClusterSpec,
    configs: &BTreeMap<String, String>,
) -> Result<cluster::Desired, String> {
    Ok(cluster::Desired {
        machines: machines(state),
        nodes: credentials::cluster_nodes(spec, configs)?,
        image: installer_image(spec).map_err(|e| e.to_string())?,
        target: plan::target_version(spec).unwrap_or_default(),
        kubernetes: KubernetesVersion::parse(&spec.kubernetes_version)
            .map(|v| v.tag().to_string())
            .map_err(|e| e.to_string())?,
        coredns_image: TalosVersion::parse(&spec.talos_version)
            .map(|v| v.minor.default_coredns_image().to_string())
            .map_err(|e| e.to_string())?,
        flannel_image: TalosVersion::parse(&spec.talos_version)
            .map(|v| v.minor.flannel_image().to_string())
            .map_err(|e| e.to_string())?,
        extensions: spec.install_image.is_none().then(|| cluster::Extensions {
            names: cluster::extension_names(&spec.extensions),
            schematic: Some(schematic_id(&spec.extensions)),
        }),
    })
}

/// The control planes of the running cluster that do not answer, asked only when control
/// planes leave or get a new machine (`replaced`); without credentials, none is known.
async fn unreachable_control_planes(
    current: &cluster::Current,
    desired: &cluster::Desired,
    replaced: &[String],
    access: Option<&cluster::Access>,
) -> BTreeSet<String> {
    let mut lost = BTreeSet::new();
    let control_planes: Vec<&ClusterNode> = current
        .nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .collect();
    let asked = !cluster::leaving_control_planes(current, desired).is_empty()
        || control_planes.iter().any(|n| replaced.contains(&n.name));
    let Some(access) = access.filter(|_| asked) else {
        return lost;
    };
    let states = futures::future::join_all(
        control_planes
            .iter()
            .map(|n| probe(n.ip, &access.talos, &access.connect)),
    )
    .await;
    for (node, node_state) in control_planes.iter().zip(states) {
        if !matches!(node_state, NodeState::Configured { .. }) {
            lost.insert(node.name.clone());
        }
    }
    lost
}

/// Refuses a change of control planes that would lose etcd's quorum (an even number of them
/// is warned of by the config's validation): removals, and replaced machines (`replaced`),
/// which leave etcd before their new machine joins. Control planes in `current.unreachable`
/// count as lost members.
fn check_control_planes(
    diags: &mut Diagnostics,
    current: &cluster::Current,
    desired: &cluster::Desired,
    replaced: &[String],
) -> Option<()> {
    let error = cluster::check_quorum(current, desired)
        .or_else(|| cluster::check_replacements(current, replaced));
    match error {
        Some(error) => {
            diags.error(
                "This change would lose etcd's quorum",
                error,
                AttributePath::new("node"),
            );
            None
        }
        None => Some(()),
    }
}

/// The plan's warnings for nodes apply will upgrade.
fn warn_of_upgrades(
    diags: &mut Diagnostics,
    prior_state: &ClusterState,
    state: &ClusterState,
    current: &cluster::Current,
    desired: &cluster::Desired,
) {
    let target = &desired.target;
    if let Some(from) = cluster::kubernetes_upgrade(current, desired) {
        let control_planes: Vec<&str> = desired
            .nodes
            .iter()
            .filter(|n| n.is_control_plane() && current.applied.contains_key(&n.name))
            .map(|n| n.name.as_str())
            .collect();
        let all: Vec<&str> = desired
            .nodes
            .iter()
            .filter(|n| current.applied.contains_key(&n.name))
            .map(|n| n.name.as_str())
            .collect();
        diags.warning(
            "Kubernetes will be upgraded component by component",
            format!(
                "The nodes run Kubernetes {} and will run {}, as talosctl upgrade-k8s does it: kube-apiserver, \
                 kube-controller-manager and kube-scheduler on {} one node at a time (each static pod Ready on {} \
                 before the next), then the kubelets on {} one by one, then the bootstrap manifests (flannel, kube-proxy, \
                 CoreDNS), rolled out. \
                 Components that already run {} (an upgrade cut short) are left as they are.",
                from.join(", "),
                desired.kubernetes,
                control_planes.join(", "),
                desired.kubernetes,
                all.join(", "),
                desired.kubernetes,
            ),
            AttributePath::new("kubernetes_version"),
        );
    }
    match cluster::upgrade_reason(current, desired) {
        Some(cluster::UpgradeReason::Release(_))
            if prior_state.talos_version.is_value()
                && prior_state.talos_version != state.talos_version =>
        {
            diags.root_warning(
                "Talos will be upgraded node by node",
                format!(
                    "Changing talos_version from {} to {} upgrades every node in place: control planes first, one at a \
                     time, each back on the new release with the cluster healthy before the next.",
                    prior_state.talos_version.as_ref_option().cloned().unwrap_or_default(),
                    state.talos_version.as_ref_option().cloned().unwrap_or_default()
                ),
            )
        }
        Some(cluster::UpgradeReason::Release(off)) => diags.root_warning(
            "Nodes run another Talos release",
            format!(
                "{} will be brought to {target} node by node.",
                off.iter()
                    .map(|(n, v)| format!("{n} runs {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(cluster::UpgradeReason::Extensions(other)) => diags.root_warning(
            "Nodes will be reinstalled one by one",
            format!(
                "{} will install {} with an in-place upgrade, control planes first, the cluster healthy in between, \
                 so that every node runs the configured extensions.",
                other
                    .iter()
                    .map(|(n, e)| match (&e.schematic, e.names.is_empty()) {
                        (Some(id), true) => format!("{n} (schematic {id}, no extension)"),
                        (Some(id), false) => format!("{n} (schematic {id}: {})", e.names.join(", ")),
                        (None, true) => format!("{n} (no extension)"),
                        (None, false) => format!("{n} (runs {})", e.names.join(", ")),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                desired.image
            ),
        ),
        Some(cluster::UpgradeReason::Reinstall) => diags.root_warning(
            "Nodes will be reinstalled one by one",
            "The installer image changed (system extensions or install_image): each node installs it \
             with an in-place upgrade, control planes first, the cluster healthy in between.",
        ),
        None => {}
    }
}

/// What the nodes report after an update: releases and extensions, by node.
type Reported = (
    BTreeMap<String, String>,
    BTreeMap<String, cluster::Extensions>,
);

/// The plan's note at create: nodes booted from a template of another release or with other
/// extensions are upgraded once they joined (a disk image does not install its config's
/// installer; see [`cluster::Step::Upgrade`]).
fn warn_of_template_upgrades(diags: &mut Diagnostics, spec: &ClusterSpec) {
    let Ok(image) = installer_image(spec) else {
        return;
    };
    diags.root_warning(
        "Nodes are brought to talos_version and extensions after they join",
        format!(
            "A node booted from a disk image keeps the image's release and extensions when it takes its configuration. \
             Every node that then reports another release than {} or other extensions is upgraded to {image}, one at \
             a time, the cluster healthy in between. Build the template from the Image Factory image of this release \
             and these extensions to skip these upgrades.",
            plan::target_version(spec).unwrap_or_else(|| spec.talos_version.clone())
        ),
    );
}

/// The plan's warning for nodes whose address changes.
fn warn_of_moves(diags: &mut Diagnostics, current: &cluster::Current, desired: &cluster::Desired) {
    let moves: Vec<String> = cluster::readdressed(current, desired)
        .iter()
        .filter_map(|name| {
            let from = current.nodes.iter().find(|n| &n.name == name)?;
            let to = desired.nodes.iter().find(|n| &n.name == name)?;
            Some(format!("{name} from {} to {}", from.ip, to.ip))
        })
        .collect();
    if moves.is_empty() {
        return;
    }
    diags.root_warning(
        "Nodes change their address",
        format!(
            "{}: each must already run at its new address when the cluster is updated (castle_proxmox_vm restarts \
             its VM with the new cloud-init address first). castle then applies its new config there, one node \
             at a time, and waits until its etcd peer URL, its Kubernetes InternalIP and the kubernetes endpoints \
             show the new address. The kubeconfig stays on the endpoint.",
            moves.join(", ")
        ),
    );
}

/// One node's extensions as state holds them.
fn extensions_value(list: &[String]) -> Value<Vec<Value<String>>> {
    Value::Value(list.iter().map(|e| Value::Value(e.clone())).collect())
}

/// A per-node map of state without the nodes that are no longer in the configuration.
fn only_nodes_of<T: Clone, N>(
    prior: &Value<BTreeMap<String, T>>,
    nodes: &BTreeMap<String, N>,
) -> Value<BTreeMap<String, T>> {
    match prior {
        Value::Value(map) => Value::Value(
            map.iter()
                .filter(|(name, _)| nodes.contains_key(*name))
                .map(|(name, v)| (name.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `node_extensions` and `node_schematics` as state holds them.
#[allow(clippy::type_complexity)]
fn extensions_values(
    reported: &BTreeMap<String, cluster::Extensions>,
) -> (
    Value<BTreeMap<String, Value<Vec<Value<String>>>>>,
    Value<BTreeMap<String, Value<String>>>,
) {
    let names = reported
        .iter()
        .map(|(k, v)| (k.clone(), extensions_value(&v.names)))
        .collect();
    let schematics = reported
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), Value::Value(v.schematic.clone()?))))
        .collect();
    (Value::Value(names), Value::Value(schematics))
}

/// `node_versions` as state holds them.
fn versions_value(versions: &BTreeMap<String, String>) -> Value<BTreeMap<String, Value<String>>> {
    Value::Value(
        versions
            .iter()
            .map(|(k, v)| (k.clone(), Value::Value(v.clone())))
            .collect(),
    )
}

/// Each node's config also in the documents of the release lines older than `talos_version`,
/// for nodes booted from an older template (see [`ClusterNode::earlier`]). A line whose
/// documents cannot hold the config (a patch of a document that line does not know) is left
/// out: such a node is sent the config of `talos_version`, and its refusal names the document.
fn with_earlier_contracts(
    mut nodes: Vec<ClusterNode>,
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
) -> Vec<ClusterNode> {
    let lines = earlier_contracts(spec);
    for node in &mut nodes {
        node.earlier = lines
            .iter()
            .filter_map(|line| {
                let config = generate_node_config_for(spec, bundle, &node.name, *line).ok()?;
                Some((line.as_str().to_string(), config))
            })
            .collect();
        node.unfit = lines
            .iter()
            .filter_map(|line| {
                let issue = check_release_runs_kubernetes(spec, &node.name, line.as_str())?;
                Some((line.as_str().to_string(), issue.detail))
            })
            .collect();
    }
    nodes
}

/// Configs recorded as applied in state, by node.
fn applied_configs(state: &ClusterState) -> BTreeMap<String, String> {
    match &state.machine_configs {
        Value::Value(map) => map
            .iter()
            .filter_map(|(k, v)| v.as_ref_option().map(|v| (k.clone(), v.clone())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: Option<&str>) -> Value<String> {
        s.map(|s| Value::Value(s.to_string()))
            .unwrap_or(Value::Null)
    }

    fn cluster(nodes: &[(&str, Value<String>, Value<String>)]) -> ClusterState {
        ClusterState {
            node: Value::Value(
                nodes
                    .iter()
                    .map(|(name, vm_id, mac)| {
                        Value::Value(state::NodeEntry {
                            name: value(Some(name)),
                            vm_id: vm_id.clone(),
                            mac_address: mac.clone(),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_that_left_the_configuration_is_not_planned_in_what_nodes_report() {
        // A scale-in resumed after a kill: the refresh already missed the removed node's
        // release (not Ready), but its schematic was still in state.
        let prior: Value<BTreeMap<String, Value<String>>> = Value::Value(BTreeMap::from([
            ("w-1".to_string(), value(Some("376567988ad3"))),
            ("w-2".to_string(), value(Some("376567988ad3"))),
        ]));
        let nodes = BTreeMap::from([("w-1".to_string(), ())]);
        let planned = only_nodes_of(&prior, &nodes);
        assert_eq!(
            planned
                .as_ref_option()
                .map(|m| m.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["w-1".to_string()])
        );
        assert!(only_nodes_of(&Value::<BTreeMap<String, ()>>::Unknown, &nodes).is_unknown());
    }

    #[test]
    fn a_new_vm_or_one_being_created_replaces_the_nodes_machine() {
        let prior = cluster(&[
            (
                "cp-1",
                value(Some("pve1/101")),
                value(Some("bc:24:11:00:00:01")),
            ),
            (
                "cp-2",
                value(Some("pve1/102")),
                value(Some("bc:24:11:00:00:02")),
            ),
        ]);
        let planned = cluster(&[
            (
                "cp-1",
                value(Some("pve1/106")),
                value(Some("bc:24:11:00:00:06")),
            ),
            ("cp-2", Value::Unknown, Value::Unknown),
        ]);
        assert_eq!(replaced_nodes(&prior, &planned), vec!["cp-1", "cp-2"]);
    }

    #[test]
    fn a_new_mac_on_the_same_vm_is_not_a_replacement() {
        let prior = cluster(&[(
            "w-1",
            value(Some("pve1/104")),
            value(Some("bc:24:11:00:00:04")),
        )]);
        let planned = cluster(&[(
            "w-1",
            value(Some("pve1/104")),
            value(Some("BC:24:11:AA:BB:01")),
        )]);
        assert!(replaced_nodes(&prior, &planned).is_empty());
    }

    #[test]
    fn a_node_without_vm_id_is_replaced_by_its_new_mac_and_warned_of_naming_vm_id() {
        let prior = cluster(&[("w-1", Value::Null, value(Some("bc:24:11:00:00:04")))]);
        let planned = cluster(&[("w-1", Value::Null, Value::Unknown)]);
        assert_eq!(replaced_nodes(&prior, &planned), vec!["w-1"]);
        let mut diags = Diagnostics::default();
        warn_of_replacements(&mut diags, &prior, &planned);
        let said = format!("{diags:?}");
        assert!(said.contains("Node w-1 has no vm_id"), "{said}");
        assert!(
            said.contains("vm_id = castle_proxmox_vm.<name>.id"),
            "{said}"
        );
    }

    #[test]
    fn a_node_back_in_maintenance_on_an_older_release_is_refused_at_plan_naming_kubernetes_version()
    {
        use crate::talos::config::{NodeSpec, Role};
        let spec = ClusterSpec {
            name: "home".into(),
            talos_version: "v1.12.0".into(),
            kubernetes_version: "v1.35.0".into(),
            nodes: BTreeMap::from([(
                "w-1".to_string(),
                NodeSpec::plain("10.0.0.21/24", Role::Worker),
            )]),
            ..Default::default()
        };
        // State recorded w-1 on v1.11.5 and it is configured anew (read found it in
        // maintenance mode).
        let current = cluster::Current {
            versions: BTreeMap::from([("w-1".to_string(), "v1.11.5".to_string())]),
            ..Default::default()
        };
        let steps = [cluster::Step::ApplyNew(vec!["w-1".into()])];
        let mut diags = Diagnostics::default();
        assert!(check_known_releases(&mut diags, &spec, &current, &steps, &[]).is_none());
        assert_eq!(diags.errors.len(), 1);
        assert_eq!(
            diags.errors[0].attribute,
            AttributePath::new("kubernetes_version")
        );
        assert!(diags.errors[0]
            .detail
            .contains("Node w-1 runs Talos v1.11.5"));
        // A replaced node's recorded release was its old machine's: left to apply.
        let mut diags = Diagnostics::default();
        assert!(
            check_known_releases(&mut diags, &spec, &current, &steps, &["w-1".into()]).is_some()
        );
        assert!(diags.errors.is_empty());
    }
}
