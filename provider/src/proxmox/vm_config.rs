//! The VM castle wants, as plain Rust, and its mapping to and from PVE config keys (pure).

use std::collections::{BTreeMap, BTreeSet};

use super::client::Params;
use super::vms::VmConfig;

/// One data disk: `scsi0`, `virtio1`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Bus and index, e.g. `scsi0`.
    pub slot: String,
    /// Size in GiB.
    pub size_gb: u64,
}

/// `net0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Bridge, e.g. `vmbr0`.
    pub bridge: String,
    /// VLAN tag.
    pub vlan: Option<u16>,
    /// MAC address; kept from the clone when absent.
    pub mac: Option<String>,
    /// NIC model, e.g. `virtio`.
    pub model: String,
}

/// Static IPv4 for cloud-init (`ipconfig0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Spec {
    /// CIDR, e.g. `10.0.0.11/24`.
    pub address: String,
    /// Default gateway.
    pub gateway: Option<String>,
}

/// Everything castle sets on a VM after the clone. `None` leaves the template's value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSpec {
    /// VM name.
    pub name: String,
    /// Cores per socket.
    pub cores: Option<u64>,
    /// Sockets.
    pub sockets: Option<u64>,
    /// Memory in MiB.
    pub memory: Option<u64>,
    /// Disks to size.
    pub disks: Vec<DiskSpec>,
    /// First NIC.
    pub network: Option<NetworkSpec>,
    /// Static address.
    pub ipv4: Option<Ipv4Spec>,
    /// DNS servers.
    pub nameservers: Option<Vec<String>>,
    /// DNS search domain.
    pub search_domain: Option<String>,
    /// Tags (order does not matter).
    pub tags: Option<BTreeSet<String>>,
    /// Notes.
    pub description: Option<String>,
    /// Start at host boot.
    pub on_boot: Option<bool>,
    /// Add [`MANAGED_TAG`] (on create).
    pub mark_managed: bool,
    /// The workspace's marker tag (on create; see [`WORKSPACE_TAG_PREFIX`]).
    pub workspace_tag: Option<String>,
    /// Add [`AWAITS_ADDRESS_TAG`] (on a create that leaves the VM stopped because another VM
    /// of the workspace still holds its address).
    pub awaits_address: bool,
}

/// The tag of a VM created stopped because another running VM of the same workspace holds its
/// static address (a `create_before_destroy` replacement): whoever hands the address over
/// (the cluster's node replacement, or the old VM's deletion) starts it and drops the tag. Not
/// shown in the resource's `tags`.
pub const AWAITS_ADDRESS_TAG: &str = "castle-awaits-address";

/// Prefix of the tag that marks which Terraform working directory and workspace created a VM,
/// so that only that workspace adopts it after an interrupted create (VM names are not unique
/// in PVE, and two workspaces may both have a `cp-1`). Not shown in the resource's `tags`.
pub const WORKSPACE_TAG_PREFIX: &str = "castle-ws-";

/// The tag castle puts on every VM it creates, so that a create interrupted by a crash can find
/// its VM again instead of leaving it orphaned. It is not shown in the resource's `tags`.
pub const MANAGED_TAG: &str = "castle-managed";

/// Keys PVE applies to a running VM at once; a change to any other key waits for a reboot.
pub const LIVE_KEYS: &[&str] = &["name", "description", "onboot", "tags"];

/// What the VM is, read back from its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFacts {
    /// Name.
    pub name: String,
    /// Cores (PVE default 1).
    pub cores: u64,
    /// Sockets (PVE default 1).
    pub sockets: u64,
    /// Memory MiB (PVE default 512).
    pub memory: u64,
    /// Every data disk (not CD-ROMs, EFI or TPM state), by slot, with its size.
    pub disks: BTreeMap<String, DiskSize>,
    /// `net0`.
    pub network: Option<NetworkSpec>,
    /// `ipconfig0`, when static.
    pub ipv4: Option<Ipv4Spec>,
    /// `nameserver`.
    pub nameservers: Vec<String>,
    /// `searchdomain`.
    pub search_domain: Option<String>,
    /// `tags`, without [`MANAGED_TAG`] and the workspace marker.
    pub tags: BTreeSet<String>,
    /// Carries [`MANAGED_TAG`].
    pub managed: bool,
    /// The workspace marker tag (see [`WORKSPACE_TAG_PREFIX`]), if any.
    pub workspace: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `onboot`.
    pub on_boot: bool,
    /// A config lock, if any.
    pub lock: Option<String>,
}

/// Splits `a=b,c=d` (and a leading bare value such as a volume) into ordered pairs.
pub fn split_props(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (String::new(), part.trim().to_string()),
        })
        .collect()
}

/// One GiB in bytes: castle's `size_gb` unit, and PVE's `G`.
pub const GIB: u64 = 1 << 30;

/// A disk's size as PVE reports it, in bytes: `10G`, `10240M` and `10737418240` are one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiskSize(pub u64);

impl DiskSize {
    /// Whole GiB, rounded up: what `size_gb` shows for a disk that is not a whole number of
    /// GiB (a template made with `qm importdisk`).
    pub fn gib(self) -> u64 {
        self.0.div_ceil(GIB)
    }

    /// True when the disk is smaller than `size_gb` GiB and needs growing.
    pub fn below(self, size_gb: u64) -> bool {
        self.0 < size_gb.saturating_mul(GIB)
    }
}

impl std::fmt::Display for DiskSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_multiple_of(GIB) {
            write!(f, "{} GiB", self.0 / GIB)
        } else {
            write!(f, "{:.2} GiB", self.0 as f64 / GIB as f64)
        }
    }
}

/// Parses a PVE size (`8G`, `512M`, `1T`, `2048K`, or plain bytes: pve-common
/// `src/PVE/JSONSchema.pm` format_size writes bytes without a unit when the size is not
/// KiB-aligned, and `parse_size` takes a unit-less number as bytes).
pub fn parse_disk_size(size: &str) -> Option<DiskSize> {
    let size = size.trim();
    let (number, unit) = size.split_at(
        size.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(size.len()),
    );
    let scale: u64 = match unit {
        "T" => 1 << 40,
        "G" => GIB,
        "M" => 1 << 20,
        "K" => 1 << 10,
        "" | "B" => 1,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(scale).map(DiskSize);
    }
    // PVE writes whole numbers; a fraction (`1.5G`) is taken to the byte.
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some(DiskSize((number * scale as f64).round() as u64))
}

const NIC_MODELS: &[&str] = &[
    "virtio",
    "e1000",
    "e1000e",
    "rtl8139",
    "vmxnet3",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
];

/// Parses `virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20`.
pub fn parse_net(text: &str) -> Option<NetworkSpec> {
    let props = split_props(text);
    let (model, mac) = props
        .iter()
        .find(|(k, _)| NIC_MODELS.contains(&k.as_str()))?;
    let get = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    Some(NetworkSpec {
        bridge: get("bridge").unwrap_or_default(),
        vlan: get("tag").and_then(|t| t.parse().ok()),
        mac: (!mac.is_empty()).then(|| mac.to_ascii_uppercase()),
        model: model.clone(),
    })
}

/// Builds `net0`, keeping the keys castle does not manage (firewall, mtu, ...) from `current`.
pub fn format_net(net: &NetworkSpec, current: Option<&str>, current_mac: Option<&str>) -> String {
    let mac = net.mac.clone().or_else(|| current_mac.map(str::to_string));
    let mut parts = vec![match mac {
        Some(mac) => format!("{}={}", net.model, mac),
        None => net.model.clone(),
    }];
    parts.push(format!("bridge={}", net.bridge));
    if let Some(vlan) = net.vlan {
        parts.push(format!("tag={vlan}"));
    }
    if let Some(current) = current {
        for (k, v) in split_props(current) {
            if !k.is_empty() && k != "bridge" && k != "tag" && !NIC_MODELS.contains(&k.as_str()) {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    parts.join(",")
}

/// Parses `ip=10.0.0.11/24,gw=10.0.0.1`; `dhcp` gives `None`.
pub fn parse_ipconfig(text: &str) -> Option<Ipv4Spec> {
    let props = split_props(text);
    let ip = props
        .iter()
        .find(|(k, _)| k == "ip")
        .map(|(_, v)| v.clone())?;
    if ip == "dhcp" {
        return None;
    }
    let gateway = props
        .iter()
        .find(|(k, _)| k == "gw")
        .map(|(_, v)| v.clone());
    Some(Ipv4Spec {
        address: ip,
        gateway,
    })
}

/// Builds `ipconfig0`.
pub fn format_ipconfig(ipv4: &Ipv4Spec) -> String {
    match &ipv4.gateway {
        Some(gw) => format!("ip={},gw={}", ipv4.address, gw),
        None => format!("ip={}", ipv4.address),
    }
}

/// Parses PVE's tag list (`;`, `,` or space separated).
pub fn parse_tags(text: &str) -> BTreeSet<String> {
    text.split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn is_data_disk(key: &str, value: &str) -> bool {
    let bus = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if !matches!(bus, "scsi" | "virtio" | "sata" | "ide") || bus.len() == key.len() {
        return false;
    }
    let props = split_props(value);
    !props.iter().any(|(k, v)| k == "media" && v == "cdrom") && !value.contains("cloudinit")
}

/// Reads the facts castle manages out of a VM config.
pub fn facts(config: &VmConfig) -> VmFacts {
    let number = |key: &str, default: u64| {
        config
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let disks = config
        .0
        .iter()
        .filter(|(k, v)| is_data_disk(k, v))
        .filter_map(|(k, v)| {
            let size = split_props(v)
                .into_iter()
                .find(|(key, _)| key == "size")
                .and_then(|(_, s)| parse_disk_size(&s))?;
            Some((k.clone(), size))
        })
        .collect();
    VmFacts {
        name: config.get("name").unwrap_or_default().to_string(),
        cores: number("cores", 1),
        sockets: number("sockets", 1),
        memory: number("memory", 512),
        disks,
        network: config.get("net0").and_then(parse_net),
        ipv4: config.get("ipconfig0").and_then(parse_ipconfig),
        nameservers: config
            .get("nameserver")
            .map(|n| n.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        search_domain: config
            .get("searchdomain")
            .map(str::to_string)
            .filter(|s| !s.is_empty()),
        tags: config
            .get("tags")
            .map(parse_tags)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                t != MANAGED_TAG && t != AWAITS_ADDRESS_TAG && !t.starts_with(WORKSPACE_TAG_PREFIX)
            })
            .collect(),
        workspace: config
            .get("tags")
            .map(parse_tags)
            .unwrap_or_default()
            .into_iter()
            .find(|t| t.starts_with(WORKSPACE_TAG_PREFIX)),
        managed: config
            .get("tags")
            .map(parse_tags)
            .unwrap_or_default()
            .contains(MANAGED_TAG),
        description: config
            .get("description")
            .map(|d| d.trim_end_matches('\n').to_string())
            .filter(|d| !d.is_empty()),
        on_boot: config.get("onboot") == Some("1"),
        lock: config.get("lock").map(str::to_string),
    }
}

/// The `PUT .../config` parameters that bring `current` to `spec`, and the keys to delete.
/// Only what differs is sent, so an unchanged VM gets no request at all.
pub fn config_changes(spec: &VmSpec, current: &VmConfig) -> (Params, Vec<String>) {
    let now = facts(current);
    let mut params: Params = Vec::new();
    let mut delete = Vec::new();
    let mut set = |key: &str, value: String| params.push((key.to_string(), value));
    if spec.name != now.name {
        set("name", spec.name.clone());
    }
    if let Some(cores) = spec.cores.filter(|c| *c != now.cores) {
        set("cores", cores.to_string());
    }
    if let Some(sockets) = spec.sockets.filter(|s| *s != now.sockets) {
        set("sockets", sockets.to_string());
    }
    if let Some(memory) = spec.memory.filter(|m| *m != now.memory) {
        set("memory", memory.to_string());
    }
    if let Some(net) = &spec.network {
        let current_net = now.network.clone();
        let mut wanted = net.clone();
        if wanted.mac.is_none() {
            wanted.mac = current_net.as_ref().and_then(|n| n.mac.clone());
        }
        if current_net.as_ref() != Some(&wanted) {
            let current_mac = current_net.as_ref().and_then(|n| n.mac.clone());
            set(
                "net0",
                format_net(net, current.get("net0"), current_mac.as_deref()),
            );
        }
    }
    match &spec.ipv4 {
        Some(ipv4) if now.ipv4.as_ref() != Some(ipv4) => set("ipconfig0", format_ipconfig(ipv4)),
        _ => {}
    }
    if let Some(servers) = &spec.nameservers {
        if *servers != now.nameservers {
            if servers.is_empty() {
                delete.push("nameserver".to_string());
            } else {
                set("nameserver", servers.join(" "));
            }
        }
    }
    if let Some(domain) = &spec.search_domain {
        if Some(domain) != now.search_domain.as_ref() {
            set("searchdomain", domain.clone());
        }
    }
    let marked = spec.mark_managed || now.managed;
    let workspace = spec.workspace_tag.clone().or_else(|| now.workspace.clone());
    if spec.tags.is_some()
        || (marked && !now.managed)
        || workspace != now.workspace
        || spec.awaits_address
    {
        let mut wanted = spec.tags.clone().unwrap_or_else(|| now.tags.clone());
        if *spec.tags.as_ref().unwrap_or(&now.tags) != now.tags
            || marked != now.managed
            || workspace != now.workspace
            || spec.awaits_address
        {
            if marked {
                wanted.insert(MANAGED_TAG.to_string());
            }
            if spec.awaits_address {
                wanted.insert(AWAITS_ADDRESS_TAG.to_string());
            }
            if let Some(workspace) = &workspace {
                wanted.insert(workspace.clone());
            }
            if wanted.is_empty() {
                delete.push("tags".to_string());
            } else {
                set("tags", wanted.into_iter().collect::<Vec<_>>().join(";"));
            }
        }
    }
    if let Some(description) = &spec.description {
        // `facts` trims the trailing newline PVE does not keep; compare the same way.
        if description.trim_end() != now.description.as_deref().unwrap_or("").trim_end() {
            if description.trim_end().is_empty() {
                // PVE ignores an empty value; an empty description is a deleted one.
                delete.push("description".to_string());
            } else {
                set("description", description.clone());
            }
        }
    }
    if let Some(on_boot) = spec.on_boot {
        if on_boot != now.on_boot {
            set("onboot", if on_boot { "1" } else { "0" }.to_string());
        }
    }
    (params, delete)
}

/// True when a change to these keys only takes effect after a reboot.
pub fn needs_reboot(keys: &[String]) -> bool {
    keys.iter().any(|k| !LIVE_KEYS.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> VmConfig {
        VmConfig(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn facts_read_disks_network_and_cloud_init() {
        let c = config(&[
            ("name", "cp-1"),
            ("cores", "2"),
            ("memory", "4096"),
            ("scsi0", "local-lvm:vm-101-disk-0,size=10G"),
            ("ide2", "local-lvm:vm-101-cloudinit,media=cdrom"),
            ("efidisk0", "local-lvm:vm-101-disk-1,size=4M"),
            (
                "net0",
                "virtio=bc:24:11:00:00:01,bridge=vmbr0,tag=20,firewall=1",
            ),
            ("ipconfig0", "ip=10.0.0.11/24,gw=10.0.0.1"),
            ("tags", "talos;k8s"),
            ("onboot", "1"),
        ]);
        let f = facts(&c);
        assert_eq!(
            f.disks,
            BTreeMap::from([("scsi0".to_string(), DiskSize(10 * GIB))])
        );
        assert_eq!(
            f.network.as_ref().unwrap().mac.as_deref(),
            Some("BC:24:11:00:00:01")
        );
        assert_eq!(f.network.as_ref().unwrap().vlan, Some(20));
        assert_eq!(
            f.ipv4,
            Some(Ipv4Spec {
                address: "10.0.0.11/24".into(),
                gateway: Some("10.0.0.1".into())
            })
        );
        assert_eq!(
            f.tags,
            BTreeSet::from(["k8s".to_string(), "talos".to_string()])
        );
        assert_eq!(f.sockets, 1);
        assert!(f.on_boot);
    }

    #[test]
    fn unchanged_vm_needs_no_request_and_tag_order_does_not_matter() {
        let c = config(&[("name", "w-1"), ("cores", "2"), ("tags", "b;a")]);
        let spec = VmSpec {
            name: "w-1".into(),
            cores: Some(2),
            tags: Some(BTreeSet::from(["a".to_string(), "b".to_string()])),
            ..Default::default()
        };
        let (params, delete) = config_changes(&spec, &c);
        assert!(params.is_empty(), "{params:?}");
        assert!(delete.is_empty());
    }

    #[test]
    fn network_change_keeps_mac_and_unmanaged_options() {
        let c = config(&[
            ("name", "w"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1"),
        ]);
        let spec = VmSpec {
            name: "w".into(),
            network: Some(NetworkSpec {
                bridge: "vmbr1".into(),
                vlan: Some(30),
                mac: None,
                model: "virtio".into(),
            }),
            ..Default::default()
        };
        let (params, _) = config_changes(&spec, &c);
        assert_eq!(
            params,
            vec![(
                "net0".to_string(),
                "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=30,firewall=1".to_string()
            )]
        );
        assert!(needs_reboot(&["net0".to_string()]));
        assert!(!needs_reboot(&[
            "tags".to_string(),
            "description".to_string()
        ]));
    }

    #[test]
    fn a_vm_waiting_for_its_address_is_tagged_and_the_tag_never_shows() {
        let fresh = config(&[("name", "w"), ("tags", "talos")]);
        let spec = VmSpec {
            name: "w".into(),
            mark_managed: true,
            awaits_address: true,
            ..Default::default()
        };
        let (params, _) = config_changes(&spec, &fresh);
        assert_eq!(
            params,
            vec![(
                "tags".to_string(),
                "castle-awaits-address;castle-managed;talos".to_string()
            )]
        );
        let made = config(&[
            ("name", "w"),
            ("tags", "castle-awaits-address;castle-managed;talos"),
        ]);
        assert_eq!(facts(&made).tags, BTreeSet::from(["talos".to_string()]));
        // An update with the same tags leaves the marker where it is.
        let update = VmSpec {
            name: "w".into(),
            tags: Some(BTreeSet::from(["talos".to_string()])),
            ..Default::default()
        };
        assert!(config_changes(&update, &made).0.is_empty());
    }

    #[test]
    fn the_managed_tag_is_added_on_create_kept_on_update_and_never_shown() {
        let fresh = config(&[("name", "w"), ("tags", "talos")]);
        let spec = VmSpec {
            name: "w".into(),
            mark_managed: true,
            ..Default::default()
        };
        let (params, _) = config_changes(&spec, &fresh);
        assert_eq!(
            params,
            vec![("tags".to_string(), "castle-managed;talos".to_string())]
        );
        let made = config(&[("name", "w"), ("tags", "castle-managed;talos")]);
        assert_eq!(facts(&made).tags, BTreeSet::from(["talos".to_string()]));
        assert!(facts(&made).managed);
        let update = VmSpec {
            name: "w".into(),
            tags: Some(BTreeSet::from(["k8s".to_string()])),
            ..Default::default()
        };
        let (params, _) = config_changes(&update, &made);
        assert_eq!(
            params,
            vec![("tags".to_string(), "castle-managed;k8s".to_string())]
        );
        let (params, _) = config_changes(
            &VmSpec {
                name: "w".into(),
                ..Default::default()
            },
            &made,
        );
        assert!(params.is_empty());
    }

    #[test]
    fn a_heredoc_description_is_not_rewritten_and_an_empty_one_deletes_it() {
        let current = config(&[("name", "solo"), ("description", "Talos node.")]);
        let spec = |description: &str| VmSpec {
            name: "solo".into(),
            description: Some(description.into()),
            ..Default::default()
        };
        assert_eq!(
            config_changes(&spec("Talos node.\n"), &current),
            (vec![], vec![])
        );
        assert_eq!(
            config_changes(&spec(""), &current),
            (vec![], vec!["description".to_string()])
        );
    }

    #[test]
    fn one_size_written_in_any_unit_is_the_same_size() {
        let ten = ["10G", "10240M", "10485760K", "10737418240"].map(parse_disk_size);
        assert!(
            ten.iter().all(|size| *size == Some(DiskSize(10 * GIB))),
            "{ten:?}"
        );
        assert_eq!(parse_disk_size("10G").unwrap().gib(), 10);
        assert!(!parse_disk_size("10240M").unwrap().below(10));
        assert_eq!(parse_disk_size("1T").unwrap().gib(), 1024);
        assert_eq!(parse_disk_size("x"), None);
    }

    #[test]
    fn a_disk_that_is_not_whole_gib_shows_rounded_up_and_is_still_grown() {
        // No unit means bytes, not GiB.
        let odd = parse_disk_size("1306525184").unwrap();
        assert_eq!(odd.gib(), 2);
        assert!(odd.below(2), "1.2 GiB must be grown to size_gb = 2");
        let odd = parse_disk_size("1228M").unwrap();
        assert_eq!((odd.gib(), odd.below(2), odd.below(1)), (2, true, false));
        assert_eq!(odd.to_string(), "1.20 GiB");
    }
}
