//! Just enough of a Proxmox VE client to watch VMs: ticket login, the VM list, a VM's config.
//! The lab treats its Proxmox as a black box, as a real hypervisor would be: everything goes
//! through the HTTPS API with the CA the server wrote out.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::machines::Guest;

/// A failure talking to Proxmox.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The CA file could not be read or parsed.
    #[error("unable to load the Proxmox CA {path}")]
    Ca {
        /// Path of the PEM file.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request failed (connection, TLS, body).
    #[error("unable to {action}")]
    Http {
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Proxmox refused the login.
    #[error("Proxmox refused the login of {0}")]
    Login(String),
    /// The answer was not what the API documents.
    #[error("unexpected answer to {0}")]
    Answer(String),
}

/// Login of the lab's Proxmox.
#[derive(Debug, Clone)]
pub struct PveLogin {
    /// `https://127.0.0.2:8006`.
    pub endpoint: String,
    /// `root@pam`.
    pub username: String,
    /// `secret`.
    pub password: String,
}

/// A logged-in client (the ticket is renewed on 401).
pub struct Pve {
    http: reqwest::Client,
    login: PveLogin,
    ticket: Option<String>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct Resource {
    vmid: u32,
    node: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    template: Value,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    uptime: u64,
}

impl Pve {
    /// A client trusting only the CA in `ca_pem` (the lab's self-signed certificate). It never
    /// goes through a proxy: the lab is on loopback.
    pub fn new(login: PveLogin, ca_pem: &[u8]) -> Result<Self, PveError> {
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(|e| PveError::Ca {
            path: "(pem)".into(),
            source: Box::new(e),
        })?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| PveError::Http {
                action: "build the HTTP client".into(),
                source,
            })?;
        Ok(Pve {
            http,
            login,
            ticket: None,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.login.endpoint)
    }

    async fn log_in(&mut self) -> Result<String, PveError> {
        let form = [
            ("username", self.login.username.as_str()),
            ("password", self.login.password.as_str()),
        ];
        let action = || format!("log in to {}", self.login.endpoint);
        let response = self
            .http
            .post(self.url("/access/ticket"))
            .form(&form)
            .send()
            .await
            .map_err(|source| PveError::Http {
                action: action(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(PveError::Login(self.login.username.clone()));
        }
        let body: Data<Value> = response.json().await.map_err(|source| PveError::Http {
            action: action(),
            source,
        })?;
        let ticket = body.data["ticket"]
            .as_str()
            .ok_or_else(|| PveError::Answer("POST /access/ticket".into()))?
            .to_string();
        self.ticket = Some(ticket.clone());
        Ok(ticket)
    }

    /// `GET path`, logging in first or again when the ticket expired.
    async fn get<T: serde::de::DeserializeOwned>(&mut self, path: &str) -> Result<T, PveError> {
        for _ in 0..2 {
            let ticket = match &self.ticket {
                Some(t) => t.clone(),
                None => self.log_in().await?,
            };
            let response = self
                .http
                .get(self.url(path))
                .header("Cookie", format!("PVEAuthCookie={ticket}"))
                .send()
                .await
                .map_err(|source| PveError::Http {
                    action: format!("GET {path}"),
                    source,
                })?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                self.ticket = None;
                continue;
            }
            let response = response
                .error_for_status()
                .map_err(|source| PveError::Http {
                    action: format!("GET {path}"),
                    source,
                })?;
            let body: Data<T> = response.json().await.map_err(|source| PveError::Http {
                action: format!("read GET {path}"),
                source,
            })?;
            return Ok(body.data);
        }
        Err(PveError::Login(self.login.username.clone()))
    }

    /// Every QEMU guest that is not a template.
    pub async fn guests(&mut self) -> Result<Vec<Guest>, PveError> {
        let resources: Vec<Resource> = self.get("/cluster/resources?type=vm").await?;
        Ok(resources
            .into_iter()
            .filter(|r| r.kind == "qemu" || r.kind.is_empty())
            .filter(|r| !matches!(&r.template, Value::Number(n) if n.as_u64() == Some(1)))
            .filter(|r| r.template != Value::Bool(true))
            .map(|r| Guest {
                vmid: r.vmid,
                node: r.node,
                name: r.name,
                running: r.status == "running",
                uptime: r.uptime,
            })
            .collect())
    }

    /// A VM's `ipconfig0` as it is in effect (`current=1`: pending changes of a running VM
    /// do not count until it reboots), if set.
    pub async fn ipconfig0(&mut self, node: &str, vmid: u32) -> Result<Option<String>, PveError> {
        let config: Value = self
            .get(&format!("/nodes/{node}/qemu/{vmid}/config?current=1"))
            .await?;
        Ok(config["ipconfig0"].as_str().map(str::to_string))
    }

    /// Whether the last power-down of a VM was an ACPI shutdown or reboot (`qmshutdown`,
    /// `qmreboot`), which the guest handles itself, rather than a hard stop (`qmstop`) or a
    /// hard reset (`qmreset`: QEMU's `system_reset`, no ACPI event for the guest; qemu-server:
    /// src/PVE/API2/Qemu.pm (9.2.6) `vm_reset`, src/PVE/QemuServer.pm `vm_reset`). A start
    /// since then (a VM restarted between two looks) does not count.
    pub async fn last_task_was_acpi(&mut self, node: &str, vmid: u32) -> Result<bool, PveError> {
        let tasks: Vec<Value> = self
            .get(&format!("/nodes/{node}/tasks?vmid={vmid}&limit=5"))
            .await?;
        Ok(acpi_power_down(
            tasks.iter().filter_map(|t| t["type"].as_str()),
        ))
    }

    /// Whether Proxmox answers and accepts the login.
    pub async fn healthy(&mut self) -> bool {
        self.ticket = None;
        self.log_in().await.is_ok()
    }
}

/// Whether the newest power-down among a VM's tasks (`kinds`, newest first) was an ACPI one
/// (see [`Pve::last_task_was_acpi`]).
fn acpi_power_down<'a>(kinds: impl IntoIterator<Item = &'a str>) -> bool {
    let down = kinds
        .into_iter()
        .find(|kind| matches!(*kind, "qmstop" | "qmreset" | "qmshutdown" | "qmreboot"));
    matches!(down, Some("qmshutdown" | "qmreboot"))
}

/// `https://ADDR`, the endpoint of a Proxmox listening on `addr`.
pub fn endpoint(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

#[cfg(test)]
mod tests {
    use super::acpi_power_down;

    #[test]
    fn a_reset_after_an_acpi_reboot_is_a_hard_power_cut() {
        assert!(acpi_power_down(["qmstart", "qmreboot", "qmstop"]));
        assert!(!acpi_power_down(["qmreset", "qmreboot"]));
        assert!(!acpi_power_down(["qmstart", "qmstop", "qmshutdown"]));
        assert!(!acpi_power_down(["qmstart", "qmclone"]));
    }
}
