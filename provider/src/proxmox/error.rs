//! Errors of the Proxmox client, and the one place that decides what they mean.

use std::collections::BTreeMap;

/// Everything that can go wrong talking to Proxmox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built (bad endpoint URL, bad CA certificate).
    #[error("invalid Proxmox client settings: {0}")]
    Settings(String),
    /// The request never got an answer (connection refused, reset, TLS, timeout).
    #[error("cannot reach Proxmox at {url}: {source}")]
    Transport {
        /// What was called.
        url: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// The server's TLS certificate is not one castle trusts: a setting to fix, never retried.
    #[error(
        "Proxmox at {url} presented a TLS certificate castle does not trust ({reason}). Set the \
         provider's proxmox {{ ca_cert_pem }} (or PROXMOX_VE_CA_CERT_PEM) to the PEM of the CA \
         that signed it (on a Proxmox node: /etc/pve/pve-root-ca.pem; several certificates may \
         be given), or insecure = true for a test cluster only"
    )]
    UntrustedCertificate {
        /// What was called.
        url: String,
        /// rustls's verdict, e.g. `invalid peer certificate: UnknownIssuer`.
        reason: String,
        /// The failed request.
        #[source]
        source: reqwest::Error,
    },
    /// Login refused, or a token without the right privileges.
    #[error("Proxmox refused the credentials ({status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// PVE's message.
        message: String,
    },
    /// The object does not exist (404, or PVE's "does not exist" wording).
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other API error, with PVE's per-parameter reasons.
    #[error("{message}{}", format_fields(.errors))]
    Api {
        /// HTTP status.
        status: u16,
        /// PVE's message (first line of the reason).
        message: String,
        /// Per-parameter reasons (`{"errors": {"field": "why"}}`).
        errors: BTreeMap<String, String>,
    },
    /// A task ended with an error exit status.
    #[error("task {upid} failed: {exit_status}{}", format_log(.log))]
    Task {
        /// The task id.
        upid: String,
        /// `exitstatus`, e.g. `clone failed: ...`.
        exit_status: String,
        /// The last lines of the task log.
        log: Vec<String>,
    },
    /// An answer that does not have the shape PVE documents.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// What was called.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// What the configuration asks cannot be done on this cluster; says why and what to do.
    #[error("{0}")]
    Unsupported(String),
    /// The operation ran out of time; says what it was waiting for.
    #[error("timed out while {0}")]
    Timeout(String),
}

fn format_fields(errors: &BTreeMap<String, String>) -> String {
    errors
        .iter()
        .map(|(field, why)| format!("\n  {field}: {}", why.trim()))
        .collect()
}

fn format_log(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("\ntask log:\n  {}", log.join("\n  "))
    }
}

impl Error {
    /// The message PVE gave, with its per-field reasons, for classification.
    pub(crate) fn text(&self) -> String {
        match self {
            Error::Api {
                message, errors, ..
            } => {
                let mut text = message.clone();
                for why in errors.values() {
                    text.push(' ');
                    text.push_str(why);
                }
                text
            }
            Error::Task { exit_status, .. } => exit_status.clone(),
            Error::NotFound(message) => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when the configuration asks what this cluster cannot do (a template on another
    /// node whose disks are on local storage).
    pub fn is_template_elsewhere(&self) -> bool {
        matches!(self, Error::Unsupported(_))
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// A config or storage lock that timed out: worth another try after a pause.
    pub fn is_lock_timeout(&self) -> bool {
        let text = self.text();
        (text.contains("can't lock file") && text.contains("timeout"))
            || text.contains("got lock request timeout")
            || text.contains("got lock timeout")
            || (text.contains("pve-storage") && text.contains("timeout"))
            || text.contains("cfs-lock")
    }

    /// The VMID is taken (another client got the same id from `nextid`). Real PVE says so in
    /// three ways (qemu-server `src/PVE/API2/Qemu.pm` clone_vm, 9.2.6):
    /// - `unable to create VM N: config file already exists`, at once, when `N.conf` exists on
    ///   the node the clone runs on;
    /// - the clone task ends in `can't lock file '/var/lock/qemu-server/lock-N.conf' - got
    ///   timeout` when another clone holds N on that node (`lock_config_full($newid, 1)`);
    /// - the task ends in `... N.conf' failed: File exists` when N lives on another node
    ///   (pve-cluster `pmxcfs/memdb.c` refuses a VMID the vmlist has elsewhere: EEXIST).
    ///
    /// `/cluster/nextid?vmid=N` answers `VM N already exists` (pve-manager
    /// `PVE/API2/Cluster.pm`).
    pub fn is_vmid_taken(&self, vmid: u32) -> bool {
        let text = self.text();
        text.contains("config file already exists")
            || text.contains(&format!("VM {vmid} already exists"))
            || (text.contains(&format!("/lock-{vmid}.conf'")) && text.contains("timeout"))
            || (text.contains(&format!("/{vmid}.conf' failed")) && text.contains("File exists"))
    }

    /// The VM carries a config lock of a longer job (`VM is locked (backup)`, `(migrate)`,
    /// `(snapshot)`, `(clone)`): PVE refuses at once (pve-guest-common
    /// `src/PVE/AbstractConfig.pm` check_lock) rather than waiting for it.
    pub fn is_vm_locked(&self) -> bool {
        self.text().contains("VM is locked (")
    }

    /// A storage that is offline (pve-storage `src/PVE/Storage.pm` activate_storage:
    /// `storage 'X' is not online`).
    pub fn is_storage_offline(&self) -> bool {
        let text = self.text();
        text.contains("is not online")
    }

    /// The token or user lacks a privilege (`403 Permission check failed (/, Sys.Console)`).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Api { status: 403, .. })
    }

    /// A start found the VM running already.
    pub fn is_already_running(&self) -> bool {
        self.text().contains("already running")
    }

    /// Worth retrying the same request: connection trouble, 5xx that are not PVE's verdicts on
    /// the request itself, and pveproxy's 595/596 for a node it cannot reach (AnyEvent::HTTP's
    /// connection errors, passed on by pve-http-server `src/PVE/APIServer/AnyEvent.pm`).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => {
                matches!(status, 502..=504 | 595 | 596) || self.is_lock_timeout()
            }
            _ => false,
        }
    }

    /// The node that should answer is unreachable (595 `No route to host`, 596 connection
    /// timed out): the VM may have been moved off it.
    pub fn is_node_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Api {
                status: 595 | 596,
                ..
            }
        )
    }

    /// The request may or may not have reached PVE: the connection failed, or a proxy in
    /// front of PVE answered 502-504. Resending is only safe for idempotent requests.
    pub fn is_answer_lost(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => {
                matches!(status, 502..=504 | 596) && !self.is_lock_timeout()
            }
            _ => false,
        }
    }
}

/// A request that got no answer: [`Error::UntrustedCertificate`] when TLS refused the server's
/// certificate, else [`Error::Transport`].
pub(crate) fn transport(url: &str, source: reqwest::Error) -> Error {
    match crate::tls::untrusted_certificate(&source) {
        Some(reason) => Error::UntrustedCertificate {
            url: url.to_string(),
            reason,
            source,
        },
        None => Error::Transport {
            url: url.to_string(),
            source,
        },
    }
}

/// Turns PVE's "does not exist" wording into [`Error::NotFound`].
pub(crate) fn classify(status: u16, message: String, errors: BTreeMap<String, String>) -> Error {
    let lower = message.to_ascii_lowercase();
    if status == 404
        || lower.contains("does not exist")
        || lower.contains("no such vm")
        || (lower.contains("configuration file") && lower.contains("not exist"))
    {
        return Error::NotFound(message);
    }
    if status == 401 {
        return Error::Auth { status, message };
    }
    Error::Api {
        status,
        message,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pve_does_not_exist_wording_is_not_found() {
        let err = classify(
            500,
            "Configuration file 'nodes/pve1/qemu-server/105.conf' does not exist".into(),
            BTreeMap::new(),
        );
        assert!(err.is_not_found());
    }

    #[test]
    fn lock_timeouts_are_recognised() {
        let err = classify(
            500,
            "can't lock file '/var/lock/qemu-server/lock-105.conf' - got timeout".into(),
            BTreeMap::new(),
        );
        assert!(err.is_lock_timeout());
        assert!(err.is_transient());
        let err = classify(500, "VM 105 already exists".into(), BTreeMap::new());
        assert!(err.is_vmid_taken(105));
        assert!(!err.is_transient());
    }

    fn failed_clone(exit_status: &str) -> Error {
        Error::Task {
            upid: "UPID:pve1:1:2:3:qmclone:9000:root@pam:".into(),
            exit_status: exit_status.into(),
            log: Vec::new(),
        }
    }

    #[test]
    fn a_vmid_clash_is_recognised_in_all_three_forms_pve_reports() {
        let same_node = classify(
            500,
            "unable to create VM 105: config file already exists".into(),
            BTreeMap::new(),
        );
        assert!(same_node.is_vmid_taken(105));
        let held =
            failed_clone("can't lock file '/var/lock/qemu-server/lock-105.conf' - got timeout");
        assert!(held.is_vmid_taken(105));
        // The template's lock is not the new id's.
        assert!(!held.is_vmid_taken(9000));
        let other_node = failed_clone(
            "clone failed: close (rename) atomic file '/etc/pve/nodes/pve1/qemu-server/105.conf' failed: File exists",
        );
        assert!(other_node.is_vmid_taken(105));
        assert!(!other_node.is_vmid_taken(10));
        let storage = failed_clone(
            "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout",
        );
        assert!(!storage.is_vmid_taken(105));
        assert!(storage.is_lock_timeout());
    }

    #[test]
    fn field_errors_are_listed() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "memory".to_string(),
            "value must have a minimum value of 16".to_string(),
        );
        let err = classify(400, "Parameter verification failed.".into(), errors);
        assert_eq!(
            err.to_string(),
            "Parameter verification failed.\n  memory: value must have a minimum value of 16"
        );
    }

    #[test]
    fn a_node_that_is_down_is_transient_for_reads_but_no_lost_answer() {
        let down = classify(595, "No route to host".into(), BTreeMap::new());
        assert!(down.is_node_unreachable() && down.is_transient());
        // pveproxy never reached the node: a clone that got 595 did not happen.
        assert!(!down.is_answer_lost());
        let forbidden = classify(
            403,
            "Permission check failed (/, Sys.Console)".into(),
            BTreeMap::new(),
        );
        assert!(forbidden.is_permission_denied() && !forbidden.is_transient());
    }
}
