//! The whole lab as one command: `castle-lab up`, `down`, `status` and the foreground `serve`
//! that `up` starts detached.
//!
//! `serve` runs fakepve (the lab's Proxmox, a Python child process), the Talos fleet with its
//! admin API and Kubernetes APIs, the Infisical emulator, and the [`crate::wiring`] watcher
//! that turns started VMs into Talos machines. It writes `castle-lab.pid` when it starts and
//! `lab.json` (endpoints and credentials) once every service answers.

pub mod control;
pub mod fakepve;
pub mod repo;
pub mod serve;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// Proxmox login of the lab: a loopback-only test double, like fakepve's own default.
pub const PVE_USERNAME: &str = "root@pam";
/// Password of [`PVE_USERNAME`].
pub const PVE_PASSWORD: &str = "secret";
/// The Proxmox node holding the Talos template.
pub const PVE_NODE: &str = "pve1";
/// VMID of the Talos nocloud template (`acceptance-tests/harness/pve.py`).
pub const TEMPLATE_VMID: u32 = 9000;
/// Name of the Talos nocloud template.
pub const TEMPLATE_NAME: &str = "talos-nocloud";
/// fakepve's time scale at `--time-scale 1`: a PVE task of 20 s takes one real second.
pub const PVE_BASE_TIME_SCALE: f64 = 0.05;

/// Where the lab listens and keeps its files.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// fakepve's address (`--pve`, default 127.0.0.2:8006).
    pub pve: SocketAddr,
    /// The Talos fleet's admin API (`--admin`, default 127.0.0.1:7000).
    pub admin: SocketAddr,
    /// The Infisical emulator (`--infisical`, default 127.0.0.3:8200).
    pub infisical: SocketAddr,
    /// The Image Factory (`--factory`, default 127.0.0.4:4443), HTTPS.
    pub factory: SocketAddr,
    /// `--state-dir`, default `<repo>/.lab`.
    pub state_dir: PathBuf,
    /// `--time-scale`: multiplies every lab delay (0.1 is ten times faster).
    pub time_scale: f64,
}

impl Settings {
    /// Defaults, with the state directory under `repo` (or `.lab` in the current directory).
    pub fn defaults(repo: Option<&Path>) -> Self {
        Settings {
            pve: "127.0.0.2:8006".parse().expect("valid address"),
            admin: "127.0.0.1:7000".parse().expect("valid address"),
            infisical: "127.0.0.3:8200".parse().expect("valid address"),
            factory: "127.0.0.4:4443".parse().expect("valid address"),
            state_dir: repo
                .map(|r| r.join(".lab"))
                .unwrap_or_else(|| ".lab".into()),
            time_scale: 1.0,
        }
    }

    /// Settings from `--flag value` pairs over the defaults. Every address must be on loopback:
    /// the lab hands out fixed, public credentials.
    pub fn parse(args: &[String], repo: Option<&Path>) -> anyhow::Result<Self> {
        let mut s = Settings::defaults(repo);
        let mut iter = args.iter();
        while let Some(flag) = iter.next() {
            let value = iter
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let address = |name: &str| -> anyhow::Result<SocketAddr> {
                let a: SocketAddr = value
                    .parse()
                    .with_context(|| format!("{name} must be IP:PORT, not {value:?}"))?;
                if !a.ip().is_loopback() {
                    bail!("{name} {a}: the lab listens on loopback (127.0.0.0/8) only");
                }
                Ok(a)
            };
            match flag.as_str() {
                "--pve" => s.pve = address("--pve")?,
                "--admin" => s.admin = address("--admin")?,
                "--infisical" => s.infisical = address("--infisical")?,
                "--factory" => s.factory = address("--factory")?,
                "--state-dir" => s.state_dir = value.into(),
                "--time-scale" => {
                    s.time_scale = value
                        .parse()
                        .ok()
                        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
                        .with_context(|| {
                            format!("--time-scale must be a number ≥ 0, not {value:?}")
                        })?
                }
                other => bail!("unknown flag {other}"),
            }
        }
        Ok(s)
    }

    /// The flags that give these settings back to [`Settings::parse`].
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--pve".into(),
            self.pve.to_string(),
            "--admin".into(),
            self.admin.to_string(),
            "--infisical".into(),
            self.infisical.to_string(),
            "--factory".into(),
            self.factory.to_string(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--time-scale".into(),
            self.time_scale.to_string(),
        ]
    }

    /// `castle-lab.pid`: the serve process, from start to exit.
    pub fn pid_file(&self) -> PathBuf {
        self.state_dir.join("castle-lab.pid")
    }

    /// `lab.json`: endpoints and credentials, written once everything answers.
    pub fn lab_file(&self) -> PathBuf {
        self.state_dir.join("lab.json")
    }

    /// `castle-lab.log`: what the detached serve process and fakepve print.
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("castle-lab.log")
    }

    /// The CA to trust for the Image Factory.
    pub fn factory_ca(&self) -> PathBuf {
        self.state_dir.join("factory-ca.pem")
    }

    /// fakepve's certificate, the CA to trust for the Proxmox endpoint.
    pub fn pve_ca(&self) -> PathBuf {
        self.state_dir.join("pve-ca.pem")
    }
}

/// The content of `lab.json`: what a script needs to use the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabFile {
    /// Process id of `castle-lab serve`.
    pub pid: u32,
    /// Factor of every delay.
    pub time_scale: f64,
    /// The Proxmox VE endpoint.
    pub proxmox: ProxmoxInfo,
    /// The Talos fleet.
    pub talos: TalosInfo,
    /// The Infisical emulator.
    pub infisical: InfisicalInfo,
    /// The Image Factory.
    pub factory: FactoryInfo,
}

/// Image Factory part of [`LabFile`]: what `TALOS_IMAGE_FACTORY_URL` and
/// `TALOS_IMAGE_FACTORY_CA_CERT_PEM` take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactoryInfo {
    /// `https://127.0.0.4:4443`.
    pub url: String,
    /// Path of the PEM CA certificate to trust.
    pub ca_cert: PathBuf,
}

/// Proxmox part of [`LabFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxmoxInfo {
    /// `https://127.0.0.2:8006`.
    pub endpoint: String,
    /// Login user.
    pub username: String,
    /// Login password.
    pub password: String,
    /// Path of the PEM CA certificate to trust.
    pub ca_cert: PathBuf,
    /// Node holding the template.
    pub node: String,
    /// VMID of the Talos template.
    pub template_vmid: u32,
    /// Name of the Talos template.
    pub template_name: String,
}

/// Talos part of [`LabFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TalosInfo {
    /// `http://127.0.0.1:7000`, the fleet's admin API.
    pub admin: String,
    /// Port of the Talos API on every node address.
    pub talos_port: u16,
    /// Port of the Kubernetes API on the VIP and control planes.
    pub kubernetes_port: u16,
    /// Talos version of the machines booted from the template.
    pub talos_version: String,
    /// System extensions of the template's disk image.
    pub template_extensions: Vec<String>,
}

/// Infisical part of [`LabFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfisicalInfo {
    /// `http://127.0.0.3:8200`.
    pub host: String,
    /// Universal Auth client id.
    pub client_id: String,
    /// Universal Auth client secret.
    pub client_secret: String,
    /// Project id.
    pub project_id: String,
    /// Default environment slug.
    pub environment: String,
    /// Every environment slug.
    pub environments: Vec<String>,
}

impl LabFile {
    /// What a lab with these settings, run by `pid`, serves.
    pub fn new(settings: &Settings, pid: u32, fleet: &crate::talos::FleetOptions) -> Self {
        let identity = crate::infisical::Identity::default();
        LabFile {
            pid,
            time_scale: settings.time_scale,
            proxmox: ProxmoxInfo {
                endpoint: crate::wiring::pve::endpoint(settings.pve),
                username: PVE_USERNAME.into(),
                password: PVE_PASSWORD.into(),
                ca_cert: std::path::absolute(settings.pve_ca())
                    .unwrap_or_else(|_| settings.pve_ca()),
                node: PVE_NODE.into(),
                template_vmid: TEMPLATE_VMID,
                template_name: TEMPLATE_NAME.into(),
            },
            talos: TalosInfo {
                admin: format!("http://{}", settings.admin),
                talos_port: fleet.talos_port,
                kubernetes_port: fleet.kube_port,
                talos_version: fleet.default_talos_version.clone(),
                template_extensions: fleet.template_extensions.clone(),
            },
            infisical: InfisicalInfo {
                host: format!("http://{}", settings.infisical),
                client_id: identity.client_id,
                client_secret: identity.client_secret,
                project_id: identity.project_id,
                environment: identity.environments[0].clone(),
                environments: identity.environments,
            },
            factory: FactoryInfo {
                url: format!("https://{}", settings.factory),
                ca_cert: std::path::absolute(settings.factory_ca())
                    .unwrap_or_else(|_| settings.factory_ca()),
            },
        }
    }

    /// Reads `lab.json`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("unable to read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("unable to parse {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_the_default_addresses_and_round_trip() {
        let s = Settings::parse(
            &args(&[
                "--pve",
                "127.0.0.52:8006",
                "--state-dir",
                "/tmp/x",
                "--time-scale",
                "0.5",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(s.pve.to_string(), "127.0.0.52:8006");
        assert_eq!(s.admin.to_string(), "127.0.0.1:7000");
        assert_eq!(s.pid_file(), PathBuf::from("/tmp/x/castle-lab.pid"));
        assert_eq!(Settings::parse(&s.to_args(), None).unwrap(), s);
    }

    #[test]
    fn addresses_off_loopback_are_refused() {
        let e = Settings::parse(&args(&["--infisical", "0.0.0.0:8200"]), None).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(Settings::parse(&args(&["--admin"]), None).is_err());
        assert!(Settings::parse(&args(&["--time-scale", "-1"]), None).is_err());
    }
}
