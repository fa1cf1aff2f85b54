//! Namespace holders: a new network, IPC and UTS (hostname set) namespace, created in a
//! dedicated thread with unshare(2) and kept alive by bind-mounting the thread's namespace
//! files onto `<sandbox-dir>/ns/{net,ipc,uts}`, so containers can join them by path. The
//! network namespace is empty here: CNI brings up its loopback and interfaces. A PID namespace
//! shared by the pod's containers needs a live PID 1: `skiff __pause` (see `pause`), whose
//! namespace is bind-mounted onto `ns/pid` the same way and which is killed on release.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{Result, RuntimeError};

/// Which namespaces a sandbox owns, and where their files are.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NsPaths {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's shared PID namespace (`shareProcessNamespace`).
    #[serde(default)]
    pub pid: Option<PathBuf>,
    /// The PID 1 that holds it, as the host sees it.
    #[serde(default)]
    pub pid_holder: Option<i32>,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NsRequest {
    pub private_net: bool,
    pub private_ipc: bool,
    /// A private UTS namespace with this hostname; `None` shares the host's (hostNetwork).
    pub hostname: Option<String>,
    /// One PID namespace for every container of the pod (`shareProcessNamespace`).
    pub shared_pid: bool,
}

/// Creates and releases sandbox namespaces.
pub trait NamespaceHelper: Send + Sync {
    /// Creates the requested namespaces with holders under `dir` (`<sandbox-dir>/ns`).
    fn create(&self, dir: &Path, req: &NsRequest) -> Result<NsPaths>;
    /// Unmounts and deletes the holders; missing ones are fine.
    fn release(&self, ns: &NsPaths) -> Result<()>;
}

/// The real helper, for root on Linux. `exe` is the `skiff` binary, run as `__pause` to hold a
/// shared PID namespace.
#[derive(Debug, Default)]
pub struct LinuxNamespaces {
    pub exe: PathBuf,
}

impl LinuxNamespaces {
    /// Starts the PID 1 of a new PID namespace and bind-mounts that namespace onto `target`.
    fn pid_holder(&self, target: &Path) -> Result<i32> {
        let out = std::process::Command::new(&self.exe)
            .arg(super::pause::PAUSE_ARG)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(RuntimeError::io("run the pid namespace holder", &self.exe))?;
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                RuntimeError::Internal(format!(
                    "the pid namespace holder did not start ({})",
                    out.status
                ))
            })?;
        std::fs::File::create(target).map_err(RuntimeError::io("create ns holder", target))?;
        let src = format!("/proc/{pid}/ns/pid");
        if let Err(e) = nix::mount::mount(
            Some(src.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            kill_holder(pid, None);
            return Err(RuntimeError::sys(format!(
                "bind {src} to {}",
                target.display()
            ))(e));
        }
        Ok(pid)
    }
}

/// Kills the PID 1 of a pod's namespace (which ends every process in it), if `pid` still is
/// that process: its namespace must be the one bind-mounted at `ns`.
fn kill_holder(pid: i32, ns: Option<&Path>) {
    use std::os::unix::fs::MetadataExt as _;
    let current = std::fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| m.ino());
    let ours = match ns {
        Some(ns) => std::fs::metadata(ns).map(|m| m.ino()).ok() == current.as_ref().ok().copied(),
        None => current.is_ok(),
    };
    if ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl NamespaceHelper for LinuxNamespaces {
    fn create(&self, dir: &Path, req: &NsRequest) -> Result<NsPaths> {
        std::fs::create_dir_all(dir).map_err(RuntimeError::io("create dir", dir))?;
        let holder = if req.shared_pid {
            let target = dir.join("pid");
            let pid = self.pid_holder(&target)?;
            Some((target, pid))
        } else {
            None
        };
        let mut paths = self.create_unshared(dir, req)?;
        if let Some((target, pid)) = holder {
            paths.pid = Some(target);
            paths.pid_holder = Some(pid);
        }
        Ok(paths)
    }

    fn release(&self, ns: &NsPaths) -> Result<()> {
        if let (Some(pid), Some(path)) = (ns.pid_holder, &ns.pid) {
            kill_holder(pid, Some(path));
        }
        for p in [&ns.net, &ns.ipc, &ns.uts, &ns.pid].into_iter().flatten() {
            match nix::mount::umount2(p, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(RuntimeError::sys(format!("unmount {}", p.display()))(e)),
            }
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RuntimeError::io("remove ns holder", p)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl LinuxNamespaces {
    /// The namespaces a thread can unshare and leave behind: net, IPC and UTS.
    fn create_unshared(&self, dir: &Path, req: &NsRequest) -> Result<NsPaths> {
        let mut flags = CloneFlags::empty();
        let mut paths = NsPaths::default();
        let mut targets = Vec::new();
        for (on, flag, name) in [
            (req.private_net, CloneFlags::CLONE_NEWNET, "net"),
            (req.private_ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
            (req.hostname.is_some(), CloneFlags::CLONE_NEWUTS, "uts"),
        ] {
            if !on {
                continue;
            }
            flags |= flag;
            let p = dir.join(name);
            std::fs::File::create(&p).map_err(RuntimeError::io("create ns holder", &p))?;
            match name {
                "net" => paths.net = Some(p.clone()),
                "ipc" => paths.ipc = Some(p.clone()),
                _ => paths.uts = Some(p.clone()),
            }
            targets.push((name, p));
        }
        if flags.is_empty() {
            return Ok(paths);
        }
        let hostname = req.hostname.clone();
        // unshare(2) moves only the calling thread; a throwaway thread keeps the runtime's own
        // threads in the host namespaces. The bind mounts keep the namespaces alive after it ends.
        let result = std::thread::spawn(move || -> Result<()> {
            nix::sched::unshare(flags).map_err(RuntimeError::sys("unshare sandbox namespaces"))?;
            if let Some(h) = &hostname {
                nix::unistd::sethostname(h)
                    .map_err(RuntimeError::sys(format!("sethostname {h}")))?;
            }
            for (name, target) in &targets {
                let src = format!("/proc/thread-self/ns/{name}");
                nix::mount::mount(
                    Some(src.as_str()),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(RuntimeError::sys(format!(
                    "bind {src} to {}",
                    target.display()
                )))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| RuntimeError::Internal("namespace thread panicked".into()))?;
        if let Err(e) = result {
            let _ = NamespaceHelper::release(self, &paths);
            return Err(e);
        }
        Ok(paths)
    }
}

/// The node's primary IPv4 address: the first non-loopback IPv4 on an interface that is up.
pub fn primary_ipv4() -> String {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return String::new();
    };
    for a in addrs {
        if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
            || a.flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return sin.ip().to_string();
        }
    }
    String::new()
}
