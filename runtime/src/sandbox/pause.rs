//! The holder of a pod's shared PID namespace (`shareProcessNamespace`), the pause container's
//! job in Kubernetes: PID 1 of a new namespace that every container of the pod joins, reaping
//! the orphans reparented to it. `skiff __pause` makes the namespace, forks its PID 1, prints
//! that process's pid (as the host sees it) on stdout and exits; the runtime records the pid,
//! joins containers to `/proc/<pid>/ns/pid`, and kills it when the sandbox stops, which ends
//! every process left in the namespace.

#![allow(unsafe_code)]

use std::io::Write as _;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{ForkResult, fork};

/// The hidden subcommand of the `skiff` binary that runs [`pause_main`].
pub const PAUSE_ARG: &str = "__pause";

extern "C" fn on_signal(_: nix::libc::c_int) {}

/// Makes the namespace and its PID 1; returns the exit code of the calling process.
pub fn pause_main() -> i32 {
    // Single-threaded here: the binary calls this before starting anything else.
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWPID) {
        eprintln!("skiff pause: unshare pid namespace: {e}");
        return 1;
    }
    // SAFETY: the process has one thread, so the child may run any code after fork.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("skiff pause: fork: {e}");
            1
        }
        Ok(ForkResult::Parent { child }) => {
            let mut out = std::io::stdout();
            if writeln!(out, "{child}").and_then(|()| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Ok(ForkResult::Child) => pid1(),
    }
}

/// PID 1 of the pod: reaps children until it is killed (SIGKILL, from the runtime: a PID 1
/// gets no other signal it has no handler for). SIGCHLD has a handler so `pause` wakes to reap.
fn pid1() -> ! {
    // Nothing is read or written from here on: stdio goes to /dev/null so the runtime's pipe
    // closes when the parent exits.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    let _ = nix::unistd::setsid();
    // SAFETY: the handler does nothing; it only interrupts pause().
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::Handler(on_signal)) };
    loop {
        // Reap every child that exited, then sleep until a signal.
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        nix::unistd::pause();
    }
}
