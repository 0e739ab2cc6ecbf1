//! The addresses behind the `kubernetes` Service: the `kubernetes` Endpoints in `default`,
//! which every API server keeps current through its lease (Kubernetes:
//! pkg/controlplane/reconcilers/lease.go, `--endpoint-reconciler-type=lease`; the
//! EndpointSlice of the same name mirrors it, pkg/controlplane/reconcilers/endpointsadapter.go).
//! In-cluster clients reach the API through these addresses, so a stale one breaks them.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{KubeClient, KubeError};

#[derive(Deserialize)]
struct Endpoints {
    #[serde(default)]
    subsets: Vec<Subset>,
}

#[derive(Deserialize)]
struct Subset {
    #[serde(default)]
    addresses: Vec<Address>,
}

#[derive(Deserialize)]
struct Address {
    ip: String,
}

impl KubeClient {
    /// The ready addresses of the `kubernetes` Endpoints.
    pub async fn api_server_endpoints(&self) -> Result<BTreeSet<String>, KubeError> {
        let endpoints: Endpoints = self
            .get_json("/api/v1/namespaces/default/endpoints/kubernetes")
            .await?;
        Ok(endpoints
            .subsets
            .into_iter()
            .flat_map(|s| s.addresses)
            .map(|a| a.ip)
            .collect())
    }
}
