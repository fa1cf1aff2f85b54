//! The monitor process itself (`skiff __monitor <container-dir>`). Single-threaded by design: it
//! is the process that clones the container (through libcontainer), which is only safe without
//! other threads holding locks.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;

use skiff_shim::log::LogSink;
use skiff_shim::{finish, wait};

use super::{
    EXIT_FILE, MONITOR_ARG, MONITOR_CONFIG, MonitorConfig, PID_FILE, REOPEN_LOG, Readiness,
};
use crate::state;

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
    run_monitor(&dir)
}

/// The monitor for the container in `dir`, in this process (started as `skiff __monitor`, or
/// forked by the zygote with stdout and stderr in place). Returns the exit code.
pub(super) fn run_monitor(dir: &Path) -> i32 {
    match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("monitor {}: {e}", dir.display());
            1
        }
    }
}

/// Writes the one readiness line. Stdout stays open while the container runs: the runtime
/// reads on to the end of it, which comes once the exit is recorded
/// ([`wait::release_exit_watch`]) or the monitor is gone.
fn report(r: &Readiness) {
    if let Ok(line) = serde_json::to_string(r) {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
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
    let _ = state::write_atomic_unsynced(&dir.join(PID_FILE), pid.as_raw().to_string().as_bytes());
    report(&Readiness::Running { pid: pid.as_raw() });

    // Become the small static shim, if it is installed: same process, same children and
    // pipes, without the memory of the whole skiff binary. Returns only if it is not.
    exec_shim(dir, &cfg, pid.as_raw(), &out_r, &err_r);

    let mut log = LogSink::open(cfg.log_path.clone(), cfg.log_max_size, cfg.log_max_files);
    let ended = wait::copy_and_wait(
        pid.as_raw(),
        File::from(out_r),
        File::from(err_r),
        &mut log,
        &dir.join(REOPEN_LOG),
    );
    let oom_killed = wait::oom_killed(&cfg.cgroup_path);
    let written = wait::write_exit(dir, ended.exit_code(), state::now_ns(), oom_killed, "")
        .map_err(|e| format!("write {}: {e}", dir.join(EXIT_FILE).display()));
    wait::release_exit_watch();
    written?;
    finish::finish(
        &finish::cgroup_mounts(),
        &cfg.cgroup_path,
        &cfg.state_root.join(&cfg.id),
    );
    Ok(())
}

/// Where the shim is: `$SKIFF_SHIM`, else `skiff-shim` next to this executable.
pub(crate) fn shim_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_SHIM") {
        return Some(PathBuf::from(p));
    }
    let p = std::env::current_exe().ok()?.parent()?.join("skiff-shim");
    p.is_file().then_some(p)
}

fn exec_shim(dir: &Path, cfg: &MonitorConfig, pid: i32, out: &OwnedFd, err: &OwnedFd) {
    let Some(shim) = shim_path() else {
        return;
    };
    for fd in [out, err] {
        // The pipes must survive the exec; everything else of ours closes on it.
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
    }
    let log = cfg
        .log_path
        .as_ref()
        .map_or_else(|| "-".to_owned(), |p| p.to_string_lossy().into_owned());
    let args: Vec<String> = vec![
        shim.to_string_lossy().into_owned(),
        dir.to_string_lossy().into_owned(),
        pid.to_string(),
        out.as_raw_fd().to_string(),
        err.as_raw_fd().to_string(),
        log,
        cfg.log_max_size.to_string(),
        cfg.log_max_files.to_string(),
        cfg.cgroup_path.clone(),
        cfg.state_root.join(&cfg.id).to_string_lossy().into_owned(),
    ];
    let Ok(args) = args
        .into_iter()
        .map(std::ffi::CString::new)
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let Err(e) = nix::unistd::execv(&args[0], &args);
    eprintln!(
        "exec {}: {e}; this monitor keeps the container itself",
        shim.display()
    );
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
