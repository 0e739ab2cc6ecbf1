//! The Terraform command that started this provider process: its parent, read from `/proc`.
//!
//! Terraform starts providers as child processes, in its working directory, so the parent's
//! PID, start time and arguments name the command (`terraform apply`, `terraform destroy`, ...)
//! whatever walk (validate, plan, apply) the provider serves. Where there is no `/proc` (macOS,
//! FreeBSD, Windows) nothing is known, and callers take the cautious side.

use std::time::{Duration, SystemTime};

/// Terraform's top-level commands (`terraform -help`, v1.15.5): the first argument that is one
/// of them is the command, whatever runs Terraform (a launcher, global options before it).
const COMMANDS: &[&str] = &[
    "apply",
    "console",
    "destroy",
    "env",
    "fmt",
    "force-unlock",
    "get",
    "graph",
    "import",
    "init",
    "login",
    "logout",
    "metadata",
    "modules",
    "output",
    "plan",
    "providers",
    "query",
    "refresh",
    "show",
    "state",
    "taint",
    "test",
    "untaint",
    "validate",
    "version",
    "workspace",
];

/// The parent process's PID.
#[cfg(unix)]
pub fn parent_pid() -> Option<u32> {
    Some(std::os::unix::process::parent_id())
}

/// The parent process's PID.
#[cfg(not(unix))]
pub fn parent_pid() -> Option<u32> {
    None
}

/// `<pid>-<start time>` of a running process: a name that a PID used again does not repeat.
pub fn key(pid: u32) -> Option<String> {
    Some(format!("{pid}-{}", start_ticks(pid)?))
}

/// The process's start time in clock ticks since boot: field 22 of `/proc/<pid>/stat`
/// (proc(5)), read after the command name's closing parenthesis since the name may hold spaces.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name, so field 22 is the 20th.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// When the Terraform command started, to a few clock ticks: its start in ticks since boot
/// (USER_HZ, 100 a second on Linux), counted from the boot instant that `/proc/uptime` gives
/// (to the hundredth of a second; `btime` of `/proc/stat` is whole seconds only).
pub fn started() -> Option<SystemTime> {
    let ticks = start_ticks(parent_pid()?)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let boot = SystemTime::now().checked_sub(Duration::from_secs_f64(uptime))?;
    boot.checked_add(Duration::from_millis(ticks * 10))
}

/// The Terraform command's arguments, as parsed from its command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// `apply`, `destroy`, `plan`, ...
    pub name: String,
    /// What follows the command's name.
    pub args: Vec<String>,
}

impl Command {
    /// The command that started this process (`/proc/<ppid>/cmdline`).
    pub fn of_parent() -> Option<Self> {
        let raw = std::fs::read(format!("/proc/{}/cmdline", parent_pid()?)).ok()?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Self::parse(&argv)
    }

    /// The command in `argv` (its program first): the first argument naming a Terraform command.
    pub fn parse(argv: &[String]) -> Option<Self> {
        let at = argv
            .iter()
            .skip(1)
            .position(|a| COMMANDS.contains(&a.as_str()))?
            + 1;
        Some(Self {
            name: argv[at].clone(),
            args: argv[at + 1..].to_vec(),
        })
    }

    /// `terraform destroy`, `terraform apply -destroy`, `terraform plan -destroy`.
    pub fn destroys(&self) -> bool {
        match self.name.as_str() {
            "destroy" => true,
            "apply" | "plan" => self.flag("destroy").is_some_and(|value| {
                // Go's flag package: a bare boolean flag, or strconv.ParseBool's true spellings.
                matches!(
                    value,
                    None | Some("1" | "t" | "T" | "true" | "TRUE" | "True")
                )
            }),
            _ => false,
        }
    }

    /// A `-replace=ADDRESS` is given.
    pub fn replaces(&self) -> bool {
        self.flag("replace").is_some()
    }

    /// An apply or a plan that refreshes state: every object of its state (in its targets),
    /// tainted ones too, is read before the plan, so one that is not shown is in no state.
    /// Not with `-refresh=false`, given on the command line or, as Terraform also reads
    /// arguments, in `TF_CLI_ARGS` or `TF_CLI_ARGS_<command>` (which the provider inherits).
    pub fn refreshes(&self) -> bool {
        let from_env = |var: String| {
            std::env::var(var)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let mut all = from_env("TF_CLI_ARGS".into());
        all.extend(from_env(format!("TF_CLI_ARGS_{}", self.name)));
        all.extend(self.args.iter().cloned());
        let with_env = Command {
            name: self.name.clone(),
            args: all,
        };
        matches!(self.name.as_str(), "apply" | "plan")
            && !with_env.flag("refresh").is_some_and(|value| {
                matches!(value, Some("0" | "f" | "F" | "false" | "FALSE" | "False"))
            })
            && with_env.flag("refresh-only").is_none()
    }

    /// The flag `-name` (or `--name`): `Some(None)` bare, `Some(Some(value))` with `=value`.
    fn flag(&self, name: &str) -> Option<Option<&str>> {
        self.args.iter().find_map(|arg| {
            let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
            match bare.split_once('=') {
                Some((flag, value)) if flag == name => Some(Some(value)),
                None if bare == name => Some(None),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> Option<Command> {
        Command::parse(&line.split(' ').map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn a_destroy_is_known_however_it_is_asked_for() {
        for line in [
            "terraform destroy -auto-approve",
            "terraform -chdir=infra destroy",
            "terraform apply -destroy -auto-approve",
            "terraform plan --destroy=true",
            "/usr/bin/python3 terraform_launcher.py destroy -auto-approve -no-color",
        ] {
            assert!(command(line).unwrap().destroys(), "{line}");
        }
    }

    #[test]
    fn an_apply_a_plan_or_another_command_is_no_destroy() {
        for line in [
            "terraform apply -auto-approve",
            "terraform apply -destroy=false",
            "terraform plan -out=destroy",
            "terraform validate",
            "python3 terraform_launcher.py apply -var=mode=destroy",
        ] {
            assert!(!command(line).unwrap().destroys(), "{line}");
        }
        assert_eq!(command("python3 script.py"), None);
    }

    #[test]
    fn an_apply_or_plan_refreshes_unless_told_not_to() {
        assert!(command("terraform apply -auto-approve")
            .unwrap()
            .refreshes());
        assert!(command("terraform plan -refresh=true").unwrap().refreshes());
        for line in [
            "terraform apply -refresh=false",
            "terraform plan --refresh=0",
            "terraform apply -refresh-only",
            "terraform destroy",
            "terraform import a b",
        ] {
            assert!(!command(line).unwrap().refreshes(), "{line}");
        }
    }

    #[test]
    fn a_replacement_is_seen_in_the_arguments() {
        assert!(
            command("terraform apply -replace=castle_proxmox_vm.node[\"a\"]")
                .unwrap()
                .replaces()
        );
        assert!(!command("terraform apply -auto-approve").unwrap().replaces());
    }

    #[test]
    fn a_command_is_its_process_and_start_time() {
        let me = std::process::id();
        let key = key(me).expect("/proc");
        assert!(key.starts_with(&format!("{me}-")));
        assert_eq!(super::key(me), Some(key));
        // This test's parent started before now.
        assert!(started().expect("/proc") <= SystemTime::now());
    }
}
