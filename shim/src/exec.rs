//! `skiff-shim --exec <work-dir>`: one command run inside a running container without a tty
//! (an exec probe, a `kubectl exec` without `-t`), from a plan the runtime resolved beforehand
//! ([`Plan`], in `<work-dir>/plan`): the container's process, the cgroups and namespaces to
//! join, the identity to take, the seccomp program to load. The runtime starts this small
//! static binary with posix_spawn, so an exec costs neither a fork of a large process nor the
//! parsing of the container's whole OCI spec; what the plan says is applied as `runc exec` and
//! skiff's own exec helper do (the helper still runs execs with a tty and the cases a plan
//! cannot express).
//!
//! Out: `<work-dir>/pid` (the command's host pid, so a timed-out exec can be killed) and
//! `<work-dir>/result.json`, `{"exited":{"exit_code":N}}` or `{"failed":{"error":"..."}}`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The plan's file in the work dir.
pub const PLAN: &str = "plan";
/// The result's file in the work dir.
pub const RESULT: &str = "result.json";
/// The command's pid's file in the work dir.
pub const PID: &str = "pid";
/// The first argument that selects this mode.
pub const EXEC_FLAG: &str = "--exec";

/// Everything an exec needs, resolved by the runtime. Written as `key=value` records, each
/// ended by a NUL byte (values are any bytes but NUL); list fields repeat their key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The container's process, in the host's pid namespace.
    pub pid: i32,
    /// A text its `/proc/<pid>/cgroup` must contain (the container's cgroup path), so a pid
    /// that was reused by another process is refused.
    pub expect_cgroup: String,
    /// Whether to join its pid namespace (for the command, which this process forks).
    pub pidns: bool,
    /// The other namespaces to join, as `setns` flags.
    pub ns: i32,
    /// The `cgroup.procs` files of the container's cgroups.
    pub cgroups: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    /// `(resource, soft, hard)`.
    pub rlimits: Vec<(i32, u64, u64)>,
    pub no_new_privs: bool,
    pub apparmor: Option<String>,
    pub oom_score_adj: Option<i32>,
    /// Capability masks (bit n: capability n): bounding, effective, inheritable, permitted,
    /// ambient.
    pub caps: [u64; 5],
    pub cwd: String,
    pub env: Vec<String>,
    pub args: Vec<String>,
    /// A compiled seccomp program (`struct sock_filter` array) and its seccomp(2) flags.
    pub seccomp: Option<(String, u64)>,
}

impl Plan {
    /// The plan's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: &str| {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        };
        put("pid", &self.pid.to_string());
        put("expect_cgroup", &self.expect_cgroup);
        put("pidns", if self.pidns { "1" } else { "0" });
        put("ns", &self.ns.to_string());
        for c in &self.cgroups {
            put("cgroup", c);
        }
        put("uid", &self.uid.to_string());
        put("gid", &self.gid.to_string());
        for g in &self.groups {
            put("group", &g.to_string());
        }
        if let Some(u) = self.umask {
            put("umask", &u.to_string());
        }
        for (r, soft, hard) in &self.rlimits {
            put("rlimit", &format!("{r} {soft} {hard}"));
        }
        put("nnp", if self.no_new_privs { "1" } else { "0" });
        if let Some(a) = &self.apparmor {
            put("apparmor", a);
        }
        if let Some(o) = self.oom_score_adj {
            put("oom_score_adj", &o.to_string());
        }
        let caps = self.caps.map(|c| c.to_string()).join(" ");
        put("caps", &caps);
        put("cwd", &self.cwd);
        for e in &self.env {
            put("env", e);
        }
        for a in &self.args {
            put("arg", a);
        }
        if let Some((path, flags)) = &self.seccomp {
            put("seccomp", path);
            put("seccomp_flags", &flags.to_string());
        }
        out
    }

    /// Reads a plan; the error names the record that is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Plan, String> {
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("plan: {k}={v:?} is not a number"))
        }
        let mut p = Plan::default();
        let mut seccomp_flags = 0;
        for rec in bytes.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = std::str::from_utf8(rec).map_err(|_| "plan: a record is not UTF-8")?;
            let (k, v) = rec
                .split_once('=')
                .ok_or_else(|| format!("plan: record {rec:?} has no '='"))?;
            match k {
                "pid" => p.pid = num(k, v)?,
                "expect_cgroup" => p.expect_cgroup = v.to_owned(),
                "pidns" => p.pidns = v == "1",
                "ns" => p.ns = num(k, v)?,
                "cgroup" => p.cgroups.push(v.to_owned()),
                "uid" => p.uid = num(k, v)?,
                "gid" => p.gid = num(k, v)?,
                "group" => p.groups.push(num(k, v)?),
                "umask" => p.umask = Some(num(k, v)?),
                "rlimit" => {
                    let f: Vec<&str> = v.split(' ').collect();
                    let [r, soft, hard] = f[..] else {
                        return Err(format!("plan: rlimit {v:?} is not 'resource soft hard'"));
                    };
                    p.rlimits.push((num(k, r)?, num(k, soft)?, num(k, hard)?));
                }
                "nnp" => p.no_new_privs = v == "1",
                "apparmor" => p.apparmor = Some(v.to_owned()),
                "oom_score_adj" => p.oom_score_adj = Some(num(k, v)?),
                "caps" => {
                    let f: Vec<&str> = v.split(' ').collect();
                    if f.len() != 5 {
                        return Err(format!("plan: caps {v:?} is not five masks"));
                    }
                    for (i, m) in f.iter().enumerate() {
                        p.caps[i] = num(k, m)?;
                    }
                }
                "cwd" => p.cwd = v.to_owned(),
                "env" => p.env.push(v.to_owned()),
                "arg" => p.args.push(v.to_owned()),
                "seccomp" => p.seccomp = Some((v.to_owned(), 0)),
                "seccomp_flags" => seccomp_flags = num(k, v)?,
                _ => return Err(format!("plan: unknown record {k:?}")),
            }
        }
        if let Some((_, f)) = p.seccomp.as_mut() {
            *f = seccomp_flags;
        }
        if p.pid <= 0 || p.args.is_empty() || p.cwd.is_empty() {
            return Err("plan: pid, cwd and a command are required".into());
        }
        Ok(p)
    }
}

/// Entry point: `args` are the arguments after `--exec`, i.e. `[<work-dir>]`. Exits 0 once
/// the result is written (whatever the command's exit code), 1 when it could not be.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let Some(dir) = args.first().map(Path::new) else {
        eprintln!("usage: skiff-shim {EXEC_FLAG} <work-dir>");
        return 2;
    };
    let body = match run(dir) {
        Ok(code) => format!("{{\"exited\":{{\"exit_code\":{code}}}}}"),
        Err(e) => format!(
            "{{\"failed\":{{\"error\":{}}}}}",
            crate::wait::json_string(&e)
        ),
    };
    match write_atomic(dir, RESULT, body.as_bytes()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("exec {}: write the result: {e}", dir.display());
            1
        }
    }
}

fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, dir.join(name))
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} has a NUL byte"))
}

/// What the command's process needs, prepared before it starts (it shares this process's
/// memory and must not wait on anything of ours).
struct Prepared {
    plan: Plan,
    pidfd: OwnedFd,
    cgroups: Vec<CString>,
    program: Option<(Vec<u8>, u64)>,
    last_cap: u32,
    err_w: OwnedFd,
}

fn run(dir: &Path) -> Result<i32, String> {
    let bytes = std::fs::read(dir.join(PLAN)).map_err(|e| format!("read the plan: {e}"))?;
    let plan = Plan::decode(&bytes)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, plan.pid, 0) };
    if fd < 0 {
        return Err(errno(&format!("open the container's process {}", plan.pid)));
    }
    // SAFETY: a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pid was the container's when the runtime planned; the pidfd pins the process, whose
    // cgroup must still be the container's.
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", plan.pid)).unwrap_or_default();
    if plan.expect_cgroup.is_empty() || !cgroup.contains(&plan.expect_cgroup) {
        return Err(format!("container process {} is gone", plan.pid));
    }
    let cgroups = plan
        .cgroups
        .iter()
        .map(|c| cstring(c))
        .collect::<Result<Vec<_>, _>>()?;
    let program = match &plan.seccomp {
        Some((path, flags)) => {
            let p = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
            if p.is_empty() || p.len() % 8 != 0 || p.len() / 8 > usize::from(u16::MAX) {
                return Err(format!("{path} is not a seccomp program"));
            }
            Some((p, *flags))
        }
        None => None,
    };
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    if plan.pidns {
        // Only this process's children are born in it.
        // SAFETY: setns with a pidfd and one flag; the result is checked.
        if unsafe { libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
            return Err(errno("join the container's pid namespace"));
        }
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno("pipe"));
    }
    // SAFETY: the two descriptors are new and owned by these OwnedFds alone.
    let (err_r, err_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let prepared = Prepared {
        plan,
        pidfd,
        cgroups,
        program,
        last_cap,
        err_w,
    };
    // SAFETY: this process is single-threaded; `command_main` only reads `prepared`.
    let pid = unsafe { spawn_vfork(command_main, &prepared, 256 << 10) }?;
    drop(prepared);
    let mut message = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut message);
    if !message.is_empty() {
        let _ = wait(pid);
        return Err(message);
    }
    let _ = write_atomic(dir, PID, pid.to_string().as_bytes());
    wait(pid)
}

fn wait(pid: i32) -> Result<i32, String> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through the pointer, which lives across the call.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(128 + libc::WTERMSIG(status));
            }
            continue;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(errno(&format!("wait for {pid}")));
        }
    }
}

extern "C" fn command_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` that `run` passed, alive while it waits for us.
    let p = unsafe { &*arg.cast::<Prepared>() };
    let message = command(p).err().unwrap_or_default();
    // SAFETY: writes the message's bytes, which live across the call, to the error pipe.
    let _ = unsafe { libc::write(p.err_w.as_raw_fd(), message.as_ptr().cast(), message.len()) };
    // SAFETY: _exit only ends this process.
    unsafe { libc::_exit(127) }
}

/// The command's process: into the container's cgroups and namespaces, its identity, exec.
/// Returns only with the reason it could not exec.
fn command(p: &Prepared) -> Result<(), String> {
    let plan = &p.plan;
    join_cgroups(&p.cgroups)?;
    // SAFETY: setns with a pidfd and namespace flags; the result is checked.
    if plan.ns != 0 && unsafe { libc::setns(p.pidfd.as_raw_fd(), plan.ns) } != 0 {
        return Err(errno("join the container's namespaces"));
    }
    if plan.no_new_privs && prctl(libc::PR_SET_NO_NEW_PRIVS, 1) != 0 {
        return Err(errno("set no_new_privs"));
    }
    if let Some(profile) = &plan.apparmor {
        let line = format!("exec {profile}");
        let written = std::fs::write("/proc/self/attr/apparmor/exec", &line)
            .or_else(|_| std::fs::write("/proc/self/attr/exec", &line));
        written.map_err(|e| format!("apply AppArmor profile {profile}: {e}"))?;
    }
    if let Some(u) = plan.umask {
        // SAFETY: umask only changes this process's file mode mask.
        unsafe { libc::umask(u) };
    }
    for (r, soft, hard) in &plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit reads one rlimit from the pointer, which lives across the call.
        if unsafe { libc::setrlimit(*r as _, &lim) } != 0 {
            return Err(errno(&format!("set rlimit {r}")));
        }
    }
    if let Some(adj) = plan.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("set oom_score_adj: {e}"))?;
    }
    identity(plan)?;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: before the capabilities go.
    if !plan.no_new_privs {
        load_seccomp(p)?;
    }
    capabilities(plan, p.last_cap)?;
    let cwd = cstring(&plan.cwd)?;
    // SAFETY: chdir reads a NUL-terminated path.
    if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
        return Err(errno(&format!("chdir {}", plan.cwd)));
    }
    let mut env = plan.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=") && e.len() > 5) {
        env.retain(|e| !e.starts_with("HOME="));
        let mut passwd = String::new();
        let _ =
            std::fs::File::open("/etc/passwd").map(|f| f.take(1 << 20).read_to_string(&mut passwd));
        env.push(format!(
            "HOME={}",
            home_of(&passwd, plan.uid).unwrap_or_else(|| "/".into())
        ));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let cmd = &plan.args[0];
    let exe = lookup(cmd, path, executable)
        .ok_or_else(|| format!("exec: \"{cmd}\": executable file not found in $PATH"))?;
    let exe = cstring(&exe.to_string_lossy())?;
    let argv = plan
        .args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| cstring(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // Nothing but stdio (and the error pipe, until exec succeeds) may reach the command.
    cloexec_above_stdio();
    // As close to exec as possible: the filter also applies to what runs until then.
    if plan.no_new_privs {
        load_seccomp(p)?;
    }
    // SAFETY: execve reads the NUL-terminated path and the NULL-terminated arrays of
    // NUL-terminated strings, which all live across the call.
    unsafe { libc::execve(exe.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    Err(errno(&format!("exec {}", exe.to_string_lossy())))
}

/// Marks every descriptor but stdio close-on-exec.
pub fn cloexec_above_stdio() {
    // SAFETY: close_range only changes descriptor flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
}

/// Moves this process into the cgroups whose `cgroup.procs` files are `procs` ("0": itself).
pub fn join_cgroups(procs: &[CString]) -> Result<(), String> {
    for f in procs {
        // SAFETY: opens a NUL-terminated path; the descriptor is checked and closed below.
        let fd = unsafe { libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        // SAFETY: writes one byte from a static buffer to the descriptor just opened.
        let ok = fd >= 0 && unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } == 1;
        let err = errno(&format!("join cgroup {}", f.to_string_lossy()));
        if fd >= 0 {
            // SAFETY: closes the descriptor opened above, owned by nothing else.
            unsafe { libc::close(fd) };
        }
        if !ok {
            return Err(err);
        }
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(op, arg, 0, 0, 0) }
}

/// Supplementary groups, then gid and uid, keeping the permitted capabilities across the
/// change (raw syscalls: this process is not a thread libc knows).
fn identity(plan: &Plan) -> Result<(), String> {
    if prctl(libc::PR_SET_KEEPCAPS, 1) != 0 {
        return Err(errno("keep capabilities"));
    }
    let groups: Vec<libc::gid_t> = plan.groups.clone();
    // SAFETY: setgroups reads `groups.len()` gids from the pointer, which lives across the call.
    if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } != 0 {
        return Err(errno("set supplementary groups"));
    }
    // SAFETY: setresgid/setresuid take ids only.
    if unsafe { libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) } != 0 {
        return Err(errno(&format!("set gid {}", plan.gid)));
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) } != 0 {
        return Err(errno(&format!("set uid {}", plan.uid)));
    }
    if prctl(libc::PR_SET_KEEPCAPS, 0) != 0 {
        return Err(errno("stop keeping capabilities"));
    }
    // A uid other than 0 cleared the effective set: make it the permitted one again, so the
    // bounding set can be dropped and the filter loaded.
    let (mut hdr, mut data) = cap_header();
    // SAFETY: capget fills two data structs for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(errno("read capabilities"));
    }
    for d in &mut data {
        d.effective = d.permitted;
    }
    // SAFETY: capset reads the header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(errno("reset effective capabilities"));
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn cap_header() -> (CapHeader, [CapData; 2]) {
    (
        CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        },
        [CapData::default(); 2],
    )
}

/// The plan's capability sets: bounding (dropping the rest), then effective, permitted and
/// inheritable, then ambient.
fn capabilities(plan: &Plan, last_cap: u32) -> Result<(), String> {
    let [bounding, effective, inheritable, permitted, ambient] = plan.caps;
    for cap in 0..=last_cap.min(63) {
        if bounding & (1 << cap) == 0
            && prctl(libc::PR_CAPBSET_READ, cap.into()) == 1
            && prctl(libc::PR_CAPBSET_DROP, cap.into()) != 0
        {
            return Err(errno(&format!(
                "drop capability {cap} from the bounding set"
            )));
        }
    }
    let (mut hdr, mut data) = cap_header();
    for (i, d) in data.iter_mut().enumerate() {
        let word = |m: u64| (m >> (32 * i)) as u32;
        d.effective = word(effective);
        d.permitted = word(permitted);
        d.inheritable = word(inheritable);
    }
    // SAFETY: capset reads the header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(errno("set capabilities"));
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for cap in 0..=last_cap.min(63) {
        if ambient & (1 << cap) != 0 {
            // SAFETY: as above.
            let r =
                unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) };
            if r != 0 {
                return Err(errno(&format!("raise ambient capability {cap}")));
            }
        }
    }
    Ok(())
}

fn load_seccomp(p: &Prepared) -> Result<(), String> {
    match &p.program {
        Some((program, flags)) => load_program(program, *flags),
        None => Ok(()),
    }
}

/// Loads a BPF program (`struct sock_filter` array) as this thread's seccomp filter.
pub fn load_program(program: &[u8], flags: u64) -> Result<(), String> {
    let len = u16::try_from(program.len() / 8)
        .map_err(|_| "the seccomp program is too long".to_string())?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp reads `len` whole instructions from `filter`, which `program` holds and
    // which lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(errno("load the seccomp filter"));
    }
    Ok(())
}

/// The home directory of `uid` in a `/etc/passwd` text.
pub fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_owned())
    })
}

/// Where `cmd` is found along `path` (a `PATH` value), as execvp searches: a name with a slash
/// is taken as it is. `is_exec` tells whether a candidate is an executable file.
pub fn lookup(cmd: &str, path: &str, is_exec: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(cmd))
        .find(|p| is_exec(p))
}

/// Whether `p` is a file this process may execute.
pub fn executable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path.
    let x = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    x && std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

/// Starts a process that runs `main(arg)` on a stack of its own (`stack_size` bytes) in this
/// process's memory, as `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, so this process is
/// suspended until it execs or exits (nothing else touches the memory they share meanwhile).
/// Its pid; it is an ordinary child (SIGCHLD) to wait for.
///
/// # Safety
/// The calling process must be single-threaded, and `main` must only read `arg`, free nothing
/// it did not allocate itself, and leave by exec or `_exit`.
pub unsafe fn spawn_vfork<T>(
    main: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: &T,
    stack_size: usize,
) -> Result<i32, String> {
    let stack = Stack::new(stack_size)?;
    // SAFETY: the caller vouches for `main`; `stack` outlives the new process's use of it
    // (this process resumes only once that process has exec'd or exited).
    let pid = unsafe {
        libc::clone(
            main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(arg).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(errno("clone"));
    }
    Ok(pid)
}

/// A stack for a process started by clone(2), with a guard page at its low end, unmapped when
/// dropped.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new(size: usize) -> Result<Stack, String> {
        let page = 4096;
        let len = size + page;
        // SAFETY: a new private anonymous mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(errno("map a stack"));
        }
        let stack = Stack { base, len };
        // SAFETY: the first page of the mapping just made becomes the guard.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(errno("guard the stack"));
        }
        Ok(stack)
    }

    /// The stack's top (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the page-aligned mapping.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; nothing runs on it any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_with_any_text() {
        let plan = Plan {
            pid: 42,
            expect_cgroup: "/skiff/pod/ctr".into(),
            pidns: true,
            ns: libc::CLONE_NEWNS | libc::CLONE_NEWNET,
            cgroups: vec!["/sys/fs/cgroup/a b/cgroup.procs".into()],
            uid: 1000,
            gid: 1000,
            groups: vec![10, 20],
            umask: Some(0o22),
            rlimits: vec![(7, 1024, 4096)],
            no_new_privs: true,
            apparmor: Some("runtime/default".into()),
            oom_score_adj: Some(-5),
            caps: [u64::MAX >> 23, 1, 2, 3, 4],
            cwd: "/work dir".into(),
            env: vec!["A=b=c".into(), "NL=x\ny".into()],
            args: vec!["sh".into(), "-c".into(), "echo 'a=b'".into()],
            seccomp: Some(("/run/x.bpf".into(), 2)),
        };
        assert_eq!(Plan::decode(&plan.encode()).expect("decode"), plan);
    }

    #[test]
    fn bad_plans_say_what_is_wrong() {
        assert!(Plan::decode(b"pid=x\0").unwrap_err().contains("pid=\"x\""));
        assert!(Plan::decode(b"bogus=1\0").unwrap_err().contains("bogus"));
        assert!(
            Plan::decode(b"pid=3\0cwd=/\0")
                .unwrap_err()
                .contains("a command")
        );
        assert!(Plan::decode(b"caps=1 2\0").unwrap_err().contains("five"));
    }

    #[test]
    fn commands_are_found_along_path() {
        let exists = |p: &Path| p == Path::new("/bin/true") || p == Path::new("/usr/bin/env");
        assert_eq!(
            lookup("true", "/usr/bin:/bin", exists),
            Some(PathBuf::from("/bin/true"))
        );
        assert_eq!(
            lookup("env", "/usr/bin:/bin", exists),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(lookup("nope", "/usr/bin:/bin", exists), None);
        assert_eq!(
            lookup("./x", "/bin", exists),
            Some(PathBuf::from("./x")),
            "a name with a slash is not searched"
        );
    }

    #[test]
    fn home_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nbad\n";
        assert_eq!(home_of(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_of(passwd, 1000), None);
    }
}
