//! How the pod worker tracks each container of the pod's spec in the runtime: a [`Slot`] per
//! spec container, holding the CRI container of its newest attempt ([`Attempt`]), the one
//! before it (for `--previous` logs), its restart count, why it waits, and its back-offs.

use crate::AgentError;
use crate::backoff::Backoff;
use crate::cri::{Cri, v1};
use crate::images::PullState;
use crate::logs::{Assembler, records};
use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tokio::time::Instant;

/// One CRI container attempt of a spec container.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub status: Option<v1::ContainerStatus>,
    /// When the worker first saw this attempt exited; the crash back-off counts from here.
    pub exit_seen: Option<Instant>,
    /// The host file mounted at the container's `terminationMessagePath`.
    pub message_file: Option<PathBuf>,
    /// What the container left as its termination message, read once it exited.
    pub termination_message: Option<String>,
}

impl Attempt {
    pub fn new(id: String) -> Self {
        Attempt {
            id,
            status: None,
            exit_seen: None,
            message_file: None,
            termination_message: None,
        }
    }

    pub fn state(&self) -> v1::ContainerState {
        self.status
            .as_ref()
            .map(|s| s.state())
            .unwrap_or(v1::ContainerState::ContainerUnknown)
    }

    pub fn exit_code(&self) -> Option<i32> {
        (self.state() == v1::ContainerState::ContainerExited)
            .then(|| self.status.as_ref().map_or(0, |s| s.exit_code))
    }

    pub fn running(&self) -> bool {
        self.state() == v1::ContainerState::ContainerRunning
    }
}

/// A spec container and the runtime containers that ran it.
#[derive(Debug, Default)]
pub struct Slot {
    pub name: String,
    /// The newest attempt, if one was created and still exists.
    pub current: Option<Attempt>,
    /// The attempt before `current`, kept for `previous` logs; removed when replaced.
    pub previous: Option<String>,
    /// `restartCount`: the attempt number of the newest container created.
    pub restart_count: u32,
    pub created_any: bool,
    /// Why no container runs, while that is so (ErrImagePull, CrashLoopBackOff, ...).
    pub waiting: Option<(String, Option<String>)>,
    pub last_terminated: Option<ContainerStateTerminated>,
    pub crash_backoff: Backoff,
    pub pull: PullState,
    pub image_ref: String,
    /// `terminationMessagePath`, to find the message file of an attempt an earlier agent run
    /// started (in its CRI mounts).
    pub message_path: Option<String>,
    /// `terminationMessagePolicy: FallbackToLogsOnError`.
    pub fallback_to_logs: bool,
    /// An init container with `restartPolicy: Always`: it keeps running beside the others.
    pub sidecar: bool,
    /// Whether the running attempt has started (no startup probe, or it succeeded).
    pub started: bool,
    /// Whether the running attempt is ready (started, and its readiness probe succeeds).
    pub ready: bool,
}

impl Slot {
    pub fn new(c: &Container) -> Self {
        Slot {
            name: c.name.clone(),
            message_path: c.termination_message_path.clone().filter(|p| !p.is_empty()),
            fallback_to_logs: c.termination_message_policy.as_deref()
                == Some("FallbackToLogsOnError"),
            ..Default::default()
        }
    }

    /// The slot of an init container (a sidecar when its restartPolicy is Always).
    pub fn init(c: &Container) -> Self {
        Slot {
            sidecar: is_sidecar(c),
            ..Slot::new(c)
        }
    }

    /// Whether the newest attempt runs now.
    pub fn running(&self) -> bool {
        self.current.as_ref().is_some_and(Attempt::running)
    }
}

/// Whether an init container is a sidecar: `restartPolicy: Always` (KEP-753).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A CRI timestamp (nanoseconds since the epoch; 0 for none) as a Kubernetes time.
pub fn ns_to_time(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .map(Time)
}

/// The `terminated` state of an attempt that exited.
pub fn terminated_of(a: &Attempt, runtime: &str) -> Option<ContainerStateTerminated> {
    let s = a.status.as_ref()?;
    let code = a.exit_code()?;
    let reason = if s.reason.is_empty() {
        if code == 0 { "Completed" } else { "Error" }.to_owned()
    } else {
        s.reason.clone()
    };
    let message = a
        .termination_message
        .clone()
        .or_else(|| Some(s.message.clone()))
        .filter(|m| !m.is_empty());
    Some(ContainerStateTerminated {
        exit_code: code,
        reason: Some(reason),
        message,
        started_at: ns_to_time(s.started_at),
        finished_at: ns_to_time(s.finished_at),
        container_id: Some(format!("{runtime}://{}", a.id)),
        ..Default::default()
    })
}

/// Most bytes of a termination message (the kubelet's 4 KiB per container).
const MAX_MESSAGE: u64 = 4096;
/// What `FallbackToLogsOnError` takes from the log: its last lines, at most this many bytes.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// The termination message of an exited attempt: its message file's contents, or with
/// `fallback` and an empty file, the tail of its log (the kubelet's
/// `FallbackToLogsOnError`).
fn termination_message(a: &Attempt, path: Option<&str>, fallback: bool) -> Option<String> {
    let status = a.status.as_ref()?;
    let file = a.message_file.clone().or_else(|| {
        let path = path?;
        status
            .mounts
            .iter()
            .find(|m| m.container_path == path)
            .map(|m| PathBuf::from(&m.host_path))
    });
    // The last 4 KiB of the file, as the kubelet reads it.
    let from_file = file.and_then(|f| {
        let mut fh = std::fs::File::open(f).ok()?;
        let len = fh.metadata().ok()?.len();
        fh.seek(SeekFrom::Start(len.saturating_sub(MAX_MESSAGE)))
            .ok()?;
        let mut buf = Vec::new();
        fh.read_to_end(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    });
    match from_file {
        Some(m) if !m.is_empty() => Some(m),
        _ if fallback && !status.log_path.is_empty() => log_tail(Path::new(&status.log_path)),
        other => other,
    }
}

/// The last lines of a CRI log file, as text.
fn log_tail(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let start = data.len().saturating_sub(64 * 1024);
    let mut asm = Assembler::default();
    let recs = records(&mut asm, &data[start..]);
    let lines: Vec<u8> = recs
        .iter()
        .rev()
        .take(FALLBACK_LINES)
        .rev()
        .flat_map(|r| r.content.clone())
        .collect();
    let tail = &lines[lines.len().saturating_sub(FALLBACK_BYTES)..];
    Some(String::from_utf8_lossy(tail).into_owned()).filter(|s| !s.is_empty())
}

/// Reads the runtime's view of the slot's current container; records when an exit was first
/// seen. A container the runtime no longer knows is forgotten, so it is started again.
pub async fn refresh<C: Cri>(cri: &C, slot: &mut Slot, now: Instant) -> Result<(), AgentError> {
    let Some(a) = slot.current.as_mut() else {
        return Ok(());
    };
    match cri.container_status(&a.id).await {
        Ok(s) => {
            a.status = Some(s);
            if let Some(code) = a.exit_code()
                && a.exit_seen.is_none()
            {
                a.exit_seen = Some(now);
                let path = slot.message_path.clone();
                let fallback = slot.fallback_to_logs && code != 0;
                if let Some(a) = slot.current.as_mut() {
                    a.termination_message = termination_message(a, path.as_deref(), fallback);
                }
            }
            Ok(())
        }
        Err(e) if e.is_not_found() => {
            slot.current = None;
            Ok(())
        }
        Err(e) => Err(e),
    }
}
