//! The monitor zygote (`skiff __zygote`): one single-threaded process, started by the runtime
//! and kept for its lifetime, that forks a container's monitor on request. Forking a small
//! process that has already loaded skiff costs a fraction of a millisecond; spawning the skiff
//! binary afresh (exec, dynamic relocations, page faults of a large executable) costs a few,
//! on every container start. The fork is safe because the zygote never has a second thread,
//! which is also what libcontainer needs of the process it clones from.
//!
//! Protocol, over the `SOCK_SEQPACKET` socket that is the zygote's stdin:
//! - request: one message, the container directory as bytes, with two descriptors attached
//!   (`SCM_RIGHTS`): the monitor's stdout (the readiness pipe) and its stderr (`monitor.log`);
//! - answer: the monitor's pid as 4 bytes, native endian, or 0 if the fork failed.
//!
//! The zygote ends when the runtime closes its end (the runtime exited or died). Monitors are
//! never its concern after the fork: each runs in its own session, and the zygote lets the
//! kernel reap them (`SIGCHLD` ignored), which a monitor undoes for itself at once since it
//! has children of its own to wait for.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The first argument that selects zygote mode in the skiff binary.
pub const ZYGOTE_ARG: &str = "__zygote";

/// Longest container directory path accepted in a request.
const MAX_REQUEST: usize = 4096;

/// Entry point of `skiff __zygote`: serves fork requests on stdin until it is closed.
pub fn zygote_main() -> i32 {
    // SAFETY: SIG_IGN runs no code in signal context, and the zygote has one thread.
    if let Err(e) = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) } {
        eprintln!("zygote: ignore SIGCHLD: {e}");
        return 1;
    }
    // CPU feature detection runs cpuid, which traps to the hypervisor in a VM (about 10 µs a
    // time here); done once now, every monitor and container init forked later inherits it.
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("avx2");
    // libcontainer reaches /proc through pathrs, which mounts a private procfs on first use
    // and keeps it for the process: made here once, not in every container's setup (where
    // its unmount also waits for an RCU grace period).
    let _ = pathrs::procfs::ProcfsHandle::new();
    let sock: RawFd = 0;
    loop {
        let mut buf = vec![0u8; MAX_REQUEST];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let (len, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    let fds: Vec<OwnedFd> = msg
                        .cmsgs()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| match c {
                            ControlMessageOwned::ScmRights(fds) => Some(fds),
                            _ => None,
                        })
                        .flatten()
                        // SAFETY: SCM_RIGHTS descriptors are new in this process and owned by
                        // nothing else.
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                        .collect();
                    (msg.bytes, fds)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("zygote: receive: {e}");
                    return 1;
                }
            }
        };
        if len == 0 {
            // The runtime closed its end.
            return 0;
        }
        let pid = match fds.as_slice() {
            [out, err] => {
                let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&buf[..len]));
                fork_monitor(dir, out, err)
            }
            _ => {
                eprintln!("zygote: a request without its two descriptors");
                0
            }
        };
        drop(fds);
        if let Err(e) = nix::sys::socket::send(sock, &pid.to_ne_bytes(), MsgFlags::empty()) {
            eprintln!("zygote: answer: {e}");
            return 1;
        }
    }
}

/// Forks the monitor for `dir` with `out` and `err` as its stdout and stderr; the child's pid,
/// or 0 if the fork failed.
fn fork_monitor(dir: PathBuf, out: &OwnedFd, err: &OwnedFd) -> i32 {
    // SAFETY: the zygote is single-threaded, so the child inherits no lock held by another
    // thread; it runs the monitor and exits without returning into the zygote's loop.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: back to the default, in the single-threaded child, before it has any
            // child of its own to wait for.
            let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
            let code = match become_monitor_stdio(out, err) {
                Ok(()) => {
                    // No second copy of the monitor's stdout may stay open: the runtime learns
                    // that the exit is recorded when the monitor closes fd 1.
                    // SAFETY: the child owns these descriptors from here and never drops
                    // their OwnedFd (it leaves by _exit), so each is closed once.
                    unsafe {
                        libc::close(out.as_raw_fd());
                        libc::close(err.as_raw_fd());
                    }
                    super::process::run_monitor(&dir)
                }
                Err(e) => {
                    eprintln!("zygote: monitor stdio: {e}");
                    1
                }
            };
            // Not `exit`: nothing of the zygote's (buffers, destructors) is the child's to run.
            // SAFETY: _exit only ends this process.
            unsafe { libc::_exit(code) }
        }
        Err(e) => {
            eprintln!("zygote: fork: {e}");
            0
        }
    }
}

fn become_monitor_stdio(out: &OwnedFd, err: &OwnedFd) -> nix::Result<()> {
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )?;
    nix::unistd::dup2(null, 0)?;
    nix::unistd::close(null)?;
    nix::unistd::dup2(out.as_raw_fd(), 1)?;
    nix::unistd::dup2(err.as_raw_fd(), 2)?;
    Ok(())
}

/// The runtime's side: sends one request on `sock` and reads the answer. Blocking; callers
/// hold the socket exclusively for the exchange.
pub(super) fn request(
    sock: &OwnedFd,
    dir: &std::path::Path,
    out: RawFd,
    err: RawFd,
) -> std::io::Result<i32> {
    let fds = [out, err];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(dir.as_os_str().as_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    let mut answer = [0u8; 4];
    let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    if n != 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the monitor zygote closed its socket",
        ));
    }
    match i32::from_ne_bytes(answer) {
        0 => Err(std::io::Error::other("the monitor zygote could not fork")),
        pid => Ok(pid),
    }
}
