//! Container monitors: one small process per running container, started by the runtime as
//! `<current exe> __monitor <container-dir>`, that creates and starts the container with
//! libcontainer, copies its stdout/stderr into the CRI log, reaps it and records its exit in
//! `<container-dir>/exit.json`. Monitors run in their own session and outlive the runtime.
//! A monitor's stdout is a pipe to the runtime: one readiness line, then its end once the exit
//! is recorded ([`Started::ended`]), so that the runtime learns of exits without polling.
//!
//! The runtime never forks from its multithreaded process. It asks its [`zygote`] (one
//! single-threaded skiff process, spawned once) to fork each monitor and each exec helper, and
//! spawns them afresh (fork+exec straight away) when there is no zygote. [`Launcher`] is that boundary;
//! [`ProcessLauncher`] is the real one.

mod enter;
pub use enter::unescape as mountinfo_unescape;
pub mod exec;
mod filter;
pub mod plan;
pub(crate) mod process;
pub mod zygote;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

pub use self::exec::{EXEC_ARG, exec_main};
pub use self::process::monitor_main;
use self::zygote::Request;
pub use self::zygote::{ZYGOTE_ARG, Zygote, zygote_main};
use crate::error::{Result, RuntimeError};

/// The first argument that selects monitor mode in the skiff binary.
pub const MONITOR_ARG: &str = "__monitor";
/// File in the container dir the monitor reads its instructions from.
pub const MONITOR_CONFIG: &str = "monitor.json";
/// File in the container dir the monitor writes the exit record to.
pub const EXIT_FILE: &str = "exit.json";
/// File in the container dir with the container's init pid.
pub const PID_FILE: &str = "pid";
/// The monitor's own diagnostics (stderr).
pub const MONITOR_LOG: &str = "monitor.log";

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
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub monitor_pid: i32,
    /// Resolves once the container's exit is recorded.
    pub ended: Ended,
}

/// Resolves once a monitor is done watching its container: the exit record is written, or
/// the monitor is gone without writing it.
pub struct Ended(BoxFuture<'static, ()>);

impl Ended {
    pub fn new(f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Ended(Box::pin(f))
    }

    pub async fn wait(self) {
        self.0.await
    }
}

impl std::fmt::Debug for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ended")
    }
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
    /// For a container started before this runtime process: resolves once its monitor
    /// `monitor_pid` has exited (it records the exit first).
    fn ended(&self, monitor_pid: i32) -> Ended;
}

/// The real launcher: has the [`Zygote`] fork each monitor, or spawns `exe __monitor <dir>`.
pub struct ProcessLauncher {
    exe: PathBuf,
    start_timeout: Duration,
    zygote: Arc<Zygote>,
}

impl ProcessLauncher {
    /// A launcher that forks monitors through `zygote`, and runs `exe` (normally
    /// `std::env::current_exe()`) as the monitor when the zygote cannot.
    pub fn new(exe: PathBuf, zygote: Arc<Zygote>) -> Self {
        ProcessLauncher {
            exe,
            start_timeout: Duration::from_secs(60),
            zygote,
        }
    }
}

impl ProcessLauncher {
    /// Reads the monitor's one readiness line from `out`.
    async fn readiness(
        &self,
        out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        monitor_pid: i32,
        log_path: &Path,
        fail: &(dyn Fn(String) -> RuntimeError + Sync),
    ) -> Result<Started> {
        let mut lines = tokio::io::BufReader::new(out).lines();
        let line = tokio::time::timeout(self.start_timeout, lines.next_line())
            .await
            .map_err(|_| fail("monitor did not report readiness in time".into()))?
            .map_err(|e| fail(format!("read monitor readiness: {e}")))?;
        let Some(line) = line else {
            let diag = std::fs::read_to_string(log_path).unwrap_or_default();
            let last = diag.lines().last().unwrap_or("no diagnostics").to_string();
            return Err(fail(format!(
                "monitor exited before the container started: {last}"
            )));
        };
        match serde_json::from_str::<Readiness>(&line) {
            Ok(Readiness::Running { pid }) => Ok(Started {
                pid,
                monitor_pid,
                // The monitor says nothing more; its stdout ends once the exit is recorded.
                ended: Ended::new(
                    async move { while let Ok(Some(_)) = lines.next_line().await {} },
                ),
            }),
            Ok(Readiness::Failed { error }) => Err(fail(error)),
            Err(e) => Err(fail(format!("bad readiness line {line:?}: {e}"))),
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
            let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| fail(format!("pipe: {e}")))?;
            let (zygote, dir_buf) = (self.zygote.clone(), dir.to_path_buf());
            let forked = tokio::task::spawn_blocking(move || {
                let log = OwnedFd::from(log);
                zygote.fork(&Request::Monitor {
                    dir: &dir_buf,
                    out: ready_w.as_raw_fd(),
                    err: log.as_raw_fd(),
                })
            })
            .await
            .map_err(|e| fail(format!("fork monitor: {e}")))?;
            match forked {
                Ok(monitor_pid) => {
                    let ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)
                        .map_err(|e| fail(format!("readiness pipe: {e}")))?;
                    return self.readiness(ready, monitor_pid, &log_path, &fail).await;
                }
                Err(e) => tracing::warn!(error = %e, "no monitor zygote: spawning the monitor"),
            }
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
            self.readiness(stdout, monitor_pid, &log_path, &fail).await
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

    fn ended(&self, monitor_pid: i32) -> Ended {
        Ended::new(process_exit(monitor_pid))
    }
}

/// Resolves when process `pid` exits (at once if it is gone), through a pidfd; polls where
/// the kernel has no pidfd_open.
async fn process_exit(pid: i32) {
    if let Ok(fd) = pidfd_open(pid) {
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same
        // for the AsyncFd's whole life.
        #[allow(unsafe_code)]
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(fd) = registered {
            let _ = fd.readable().await;
            return;
        }
    }
    while pid_alive(pid) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[allow(unsafe_code)]
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub use skiff_shim::wait::{REOPEN_LOG, pid_alive, wake_for_reopen};
