//! What a node in maintenance mode answers, per the Talos release it runs.
//!
//! Up to v1.12, machined serves maintenance mode itself (Talos: internal/app/maintenance/
//! server.go (v1.12.0), the same file in v1.10.0 and v1.11.0): clients without a certificate
//! get the Reader role (internal/app/machined/pkg/controllers/runtime/maintenance_service.go,
//! `authz.ReadOnlyWithAdminOnSiderolink`); `Version`, `Upgrade`, `Reset` and `Meta*` want
//! Admin and answer Unimplemented "API is not implemented in maintenance mode"; the calls the
//! server does not implement answer gRPC's own "method X not implemented"; `Disks`, the COSI
//! resources and `ApplyConfiguration` (AUTO, REBOOT and TRY only) are served.
//!
//! From v1.13, apid serves maintenance mode with the machine API of a configured node
//! (internal/app/machined/pkg/controllers/runtime/api_service_config.go (v1.13.0): read-only
//! roles, client certificates not verified): every call the Reader role may make is served
//! (internal/app/machined/pkg/system/services/machined.go (v1.13.0) rules), the others are
//! PermissionDenied "not authorized" (pkg/grpc/middleware/authz/authorizer.go), and
//! `ApplyConfiguration` takes every mode (v1alpha1_server.go (v1.13.0) `ApplyConfiguration`).

// Refusals are tonic `Status` values, as the gRPC handlers answer them.
#![allow(clippy::result_large_err)]

use castle::talos::proto::machine::apply_configuration_request::Mode as ApplyMode;
use tonic::Status;

/// Who serves maintenance mode, by release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// v1.10 to v1.12: machined's own maintenance server.
    Machined,
    /// v1.13 and later: apid, with read-only roles.
    Apid,
}

impl Server {
    /// The server of a node running `release` (e.g. `v1.12.0`).
    pub(crate) fn of(release: &str) -> Server {
        let mut parts = release.trim_start_matches('v').split('.');
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(1);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if (major, minor) >= (1, 13) {
            Server::Apid
        } else {
            Server::Machined
        }
    }

    /// Whether `rpc` (a MachineService method name) is answered by its handler for a client
    /// without a certificate, else the refusal.
    pub(crate) fn admit(self, rpc: &str) -> Result<(), Status> {
        match self {
            Server::Machined => match rpc {
                "ApplyConfiguration" => Ok(()),
                "Version" | "Upgrade" | "Reset" => Err(Status::unimplemented(
                    "API is not implemented in maintenance mode",
                )),
                _ => Err(Status::unimplemented(format!(
                    "method {rpc} not implemented"
                ))),
            },
            Server::Apid => match rpc {
                // Reader may call these; apply is checked by its handler.
                "ApplyConfiguration" | "Version" | "ServiceList" => Ok(()),
                // Reader may ask, the handler has no machine type yet
                // (internal/app/internal/machinehelper/machinehelper.go `CheckControlplane`).
                "EtcdMemberList" => Err(Status::unimplemented(
                    "machine type is not set, cannot use member list API",
                )),
                _ => Err(Status::permission_denied("not authorized")),
            },
        }
    }

    /// The apply modes maintenance mode takes.
    pub(crate) fn admit_mode(self, mode: ApplyMode) -> Result<(), Status> {
        if self == Server::Machined && matches!(mode, ApplyMode::NoReboot | ApplyMode::Staged) {
            return Err(Status::unimplemented(format!(
                "apply configuration --mode='{}' is not supported in maintenance mode",
                mode.as_str_name().to_lowercase().replace('_', "-")
            )));
        }
        Ok(())
    }

    /// The code of a config that does not decode: a plain error (Unknown) from machined's
    /// maintenance server, InvalidArgument from v1.13's handler.
    pub(crate) fn undecodable(self, reason: String) -> Status {
        match self {
            Server::Machined => Status::unknown(reason),
            Server::Apid => Status::invalid_argument(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_12_node_refuses_version_to_an_insecure_client_and_v1_13_answers_it() {
        let refused = Server::of("v1.12.0").admit("Version").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert_eq!(
            refused.message(),
            "API is not implemented in maintenance mode"
        );
        assert!(Server::of("v1.13.0").admit("Version").is_ok());
    }

    #[test]
    fn calls_left_out_are_unimplemented_before_v1_13_and_need_a_role_after() {
        for release in ["v1.10.3", "v1.11.0", "v1.12.1"] {
            let e = Server::of(release).admit("ServiceList").unwrap_err();
            assert_eq!(
                (e.code(), e.message()),
                (
                    tonic::Code::Unimplemented,
                    "method ServiceList not implemented"
                )
            );
        }
        assert!(Server::of("v1.13.0").admit("ServiceList").is_ok());
        let e = Server::of("v1.13.0").admit("Upgrade").unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::PermissionDenied, "not authorized")
        );
    }

    #[test]
    fn no_reboot_and_staged_are_refused_in_maintenance_before_v1_13() {
        let e = Server::Machined.admit_mode(ApplyMode::Staged).unwrap_err();
        assert_eq!(
            e.message(),
            "apply configuration --mode='staged' is not supported in maintenance mode"
        );
        assert!(Server::Machined.admit_mode(ApplyMode::Try).is_ok());
        assert!(Server::Apid.admit_mode(ApplyMode::Staged).is_ok());
    }
}
