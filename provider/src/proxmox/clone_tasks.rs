//! Clone tasks: starting one as this process's, and finding the running ones of a template that
//! another process started (a castle killed in the middle of a create).
//!
//! A clone's VM does not show what it is while its task runs: PVE writes a temporary config
//! (`lock: clone`, no name, no notes) and the name and notes only once the drives are cloned
//! (qemu-server `src/PVE/API2/Qemu.pm` clone_vm). So a create that looks for a leftover VM
//! misses a clone a killed castle started, and would clone again. The task itself is in the
//! node's active task list from before the clone request is answered (pve-common
//! `src/PVE/RESTEnvironment.pm` fork_worker), as `qmclone` of the template's VMID by castle's
//! user (pve-manager `PVE/API2/Tasks.pm` node_tasks: `source=active`, `typefilter`, `vmid`,
//! `userfilter`). A create waits for those that are not this process's own, then looks.

use std::collections::BTreeSet;

use serde::Deserialize;
use tokio::time::Instant;

use super::retry::{with_policy, ELSEWHERE_IF_DOWN};
use super::vms::CloneRequest;
use super::{Client, Error};

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedTask {
    /// Task id.
    pub upid: String,
    /// `RUNNING` while it runs (`source=active`), else its exit status.
    #[serde(default)]
    pub status: Option<String>,
}

/// The listed tasks still running that this process did not start. The active list also holds
/// tasks that ended but are not archived yet: those carry their exit status.
pub fn others_running(tasks: &[ListedTask], own: &BTreeSet<String>) -> Vec<String> {
    tasks
        .iter()
        .filter(|t| t.status.as_deref().is_none_or(|s| s == "RUNNING"))
        .filter(|t| !own.contains(&t.upid))
        .map(|t| t.upid.clone())
        .collect()
}

impl Client {
    /// Sends a clone request and records its task as this process's. The record is made before
    /// any other create of this process may look at the running clones, so none of them takes
    /// this clone for a killed process's.
    pub async fn start_clone(&self, request: &CloneRequest) -> Result<String, Error> {
        let mut own = self.own_clones.lock().await;
        let upid = self.clone_vm(request).await?;
        own.insert(upid.clone());
        Ok(upid)
    }

    /// The running clones of template `vmid` on `node` by castle's user that this process did
    /// not start.
    pub async fn others_clones(&self, node: &str, vmid: u32) -> Result<Vec<String>, Error> {
        let own = self.own_clones.lock().await;
        let query = [
            ("source", "active".to_string()),
            ("typefilter", "qmclone".to_string()),
            ("vmid", vmid.to_string()),
            ("userfilter", self.user().to_string()),
            ("limit", "1000".to_string()),
        ];
        let tasks: Vec<ListedTask> = self.get(&format!("/nodes/{node}/tasks"), &query).await?;
        Ok(others_running(&tasks, &own))
    }

    /// Waits until every clone of template `vmid` on `node` that another process started has
    /// ended (the one that made a VM leaves it with its name and notes; a failed one leaves
    /// nothing: PVE's failure path removes it). Returns the tasks waited for.
    pub async fn wait_for_others_clones(
        &self,
        node: &str,
        vmid: u32,
        deadline: Instant,
    ) -> Result<Vec<String>, Error> {
        // A template node that does not answer cannot clone either: said at once, as the clone
        // request itself would be, not waited for until the deadline.
        let others = with_policy(
            ELSEWHERE_IF_DOWN,
            deadline,
            "list the running clones",
            || self.others_clones(node, vmid),
        )
        .await?;
        for upid in &others {
            tracing::warn!(upid, "waiting for a clone that an earlier run started");
            match self.wait_task(upid, deadline).await {
                Ok(_) | Err(Error::Task { .. }) => {}
                Err(Error::Timeout(_)) => {
                    return Err(Error::Timeout(format!(
                        "waiting for clone task {upid} of template {vmid}, which an earlier run \
                         (a Terraform that was killed) started; the next apply waits for it again"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(others)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(upid: &str, status: Option<&str>) -> ListedTask {
        ListedTask {
            upid: upid.into(),
            status: status.map(str::to_string),
        }
    }

    #[test]
    fn only_running_clones_another_process_started_are_waited_for() {
        let own: BTreeSet<String> = ["UPID:pve1:own".to_string()].into();
        let listed = [
            task("UPID:pve1:killed", Some("RUNNING")),
            task("UPID:pve1:own", Some("RUNNING")),
            // Ended, not archived yet: nothing to wait for.
            task("UPID:pve1:done", Some("OK")),
            task(
                "UPID:pve1:failed",
                Some("clone failed: interrupted by signal"),
            ),
            task("UPID:pve1:unsaid", None),
        ];
        assert_eq!(
            others_running(&listed, &own),
            ["UPID:pve1:killed", "UPID:pve1:unsaid"]
        );
    }
}
