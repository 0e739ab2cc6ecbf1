//! Recognising credentials of the same cluster: after Terraform lost its state, the cluster
//! (same secrets, so same CAs) issues new client certificates, and the secret Infisical holds
//! differs only in them. Such a secret is castle's own to overwrite; anything else is not.

use std::collections::BTreeSet;

use serde_yaml::Value;

/// What identifies the cluster a credentials file is for.
#[derive(Debug, PartialEq, Eq)]
enum Cluster {
    /// A kubeconfig: every cluster entry's server and CA certificate.
    Kubernetes(BTreeSet<(String, String)>),
    /// A talosconfig: every context's endpoints and OS CA certificate.
    Talos(BTreeSet<(Vec<String>, String)>),
}

/// True when `existing` and `wanted` are both kubeconfigs (or both talosconfigs) naming the
/// same servers with the same CA certificates: only the client credentials may differ.
pub fn same_cluster(existing: &str, wanted: &str) -> bool {
    match (cluster_of(existing), cluster_of(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn cluster_of(file: &str) -> Option<Cluster> {
    let doc: Value = serde_yaml::from_str(file).ok()?;
    if let Some(clusters) = doc.get("clusters").and_then(Value::as_sequence) {
        let entries = clusters
            .iter()
            .map(|entry| {
                let cluster = entry.get("cluster")?;
                Some((
                    text(cluster, "server")?,
                    text(cluster, "certificate-authority-data")?,
                ))
            })
            .collect::<Option<BTreeSet<_>>>()?;
        return (!entries.is_empty()).then_some(Cluster::Kubernetes(entries));
    }
    let contexts = doc.get("contexts").and_then(Value::as_mapping)?;
    let entries = contexts
        .values()
        .map(|context| {
            let mut endpoints: Vec<String> = context
                .get("endpoints")?
                .as_sequence()?
                .iter()
                .map(|e| e.as_str().map(str::to_string))
                .collect::<Option<_>>()?;
            endpoints.sort();
            Some((endpoints, text(context, "ca")?))
        })
        .collect::<Option<BTreeSet<_>>>()?;
    (!entries.is_empty()).then_some(Cluster::Talos(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(server: &str, ca: &str, cert: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: home\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: admin@home\n  user:\n    \
             client-certificate-data: {cert}\n    client-key-data: a2V5\n"
        )
    }

    fn talosconfig(endpoints: &str, ca: &str, cert: &str) -> String {
        format!(
            "context: home\ncontexts:\n  home:\n    endpoints: [{endpoints}]\n    ca: {ca}\n    \
             crt: {cert}\n    key: a2V5\n"
        )
    }

    #[test]
    fn a_kubeconfig_with_a_new_client_certificate_is_the_same_cluster() {
        let before = kubeconfig("https://10.0.0.10:6443", "Q0E=", "b2xk");
        let after = kubeconfig("https://10.0.0.10:6443", "Q0E=", "bmV3");
        assert!(same_cluster(&before, &after));
    }

    #[test]
    fn another_ca_or_server_is_another_cluster() {
        let ours = kubeconfig("https://10.0.0.10:6443", "Q0E=", "bmV3");
        assert!(!same_cluster(
            &kubeconfig("https://10.0.0.10:6443", "T1RIRVI=", "b2xk"),
            &ours
        ));
        assert!(!same_cluster(
            &kubeconfig("https://10.0.0.99:6443", "Q0E=", "b2xk"),
            &ours
        ));
        assert!(!same_cluster("someone else's", &ours));
    }

    #[test]
    fn a_talosconfig_is_recognised_by_its_ca_and_endpoints() {
        let ours = talosconfig("10.0.0.11, 10.0.0.12", "Q0E=", "bmV3");
        assert!(same_cluster(
            &talosconfig("10.0.0.12, 10.0.0.11", "Q0E=", "b2xk"),
            &ours
        ));
        assert!(!same_cluster(
            &talosconfig("10.0.0.11, 10.0.0.12", "T1RIRVI=", "b2xk"),
            &ours
        ));
        // A kubeconfig is never taken for a talosconfig.
        assert!(!same_cluster(
            &kubeconfig("https://10.0.0.10:6443", "Q0E=", "b2xk"),
            &ours
        ));
    }
}
