//! The exec helper (forked by the zygote, or `skiff __exec <work-dir>`): runs one command inside
//! a running container (its namespaces, cgroups, user, capabilities, seccomp filter and
//! environment, as `runc exec` does; see `enter`), then waits for it. Like the monitor it is a
//! single-threaded process, because it forks the command.
//!
//! The runtime talks to it through files in `<work-dir>` (so no file descriptors beyond stdio
//! have to be passed): `exec.json` ([`ExecConfig`]) in, `pid` and `result.json`
//! ([`ExecResult`]) out, and for a tty the FIFO `resize` carrying `"<cols> <rows>\n"` lines.
//!
//! Without a tty the command inherits the helper's stdin, stdout and stderr. With a tty, the
//! command's process opens a pty inside the container (so it is its controlling terminal on the
//! container's own devpts) and hands the master to the helper, which then copies stdin to the
//! master and the master to stdout, and applies resizes with TIOCSWINSZ.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::ContainerStatus;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::enter;
use super::filter::Filter;
use super::process::{chain, set_sigpipe};
use crate::state;

/// The first argument that selects exec-helper mode in the skiff binary.
pub const EXEC_ARG: &str = "__exec";
/// What the runtime asks for, in `<work-dir>/exec.json`.
pub const EXEC_CONFIG: &str = "exec.json";
/// How the command ended, in `<work-dir>/result.json`.
pub const EXEC_RESULT: &str = "result.json";
/// The command's host pid, in `<work-dir>/pid`, so a timed-out ExecSync can kill it.
pub const EXEC_PID: &str = "pid";
/// The resize FIFO in `<work-dir>` (tty only).
pub const EXEC_RESIZE: &str = "resize";

/// Compiled seccomp filters, in the runtime's run dir beside libcontainer's state root, named
/// by the SHA-256 of the profile: the containers of a node mostly share one (RuntimeDefault
/// with the same capabilities), so it is compiled once for all of them.
pub const SECCOMP_CACHE: &str = "seccomp";

/// After the command exits, how long to keep copying pty output that is still buffered.
const TTY_DRAIN: Duration = Duration::from_millis(500);

/// One exec, as the runtime describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    pub container_id: String,
    /// libcontainer's state root (the container's state is `<state_root>/<id>`).
    pub state_root: PathBuf,
    pub cmd: Vec<String>,
    pub tty: bool,
}

/// The helper's answer: the command's exit code, or why it never ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecResult {
    /// Exit status, or 128 + signal number.
    Exited { exit_code: i32 },
    /// The command could not be started in the container (no such executable, container gone).
    Failed { error: String },
}

/// Entry point: `args` are the arguments after `__exec`, i.e. `[<work-dir>]`.
pub fn exec_main(args: Vec<std::ffi::OsString>) -> i32 {
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: skiff {EXEC_ARG} <work-dir>");
        return 2;
    };
    let result = match run(&dir) {
        Ok(code) => ExecResult::Exited { exit_code: code },
        Err(error) => ExecResult::Failed { error },
    };
    if let Err(e) = state::write_json_unsynced(&dir.join(EXEC_RESULT), &result) {
        eprintln!("exec {}: {e}", dir.display());
        return 1;
    }
    0
}

fn run(dir: &Path) -> Result<i32, String> {
    let cfg: ExecConfig = match state::read_json(&dir.join(EXEC_CONFIG)) {
        Ok(Some(c)) => c,
        Ok(None) => return Err(format!("{} missing", dir.join(EXEC_CONFIG).display())),
        Err(e) => return Err(e.to_string()),
    };
    let container =
        libcontainer::container::Container::load(cfg.state_root.join(&cfg.container_id))
            .map_err(|e| format!("load container {}: {}", cfg.container_id, chain(&e)))?;
    if container.status() != ContainerStatus::Running {
        return Err(format!(
            "container {} is not running ({:?})",
            cfg.container_id,
            container.status()
        ));
    }
    let pid = container
        .pid()
        .ok_or_else(|| format!("container {} has no process", cfg.container_id))?;
    let spec_path = container.bundle().join("config.json");
    let spec = oci_spec::runtime::Spec::load(&spec_path)
        .map_err(|e| format!("load {}: {e}", spec_path.display()))?;
    // The command's process is the container's own (env, user, capabilities, cwd, rlimits)
    // with the command and terminal replaced, as `runc exec` builds it from the spec.
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(cfg.cmd.clone()));
    process.set_terminal(Some(cfg.tty));
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => {
            let cache = cfg
                .state_root
                .parent()
                .unwrap_or(&cfg.state_root)
                .join(SECCOMP_CACHE);
            Some(Filter::prepare(profile, &cache)?)
        }
        None => None,
    };
    // As in the monitor: the command must start with SIGPIPE at its default.
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl);
    let entered = enter::enter(&enter::Entry {
        pid: pid.as_raw(),
        spec: &spec,
        process: &process,
        tty: cfg.tty,
        seccomp: seccomp.as_ref(),
    });
    set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    let entered = entered.map_err(|e| format!("exec in container: {e}"))?;
    let pid = entered.pid;
    let _ = state::write_atomic_unsynced(&dir.join(EXEC_PID), pid.as_raw().to_string().as_bytes());
    let status = match entered.master {
        None => wait(pid),
        Some(master) => copy_tty(pid, master, &dir.join(EXEC_RESIZE)),
    }?;
    Ok(match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    })
}

fn wait(pid: Pid) -> Result<WaitStatus, String> {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(ws),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("wait for {pid}: {e}")),
        }
    }
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Parses one resize line, `"<cols> <rows>"`.
pub fn parse_resize(line: &str) -> Option<(u16, u16)> {
    let mut it = line.split_whitespace();
    let cols = it.next()?.parse().ok()?;
    let rows = it.next()?.parse().ok()?;
    Some((cols, rows))
}

fn resize(master: &File, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives across the call;
    // `master` is an open pty master.
    let _ = unsafe { set_winsize(master.as_raw_fd(), &ws) };
}

/// Copies stdin to the pty master and the master to stdout, applying resizes, until the
/// command exited and its output is drained. Returns its wait status.
fn copy_tty(pid: Pid, mut master: File, resize_path: &Path) -> Result<WaitStatus, String> {
    let mut stdin = Some(std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    // Non-blocking: the runtime holds the FIFO open for writing, so reads never see its end.
    let mut resizes = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(resize_path)
        .ok();
    let mut pending = String::new();
    let mut status = None;
    let mut exited_at: Option<Instant> = None;
    let mut master_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if status.is_none() {
            match nix::sys::wait::waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(ws @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    status = Some(ws);
                    exited_at = Some(Instant::now());
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("wait for {pid}: {e}")),
            }
        }
        if let Some(ws) = status
            && (!master_open || exited_at.is_some_and(|t| t.elapsed() > TTY_DRAIN))
        {
            let _ = stdout.flush();
            return Ok(ws);
        }
        let (mut r_in, mut r_master, mut r_resize) = (false, false, false);
        {
            let mut fds = Vec::new();
            if master_open {
                fds.push((1, PollFd::new(master.as_fd(), PollFlags::POLLIN)));
            }
            if let Some(s) = stdin.as_ref() {
                fds.push((0, PollFd::new(s.as_fd(), PollFlags::POLLIN)));
            }
            if let Some(r) = resizes.as_ref() {
                fds.push((2, PollFd::new(r.as_fd(), PollFlags::POLLIN)));
            }
            let mut pfds: Vec<PollFd> = fds.iter().map(|(_, p)| *p).collect();
            match nix::poll::poll(&mut pfds, PollTimeout::from(100u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            for ((which, _), p) in fds.iter().zip(pfds.iter()) {
                if p.revents().is_some_and(|r| !r.is_empty()) {
                    match which {
                        0 => r_in = true,
                        1 => r_master = true,
                        _ => r_resize = true,
                    }
                }
            }
        }
        if r_master {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // 0 or EIO: every slave is closed.
                _ => master_open = false,
            }
        }
        if r_in && let Some(s) = stdin.as_mut() {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => stdin = None,
            }
        }
        if r_resize && let Some(r) = resizes.as_mut() {
            match r.read(&mut buf) {
                Ok(n) if n > 0 => {
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(i) = pending.find('\n') {
                        let line: String = pending.drain(..=i).collect();
                        if let Some((cols, rows)) = parse_resize(&line) {
                            resize(&master, cols, rows);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The runtime closed its end: no more resizes.
                _ => resizes = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_lines() {
        assert_eq!(parse_resize("80 24\n"), Some((80, 24)));
        assert_eq!(parse_resize("80"), None);
        assert_eq!(parse_resize("x 24"), None);
    }

    #[test]
    fn result_round_trips() {
        let r = ExecResult::Exited { exit_code: 3 };
        let s = serde_json::to_string(&r).expect("json");
        assert_eq!(s, r#"{"exited":{"exit_code":3}}"#);
        assert_eq!(serde_json::from_str::<ExecResult>(&s).expect("parse"), r);
    }
}
