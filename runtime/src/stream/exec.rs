//! Running a command in a container: the [`ExecSpawner`] boundary, its real implementation
//! ([`HelperSpawner`], which has the zygote fork an exec helper, or starts `skiff __exec` — see
//! `monitor::exec`), ExecSync on top of it, and the session that connects one exec to a
//! WebSocket client.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{self, ClientFrame, Version};
use crate::error::{Result, RuntimeError};
use crate::monitor::Zygote;
use crate::monitor::exec::{
    EXEC_ARG, EXEC_CONFIG, EXEC_PID, EXEC_RESIZE, EXEC_RESULT, ExecConfig, ExecResult,
};
use crate::monitor::plan;
use crate::monitor::zygote::Request;
use crate::state;
use skiff_shim::exec::{EXEC_FLAG, PLAN, Plan};

/// ExecSync caps each captured stream at 16 MiB, as CRI asks (CVE-2022-1708); the rest is read
/// and dropped so the command never blocks on a full pipe.
pub const EXEC_SYNC_CAP: usize = 16 << 20;
/// After the command exits, how long to wait for the end of its output (a background child may
/// hold the pipes open).
const DRAIN: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    /// Whether the command gets a stdin (else it reads /dev/null).
    pub stdin: bool,
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A started command. With a tty, `stdout` carries the terminal and `stderr` is empty.
pub struct ExecProcess {
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    /// Sets the terminal size (columns, rows); tty only.
    pub resize: Option<Box<dyn FnMut(u16, u16) + Send>>,
    /// Resolves when the command ended (and its resources are cleaned up).
    pub done: BoxFuture<'static, Result<ExecResult>>,
    /// Signals the command: SIGKILL for a timed-out ExecSync, SIGHUP for a terminal whose
    /// client went away.
    pub signal: Box<dyn Fn(Signal) + Send + Sync>,
}

/// Starts commands in running containers.
pub trait ExecSpawner: Send + Sync {
    fn spawn(&self, spec: ExecSpec) -> BoxFuture<'_, Result<ExecProcess>>;
}

/// The real spawner: one exec helper per command, forked by the zygote (an exec probe is
/// then a fraction of a millisecond cheaper than spawning the skiff binary), or spawned as
/// `skiff __exec <work-dir>` when there is no zygote.
pub struct HelperSpawner {
    exe: PathBuf,
    /// The runtime's volatile task state: work dirs go under `containers/<id>/`, libcontainer's
    /// state is `libcontainer/`.
    root: PathBuf,
    zygote: Option<Arc<Zygote>>,
    /// The static shim, which runs commands without a tty from a plan (`skiff-shim --exec`).
    shim: Option<PathBuf>,
    /// Each container's plan without its command (`None`: the helper runs its execs), made
    /// at its first exec.
    plans: std::sync::Mutex<HashMap<String, Option<Arc<Plan>>>>,
}

/// Plans kept before the ones of containers that are gone are dropped.
const PLANS_KEPT: usize = 1024;

impl HelperSpawner {
    pub fn new(exe: PathBuf, root: PathBuf) -> Self {
        HelperSpawner {
            exe,
            root,
            zygote: None,
            shim: None,
            plans: Default::default(),
        }
    }

    /// Forks helpers through `zygote`.
    pub fn with_zygote(mut self, zygote: Arc<Zygote>) -> Self {
        self.zygote = Some(zygote);
        self
    }

    /// Runs commands without a tty with `shim --exec`.
    pub fn with_shim(mut self, shim: Option<PathBuf>) -> Self {
        self.shim = shim;
        self
    }

    /// Container `id`'s plan, made now if this is its first exec.
    async fn plan(&self, id: &str) -> Result<Option<Arc<Plan>>> {
        if let Some(p) = self.plans.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(p.clone());
        }
        let task = self.root.join("containers").join(id);
        let cache = self.root.join(crate::monitor::exec::SECCOMP_CACHE);
        let owned = id.to_owned();
        let made = tokio::task::spawn_blocking(move || plan::base(&task, &owned, &cache))
            .await
            .map_err(|e| exec_error(id)(format!("plan: {e}")))?
            .map_err(exec_error(id))?
            .map(Arc::new);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() >= PLANS_KEPT {
            let root = &self.root;
            plans.retain(|id, _| root.join("containers").join(id).exists());
        }
        plans.insert(id.to_owned(), made.clone());
        Ok(made)
    }
}

/// A started helper: its stdio, and what resolves when it has exited (with how it ended, for
/// the error when it left no result).
struct Helper {
    stdin: Option<Writer>,
    stdout: Reader,
    stderr: Reader,
    exited: BoxFuture<'static, std::io::Result<String>>,
}

/// Has `zygote` fork the helper for `work`. Its end is the end of a pipe only it holds (the
/// zygote lets the kernel reap it, so there is no wait status to collect).
async fn fork_helper(zygote: Arc<Zygote>, work: &Path, stdin: bool) -> std::io::Result<Helper> {
    use tokio::net::unix::pipe;
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (in_r, in_w) = if stdin {
        let (r, w) = nix::unistd::pipe2(cloexec)?;
        (r, Some(w))
    } else {
        (std::fs::File::open("/dev/null")?.into(), None)
    };
    let (out_r, out_w) = nix::unistd::pipe2(cloexec)?;
    let (err_r, err_w) = nix::unistd::pipe2(cloexec)?;
    let (done_r, done_w) = nix::unistd::pipe2(cloexec)?;
    let dir = work.to_path_buf();
    // The child's ends are dropped here once the zygote holds its copies.
    tokio::task::spawn_blocking(move || {
        zygote.fork(&Request::Exec {
            dir: &dir,
            stdin: in_r.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            done: done_w.as_raw_fd(),
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    let mut done = pipe::Receiver::from_owned_fd(done_r)?;
    Ok(Helper {
        stdin: match in_w {
            Some(w) => Some(Box::new(pipe::Sender::from_owned_fd(w)?)),
            None => None,
        },
        stdout: Box::new(pipe::Receiver::from_owned_fd(out_r)?),
        stderr: Box::new(pipe::Receiver::from_owned_fd(err_r)?),
        exited: Box::pin(async move {
            let mut buf = [0u8; 64];
            while done.read(&mut buf).await? > 0 {}
            Ok("exited".to_string())
        }),
    })
}

/// Spawns `exe <args>` (`skiff __exec <work>`, or `skiff-shim --exec <work>`), reaped by tokio.
fn spawn_helper(exe: &Path, args: &[&OsStr], stdin: bool) -> std::io::Result<Helper> {
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(if stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false)
        .spawn()?;
    let missing = || std::io::Error::other("exec helper without its pipes");
    Ok(Helper {
        stdin: child.stdin.take().map(|w| Box::new(w) as Writer),
        stdout: Box::new(child.stdout.take().ok_or_else(missing)?),
        stderr: Box::new(child.stderr.take().ok_or_else(missing)?),
        exited: Box::pin(async move { child.wait().await.map(|s| s.to_string()) }),
    })
}

fn exec_error(id: &str) -> impl Fn(String) -> RuntimeError + '_ {
    move |message| RuntimeError::Exec {
        id: id.to_string(),
        message,
    }
}

impl ExecSpawner for HelperSpawner {
    fn spawn(&self, spec: ExecSpec) -> BoxFuture<'_, Result<ExecProcess>> {
        Box::pin(async move {
            let id = spec.container_id.clone();
            let fail = exec_error(&id);
            let work = self.root.join("containers").join(&id).join(format!(
                "exec-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ));
            std::fs::create_dir_all(&work).map_err(RuntimeError::io("create dir", &work))?;
            let planned = match &self.shim {
                Some(shim) if !spec.tty => self
                    .plan(&id)
                    .await
                    .inspect_err(
                        |e| tracing::debug!(error = %e, "no exec plan: the helper runs it"),
                    )
                    .ok()
                    .flatten()
                    .map(|p| (shim, p)),
                _ => None,
            };
            // The shim reads its plan; the helper its config.
            match &planned {
                Some((_, base)) => {
                    let plan = Plan {
                        args: spec.cmd.clone(),
                        ..(**base).clone()
                    };
                    let path = work.join(PLAN);
                    std::fs::write(&path, plan.encode())
                        .map_err(RuntimeError::io("write", &path))?;
                }
                None => state::write_json_unsynced(
                    &work.join(EXEC_CONFIG),
                    &ExecConfig {
                        container_id: id.clone(),
                        state_root: self.root.join("libcontainer"),
                        cmd: spec.cmd.clone(),
                        tty: spec.tty,
                    },
                )?,
            }
            let resize = if spec.tty {
                Some(open_resize_fifo(&work.join(EXEC_RESIZE))?)
            } else {
                None
            };
            let forked = match (&planned, &self.zygote) {
                (Some((shim, _)), _) => Some(
                    spawn_helper(shim, &[OsStr::new(EXEC_FLAG), work.as_os_str()], spec.stdin)
                        .map_err(|e| {
                            let _ = std::fs::remove_dir_all(&work);
                            fail(format!("spawn {}: {e}", shim.display()))
                        })?,
                ),
                (None, Some(z)) => fork_helper(z.clone(), &work, spec.stdin)
                    .await
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "no zygote: spawning the exec helper"),
                    )
                    .ok(),
                (None, None) => None,
            };
            let helper = match forked {
                Some(h) => h,
                None => spawn_helper(
                    &self.exe,
                    &[OsStr::new(EXEC_ARG), work.as_os_str()],
                    spec.stdin,
                )
                .map_err(|e| {
                    let _ = std::fs::remove_dir_all(&work);
                    fail(format!("spawn exec helper {}: {e}", self.exe.display()))
                })?,
            };
            let Helper {
                stdin,
                stdout,
                stderr,
                exited,
            } = helper;
            let pid_file = work.join(EXEC_PID);
            let done_work = work.clone();
            let done_id = id.clone();
            let done = Box::pin(async move {
                let waited = exited.await;
                let result = state::read_json::<ExecResult>(&done_work.join(EXEC_RESULT));
                let _ = std::fs::remove_dir_all(&done_work);
                let fail = exec_error(&done_id);
                match (waited, result) {
                    (_, Ok(Some(r))) => Ok(r),
                    (Err(e), _) => Err(fail(format!("wait for exec helper: {e}"))),
                    (Ok(how), Ok(None)) => {
                        Err(fail(format!("exec helper ended ({how}) without a result")))
                    }
                    (Ok(_), Err(e)) => Err(e),
                }
            });
            let signal = Box::new(move |sig: Signal| {
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .filter(|p| *p > 0)
                {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                }
            });
            Ok(ExecProcess {
                stdin,
                stdout: Some(stdout),
                stderr: Some(stderr),
                resize,
                done,
                signal,
            })
        })
    }
}

/// Creates the resize FIFO and opens it read-write, so opening never blocks and the helper
/// never sees end-of-file while the session lasts.
fn open_resize_fifo(path: &Path) -> Result<Box<dyn FnMut(u16, u16) + Send>> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(RuntimeError::sys(format!("mkfifo {}", path.display())))?;
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(RuntimeError::io("open", path))?;
    Ok(Box::new(move |cols, rows| {
        use std::io::Write as _;
        // A few bytes into a FIFO with a 64 KiB buffer: does not block in practice.
        let _ = writeln!(fifo, "{cols} {rows}");
    }))
}

/// Reads from `r` into `buf`, or never resolves when there is no reader.
async fn read_some(r: &mut Option<Reader>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// ExecSync: runs `cmd` to completion (or until `timeout`, then kills it) and returns its
/// stdout, stderr and exit code.
pub async fn exec_sync(
    spawner: &dyn ExecSpawner,
    spec: ExecSpec,
    timeout: Option<Duration>,
) -> Result<(Vec<u8>, Vec<u8>, i32)> {
    let id = spec.container_id.clone();
    let mut p = spawner.spawn(spec).await?;
    drop(p.stdin.take());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut done = p.done;
    let run = async {
        let (mut o, mut e) = (p.stdout.take(), p.stderr.take());
        let (mut obuf, mut ebuf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
        let mut result = None;
        while result.is_none() || o.is_some() || e.is_some() {
            tokio::select! {
                r = &mut done, if result.is_none() => result = Some(r),
                n = read_some(&mut o, &mut obuf) => match n {
                    Ok(n) if n > 0 => capped(&mut out, &obuf[..n]),
                    _ => o = None,
                },
                n = read_some(&mut e, &mut ebuf) => match n {
                    Ok(n) if n > 0 => capped(&mut err, &ebuf[..n]),
                    _ => e = None,
                },
                _ = tokio::time::sleep(DRAIN), if result.is_some() => break,
            }
        }
        result
    };
    let result = match timeout {
        None => run.await,
        Some(t) => match tokio::time::timeout(t, run).await {
            Ok(r) => r,
            Err(_) => {
                (p.signal)(Signal::SIGKILL);
                return Err(RuntimeError::ExecTimeout {
                    id,
                    seconds: t.as_secs(),
                });
            }
        },
    };
    match result {
        Some(Ok(ExecResult::Exited { exit_code })) => Ok((out, err, exit_code)),
        Some(Ok(ExecResult::Failed { error })) => Err(RuntimeError::Exec { id, message: error }),
        Some(Err(e)) => Err(e),
        None => Err(RuntimeError::Internal("exec ended without a result".into())),
    }
}

fn capped(into: &mut Vec<u8>, data: &[u8]) {
    let room = EXEC_SYNC_CAP.saturating_sub(into.len());
    into.extend_from_slice(&data[..data.len().min(room)]);
}

/// What the client asked to see.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdout: bool,
    pub stderr: bool,
}

/// Connects one exec to a client: client frames to the command's stdin and terminal size, its
/// output to stdout/stderr frames, and at the end the status frame. Returns when the status is
/// sent or the client went away (the command then runs on; `done` is still awaited so its work
/// dir is cleaned up).
pub async fn run_session<I, O>(
    version: Version,
    mut incoming: I,
    outgoing: &mut O,
    mut p: ExecProcess,
    cmd: &[String],
    wanted: Wanted,
) where
    I: Stream<Item = Vec<u8>> + Unpin,
    O: Sink<Vec<u8>> + Unpin,
{
    let mut done = p.done;
    let (mut o, mut e) = (p.stdout.take(), p.stderr.take());
    let mut stdin = p.stdin.take();
    let (mut obuf, mut ebuf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut result = None;
    let mut client_open = true;
    while result.is_none() || o.is_some() || e.is_some() {
        tokio::select! {
            r = &mut done, if result.is_none() => result = Some(r),
            msg = incoming.next(), if client_open => match msg {
                Some(msg) => match protocol::decode(version, &msg) {
                    Ok(ClientFrame::Stdin(data)) => {
                        if let Some(w) = stdin.as_mut()
                            && w.write_all(&data).await.and(w.flush().await).is_err()
                        {
                            stdin = None;
                        }
                    }
                    Ok(ClientFrame::CloseStdin) => {
                        if let Some(mut w) = stdin.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                    Ok(ClientFrame::Resize { width, height }) => {
                        tracing::debug!(width, height, "terminal resize");
                        if let Some(r) = p.resize.as_mut() {
                            r(width, height);
                        }
                    }
                    Ok(ClientFrame::Ignored) => tracing::debug!(len = msg.len(), first = ?msg.first(), "ignored client frame"),
                    Err(err) => tracing::debug!(error = %err, "ignoring client frame"),
                },
                None => {
                    client_open = false;
                    break;
                }
            },
            n = read_some(&mut o, &mut obuf) => match n {
                Ok(n) if n > 0 => {
                    if wanted.stdout
                        && outgoing.send(protocol::frame(protocol::STDOUT, &obuf[..n])).await.is_err()
                    {
                        client_open = false;
                    }
                }
                _ => o = None,
            },
            n = read_some(&mut e, &mut ebuf) => match n {
                Ok(n) if n > 0 => {
                    if wanted.stderr
                        && outgoing.send(protocol::frame(protocol::STDERR, &ebuf[..n])).await.is_err()
                    {
                        client_open = false;
                    }
                }
                _ => e = None,
            },
            _ = tokio::time::sleep(DRAIN), if result.is_some() => break,
        }
    }
    if !client_open {
        // The client is gone: nobody to answer. Without a tty the command runs on, as under
        // the kubelet; a terminal nobody can type into again is hung up, as a closed terminal
        // would be. The helper is still awaited so the work dir is cleaned up.
        drop(stdin);
        if p.resize.is_some() && result.is_none() {
            (p.signal)(Signal::SIGHUP);
        }
        if result.is_none() {
            tokio::spawn(done);
        }
        return;
    }
    let status = match result {
        Some(Ok(ExecResult::Exited { exit_code })) => {
            protocol::exit_status(version, cmd, exit_code)
        }
        Some(Ok(ExecResult::Failed { error })) => Some(protocol::failure_status(version, &error)),
        Some(Err(err)) => Some(protocol::failure_status(version, &err.to_string())),
        None => Some(protocol::failure_status(
            version,
            "exec ended without a result",
        )),
    };
    if let Some(status) = status {
        let _ = outgoing.send(status).await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A fake spawner whose "command" echoes stdin to stdout (uppercased on stderr), reports
    /// resizes, and exits with `exit_code` once stdin ends.
    pub(crate) struct EchoSpawner {
        pub exit_code: i32,
        pub resizes: Arc<Mutex<Vec<(u16, u16)>>>,
    }

    impl ExecSpawner for EchoSpawner {
        fn spawn(&self, spec: ExecSpec) -> BoxFuture<'_, Result<ExecProcess>> {
            let exit_code = self.exit_code;
            let resizes = self.resizes.clone();
            Box::pin(async move {
                let (stdin_w, mut stdin_r) = tokio::io::duplex(1024);
                let (mut out_w, out_r) = tokio::io::duplex(1024);
                let (mut err_w, err_r) = tokio::io::duplex(1024);
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    let _ = out_w.write_all(spec.cmd.join(" ").as_bytes()).await;
                    loop {
                        match stdin_r.read(&mut buf).await {
                            Ok(n) if n > 0 => {
                                let _ = out_w.write_all(&buf[..n]).await;
                                let _ = err_w.write_all(&buf[..n].to_ascii_uppercase()).await;
                            }
                            _ => break,
                        }
                    }
                    drop((out_w, err_w));
                    let _ = tx.send(());
                });
                Ok(ExecProcess {
                    stdin: Some(Box::new(stdin_w)),
                    stdout: Some(Box::new(out_r)),
                    stderr: Some(Box::new(err_r)),
                    resize: Some(Box::new(move |w, h| {
                        resizes.lock().expect("lock").push((w, h))
                    })),
                    done: Box::pin(async move {
                        let _ = rx.await;
                        Ok(ExecResult::Exited { exit_code })
                    }),
                    signal: Box::new(|_| {}),
                })
            })
        }
    }

    fn spec(cmd: &[&str]) -> ExecSpec {
        ExecSpec {
            container_id: "c1".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin: true,
        }
    }

    #[tokio::test]
    async fn session_carries_stdin_output_resize_and_exit_code() {
        let resizes = Arc::new(Mutex::new(vec![]));
        let spawner = EchoSpawner {
            exit_code: 3,
            resizes: resizes.clone(),
        };
        let p = spawner.spawn(spec(&["cat"])).await.expect("spawn");
        let incoming = futures::stream::iter(vec![
            b"\x04{\"Width\":100,\"Height\":30}".to_vec(),
            b"\x00data".to_vec(),
            b"\xff\x00".to_vec(),
        ])
        .chain(futures::stream::pending());
        let (mut tx, rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
        let wanted = Wanted {
            stdout: true,
            stderr: true,
        };
        run_session(Version::V5, incoming, &mut tx, p, &["cat".into()], wanted).await;
        drop(tx);
        let frames: Vec<Vec<u8>> = rx.collect().await;
        let stream = |ch: u8| -> Vec<u8> {
            frames
                .iter()
                .filter(|f| f[0] == ch)
                .flat_map(|f| f[1..].to_vec())
                .collect()
        };
        assert_eq!(stream(protocol::STDOUT), b"catdata");
        assert_eq!(stream(protocol::STDERR), b"DATA");
        let last = frames.last().expect("status frame");
        assert_eq!(last[0], protocol::ERROR);
        let status: serde_json::Value = serde_json::from_slice(&last[1..]).expect("json");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(*resizes.lock().expect("lock"), vec![(100, 30)]);
    }

    #[tokio::test]
    async fn exec_sync_captures_output() {
        let spawner = EchoSpawner {
            exit_code: 0,
            resizes: Arc::default(),
        };
        let mut s = spec(&["echo", "hi"]);
        s.stdin = false;
        // The fake's stdin is a duplex whose writer is dropped with the process: EOF at once.
        let (out, err, code) = exec_sync(&spawner, s, Some(Duration::from_secs(5)))
            .await
            .expect("exec sync");
        assert_eq!(out, b"echo hi");
        assert!(err.is_empty());
        assert_eq!(code, 0);
    }
}
