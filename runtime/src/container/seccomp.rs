//! Seccomp: which filter a container gets (the CRI `SecurityProfile`) and skiff's own
//! RuntimeDefault profile.
//!
//! The RuntimeDefault profile is an allowlist: every system call not named here fails with
//! `EPERM`. It follows the reasoning of the profiles containerd and Docker ship (block what lets a
//! process reach outside its namespaces or into the kernel; open a few calls only to holders of the
//! capability that already governs them) but is skiff's own list, grouped by what the calls do so
//! that a reader can check it. libcontainer hands it to libseccomp, which skips names this kernel
//! or architecture does not know.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Result, RuntimeError};

/// The seccomp filter a container asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum SeccompProfile {
    /// No filter (CRI `Unconfined`, or no profile requested at all, as containerd treats it).
    #[default]
    Unconfined,
    /// skiff's profile from [`runtime_default`].
    RuntimeDefault,
    /// An OCI `linux.seccomp` object read from a file on the node.
    Localhost(Value),
}

/// Calls every process may make: memory, files, signals, time, scheduling, sockets, ids.
const ALLOWED: &[&str] = &[
    // process lifetime and identity
    "exit",
    "exit_group",
    "fork",
    "vfork",
    "execve",
    "execveat",
    "wait4",
    "waitid",
    "waitpid",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "getpgrp",
    "getsid",
    "setpgid",
    "setsid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "getuid32",
    "geteuid32",
    "getgid32",
    "getegid32",
    "getresuid32",
    "getresgid32",
    "getgroups32",
    "setuid32",
    "setgid32",
    "setreuid32",
    "setregid32",
    "setresuid32",
    "setresgid32",
    "setgroups32",
    "setfsuid32",
    "setfsgid32",
    "capget",
    "capset",
    "prctl",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "ugetrlimit",
    "getrusage",
    "times",
    "uname",
    "sysinfo",
    "getcpu",
    "getpriority",
    "setpriority",
    "restart_syscall",
    // memory
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "membarrier",
    "memfd_create",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    "get_mempolicy",
    // threads, futexes, scheduling
    "futex",
    "futex_time64",
    "futex_waitv",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_getattr",
    "sched_setattr",
    "ioprio_get",
    "ioprio_set",
    // signals
    "kill",
    "tkill",
    "tgkill",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "sigaction",
    "sigaltstack",
    "signal",
    "signalfd",
    "signalfd4",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    // time and timers
    "alarm",
    "nanosleep",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "gettimeofday",
    "time",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    // files and directories
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "lseek",
    "_llseek",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "flock",
    "ioctl",
    "stat",
    "stat64",
    "lstat",
    "lstat64",
    "fstat",
    "fstat64",
    "newfstatat",
    "fstatat64",
    "statx",
    "statfs",
    "statfs64",
    "fstatfs",
    "fstatfs64",
    "access",
    "faccessat",
    "faccessat2",
    "getcwd",
    "chdir",
    "fchdir",
    "getdents",
    "getdents64",
    "readdir",
    "mkdir",
    "mkdirat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "mknod",
    "mknodat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "chown32",
    "fchown32",
    "lchown32",
    "umask",
    "truncate",
    "truncate64",
    "ftruncate",
    "ftruncate64",
    "fallocate",
    "fadvise64",
    "fadvise64_64",
    "readahead",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "pipe",
    "pipe2",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "fanotify_mark",
    "memfd_secret",
    // polling and events
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "poll",
    "ppoll",
    "ppoll_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "io_setup",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_submit",
    "io_cancel",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // System V and POSIX IPC (namespaced by the pod's IPC namespace)
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "ipc",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
    // sockets (namespaced by the pod's network namespace)
    "socket",
    "socketpair",
    "socketcall",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    "shutdown",
    // misc harmless
    "getrandom",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "seccomp",
    "set_thread_area",
    "get_thread_area",
    "set_tls",
    "cacheflush",
    "breakpoint",
    "riscv_flush_icache",
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    // Tracing and reading another process of the same container: the pid namespace and the
    // kernel's ptrace access checks keep these inside (kernel >= 4.8 closed the seccomp bypass).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
];

/// Calls opened only to containers that hold the capability which already governs them, so a
/// capability granted through CRI works as it would without seccomp.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "bpf",
            "perf_event_open",
            "fanotify_init",
            "lookup_dcookie",
            "quotactl",
            "quotactl_fd",
            "name_to_handle_at",
            "setdomainname",
            "sethostname",
            "syslog",
            "iopl",
            "ioperm",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "move_pages",
            "migrate_pages",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The clone(2) flags that create namespaces; without CAP_SYS_ADMIN clone may not use them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 // CLONE_NEWNS
    | 0x0200_0000 // CLONE_NEWCGROUP
    | 0x0400_0000 // CLONE_NEWUTS
    | 0x0800_0000 // CLONE_NEWIPC
    | 0x1000_0000 // CLONE_NEWUSER
    | 0x2000_0000 // CLONE_NEWPID
    | 0x4000_0000; // CLONE_NEWNET

/// personality(2) values that only change how the same process sees itself (`PER_LINUX`,
/// `PER_LINUX32`, with `UNAME26`, and the query `0xffffffff`); other personalities can disable
/// address space randomisation.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Architectures the filter covers: the native one and the compat ABIs a 64-bit kernel also
/// runs, so a 32-bit binary cannot slip past a filter written for 64-bit numbers.
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64", "SCMP_ARCH_PPC"],
        _ => vec![],
    }
}

/// skiff's RuntimeDefault profile as an OCI `linux.seccomp` object, for a container holding
/// `caps` (after CRI add/drop).
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    for (cap, calls) in BY_CAPABILITY {
        if has(cap) {
            for c in *calls {
                if !allowed.contains(c) {
                    allowed.push(c);
                }
            }
        }
    }
    let mut syscalls = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    syscalls.push(json!({
        "names": ["personality"],
        "action": "SCMP_ACT_ALLOW",
        "args": PERSONALITIES.iter().map(|p| json!({"index": 0, "value": p, "op": "SCMP_CMP_EQ"})).collect::<Vec<_>>(),
    }));
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags (threads, fork); the flags argument is the first one
        // everywhere except s390, where it is the second.
        let flags_arg = if std::env::consts::ARCH == "s390x" {
            1
        } else {
            0
        };
        // libcontainer hands `valueTwo` to libseccomp as the mask and `value` as the datum
        // (runc reads them the other way round), so "(flags & NAMESPACE_FLAGS) == 0" is written
        // value 0, valueTwo mask. Written runc's way the mask is 0 and every clone passes,
        // CLONE_NEWUSER included (seen with a static test program under libcontainer 0.7).
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": flags_arg, "value": 0, "valueTwo": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes the C
        // libraries fall back to clone, which the rule above can inspect.
        syscalls.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

/// Reads a Localhost profile: an OCI `linux.seccomp` object (Docker's profile format is the
/// same shape) in the file `path`, which must be absolute. It is used verbatim: note that
/// libcontainer reads `SCMP_CMP_MASKED_EQ` as mask = `valueTwo`, the reverse of runc.
pub fn load_localhost(path: &str) -> Result<Value> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(RuntimeError::InvalidArgument(format!(
            "seccomp localhost profile {path:?} is not an absolute path"
        )));
    }
    let text = std::fs::read_to_string(p).map_err(RuntimeError::io("read seccomp profile", p))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        RuntimeError::InvalidArgument(format!("seccomp profile {path}: not valid json: {e}"))
    })?;
    if v.get("defaultAction").and_then(Value::as_str).is_none() {
        return Err(RuntimeError::InvalidArgument(format!(
            "seccomp profile {path}: no defaultAction"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().expect("names").clone())
            .map(|n| n.as_str().expect("name").to_string())
            .collect()
    }

    #[test]
    fn default_denies_with_eperm_and_allows_the_basics() {
        let p = runtime_default(&[]);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], libc::EPERM);
        let allowed = names(&p);
        for call in ["read", "write", "execve", "openat", "exit_group", "futex"] {
            assert!(allowed.iter().any(|a| a == call), "{call} allowed");
        }
        for call in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "reboot",
            "init_module",
            "keyctl",
        ] {
            assert!(!allowed.iter().any(|a| a == call), "{call} blocked");
        }
    }

    #[test]
    fn capabilities_open_their_calls() {
        let p = runtime_default(&["CAP_SYS_ADMIN".into(), "CAP_SYS_TIME".into()]);
        let allowed = names(&p);
        for call in ["mount", "unshare", "clone", "clone3", "settimeofday"] {
            assert!(allowed.iter().any(|a| a == call), "{call} allowed");
        }
        assert!(!allowed.iter().any(|a| a == "reboot"));
        // No flag-restricted clone when the unrestricted one is allowed.
        let rules = p["syscalls"].as_array().expect("rules");
        assert!(
            !rules
                .iter()
                .any(|r| r["names"][0] == "clone" && r.get("args").is_some())
        );
    }

    #[test]
    fn clone_without_sys_admin_cannot_make_namespaces() {
        let p = runtime_default(&[]);
        let rules = p["syscalls"].as_array().expect("rules");
        let clone = rules
            .iter()
            .find(|r| r["names"][0] == "clone")
            .expect("clone rule");
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        // libcontainer's order: valueTwo is the mask, value what the masked flags must equal.
        assert_eq!(clone["args"][0]["valueTwo"], CLONE_NAMESPACE_FLAGS);
        assert_eq!(clone["args"][0]["value"], 0);
        let clone3 = rules
            .iter()
            .find(|r| r["names"][0] == "clone3")
            .expect("clone3 rule");
        assert_eq!(clone3["errnoRet"], libc::ENOSYS);
    }

    #[test]
    fn profile_parses_as_an_oci_seccomp_object() {
        let p = runtime_default(&[]);
        let parsed: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(p).expect("oci seccomp");
        assert!(parsed.syscalls().as_ref().is_some_and(|s| s.len() >= 3));
    }

    #[test]
    fn localhost_profiles_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("p.json");
        std::fs::write(&good, r#"{"defaultAction":"SCMP_ACT_LOG"}"#).expect("write");
        let v = load_localhost(good.to_str().expect("utf8")).expect("load");
        assert_eq!(v["defaultAction"], "SCMP_ACT_LOG");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{}").expect("write");
        assert!(matches!(
            load_localhost(bad.to_str().expect("utf8")),
            Err(RuntimeError::InvalidArgument(_))
        ));
        assert!(matches!(
            load_localhost("relative.json"),
            Err(RuntimeError::InvalidArgument(_))
        ));
        assert!(matches!(
            load_localhost("/nonexistent/profile.json"),
            Err(RuntimeError::Io { .. })
        ));
    }
}
