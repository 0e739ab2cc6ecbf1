//! `castle_proxmox_vm`: a VM cloned from a template, with static networking.
//!
//! `schema.rs` says what users write, `validate.rs` checks it without the API, `state.rs`
//! maps state to the client's types; this file is the Terraform lifecycle, each step a
//! call into [`crate::proxmox::provision`].

mod from_backup;
mod known;
mod schema;
mod state;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tf_provider::schema::Schema;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};
use tokio::time::Instant;

pub use state::VmState;
use state::{bare_ip, format_id, parse_id, CloneBlock};

use crate::provider::{ProviderData, Unavailable};
use crate::proxmox::retry::{with_policy, API_CALL};
use crate::proxmox::{self, handover, provision};
use crate::resources::diag::{path, unable};
use crate::resources::timeouts::Operation;
use crate::resources::{emptied_state, terraform_command};

const CREATE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const READ_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How long the plan-time checks keep asking a Proxmox that answers with gateway errors.
const PLAN_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ACPI shutdown may take before Proxmox stops the VM hard.
const SHUTDOWN_SECS: u64 = 60;

/// The resource.
pub struct ProxmoxVmResource {
    data: Arc<ProviderData>,
    /// The VMs Terraform's state holds, as this command has shown them.
    known: known::KnownVms,
}

impl ProxmoxVmResource {
    /// A resource bound to the provider's clients.
    pub fn new(data: Arc<ProviderData>) -> Self {
        Self {
            data,
            known: known::KnownVms::default(),
        }
    }

    fn client(&self, diags: &mut Diagnostics) -> Option<Arc<proxmox::Client>> {
        match self.data.proxmox() {
            Ok(client) => Some(client),
            Err(message) => {
                diags.root_error("Proxmox is not configured", message.to_string());
                None
            }
        }
    }
}

/// The VM a create takes, with the words its warning gives for how its state was lost.
fn lost_vm(lost: known::Lost) -> provision::LostVm {
    match lost {
        known::Lost::FromState(vmid) => provision::LostVm {
            vmid,
            why: "a run killed before its state was saved".into(),
        },
        known::Lost::ListedInBackup(vmid) => provision::LostVm {
            vmid,
            why: "a killed run emptied the state file, and its backup lists this VM".into(),
        },
    }
}

fn deadline(state: &VmState, operation: Operation, default: Duration) -> Instant {
    let timeouts = state.timeouts.as_ref_option().cloned().unwrap_or_default();
    Instant::now() + timeouts.get(operation, default)
}

/// Fills defaults and computed values that the plan can know.
fn plan_computed(state: &mut VmState, prior: Option<&VmState>) {
    if state.started.is_null() {
        state.started = Value::Value(true);
    }
    if let Value::Value(clone) = &mut state.clone {
        if clone.full.is_null() {
            clone.full = Value::Value(true);
        }
    }
    if let Value::Value(net) = &mut state.network {
        if net.bridge.is_null() {
            net.bridge = Value::Value("vmbr0".into());
        }
        if net.model.is_null() {
            net.model = Value::Value("virtio".into());
        }
        if net.mac.is_null() {
            net.mac = Value::Unknown;
        }
    }
    for value in [&mut state.cores, &mut state.sockets, &mut state.memory] {
        if value.is_null() {
            *value = Value::Unknown;
        }
    }
    state.mac_address = match (&state.network, prior) {
        (Value::Value(net), _) if net.mac.is_value() => net.mac.clone(),
        (Value::Value(_), Some(prior)) if prior.mac_address.is_value() => prior.mac_address.clone(),
        (Value::Null, Some(prior)) => prior.mac_address.clone(),
        _ => Value::Unknown,
    };
    state.ipv4_address = match (&state.ipv4, prior) {
        (Value::Value(ipv4), _) => ipv4.address.as_ref().map(|a| bare_ip(a)),
        // Without an ipv4 block castle leaves ipconfig0 as it is (the template's, or the one
        // an earlier block wrote), so the address stays what it was.
        (Value::Null, Some(prior)) => prior.ipv4_address.clone(),
        (Value::Null, None) | (Value::Unknown, _) => Value::Unknown,
    };
    match prior {
        Some(prior) => {
            state.id = prior.id.clone();
            if state.vm_id.is_null() {
                state.vm_id = prior.vm_id;
            }
        }
        None => {
            if state.vm_id.is_null() {
                state.vm_id = Value::Unknown;
            }
            state.id = match (&state.node, state.vm_id) {
                (Value::Value(node), Value::Value(id)) => Value::Value(format_id(node, id as u32)),
                _ => Value::Unknown,
            };
        }
    }
}

/// Attributes whose change only reaches a running VM after a reboot.
fn reboot_reasons(prior: &VmState, planned: &VmState) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    let changed = |a: bool, name: &'static str, reasons: &mut Vec<&'static str>| {
        if a {
            reasons.push(name);
        }
    };
    changed(
        planned.cores.is_value() && planned.cores != prior.cores,
        "cores",
        &mut reasons,
    );
    changed(
        planned.sockets.is_value() && planned.sockets != prior.sockets,
        "sockets",
        &mut reasons,
    );
    changed(
        planned.memory.is_value() && planned.memory != prior.memory,
        "memory",
        &mut reasons,
    );
    let net = |s: &VmState| {
        s.network
            .as_ref_option()
            .map(|n| (n.bridge.clone(), n.vlan, n.model.clone()))
    };
    changed(
        planned.network.is_value() && net(planned) != net(prior),
        "network",
        &mut reasons,
    );
    changed(
        planned.ipv4.is_value() && planned.ipv4 != prior.ipv4,
        "ipv4",
        &mut reasons,
    );
    changed(
        planned.nameservers.is_value() && planned.nameservers != prior.nameservers,
        "nameservers",
        &mut reasons,
    );
    changed(
        planned.search_domain.is_value() && planned.search_domain != prior.search_domain,
        "search_domain",
        &mut reasons,
    );
    reasons
}

fn clone_changed(prior: &CloneBlock, planned: &CloneBlock) -> Option<&'static str> {
    // An unknown storage or pool may differ: only the known clone attributes are compared.
    if planned.storage.is_unknown() {
        return Some("storage");
    }
    if planned.pool.is_unknown() {
        return Some("pool");
    }
    from_backup::clone_changed(&prior.source(), &planned.source())
}

#[async_trait]
impl Resource for ProxmoxVmResource {
    type State<'a> = VmState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        validate::validate(&config, diags);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        mut state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        if matches!(self.data.proxmox(), Err(Unavailable::NotYetKnown)) {
            // The provider's settings come from resources not created yet: keep what state has.
            return Some((state, private_state));
        }
        let client = self.client(diags)?;
        let Some((node, vmid)) = state.node_vmid() else {
            diags.root_error(
                "Unable to read VM",
                format!("state id {:?} is not node/vmid", state.id),
            );
            return None;
        };
        self.known.refreshed(vmid);
        let name = state.name.as_ref_option().cloned().unwrap_or_default();
        let deadline = Instant::now() + READ_TIMEOUT;
        match provision::read_following(&client, &node, vmid, &name, deadline).await {
            Ok(Some((found_on, facts, running))) => {
                if found_on != node {
                    // Migrated: state follows the VM, so the plan shows `node` drift.
                    diags.root_warning(
                        format!("VM {name} moved to node {found_on}"),
                        format!(
                            "VM {vmid} was migrated from {node} to {found_on} outside Terraform. \
                             Set node = \"{found_on}\" to keep it there; with node = \"{node}\" \
                             the next apply replaces it with a new VM on {node}."
                        ),
                    );
                }
                state.refresh_from(&found_on, vmid, &facts, running);
                Some((state, private_state))
            }
            Ok(None) => {
                // Deleted outside Terraform: drop it so the next plan creates it again.
                tracing::info!(node, vmid, "VM is gone; removing it from state");
                None
            }
            Err(e) if e.is_node_unreachable() => {
                // pveproxy answers 595/596 for a node that is down; the VM is not gone, and
                // the rest of the plan should not fail for it.
                diags.root_warning(
                    format!("Proxmox node {node} does not answer"),
                    format!(
                        "VM {vmid} ({name}) could not be read ({e}), so Terraform keeps what it last knew \
                         of it. Changes to it wait until node {node} is back in the cluster."
                    ),
                );
                Some((state, private_state))
            }
            Err(e) => {
                unable(diags, &format!("read VM {vmid} on {node}"), e);
                None
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed_state;
        if state.clone.is_null() {
            diags.error(
                "Missing clone block",
                "castle_proxmox_vm creates a VM by cloning a template: add clone { template_name = \"...\" } \
                 or clone { template_id = N }. (A VM imported with terraform import needs none.)",
                path(&["clone"]),
            );
            return None;
        }
        plan_computed(&mut state, None);
        self.check_against_cluster(diags, &state).await;
        self.note_namesakes(&state).await;
        self.note_backup_vm(diags, &state).await?;
        Some((state, ValueEmpty::default()))
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
        if let Some((_, vmid)) = prior_state.node_vmid() {
            self.known.in_state(vmid);
        }
        let mut state = proposed_state;
        let mut replace = Vec::new();
        if state.node.is_value() && state.node != prior_state.node {
            replace.push(AttributePath::new("node"));
        }
        if state.vm_id.is_value()
            && prior_state.vm_id.is_value()
            && state.vm_id != prior_state.vm_id
        {
            replace.push(AttributePath::new("vm_id"));
        }
        // An imported VM has no clone block yet: adopt the configuration's, do not replace.
        if let (Value::Value(prior), Value::Value(planned)) = (&prior_state.clone, &state.clone) {
            if let Some(attribute) = clone_changed(prior, planned) {
                replace.push(AttributePath::new("clone").index(0).attribute(attribute));
            }
        }
        // `started` left out means running: the proposed value is the prior one, which a VM
        // stopped outside Terraform turned to false, so plan the default again.
        if config_state.started.is_null() {
            state.started = Value::Null;
        }
        plan_computed(&mut state, Some(&prior_state));
        if !replace.is_empty() {
            state.id = Value::Unknown;
            state.mac_address = Value::Unknown;
            if state.ipv4.is_null() {
                // The new clone gets the template's ipconfig0.
                state.ipv4_address = Value::Unknown;
            }
            // A VMID the configuration sets is kept; only a picked one is picked again.
            if config_state.vm_id.is_null() {
                state.vm_id = Value::Unknown;
            }
            return Some((state, prior_private_state, replace));
        }
        if let (Value::Value(planned), Value::Value(prior)) = (&state.disk, &prior_state.disk) {
            for (i, disk) in planned.iter().enumerate() {
                let before = prior
                    .iter()
                    .find(|d| d.slot == disk.slot)
                    .and_then(|d| d.size_gb.as_ref_option().copied());
                if let (Some(before), Value::Value(after)) = (before, disk.size_gb) {
                    if after < before {
                        diags.error(
                            "Disks cannot shrink",
                            format!(
                                "disk {} is {before} GiB; Proxmox cannot shrink it to {after} GiB. Keep size_gb at {before} or more, \
                                 or replace the VM (terraform apply -replace=...).",
                                disk.slot.as_ref_option().cloned().unwrap_or_default()
                            ),
                            path(&["disk", &i.to_string(), "size_gb"]),
                        );
                    }
                }
            }
        }
        if state.started != Value::Value(false) && prior_state.started == Value::Value(true) {
            let reasons = reboot_reasons(&prior_state, &state);
            if !reasons.is_empty() {
                diags.root_warning(
                    format!("VM {} will be restarted", state.name.as_ref_option().cloned().unwrap_or_default()),
                    format!(
                        "Changing {} only takes effect at the next boot, so castle shuts the VM down and starts it again during apply.",
                        reasons.join(", ")
                    ),
                );
            }
        }
        Some((state, prior_private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        if let Some((_, vmid)) = prior_state.node_vmid() {
            self.known.in_state(vmid);
        }
        Some(prior_private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client(diags)?;
        let deadline = deadline(&planned_state, Operation::Create, CREATE_TIMEOUT);
        let node = planned_state
            .node
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let mut new_vm = provision::NewVm {
            node: node.clone(),
            vm_id: planned_state.vm_id.as_ref_option().map(|v| *v as u32),
            clone: planned_state.clone_source(),
            spec: planned_state.to_spec(),
            started: planned_state.started != Value::Value(false),
            adopt: None,
        };
        let name = new_vm.spec.name.clone();
        new_vm.adopt = self.known.adoptable(&node, &name).map(lost_vm);
        let adopt = new_vm.adopt.as_ref().map(|lost| lost.vmid);
        // A replacement made before its predecessor goes (create_before_destroy) must not
        // come up beside it at the same address: it waits, stopped, for the hand-over.
        let holder = match self.address_holder(&client, &new_vm, deadline).await {
            // The VM to adopt holds its own address.
            Ok(holder) => holder.filter(|h| Some(h.vmid) != adopt),
            Err(e) => {
                unable(diags, &format!("create VM {name} on {node}"), e);
                return None;
            }
        };
        if holder.is_some() {
            new_vm.started = false;
            new_vm.spec.awaits_address = true;
        }
        let vmid = match provision::create(&client, &new_vm, deadline).await {
            Ok((vmid, warnings)) => {
                self.known.in_state(vmid);
                for warning in warnings {
                    diags.root_warning(format!("Proxmox warned while creating VM {name}"), warning);
                }
                vmid
            }
            Err(failure) => {
                let action = format!("create VM {name} on {node}");
                if failure.error.is_node_unreachable() {
                    unable(
                        diags,
                        &action,
                        format!(
                            "Proxmox node {node} does not answer ({}): it is down or cut off from \
                             the cluster. Bring it back and apply again, or set node to another \
                             node of the cluster.",
                            failure.error
                        ),
                    );
                } else {
                    unable(diags, &action, &failure.error);
                }
                let vmid = failure.left_behind?;
                // Keep what exists in state: Terraform marks it tainted and replaces it next time.
                let mut state = planned_state;
                state.id = Value::Value(format_id(&node, vmid));
                state.vm_id = Value::Value(vmid as i64);
                if let Ok(Some((facts, running))) =
                    provision::read(&client, &node, vmid, Instant::now() + READ_TIMEOUT).await
                {
                    state.refresh_from(&node, vmid, &facts, running);
                }
                state.fill_unknowns();
                return Some((state, planned_private_state));
            }
        };
        let started = planned_state.started;
        let mut state = planned_state;
        if self
            .read_back(diags, &client, &mut state, &node, vmid)
            .await
            .is_none()
        {
            // The VM exists: keep it in state with what is known, so Terraform taints it and
            // replaces it next time instead of cloning a second one beside it.
            state.id = Value::Value(format_id(&node, vmid));
            state.vm_id = Value::Value(vmid as i64);
            state.fill_unknowns();
        }
        if let Some(holder) = holder {
            // It runs as soon as the address is handed over, within this apply.
            state.started = started;
            let address = state
                .ipv4_address
                .as_ref_option()
                .cloned()
                .unwrap_or_default();
            diags.root_warning(
                format!("VM {name} waits for its address"),
                format!(
                    "VM {holder} of this workspace still runs at {address}, so the new VM {name} ({node}/{vmid}) was \
                     created stopped: the address will be handed over. castle_talos_cluster starts it when it replaces \
                     the node's machine (give the node block vm_id), otherwise deleting {holder} starts it."
                ),
            );
        }
        Some((state, planned_private_state))
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
        let client = self.client(diags)?;
        let (node, vmid) = prior_state.node_vmid()?;
        self.known.in_state(vmid);
        let deadline = deadline(&planned_state, Operation::Update, UPDATE_TIMEOUT);
        let mut started = planned_state.started != Value::Value(false);
        if started && prior_state.started == Value::Value(false) {
            if let Some(holder) = self
                .holder_while_waiting(&client, &prior_state, vmid, deadline)
                .await
            {
                // Still waiting for a hand-over (an apply stopped half-way): starting it now
                // would put two machines on one address.
                started = false;
                diags.root_warning(
                    format!("VM {vmid} still waits for its address"),
                    format!(
                        "VM {holder} of this workspace still runs at its address, so VM {vmid} stays stopped. \
                         It starts when the address is handed over (the node's replacement in castle_talos_cluster, \
                         or the deletion of {holder})."
                    ),
                );
            }
        }
        let spec = planned_state.to_spec();
        if let Err(e) = provision::update(
            &client,
            &node,
            vmid,
            &spec,
            started,
            SHUTDOWN_SECS,
            deadline,
        )
        .await
        {
            unable(diags, &format!("update VM {vmid} on {node}"), e);
            return Some((prior_state, planned_private_state));
        }
        let planned_started = planned_state.started;
        let mut state = planned_state;
        if self
            .read_back(diags, &client, &mut state, &node, vmid)
            .await
            .is_none()
        {
            // Keep the prior state: the next refresh shows what the update left.
            return Some((prior_state, planned_private_state));
        }
        // Held back for a hand-over: state says what was planned, the next refresh what runs.
        state.started = planned_started;
        Some((state, planned_private_state))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let client = self.client(diags)?;
        let (node, vmid) = prior_state.node_vmid()?;
        self.known.in_state(vmid);
        let deadline = deadline(&prior_state, Operation::Delete, DELETE_TIMEOUT);
        if let Err(e) = provision::delete(&client, &node, vmid, SHUTDOWN_SECS, deadline).await {
            unable(diags, &format!("delete VM {vmid} on {node}"), e);
            return None;
        }
        self.hand_over_address(diags, &client, &prior_state, deadline)
            .await;
        Some(())
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.client(diags)?;
        let Some((node, vmid)) = parse_id(&id) else {
            diags.root_error(
                "Unable to import VM",
                format!("{id:?} is not an import id; use NODE/VMID, e.g. pve1/105."),
            );
            return None;
        };
        match provision::read(&client, &node, vmid, Instant::now() + READ_TIMEOUT).await {
            Ok(Some((facts, running))) => {
                self.known.imported(vmid);
                let mut state = VmState::default();
                state.refresh_from(&node, vmid, &facts, running);
                Some((state, ValueEmpty::default()))
            }
            Ok(None) => {
                diags.root_error(
                    "Unable to import VM",
                    format!("VM {vmid} does not exist on node {node}."),
                );
                None
            }
            Err(e) => {
                unable(diags, &format!("import VM {vmid} on {node}"), e);
                None
            }
        }
    }
}

impl ProxmoxVmResource {
    /// The running VM of this workspace that holds the static address `vm` is to have, if any.
    async fn address_holder(
        &self,
        client: &proxmox::Client,
        vm: &provision::NewVm,
        deadline: Instant,
    ) -> Result<Option<handover::WorkspaceVm>, proxmox::Error> {
        match (&vm.spec.ipv4, vm.started) {
            (Some(ipv4), true) => handover::running_holder(client, &ipv4.address, deadline).await,
            _ => Ok(None),
        }
    }

    /// The running VM that holds the address this stopped VM waits for, if it waits for one.
    async fn holder_while_waiting(
        &self,
        client: &proxmox::Client,
        prior: &VmState,
        vmid: u32,
        deadline: Instant,
    ) -> Option<handover::WorkspaceVm> {
        let address = prior.ipv4_address.as_ref_option()?;
        let waiting = handover::awaiting(client, address, deadline).await.ok()??;
        if waiting.vmid != vmid {
            return None;
        }
        handover::running_holder(client, address, deadline)
            .await
            .ok()
            .flatten()
    }

    /// After a VM is deleted: a stopped VM of the workspace created to take over its address
    /// (and not started by a cluster's node replacement) is started now.
    async fn hand_over_address(
        &self,
        diags: &mut Diagnostics,
        client: &proxmox::Client,
        prior: &VmState,
        deadline: Instant,
    ) {
        let Value::Value(address) = &prior.ipv4_address else {
            return;
        };
        let result = async {
            let Some(waiting) = handover::awaiting(client, address, deadline).await? else {
                return Ok(None);
            };
            tracing::info!(vm = %waiting, %address, "starting the VM that waited for this address");
            handover::take_over(client, &waiting.node, waiting.vmid, deadline).await?;
            Ok::<_, proxmox::Error>(Some(waiting))
        }
        .await;
        if let Err(e) = result {
            diags.root_warning(
                format!("The VM waiting for {address} was not started"),
                format!("{e}. The next terraform apply starts it."),
            );
        }
    }

    /// Notes the finished VMs of this workspace that hold the name a planned create wants: the
    /// apply adopts one of them that no object in state holds ([`known`]).
    async fn note_namesakes(&self, state: &VmState) {
        let (Ok(client), Value::Value(node), Value::Value(name)) =
            (self.data.proxmox(), &state.node, &state.name)
        else {
            return;
        };
        let vm_id = state.vm_id.as_ref_option().map(|v| *v as u32);
        // Asked once: the plan-time checks already waited for a Proxmox that does not answer.
        // Unanswered, nothing is noted, and the apply clones.
        let found = provision::finished_namesakes(&client, node, name, vm_id).await;
        self.known.namesakes(
            found
                .unwrap_or_default()
                .into_iter()
                .map(|vmid| known::Namesake {
                    node: node.clone(),
                    name: name.clone(),
                    vmid,
                }),
        );
    }

    /// Over a state file a killed run emptied: notes the VM the backup lists for this create,
    /// for the apply to adopt, or refuses the plan where only the restored state can do it
    /// right ([`from_backup`]).
    async fn note_backup_vm(&self, diags: &mut Diagnostics, state: &VmState) -> Option<()> {
        let Some(emptied) = std::env::current_dir()
            .ok()
            .and_then(|dir| emptied_state::find(&dir))
        else {
            return Some(());
        };
        let (Ok(client), Value::Value(node), Value::Value(name)) =
            (self.data.proxmox(), &state.node, &state.name)
        else {
            return Some(());
        };
        let backup = from_backup::listed_vms(&emptied.snapshot);
        // Asked once, like the namesakes: unanswered, the apply clones.
        let listed = provision::namesakes(&client, node, name)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(vmid, ours)| from_backup::Listed { vmid, ours })
            .collect::<Vec<_>>();
        let replacing = terraform_command::Command::of_parent().is_some_and(|c| c.replaces());
        let decision = from_backup::decide(&backup, &state.wanted(), &listed, replacing);
        tracing::info!(%name, ?decision, backup = %emptied.backup.display(), "the state file is empty");
        match decision {
            from_backup::Decision::Clone => Some(()),
            from_backup::Decision::Adopt(vmid) => {
                self.known.listed_in_backup(known::Namesake {
                    node: node.clone(),
                    name: name.clone(),
                    vmid,
                });
                Some(())
            }
            from_backup::Decision::Restore(reason) => {
                emptied.refuse(
                    diags,
                    &format!("castle cannot create VM {name} in its place: {reason}."),
                    "terraform apply",
                );
                None
            }
        }
    }

    /// Reads the VM after a write, so state holds what Proxmox really has.
    async fn read_back(
        &self,
        diags: &mut Diagnostics,
        client: &proxmox::Client,
        state: &mut VmState,
        node: &str,
        vmid: u32,
    ) -> Option<()> {
        match provision::read(client, node, vmid, Instant::now() + READ_TIMEOUT).await {
            Ok(Some((facts, running))) => {
                state.refresh_from(node, vmid, &facts, running);
                Some(())
            }
            Ok(None) => {
                diags.root_error(
                    format!("VM {vmid} vanished"),
                    "The VM was written but cannot be read back; something removed it.",
                );
                None
            }
            Err(e) => {
                unable(diags, &format!("read back VM {vmid}"), e);
                None
            }
        }
    }

    /// Plan-time checks that need the API: the credentials work, the node and the template
    /// exist. Refused credentials are an error naming the provider setting; an endpoint that
    /// does not answer is a warning (apply retries and says why).
    async fn check_against_cluster(&self, diags: &mut Diagnostics, state: &VmState) {
        let Ok(client) = self.data.proxmox() else {
            return;
        };
        let deadline = Instant::now() + PLAN_CHECK_TIMEOUT;
        let nodes = with_policy(API_CALL, deadline, "list the nodes", || {
            provision::node_names(&client)
        })
        .await;
        let nodes = match nodes {
            Ok(nodes) => Some(nodes),
            Err(e @ proxmox::Error::Auth { .. }) => {
                let setting = client.secret_setting();
                diags.root_error(
                    "Proxmox refused the credentials",
                    format!(
                        "{e}. Check the provider's proxmox {{ {setting} }} setting (and username for a password login)."
                    ),
                );
                return;
            }
            Err(e @ proxmox::Error::UntrustedCertificate { .. }) => {
                diags.root_error("Proxmox's TLS certificate is not trusted", e.to_string());
                return;
            }
            Err(e @ proxmox::Error::Transport { .. }) => {
                self.data.warn_once(
                    diags,
                    "Proxmox does not answer",
                    format!(
                        "{e}. The plan could not check the node and the template; check the provider's proxmox {{ endpoint }} setting."
                    ),
                );
                return;
            }
            Err(_) => None,
        };
        if let Value::Value(node) = &state.node {
            if let Some(nodes) = nodes {
                if !nodes.contains(node) {
                    diags.error(
                        "Unknown Proxmox node",
                        format!(
                            "node {node:?} is not in the cluster (nodes: {}).",
                            nodes.join(", ")
                        ),
                        path(&["node"]),
                    );
                }
            }
        }
        if let Value::Value(clone) = &state.clone {
            if clone.template_id.is_unknown() || clone.template_name.is_unknown() {
                return;
            }
            let node = state.node.as_ref_option().cloned().unwrap_or_default();
            let source = state.clone_source();
            let found = with_policy(API_CALL, deadline, "find the template", || {
                provision::find_template(&client, &source, &node)
            })
            .await;
            if let Err(e) = found {
                if e.is_not_found() || e.is_template_elsewhere() {
                    let title = if e.is_not_found() {
                        "Template not found"
                    } else {
                        "Template cannot be cloned to this node"
                    };
                    let attribute = if clone.template_id.is_value() {
                        "template_id"
                    } else {
                        "template_name"
                    };
                    diags.error(title, e.to_string(), path(&["clone", "0", attribute]));
                }
            }
        }
    }
}
