//! Containers: the persisted record (`<root>/containers/<id>/state.json`), the OCI bundle, the
//! overlayfs rootfs (`<root>/containers/<id>/rootfs`, lowerdirs = image snapshots, per-container
//! upper/work), and cgroup teardown. The OS side (mounts, cgroupfs) is the [`Host`] trait.

pub mod cgroup;
pub mod seccomp;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// A container as persisted by the runtime. Whether it runs or exited is read live from the
/// monitor's files (`exit.json`) and the pids, not stored here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the caller named it.
    pub image: String,
    /// The image id (config digest).
    pub image_id: String,
    /// A repo digest of the image, or its id.
    pub image_ref: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Absolute CRI log path, or empty for none.
    pub log_path: String,
    pub created_at: i64,
    /// Set once StartContainer succeeded.
    pub started_at: i64,
    pub pid: i32,
    pub monitor_pid: i32,
    pub cgroup_path: String,
    /// Diff ids of the snapshots its rootfs uses (kept from image removal).
    pub snapshots: Vec<String>,
    pub mounts: Vec<MountRecord>,
    /// Start failed: why (reported as an exited container with this message).
    #[serde(default)]
    pub start_error: String,
    /// The cgroup limits as created and as last changed by UpdateContainerResources.
    #[serde(default)]
    pub resources: spec::Resources,
    /// The image's STOPSIGNAL, sent first by StopContainer (empty: SIGTERM).
    #[serde(default)]
    pub stop_signal: String,
}

/// The signal a STOPSIGNAL names (`SIGQUIT`, `QUIT` or `3`); SIGTERM for none or one this
/// runtime does not know.
pub fn stop_signal(name: &str) -> nix::sys::signal::Signal {
    use nix::sys::signal::Signal;
    let name = name.trim();
    if name.is_empty() {
        return Signal::SIGTERM;
    }
    let parsed = match name.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) => {
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            full.parse::<Signal>().ok()
        }
    };
    parsed.unwrap_or_else(|| {
        tracing::warn!(signal = name, "unknown stop signal; using SIGTERM");
        Signal::SIGTERM
    })
}

/// A CRI mount as reported back in ContainerStatus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
}

/// Mount and cgroup operations on the host.
pub trait Host: Send + Sync {
    /// Mounts an overlay at `target` with `lower` (top first), `upper` and `work`.
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<()>;
    /// Unmounts `target` if mounted.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Removes the container cgroup `path` and its empty parents up to the top, in every
    /// hierarchy.
    fn remove_cgroup(&self, path: &str) -> Result<()>;
    /// The host's device nodes under `/dev`, for privileged containers.
    fn devices(&self) -> Vec<spec::DeviceNode> {
        Vec::new()
    }
    /// The capabilities this process may hand on (its bounding set); `None` if unknown.
    fn bounding_caps(&self) -> Option<Vec<String>> {
        None
    }
    /// Called as a container is being created, ahead of its start: lets the host begin the
    /// slow part of moving a process into a cgroup (see [`LinuxHost`]) while the rest of the
    /// work goes on. Blocks for that long; callers run it off the request's path.
    fn warm_cgroup_attach(&self) {}
}

/// The real host: mount(2) and cgroupfs.
#[derive(Debug, Default)]
pub struct LinuxHost;

impl Host for LinuxHost {
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<()> {
        let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        for p in [upper, work, target] {
            std::fs::create_dir_all(p).map_err(RuntimeError::io("create dir", p))?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(RuntimeError::sys(format!(
            "mount overlay on {}",
            target.display()
        )))
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(RuntimeError::sys(format!("unmount {}", target.display()))(
                e,
            )),
        }
    }

    fn remove_cgroup(&self, path: &str) -> Result<()> {
        for mount in skiff_shim::finish::cgroup_mounts() {
            remove_cgroup_under(&mount, path);
        }
        Ok(())
    }

    fn devices(&self) -> Vec<spec::DeviceNode> {
        host_devices(Path::new("/dev"))
    }

    /// On cgroup v1, attaching a process to a cgroup (libcontainer writing the container's
    /// first pid to `cgroup.procs`) takes the kernel's global threadgroup rwsem for writing,
    /// and taking it from idle waits a full RCU grace period: about 10 ms, half of a container
    /// start. Once taken, it stays cheap to take again for another grace period. So at
    /// CreateContainer, this thread moves itself to the cgroup it is already in (a no-op
    /// move, but the same lock): the grace period then runs while the runtime writes the
    /// bundle and the monitor starts, instead of after. Nothing on cgroup v2, where the
    /// attach is not in the way in the same manner, or when the own cgroup is unknown.
    fn warm_cgroup_attach(&self) {
        // The process's cgroups do not change: found once, not on every container create.
        static TASKS: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        let Some(tasks) = TASKS.get_or_init(own_v1_tasks_file) else {
            return;
        };
        let tid = nix::unistd::gettid().as_raw();
        if let Err(e) = std::fs::write(tasks, tid.to_string()) {
            tracing::debug!(file = %tasks.display(), error = %e, "warming the cgroup attach");
        }
    }

    fn bounding_caps(&self) -> Option<Vec<String>> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
        let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
        Some(spec::caps_from_mask(mask))
    }
}

/// Device nodes directly under `dir` and one level down (`/dev/net/tun`, `/dev/snd/*`), except
/// the ones every container gets anyway and the terminal ones that belong to the container's
/// own devpts.
fn host_devices(dir: &Path) -> Vec<spec::DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const OWN: &[&str] = &[
        "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts", "shm",
        "mqueue", "fd", "stdin", "stdout", "stderr", "core",
    ];
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if depth == 0 && OWN.iter().any(|o| name == *o) {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() && depth == 0 {
                stack.push((e.path(), 1));
            } else if ft.is_char_device() || ft.is_block_device() {
                let rdev = md.rdev();
                out.push(spec::DeviceNode {
                    path: e.path(),
                    kind: if ft.is_char_device() { 'c' } else { 'b' },
                    major: nix::sys::stat::major(rdev),
                    minor: nix::sys::stat::minor(rdev),
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The `tasks` file of this thread's cgroup in one cgroup v1 hierarchy, if there is one.
fn own_v1_tasks_file() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/thread-self/cgroup").ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    v1_tasks_file(&own, &info)
}

fn v1_tasks_file(own_cgroups: &str, mountinfo: &str) -> Option<PathBuf> {
    own_cgroups.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let first = controllers.split(',').next().filter(|c| !c.is_empty())?;
        let mount = mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split_whitespace();
            let (fstype, _, options) = (post.next()?, post.next()?, post.next()?);
            let mut pre = pre.split_whitespace();
            let root = pre.nth(3)?;
            let point = pre.next()?;
            (fstype == "cgroup" && root == "/" && options.split(',').any(|o| o == first))
                .then(|| PathBuf::from(point))
        })?;
        Some(mount.join(path.trim_start_matches('/')).join("tasks"))
    })
}

/// rmdir `path` and then each parent while empty, stopping at the hierarchy root. Busy or
/// non-empty directories are left alone (another container still uses the pod cgroup).
fn remove_cgroup_under(mount: &Path, path: &str) {
    let rel = Path::new(path.trim_start_matches('/'));
    let mut cur = Some(rel);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() {
            break;
        }
        match std::fs::remove_dir(mount.join(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => break,
        }
        cur = p.parent();
    }
}

/// Bytes (allocated blocks) and inodes used under `dirs`, each inode counted once however many
/// hard links name it. Unreadable entries are skipped: this is a report, not an audit.
pub fn disk_usage(dirs: &[PathBuf]) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((md.dev(), md.ino())) {
            bytes += md.blocks() * 512;
            inodes += 1;
        }
        if md.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    (bytes, inodes)
}

/// Resolves a CRI log path: relative ones are joined to the sandbox's log directory.
pub fn resolve_log_path(log_directory: &str, log_path: &str) -> Result<String> {
    if log_path.is_empty() {
        return Ok(String::new());
    }
    let p = Path::new(log_path);
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "log path {log_path:?} contains .."
        )));
    }
    if p.is_absolute() {
        return Ok(log_path.to_string());
    }
    if log_directory.is_empty() {
        return Err(RuntimeError::InvalidArgument(format!(
            "relative log path {log_path:?} without a sandbox log directory"
        )));
    }
    Ok(Path::new(log_directory).join(p).display().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stop_signals_by_name_or_number() {
        use nix::sys::signal::Signal;
        assert_eq!(super::stop_signal(""), Signal::SIGTERM);
        assert_eq!(super::stop_signal("SIGQUIT"), Signal::SIGQUIT);
        assert_eq!(super::stop_signal("quit"), Signal::SIGQUIT);
        assert_eq!(super::stop_signal("2"), Signal::SIGINT);
        assert_eq!(super::stop_signal("SIGNOPE"), Signal::SIGTERM);
    }

    use super::*;

    #[test]
    fn log_paths() {
        assert_eq!(
            resolve_log_path("/var/log/pods/x", "c/0.log").expect("ok"),
            "/var/log/pods/x/c/0.log"
        );
        assert_eq!(resolve_log_path("", "/abs.log").expect("ok"), "/abs.log");
        assert_eq!(resolve_log_path("", "").expect("ok"), "");
        assert!(resolve_log_path("/d", "../x").is_err());
        assert!(resolve_log_path("", "rel.log").is_err());
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/a"), vec![1u8; 10_000]).expect("write");
        std::fs::hard_link(d.join("sub/a"), d.join("b")).expect("link");
        let (bytes, inodes) = disk_usage(&[d.to_path_buf()]);
        assert_eq!(inodes, 3, "dir, sub, one file");
        assert!(bytes >= 10_000, "{bytes}");
        assert_eq!(disk_usage(&[d.join("missing")]), (0, 0));
    }

    #[test]
    fn the_warm_up_writes_to_the_own_cgroup_of_a_v1_hierarchy() {
        let mountinfo = "\
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let own = "0::/\n5:pids:/user.slice/x\n4:cpu,cpuacct:/a\n";
        assert_eq!(
            v1_tasks_file(own, mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/pids/user.slice/x/tasks"))
        );
        // cgroup v2 only: nothing to warm.
        assert_eq!(v1_tasks_file("0::/a\n", mountinfo), None);
    }

    #[test]
    fn cgroup_parents_removed_only_when_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path();
        std::fs::create_dir_all(m.join("skiff/pod/a")).expect("mkdir");
        std::fs::create_dir_all(m.join("skiff/pod/b")).expect("mkdir");
        remove_cgroup_under(m, "/skiff/pod/a");
        assert!(!m.join("skiff/pod/a").exists());
        assert!(m.join("skiff/pod").exists(), "pod cgroup still holds b");
        remove_cgroup_under(m, "/skiff/pod/b");
        assert!(!m.join("skiff").exists());
    }
}
