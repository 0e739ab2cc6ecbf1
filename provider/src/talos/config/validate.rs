//! Checks on a [`ClusterSpec`], reported as issues the resource layer maps to diagnostics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::endpoint::endpoint_url;
use super::patch;
use super::spec::{ClusterSpec, DiskEncryption, EncryptionKeyKind, NetworkLink, Role};
use super::version::{KubernetesVersion, TalosVersion};

/// How bad an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Generation refuses the spec.
    Error,
    /// Works, but probably not what the user wants.
    Warning,
}

/// One step of an attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// An attribute, e.g. `nodes`.
    Attribute(String),
    /// A map key, e.g. `"cp-1"`.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A problem with the spec, located by attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where, e.g. `nodes["cp-1"].address`.
    pub path: Vec<PathStep>,
    /// Error or warning.
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// Explanation and fix.
    pub detail: String,
}

/// `nodes["cp-1"].address` style rendering of a path.
pub fn display_path(path: &[PathStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            PathStep::Attribute(a) if out.is_empty() => out.push_str(a),
            PathStep::Attribute(a) => {
                let _ = write!(out, ".{a}");
            }
            PathStep::Key(k) => {
                let _ = write!(out, "[{k:?}]");
            }
            PathStep::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

fn attr(a: &str) -> PathStep {
    PathStep::Attribute(a.to_string())
}

fn node_path(name: &str, field: &str) -> Vec<PathStep> {
    vec![attr("nodes"), PathStep::Key(name.to_string()), attr(field)]
}

struct Issues(Vec<Issue>);

impl Issues {
    fn error(
        &mut self,
        path: Vec<PathStep>,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.push(path, Severity::Error, summary, detail);
    }
    fn warning(
        &mut self,
        path: Vec<PathStep>,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.push(path, Severity::Warning, summary, detail);
    }
    fn push(
        &mut self,
        path: Vec<PathStep>,
        severity: Severity,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.0.push(Issue {
            path,
            severity,
            summary: summary.into(),
            detail: detail.into(),
        });
    }
}

/// What is known of a cluster description while Terraform plans: `None` where a value is not
/// known yet (e.g. a node's address that comes from a VM created in the same apply). Each check
/// runs on the values it needs, whatever else is unknown.
#[derive(Debug, Clone, Default)]
pub struct KnownSpec {
    /// Cluster name.
    pub name: Option<String>,
    /// `Some(None)`: known to be unset.
    pub endpoint: Option<Option<String>>,
    /// `Some(None)`: known to be unset.
    pub vip: Option<Option<String>>,
    /// Talos release.
    pub talos_version: Option<String>,
    /// Kubernetes release (the release's default already filled in).
    pub kubernetes_version: Option<String>,
    /// The node blocks; `None` when the set itself is unknown.
    pub nodes: Option<Vec<KnownNode>>,
    /// Gateway.
    pub gateway: Option<String>,
    /// Nameservers (each may be unknown).
    pub nameservers: Option<Vec<Option<String>>>,
    /// `Some(None)`: known to be unset.
    pub install_image: Option<Option<String>>,
    /// Extensions; `None` when any is unknown.
    pub extensions: Option<Vec<String>>,
    /// `Some(None)`: no encryption.
    pub disk_encryption: Option<Option<DiskEncryption>>,
}

/// One node block as known at plan time.
#[derive(Debug, Clone, Default)]
pub struct KnownNode {
    /// Name.
    pub name: Option<String>,
    /// CIDR address.
    pub address: Option<String>,
    /// Role.
    pub role: Option<Role>,
    /// Install disk.
    pub install_disk: Option<String>,
    /// `Some(None)`: the name is the hostname.
    pub hostname: Option<Option<String>>,
    /// NIC selection.
    pub link: Option<NetworkLink>,
}

impl From<&ClusterSpec> for KnownSpec {
    fn from(spec: &ClusterSpec) -> Self {
        KnownSpec {
            name: Some(spec.name.clone()),
            endpoint: Some(spec.endpoint.clone()),
            vip: Some(spec.vip.clone()),
            talos_version: Some(spec.talos_version.clone()),
            kubernetes_version: Some(spec.kubernetes_version.clone()),
            nodes: Some(
                spec.nodes
                    .iter()
                    .map(|(name, n)| KnownNode {
                        name: Some(name.clone()),
                        address: Some(n.address.clone()),
                        role: Some(n.role),
                        install_disk: Some(n.install_disk.clone()),
                        hostname: Some(n.hostname.clone()),
                        link: Some(n.link.clone()),
                    })
                    .collect(),
            ),
            gateway: Some(spec.gateway.clone()),
            nameservers: Some(spec.nameservers.iter().cloned().map(Some).collect()),
            install_image: Some(spec.install_image.clone()),
            extensions: Some(spec.extensions.clone()),
            disk_encryption: Some(spec.disk_encryption),
        }
    }
}

/// Checks a spec; an empty list means it is fine. Errors stop generation, warnings do not.
pub fn validate(spec: &ClusterSpec) -> Vec<Issue> {
    let mut issues = Issues(validate_known(&KnownSpec::from(spec)));
    check_manifests(spec, &mut issues);
    check_patches(spec, &mut issues);
    issues.0
}

/// Checks what is known of a spec at plan time: every check whose inputs are all known.
pub fn validate_known(spec: &KnownSpec) -> Vec<Issue> {
    let mut issues = Issues(Vec::new());
    check_versions(spec, &mut issues);
    check_name(spec, &mut issues);
    check_endpoint(spec, &mut issues);
    let addresses = check_nodes(spec, &mut issues);
    check_nic_selection(spec, &mut issues);
    check_control_plane_count(spec, &mut issues);
    check_gateway(spec, &addresses, &mut issues);
    check_vip(spec, &addresses, &mut issues);
    check_nameservers(spec, &mut issues);
    check_image(spec, &mut issues);
    check_encryption(spec, &mut issues);
    issues.0
}

/// Whether a node that runs `release` (`v1.11.5`, or a line `v1.11`) can start the cluster's
/// Kubernetes before castle upgrades it: a node on an older release line than `talos_version`
/// gets the cluster's config in that line's documents first and is upgraded only once it
/// joined, so its release's own window must hold `kubernetes_version` (Talos refuses the
/// kubelet image otherwise, from v1.11 in maintenance mode too). The error names
/// `kubernetes_version` and the node; a release castle cannot read, or one not older than
/// `talos_version`, passes.
// Talos: pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (v1.11.0) RuntimeValidate
// → ValidateKubernetesImageTag; pkg/machinery/compatibility/talos110..talos113 windows.
pub fn check_release_runs_kubernetes(
    spec: &ClusterSpec,
    node: &str,
    release: &str,
) -> Option<Issue> {
    let target = TalosVersion::parse(&spec.talos_version).ok()?;
    let running = TalosVersion::parse(release).ok()?;
    let k8s = KubernetesVersion::parse(&spec.kubernetes_version).ok()?;
    if running.minor >= target.minor {
        return None;
    }
    let (min, max) = running.minor.kubernetes_window();
    if (min..=max).contains(&k8s.minor()) {
        return None;
    }
    let (target_min, target_max) = target.minor.kubernetes_window();
    let (both_min, both_max) = (min.max(target_min), max.min(target_max));
    let choose = if both_min <= both_max {
        format!(
            "Set kubernetes_version to a release both run (1.{both_min} to 1.{both_max}) and raise it after the upgrade, \
             or boot the node from a template of {}",
            target.minor.as_str()
        )
    } else {
        format!("Boot the node from a template of {}", target.minor.as_str())
    };
    Some(Issue {
        path: vec![attr("kubernetes_version")],
        severity: Severity::Error,
        summary: format!("Node {node} cannot run kubernetes_version before its upgrade"),
        detail: format!(
            "Node {node} runs Talos {release} (its template), which supports Kubernetes 1.{min} to 1.{max}, and \
             kubernetes_version is {}: castle gives the node its configuration in {}'s documents and upgrades it \
             to talos_version {} only after it joined, so it would first start a kubelet its release does not \
             support (Talos refuses it from v1.11 on). {choose}. Nothing was applied to any node.",
            k8s.tag(),
            running.minor.as_str(),
            spec.talos_version,
        ),
    })
}

fn check_versions(spec: &KnownSpec, issues: &mut Issues) {
    let talos = spec.talos_version.as_deref().map(|v| {
        let parsed = TalosVersion::parse(v);
        if let Err(e) = &parsed {
            issues.error(
                vec![attr("talos_version")],
                "Unsupported Talos version",
                format!("{e}. castle generates configs for these release lines only."),
            );
        }
        parsed.ok()
    });
    let Some(k8s_text) = spec.kubernetes_version.as_deref() else {
        return;
    };
    let k8s = match KubernetesVersion::parse(k8s_text) {
        Ok(k8s) => k8s,
        Err(e) => {
            issues.error(
                vec![attr("kubernetes_version")],
                "Invalid Kubernetes version",
                e.to_string(),
            );
            return;
        }
    };
    let Some(Some(talos)) = talos else { return };
    let (min, max) = talos.minor.kubernetes_window();
    if !(min..=max).contains(&k8s.minor()) {
        issues.error(
            vec![attr("kubernetes_version")],
            "Kubernetes version outside the Talos release's window",
            format!(
                "talos_version {} runs Kubernetes 1.{min} to 1.{max}, and kubernetes_version is {}: Talos \
                 refuses the kubelet and control-plane images of any other release. Choose a \
                 kubernetes_version in that window (or leave it unset for {}), or another talos_version.",
                spec.talos_version.as_deref().unwrap_or_default(),
                k8s.tag(),
                talos.minor.default_kubernetes_version(),
            ),
        );
    }
}

fn check_name(spec: &KnownSpec, issues: &mut Issues) {
    if spec.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        issues.error(
            vec![attr("name")],
            "Empty cluster name",
            "The cluster needs a name.",
        );
    }
}

fn check_endpoint(spec: &KnownSpec, issues: &mut Issues) {
    if let Some(Some(endpoint)) = &spec.endpoint {
        if let Err(reason) = endpoint_url(endpoint) {
            issues.error(
                vec![attr("endpoint")],
                "Invalid endpoint",
                format!(
                    "endpoint {reason}. Write the Kubernetes API as https://host:port or as a host \
                     (port 6443 is added), e.g. https://k8s.lan:6443."
                ),
            );
        }
    }
}

/// A DNS label as Kubernetes accepts for node names.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Path of a node's field; the `nodes` attribute itself while the name is unknown.
fn known_node_path(node: &KnownNode, field: &str) -> Vec<PathStep> {
    match &node.name {
        Some(name) => node_path(name, field),
        None => vec![attr("nodes")],
    }
}

/// Checks every node; returns the parsed addresses of the nodes whose name and address are
/// valid, with their role when known.
fn check_nodes(spec: &KnownSpec, issues: &mut Issues) -> Vec<(String, Option<Role>, IpNet)> {
    let mut parsed = Vec::new();
    let mut seen: BTreeMap<IpAddr, String> = BTreeMap::new();
    for node in spec.nodes.iter().flatten() {
        let label = node.name.clone().unwrap_or_else(|| "(unknown)".into());
        if let (Some(name), Some(hostname)) = (&node.name, &node.hostname) {
            let host = hostname.as_deref().unwrap_or(name);
            if !is_dns_label(host) {
                let path = if hostname.is_some() {
                    node_path(name, "hostname")
                } else {
                    vec![attr("nodes"), PathStep::Key(name.clone())]
                };
                issues.error(
                    path,
                    "Invalid hostname",
                    format!(
                        "{host:?} is not a valid hostname: use lowercase letters, digits and '-' \
                         (at most 63). Without `hostname`, the node's name is used."
                    ),
                );
            }
        }
        if node
            .install_disk
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            issues.error(
                known_node_path(node, "install_disk"),
                "Missing install disk",
                "Set the disk Talos installs to, e.g. /dev/sda.",
            );
        }
        let Some(address) = &node.address else {
            continue;
        };
        let Ok(net) = address.parse::<IpNet>() else {
            let detail = if address.parse::<IpAddr>().is_ok() {
                format!("{address:?} has no prefix length: write it as a CIDR, e.g. 10.0.0.11/24.")
            } else {
                format!("{address:?} is not an address in CIDR form, e.g. 10.0.0.11/24.")
            };
            issues.error(
                known_node_path(node, "address"),
                "Invalid node address",
                detail,
            );
            continue;
        };
        if let Some(other) = seen.insert(net.addr(), label.clone()) {
            issues.error(
                known_node_path(node, "address"),
                "Duplicate node address",
                format!(
                    "{} is also the address of node {other:?}: every node needs its own.",
                    net.addr()
                ),
            );
        }
        parsed.push((label, node.role, net));
    }
    parsed
}

/// A NIC named by MAC must be one NIC: refuses malformed and shared MAC addresses.
fn check_nic_selection(spec: &KnownSpec, issues: &mut Issues) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for node in spec.nodes.iter().flatten() {
        let Some(NetworkLink::Mac(mac)) = &node.link else {
            continue;
        };
        let label = node.name.clone().unwrap_or_else(|| "(unknown)".into());
        let octets: Vec<&str> = mac.split(':').collect();
        let well_formed = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            issues.error(
                known_node_path(node, "mac_address"),
                "Invalid MAC address",
                format!(
                    "node {label:?}: {mac:?} is not a MAC address such as bc:24:11:00:00:01, so \
                     no NIC (or an unintended one) would carry the node's address."
                ),
            );
            continue;
        }
        if let Some(other) = seen.insert(mac.to_ascii_lowercase(), label.clone()) {
            issues.error(
                known_node_path(node, "mac_address"),
                "Ambiguous NIC selection",
                format!(
                    "nodes {other:?} and {label:?} both select the NIC {mac}: a MAC address names \
                     one NIC of one machine. Give each node its own VM's mac_address."
                ),
            );
        }
    }
}

fn check_control_plane_count(spec: &KnownSpec, issues: &mut Issues) {
    let Some(nodes) = &spec.nodes else { return };
    let roles: Option<Vec<Role>> = nodes.iter().map(|n| n.role).collect();
    let Some(roles) = roles else { return };
    let count = roles.iter().filter(|r| **r == Role::ControlPlane).count();
    if count == 0 {
        issues.error(
            vec![attr("nodes")],
            "No control-plane node",
            "At least one node needs role \"controlplane\": it runs etcd and the Kubernetes API.",
        );
    } else if count & 1 == 0 {
        let survive = (count - 1) / 2;
        issues.warning(
            vec![attr("nodes")],
            format!("Even number of control-plane nodes ({count})"),
            format!(
                "etcd needs a quorum (a majority of its members) to work, so {count} control planes survive \
                 the loss of only {survive} node(s), no more than {} would. An odd count is \
                 better: 3 nodes survive one loss, while 2 nodes survive none.",
                count - 1
            ),
        );
    }
}

fn check_gateway(
    spec: &KnownSpec,
    addresses: &[(String, Option<Role>, IpNet)],
    issues: &mut Issues,
) {
    let Some(gateway_text) = &spec.gateway else {
        return;
    };
    let Ok(gateway) = gateway_text.parse::<IpAddr>() else {
        issues.error(
            vec![attr("gateway")],
            "Invalid gateway",
            format!("{gateway_text:?} is not an IP address."),
        );
        return;
    };
    let outside: Vec<String> = addresses
        .iter()
        .filter(|(_, _, net)| !net.trunc().contains(&gateway))
        .map(|(name, _, net)| format!("{name} ({net})"))
        .collect();
    if !outside.is_empty() {
        issues.error(
            vec![attr("gateway")],
            "Gateway outside the nodes' subnet",
            format!(
                "The gateway {gateway} must be reachable on-link from every node, but it is \
                 outside the subnet of: {}.",
                outside.join(", ")
            ),
        );
    }
    if addresses.iter().any(|(_, _, n)| n.addr() == gateway) {
        issues.error(
            vec![attr("gateway")],
            "Gateway is a node address",
            format!("{gateway} is the address of a node, not a router."),
        );
    }
}

fn check_vip(spec: &KnownSpec, addresses: &[(String, Option<Role>, IpNet)], issues: &mut Issues) {
    let Some(vip) = &spec.vip else { return };
    let Some(vip) = vip else {
        if spec.endpoint == Some(None) {
            issues.warning(
                vec![attr("endpoint")],
                "No VIP and no endpoint",
                "The Kubernetes API endpoint will be the first control plane's address: if that \
                 node is down, nodes and clients lose the API. Set `vip` or `endpoint`.",
            );
        }
        return;
    };
    let Ok(ip) = vip.parse::<IpAddr>() else {
        issues.error(
            vec![attr("vip")],
            "Invalid VIP",
            format!("{vip:?} is not an IP address (write it without a prefix length)."),
        );
        return;
    };
    if let Some((name, _, _)) = addresses.iter().find(|(_, _, n)| n.addr() == ip) {
        issues.error(
            vec![attr("vip")],
            "VIP equals a node address",
            format!(
                "{ip} is the address of node {name:?}. The VIP must be a free address that the \
                 control planes take over in turn."
            ),
        );
    }
    if spec
        .gateway
        .as_deref()
        .and_then(|g| g.parse::<IpAddr>().ok())
        == Some(ip)
    {
        issues.error(
            vec![attr("vip")],
            "VIP equals the gateway",
            format!("{ip} is the gateway."),
        );
    }
    let outside: Vec<String> = addresses
        .iter()
        .filter(|(_, role, _)| *role == Some(Role::ControlPlane))
        .filter(|(_, _, n)| !n.trunc().contains(&ip))
        .map(|(name, _, n)| format!("{name} ({n})"))
        .collect();
    if !outside.is_empty() {
        issues.error(
            vec![attr("vip")],
            "VIP outside the control planes' subnet",
            format!(
                "A layer 2 VIP is announced by ARP on the control planes' own network, so vip {ip} \
                 must be inside the subnet of every control plane; it is not inside: {}.",
                outside.join(", ")
            ),
        );
    }
}

fn check_nameservers(spec: &KnownSpec, issues: &mut Issues) {
    for (i, ns) in spec.nameservers.iter().flatten().enumerate() {
        let Some(ns) = ns else { continue };
        if ns.parse::<IpAddr>().is_err() {
            issues.error(
                vec![attr("nameservers"), PathStep::Index(i)],
                "Invalid nameserver",
                format!("{ns:?} is not an IP address."),
            );
        }
    }
}

fn check_image(spec: &KnownSpec, issues: &mut Issues) {
    if matches!(spec.install_image, Some(Some(_)))
        && spec.extensions.as_ref().is_some_and(|e| !e.is_empty())
    {
        issues.error(
            vec![attr("extensions")],
            "Both install_image and extensions set",
            "Extensions choose an Image Factory installer image; with install_image set they \
             would be ignored. Set one or the other.",
        );
    }
    if spec.install_image == Some(None) {
        if let Some(Ok(v)) = spec.talos_version.as_deref().map(TalosVersion::parse) {
            if v.patch.is_none() {
                issues.error(
                    vec![attr("talos_version")],
                    "Talos version needs a patch release",
                    format!(
                        "The installer image is tagged with a full release (e.g. {}.0); give \
                         talos_version in that form, or set install_image.",
                        v.minor.as_str()
                    ),
                );
            }
        }
    }
}

/// `tpm` keys are sealed against the PCR public key that only signed SecureBoot images carry.
// Talos: internal/pkg/secureboot/tpm2/seal.go, policy.go (v1.12.0; constants.PCRPublicKey);
// internal/pkg/uki/uki.go BuildSigned.
fn check_encryption(spec: &KnownSpec, issues: &mut Issues) {
    let Some(Some(DiskEncryption {
        key: EncryptionKeyKind::Tpm,
    })) = spec.disk_encryption
    else {
        return;
    };
    // Without install_image castle picks the factory's SecureBoot installer itself.
    let Some(Some(image)) = &spec.install_image else {
        return;
    };
    if !image.contains("installer-secureboot") {
        issues.error(
            vec![attr("disk_encryption")],
            "TPM disk encryption needs a SecureBoot installer",
            "disk_encryption = \"tpm\" needs a SecureBoot installer: Talos seals a `tpm` key against the PCR signing key that only a signed SecureBoot \
             image carries, so with the install_image given the node would never finish \
             provisioning its disks. Leave install_image unset (castle then installs the Image \
             Factory's …/installer-secureboot/<schematic>:<version>), set it to a SecureBoot \
             installer, or use disk_encryption = \"nodeID\".",
        );
    }
}

fn check_manifests(spec: &ClusterSpec, issues: &mut Issues) {
    let mut names = BTreeMap::new();
    for (i, m) in spec.inline_manifests.iter().enumerate() {
        let path = vec![attr("inline_manifests"), PathStep::Index(i), attr("name")];
        if m.name.trim().is_empty() {
            issues.error(
                path,
                "Inline manifest without a name",
                "Every inline manifest needs a unique name.",
            );
        } else if let Some(first) = names.insert(m.name.as_str(), i) {
            issues.error(
                path,
                "Duplicate inline manifest name",
                format!(
                    "{:?} is also the name of inline_manifests[{first}].",
                    m.name
                ),
            );
        }
    }
    for (i, url) in spec.extra_manifests.iter().enumerate() {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            issues.error(
                vec![attr("extra_manifests"), PathStep::Index(i)],
                "Extra manifest is not a URL",
                format!("{url:?}: Talos downloads extra manifests, give an http(s) URL."),
            );
        }
    }
}

fn check_patches(spec: &ClusterSpec, issues: &mut Issues) {
    let mut check = |path: Vec<PathStep>, text: &str| {
        if let Err(reason) = patch::parse_any(text) {
            issues.error(
                path.clone(),
                "Invalid config patch",
                format!("{}: {reason}", display_path(&path)),
            );
        }
    };
    for (i, p) in spec.patches.iter().enumerate() {
        check(vec![attr("patches"), PathStep::Index(i)], p);
    }
    for (role, patches) in &spec.role_patches {
        for (i, p) in patches.iter().enumerate() {
            check(
                vec![
                    attr("role_patches"),
                    PathStep::Key(role.as_str().into()),
                    PathStep::Index(i),
                ],
                p,
            );
        }
    }
    for (name, node) in &spec.nodes {
        for (i, p) in node.patches.iter().enumerate() {
            check(
                vec![
                    attr("nodes"),
                    PathStep::Key(name.clone()),
                    attr("patches"),
                    PathStep::Index(i),
                ],
                p,
            );
        }
    }
}

/// Whether any issue is an error.
pub(crate) fn has_errors(issues: &[Issue]) -> bool {
    issues.iter().any(|i| i.severity == Severity::Error)
}
