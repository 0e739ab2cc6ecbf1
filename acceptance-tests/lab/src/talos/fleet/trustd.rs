//! How a node gets the certificate its apid serves. A control plane signs its own with the OS
//! CA key of its config; a worker has no key and asks trustd on a control plane, which it finds
//! only through the endpoints Talos knows (Talos: internal/app/machined/pkg/controllers/
//! secrets/api.go (v1.12.0) waits for `k8s.Endpoint`s; controllers/k8s/static_endpoint.go
//! resolves the host of `cluster.controlPlane.endpoint`). A VIP answers only once etcd runs
//! and a control plane holds it (controllers/network/operator/vip.go campaigns through etcd),
//! so a worker behind a VIP serves no mutual TLS before the bootstrap. castle writes no
//! `cluster.discovery`, whose members would be another source (cluster/endpoint.go); the lab
//! does not model it.

use std::net::IpAddr;

use super::config::{MachineConfig, MachineType};
use super::{Phase, State};

/// The host of an endpoint URL as an address (`https://10.0.0.10:6443`, `https://[fd00::1]:6443`);
/// `None` for a DNS name.
fn endpoint_host(endpoint: &str) -> Option<IpAddr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse().ok()
}

impl State {
    /// The OS CA key a node with `config` signs its apid certificate with: its own (a control
    /// plane), or the one trustd hands out on a running control plane of its cluster that the
    /// worker can reach at its endpoint; `None` while it has none.
    pub(crate) fn apid_signing_key(&self, config: &MachineConfig) -> Option<String> {
        if let Some(key) = &config.os_ca_key {
            return Some(key.clone());
        }
        let host = endpoint_host(&config.endpoint);
        let vip_answers = host.is_some_and(|h| self.kube_answers_at(&config.cluster_id, h));
        self.nodes.iter().find_map(|(address, node)| {
            let c = node.config.as_ref()?;
            let trustd = c.cluster_id == config.cluster_id
                && c.machine_type == MachineType::Controlplane
                && c.os_ca_crt == config.os_ca_crt
                && matches!(node.phase, Phase::Running { .. });
            // An endpoint that names a DNS host cannot be resolved on loopback: the lab takes
            // it as pointing at the control planes.
            let reachable = match host {
                Some(h) => h == *address || vip_answers,
                None => true,
            };
            (trustd && reachable).then(|| c.os_ca_key.clone()).flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_host;

    #[test]
    fn the_host_of_an_endpoint_url_is_read_as_an_address() {
        assert_eq!(
            endpoint_host("https://127.0.0.210:6443"),
            "127.0.0.210".parse().ok()
        );
        assert_eq!(endpoint_host("https://[::1]:6443"), "::1".parse().ok());
        assert_eq!(endpoint_host("https://k8s.home.lab:6443"), None);
    }
}
