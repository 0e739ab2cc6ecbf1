//! `nodes/{node}/tasks`: waiting on a UPID with polling that starts fast and backs off.

use serde::Deserialize;
use tokio::time::Instant;

use super::{Client, Error};
use crate::retry::POLL;

/// How many of a failed task's last log lines an error carries.
const LOG_TAIL: usize = 20;

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
    /// Waits for a task to stop, polling as [`crate::retry::POLL`] says (50 ms doubling to
    /// 1 s): quick tasks end quickly, long ones do not flood the API. Returns [`Error::Task`] with the
    /// end of the log when the task failed, [`Error::Timeout`] at `deadline`.
    pub async fn wait_task(&self, upid: &str, deadline: Instant) -> Result<TaskOutcome, Error> {
        let node = upid_node(upid).ok_or_else(|| Error::Decode {
            url: upid.into(),
            detail: "not a UPID".into(),
        })?;
        let path = format!("/nodes/{node}/tasks/{}/status", urlencode(upid));
        let mut pauses = POLL.until(deadline);
        loop {
            let answer = pauses.bounded(self.get::<TaskStatus>(&path, &[])).await;
            match answer.unwrap_or_else(|| Err(Error::Timeout(String::new()))) {
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
                    let tail = log.len().saturating_sub(LOG_TAIL);
                    return Err(Error::Task {
                        upid: upid.to_string(),
                        exit_status: exit,
                        log: log[tail..].to_vec(),
                    });
                }
                Ok(_) => {}
                // A task that was just created can answer "no such task" for a moment; PVE
                // 8.4+ puts that text in `errors.upid` of a 400 (pve-manager
                // `PVE/API2/Tasks.pm` read_task_status).
                Err(
                    e @ Error::Api {
                        status: 400 | 500, ..
                    },
                ) if e.text().contains("no such task") => {}
                Err(Error::Timeout(_)) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if !pauses.sleep(None).await {
                return Err(Error::Timeout(format!("waiting for Proxmox task {upid}")));
            }
        }
    }

    /// Stops a running task (`DELETE /nodes/{node}/tasks/{upid}`).
    pub async fn stop_task(&self, upid: &str) -> Result<(), Error> {
        let node = upid_node(upid).ok_or_else(|| Error::Decode {
            url: upid.into(),
            detail: "not a UPID".into(),
        })?;
        let path = format!("/nodes/{node}/tasks/{}", urlencode(upid));
        let _: serde_json::Value = self.delete(&path, Vec::new()).await?;
        Ok(())
    }

    /// The task log's last [`LOG_TAIL`] lines, warnings included. PVE counts `start` from the
    /// first line and says how many there are in `total` (pve-manager `PVE/API2/Tasks.pm`
    /// read_task_log), so the tail is read from `total - LOG_TAIL` (and all of it when PVE
    /// gives no total).
    async fn task_log(&self, node: &str, upid: &str) -> Result<Vec<String>, Error> {
        let path = format!("/nodes/{node}/tasks/{}/log", urlencode(upid));
        let probe = [("start", "0".to_string()), ("limit", "1".to_string())];
        let (_, total): (Vec<LogLine>, _) = self.get_paged(&path, &probe).await?;
        let query = match total {
            Some(total) => [
                ("start", total.saturating_sub(LOG_TAIL as u64).to_string()),
                ("limit", LOG_TAIL.to_string()),
            ],
            None => [("start", "0".to_string()), ("limit", "5000".to_string())],
        };
        let lines: Vec<LogLine> = self.get(&path, &query).await?;
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
