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

    /// Picks a VMID no guest uses and no other create of this process holds, inside the
    /// datacenter's `next-id` range, and reserves it in this process. PVE's `nextid` reserves
    /// nothing (two callers get the same id), so parallel creates pick from the cluster list
    /// plus our own reservations, and each pick is checked with `GET /cluster/nextid?vmid=N`,
    /// which sees every guest, also those the token may not audit (pve-manager
    /// `PVE/API2/Cluster.pm` nextid). A clash with another client is still caught by the clone.
    pub async fn reserve_vmid(&self, taken_elsewhere: &[u32]) -> Result<u32, Error> {
        // `nextid` starts at datacenter.cfg `next-id: lower=` (default 100); the upper bound
        // (default 1,000,000) is only in `/cluster/options`, which needs Sys.Audit.
        let first: String = self.get("/cluster/nextid", &[]).await?;
        let lower = first.trim().parse::<u32>().map_err(|_| Error::Decode {
            url: "/cluster/nextid".into(),
            detail: format!("{first:?} is not a VMID"),
        })?;
        let upper = self.next_id_upper().await;
        let mut skipped: Vec<u32> = taken_elsewhere.to_vec();
        loop {
            let used: std::collections::BTreeSet<u32> = self
                .cluster_vms()
                .await?
                .into_iter()
                .map(|vm| vm.vmid)
                .collect();
            let id = {
                let mut reserved = self
                    .reserved_ids
                    .lock()
                    .expect("vmid reservations poisoned");
                let id = (lower..upper)
                    .find(|id| {
                        !used.contains(id) && !reserved.contains(id) && !skipped.contains(id)
                    })
                    .ok_or_else(|| Error::Api {
                        status: 500,
                        message: format!(
                            "no free VMID in the datacenter's next-id range [{lower}, {upper})"
                        ),
                        errors: Default::default(),
                    })?;
                reserved.insert(id);
                id
            };
            let check: Result<serde_json::Value, Error> = self
                .get("/cluster/nextid", &[("vmid", id.to_string())])
                .await;
            match check {
                Ok(_) => return Ok(id),
                Err(e) if e.is_vmid_taken(id) => {
                    self.release_vmid(id);
                    skipped.push(id);
                }
                Err(e) => {
                    self.release_vmid(id);
                    return Err(e);
                }
            }
        }
    }

    /// datacenter.cfg `next-id: upper=`, or PVE's default when the token may not read it.
    async fn next_id_upper(&self) -> u32 {
        const DEFAULT_UPPER: u32 = 1_000_000;
        let options: Result<serde_json::Value, Error> = self.get("/cluster/options", &[]).await;
        options
            .ok()
            .and_then(|o| o.get("next-id")?.get("upper")?.as_u64())
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(DEFAULT_UPPER)
    }

    /// Storages every node sees: `shared=1` in storage.cfg, or a type that is shared by nature
    /// (pve-storage `src/PVE/Storage/*Plugin.pm`: rbd, cephfs, nfs, cifs, glusterfs, pbs,
    /// iscsi).
    pub async fn shared_storages(&self) -> Result<std::collections::BTreeSet<String>, Error> {
        let storages: Vec<serde_json::Value> = self.get("/storage", &[]).await?;
        Ok(storages
            .iter()
            .filter(|s| {
                let kind = s.get("type").and_then(|t| t.as_str()).unwrap_or("");
                let flagged = s
                    .get("shared")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    == Some(1);
                flagged
                    || matches!(
                        kind,
                        "rbd"
                            | "cephfs"
                            | "nfs"
                            | "cifs"
                            | "glusterfs"
                            | "pbs"
                            | "iscsi"
                            | "iscsidirect"
                    )
            })
            .filter_map(|s| {
                s.get("storage")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            })
            .collect())
    }

    /// Gives a reservation back once the VM exists (or its create gave up).
    pub fn release_vmid(&self, id: u32) {
        self.reserved_ids
            .lock()
            .expect("vmid reservations poisoned")
            .remove(&id);
    }
}
