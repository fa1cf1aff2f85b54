//! The container's seccomp filter for exec'd processes, compiled once per distinct profile.
//!
//! Compiling the OCI profile with libseccomp (several hundred syscalls on three x86
//! architectures) costs about 10 ms of CPU; an exec probe every 10 s in 100 pods would pay it
//! ten times a second. The first exec with a profile compiles it to BPF and keeps the program
//! in a directory of the runtime's run dir, named by the SHA-256 of the profile's JSON (the
//! pods of a node mostly share one); later execs load those bytes with seccomp(2). The translation follows the OCI runtime spec as runc and
//! libcontainer apply it (same actions, default errno EPERM, a rule whose action is the default
//! skipped, syscalls unknown to this kernel skipped, repeated argument indexes as separate
//! rules); profiles with a notify action are left to libcontainer, which also hands out the
//! listener.
#![allow(unsafe_code)]

use std::path::Path;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

/// One BPF instruction (`struct sock_filter`).
const INSN: usize = 8;
/// Names the way `compile` builds programs, in the cache key.
const COMPILER: &[u8] = b"skiff-seccomp-2 binary-tree\n";

/// A seccomp filter ready to load in the command's process.
#[derive(Debug)]
pub enum Filter {
    /// A compiled program and the seccomp(2) flags to load it with.
    Bpf {
        program: Vec<u8>,
        flags: libc::c_ulong,
    },
    /// A profile with a notify action, which libcontainer compiles and loads.
    Notify(LinuxSeccomp),
}

impl Filter {
    /// `profile`, from the BPF program cached in the directory `cache` or compiled now and
    /// cached there. Called before the command's process leaves the host's mount namespace.
    pub fn prepare(profile: &LinuxSeccomp, cache: &Path) -> Result<Filter, String> {
        if has_notify(profile) {
            return Ok(Filter::Notify(profile.clone()));
        }
        std::fs::create_dir_all(cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
        let cache = cache.join(cache_name(profile)?);
        let cache = cache.as_path();
        let program = match std::fs::read(cache) {
            Ok(p) if !p.is_empty() && p.len() % INSN == 0 => p,
            _ => {
                compile(profile, cache)?;
                std::fs::read(cache).map_err(|e| format!("read {}: {e}", cache.display()))?
            }
        };
        Ok(Filter::Bpf {
            program,
            flags: flags(profile),
        })
    }

    /// The file holding `profile`'s compiled program (compiled now if it is not cached yet)
    /// and its seccomp(2) flags; `None` for a profile with a notify action.
    pub fn prepare_file(
        profile: &LinuxSeccomp,
        cache: &Path,
    ) -> Result<Option<(std::path::PathBuf, u64)>, String> {
        if has_notify(profile) {
            return Ok(None);
        }
        std::fs::create_dir_all(cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
        let file = cache.join(cache_name(profile)?);
        let whole = std::fs::metadata(&file)
            .is_ok_and(|m| m.len() > 0 && (m.len() as usize).is_multiple_of(INSN));
        if !whole {
            compile(profile, &file)?;
        }
        Ok(Some((file, flags(profile) as u64)))
    }

    /// Makes the filter this (single-threaded) process's.
    pub fn load(&self) -> Result<(), String> {
        match self {
            Filter::Bpf { program, flags } => load(program, *flags),
            Filter::Notify(profile) => libcontainer::seccomp::initialize_seccomp(profile)
                .map(|_| ())
                .map_err(|e| format!("load the seccomp filter: {e}")),
        }
    }
}

/// The cache file of `profile`: the SHA-256 of its JSON, which holds everything that shapes
/// the program (the flags are applied at load and are part of it too).
fn cache_name(profile: &LinuxSeccomp) -> Result<String, String> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(profile).map_err(|e| format!("seccomp profile: {e}"))?;
    let mut hash = sha2::Sha256::new();
    // How the program is compiled: a change here must not load programs compiled before it.
    hash.update(COMPILER);
    hash.update(&json);
    Ok(format!("{}.bpf", hex::encode(hash.finalize())))
}

fn has_notify(p: &LinuxSeccomp) -> bool {
    p.default_action() == LinuxSeccompAction::ScmpActNotify
        || p.syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The seccomp(2) flags the profile asks for.
fn flags(p: &LinuxSeccomp) -> libc::c_ulong {
    let mut f = 0;
    for flag in p.flags().iter().flatten() {
        f |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // One thread, and no listener: nothing to synchronize or wait for.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    f
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| format!("seccomp trace value {errno} too large"))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn op(o: LinuxSeccompOperator, mask: Option<u64>) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask.unwrap_or(0)),
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// Compiles the profile to a BPF program (`struct sock_filter` array) at `out`, written whole
/// under a temporary name and renamed, so a concurrent exec reads nothing or all of it.
pub fn compile(p: &LinuxSeccomp, out: &Path) -> Result<(), String> {
    fn err(what: &'static str) -> impl Fn(libseccomp::error::SeccompError) -> String {
        move |e| format!("seccomp {what}: {e}")
    }
    let default = action(p.default_action(), p.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(err("filter"))?;
    // A binary tree of syscall numbers rather than a list: the program is as long, but the
    // kernel walks it for every syscall number when it loads it (to cache the constant
    // answers), which for a list of hundreds of rules costs more than the rest of an exec.
    ctx.set_ctl_optimize(2).map_err(err("optimize"))?;
    for a in p.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)).map_err(err("architecture"))?;
    }
    for rule in p.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let cmps: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value()))
            .collect();
        let mut indexes: Vec<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // Unknown to this kernel's libseccomp: nothing to filter.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if cmps.is_empty() {
                ctx.add_rule(act, sc).map_err(err("rule"))?;
            } else if repeated {
                for c in &cmps {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(err("rule"))?;
                }
            } else {
                ctx.add_rule_conditional(act, sc, &cmps)
                    .map_err(err("rule"))?;
            }
        }
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = std::path::PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let exported = ctx.export_bpf(&file).map_err(err("export"));
    drop(file);
    let renamed = exported.and_then(|()| {
        std::fs::rename(&tmp, out).map_err(|e| format!("rename {}: {e}", out.display()))
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// Loads a BPF program as this process's seccomp filter.
fn load(program: &[u8], flags: libc::c_ulong) -> Result<(), String> {
    skiff_shim::exec::load_program(program, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).expect("profile")
    }

    #[test]
    fn profiles_compile_to_whole_instructions() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}
            ]
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("f.bpf");
        compile(&p, &out).expect("compile");
        let bpf = std::fs::read(&out).expect("read");
        assert!(
            !bpf.is_empty() && bpf.len().is_multiple_of(INSN),
            "{} bytes",
            bpf.len()
        );
        assert!(!has_notify(&p));
        assert_eq!(flags(&p), 0);
    }

    #[test]
    fn one_program_per_distinct_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("seccomp");
        let a = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
        }));
        let b = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ALLOW"}]
        }));
        let program = |f: Filter| match f {
            Filter::Bpf { program, .. } => program,
            Filter::Notify(_) => panic!("not a notify profile"),
        };
        let first = program(Filter::prepare(&a, &cache).expect("a"));
        let again = program(Filter::prepare(&a, &cache).expect("a again"));
        assert_eq!(first, again);
        assert_eq!(std::fs::read_dir(&cache).expect("dir").count(), 1);
        let other = program(Filter::prepare(&b, &cache).expect("b"));
        assert_ne!(first, other);
        assert_eq!(std::fs::read_dir(&cache).expect("dir").count(), 2);
        // A torn file is compiled again, not loaded.
        let file = cache.join(cache_name(&a).expect("name"));
        std::fs::write(&file, b"abc").expect("tear");
        assert_eq!(program(Filter::prepare(&a, &cache).expect("a")), first);
    }

    /// The compiled program does what the profile says, across a few dozen rules (the binary
    /// tree libseccomp builds for them), loaded in a forked child.
    #[test]
    fn a_loaded_program_denies_what_the_profile_denies() {
        let denied = [
            "getppid",
            "acct",
            "swapon",
            "swapoff",
            "sethostname",
            "setdomainname",
            "syncfs",
            "kexec_load",
            "init_module",
            "delete_module",
            "pivot_root",
            "chroot",
            "umount2",
            "mount",
            "reboot",
            "iopl",
            "ioperm",
            "quotactl",
            "nfsservctl",
            "lookup_dcookie",
            "perf_event_open",
            "fanotify_init",
            "name_to_handle_at",
            "open_by_handle_at",
            "finit_module",
            "kcmp",
            "bpf",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "fspick",
        ];
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": &denied[..], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        }));
        let dir = tempfile::tempdir().expect("tempdir");
        let Filter::Bpf { program, flags } =
            Filter::prepare(&p, &dir.path().join("seccomp")).expect("prepare")
        else {
            panic!("not a notify profile")
        };
        // SAFETY: the child only makes raw syscalls and leaves with _exit, which is safe after
        // fork in a multi-threaded process.
        let code = match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || load(&program, flags).is_err()
                {
                    libc::_exit(10);
                }
                let errno = || *libc::__errno_location();
                if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EACCES {
                    libc::_exit(11);
                }
                if libc::syscall(libc::SYS_syncfs, -1) != -1 || errno() != libc::EACCES {
                    libc::_exit(12);
                }
                if libc::syscall(libc::SYS_getpid) <= 0 {
                    libc::_exit(13);
                }
                // Allowed, and refused by the kernel itself for its arguments.
                if libc::syscall(libc::SYS_close_range, 5, 1, 0) != -1 || errno() != libc::EINVAL {
                    libc::_exit(14);
                }
                libc::_exit(0)
            },
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).expect("wait") {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("child: {other:?}"),
                }
            }
        };
        assert_eq!(code, 0, "the child's check number {code} failed");
    }

    #[test]
    fn notify_and_flags_are_seen() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(has_notify(&p));
        assert_eq!(flags(&p), libc::SECCOMP_FILTER_FLAG_LOG);
    }

    #[test]
    fn a_bad_trace_value_is_an_error() {
        assert!(action(LinuxSeccompAction::ScmpActTrace, Some(70000)).is_err());
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, None).expect("errno"),
            ScmpAction::Errno(libc::EPERM)
        );
    }
}
