//! Container monitors: one small process per running container, started by the runtime as
//! `<current exe> __monitor <container-dir>`, that creates and starts the container with
//! libcontainer, copies its stdout/stderr into the CRI log, reaps it and records its exit in
//! `<container-dir>/exit.json`. Monitors run in their own session and outlive the runtime.
//!
//! The runtime never forks from its multithreaded process: it only spawns the monitor (fork+exec
//! straight away). [`Launcher`] is that boundary; [`ProcessLauncher`] is the real one.

pub mod exec;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

pub use self::exec::{EXEC_ARG, exec_main};
pub use self::process::{monitor_finish_main, monitor_main};
use crate::error::{Result, RuntimeError};

/// The first argument that selects monitor mode in the skiff binary.
pub const MONITOR_ARG: &str = "__monitor";
/// What the shim execs once the container ended: delete its libcontainer state and cgroup.
pub const MONITOR_FINISH_ARG: &str = "__monitor-finish";
/// File in the container dir the monitor reads its instructions from.
pub const MONITOR_CONFIG: &str = "monitor.json";
/// File in the container dir the monitor writes the exit record to.
pub const EXIT_FILE: &str = "exit.json";
/// File in the container dir with the container's init pid.
pub const PID_FILE: &str = "pid";
/// The monitor's own diagnostics (stderr).
pub const MONITOR_LOG: &str = "monitor.log";
/// File in the container dir whose appearance asks the monitor to reopen the log file; the
/// monitor deletes it once done (ReopenContainerLog).
pub const REOPEN_LOG: &str = "reopen-log";

/// What the runtime tells a monitor (written to `<container-dir>/monitor.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: String,
    /// OCI bundle (holds `config.json`).
    pub bundle: PathBuf,
    /// libcontainer's state root; the container state lives in `<state_root>/<id>`.
    pub state_root: PathBuf,
    /// CRI log file; `None` discards output.
    pub log_path: Option<PathBuf>,
    /// The container's cgroup path (cgroupsPath), to read OOM kills from.
    pub cgroup_path: String,
    /// Rotate the log past this many bytes (0: never), keeping this many files.
    #[serde(default)]
    pub log_max_size: u64,
    #[serde(default)]
    pub log_max_files: u32,
}

/// How a container ended, written once by its monitor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    /// Exit status, or 128 + signal number if killed by a signal.
    pub exit_code: i32,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
    pub oom_killed: bool,
    /// Set when the monitor could not observe the exit normally.
    #[serde(default)]
    pub message: String,
}

/// What the monitor reports on its stdout once: the container runs, or why it does not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Readiness {
    Running { pid: i32 },
    Failed { error: String },
}

/// A started container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    pub monitor_pid: i32,
}

/// Starts monitors and signals containers.
pub trait Launcher: Send + Sync {
    /// Starts the monitor for the container in `dir` (which holds `monitor.json`) and returns
    /// once the container's process runs, or with the reason it could not start.
    fn start<'a>(&'a self, id: &'a str, dir: &'a Path) -> BoxFuture<'a, Result<Started>>;
    /// Sends `signal` to `pid`; a process that is already gone is not an error.
    fn signal(&self, pid: i32, signal: nix::sys::signal::Signal) -> Result<()>;
    /// Whether `pid` is a live (non-zombie) process.
    fn alive(&self, pid: i32) -> bool;
}

/// The real launcher: spawns `exe __monitor <dir>`.
pub struct ProcessLauncher {
    exe: PathBuf,
    start_timeout: Duration,
}

impl ProcessLauncher {
    /// A launcher that runs `exe` (normally `std::env::current_exe()`) as the monitor.
    pub fn new(exe: PathBuf) -> Self {
        ProcessLauncher {
            exe,
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl Launcher for ProcessLauncher {
    fn start<'a>(&'a self, id: &'a str, dir: &'a Path) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            let fail = |message: String| RuntimeError::Launch {
                id: id.to_string(),
                message,
            };
            let log_path = dir.join(MONITOR_LOG);
            let log =
                std::fs::File::create(&log_path).map_err(RuntimeError::io("create", &log_path))?;
            let mut child = tokio::process::Command::new(&self.exe)
                .arg(MONITOR_ARG)
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(log)
                .spawn()
                .map_err(|e| fail(format!("spawn monitor {}: {e}", self.exe.display())))?;
            let monitor_pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
            let stdout = child.stdout.take();
            // Reap the monitor whenever it exits so it never lingers as a zombie.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            let Some(stdout) = stdout else {
                return Err(fail("monitor has no stdout".into()));
            };
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let line = tokio::time::timeout(self.start_timeout, lines.next_line())
                .await
                .map_err(|_| fail("monitor did not report readiness in time".into()))?
                .map_err(|e| fail(format!("read monitor readiness: {e}")))?;
            let Some(line) = line else {
                let diag = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = diag.lines().last().unwrap_or("no diagnostics").to_string();
                return Err(fail(format!(
                    "monitor exited before the container started: {last}"
                )));
            };
            match serde_json::from_str::<Readiness>(&line) {
                Ok(Readiness::Running { pid }) => Ok(Started { pid, monitor_pid }),
                Ok(Readiness::Failed { error }) => Err(fail(error)),
                Err(e) => Err(fail(format!("bad readiness line {line:?}: {e}"))),
            }
        })
    }

    fn signal(&self, pid: i32, signal: nix::sys::signal::Signal) -> Result<()> {
        if pid <= 0 {
            return Ok(());
        }
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(RuntimeError::sys(format!("kill {pid} with {signal}"))(e)),
        }
    }

    fn alive(&self, pid: i32) -> bool {
        pid_alive(pid)
    }
}

pub use skiff_shim::wait::pid_alive;
