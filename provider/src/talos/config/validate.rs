//! Checks on a [`ClusterSpec`], reported as issues the resource layer maps to diagnostics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::patch;
use super::spec::ClusterSpec;
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

/// Checks a spec; an empty list means it is fine. Errors stop generation, warnings do not.
pub fn validate(spec: &ClusterSpec) -> Vec<Issue> {
    let mut issues = Issues(Vec::new());
    check_versions(spec, &mut issues);
    check_name(spec, &mut issues);
    let addresses = check_nodes(spec, &mut issues);
    check_control_plane_count(spec, &mut issues);
    check_gateway(spec, &addresses, &mut issues);
    check_vip(spec, &addresses, &mut issues);
    check_nameservers(spec, &mut issues);
    check_image(spec, &mut issues);
    check_manifests(spec, &mut issues);
    check_patches(spec, &mut issues);
    issues.0
}

fn check_versions(spec: &ClusterSpec, issues: &mut Issues) {
    if let Err(e) = TalosVersion::parse(&spec.talos_version) {
        issues.error(
            vec![attr("talos_version")],
            "Unsupported Talos version",
            format!("{e}. castle generates configs for these release lines only."),
        );
    }
    if let Err(e) = KubernetesVersion::parse(&spec.kubernetes_version) {
        issues.error(
            vec![attr("kubernetes_version")],
            "Invalid Kubernetes version",
            e.to_string(),
        );
    }
}

fn check_name(spec: &ClusterSpec, issues: &mut Issues) {
    if spec.name.trim().is_empty() {
        issues.error(
            vec![attr("name")],
            "Empty cluster name",
            "The cluster needs a name.",
        );
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

/// Checks every node; returns the parsed addresses of the nodes whose address is valid.
fn check_nodes(spec: &ClusterSpec, issues: &mut Issues) -> BTreeMap<String, IpNet> {
    let mut parsed = BTreeMap::new();
    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (name, node) in &spec.nodes {
        let hostname = node.hostname.as_deref().unwrap_or(name);
        if !is_dns_label(hostname) {
            let path = if node.hostname.is_some() {
                node_path(name, "hostname")
            } else {
                vec![attr("nodes"), PathStep::Key(name.clone())]
            };
            issues.error(
                path,
                "Invalid hostname",
                format!(
                    "{hostname:?} is not a valid hostname: use lowercase letters, digits and '-' \
                     (at most 63). Without `hostname`, the node's name is used."
                ),
            );
        }
        if node.install_disk.trim().is_empty() {
            issues.error(
                node_path(name, "install_disk"),
                "Missing install disk",
                "Set the disk Talos installs to, e.g. /dev/sda.",
            );
        }
        let Ok(net) = node.address.parse::<IpNet>() else {
            let detail = if node.address.parse::<IpAddr>().is_ok() {
                format!(
                    "{:?} has no prefix length: write it as a CIDR, e.g. 10.0.0.11/24.",
                    node.address
                )
            } else {
                format!(
                    "{:?} is not an address in CIDR form, e.g. 10.0.0.11/24.",
                    node.address
                )
            };
            issues.error(node_path(name, "address"), "Invalid node address", detail);
            continue;
        };
        if let Some(other) = seen.insert(net.addr(), name) {
            issues.error(
                node_path(name, "address"),
                "Duplicate node address",
                format!(
                    "{} is also the address of node {other:?}: every node needs its own.",
                    net.addr()
                ),
            );
        }
        parsed.insert(name.clone(), net);
    }
    parsed
}

fn check_control_plane_count(spec: &ClusterSpec, issues: &mut Issues) {
    let count = spec.control_planes().count();
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

fn check_gateway(spec: &ClusterSpec, addresses: &BTreeMap<String, IpNet>, issues: &mut Issues) {
    let Ok(gateway) = spec.gateway.parse::<IpAddr>() else {
        issues.error(
            vec![attr("gateway")],
            "Invalid gateway",
            format!("{:?} is not an IP address.", spec.gateway),
        );
        return;
    };
    let outside: Vec<String> = addresses
        .iter()
        .filter(|(_, net)| !net.trunc().contains(&gateway))
        .map(|(name, net)| format!("{name} ({net})"))
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
    if addresses.values().any(|n| n.addr() == gateway) {
        issues.error(
            vec![attr("gateway")],
            "Gateway is a node address",
            format!("{gateway} is the address of a node, not a router."),
        );
    }
}

fn check_vip(spec: &ClusterSpec, addresses: &BTreeMap<String, IpNet>, issues: &mut Issues) {
    let Some(vip) = &spec.vip else {
        if spec.endpoint.is_none() {
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
    if let Some((name, _)) = addresses.iter().find(|(_, n)| n.addr() == ip) {
        issues.error(
            vec![attr("vip")],
            "VIP equals a node address",
            format!(
                "{ip} is the address of node {name:?}. The VIP must be a free address that the \
                 control planes take over in turn."
            ),
        );
    }
    if spec.gateway.parse::<IpAddr>().ok() == Some(ip) {
        issues.error(
            vec![attr("vip")],
            "VIP equals the gateway",
            format!("{ip} is the gateway."),
        );
    }
    let outside: Vec<String> = spec
        .control_planes()
        .filter_map(|(name, _)| addresses.get(name).map(|n| (name, n)))
        .filter(|(_, n)| !n.trunc().contains(&ip))
        .map(|(name, n)| format!("{name} ({n})"))
        .collect();
    if !outside.is_empty() {
        issues.error(
            vec![attr("vip")],
            "VIP outside the control planes' subnet",
            format!(
                "A layer 2 VIP is announced by ARP on the control planes' own network, so {ip} \
                 must be inside the subnet of every control plane; it is not inside: {}.",
                outside.join(", ")
            ),
        );
    }
}

fn check_nameservers(spec: &ClusterSpec, issues: &mut Issues) {
    for (i, ns) in spec.nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            issues.error(
                vec![attr("nameservers"), PathStep::Index(i)],
                "Invalid nameserver",
                format!("{ns:?} is not an IP address."),
            );
        }
    }
}

fn check_image(spec: &ClusterSpec, issues: &mut Issues) {
    if spec.install_image.is_some() && !spec.extensions.is_empty() {
        issues.error(
            vec![attr("extensions")],
            "Both install_image and extensions set",
            "Extensions choose an Image Factory installer image; with install_image set they \
             would be ignored. Set one or the other.",
        );
    }
    if spec.install_image.is_none() {
        if let Ok(v) = TalosVersion::parse(&spec.talos_version) {
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
        if let Err(reason) = patch::parse_patch(text) {
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
