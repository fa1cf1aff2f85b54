//! Entering a running container for one exec, as `runc exec` does: the new process joins the
//! container's cgroups and namespaces and takes on the identity of the container's process
//! (user, groups, capabilities, no_new_privs, AppArmor profile, seccomp filter, umask,
//! rlimits, cwd, env) before it execs the command.
//!
//! This is done here rather than by libcontainer's tenant builder because of what that costs
//! an exec probe: the tenant builder runs an intermediate process that re-reads
//! `/proc/self/mountinfo` once per cgroup v1 controller to find the hierarchies, and that file
//! grows with every pod on the node (its overlay, namespace and volume mounts): about 14 ms of
//! CPU per exec with 100 pods. Here the cgroup mounts are read once, in the zygote, and every
//! exec helper forked from it inherits them; the container's namespaces are joined in one
//! `setns` on a pidfd of its process; its seccomp filter is compiled once per container
//! (`filter`).
//!
//! The helper stays outside the container (its cgroup, mount and network namespaces): it joins
//! only the container's pid namespace for its children and starts the command's process,
//! which moves itself into the container's cgroups before it enters the other namespaces. That
//! process shares the helper's memory until it execs (`clone(CLONE_VM | CLONE_VFORK)`, as
//! `posix_spawn`), which spares a copy of the helper's page tables and its copy-on-write
//! faults; only for a container with a user namespace (which a process sharing memory cannot
//! join) is it forked, and the helper writes its pid into the cgroups.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::sched::CloneFlags;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use skiff_shim::exec::{home_of, join_cgroups, lookup, spawn_vfork};

use super::filter::Filter;

/// A mounted cgroup hierarchy: which controllers it carries (empty for cgroup v2) and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The controllers (and `name=...`) of a v1 hierarchy, as `/proc/<pid>/cgroup` lists them;
    /// empty for the v2 hierarchy.
    pub controllers: Vec<String>,
    /// The path inside the hierarchy that is mounted (`/` on a host).
    pub root: String,
    pub mount_point: PathBuf,
}

/// v1 controllers a hierarchy's mount options may name.
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The cgroup hierarchies in a `/proc/<pid>/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fstype)) =
            (fields.get(3), fields.get(4), right.first())
        else {
            continue;
        };
        let controllers = match *fstype {
            "cgroup2" => Vec::new(),
            "cgroup" => {
                let options = right.get(2).copied().unwrap_or("");
                let mut c: Vec<String> = options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .map(str::to_owned)
                    .collect();
                c.sort();
                if c.is_empty() {
                    continue;
                }
                c
            }
            _ => continue,
        };
        out.push(CgroupMount {
            controllers,
            root: unescape(root),
            mount_point: PathBuf::from(unescape(mount_point)),
        });
    }
    out
}

/// A mountinfo field with its octal escapes (space, tab, newline, backslash) decoded.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This host's cgroup hierarchies, read once per process: the zygote reads them at its start,
/// so the helpers it forks never read mountinfo.
pub fn cgroup_mounts() -> &'static [CgroupMount] {
    static MOUNTS: OnceLock<Vec<CgroupMount>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default()
    })
}

/// The `cgroup.procs` files a process joins to be in the cgroups that `proc_cgroup` (a
/// `/proc/<pid>/cgroup` text) lists, on the hierarchies in `mounts`. On a hybrid host the v2
/// line names the (controller-less) unified hierarchy.
pub fn cgroup_procs_files(proc_cgroup: &str, mounts: &[CgroupMount]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mut want: Vec<String> = controllers
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        want.sort();
        let Some(m) = mounts.iter().find(|m| m.controllers == want) else {
            continue;
        };
        let root = m.root.trim_end_matches('/');
        let Some(rel) = path.strip_prefix(root) else {
            continue;
        };
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        out.push(m.mount_point.join(rel).join("cgroup.procs"));
    }
    out
}

/// The `setns` flags for the namespaces the container's spec gives it (its own or another's
/// by path: either way, the ones its process is in).
pub fn namespace_flags(spec: &Spec) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in namespaces {
        flags |= match ns.typ() {
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            // Only ever the container init's own; an exec'd process keeps the host clock.
            LinuxNamespaceType::Time => CloneFlags::empty(),
        };
    }
    flags
}

/// The default `PATH` when the process's env has none (as runc and Docker set it).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The most of the container's `/etc/passwd` read for `HOME` (the file is the image's).
const PASSWD_CAP: u64 = 1 << 20;

/// A command being entered: what the helper knows before the fork.
pub struct Entry<'a> {
    /// The container's process (its pid in the host's pid namespace).
    pub pid: i32,
    pub spec: &'a Spec,
    /// The container's process with the command's args.
    pub process: &'a Process,
    pub tty: bool,
    /// The container's seccomp filter, if it has one.
    pub seccomp: Option<&'a Filter>,
}

/// The started command: its host pid, and for a tty the pty master.
pub struct Entered {
    pub pid: Pid,
    pub master: Option<std::fs::File>,
}

/// Starts `entry`'s command inside the container. The command inherits this process's stdio
/// (without a tty); it is this process's child.
pub fn enter(entry: &Entry<'_>) -> Result<Entered, String> {
    let pidfd = super::pidfd_open(entry.pid)
        .map_err(|e| format!("open the container's process {}: {e}", entry.pid))?;
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", entry.pid))
        .map_err(|e| format!("read the container's cgroups: {e}"))?;
    // The pid was the container's when the pidfd was opened; still alive now, the cgroup file
    // just read was that process's too.
    pidfd_alive(&pidfd).map_err(|e| format!("the container's process is gone: {e}"))?;
    let procs = cgroup_procs_files(&proc_cgroup, cgroup_mounts());
    let flags = namespace_flags(entry.spec);
    if flags.contains(CloneFlags::CLONE_NEWPID) {
        // Only this process's children are born in it; this process stays where it is.
        nix::sched::setns(pidfd.as_fd(), CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("join the container's pid namespace: {e}"))?;
    }
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (err_r, err_w) = nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let console = if entry.tty {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        Some(
            socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair: {e}"))?,
        )
    } else {
        None
    };
    // A process that shares its parent's memory cannot join a user namespace.
    if !flags.contains(CloneFlags::CLONE_NEWUSER) {
        return spawn_shared(entry, &pidfd, flags, &procs, err_r, err_w, console);
    }
    let (go_r, go_w) = nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the exec helper is single-threaded (forked by the zygote, or a fresh process
    // that started no thread); the child only runs `child` and leaves by exec or _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(go_w);
            drop(err_r);
            let console = console.map(|(ours, theirs)| {
                drop(ours);
                theirs
            });
            let message = wait_for_go(go_r)
                .and_then(|()| child(entry, &pidfd, flags, console.as_ref()))
                .err()
                .unwrap_or_default();
            let _ = nix::unistd::write(&err_w, message.as_bytes());
            // SAFETY: _exit only ends this process.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(err_w);
            let kill = |e: String| {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                e
            };
            for f in &procs {
                std::fs::write(f, child.as_raw().to_string())
                    .map_err(|e| kill(format!("join cgroup {}: {e}", f.display())))?;
            }
            nix::unistd::write(&go_w, b"g").map_err(|e| kill(format!("start: {e}")))?;
            drop(go_w);
            let master = match &console {
                Some((ours, _)) => Some(receive_fd(ours).map_err(kill)?),
                None => None,
            };
            drop(console);
            started(child, err_r, master)
        }
    }
}

/// The end of the command's start: end of file on the error pipe without a word means it
/// was exec'd.
fn started(child: Pid, err_r: OwnedFd, master: Option<std::fs::File>) -> Result<Entered, String> {
    let mut message = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut message);
    if !message.is_empty() {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(message);
    }
    Ok(Entered { pid: child, master })
}

/// The stack of a command's process that shares the helper's memory until it execs, with a
/// guard page below it.
const SHARED_STACK: usize = 1 << 20;

/// What the command's process gets from [`spawn_shared`].
struct Shared<'a> {
    entry: &'a Entry<'a>,
    pidfd: &'a OwnedFd,
    flags: CloneFlags,
    /// The container's `cgroup.procs` files, ready for open(2).
    procs: &'a [CString],
    console: Option<&'a OwnedFd>,
    err_w: i32,
}

/// Starts the command's process as `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, so it
/// runs in the helper's memory, on a stack of its own, while the helper waits, until it execs
/// or exits. It moves itself into the container's cgroups, then does what [`child`] does. A
/// fork would copy the helper's page tables only for the process to exec at once, and the
/// copy-on-write faults and the teardown of that copy at exec were a fifth of an exec probe's
/// cost. The process only borrows from the helper: nothing the helper owns is freed in it.
fn spawn_shared(
    entry: &Entry<'_>,
    pidfd: &OwnedFd,
    flags: CloneFlags,
    procs: &[PathBuf],
    err_r: OwnedFd,
    err_w: OwnedFd,
    console: Option<(OwnedFd, OwnedFd)>,
) -> Result<Entered, String> {
    let procs = procs
        .iter()
        .map(|p| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{} has a NUL byte", p.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (ours, theirs) = match console {
        Some((ours, theirs)) => (Some(ours), Some(theirs)),
        None => (None, None),
    };
    let args = Shared {
        entry,
        pidfd,
        flags,
        procs: &procs,
        console: theirs.as_ref(),
        err_w: err_w.as_raw_fd(),
    };
    // SAFETY: the helper is single-threaded; `shared_main` only reads `args` and borrows from
    // the helper without freeing anything of its.
    let pid = unsafe { spawn_vfork(shared_main, &args, SHARED_STACK) }?;
    let child = Pid::from_raw(pid);
    drop(err_w);
    drop(theirs);
    let master = match &ours {
        Some(sock) => Some(receive_fd(sock).inspect_err(|_| {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
        })?),
        None => None,
    };
    started(child, err_r, master)
}

extern "C" fn shared_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Shared` that `spawn_shared` passed, alive while it waits for us.
    let a = unsafe { &*arg.cast::<Shared<'_>>() };
    let message = join_cgroups(a.procs)
        .and_then(|()| child(a.entry, a.pidfd, a.flags, a.console))
        .err()
        .unwrap_or_default();
    // SAFETY: writes the message's bytes, which live across the call, to the error pipe.
    let _ = unsafe { libc::write(a.err_w, message.as_ptr().cast(), message.len()) };
    // SAFETY: _exit only ends this process (not exit: the helper's atexit state is its own).
    unsafe { libc::_exit(127) }
}

fn pidfd_alive(pidfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal with signal 0 only checks that the process exists.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A forked command's process waits until the helper has put it in the container's cgroups.
fn wait_for_go(go: OwnedFd) -> Result<(), String> {
    let mut b = [0u8; 1];
    match nix::unistd::read(go.as_raw_fd(), &mut b) {
        Ok(1) => Ok(()),
        _ => Err("the exec helper did not start the command".into()),
    }
}

/// The command's process once it is in the container's cgroups, to exec: joins the
/// namespaces, takes the container process's identity and execs.
fn child(
    entry: &Entry<'_>,
    pidfd: &OwnedFd,
    flags: CloneFlags,
    console: Option<&OwnedFd>,
) -> Result<(), String> {
    let rest = flags - CloneFlags::CLONE_NEWPID;
    if !rest.is_empty() {
        nix::sched::setns(pidfd.as_fd(), rest)
            .map_err(|e| format!("join the container's namespaces: {e}"))?;
    }
    // After the mount namespace, root and cwd are the container's; `/dev/ptmx` is its devpts.
    if let Some(sock) = console {
        take_terminal(sock)?;
    }
    let p = entry.process;
    if p.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    }
    if let Some(profile) = p.apparmor_profile() {
        libcontainer::apparmor::apply_profile(profile)
            .map_err(|e| format!("apply AppArmor profile {profile}: {e}"))?;
    }
    if p.selinux_label().is_some() {
        return Err("SELinux process labels are not supported by skiff's runtime".into());
    }
    if let Some(umask) = p.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    for r in p.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads one rlimit from the pointer, which lives across the call.
        if unsafe { libc::setrlimit(r.typ() as _, &lim) } != 0 {
            return Err(format!(
                "set rlimit {:?}: {}",
                r.typ(),
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(adj) = p.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("set oom_score_adj: {e}"))?;
    }
    // Identity: groups, then ids (capabilities kept across the change), then capabilities.
    use libcontainer::syscall::Syscall as _;
    let sys = libcontainer::syscall::linux::LinuxSyscall;
    let user = p.user();
    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    sys.set_groups(&groups)
        .map_err(|e| format!("set supplementary groups: {e}"))?;
    sys.set_id(
        nix::unistd::Uid::from_raw(user.uid()),
        nix::unistd::Gid::from_raw(user.gid()),
    )
    .map_err(|e| format!("set uid {} gid {}: {e}", user.uid(), user.gid()))?;
    let seccomp = entry.seccomp;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: before the capabilities go.
    if let Some(f) = seccomp
        && p.no_new_privileges() != Some(true)
    {
        f.load()?;
    }
    libcontainer::capabilities::reset_effective(&sys)
        .map_err(|e| format!("reset capabilities: {e}"))?;
    if let Some(caps) = p.capabilities() {
        libcontainer::capabilities::drop_privileges(caps, &sys)
            .map_err(|e| format!("drop capabilities: {e}"))?;
    }
    let cwd = p.cwd();
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir {}: {e}", cwd.display()))?;
    // A cwd outside the container's root (through a leaked directory) shows as unreachable.
    match nix::unistd::getcwd() {
        Ok(d) if d.is_absolute() => {}
        _ => return Err(format!("cwd {} is outside the container", cwd.display())),
    }
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=") && e.len() > 5) {
        env.retain(|e| !e.starts_with("HOME="));
        let mut passwd = String::new();
        let _ = std::fs::File::open("/etc/passwd")
            .map(|f| f.take(PASSWD_CAP).read_to_string(&mut passwd));
        env.push(format!(
            "HOME={}",
            home_of(&passwd, user.uid()).unwrap_or_else(|| "/".into())
        ));
    }
    let args = p.args().clone().unwrap_or_default();
    let Some(cmd) = args.first() else {
        return Err("no command to run".into());
    };
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let exe = lookup(cmd, path, skiff_shim::exec::executable)
        .ok_or_else(|| format!("exec: \"{cmd}\": executable file not found in $PATH"))?;
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} has a NUL byte"));
    let exe_c = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| "the command has a NUL byte".to_string())?;
    let argv = args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let envp = env.iter().map(|e| c(e)).collect::<Result<Vec<_>, _>>()?;
    // Nothing but stdio (and the error pipe, until exec succeeds) may reach the command.
    skiff_shim::exec::cloexec_above_stdio();
    // As close to exec as possible: the filter also applies to what runs until then.
    if let Some(f) = seccomp
        && p.no_new_privileges() == Some(true)
    {
        f.load()?;
    }
    let e = nix::unistd::execve(&exe_c, &argv, &envp).unwrap_err();
    Err(format!("exec {}: {e}", exe.display()))
}

/// Opens a pty on the container's devpts, sends its master to the helper over `sock` and makes
/// the slave this process's controlling terminal and stdio.
fn take_terminal(sock: &OwnedFd) -> Result<(), String> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: opens the pty multiplexer; the result is checked.
    let master = unsafe { libc::posix_openpt(flags) };
    if master < 0 {
        return Err(format!(
            "open /dev/ptmx: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor is new and owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: unlockpt and TIOCGPTPEER act on the master only; TIOCGPTPEER opens the slave
    // through the master itself, never by a path in the container.
    let slave = unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(format!("unlockpt: {}", std::io::Error::last_os_error()));
        }
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(format!(
            "open pty slave: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let fds = [master.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| format!("send pty master: {e}"))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument; the slave is an open terminal.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(format!(
            "set controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(|e| format!("dup2: {e}"))?;
    }
    Ok(())
}

/// Takes the descriptor the command's process sends over `sock`.
fn receive_fd(sock: &OwnedFd) -> Result<std::fs::File, String> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive pty master: {e}"))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| format!("receive pty master: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS installed `fd` in this process just now; nothing else owns it.
            return Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Err("the command's process sent no pty master".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
38 31 0:33 /kube /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
40 30 0:40 / /var/lib/with\\040space rw - overlay overlay rw,lowerdir=/a
";

    #[test]
    fn mountinfo_gives_the_hierarchies() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(m[0].controllers, Vec::<String>::new());
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[1].controllers, vec!["name=systemd"]);
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[4].root, "/kube");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn cgroup_files_follow_each_hierarchy() {
        let m = parse_mountinfo(HYBRID);
        let pc = "\
5:pids:/kube/skiff/p/c
4:memory:/skiff/p/c
2:cpuacct,cpu:/skiff/p/c
1:name=systemd:/user.slice
0::/
9:freezer:/skiff/p/c
";
        let files = cgroup_procs_files(pc, &m);
        let want: Vec<PathBuf> = [
            "/sys/fs/cgroup/pids/skiff/p/c/cgroup.procs",
            "/sys/fs/cgroup/memory/skiff/p/c/cgroup.procs",
            "/sys/fs/cgroup/cpu,cpuacct/skiff/p/c/cgroup.procs",
            "/sys/fs/cgroup/systemd/user.slice/cgroup.procs",
            "/sys/fs/cgroup/unified/cgroup.procs",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        // freezer is not mounted here: skipped.
        assert_eq!(files, want);
    }

    #[test]
    fn cgroup_v2_alone() {
        let m = parse_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(
            cgroup_procs_files("0::/skiff/p/c\n", &m),
            vec![PathBuf::from("/sys/fs/cgroup/skiff/p/c/cgroup.procs")]
        );
        // A path outside the mounted root, or climbing out of it, joins nothing.
        assert!(cgroup_procs_files("0::/../etc\n", &m).is_empty());
    }

    #[test]
    fn namespaces_of_the_spec() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/run/ns/net"},
                {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}
            ]}
        }))
        .expect("spec");
        let f = namespace_flags(&spec);
        assert_eq!(
            f,
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWCGROUP
        );
        // hostPID and hostNetwork: not listed, not joined.
        let host: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "mount"}]}
        }))
        .expect("spec");
        assert_eq!(namespace_flags(&host), CloneFlags::CLONE_NEWNS);
    }
}
