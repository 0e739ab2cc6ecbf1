//! `cluster/*`: the guests of the whole cluster in one request, and free VMIDs.

use serde::Deserialize;

use super::{Client, Error};

/// One guest as `GET /cluster/resources?type=vm` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterVm {
    /// VMID.
    pub vmid: u32,
    /// Node it runs on.
    pub node: String,
    /// Name, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// `running`, `stopped`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// 1 for templates.
    #[serde(default)]
    pub template: Option<u8>,
    /// A config lock (`clone`, `backup`, ...).
    #[serde(default)]
    pub lock: Option<String>,
    /// Tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// `qemu` or `lxc`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

impl ClusterVm {
    /// True for templates.
    pub fn is_template(&self) -> bool {
        self.template == Some(1)
    }
}

impl Client {
    /// Every guest of the cluster, with node and status, in one request.
    pub async fn cluster_vms(&self) -> Result<Vec<ClusterVm>, Error> {
        self.get("/cluster/resources", &[("type", "vm".to_string())])
            .await
    }

    /// Picks a VMID no guest uses and no other create of this process holds, and reserves
    /// it in this process. PVE's `nextid` reserves nothing (two callers get the same id),
    /// so parallel creates pick from the cluster list plus our own reservations; a clash with
    /// another client is caught by the clone and retried with the next id.
    pub async fn reserve_vmid(&self, taken_elsewhere: &[u32]) -> Result<u32, Error> {
        let used: std::collections::BTreeSet<u32> = self
            .cluster_vms()
            .await?
            .into_iter()
            .map(|vm| vm.vmid)
            .collect();
        let mut reserved = self
            .reserved_ids
            .lock()
            .expect("vmid reservations poisoned");
        let id = (100..1_000_000_000u32)
            .find(|id| {
                !used.contains(id) && !reserved.contains(id) && !taken_elsewhere.contains(id)
            })
            .ok_or_else(|| Error::Decode {
                url: "/cluster/resources".into(),
                detail: "no free VMID".into(),
            })?;
        reserved.insert(id);
        Ok(id)
    }

    /// Gives a reservation back once the VM exists (or its create gave up).
    pub fn release_vmid(&self, id: u32) {
        self.reserved_ids
            .lock()
            .expect("vmid reservations poisoned")
            .remove(&id);
    }
}
