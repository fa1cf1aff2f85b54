//! The zygote (`skiff __zygote`): one single-threaded process, started by the runtime and kept
//! for its lifetime, that forks a container's monitor or an exec helper on request, and the
//! runtime's handle on it ([`Zygote`]). Forking a small process that has already loaded skiff
//! costs a fraction of a millisecond; spawning the skiff binary afresh (exec, dynamic
//! relocations, page faults of a large executable) costs a few, on every container start and
//! on every exec probe. The fork is safe because the zygote never has a second thread, which is
//! also what libcontainer needs of the process it clones from.
//!
//! Protocol, over the `SOCK_SEQPACKET` socket that is the zygote's stdin:
//! - request: one message, a tag byte then the work directory as bytes, with descriptors
//!   attached (`SCM_RIGHTS`): for a monitor (`M`, the container directory) its stdout (the
//!   readiness pipe) and its stderr (`monitor.log`); for an exec helper (`X`, the exec's work
//!   directory) its stdin, stdout and stderr and a pipe it holds open until it exits;
//! - answer: the child's pid as 4 bytes, native endian, or 0 if the fork failed.
//!
//! The zygote ends when the runtime closes its end (the runtime exited or died). Its children
//! are never its concern after the fork: the zygote lets the kernel reap them (`SIGCHLD`
//! ignored), which each child undoes for itself at once since it has children of its own to
//! wait for. Monitors run in their own session; an exec helper's end is seen by the runtime
//! as the end of its `done` pipe.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The first argument that selects zygote mode in the skiff binary.
pub const ZYGOTE_ARG: &str = "__zygote";

/// Longest request accepted: the tag byte and a directory path.
const MAX_REQUEST: usize = 4097;
/// Tag of a monitor request.
const TAG_MONITOR: u8 = b'M';
/// Tag of an exec-helper request.
const TAG_EXEC: u8 = b'X';

/// What the zygote forks, with the descriptors the child gets.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// The monitor of the container in `dir`, with `out` (the readiness pipe) as its stdout
    /// and `err` as its stderr.
    Monitor {
        dir: &'a Path,
        out: RawFd,
        err: RawFd,
    },
    /// The exec helper for the work directory `dir` (see `monitor::exec`), with its stdio and
    /// `done`, the write end of a pipe that closes when the helper (and nothing else) exits.
    Exec {
        dir: &'a Path,
        stdin: RawFd,
        stdout: RawFd,
        stderr: RawFd,
        done: RawFd,
    },
}

impl Request<'_> {
    fn tag_and_fds(&self) -> (u8, &Path, Vec<RawFd>) {
        match *self {
            Request::Monitor { dir, out, err } => (TAG_MONITOR, dir, vec![out, err]),
            Request::Exec {
                dir,
                stdin,
                stdout,
                stderr,
                done,
            } => (TAG_EXEC, dir, vec![stdin, stdout, stderr, done]),
        }
    }
}

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
    // The cgroup hierarchies, which an exec helper needs to put a command in its container's
    // cgroups: read from mountinfo once here, not in every exec (mountinfo grows with pods).
    let _ = super::enter::cgroup_mounts();
    let sock: RawFd = 0;
    loop {
        let mut buf = vec![0u8; MAX_REQUEST];
        let mut space = nix::cmsg_space!([RawFd; 4]);
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
        let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&buf[1..len]));
        let pid = match (buf[0], fds.as_slice()) {
            (TAG_MONITOR, [out, err]) => fork_child(|| {
                become_monitor_stdio(out, err)?;
                // No second copy of the monitor's stdout may stay open: the runtime learns
                // that the exit is recorded when the monitor closes fd 1.
                close_originals(&[out, err]);
                Ok(super::process::run_monitor(&dir))
            }),
            (TAG_EXEC, [stdin, stdout, stderr, _done]) => fork_child(|| {
                for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
                    nix::unistd::dup2(fd.as_raw_fd(), target)?;
                }
                // `done` stays open (close-on-exec, so the command does not inherit it)
                // until this process exits.
                close_originals(&[stdin, stdout, stderr]);
                Ok(super::exec::exec_main(vec![dir.clone().into_os_string()]))
            }),
            (tag, fds) => {
                eprintln!(
                    "zygote: a request with tag {tag:#x} and {} descriptors",
                    fds.len()
                );
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

/// Forks a child that runs `body` and exits with its code; the child's pid, or 0 if the fork
/// failed.
fn fork_child(body: impl FnOnce() -> nix::Result<i32>) -> i32 {
    // SAFETY: the zygote is single-threaded, so the child inherits no lock held by another
    // thread; it runs `body` and exits without returning into the zygote's loop.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: back to the default, in the single-threaded child, before it has any
            // child of its own to wait for.
            let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
            let code = body().unwrap_or_else(|e| {
                eprintln!("zygote: child stdio: {e}");
                1
            });
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

/// Closes the received descriptors in the child once they are duplicated onto its stdio.
fn close_originals(fds: &[&OwnedFd]) {
    for fd in fds {
        // SAFETY: the child owns these descriptors from here and never drops their OwnedFd
        // (it leaves by _exit), so each is closed once.
        unsafe {
            libc::close(fd.as_raw_fd());
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

/// Sends one request on `sock` and reads the answer. Blocking; callers hold the socket
/// exclusively for the exchange.
fn request(sock: &OwnedFd, req: &Request<'_>) -> std::io::Result<i32> {
    let (tag, dir, fds) = req.tag_and_fds();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [
        IoSlice::new(std::slice::from_ref(&tag)),
        IoSlice::new(dir.as_os_str().as_bytes()),
    ];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    let mut answer = [0u8; 4];
    let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    if n != 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the zygote closed its socket",
        ));
    }
    match i32::from_ne_bytes(answer) {
        0 => Err(std::io::Error::other("the zygote could not fork")),
        pid => Ok(pid),
    }
}

/// The runtime's handle on its zygote: spawns `exe __zygote` on first use (and once more when
/// it has died) and sends it one request at a time. Shared by the monitor launcher and the exec
/// spawner.
pub struct Zygote {
    exe: PathBuf,
    running: Mutex<Option<Running>>,
}

/// The running zygote: its socket and process.
struct Running {
    sock: OwnedFd,
    child: std::process::Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Closing the socket ends it; reap it so it does not linger as a zombie.
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = self.child.wait();
    }
}

impl Zygote {
    /// A handle that runs `exe` (normally `std::env::current_exe()`) as the zygote.
    pub fn new(exe: PathBuf) -> Self {
        Zygote {
            exe,
            running: Mutex::new(None),
        }
    }

    /// Starts the zygote now rather than at the first fork, so that no start pays for it.
    pub fn start(self) -> Self {
        match spawn(&self.exe) {
            Ok(r) => *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(r),
            Err(e) => tracing::warn!(error = %e, "cannot start the zygote"),
        }
        self
    }

    /// Has the zygote fork `req`'s child: its pid. Blocking (a round trip to the zygote).
    pub fn fork(&self, req: &Request<'_>) -> std::io::Result<i32> {
        let mut slot = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for _ in 0..2 {
            if slot.is_none() {
                *slot = Some(spawn(&self.exe)?);
            }
            let Some(z) = slot.as_ref() else { continue };
            match request(&z.sock, req) {
                Ok(pid) => return Ok(pid),
                Err(e) => {
                    tracing::warn!(error = %e, "the zygote failed; starting a new one");
                    *slot = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no zygote")))
    }
}

fn spawn(exe: &Path) -> std::io::Result<Running> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let child = std::process::Command::new(exe)
        .arg(ZYGOTE_ARG)
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    Ok(Running { sock: ours, child })
}
