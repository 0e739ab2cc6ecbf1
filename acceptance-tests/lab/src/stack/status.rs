//! `castle-lab status` and the health checks `serve` waits on before it says the lab is up.

use std::time::Duration;

use serde_json::Value;

use super::{control, LabFile, Settings};
use crate::wiring::error_chain;
use crate::wiring::machines::Guest;
use crate::wiring::pve::{Pve, PveLogin};

/// A plain HTTP client for the lab's own services: short timeout, never through a proxy (the
/// lab is on loopback).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default()
}

/// A Proxmox client for the lab described by `lab`.
pub fn pve_client(lab: &LabFile) -> anyhow::Result<Pve> {
    let ca = std::fs::read(&lab.proxmox.ca_cert)?;
    Ok(Pve::new(
        PveLogin {
            endpoint: lab.proxmox.endpoint.clone(),
            username: lab.proxmox.username.clone(),
            password: lab.proxmox.password.clone(),
        },
        &ca,
    )?)
}

/// What the health checks found: one line per service, `Ok` when it answers.
pub struct Health {
    /// Proxmox: login accepted.
    pub proxmox: Result<(), String>,
    /// Talos admin API: `GET /nodes`.
    pub talos: Result<Vec<Value>, String>,
    /// Infisical: `GET /__lab/health`.
    pub infisical: Result<(), String>,
}

impl Health {
    /// Whether every service answers.
    pub fn ok(&self) -> bool {
        self.proxmox.is_ok() && self.talos.is_ok() && self.infisical.is_ok()
    }
}

/// Asks every service of `lab`.
pub async fn check(lab: &LabFile) -> Health {
    let client = http();
    let proxmox = match pve_client(lab) {
        Ok(mut pve) => match pve.healthy().await {
            true => Ok(()),
            false => Err("login refused or not answering".to_string()),
        },
        Err(e) => Err(error_chain(e.as_ref())),
    };
    let talos = async {
        let r = client
            .get(format!("{}/nodes", lab.talos.admin))
            .send()
            .await?
            .error_for_status()?;
        r.json::<Vec<Value>>().await
    }
    .await
    .map_err(|e| error_chain(&e));
    let infisical = async {
        client
            .get(format!("{}/__lab/health", lab.infisical.host))
            .send()
            .await?
            .error_for_status()
            .map(drop)
    }
    .await
    .map_err(|e| error_chain(&e));
    Health {
        proxmox,
        talos,
        infisical,
    }
}

/// `castle-lab status`: endpoints, credentials, VMs and Talos nodes. Exit code 0 when the lab
/// is up and every service answers, 1 otherwise.
pub async fn status(settings: &Settings) -> anyhow::Result<i32> {
    let Some(pid) = control::running(settings) else {
        println!(
            "castle-lab is down (no live process in {})",
            settings.pid_file().display()
        );
        return Ok(1);
    };
    let lab = match LabFile::read(&settings.lab_file()) {
        Ok(lab) if lab.pid == pid => lab,
        _ => {
            println!("castle-lab is starting (pid {pid}); not every service answers yet");
            return Ok(1);
        }
    };
    let health = check(&lab).await;
    print!("{}", describe(&lab, &health));
    if let Ok(mut pve) = pve_client(&lab) {
        match pve.guests().await {
            Ok(guests) => print!("{}", describe_vms(&guests)),
            Err(e) => println!("VMs: unable to list them: {}", error_chain(&e)),
        }
    }
    if let Ok(nodes) = &health.talos {
        print!("{}", describe_nodes(nodes));
    }
    let clashes = async {
        http()
            .get(format!("{}/address-clashes", lab.talos.admin))
            .send()
            .await?
            .error_for_status()?
            .json::<Vec<Value>>()
            .await
    }
    .await;
    if let Ok(clashes) = clashes {
        print!("{}", describe_clashes(&clashes));
    }
    Ok(if health.ok() { 0 } else { 1 })
}

fn verdict<T>(r: &Result<T, String>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("NOT ANSWERING: {e}"),
    }
}

/// The endpoints and credentials, as `status` prints them.
pub fn describe(lab: &LabFile, health: &Health) -> String {
    let p = &lab.proxmox;
    let t = &lab.talos;
    let i = &lab.infisical;
    format!(
        "castle-lab (pid {pid}, time scale {scale})\n\
         \n\
         Proxmox VE  {endpoint}  [{pve_ok}]\n\
         \x20 login      {user} / {password}\n\
         \x20 CA         {ca}\n\
         \x20 template   {tname} (VMID {tid}) on node {node}\n\
         Talos       admin API {admin}  [{talos_ok}]\n\
         \x20 nodes      a VM started with ipconfig0 ip=127.x.y.z/NN boots a Talos {version} node at ADDRESS:{tport}\n\
         \x20 Kubernetes port {kport} on the VIP and control planes once bootstrapped\n\
         Infisical   {host}  [{inf_ok}]\n\
         \x20 client id  {cid}\n\
         \x20 secret     {secret}\n\
         \x20 project    {project}\n\
         \x20 environment {env} (all: {envs})\n",
        pid = lab.pid,
        scale = lab.time_scale,
        endpoint = p.endpoint,
        pve_ok = verdict(&health.proxmox),
        user = p.username,
        password = p.password,
        ca = p.ca_cert.display(),
        tname = p.template_name,
        tid = p.template_vmid,
        node = p.node,
        admin = t.admin,
        talos_ok = verdict(&health.talos),
        version = t.talos_version,
        tport = t.talos_port,
        kport = t.kubernetes_port,
        host = i.host,
        inf_ok = verdict(&health.infisical),
        cid = i.client_id,
        secret = i.client_secret,
        project = i.project_id,
        env = i.environment,
        envs = i.environments.join(", "),
    )
}

fn describe_vms(guests: &[Guest]) -> String {
    let mut out = String::from("\nVMs (templates left out):\n");
    if guests.is_empty() {
        out.push_str("  none\n");
    }
    for g in guests {
        let state = if g.running { "running" } else { "stopped" };
        out.push_str(&format!(
            "  {:<6} {:<24} {:<8} {state}\n",
            g.vmid, g.name, g.node
        ));
    }
    out
}

fn describe_nodes(nodes: &[Value]) -> String {
    let mut out = String::from("\nTalos nodes:\n");
    if nodes.is_empty() {
        out.push_str("  none\n");
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for n in nodes {
        out.push_str(&format!(
            "  {:<16} {:<12} {:<8} {:<13} {:<12} {}\n",
            text(&n["address"]),
            text(&n["state"]),
            text(&n["talos_version"]),
            text(&n["machine_type"]),
            text(&n["hostname"]),
            etcd_column(n),
        ));
        if let Some(reason) = n["kube_apiserver_failure"].as_str() {
            out.push_str(&format!("  {:<16} {reason}\n", ""));
        }
    }
    out
}

/// VMs started on an address another running VM held (the admin API's `/address-clashes`).
fn describe_clashes(clashes: &[Value]) -> String {
    if clashes.is_empty() {
        return "\nAddress clashes: none\n".into();
    }
    let mut out = String::from("\nAddress clashes (a VM started where another running VM held the address; it got no node):\n");
    for c in clashes {
        out.push_str(&format!(
            "  {:<16} VM {} started while VM {} ran there\n",
            c["address"].as_str().unwrap_or("-"),
            c["vmid"],
            c["holder"],
        ));
    }
    out
}

/// A control plane's etcd member ID (hex, as etcdctl prints it), its health, and whether it
/// holds the VIP.
fn etcd_column(node: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(id) = node["etcd_member_id"].as_u64() {
        let health = if node["etcd_healthy"].as_bool() == Some(true) {
            "healthy"
        } else {
            "unhealthy"
        };
        parts.push(format!("etcd {id:x} ({health})"));
    }
    if node["vip"].as_bool() == Some(true) {
        parts.push("holds the VIP".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_each_control_planes_etcd_member_and_the_vip_holder() {
        let nodes = serde_json::json!([
            { "address": "127.0.0.211", "state": "running", "talos_version": "v1.12.0",
              "machine_type": "controlplane", "hostname": "cp-1",
              "etcd_member_id": 3054539213190530000_u64, "etcd_healthy": true, "vip": true },
            { "address": "127.0.0.212", "state": "off", "talos_version": "v1.12.0",
              "machine_type": "controlplane", "hostname": "cp-2",
              "etcd_member_id": 17, "etcd_healthy": false, "vip": false },
        ]);
        let out = describe_nodes(nodes.as_array().unwrap());
        assert!(
            out.contains("cp-1         etcd 2a63e73b12b903d0 (healthy), holds the VIP"),
            "{out}"
        );
        assert!(out.contains("cp-2         etcd 11 (unhealthy)\n"), "{out}");
    }

    #[test]
    fn status_names_each_address_clash() {
        assert_eq!(describe_clashes(&[]), "\nAddress clashes: none\n");
        let clashes = serde_json::json!([{ "address": "127.0.0.212", "vmid": 107, "holder": 101, "seen_at": 0 }]);
        let out = describe_clashes(clashes.as_array().unwrap());
        assert!(
            out.contains("127.0.0.212      VM 107 started while VM 101 ran there"),
            "{out}"
        );
    }
}
