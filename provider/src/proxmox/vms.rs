//! `nodes/{node}/qemu/{vmid}`: clone, config, resize, power and delete.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::client::Params;
use super::{Client, Error};

/// A VM's config as `GET .../config` returns it: keys to values, as strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmConfig(pub BTreeMap<String, String>);

impl VmConfig {
    /// One key's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The VM's network devices, `net0`, `net1`, … (qemu-server `PVE/QemuServer.pm`: one
    /// `netN` key per NIC).
    pub fn nics(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter(|k| {
                k.strip_prefix("net")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(String::as_str)
            .collect()
    }
}

/// `GET .../status/current`, the fields castle uses.
#[derive(Debug, Clone, Deserialize)]
pub struct VmStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// A config lock, if any.
    #[serde(default)]
    pub lock: Option<String>,
    /// `{"managed": 0|1, "state": ...}`: whether the HA manager runs the VM.
    #[serde(default)]
    pub ha: Option<Value>,
}

impl VmStatus {
    /// True when the HA manager starts and stops the VM.
    pub fn ha_managed(&self) -> bool {
        self.ha
            .as_ref()
            .and_then(|ha| ha.get("managed"))
            .and_then(Value::as_u64)
            == Some(1)
    }
}

/// What a clone request carries.
#[derive(Debug, Clone)]
pub struct CloneRequest {
    /// Node of the template.
    pub node: String,
    /// Template VMID.
    pub template_id: u32,
    /// New VMID.
    pub new_id: u32,
    /// New name.
    pub name: String,
    /// Full clone (linked otherwise).
    pub full: bool,
    /// Target storage (full clones only).
    pub storage: Option<String>,
    /// Pool to join.
    pub pool: Option<String>,
    /// Other node to create the clone on (shared storage only).
    pub target: Option<String>,
    /// Description.
    pub description: Option<String>,
}

fn vm_path(node: &str, vmid: u32) -> String {
    format!("/nodes/{node}/qemu/{vmid}")
}

/// PVE answers config values as strings or numbers; castle keeps them all as strings.
fn flatten(values: BTreeMap<String, Value>) -> BTreeMap<String, String> {
    values
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

impl Client {
    /// Starts a clone; returns the task's UPID.
    pub async fn clone_vm(&self, request: &CloneRequest) -> Result<String, Error> {
        let mut params: Params = vec![
            ("newid".into(), request.new_id.to_string()),
            ("name".into(), request.name.clone()),
            ("full".into(), if request.full { "1" } else { "0" }.into()),
        ];
        if let Some(storage) = &request.storage {
            params.push(("storage".into(), storage.clone()));
        }
        if let Some(pool) = &request.pool {
            params.push(("pool".into(), pool.clone()));
        }
        if let Some(target) = &request.target {
            params.push(("target".into(), target.clone()));
        }
        if let Some(description) = &request.description {
            params.push(("description".into(), description.clone()));
        }
        self.post(
            &format!("{}/clone", vm_path(&request.node, request.template_id)),
            params,
        )
        .await
    }

    /// The config the VM runs with and its digest. Without `current=1` PVE answers with pending
    /// changes applied (qemu-server `src/PVE/API2/Qemu.pm` vm_config), which would hide a
    /// change an interrupted apply left pending.
    pub async fn vm_config(&self, node: &str, vmid: u32) -> Result<VmConfig, Error> {
        let values: BTreeMap<String, Value> = self
            .get(
                &format!("{}/config", vm_path(node, vmid)),
                &[("current", "1".to_string())],
            )
            .await?;
        Ok(VmConfig(flatten(values)))
    }

    /// Keys with a change waiting for the next boot (`GET .../pending`).
    pub async fn vm_pending_keys(&self, node: &str, vmid: u32) -> Result<Vec<String>, Error> {
        let items: Vec<BTreeMap<String, Value>> = self
            .get(&format!("{}/pending", vm_path(node, vmid)), &[])
            .await?;
        Ok(items
            .into_iter()
            .filter(|item| item.contains_key("pending") || item.contains_key("delete"))
            .filter_map(|item| item.get("key").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// Writes config keys synchronously (`PUT .../config`); `delete` lists keys to remove.
    pub async fn set_vm_config(
        &self,
        node: &str,
        vmid: u32,
        mut params: Params,
        delete: &[String],
    ) -> Result<(), Error> {
        if !delete.is_empty() {
            params.push(("delete".into(), delete.join(",")));
        }
        if params.is_empty() {
            return Ok(());
        }
        let _: Value = self
            .put(&format!("{}/config", vm_path(node, vmid)), params)
            .await?;
        Ok(())
    }

    /// Grows a disk to `size_gb` GiB; returns the task's UPID (PVE 8.0 and later run resize as
    /// a task; older releases answered without one).
    pub async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        size_gb: u64,
    ) -> Result<String, Error> {
        let params = vec![
            ("disk".to_string(), disk.to_string()),
            ("size".to_string(), format!("{size_gb}G")),
        ];
        let answer: Value = self
            .put(&format!("{}/resize", vm_path(node, vmid)), params)
            .await?;
        answer
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Decode {
                url: format!("{}/resize", vm_path(node, vmid)),
                detail: "no task id (castle needs PVE 8.0 or later)".into(),
            })
    }

    /// Power state and lock.
    pub async fn vm_status(&self, node: &str, vmid: u32) -> Result<VmStatus, Error> {
        self.get(&format!("{}/status/current", vm_path(node, vmid)), &[])
            .await
    }

    /// Starts the VM; returns the UPID.
    pub async fn start_vm(&self, node: &str, vmid: u32) -> Result<String, Error> {
        self.post(&format!("{}/status/start", vm_path(node, vmid)), vec![])
            .await
    }

    /// ACPI shutdown that falls back to a hard stop after `timeout_secs`; returns the UPID.
    pub async fn shutdown_vm(
        &self,
        node: &str,
        vmid: u32,
        timeout_secs: u64,
    ) -> Result<String, Error> {
        let params = vec![
            ("timeout".to_string(), timeout_secs.to_string()),
            ("forceStop".to_string(), "1".to_string()),
        ];
        self.post(&format!("{}/status/shutdown", vm_path(node, vmid)), params)
            .await
    }

    /// Hard stop; returns the UPID.
    pub async fn stop_vm(&self, node: &str, vmid: u32) -> Result<String, Error> {
        self.post(&format!("{}/status/stop", vm_path(node, vmid)), vec![])
            .await
    }

    /// Destroys a stopped VM with its disks, and removes it from HA, jobs and pools;
    /// `unreferenced_disks` also removes disks of this VMID that its config does not list.
    pub async fn delete_vm(
        &self,
        node: &str,
        vmid: u32,
        unreferenced_disks: bool,
    ) -> Result<String, Error> {
        let mut params = vec![("purge".to_string(), "1".to_string())];
        if unreferenced_disks {
            params.push(("destroy-unreferenced-disks".to_string(), "1".to_string()));
        }
        self.delete(&vm_path(node, vmid), params).await
    }

    /// Takes the VM out of HA management (`DELETE /cluster/ha/resources/vm:N`, pve-ha-manager
    /// `src/PVE/API2/HA/Resources.pm` delete: needs `Sys.Console` on `/`). The VM keeps its
    /// current state; from then on power requests act on it directly.
    pub async fn remove_ha_resource(&self, vmid: u32) -> Result<(), Error> {
        let _: Value = self
            .delete(&format!("/cluster/ha/resources/vm:{vmid}"), vec![])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vms_nics_are_its_net_keys() {
        let config = VmConfig(
            [
                ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
                ("net1", "virtio=BC:24:11:00:00:02,bridge=vmbr1"),
                ("netmask", "x"),
                ("net", "x"),
                ("ipconfig0", "ip=10.0.0.11/24"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        );
        assert_eq!(config.nics(), ["net0", "net1"]);
    }
}
