//! The last step once a container ended and its exit is recorded: delete what only a running
//! container needs, its cgroup (in every hierarchy) and libcontainer's state directory, as
//! `runc delete` would. The shim does it itself: execing the whole skiff binary for it cost a
//! container's lifecycle more than the rest of its shutdown.

use std::path::{Path, PathBuf};

/// Mount points of every cgroup (v1) and cgroup2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    mounts_in(&info)
}

fn mounts_in(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .collect()
}

/// Removes the container's own cgroup `path` under each of `mounts` (not its parents: the pod's
/// cgroup is the runtime's to remove), then libcontainer's `state_dir`. Errors are reported on
/// stderr (the monitor's log) and otherwise ignored: RemoveContainer deletes both again.
pub fn finish(mounts: &[PathBuf], cgroup_path: &str, state_dir: &Path) {
    let rel = cgroup_path.trim_start_matches('/');
    if !rel.is_empty() {
        for m in mounts {
            let dir = m.join(rel);
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("remove cgroup {}: {e}", dir.display()),
            }
        }
    }
    match std::fs::remove_dir_all(state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("remove {}: {e}", state_dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_hierarchies_are_read_from_mountinfo() {
        let info = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 30 8:1 / / rw - ext4 /dev/vda rw
";
        assert_eq!(
            mounts_in(info),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/memory")
            ]
        );
    }

    #[test]
    fn only_the_container_cgroup_and_the_state_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for m in [&a, &b] {
            std::fs::create_dir_all(m.join("skiff/pod/c1")).expect("mkdir");
        }
        std::fs::create_dir_all(a.join("skiff/pod/c2")).expect("mkdir");
        let state = dir.path().join("state/c1");
        std::fs::create_dir_all(&state).expect("mkdir");
        std::fs::write(state.join("state.json"), b"{}").expect("write");

        finish(&[a.clone(), b.clone()], "/skiff/pod/c1", &state);
        assert!(!a.join("skiff/pod/c1").exists() && !b.join("skiff/pod/c1").exists());
        assert!(
            a.join("skiff/pod/c2").exists(),
            "another container's cgroup stays"
        );
        assert!(b.join("skiff/pod").exists(), "the pod's cgroup stays");
        assert!(!state.exists());
        // Twice is fine: RemoveContainer may have been first.
        finish(&[a], "/skiff/pod/c1", &state);
    }
}
