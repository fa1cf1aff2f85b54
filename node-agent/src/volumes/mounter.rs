//! The node agent's boundary with the kernel's mount table: tmpfs for Secret and memory-backed
//! emptyDir volumes, bind mounts for subPaths, and unmounting what a pod left. [`HostMounter`]
//! does it for real (root); [`FakeMounter`] records the calls for unit tests, which then run
//! without privileges on plain directories.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Mount operations the volume manager needs.
pub trait Mounter: Send + Sync + 'static {
    /// Mounts a tmpfs at `target` (an existing directory) of at most `size` bytes.
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> io::Result<()>;
    /// Bind-mounts what `source` (an open `O_PATH` handle) is onto `target`, which exists and is
    /// of the same type. Going through the handle, not a path, means a symlink swapped in after
    /// the path was checked cannot redirect the mount.
    fn bind_handle(&self, source: &dyn AsRawFd, target: &Path) -> io::Result<()>;
    /// Detaches the mount at `target`.
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// The mount points at or below `dir`, deepest first.
    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The kernel's mounts, through mount(2) and /proc/self/mountinfo.
#[derive(Debug, Default)]
pub struct HostMounter;

/// A mountinfo path field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The mount points in a mountinfo text at or below `dir`, deepest first.
pub fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

impl Mounter for HostMounter {
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> io::Result<()> {
        use nix::mount::{MsFlags, mount};
        let data = match size {
            Some(s) => format!("mode=0755,size={s}"),
            None => "mode=0755".to_owned(),
        };
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(io::Error::from)
    }

    fn bind_handle(&self, source: &dyn AsRawFd, target: &Path) -> io::Result<()> {
        use nix::mount::{MsFlags, mount};
        let src = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
        mount(
            Some(&src),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        use nix::mount::{MntFlags, umount2};
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(parse_mounts_under(&info, dir))
    }
}

/// Records mounts instead of making them: a tmpfs is a plain directory, a bind is remembered
/// with the path its source handle resolved to.
#[derive(Debug, Default)]
pub struct FakeMounter {
    state: Mutex<FakeMounts>,
}

/// What [`FakeMounter`] has "mounted".
#[derive(Debug, Default)]
pub struct FakeMounts {
    /// Mount points: target → what was mounted (`tmpfs size=N` or the bind's source path).
    pub mounted: Vec<(PathBuf, String)>,
    pub unmounted: Vec<PathBuf>,
}

impl FakeMounter {
    pub fn state(&self) -> MutexGuard<'_, FakeMounts> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> io::Result<()> {
        let what = match size {
            Some(s) => format!("tmpfs size={s}"),
            None => "tmpfs".to_owned(),
        };
        self.state().mounted.push((target.to_owned(), what));
        Ok(())
    }

    fn bind_handle(&self, source: &dyn AsRawFd, target: &Path) -> io::Result<()> {
        let src = std::fs::read_link(format!("/proc/self/fd/{}", source.as_raw_fd()))?;
        self.state()
            .mounted
            .push((target.to_owned(), src.display().to_string()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        let mut st = self.state();
        st.mounted.retain(|(t, _)| t != target);
        st.unmounted.push(target.to_owned());
        Ok(())
    }

    fn mounts_under(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = self
            .state()
            .mounted
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| t.starts_with(dir))
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped_and_deepest_first() {
        let info = "\
22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/skiff/agent/pods/u1/volumes/kubernetes.io~secret/tls rw - tmpfs tmpfs rw
91 22 0:51 / /var/lib/skiff/agent/pods/u1/volume-subpaths/my\\040vol/c/0 rw - ext4 /dev/sda1 rw
92 22 0:52 / /var/lib/skiff/agent/pods/u2/volumes/x rw - tmpfs tmpfs rw
";
        let got = parse_mounts_under(info, Path::new("/var/lib/skiff/agent/pods/u1"));
        assert_eq!(
            got,
            [
                PathBuf::from("/var/lib/skiff/agent/pods/u1/volume-subpaths/my vol/c/0"),
                PathBuf::from("/var/lib/skiff/agent/pods/u1/volumes/kubernetes.io~secret/tls"),
            ]
        );
    }
}
