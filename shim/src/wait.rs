//! The monitor's loop once the container runs: copy its stdout and stderr pipes into the CRI
//! log, reap every child (the monitor is the subreaper of the container's processes), reopen
//! the log when asked, and once the init exited and its output is drained, say how it ended:
//! the exit record `exit.json`, whose fields the runtime reads.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::log::{CriLineWriter, LogSink, timestamp};

/// How long to keep draining output after the container's init exited (grandchildren that
/// escaped the pid namespace teardown cannot hold the pipes open forever).
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// File in the container dir the monitor writes the exit record to.
pub const EXIT_FILE: &str = "exit.json";
/// File in the container dir whose appearance asks for the log to be reopened; the monitor
/// deletes it once done (ReopenContainerLog).
pub const REOPEN_LOG: &str = "reopen-log";
/// FIFO in the container dir that wakes the monitor to look for [`REOPEN_LOG`].
pub const REOPEN_WAKE: &str = "reopen-log.wake";

/// How the init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// The exit code as CRI reports it: 128 + signal for a signal.
    pub fn exit_code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled(s) => 128 + s,
        }
    }
}

/// Whether `pid` is alive (not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Reaps every exited child without blocking; returns the init's end if it was among them.
/// `Err` only when there is no child at all to wait for.
fn reap(init: i32) -> Result<Option<Ended>, ()> {
    let mut ended = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through the pointer, which lives across the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(ended);
        }
        if pid < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno == Some(libc::EINTR) {
                continue;
            }
            return if ended.is_some() { Ok(ended) } else { Err(()) };
        }
        if pid == init && ended.is_none() {
            if libc::WIFEXITED(status) {
                ended = Some(Ended::Exited(libc::WEXITSTATUS(status)));
            } else if libc::WIFSIGNALED(status) {
                ended = Some(Ended::Signaled(libc::WTERMSIG(status)));
            }
        }
    }
}

/// Blocks until `init` exits, reaping whatever else exits meanwhile. `None` when it is not our
/// child (nothing to wait for).
fn wait_blocking(init: i32) -> Option<Ended> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int through the pointer, which lives across the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        if pid == init {
            if libc::WIFEXITED(status) {
                return Some(Ended::Exited(libc::WEXITSTATUS(status)));
            }
            if libc::WIFSIGNALED(status) {
                return Some(Ended::Signaled(libc::WTERMSIG(status)));
            }
        }
    }
}

/// Copies both pipes into `log` until the init process `init` exits (and its output is
/// drained), reaping every child inherited as subreaper; `reopen` is the file whose
/// appearance asks for the log to be reopened.
///
/// Sleeps in poll(2) until something happens: output, the init's exit (a pidfd), another
/// child's (SIGCHLD through a signalfd), or a byte in the FIFO [`REOPEN_WAKE`] beside
/// `reopen`, which the runtime writes after creating the flag. One monitor runs per
/// container, so a periodic wakeup in each adds up on a node with many idle pods. Where the
/// kernel refuses the pidfd or the FIFO, it looks every 200 ms instead.
pub fn copy_and_wait(init: i32, out: File, err: File, log: &mut LogSink, reopen: &Path) -> Ended {
    let mut streams = [
        (Some(out), CriLineWriter::new("stdout")),
        (Some(err), CriLineWriter::new("stderr")),
    ];
    let init_fd = pidfd(init);
    let children = ChildSignals::new();
    let wake = reopen
        .parent()
        .and_then(|dir| wake_fifo(&dir.join(REOPEN_WAKE)));
    let mut ended: Option<(Ended, Instant)> = None;
    let mut buf = vec![0u8; 32 * 1024];
    // Whether to look at the reopen flag: at first (a request may predate the FIFO), then when
    // the FIFO says so, or at every wakeup without one.
    let mut look = true;
    loop {
        if (look || wake.is_none()) && reopen.exists() {
            log.reopen();
            let _ = std::fs::remove_file(reopen);
        }
        look = false;
        if ended.is_none() {
            match reap(init) {
                Ok(Some(e)) => ended = Some((e, Instant::now())),
                Ok(None) => {}
                // Not our child (should not happen): watch /proc instead.
                Err(()) if !pid_alive(init) => ended = Some((Ended::Exited(255), Instant::now())),
                Err(()) => {}
            }
        } else {
            let _ = reap(init);
        }
        let open = streams.iter().any(|(f, _)| f.is_some());
        if let Some((e, at)) = ended
            && (!open || at.elapsed() > DRAIN_GRACE)
        {
            let ts = timestamp();
            for (_, w) in streams.iter_mut() {
                let _ = w.finish(&ts, log);
            }
            return e;
        }
        if !open && init_fd.is_none() {
            // Nothing left to copy and no pidfd: wait for the exit itself rather than poll
            // for it (the pipes close a moment before the process can be reaped).
            match wait_blocking(init) {
                Some(e) => ended = Some((e, Instant::now())),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
            continue;
        }
        let timeout = match ended {
            Some((_, at)) => DRAIN_GRACE.saturating_sub(at.elapsed()).as_millis() as i32 + 1,
            None if init_fd.is_none() || wake.is_none() => 200,
            None => -1,
        };
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut which = Vec::new();
        for (i, (f, _)) in streams.iter().enumerate() {
            if let Some(f) = f {
                fds.push(pollin(f.as_raw_fd()));
                which.push(Some(i));
            }
        }
        // The pidfd stays readable once the init exited: watched only until then.
        let init_watch = init_fd.as_ref().filter(|_| ended.is_none());
        for fd in [
            init_watch.map(|f| f.as_raw_fd()),
            children.as_ref().map(|c| c.fd()),
            wake.as_ref().map(|w| w.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            fds.push(pollin(fd));
            which.push(None);
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs for the whole call.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        for (pfd, i) in fds.iter().zip(which) {
            if pfd.revents == 0 {
                continue;
            }
            let Some(i) = i else {
                // The pidfd, the signalfd or the FIFO: the loop's top reaps and looks.
                if init_watch.is_none_or(|f| f.as_raw_fd() != pfd.fd) {
                    drain(pfd.fd, &mut buf);
                }
                if wake.as_ref().is_some_and(|w| w.as_raw_fd() == pfd.fd) {
                    look = true;
                }
                continue;
            };
            let (file, writer) = &mut streams[i];
            let Some(f) = file.as_mut() else { continue };
            match f.read(&mut buf) {
                Ok(0) => *file = None,
                Ok(n) => {
                    let ts = timestamp();
                    if let Err(e) = writer.feed(&buf[..n], &ts, log) {
                        eprintln!("write log: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => *file = None,
            }
        }
    }
}

fn pollin(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Reads a non-blocking descriptor until it has nothing more.
fn drain(fd: i32, buf: &mut [u8]) {
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`, which lives across the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// A pidfd for `pid`, readable once it exited (Linux 5.3).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// SIGCHLD as a readable descriptor: the signal is blocked in this (single-threaded) process
/// and each one makes the signalfd readable until read.
struct ChildSignals(OwnedFd);

impl ChildSignals {
    fn new() -> Option<ChildSignals> {
        // SAFETY: the sigset is initialised by sigemptyset before use; sigprocmask and
        // signalfd only read it; the returned descriptor is new and owned by the OwnedFd.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return None;
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                return None;
            }
            Some(ChildSignals(OwnedFd::from_raw_fd(fd)))
        }
    }

    fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// Creates the FIFO at `path` and opens it for reading and writing, so that it never reports
/// a hangup between the runtime's writes.
fn wake_fifo(path: &Path) -> Option<File> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: mkfifo reads the NUL-terminated path, which lives across the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
    {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()
}

/// Asks the monitor of the container in `dir` to look at its reopen flag now. Without the
/// FIFO (a monitor from before it existed), the monitor finds the flag within 200 ms anyway.
pub fn wake_for_reopen(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Ok(mut fifo) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dir.join(REOPEN_WAKE))
    {
        let _ = fifo.write_all(b"r");
    }
}

/// Whether the kernel OOM-killed a process in the container's memory cgroup.
pub fn oom_killed(cgroup_path: &str) -> bool {
    let rel = cgroup_path.trim_start_matches('/');
    let candidates = [
        // cgroup v1: "oom_kill N" (kernel >= 4.13)
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        // cgroup v2
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    for path in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0));
        }
    }
    false
}

pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `<dir>/exit.json` atomically (`exit_code`, `finished_at` in ns, `oom_killed`,
/// `message`), the record the runtime reads. Not synced: the directory is volatile task state,
/// which a power cut loses along with the container.
pub fn write_exit(
    dir: &Path,
    exit_code: i32,
    finished_at: i64,
    oom_killed: bool,
    message: &str,
) -> std::io::Result<()> {
    let body = format!(
        "{{\"exit_code\":{exit_code},\"finished_at\":{finished_at},\"oom_killed\":{oom_killed},\"message\":{}}}",
        json_string(message)
    );
    let path = dir.join(EXIT_FILE);
    let tmp = dir.join(format!("{EXIT_FILE}.tmp-{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(body.as_bytes())?;
    std::fs::rename(&tmp, &path)
}

/// Closes stdout. The monitor keeps its stdout, a pipe whose other end the runtime reads to
/// the end, open until the exit record is written: the end of that pipe is how the runtime
/// learns at once that the container exited (StopContainer, GetContainerEvents), rather than
/// by polling.
pub fn release_exit_watch() {
    match File::open("/dev/null") {
        // SAFETY: dup2 onto fd 1 only replaces which file that descriptor names; `null` stays
        // owned by its File and is closed when it drops.
        Ok(null) => unsafe { libc::dup2(null.as_raw_fd(), 1) },
        // SAFETY: nothing in this process uses fd 1 after this; closing it ends the pipe.
        Err(_) => unsafe { libc::close(1) },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// copy_and_wait reaps any child of the process (waitpid -1), as a subreaper must: the
    /// tests that spawn children take turns.
    static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn exit_records_are_json_with_escapes() {
        let dir = tempfile::tempdir().expect("tmp");
        write_exit(dir.path(), 137, 42, true, "killed \"hard\"\n\u{1}").expect("write");
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).expect("read");
        assert_eq!(
            text,
            r#"{"exit_code":137,"finished_at":42,"oom_killed":true,"message":"killed \"hard\"\n\u0001"}"#
        );
    }

    #[test]
    fn signals_are_128_plus() {
        assert_eq!(Ended::Signaled(9).exit_code(), 137);
        assert_eq!(Ended::Exited(3).exit_code(), 3);
    }

    /// Runs `sh -c script` as a monitor runs a container: its output copied into a CRI log,
    /// reaped by `copy_and_wait`. Returns how it ended, the log, and how long it took.
    // copy_and_wait reaps the child itself, with waitpid, as the monitor does.
    #[allow(clippy::zombie_processes)]
    fn monitor(script: &str) -> (Ended, String, Duration) {
        let _turn = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("tmp");
        let log_path = dir.path().join("0.log");
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = File::from(std::os::fd::OwnedFd::from(
            child.stdout.take().expect("out"),
        ));
        let err = File::from(std::os::fd::OwnedFd::from(
            child.stderr.take().expect("err"),
        ));
        let mut log = LogSink::open(Some(log_path.clone()), 0, 1);
        let pid = i32::try_from(child.id()).expect("pid");
        let started = Instant::now();
        let ended = copy_and_wait(pid, out, err, &mut log, &dir.path().join(REOPEN_LOG));
        let took = started.elapsed();
        (
            ended,
            std::fs::read_to_string(&log_path).expect("log"),
            took,
        )
    }

    #[test]
    fn output_is_copied_and_the_child_reaped() {
        let (ended, text, _) = monitor("echo out; echo err >&2; exit 3");
        assert_eq!(ended, Ended::Exited(3));
        assert!(
            text.contains(" stdout F out\n") && text.contains(" stderr F err\n"),
            "{text}"
        );
    }

    /// ReopenContainerLog as the runtime asks for it: flag, then a byte in the FIFO; output
    /// after the reopen goes to the new file.
    #[test]
    #[allow(clippy::zombie_processes)]
    fn a_reopen_request_through_the_fifo_is_answered_while_the_child_runs() {
        use std::os::unix::fs::FileTypeExt as _;
        let _turn = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("tmp");
        let log_path = dir.path().join("0.log");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo before; read x; echo after"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("in");
        let out = File::from(std::os::fd::OwnedFd::from(
            child.stdout.take().expect("out"),
        ));
        let err = File::from(std::os::fd::OwnedFd::from(
            child.stderr.take().expect("err"),
        ));
        let pid = i32::try_from(child.id()).expect("pid");
        let root = dir.path().to_path_buf();
        let asker = std::thread::spawn(move || {
            let flag = root.join(REOPEN_LOG);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(root.join("0.log")).is_ok_and(|t| t.contains("before")) {
                assert!(Instant::now() < deadline, "no first line");
                std::thread::sleep(Duration::from_millis(10));
            }
            let wake = std::fs::metadata(root.join(REOPEN_WAKE)).expect("the FIFO");
            assert!(wake.file_type().is_fifo());
            std::fs::rename(root.join("0.log"), root.join("0.log.1")).expect("rotate");
            std::fs::write(&flag, b"").expect("flag");
            wake_for_reopen(&root);
            while flag.exists() {
                assert!(Instant::now() < deadline, "the flag was never taken");
                std::thread::sleep(Duration::from_millis(10));
            }
            stdin.write_all(b"go\n").expect("release the child");
        });
        let mut log = LogSink::open(Some(log_path.clone()), 0, 1);
        let ended = copy_and_wait(pid, out, err, &mut log, &dir.path().join(REOPEN_LOG));
        asker.join().expect("asker");
        assert_eq!(ended, Ended::Exited(0));
        let old = std::fs::read_to_string(dir.path().join("0.log.1")).expect("old log");
        let new = std::fs::read_to_string(&log_path).expect("new log");
        assert!(
            old.contains(" stdout F before\n") && !old.contains("after"),
            "{old}"
        );
        assert!(
            new.contains(" stdout F after\n") && !new.contains("before"),
            "{new}"
        );
    }

    #[test]
    fn a_child_that_closes_its_output_early_is_still_waited_for() {
        let (ended, text, took) = monitor("echo bye; exec >&- 2>&-; sleep 0.3; exit 4");
        assert_eq!(ended, Ended::Exited(4));
        assert!(text.contains(" stdout F bye\n"), "{text}");
        assert!(
            took >= Duration::from_millis(250),
            "returned before the exit"
        );
    }
}
