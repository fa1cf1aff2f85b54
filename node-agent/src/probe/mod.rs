//! Startup, readiness and liveness probes, run as the kubelet's prober workers run them: one
//! task per probe of each running container attempt, probing every `periodSeconds` after
//! `initialDelaySeconds`, a result changing only after `successThreshold` or
//! `failureThreshold` runs in a row, readiness starting as failed, liveness as succeeded and
//! startup as unknown, and a startup probe holding the other two back until it succeeds. A
//! liveness or startup failure stops its task (the worker kills the container; its next
//! attempt gets new tasks). Every failed run is an `Unhealthy` event. A changed result wakes
//! the pod's worker, which reads the results for readiness and restarts.

pub mod action;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::recorder::EventType;
use action::{Action, Actions, Outcome};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    /// As the kubelet's events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Readiness => "Readiness",
            Kind::Liveness => "Liveness",
        }
    }
}

/// A probe's current result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result3 {
    Success,
    Failure,
    Unknown,
}

/// How often a probe that errors is tried again in one run (the kubelet's `maxProbeRetries`).
const RETRIES: usize = 3;

/// One probe, with Kubernetes' defaults applied.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
}

impl ProbeSpec {
    pub fn new(kind: Kind, p: &Probe, action: Action) -> Self {
        ProbeSpec {
            kind,
            action,
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: u32::try_from(p.success_threshold.unwrap_or(1).max(1)).unwrap_or(1),
            failure_threshold: u32::try_from(p.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3),
        }
    }
}

/// The probes of a container as its spec declares them, resolved against the pod's IP.
pub fn specs_of(c: &Container, pod_ip: &str) -> Result<Vec<ProbeSpec>, String> {
    let mut out = Vec::new();
    for (kind, p) in [
        (Kind::Startup, &c.startup_probe),
        (Kind::Readiness, &c.readiness_probe),
        (Kind::Liveness, &c.liveness_probe),
    ] {
        if let Some(p) = p {
            let action = action::probe_action(p, c, pod_ip)
                .map_err(|e| format!("{} probe: {e}", kind.as_str()))?;
            out.push(ProbeSpec::new(kind, p, action));
        }
    }
    Ok(out)
}

/// What a probe task needs to report: where results go, how to wake the pod's worker and how
/// to record an event about the container.
type Emit = Arc<dyn Fn(EventType, &'static str, String) + Send + Sync>;
type Wake = Arc<dyn Fn() + Send + Sync>;

/// The results of one container attempt's probes.
#[derive(Debug, Default)]
struct Results {
    by_kind: HashMap<Kind, Result3>,
}

/// One container attempt's probe tasks.
struct Running {
    id: String,
    kinds: Vec<Kind>,
    results: Arc<Mutex<Results>>,
    tasks: Vec<JoinHandle<()>>,
    /// Runs the readiness probe now (the kubelet probes a started, unready container at once).
    trigger: Arc<Notify>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The probes of one pod's containers, by container name; dropping it stops every task.
#[derive(Default)]
pub struct Probes {
    running: HashMap<String, Running>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("containers", &self.running.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A running container attempt to probe.
pub struct Target {
    pub name: String,
    pub id: String,
    /// When the container started (its `startedAt`), for `initialDelaySeconds`.
    pub started: Instant,
    pub specs: Vec<ProbeSpec>,
}

impl Probes {
    /// Probes the container attempt `t` (nothing if it already is, or has no probes).
    pub fn ensure(&mut self, t: Target, actions: Arc<dyn Actions>, emit: Emit, wake: Wake) {
        if self.running.get(&t.name).is_some_and(|r| r.id == t.id) {
            return;
        }
        self.running.remove(&t.name);
        if t.specs.is_empty() {
            return;
        }
        let results = Arc::new(Mutex::new(Results::default()));
        let trigger = Arc::new(Notify::new());
        let has_startup = t.specs.iter().any(|s| s.kind == Kind::Startup);
        {
            let mut r = locked(&results);
            for s in &t.specs {
                r.by_kind.insert(
                    s.kind,
                    match s.kind {
                        Kind::Readiness => Result3::Failure,
                        Kind::Liveness => Result3::Success,
                        Kind::Startup => Result3::Unknown,
                    },
                );
            }
        }
        let tasks = t
            .specs
            .iter()
            .cloned()
            .map(|spec| {
                tokio::spawn(run(
                    spec,
                    t.id.clone(),
                    t.started,
                    has_startup,
                    results.clone(),
                    actions.clone(),
                    emit.clone(),
                    wake.clone(),
                    trigger.clone(),
                ))
            })
            .collect();
        self.running.insert(
            t.name,
            Running {
                id: t.id,
                kinds: t.specs.iter().map(|s| s.kind).collect(),
                results,
                tasks,
                trigger,
            },
        );
    }

    /// Stops probing container `name` (its attempt ended).
    pub fn stop(&mut self, name: &str) {
        self.running.remove(name);
    }

    /// Stops every probe.
    pub fn stop_all(&mut self) {
        self.running.clear();
    }

    fn result(&self, name: &str, kind: Kind) -> Option<Result3> {
        let r = self.running.get(name)?;
        r.kinds
            .contains(&kind)
            .then(|| locked(&r.results).by_kind.get(&kind).copied())
            .flatten()
    }

    /// Whether container `name` counts as started: it has no startup probe, or it succeeded.
    pub fn started(&self, name: &str) -> bool {
        self.result(name, Kind::Startup)
            .is_none_or(|r| r == Result3::Success)
    }

    /// Whether container `name` is ready as far as probes go: started, and its readiness probe
    /// (if any) succeeds. Asks for a readiness run at once while it does not.
    pub fn ready(&self, name: &str) -> bool {
        if !self.started(name) {
            return false;
        }
        match self.result(name, Kind::Readiness) {
            None => true,
            Some(Result3::Success) => true,
            Some(_) => {
                if let Some(r) = self.running.get(name) {
                    r.trigger.notify_one();
                }
                false
            }
        }
    }

    /// The probe that failed and asks for container `name` to be restarted.
    pub fn failed(&self, name: &str) -> Option<Kind> {
        [Kind::Liveness, Kind::Startup]
            .into_iter()
            .find(|k| self.result(name, *k) == Some(Result3::Failure))
    }
}

/// How long a readiness probe waits before its next run. The first runs come the moment the
/// container starts, before most servers listen; until the probe first succeeds, a run that
/// failed within the container's first period is retried after [`EARLY_RETRY`], so the pod is
/// Ready about a second after its server listens rather than a whole period later (the
/// kubelet gets a similar second run from the pod sync that its first result triggers). From
/// the first success on, or once a period has passed since the start, the period applies.
fn readiness_wait(spec: &ProbeSpec, succeeded: bool, started: Instant, now: Instant) -> Duration {
    let early = now.saturating_duration_since(started) < spec.initial_delay + spec.period;
    if !succeeded && early {
        spec.period.min(EARLY_RETRY)
    } else {
        spec.period
    }
}

/// The readiness retry in a container's first period, until its first success.
const EARLY_RETRY: Duration = Duration::from_secs(1);

/// One run of the action, retried while it errors.
async fn attempt(spec: &ProbeSpec, id: &str, actions: &dyn Actions) -> Outcome {
    let mut last = Outcome::Error(String::new());
    for _ in 0..RETRIES {
        last = actions
            .run(id, &spec.action, Some(spec.timeout), "probe")
            .await;
        if !matches!(last, Outcome::Error(_)) {
            break;
        }
    }
    last
}

#[allow(clippy::too_many_arguments)]
async fn run(
    spec: ProbeSpec,
    id: String,
    started: Instant,
    has_startup: bool,
    results: Arc<Mutex<Results>>,
    actions: Arc<dyn Actions>,
    emit: Emit,
    wake: Wake,
    trigger: Arc<Notify>,
) {
    let kind = spec.kind;
    tokio::time::sleep_until(started + spec.initial_delay).await;
    let mut last: Option<Result3> = None;
    let mut run_len: u32 = 0;
    let mut succeeded = false;
    loop {
        let gated = kind != Kind::Startup
            && has_startup
            && locked(&results).by_kind.get(&Kind::Startup) != Some(&Result3::Success);
        if !gated {
            let outcome = attempt(&spec, &id, actions.as_ref()).await;
            let result = match outcome {
                Outcome::Success(_) => Some(Result3::Success),
                Outcome::Warning(msg) => {
                    emit(
                        EventType::Warning,
                        "ProbeWarning",
                        format!("{} probe warning: {msg}", kind.as_str()),
                    );
                    Some(Result3::Success)
                }
                Outcome::Failure(msg) => {
                    emit(
                        EventType::Warning,
                        "Unhealthy",
                        format!("{} probe failed: {msg}", kind.as_str()),
                    );
                    Some(Result3::Failure)
                }
                Outcome::Error(msg) => {
                    emit(
                        EventType::Warning,
                        "Unhealthy",
                        format!(
                            "{} probe errored and resulted in unknown state: {msg}",
                            kind.as_str()
                        ),
                    );
                    None
                }
            };
            if let Some(result) = result {
                succeeded |= result == Result3::Success;
                if last == Some(result) {
                    run_len += 1;
                } else {
                    last = Some(result);
                    run_len = 1;
                }
                let threshold = match result {
                    Result3::Success => spec.success_threshold,
                    _ => spec.failure_threshold,
                };
                if run_len >= threshold {
                    let changed = {
                        let mut r = locked(&results);
                        r.by_kind.insert(kind, result) != Some(result)
                    };
                    if changed {
                        wake();
                    }
                    // A failed liveness probe, or a startup probe that decided, is done with
                    // this attempt: the worker restarts it, or the other probes take over.
                    if (kind == Kind::Liveness && result == Result3::Failure)
                        || kind == Kind::Startup
                    {
                        return;
                    }
                }
            }
        }
        if kind == Kind::Readiness {
            let wait = readiness_wait(&spec, succeeded, started, Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = trigger.notified() => {}
            }
        } else {
            tokio::time::sleep(spec.period).await;
        }
    }
}

#[cfg(test)]
mod tests;
