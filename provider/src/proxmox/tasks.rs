//! `nodes/{node}/tasks`: waiting on a UPID with polling that starts fast and backs off.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::{Client, Error};

/// A task that ended well, with the warnings PVE reported.
#[derive(Debug, Default, Clone)]
pub struct TaskOutcome {
    /// Log lines that start with `WARN` when the exit status was `WARNINGS: n`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct TaskStatus {
    status: String,
    exitstatus: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LogLine {
    t: String,
}

/// The node a UPID runs on (`UPID:node:...`).
pub fn upid_node(upid: &str) -> Option<&str> {
    upid.split(':').nth(1)
}

impl Client {
    /// Waits for a task to stop. Polls every 50 ms at first, doubling to at most 1 s: quick
    /// tasks end quickly, long ones do not flood the API. Returns [`Error::Task`] with the
    /// end of the log when the task failed, [`Error::Timeout`] at `deadline`.
    pub async fn wait_task(&self, upid: &str, deadline: Instant) -> Result<TaskOutcome, Error> {
        let node = upid_node(upid).ok_or_else(|| Error::Decode {
            url: upid.into(),
            detail: "not a UPID".into(),
        })?;
        let path = format!("/nodes/{node}/tasks/{}/status", urlencode(upid));
        let mut pause = Duration::from_millis(50);
        loop {
            match self.get::<TaskStatus>(&path, &[]).await {
                Ok(status) if status.status == "stopped" => {
                    let exit = status.exitstatus.unwrap_or_default();
                    if exit == "OK" {
                        return Ok(TaskOutcome::default());
                    }
                    let log = self.task_log(node, upid).await.unwrap_or_default();
                    if exit.starts_with("WARNINGS") {
                        let warnings = log.into_iter().filter(|l| l.contains("WARN")).collect();
                        return Ok(TaskOutcome { warnings });
                    }
                    let tail = log.len().saturating_sub(20);
                    return Err(Error::Task {
                        upid: upid.to_string(),
                        exit_status: exit,
                        log: log[tail..].to_vec(),
                    });
                }
                Ok(_) => {}
                // A task that was just created can answer "no such task" for a moment.
                Err(Error::Api {
                    status: 400 | 500,
                    ref message,
                    ..
                }) if message.contains("no such task") => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if Instant::now() + pause >= deadline {
                return Err(Error::Timeout(format!("waiting for Proxmox task {upid}")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn task_log(&self, node: &str, upid: &str) -> Result<Vec<String>, Error> {
        let path = format!("/nodes/{node}/tasks/{}/log", urlencode(upid));
        let lines: Vec<LogLine> = self.get(&path, &[("limit", "500".to_string())]).await?;
        Ok(lines.into_iter().map(|l| l.t).collect())
    }
}

/// Percent-encodes a path segment (UPIDs hold `:` and `@`).
pub(crate) fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
