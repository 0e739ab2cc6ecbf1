//! What `MachineService/Read` serves: the one file castle reads, the boot id, which changes
//! with every boot (Talos serves any file through it: internal/app/machined/internal/server/
//! v1alpha1/v1alpha1_server.go (v1.12.0) `Read`; talosctl tells a reboot by this file:
//! cmd/talosctl/pkg/talos/action/tracker.go `getBootID`).

use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use tonic::Status;

use super::{Fleet, Phase};

/// Where Linux keeps the boot id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

impl Fleet {
    /// The Read call: the contents of `path` on the node at `address`.
    pub(crate) fn read_file(&self, address: IpAddr, path: &str) -> Result<Vec<u8>, Status> {
        let state = self.lock_api()?;
        boot_id(state.serving(address)?.phase, path)
    }
}

fn boot_id(phase: Phase, path: &str) -> Result<Vec<u8>, Status> {
    if path != BOOT_ID {
        return Err(Status::unknown(format!(
            "open {path}: no such file or directory"
        )));
    }
    match phase {
        // The boot is the moment the node last came up: a new one after every reboot.
        Phase::Running { wall, .. } => {
            let nanos = wall
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let hex = format!("{nanos:032x}");
            Ok(format!(
                "{}-{}-{}-{}-{}\n",
                &hex[0..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..32]
            )
            .into_bytes())
        }
        _ => Err(Status::unavailable("the node is rebooting")),
    }
}
