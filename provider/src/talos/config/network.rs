//! The node's network (address, default route, DNS, hostname, VIP) in each release line's shape.

use ipnet::IpNet;
use serde_json::{json, Value};

use super::spec::NetworkLink;

/// What the network of one node needs.
pub(crate) struct NodeNetwork<'a> {
    pub hostname: &'a str,
    pub address: IpNet,
    pub gateway: &'a str,
    pub nameservers: &'a [String],
    pub link: &'a NetworkLink,
    /// Only on control planes.
    pub vip: Option<&'a str>,
}

/// Alias castle gives the NIC when it selects it (v1.12+); not a kernel name, as Talos asks.
const LINK_ALIAS: &str = "net0";

/// The metric of the node's address routes on v1.12+ (Talos's own default for static routes).
const ROUTE_PRIORITY: u32 = 1024;

/// v1.10/v1.11: `machine.network`, one interface.
pub(crate) fn machine_network(n: &NodeNetwork<'_>) -> Value {
    let mut iface = serde_json::Map::new();
    match n.link {
        NetworkLink::Physical => {
            iface.insert("deviceSelector".into(), json!({ "physical": true }));
        }
        NetworkLink::Name(name) => {
            iface.insert("interface".into(), json!(name));
        }
        NetworkLink::Mac(mac) => {
            iface.insert(
                "deviceSelector".into(),
                json!({ "hardwareAddr": mac.to_lowercase() }),
            );
        }
    }
    iface.insert("addresses".into(), json!([n.address.to_string()]));
    iface.insert(
        "routes".into(),
        json!([{ "network": default_route(n.address), "gateway": n.gateway }]),
    );
    if let Some(vip) = n.vip {
        iface.insert("vip".into(), json!({ "ip": vip }));
    }
    json!({
        "hostname": n.hostname,
        "interfaces": [Value::Object(iface)],
        "nameservers": n.nameservers,
    })
}

fn default_route(address: IpNet) -> &'static str {
    match address {
        IpNet::V4(_) => "0.0.0.0/0",
        IpNet::V6(_) => "::/0",
    }
}

/// v1.12+: separate documents, in a fixed order.
pub(crate) fn network_documents(n: &NodeNetwork<'_>) -> Vec<Value> {
    let mut docs = Vec::new();
    let link_name = match n.link {
        NetworkLink::Name(name) => name.clone(),
        NetworkLink::Physical => {
            // Aliases select among physical links only; a VM with one NIC matches exactly one.
            docs.push(link_alias("true".to_string()));
            LINK_ALIAS.to_string()
        }
        NetworkLink::Mac(mac) => {
            docs.push(link_alias(format!(
                "mac(link.permanent_addr) == \"{}\"",
                mac.to_lowercase()
            )));
            LINK_ALIAS.to_string()
        }
    };
    // A route without destination is the default route of the gateway's family.
    docs.push(json!({
        "apiVersion": "v1alpha1",
        "kind": "LinkConfig",
        "name": link_name,
        // An explicit metric: an alias-selected link without one is the setup of Talos issue
        // #12738 (docs/adr/0009-v1-12-network-documents.md).
        "addresses": [{ "address": n.address.to_string(), "routePriority": ROUTE_PRIORITY }],
        "routes": [{ "gateway": n.gateway }],
    }));
    if let Some(vip) = n.vip {
        docs.push(json!({
            "apiVersion": "v1alpha1",
            "kind": "Layer2VIPConfig",
            "name": vip,
            "link": link_name,
        }));
    }
    docs.push(
        json!({ "apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": n.hostname }),
    );
    let nameservers: Vec<Value> = n
        .nameservers
        .iter()
        .map(|a| json!({ "address": a }))
        .collect();
    docs.push(
        json!({ "apiVersion": "v1alpha1", "kind": "ResolverConfig", "nameservers": nameservers }),
    );
    docs
}

fn link_alias(expression: String) -> Value {
    json!({
        "apiVersion": "v1alpha1",
        "kind": "LinkAliasConfig",
        "name": LINK_ALIAS,
        "selector": { "match": expression },
    })
}
