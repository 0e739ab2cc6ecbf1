//! fakepve, the lab's Proxmox, as a child process of `castle-lab serve`.
//!
//! fakepve is a Python package (AGPL, a test tool run as a separate process, never linked);
//! `acceptance-tests/harness/pve_serve.py` adds castle's disk-resize model and the Talos
//! template to it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::{control, repo, Settings, PVE_BASE_TIME_SCALE};

/// How long fakepve may take to print that it listens (Python start, certificate).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The running fakepve.
pub struct FakePve {
    child: Child,
    /// Held open for fakepve's whole life: if this process dies, even by SIGKILL, the pipe
    /// closes and fakepve stops (`--exit-on-stdin-eof`), so no orphan keeps the port.
    stdin: Option<ChildStdin>,
}

impl FakePve {
    /// Starts fakepve on `settings.pve` and waits until it listens. Its stderr goes where ours
    /// goes (the lab's log when detached).
    pub async fn start(settings: &Settings, root: &Path) -> anyhow::Result<Self> {
        control::ensure_free(settings.pve, "--pve")?;
        let ca = settings.pve_ca();
        // A CA left by an earlier run must not be mistaken for this run's.
        let _ = std::fs::remove_file(&ca);
        let python = repo::python(root);
        let script = repo::pve_serve(root);
        let mut child = Command::new(&python)
            .arg("-u")
            .arg(&script)
            .args(["--host", &settings.pve.ip().to_string()])
            .args(["--port", &settings.pve.port().to_string()])
            .arg("--ca-out")
            .arg(&ca)
            .arg("--state-dir")
            .arg(settings.state_dir.join("pve"))
            .args([
                "--time-scale",
                &(PVE_BASE_TIME_SCALE * settings.time_scale).to_string(),
            ])
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "unable to run {} {} (set CASTLE_LAB_PYTHON to a Python with fakepve)",
                    python.display(),
                    script.display()
                )
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("fakepve's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                tracing::info!("fakepve: {line}");
                if line.contains("listening on") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                bail!(
                    "fakepve ({} {}) exited before listening on {} ({})",
                    python.display(),
                    script.display(),
                    settings.pve,
                    status.map(|s| s.to_string()).unwrap_or_default()
                );
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "fakepve did not listen on {} within {START_TIMEOUT:?}",
                    settings.pve
                );
            }
        }
        // Keep reading its output, so that it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!("fakepve: {line}");
            }
        });
        Ok(FakePve { child, stdin })
    }

    /// Stops fakepve: SIGTERM (it closes its listener), SIGKILL if it lingers.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            control::send_signal(pid, "TERM");
        }
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("fakepve did not stop on SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
    }

    /// Whether fakepve exited on its own (a crash).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}
