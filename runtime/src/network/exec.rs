//! The OS side of CNI: finding plugin binaries, running one with its environment and stdin
//! (with a deadline, as a hung plugin must not hang the CRI call), and telling whether a
//! network namespace file is still a live namespace. [`PluginExec`] is the boundary;
//! [`ProcessExec`] is the real implementation.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why a plugin run did not succeed: how it ended, and what it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginFailure {
    /// How it ended: `exit status: 1`, `killed after 60s`, `cannot run: ...`.
    pub status: String,
    /// Its stdout: a CNI error object when the plugin follows the spec.
    pub stdout: Vec<u8>,
    /// Its stderr (plugins log there), cut to a few KiB.
    pub stderr: String,
}

/// Runs CNI plugin binaries.
pub trait PluginExec: Send + Sync {
    /// Whether `path` is a plugin binary that can be run.
    fn is_plugin(&self, path: &Path) -> bool;
    /// Runs `binary` with `env` on top of the runtime's own environment (plugins need `PATH`
    /// to find iptables) and `stdin`; its stdout if it exits 0.
    fn exec(
        &self,
        binary: &Path,
        env: &[(&'static str, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, PluginFailure>;
    /// Whether `path` is a mounted network namespace (nsfs). DEL passes an empty `CNI_NETNS`
    /// otherwise, so plugins release what they hold outside the namespace instead of failing
    /// on a namespace that is gone.
    fn netns_alive(&self, path: &Path) -> bool;
}

/// The real plugin runner: fork/exec, synchronous (callers run it on a blocking thread).
#[derive(Debug, Clone)]
pub struct ProcessExec {
    /// How long one plugin may run before it is killed.
    pub timeout: Duration,
}

impl Default for ProcessExec {
    fn default() -> Self {
        ProcessExec {
            timeout: Duration::from_secs(60),
        }
    }
}

const STDERR_LIMIT: usize = 4096;

impl PluginExec for ProcessExec {
    fn is_plugin(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    fn exec(
        &self,
        binary: &Path,
        env: &[(&'static str, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, PluginFailure> {
        let mut cmd = Command::new(binary);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        run(cmd, stdin, self.timeout)
    }

    fn netns_alive(&self, path: &Path) -> bool {
        nix::sys::statfs::statfs(path)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
    }
}

/// Runs `cmd` with `stdin` (a few KiB at most) and a deadline; its stdout if it exits 0. Shared
/// by the plugins and the other host tools the pod network runs (`nft`).
pub(super) fn run(
    mut cmd: Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, PluginFailure> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let cannot = |e: std::io::Error| PluginFailure {
        status: format!("cannot run {program}: {e}"),
        ..Default::default()
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(cannot)?;
    // The input is far below the pipe's buffer: writing before reading cannot deadlock.
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(cannot)?,
        Err(_) => {
            // The waiting thread has not reaped the child, so the pid is still ours.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx.recv().ok().and_then(Result::ok);
            return Err(PluginFailure {
                status: format!("killed after {}s", timeout.as_secs()),
                stdout: out.as_ref().map(|o| o.stdout.clone()).unwrap_or_default(),
                stderr: out.map(|o| cut(&o.stderr)).unwrap_or_default(),
            });
        }
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(PluginFailure {
        status: output.status.to_string(),
        stdout: output.stdout,
        stderr: cut(&output.stderr),
    })
}

/// At most [`STDERR_LIMIT`] bytes of `bytes` as text, keeping the end (where errors are).
fn cut(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_LIMIT);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    #[test]
    fn runs_a_plugin_with_env_and_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("seen");
        let p = script(
            dir.path(),
            "echo",
            &format!("echo \"$CNI_COMMAND $CNI_IFNAME\" > {}; cat", out.display()),
        );
        let exec = ProcessExec::default();
        assert!(exec.is_plugin(&p));
        assert!(!exec.is_plugin(&dir.path().join("absent")));
        let stdout = exec
            .exec(
                &p,
                &[("CNI_COMMAND", "ADD".into()), ("CNI_IFNAME", "eth0".into())],
                b"{\"a\":1}",
            )
            .expect("runs");
        assert_eq!(stdout, b"{\"a\":1}");
        assert_eq!(
            std::fs::read_to_string(&out).expect("read").trim(),
            "ADD eth0"
        );
    }

    #[test]
    fn failure_keeps_stdout_and_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(
            dir.path(),
            "bad",
            "echo '{\"code\":7,\"msg\":\"no\"}'; echo oops >&2; exit 3",
        );
        let f = ProcessExec::default()
            .exec(&p, &[], b"")
            .expect_err("fails");
        assert!(f.status.contains('3'), "{f:?}");
        assert_eq!(f.stderr, "oops");
        assert!(String::from_utf8_lossy(&f.stdout).contains("\"msg\":\"no\""));
    }

    #[test]
    fn a_hung_plugin_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(dir.path(), "hang", "exec sleep 30");
        let exec = ProcessExec {
            timeout: Duration::from_millis(200),
        };
        let f = exec.exec(&p, &[], b"").expect_err("killed");
        assert!(f.status.contains("killed"), "{f:?}");
    }

    #[test]
    fn a_plain_file_is_not_a_live_netns() {
        let f = tempfile::NamedTempFile::new().expect("temp");
        assert!(!ProcessExec::default().netns_alive(f.path()));
        assert!(!ProcessExec::default().netns_alive(Path::new("/nonexistent/netns")));
    }
}
