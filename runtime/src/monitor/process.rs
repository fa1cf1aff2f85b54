//! The monitor process itself (`skiff __monitor <container-dir>`). Single-threaded by design: it
//! is the process that clones the container (through libcontainer), which is only safe without
//! other threads holding locks.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::log::{CriLineWriter, LogSink, timestamp};
use super::{
    EXIT_FILE, ExitRecord, MONITOR_ARG, MONITOR_CONFIG, MonitorConfig, PID_FILE, REOPEN_LOG,
    Readiness,
};
use crate::state;

/// How long to keep draining output after the container's init exited (grandchildren that
/// escaped the pid namespace teardown cannot hold the pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Entry point of the monitor: `args` are the arguments after `__monitor` (a leading program
/// name and `__monitor` are skipped if present), i.e. `[<container-dir>]`. Returns the exit code.
pub fn monitor_main(args: Vec<std::ffi::OsString>) -> i32 {
    let rest: Vec<_> = match args.iter().position(|a| a == MONITOR_ARG) {
        Some(i) => args[i + 1..].to_vec(),
        None => args,
    };
    let Some(dir) = rest.first().map(PathBuf::from) else {
        eprintln!("usage: skiff {MONITOR_ARG} <container-dir>");
        return 2;
    };
    match run(&dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("monitor {}: {e}", dir.display());
            1
        }
    }
}

fn report(r: &Readiness) {
    if let Ok(line) = serde_json::to_string(r) {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    // The runtime reads exactly one line; closing our end tells it we are done talking.
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

fn run(dir: &Path) -> Result<(), String> {
    // Our own session: the runtime's process group and terminal are not ours to share.
    let _ = nix::unistd::setsid();
    // Become the reaper for the container init once libcontainer's intermediate process exits.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("set child subreaper: {e}"))?;

    let cfg: MonitorConfig = match state::read_json(&dir.join(MONITOR_CONFIG)) {
        Ok(Some(c)) => c,
        Ok(None) => return fail(format!("{} missing", dir.join(MONITOR_CONFIG).display())),
        Err(e) => return fail(e.to_string()),
    };

    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let stdin = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;

    // Rust ignores SIGPIPE in every binary, and an ignored disposition survives clone and exec:
    // the container must start with the default, as it would under containerd or runc.
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl);
    let built = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(&cfg.state_root)
        .map(|b| {
            b.with_stdin(OwnedFd::from(stdin))
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_init(&cfg.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    // Back to ignoring it: the runtime may have gone away and closed our readiness pipe.
    set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    let mut container = match built {
        Ok(Ok(c)) => c,
        Ok(Err(e)) | Err(e) => return fail(format!("create container: {}", chain(&e))),
    };
    if let Err(e) = container.start() {
        let msg = format!("start container: {}", chain(&e));
        let _ = container.delete(true);
        return fail(msg);
    }
    let Some(pid) = container.pid() else {
        let _ = container.delete(true);
        return fail("container has no pid after start".into());
    };
    let _ = state::write_atomic(&dir.join(PID_FILE), pid.as_raw().to_string().as_bytes());
    report(&Readiness::Running { pid: pid.as_raw() });

    let mut log = LogSink::open(cfg.log_path.clone(), cfg.log_max_size, cfg.log_max_files);
    let status = copy_and_wait(
        pid,
        File::from(out_r),
        File::from(err_r),
        &mut log,
        &dir.join(REOPEN_LOG),
    );

    let oom_killed = oom_killed(&cfg.cgroup_path);
    let (exit_code, message) = match status {
        Ok(WaitStatus::Exited(_, code)) => (code, String::new()),
        Ok(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, String::new()),
        Ok(other) => (255, format!("unexpected wait status {other:?}")),
        Err(e) => (255, e),
    };
    let record = ExitRecord {
        exit_code,
        finished_at: state::now_ns(),
        oom_killed,
        message,
    };
    state::write_json(&dir.join(EXIT_FILE), &record).map_err(|e| e.to_string())?;
    // libcontainer's delete removes its state dir and the container's cgroup.
    match Container::load(cfg.state_root.join(&cfg.id)) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                eprintln!("delete container state: {}", chain(&e));
            }
        }
        Err(e) => eprintln!("load container state: {}", chain(&e)),
    }
    Ok(())
}

pub(super) fn set_sigpipe(handler: nix::sys::signal::SigHandler) {
    // SAFETY: SIG_DFL and SIG_IGN are not handler functions, so no code runs in signal context;
    // the monitor and the exec helper are single-threaded, so nothing races with the change.
    let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler) };
}

fn fail(error: String) -> Result<(), String> {
    report(&Readiness::Failed {
        error: error.clone(),
    });
    Err(error)
}

/// An error with its sources, since libcontainer's top-level messages are generic.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Copies both pipes into the CRI log until the init process exits (and its output is drained),
/// reaping every child we inherit as subreaper. Returns the init's wait status.
fn copy_and_wait(
    init: Pid,
    out: File,
    err: File,
    log: &mut LogSink,
    reopen: &Path,
) -> Result<WaitStatus, String> {
    let mut streams = [
        (Some(out), CriLineWriter::new("stdout")),
        (Some(err), CriLineWriter::new("stderr")),
    ];
    let mut status: Option<WaitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // ReopenContainerLog: the runtime asked (one stat per wakeup, at most every 200ms).
        if reopen.exists() {
            log.reopen();
            let _ = std::fs::remove_file(reopen);
        }
        // Reap everything that has exited; remember the init's status.
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(ws) => {
                    if ws.pid() == Some(init) && status.is_none() {
                        status = Some(ws);
                        exited_at = Some(Instant::now());
                    }
                }
                Err(nix::errno::Errno::ECHILD) => {
                    if status.is_none() {
                        // Not our child (should not happen): poll /proc instead.
                        if !super::pid_alive(init.as_raw()) {
                            status = Some(WaitStatus::Exited(init, 255));
                            exited_at = Some(Instant::now());
                        }
                    }
                    break;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waitpid: {e}")),
            }
        }
        let open = streams.iter().any(|(f, _)| f.is_some());
        if let (Some(ws), Some(at)) = (status, exited_at)
            && (!open || at.elapsed() > DRAIN_GRACE)
        {
            let ts = timestamp();
            for (_, w) in streams.iter_mut() {
                let _ = w.finish(&ts, log);
            }
            return Ok(ws);
        }
        if !open {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let mut ready = [false; 2];
        {
            let mut fds = Vec::new();
            let mut which = Vec::new();
            for (i, (f, _)) in streams.iter().enumerate() {
                if let Some(f) = f {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    which.push(i);
                }
            }
            match nix::poll::poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            for (pfd, i) in fds.iter().zip(which) {
                if pfd.revents().is_some_and(|r| !r.is_empty()) {
                    ready[i] = true;
                }
            }
        }
        for (i, (file, writer)) in streams.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let Some(f) = file.as_mut() else { continue };
            match f.read(&mut buf) {
                Ok(0) => {
                    *file = None;
                }
                Ok(n) => {
                    let ts = timestamp();
                    if let Err(e) = writer.feed(&buf[..n], &ts, log) {
                        eprintln!("write log: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => *file = None,
            }
        }
    }
}

/// Whether the kernel OOM-killed a process in the container's memory cgroup.
fn oom_killed(cgroup_path: &str) -> bool {
    let rel = cgroup_path.trim_start_matches('/');
    let candidates = [
        // cgroup v1: "oom_kill N" (kernel >= 4.13)
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        // cgroup v2
        (
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill ",
        ),
    ];
    for (path, key) in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix(key))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0));
        }
    }
    false
}
