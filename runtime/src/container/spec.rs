//! Building a container's OCI runtime spec from its image config and CRI `ContainerConfig`:
//! Kubernetes' command/args rule, env merging, user resolution, namespaces joined by path,
//! runc's default mounts, containerd's default capabilities, seccomp, masked and read-only
//! paths, namespaced sysctls, and cgroup resources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::seccomp::{self, SeccompProfile};
use crate::error::{Result, RuntimeError};
use crate::image::ImageConfig;

/// The PATH a container gets when neither the image nor CRI sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Kubernetes' rule: `command` replaces ENTRYPOINT (and then `args`, or nothing, replaces CMD);
/// `args` alone replaces CMD and keeps ENTRYPOINT.
pub fn process_args(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else if !args.is_empty() {
        entrypoint.iter().chain(args).cloned().collect()
    } else {
        entrypoint.iter().chain(cmd).cloned().collect()
    }
}

/// Image env overridden by CRI envs (same key replaced in place, new keys appended), with a
/// default PATH if none is set.
pub fn merge_env(image: &[String], cri: &[(String, String)]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = image.to_vec();
    for (k, v) in cri {
        let entry = format!("{k}={v}");
        match out.iter().position(|e| key(e) == *k) {
            Some(i) => out[i] = entry,
            None => out.push(entry),
        }
    }
    if !out.iter().any(|e| key(e) == "PATH") {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// What the user was asked to be.
#[derive(Debug, Clone, Default)]
pub struct UserRequest {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub supplemental_groups: Vec<i64>,
    /// The image's `USER` (`uid`, `name`, `uid:gid`, `name:group`).
    pub image_user: String,
}

fn passwd_lookup(passwd: &str, pred: impl Fn(&str, u32) -> bool) -> Option<(&str, u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        pred(name, uid).then_some((*name, uid, gid))
    })
}

fn group_lookup(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first()? == &name).then(|| f.get(2)?.parse().ok())?
    })
}

fn to_id(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| RuntimeError::InvalidArgument(format!("{what} {v} out of range")))
}

/// Resolves the process user against the rootfs' `/etc/passwd` and `/etc/group` contents.
pub fn resolve_user(req: &UserRequest, passwd: &str, group: &str) -> Result<ResolvedUser> {
    let (uid, mut gid, username): (u32, Option<u32>, Option<String>);
    if let Some(u) = req.run_as_user {
        uid = to_id(u, "run_as_user")?;
        let found = passwd_lookup(passwd, |_, id| id == uid);
        gid = found.map(|(_, _, g)| g);
        username = found.map(|(n, _, _)| n.to_string());
    } else if !req.run_as_username.is_empty() {
        let (n, u, g) =
            passwd_lookup(passwd, |n, _| n == req.run_as_username).ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "user {:?} not found in /etc/passwd",
                    req.run_as_username
                ))
            })?;
        (uid, gid, username) = (u, Some(g), Some(n.to_string()));
    } else {
        let (user_part, group_part) = match req.image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (req.image_user.as_str(), None),
        };
        if user_part.is_empty() {
            (uid, gid, username) = (0, Some(0), Some("root".to_string()));
        } else if let Ok(u) = user_part.parse::<u32>() {
            uid = u;
            let found = passwd_lookup(passwd, |_, id| id == u);
            gid = found.map(|(_, _, g)| g);
            username = found.map(|(n, _, _)| n.to_string());
        } else {
            let (n, u, g) = passwd_lookup(passwd, |n, _| n == user_part).ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "image user {user_part:?} not found in /etc/passwd"
                ))
            })?;
            (uid, gid, username) = (u, Some(g), Some(n.to_string()));
        }
        if let Some(g) = group_part {
            gid = Some(match g.parse::<u32>() {
                Ok(g) => g,
                Err(_) => group_lookup(group, g).ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!(
                        "image group {g:?} not found in /etc/group"
                    ))
                })?,
            });
        }
    }
    if let Some(g) = req.run_as_group {
        gid = Some(to_id(g, "run_as_group")?);
    }
    let gid = gid.unwrap_or(0);
    let mut additional: Vec<u32> = Vec::new();
    if let Some(name) = &username {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.get(3).is_some_and(|m| m.split(',').any(|m| m == name))
                && let Some(g) = f.get(2).and_then(|g| g.parse().ok())
                && g != gid
            {
                additional.push(g);
            }
        }
    }
    for g in &req.supplemental_groups {
        let g = to_id(*g, "supplemental group")?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// Namespaces a container joins.
#[derive(Debug, Clone, Default)]
pub struct JoinNamespaces {
    /// Network namespace file; `None` for the host's (hostNetwork).
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: PidNamespace,
}

/// Which PID namespace a container runs in (CRI `NamespaceOption.pid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PidNamespace {
    /// Its own (the default).
    #[default]
    Own,
    /// The pod's shared one (`shareProcessNamespace`), by its file.
    Join(PathBuf),
    /// The node's (`hostPID`).
    Host,
}

/// A bind mount requested through CRI (or added by the runtime, e.g. resolv.conf).
#[derive(Debug, Clone)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub readonly: bool,
    pub propagation: Propagation,
}

/// How mounts propagate between the host and a bind mount (CRI `MountPropagation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Neither way (`rprivate`).
    #[default]
    Private,
    /// Mounts the host makes below the source appear in the container (`rslave`).
    HostToContainer,
    /// Both ways (`rshared`); only privileged containers may ask for it.
    Bidirectional,
}

/// cgroup limits from CRI `LinuxContainerResources`; zero means unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_limit: i64,
    pub cpu_shares: i64,
    pub cpu_quota: i64,
    pub cpu_period: i64,
    pub oom_score_adj: i64,
    /// Most tasks the container may have; zero for no limit.
    #[serde(default)]
    pub pids_limit: i64,
}

/// The paths a non-privileged container cannot see (bind-mounted over with /dev/null or an
/// empty tmpfs), as containerd and runc mask them: kernel memory, keys, timers and firmware.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths a non-privileged container sees read-only: kernel tunables and triggers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Whether `name` is a sysctl the kernel keeps per namespace, so that setting it in a pod does
/// not change the node: Kubernetes' list (IPC: `kernel.shm*`, `kernel.msg*`, `kernel.sem`,
/// `fs.mqueue.*`; network: `net.*`). Network ones need the pod's own network namespace and IPC
/// ones its own IPC namespace.
pub fn check_sysctl(name: &str, host_network: bool, host_ipc: bool) -> Result<()> {
    let ipc = name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.");
    let net = name.starts_with("net.");
    let why = if !ipc && !net {
        "is not a namespaced sysctl"
    } else if net && host_network {
        "is not allowed in a pod that uses the host's network"
    } else if ipc && host_ipc {
        "is not allowed in a pod that uses the host's IPC namespace"
    } else {
        return Ok(());
    };
    Err(RuntimeError::InvalidArgument(format!(
        "sysctl {name:?} {why}"
    )))
}

/// Everything a spec is built from.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    pub image: ImageConfig,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub working_dir: String,
    pub user: Option<ResolvedUser>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub rootfs: PathBuf,
    pub namespaces: JoinNamespaces,
    pub mounts: Vec<BindMount>,
    pub resources: Resources,
    pub cgroups_path: String,
    pub annotations: Vec<(String, String)>,
    /// Set the process's no_new_privs bit (CRI `no_new_privs`).
    pub no_new_privs: bool,
    pub seccomp: SeccompProfile,
    /// Checked with [`check_sysctl`] before they get here.
    pub sysctls: BTreeMap<String, String>,
    /// CRI `masked_paths`/`readonly_paths`; empty means the defaults above.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Device nodes of the host, given to privileged containers.
    pub host_devices: Vec<DeviceNode>,
    /// The capabilities the runtime holds (its bounding set); `None`: all of [`ALL_CAPS`].
    pub bounding_caps: Option<Vec<String>>,
}

/// A device node of the host, as a privileged container gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

fn normalize_cap(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// Every capability skiff knows, in bit order (index = capability number), for privileged
/// containers and `ALL`.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities named by the bits of `mask` (a `CapBnd` line of /proc/<pid>/status).
pub fn caps_from_mask(mask: u64) -> Vec<String> {
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The capability set after CRI's add/drop (`ALL` accepted in both). `all` is every
/// capability the runtime itself holds: a privileged container or `ALL` gets those, as
/// containerd's `WithAllCurrentCapabilities` does, since asking for one outside the runtime's
/// bounding set makes capset(2) fail and the container not start.
pub fn capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
    all: &[String],
) -> Vec<String> {
    let mut caps: Vec<String> = if privileged {
        all.to_vec()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for a in add {
        if a.eq_ignore_ascii_case("ALL") {
            caps = all.to_vec();
        } else {
            let a = normalize_cap(a);
            if ALL_CAPS.contains(&a.as_str()) && !caps.contains(&a) {
                caps.push(a);
            }
        }
    }
    for d in drop {
        if d.eq_ignore_ascii_case("ALL") {
            caps.clear();
        } else {
            let d = normalize_cap(d);
            caps.retain(|c| *c != d);
        }
    }
    caps
}

/// Builds the OCI runtime spec.
pub fn build_spec(input: &SpecInput) -> Result<Spec> {
    let args = process_args(
        &input.command,
        &input.args,
        &input.image.entrypoint,
        &input.image.cmd,
    );
    if args.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "no command specified: neither the container nor the image sets one".into(),
        ));
    }
    let env = merge_env(&input.image.env, &input.envs);
    let cwd = if !input.working_dir.is_empty() {
        input.working_dir.clone()
    } else if !input.image.working_dir.is_empty() {
        input.image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(RuntimeError::InvalidArgument(format!(
            "working dir {cwd:?} is not absolute"
        )));
    }
    let user = input.user.clone().unwrap_or(ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: vec![],
    });
    let all: Vec<String> = match &input.bounding_caps {
        Some(b) => b.clone(),
        None => ALL_CAPS.iter().map(|s| s.to_string()).collect(),
    };
    let caps = capabilities(input.privileged, &input.cap_add, &input.cap_drop, &all);
    // Ambient capabilities only for root, as containerd does: a non-root process gets none.
    let ambient: Vec<String> = Vec::new();

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &input.mounts {
        if !m.container_path.is_absolute() {
            return Err(RuntimeError::InvalidArgument(format!(
                "mount destination {} is not absolute",
                m.container_path.display()
            )));
        }
        let mut options = vec![
            "rbind",
            match m.propagation {
                Propagation::Private => "rprivate",
                Propagation::HostToContainer => "rslave",
                Propagation::Bidirectional => "rshared",
            },
        ];
        if m.readonly {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": m.container_path, "type": "bind", "source": m.host_path, "options": options,
        }));
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    match &input.namespaces.pid {
        PidNamespace::Own => namespaces.push(json!({"type": "pid"})),
        PidNamespace::Join(p) => namespaces.push(json!({"type": "pid", "path": p})),
        PidNamespace::Host => {}
    }
    for (kind, path) in [
        ("network", &input.namespaces.net),
        ("ipc", &input.namespaces.ipc),
        ("uts", &input.namespaces.uts),
    ] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if input.privileged {
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        // runc's default device allow list, so /dev/null and friends work under a deny-all.
        resources["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        ]);
    }
    let r = &input.resources;
    if r.memory_limit > 0 {
        resources["memory"] = json!({"limit": r.memory_limit});
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota > 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !cpu.is_empty() {
        resources["cpu"] = serde_json::Value::Object(cpu);
    }

    if r.pids_limit > 0 {
        resources["pids"] = json!({"limit": r.pids_limit});
    }

    // Privileged containers see everything: no masking, no read-only /proc paths, no filter.
    let pick = |given: &[String], default: &[&str]| -> Vec<String> {
        if input.privileged {
            vec![]
        } else if given.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            given.to_vec()
        }
    };
    let masked = pick(&input.masked_paths, MASKED_PATHS);
    let readonly = pick(&input.readonly_paths, READONLY_PATHS);
    let seccomp = match (&input.seccomp, input.privileged) {
        (_, true) | (SeccompProfile::Unconfined, _) => None,
        (SeccompProfile::RuntimeDefault, false) => Some(seccomp::runtime_default(&caps)),
        (SeccompProfile::Localhost(v), false) => Some(v.clone()),
    };
    let devices: Vec<serde_json::Value> = if input.privileged {
        input
            .host_devices
            .iter()
            .map(|d| {
                json!({"path": d.path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
                       "fileMode": d.mode, "uid": d.uid, "gid": d.gid})
            })
            .collect()
    } else {
        vec![]
    };
    if input.privileged {
        // A privileged container may write sysfs, as under runc and containerd.
        if let Some(sys) = mounts.iter_mut().find(|m| m["destination"] == "/sys") {
            sys["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
        }
    }

    // No rlimits: the container inherits the node's. Raising a hard limit needs
    // CAP_SYS_RESOURCE, which this kind of host lacks (DESIGN.md), and fails the start with EPERM.
    let mut process = json!({
        "terminal": false,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": ambient,
        },
    });
    // Only ever `true` or absent: libcontainer treats a present `false` as "set later" and then
    // loads the seccomp filter after dropping CAP_SYS_ADMIN, which the kernel refuses.
    if input.no_new_privs && !input.privileged {
        process["noNewPrivileges"] = json!(true);
    }
    // Never negative: this host lacks CAP_SYS_RESOURCE (see DESIGN.md).
    if r.oom_score_adj > 0 {
        process["oomScoreAdj"] = json!(r.oom_score_adj.min(1000));
    }
    let annotations: serde_json::Map<String, serde_json::Value> = input
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut linux = json!({
        "cgroupsPath": input.cgroups_path,
        "namespaces": namespaces,
        "resources": resources,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "sysctl": input.sysctls,
        "devices": devices,
    });
    if let Some(s) = seccomp {
        linux["seccomp"] = s;
    }
    // A propagating bind mount needs a root that propagates too (as containerd sets it): rshared
    // for Bidirectional, else rslave for HostToContainer.
    let props: Vec<Propagation> = input.mounts.iter().map(|m| m.propagation).collect();
    if props.contains(&Propagation::Bidirectional) {
        linux["rootfsPropagation"] = json!("rshared");
    } else if props.contains(&Propagation::HostToContainer) {
        linux["rootfsPropagation"] = json!("rslave");
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": input.rootfs, "readonly": input.readonly_rootfs},
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value(spec).map_err(|e| RuntimeError::Internal(format!("build oci spec: {e}")))
}

/// Reads a file from the first lowerdir/rootfs that has it, for user resolution before mounting.
pub fn read_from_layers(layers: &[PathBuf], rel: &Path) -> String {
    layers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn kubernetes_command_args_rule() {
        let ep = s(&["/entry"]);
        let cmd = s(&["default"]);
        // (command, args) → expected
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&[], &[], &["/entry", "default"]),
            (&["/bin/sh"], &[], &["/bin/sh"]),
            (&["/bin/sh"], &["-c", "x"], &["/bin/sh", "-c", "x"]),
            (&[], &["a", "b"], &["/entry", "a", "b"]),
        ];
        for (command, args, want) in cases {
            assert_eq!(
                process_args(&s(command), &s(args), &ep, &cmd),
                s(want),
                "{command:?} {args:?}"
            );
        }
    }

    #[test]
    fn env_cri_overrides_image_and_path_defaults() {
        let merged = merge_env(
            &s(&["A=1", "B=2"]),
            &[("B".into(), "3".into()), ("C".into(), "4".into())],
        );
        assert_eq!(merged, s(&[DEFAULT_PATH, "A=1", "B=3", "C=4"]));
        let with_path = merge_env(&s(&["PATH=/bin"]), &[]);
        assert_eq!(with_path, s(&["PATH=/bin"]));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nalice:x:1000:\nwheel:x:10:alice,bob\n";

    #[test]
    fn user_resolution() {
        let r = |req: UserRequest| resolve_user(&req, PASSWD, GROUP);
        let img = |u: &str| UserRequest {
            image_user: u.into(),
            ..Default::default()
        };
        assert_eq!(
            r(img("")).expect("root"),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            r(img("www")).expect("www"),
            ResolvedUser {
                uid: 33,
                gid: 33,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            r(img("alice")).expect("alice"),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10]
            }
        );
        assert_eq!(r(img("1000:33")).expect("num").gid, 33);
        assert_eq!(
            r(img("4242")).expect("unknown uid"),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(r(img("www:alice")).expect("named group").gid, 1000);
        assert!(r(img("nobody-here")).is_err());
        let cri = UserRequest {
            run_as_user: Some(33),
            run_as_group: Some(5),
            supplemental_groups: vec![7],
            image_user: "alice".into(),
            ..Default::default()
        };
        assert_eq!(
            r(cri).expect("cri"),
            ResolvedUser {
                uid: 33,
                gid: 5,
                additional_gids: vec![7]
            }
        );
        let by_name = UserRequest {
            run_as_username: "alice".into(),
            ..Default::default()
        };
        assert_eq!(r(by_name).expect("name").uid, 1000);
    }

    #[test]
    fn capability_add_drop() {
        let all = s(ALL_CAPS);
        let c = capabilities(false, &s(&["NET_ADMIN"]), &s(&["CAP_KILL"]), &all);
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_KILL".to_string()));
        assert!(capabilities(false, &[], &s(&["ALL"]), &all).is_empty());
        assert!(capabilities(true, &[], &[], &all).contains(&"CAP_SYS_ADMIN".to_string()));
        // Privileged and ALL stop at what the runtime holds.
        let held = s(&["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        assert_eq!(capabilities(true, &[], &[], &held), held);
        assert_eq!(capabilities(false, &s(&["ALL"]), &[], &held), held);
    }

    #[test]
    fn capability_masks_name_their_bits() {
        // This machine's kind of CapBnd: everything up to CHECKPOINT_RESTORE but SYS_RESOURCE.
        let caps = caps_from_mask(0x01ff_feff_ffff);
        assert_eq!(caps.len(), ALL_CAPS.len() - 1);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(caps.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        assert_eq!(
            caps_from_mask(0xa80425fb)
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            s(DEFAULT_CAPS).into_iter().collect()
        );
    }

    #[test]
    fn spec_has_namespaces_resources_and_cgroup_path() {
        let input = SpecInput {
            image: ImageConfig {
                cmd: s(&["sh"]),
                env: s(&["PATH=/bin"]),
                ..Default::default()
            },
            rootfs: "/r/rootfs".into(),
            namespaces: JoinNamespaces {
                net: Some("/ns/net".into()),
                ipc: Some("/ns/ipc".into()),
                uts: None,
                pid: PidNamespace::Own,
            },
            resources: Resources {
                memory_limit: 64 << 20,
                cpu_shares: 512,
                cpu_quota: 50000,
                cpu_period: 100000,
                oom_score_adj: -997,
                pids_limit: 4096,
            },
            cgroups_path: "/skiff/pod/ctr".into(),
            no_new_privs: true,
            ..Default::default()
        };
        let spec = build_spec(&input).expect("spec");
        let v = serde_json::to_value(&spec).expect("json");
        assert_eq!(v["linux"]["cgroupsPath"], "/skiff/pod/ctr");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 4096);
        let ns = v["linux"]["namespaces"].as_array().expect("ns");
        assert!(
            ns.iter()
                .any(|n| n["type"] == "network" && n["path"] == "/ns/net")
        );
        assert!(!ns.iter().any(|n| n["type"] == "uts"));
        assert!(
            ns.iter()
                .any(|n| n["type"] == "pid" && n.get("path").is_none())
        );
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert!(
            v["process"].get("oomScoreAdj").is_none(),
            "negative oom_score_adj must be dropped"
        );
        assert!(v.get("hostname").is_none());
    }

    fn sh() -> SpecInput {
        SpecInput {
            image: ImageConfig {
                cmd: s(&["sh"]),
                ..Default::default()
            },
            rootfs: "/r/rootfs".into(),
            ..Default::default()
        }
    }

    fn spec_json(input: &SpecInput) -> serde_json::Value {
        serde_json::to_value(build_spec(input).expect("spec")).expect("json")
    }

    fn strings(v: &serde_json::Value) -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn default_container_gets_default_caps_masks_and_no_filter_unless_asked() {
        let v = spec_json(&sh());
        // The OCI types keep capabilities in sets: compare sorted.
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let caps = sorted(strings(&v["process"]["capabilities"]["effective"]));
        assert_eq!(caps, sorted(s(DEFAULT_CAPS)));
        assert_eq!(
            sorted(strings(&v["process"]["capabilities"]["bounding"])),
            caps
        );
        assert!(strings(&v["process"]["capabilities"]["ambient"]).is_empty());
        assert_eq!(strings(&v["linux"]["maskedPaths"]), s(MASKED_PATHS));
        assert_eq!(strings(&v["linux"]["readonlyPaths"]), s(READONLY_PATHS));
        assert!(strings(&v["linux"]["maskedPaths"]).contains(&"/proc/kcore".to_string()));
        assert!(v["linux"].get("seccomp").is_none(), "unconfined: no filter");
        // Absent, never false: see build_spec.
        assert!(v["process"].get("noNewPrivileges").is_none());
        assert_eq!(v["root"]["readonly"], false);
    }

    #[test]
    fn runtime_default_seccomp_and_no_new_privs() {
        let v = spec_json(&SpecInput {
            seccomp: SeccompProfile::RuntimeDefault,
            no_new_privs: true,
            cap_add: s(&["SYS_ADMIN"]),
            ..sh()
        });
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<String> = v["linux"]["seccomp"]["syscalls"]
            .as_array()
            .expect("rules")
            .iter()
            .flat_map(|r| strings(&r["names"]))
            .collect();
        assert!(
            allowed.contains(&"mount".to_string()),
            "CAP_SYS_ADMIN opens mount"
        );
    }

    #[test]
    fn localhost_seccomp_is_used_verbatim() {
        let profile = json!({"defaultAction": "SCMP_ACT_LOG"});
        let v = spec_json(&SpecInput {
            seccomp: SeccompProfile::Localhost(profile.clone()),
            ..sh()
        });
        assert_eq!(v["linux"]["seccomp"], profile);
    }

    #[test]
    fn privileged_gets_everything_and_no_confinement() {
        let v = spec_json(&SpecInput {
            privileged: true,
            seccomp: SeccompProfile::RuntimeDefault,
            no_new_privs: true,
            host_devices: vec![DeviceNode {
                path: "/dev/loop0".into(),
                kind: 'b',
                major: 7,
                minor: 0,
                mode: 0o660,
                uid: 0,
                gid: 6,
            }],
            ..sh()
        });
        let caps = strings(&v["process"]["capabilities"]["effective"]);
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(caps.len(), ALL_CAPS.len());
        assert!(v["linux"].get("seccomp").is_none());
        assert!(v["process"].get("noNewPrivileges").is_none());
        assert!(strings(&v["linux"]["maskedPaths"]).is_empty());
        assert!(strings(&v["linux"]["readonlyPaths"]).is_empty());
        assert_eq!(v["linux"]["devices"][0]["path"], "/dev/loop0");
        assert_eq!(v["linux"]["devices"][0]["type"], "b");
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
        let sys = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/sys")
            .expect("sys");
        assert!(strings(&sys["options"]).contains(&"rw".to_string()));
    }

    #[test]
    fn readonly_rootfs_user_groups_and_sysctls() {
        let v = spec_json(&SpecInput {
            readonly_rootfs: true,
            user: Some(ResolvedUser {
                uid: 1000,
                gid: 2000,
                additional_gids: vec![3000],
            }),
            sysctls: BTreeMap::from([("net.ipv4.ip_forward".into(), "1".into())]),
            masked_paths: s(&["/proc/custom"]),
            ..sh()
        });
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 2000);
        assert_eq!(v["process"]["user"]["additionalGids"], json!([3000]));
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert_eq!(strings(&v["linux"]["maskedPaths"]), s(&["/proc/custom"]));
    }

    #[test]
    fn only_namespaced_sysctls_are_allowed() {
        // (name, host_network, host_ipc) → allowed
        let cases = [
            ("net.ipv4.ip_local_port_range", false, false, true),
            ("net.core.somaxconn", true, false, false),
            ("kernel.shm_rmid_forced", false, false, true),
            ("kernel.shmmax", false, true, false),
            ("kernel.msgmax", false, false, true),
            ("kernel.sem", false, false, true),
            ("fs.mqueue.msg_max", false, false, true),
            ("kernel.hostname", false, false, false),
            ("vm.swappiness", false, false, false),
            ("kernel.panic", false, false, false),
        ];
        for (name, hn, hi, ok) in cases {
            assert_eq!(check_sysctl(name, hn, hi).is_ok(), ok, "{name} {hn} {hi}");
        }
    }

    #[test]
    fn spec_without_any_command_is_rejected() {
        let err = build_spec(&SpecInput {
            rootfs: "/r".into(),
            ..Default::default()
        })
        .expect_err("no cmd");
        assert!(matches!(err, RuntimeError::InvalidArgument(_)));
    }
}
