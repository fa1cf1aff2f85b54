//! The exec plan: what `skiff-shim --exec` needs to run a command in a running container
//! without a tty ([`skiff_shim::exec::Plan`]), resolved once per container from its OCI spec,
//! its process's cgroups and its compiled seccomp program, so that each exec probe parses
//! nothing (see `skiff_shim::exec`). Containers the plan cannot express (a user namespace, a
//! seccomp notify action, an SELinux label, capability sets left unset) get `None` and are
//! exec'd by the exec helper instead.

use std::path::Path;

use libcontainer::capabilities::CapabilityExt as _;
use nix::sched::CloneFlags;
use oci_spec::runtime::{Capabilities, Spec};
use skiff_shim::exec::Plan;

use super::enter;
use super::filter::Filter;

/// The plan of the container whose task dir is `task_dir` (its `pid` file and bundle), with
/// an empty command; `seccomp_cache` is where compiled programs are kept.
pub fn base(task_dir: &Path, id: &str, seccomp_cache: &Path) -> Result<Option<Plan>, String> {
    let pid_file = task_dir.join(super::PID_FILE);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("read {}: {e}", pid_file.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("{} holds no pid", pid_file.display()))?;
    let config = task_dir.join("bundle/config.json");
    let spec = Spec::load(&config).map_err(|e| format!("load {}: {e}", config.display()))?;
    let flags = enter::namespace_flags(&spec);
    let Some(process) = spec.process().as_ref() else {
        return Ok(None);
    };
    if flags.contains(CloneFlags::CLONE_NEWUSER) || process.selinux_label().is_some() {
        return Ok(None);
    }
    let Some(caps) = process.capabilities().as_ref() else {
        return Ok(None);
    };
    let (Some(effective), Some(inheritable), Some(permitted)) =
        (caps.effective(), caps.inheritable(), caps.permitted())
    else {
        return Ok(None);
    };
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        None => None,
        Some(profile) => match Filter::prepare_file(profile, seccomp_cache)? {
            Some(compiled) => Some(compiled),
            None => return Ok(None),
        },
    };
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("read the container's cgroups: {e}"))?;
    if !proc_cgroup.contains(id) {
        return Err(format!(
            "container process {pid} is not in container {id}'s cgroup"
        ));
    }
    let user = process.user();
    Ok(Some(Plan {
        pid,
        expect_cgroup: id.to_owned(),
        pidns: flags.contains(CloneFlags::CLONE_NEWPID),
        ns: (flags - CloneFlags::CLONE_NEWPID).bits(),
        cgroups: enter::cgroup_procs_files(&proc_cgroup, enter::cgroup_mounts())
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (r.typ() as i32, r.soft(), r.hard()))
            .collect(),
        no_new_privs: process.no_new_privileges() == Some(true),
        apparmor: process.apparmor_profile().clone(),
        oom_score_adj: process.oom_score_adj(),
        caps: [
            caps.bounding().as_ref().map_or(0, mask),
            mask(effective),
            mask(inheritable),
            mask(permitted),
            caps.ambient().as_ref().map_or(0, mask),
        ],
        cwd: process.cwd().to_string_lossy().into_owned(),
        env: process.env().clone().unwrap_or_default(),
        args: Vec::new(),
        seccomp: seccomp.map(|(path, flags)| (path.to_string_lossy().into_owned(), flags)),
    }))
}

/// A capability set as a bit mask (bit n: capability number n).
pub fn mask(set: &Capabilities) -> u64 {
    set.iter()
        .fold(0, |m, c| m | 1u64 << u32::from(c.to_cap().index()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    /// A task dir for this test process as the container's process: its pid file and a spec.
    fn task(spec: serde_json::Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("pid"), std::process::id().to_string()).expect("pid");
        std::fs::create_dir(dir.path().join("bundle")).expect("bundle");
        std::fs::write(dir.path().join("bundle/config.json"), spec.to_string()).expect("spec");
        dir
    }

    fn spec(namespaces: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "user": {"uid": 1000, "gid": 2000, "additionalGids": [3000], "umask": 18},
                "args": ["sleep", "1"],
                "env": ["PATH=/bin"],
                "cwd": "/app",
                "noNewPrivileges": true,
                "oomScoreAdj": 5,
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL"],
                    "effective": ["CAP_KILL"],
                    "inheritable": [],
                    "permitted": ["CAP_KILL"]
                }
            },
            "linux": {"namespaces": namespaces}
        })
    }

    #[test]
    fn a_plan_carries_the_containers_process() {
        // Any text of this process's own cgroup file stands for the container id.
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        let id = own.lines().next().expect("a line").to_owned();
        let dir = task(spec(
            serde_json::json!([{"type": "pid"}, {"type": "mount"}]),
        ));
        let cache = dir.path().join("seccomp");
        let plan = base(dir.path(), &id, &cache)
            .expect("plan")
            .expect("expressible");
        assert_eq!(plan.pid, std::process::id() as i32);
        assert!(plan.pidns);
        assert_eq!(plan.ns, libc::CLONE_NEWNS);
        assert_eq!(
            (plan.uid, plan.gid, plan.groups.clone()),
            (1000, 2000, vec![3000])
        );
        assert_eq!(plan.umask, Some(18));
        assert_eq!(plan.rlimits, vec![(libc::RLIMIT_NOFILE as i32, 10, 20)]);
        assert!(plan.no_new_privs);
        assert_eq!(plan.oom_score_adj, Some(5));
        // CAP_CHOWN 0, CAP_KILL 5.
        assert_eq!(plan.caps, [1 | 1 << 5, 1 << 5, 0, 1 << 5, 0]);
        assert_eq!(
            (plan.cwd.as_str(), plan.env.clone()),
            ("/app", vec!["PATH=/bin".to_owned()])
        );
        assert!(plan.args.is_empty() && plan.seccomp.is_none());
        // Another process's cgroup: refused, as a reused pid would be.
        assert!(base(dir.path(), "not-this-container-id", &cache).is_err());
    }

    #[test]
    fn a_user_namespace_is_left_to_the_helper() {
        let dir = task(spec(
            serde_json::json!([{"type": "user"}, {"type": "mount"}]),
        ));
        let plan = base(dir.path(), "", &dir.path().join("seccomp")).expect("plan");
        assert!(plan.is_none());
    }

    #[test]
    fn capability_masks_use_the_kernels_numbers() {
        let set: Capabilities = [
            Capability::Chown,
            Capability::NetBindService,
            Capability::SysAdmin,
        ]
        .into_iter()
        .collect();
        // CAP_CHOWN 0, CAP_NET_BIND_SERVICE 10, CAP_SYS_ADMIN 21.
        assert_eq!(mask(&set), 1 | 1 << 10 | 1 << 21);
        assert_eq!(mask(&Capabilities::new()), 0);
    }
}
