//! How the pod worker tracks each container of the pod's spec in the runtime: a [`Slot`] per
//! spec container, holding the CRI container of its newest attempt ([`Attempt`]), the one
//! before it (for `--previous` logs), its restart count, why it waits, and its back-offs.

use crate::AgentError;
use crate::backoff::Backoff;
use crate::cri::{Cri, v1};
use crate::images::PullState;
use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

/// One CRI container attempt of a spec container.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub status: Option<v1::ContainerStatus>,
    /// When the worker first saw this attempt exited; the crash back-off counts from here.
    pub exit_seen: Option<Instant>,
}

impl Attempt {
    pub fn new(id: String) -> Self {
        Attempt {
            id,
            status: None,
            exit_seen: None,
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
}

impl Slot {
    pub fn new(name: &str) -> Self {
        Slot {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// Whether the newest attempt runs now.
    pub fn running(&self) -> bool {
        self.current.as_ref().is_some_and(Attempt::running)
    }
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
    Some(ContainerStateTerminated {
        exit_code: code,
        reason: Some(reason),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: ns_to_time(s.started_at),
        finished_at: ns_to_time(s.finished_at),
        container_id: Some(format!("{runtime}://{}", a.id)),
        ..Default::default()
    })
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
            if a.exit_code().is_some() && a.exit_seen.is_none() {
                a.exit_seen = Some(now);
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
