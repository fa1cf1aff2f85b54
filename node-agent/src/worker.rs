//! One pod on this node: the worker that drives its sandbox and containers through CRI
//! towards the pod's spec and computes the status the kubelet would report.
//!
//! [`PodWorker::sync`] is one level-triggered pass (kubelet `SyncPod`): it reads the runtime's
//! state, acts once (start, restart, back off, tear down) and returns the status to write.
//! It does no Kubernetes API I/O, so unit tests drive it against the fake CRI; the loop that
//! feeds it pods and writes the status lives in `pods`.

use crate::AgentError;
use crate::backoff::Backoff;
use crate::cri::{self, Cri, v1};
use crate::fieldref::Allocatable;
use crate::hooks::{self, Stop};
use crate::images::ensure_image;
use crate::objects::ObjectSource;
use crate::prepare;
use crate::probe::action::Actions;
use crate::probe::{self, Kind, Probes, Target};
use crate::pull::{PullRecords, PullSecrets};
use crate::recorder::{EventRecord, EventSink, EventType, container_path, pod_ref};
use crate::registry::PodEntry;
use crate::slot::{Attempt, Slot, refresh, terminated_of};
use crate::spec;
use crate::status::{self, RestartPolicy};
use crate::volumes::{ClaimResolver, PodVolumes, VolumeContext, VolumeManager};
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often a worker re-syncs while the pod may still change (containers running, starting
/// or backing off): how fast an exit shows up in the status.
pub const ACTIVE_RESYNC: Duration = Duration::from_secs(1);
/// Re-sync period once nothing will change on its own (the pod finished).
pub const IDLE_RESYNC: Duration = Duration::from_secs(10);
/// Re-sync period of a pod whose containers all run, started, when the runtime reports
/// container events: an exit, a probe result or a changed ConfigMap wakes the worker at once
/// (the kubelet's evented PLEG, which relists only every few minutes).
pub const STEADY_RESYNC: Duration = Duration::from_secs(60);

/// What the node knows that every pod worker needs.
#[derive(Clone)]
pub struct NodeContext {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub pod_log_dir: PathBuf,
    /// Per-pod files the agent makes (`<pods_dir>/<uid>/`: volumes, `etc-hosts`).
    pub pods_dir: PathBuf,
    /// `<runtime_name>` from CRI `Version`, the scheme of `containerID`s.
    pub runtime_name: String,
    /// Pull secrets and what pulled each image.
    pub pulls: Arc<Pulls>,
    /// The ConfigMaps, Secrets and Services pods refer to.
    pub objects: Arc<dyn ObjectSource>,
    /// What PersistentVolumeClaims resolve to on this node.
    pub claims: Arc<dyn ClaimResolver>,
    /// Pods' volumes under `pods_dir`.
    pub volumes: VolumeManager,
    /// Where the kubelet's events go.
    pub events: Arc<dyn EventSink>,
    /// What containers without limits may use (the downward API's default).
    pub allocatable: Allocatable,
    /// Runs probes and lifecycle hooks.
    pub actions: Arc<dyn Actions>,
    /// Asks for a pass of a pod's worker (by UID): a probe result changed.
    pub wake: tokio::sync::mpsc::UnboundedSender<String>,
    /// What pods' resolv.conf is made of.
    pub dns: crate::dns::resolv::NodeDns,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("node_name", &self.node_name)
            .field("node_ip", &self.node_ip)
            .field("pods_dir", &self.pods_dir)
            .finish_non_exhaustive()
    }
}

/// Where pull credentials come from, and the KEP-2535 record of who pulled what.
pub struct Pulls {
    pub secrets: Arc<dyn PullSecrets>,
    pub records: PullRecords,
}

impl std::fmt::Debug for Pulls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulls").finish_non_exhaustive()
    }
}

/// What the dispatcher wants for this pod UID.
#[derive(Debug, Clone)]
pub enum Desired {
    /// The newest Pod object from the watch.
    Pod(Arc<Pod>),
    /// The pod left the watch (deleted, or no longer bound here): tear down, no API calls.
    Gone,
}

/// A sandbox the worker runs.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    attempt: u32,
    config: v1::PodSandboxConfig,
    ips: Vec<String>,
}

/// Where the pod is in its life on this node. Matched in one place: [`PodWorker::sync`].
#[derive(Debug)]
enum Lifecycle {
    /// The worker just started: look for a sandbox and containers an earlier agent run left.
    Adopting,
    /// No ready sandbox: the next pass runs one (attempt `attempt`), unless backing off after
    /// a failed attempt.
    NeedsSandbox { attempt: u32 },
    /// The sandbox is up; containers are started, watched and restarted per restartPolicy.
    Running(Sandbox),
    /// The pod reached Succeeded or Failed: nothing restarts, the sandbox is stopped. Only a
    /// deletion moves on.
    Completed(Option<Sandbox>),
    /// Everything is torn down. The worker exits.
    Terminated,
}

/// What one pass produced.
#[derive(Debug)]
pub struct SyncOutcome {
    /// The status to write, when the worker has one (not for finished or vanished pods).
    pub status: Option<PodStatus>,
    /// The pod has a deletionTimestamp and everything is torn down: delete it with grace 0.
    pub finish_deletion: bool,
    /// When to run the next pass if nothing happens before.
    pub requeue: Duration,
    /// The worker is done; the loop ends after acting on this outcome.
    pub done: bool,
    /// Every container runs and has started, and no timer of the pod's own is pending
    /// (back-off, activeDeadlineSeconds): nothing changes until an event says so.
    pub steady: bool,
}

/// The worker for one pod UID.
pub struct PodWorker<C> {
    cri: Arc<C>,
    node: Arc<NodeContext>,
    uid: String,
    key: String,
    state: Lifecycle,
    init: Vec<Slot>,
    containers: Vec<Slot>,
    sandbox_error: Option<String>,
    sandbox_backoff: Backoff,
    start_time: Option<Time>,
    last_conditions: Vec<PodCondition>,
    volumes: PodVolumes,
    probes: Probes,
    /// When `activeDeadlineSeconds` runs out, once known.
    deadline: Option<Instant>,
    /// Why the agent failed the pod itself (the deadline), as `(reason, message)`.
    failure: Option<(&'static str, &'static str)>,
}

/// The kubelet's message when `activeDeadlineSeconds` ran out.
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

fn waiting(reason: &str, message: Option<String>) -> Option<(String, Option<String>)> {
    Some((reason.to_owned(), message))
}

fn is_terminal_phase(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some(status::SUCCEEDED | status::FAILED)
    )
}

impl<C: Cri> PodWorker<C> {
    /// The `RunPodSandbox` config of this node for attempt `attempt` of `pod`.
    fn sandbox_config(&self, pod: &Pod, attempt: u32) -> Result<v1::PodSandboxConfig, AgentError> {
        spec::sandbox_config(
            pod,
            &self.node.node_name,
            &self.node.pod_log_dir,
            attempt,
            &self.node.dns,
        )
    }

    pub fn new(cri: Arc<C>, node: Arc<NodeContext>, pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        PodWorker {
            cri,
            node,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            key: spec::pod_key(pod),
            state: Lifecycle::Adopting,
            init: spec
                .and_then(|s| s.init_containers.as_ref())
                .into_iter()
                .flatten()
                .map(Slot::init)
                .collect(),
            containers: spec
                .map(|s| &s.containers)
                .into_iter()
                .flatten()
                .map(Slot::new)
                .collect(),
            sandbox_error: None,
            sandbox_backoff: Backoff::default(),
            volumes: PodVolumes::default(),
            probes: Probes::default(),
            deadline: None,
            failure: None,
            start_time: pod.status.as_ref().and_then(|s| s.start_time.clone()),
            last_conditions: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
        }
    }

    /// Names and running state for the HTTP server's registry.
    pub fn registry_entry(&self) -> PodEntry {
        let running = self
            .init
            .iter()
            .chain(&self.containers)
            .filter(|s| s.running())
            .map(|s| s.name.clone())
            .collect();
        PodEntry {
            uid: self.uid.clone(),
            running,
        }
    }

    /// One reconcile pass towards `desired`.
    pub async fn sync(&mut self, desired: &Desired) -> Result<SyncOutcome, AgentError> {
        let pod = match desired {
            Desired::Gone => {
                self.teardown(None, 0).await?;
                self.state = Lifecycle::Terminated;
                return Ok(SyncOutcome {
                    status: None,
                    finish_deletion: false,
                    requeue: IDLE_RESYNC,
                    done: true,
                    steady: false,
                });
            }
            Desired::Pod(pod) => pod.clone(),
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.teardown(Some(&pod), spec::grace_seconds(&pod)).await?;
            self.state = Lifecycle::Terminated;
            return Ok(SyncOutcome {
                status: None,
                finish_deletion: true,
                requeue: IDLE_RESYNC,
                done: true,
                steady: false,
            });
        }
        let now = Instant::now();
        // Step until a state has acted on the runtime: a fresh worker adopts, runs the
        // sandbox and starts containers in one pass.
        loop {
            let state = std::mem::replace(&mut self.state, Lifecycle::Terminated);
            let (next, step_again) = match state {
                // On an error the state is put back, so the next pass retries the same step.
                Lifecycle::Adopting => match self.adopt(&pod).await {
                    Ok(next) => (next, true),
                    Err(e) => {
                        self.state = Lifecycle::Adopting;
                        return Err(e);
                    }
                },
                Lifecycle::NeedsSandbox { attempt } => {
                    let next = self.run_sandbox(&pod, attempt, now).await;
                    let up = matches!(next, Lifecycle::Running(_));
                    (next, up)
                }
                Lifecycle::Running(sb) => match self.sync_running(&pod, sb.clone(), now).await {
                    Ok(next) => (next, false),
                    Err(e) => {
                        self.state = Lifecycle::Running(sb);
                        return Err(e);
                    }
                },
                other => (other, false),
            };
            self.state = next;
            if !step_again {
                break;
            }
        }
        let status = self.build_status(&pod);
        let requeue = match self.state {
            Lifecycle::Completed(_) | Lifecycle::Terminated => IDLE_RESYNC,
            _ => ACTIVE_RESYNC,
        };
        let steady = matches!(self.state, Lifecycle::Running(_))
            && self.failure.is_none()
            && pod
                .spec
                .as_ref()
                .is_none_or(|s| s.active_deadline_seconds.is_none())
            && self
                .containers
                .iter()
                .chain(self.init.iter().filter(|s| s.sidecar))
                .all(|s| s.running() && s.started && s.waiting.is_none());
        Ok(SyncOutcome {
            status,
            finish_deletion: false,
            requeue,
            done: false,
            steady,
        })
    }

    /// Finds what an earlier run of the agent left: the newest ready sandbox of this pod and
    /// its containers, newest attempt per name.
    async fn adopt(&mut self, pod: &Pod) -> Result<Lifecycle, AgentError> {
        let filter = v1::PodSandboxFilter {
            label_selector: HashMap::from([(cri::LABEL_POD_UID.to_owned(), self.uid.clone())]),
            ..Default::default()
        };
        let mut sandboxes = self.cri.list_pod_sandbox(filter).await?;
        sandboxes.sort_by_key(|s| s.metadata.as_ref().map_or(0, |m| m.attempt));
        let next_attempt = sandboxes
            .last()
            .and_then(|s| s.metadata.as_ref())
            .map_or(0, |m| m.attempt + 1);
        let ready = sandboxes
            .iter()
            .rev()
            .find(|s| s.state() == v1::PodSandboxState::SandboxReady);
        if is_terminal_phase(pod) {
            // A finished pod never runs again; its status is final and stays as written.
            let sb = ready.map(|s| Sandbox {
                id: s.id.clone(),
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                config: v1::PodSandboxConfig::default(),
                ips: vec![],
            });
            if let Some(sb) = &sb {
                self.ignore_not_found(self.cri.stop_pod_sandbox(&sb.id).await)?;
            }
            return Ok(Lifecycle::Completed(sb));
        }
        let Some(ready) = ready else {
            return Ok(Lifecycle::NeedsSandbox {
                attempt: next_attempt,
            });
        };
        let attempt = ready.metadata.as_ref().map_or(0, |m| m.attempt);
        let config = self.sandbox_config(pod, attempt)?;
        let mut containers = self
            .cri
            .list_containers(v1::ContainerFilter {
                pod_sandbox_id: ready.id.clone(),
                ..Default::default()
            })
            .await?;
        containers.sort_by_key(|c| c.metadata.as_ref().map_or(0, |m| m.attempt));
        for c in containers {
            let Some(meta) = c.metadata.as_ref() else {
                continue;
            };
            let Some(slot) = self
                .init
                .iter_mut()
                .chain(self.containers.iter_mut())
                .find(|s| s.name == meta.name)
            else {
                continue;
            };
            if let Some(old) = slot.current.take() {
                slot.previous = Some(old.id);
            }
            slot.current = Some(Attempt::new(c.id.clone()));
            slot.restart_count = meta.attempt;
            slot.created_any = true;
            slot.image_ref = c.image_ref.clone();
        }
        tracing::info!(pod = %self.key, sandbox = %ready.id, "adopted running sandbox");
        let ips = self.sandbox_ips(&ready.id).await?;
        Ok(Lifecycle::Running(Sandbox {
            id: ready.id.clone(),
            attempt,
            config,
            ips,
        }))
    }

    async fn sandbox_ips(&self, id: &str) -> Result<Vec<String>, AgentError> {
        let st = self.cri.pod_sandbox_status(id).await?;
        Ok(st
            .network
            .map(|n| {
                std::iter::once(n.ip)
                    .chain(n.additional_ips.into_iter().map(|p| p.ip))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn run_sandbox(&mut self, pod: &Pod, attempt: u32, now: Instant) -> Lifecycle {
        if self.sandbox_backoff.remaining(now).is_some() {
            return Lifecycle::NeedsSandbox { attempt };
        }
        // The kubelet mounts a pod's volumes before it makes the sandbox; until they are all
        // there the pod stays ContainerCreating, and each failure is a FailedMount event.
        if let Err(e) = self.setup_volumes(pod, &[]).await {
            self.sandbox_error = Some(e.to_string());
            return Lifecycle::NeedsSandbox { attempt };
        }
        let result = async {
            let config = self.sandbox_config(pod, attempt)?;
            // The kubelet, not the runtime, makes the pod's log directory.
            make_dir(&config.log_directory, &self.key).await;
            let id = self.cri.run_pod_sandbox(config.clone()).await?;
            let ips = self.sandbox_ips(&id).await?;
            Ok::<_, AgentError>(Sandbox {
                id,
                attempt,
                config,
                ips,
            })
        }
        .await;
        match result {
            Ok(sb) => {
                tracing::info!(pod = %self.key, sandbox = %sb.id, attempt, "sandbox running");
                self.sandbox_error = None;
                Lifecycle::Running(sb)
            }
            Err(e) => {
                tracing::warn!(pod = %self.key, error = %e, "run pod sandbox failed");
                self.sandbox_error = Some(e.to_string());
                self.sandbox_backoff.next(now);
                Lifecycle::NeedsSandbox {
                    attempt: attempt + 1,
                }
            }
        }
    }

    /// The sandbox runs: check it is still ready, then drive init containers in order and
    /// regular containers together.
    async fn sync_running(
        &mut self,
        pod: &Pod,
        sb: Sandbox,
        now: Instant,
    ) -> Result<Lifecycle, AgentError> {
        let ready = match self.cri.pod_sandbox_status(&sb.id).await {
            Ok(s) => s.state() == v1::PodSandboxState::SandboxReady,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        if !ready {
            // The kubelet's answer to a dead sandbox: kill what is left and start over in a
            // new one; every container restarts.
            tracing::warn!(pod = %self.key, sandbox = %sb.id, "sandbox not ready; recreating");
            emit(
                &self.node,
                pod,
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".to_owned(),
            );
            self.teardown(None, 0).await?;
            for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
                slot.current = None;
                slot.previous = None;
            }
            return Ok(Lifecycle::NeedsSandbox {
                attempt: sb.attempt + 1,
            });
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = RestartPolicy::from_spec(spec.restart_policy.as_deref());
        self.refresh_all(now).await?;
        // ConfigMaps, Secrets and the pod's own labels may have changed since the last pass.
        let _ = self.setup_volumes(pod, &sb.ips).await;
        self.follow_probes(pod, &spec, &sb);

        if self.past_deadline(pod, &spec, now) {
            if self.failure.is_none() {
                tracing::info!(pod = %self.key, "activeDeadlineSeconds passed; stopping the pod");
                emit(
                    &self.node,
                    pod,
                    None,
                    EventType::Normal,
                    "DeadlineExceeded",
                    DEADLINE_MESSAGE.to_owned(),
                );
                self.failure = Some(("DeadlineExceeded", DEADLINE_MESSAGE));
            }
            return self.complete(pod, sb, now).await;
        }

        self.kill_unhealthy(pod, &spec, policy, &sb, now).await?;
        let mains_done = self.mains_done(policy);

        // Init containers in order: an ordinary one runs to a zero exit; a sidecar
        // (restartPolicy Always) is started, kept running, and lets the next one start once it
        // has started.
        let mut init_done = true;
        let inits = spec.init_containers.clone().unwrap_or_default();
        for (i, c) in inits.iter().enumerate() {
            let Some(slot) = self.init.get(i) else {
                break;
            };
            if slot.sidecar {
                match slot.current.as_ref().map(Attempt::exit_code) {
                    _ if mains_done => {}
                    None => self.start(pod, c, i, true, &sb, now).await,
                    Some(Some(_)) => self.restart_or_back_off(pod, c, i, true, &sb, now).await,
                    Some(None) => {}
                }
                self.follow_probes(pod, &spec, &sb);
                if self.init.get(i).is_some_and(|s| s.running() && s.started) {
                    continue;
                }
                if self.init_passed() {
                    // Restarting after the pod ran: it holds nothing back.
                    continue;
                }
                init_done = false;
                break;
            }
            match slot.current.as_ref().map(|a| (a.state(), a.exit_code())) {
                Some((_, Some(0))) => continue,
                _ if self.init_passed() => continue,
                Some((v1::ContainerState::ContainerExited, Some(_))) => {
                    init_done = false;
                    // Init containers restart on failure unless the pod never restarts.
                    if policy != RestartPolicy::Never {
                        self.restart_or_back_off(pod, c, i, true, &sb, now).await;
                    }
                    break;
                }
                Some(_) => {
                    init_done = false;
                    break;
                }
                None => {
                    init_done = false;
                    self.start(pod, c, i, true, &sb, now).await;
                    break;
                }
            }
        }

        if init_done {
            for (i, c) in spec.containers.iter().enumerate() {
                let Some(slot) = self.containers.get(i) else {
                    break;
                };
                match slot.current.as_ref().map(|a| a.exit_code()) {
                    None => self.start(pod, c, i, false, &sb, now).await,
                    Some(Some(code)) if policy.restarts(code) => {
                        self.restart_or_back_off(pod, c, i, false, &sb, now).await
                    }
                    // Running, created, or exited for good.
                    Some(_) => {}
                }
            }
        } else {
            for slot in self.containers.iter_mut().filter(|s| s.current.is_none()) {
                slot.waiting = waiting("PodInitializing", None);
            }
        }
        self.follow_probes(pod, &spec, &sb);

        let phase = self.phase(pod);
        if phase == status::SUCCEEDED || phase == status::FAILED {
            tracing::info!(pod = %self.key, phase, "pod finished; stopping sandbox");
            return self.complete(pod, sb, now).await;
        }
        Ok(Lifecycle::Running(sb))
    }

    /// Reads the runtime's view of every container of the pod.
    async fn refresh_all(&mut self, now: Instant) -> Result<(), AgentError> {
        for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
            refresh(&*self.cri, slot, now).await?;
        }
        Ok(())
    }

    /// The pod is done (its containers finished, or the agent failed it): what still runs
    /// (sidecars, or everything past the deadline) is stopped, then the sandbox.
    async fn complete(
        &mut self,
        pod: &Pod,
        sb: Sandbox,
        now: Instant,
    ) -> Result<Lifecycle, AgentError> {
        self.probes.stop_all();
        self.stop_containers(pod, spec::grace_seconds(pod), &sb.ips)
            .await?;
        self.refresh_all(now).await?;
        for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
            slot.ready = false;
            slot.started = false;
        }
        self.ignore_not_found(self.cri.stop_pod_sandbox(&sb.id).await)?;
        Ok(Lifecycle::Completed(Some(sb)))
    }

    /// Whether a regular container has run: the pod got past its init containers once, and a
    /// sidecar or init container restarting later holds nothing back.
    fn init_passed(&self) -> bool {
        self.containers.iter().any(|s| s.created_any)
    }

    /// Whether every regular container has finished and will not run again: sidecars are then
    /// stopped rather than restarted.
    fn mains_done(&self, policy: RestartPolicy) -> bool {
        !self.containers.is_empty()
            && self.containers.iter().all(|s| {
                s.current
                    .as_ref()
                    .and_then(Attempt::exit_code)
                    .is_some_and(|code| !policy.restarts(code))
            })
    }

    /// Whether `activeDeadlineSeconds` has run out since the pod started on this node.
    fn past_deadline(&mut self, pod: &Pod, spec: &PodSpec, now: Instant) -> bool {
        let Some(limit) = spec.active_deadline_seconds.filter(|d| *d > 0) else {
            return false;
        };
        let deadline = *self.deadline.get_or_insert_with(|| {
            // The start time may come from an earlier run of the agent.
            let elapsed = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .or(self.start_time.as_ref())
                .map(|t| jiff::Timestamp::now().duration_since(t.0))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            let limit = Duration::from_secs(u64::try_from(limit).unwrap_or(u64::MAX));
            now + limit.saturating_sub(elapsed)
        });
        now >= deadline
    }

    /// The pod's IP as probes and hooks reach it.
    fn pod_ip(&self, pod: &Pod, ips: &[String]) -> String {
        prepare::addresses(&self.node, pod, ips)
            .pod_ips
            .first()
            .cloned()
            .unwrap_or_default()
    }

    /// Starts probing every running container attempt (stops for the others) and takes each
    /// container's started and ready state from its probes.
    fn follow_probes(&mut self, pod: &Pod, spec: &PodSpec, sb: &Sandbox) {
        let pod_ip = self.pod_ip(pod, &sb.ips);
        for (init, i, c) in all_containers(spec) {
            let node = self.node.clone();
            let uid = self.uid.clone();
            let Some(slot) = self.slot_mut(init, i) else {
                continue;
            };
            let probed = !init || slot.sidecar;
            let running = slot
                .current
                .as_ref()
                .filter(|a| a.running())
                .map(|a| (a.id.clone(), a.status.as_ref().map_or(0, |s| s.started_at)));
            let Some((id, started_ns)) = running.filter(|_| probed) else {
                let running = slot.running();
                slot.started = running && !probed;
                slot.ready = running && !probed;
                self.probes.stop(&c.name);
                continue;
            };
            let specs = match probe::specs_of(&c, &pod_ip) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(pod = %self.key, container = %c.name, error = %e, "probe not run");
                    Vec::new()
                }
            };
            let field = container_path(init, &c.name);
            let emit_node = node.clone();
            let emit_pod = pod.clone();
            let tx = node.wake.clone();
            self.probes.ensure(
                Target {
                    name: c.name.clone(),
                    id,
                    started: instant_of(started_ns),
                    specs,
                },
                node.actions.clone(),
                Arc::new(move |ty, reason, message| {
                    emit(
                        &emit_node,
                        &emit_pod,
                        Some(field.clone()),
                        ty,
                        reason,
                        message,
                    )
                }),
                Arc::new(move || {
                    let _ = tx.send(uid.clone());
                }),
            );
            let started = self.probes.started(&c.name);
            let ready = started && self.probes.ready(&c.name);
            if let Some(slot) = self.slot_mut(init, i) {
                slot.started = started;
                slot.ready = ready;
            }
        }
    }

    /// Kills running containers whose liveness or startup probe failed; the restart logic
    /// starts them again as their restart policy says.
    async fn kill_unhealthy(
        &mut self,
        pod: &Pod,
        spec: &PodSpec,
        policy: RestartPolicy,
        sb: &Sandbox,
        now: Instant,
    ) -> Result<(), AgentError> {
        let inits = spec.init_containers.clone().unwrap_or_default();
        let pairs: Vec<(bool, usize, &Container)> = inits
            .iter()
            .enumerate()
            .map(|(i, c)| (true, i, c))
            .chain(
                spec.containers
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (false, i, c)),
            )
            .collect();
        let pod_ip = self.pod_ip(pod, &sb.ips);
        for (init, i, c) in pairs {
            let Some(kind) = self.probes.failed(&c.name) else {
                continue;
            };
            let Some(id) = self
                .slot_mut(init, i)
                .and_then(|s| s.current.as_ref().filter(|a| a.running()))
                .map(|a| a.id.clone())
            else {
                continue;
            };
            let (what, probe) = match kind {
                Kind::Liveness => ("liveness", c.liveness_probe.as_ref()),
                _ => ("startup", c.startup_probe.as_ref()),
            };
            let message = if init {
                format!("Init container {} failed {what} probe", c.name)
            } else if policy == RestartPolicy::Never {
                format!("Container {} failed {what} probe", c.name)
            } else {
                format!(
                    "Container {} failed {what} probe, will be restarted",
                    c.name
                )
            };
            tracing::info!(pod = %self.key, container = %c.name, probe = what, "probe failed; killing");
            // A probe may have its own grace period; a deletion's would win, but this pod is
            // not being deleted.
            let grace = probe
                .and_then(|p| p.termination_grace_period_seconds)
                .or(spec.termination_grace_period_seconds)
                .unwrap_or(spec::DEFAULT_GRACE_SECONDS);
            let field = container_path(init, &c.name);
            let node = self.node.clone();
            hooks::stop(
                &*self.cri,
                &self.node.actions,
                Stop {
                    id: &id,
                    container: Some(c),
                    pod_ip: &pod_ip,
                    grace: Duration::from_secs(u64::try_from(grace).unwrap_or(0)),
                    message,
                },
                &|ty, reason, msg| emit(&node, pod, Some(field.clone()), ty, reason, msg),
            )
            .await?;
            self.probes.stop(&c.name);
            let cri = self.cri.clone();
            if let Some(slot) = self.slot_mut(init, i) {
                refresh(&*cri, slot, now).await?;
            }
        }
        Ok(())
    }

    /// Stops every container of the pod that runs, as the kubelet kills a pod: the regular
    /// (and ordinary init) containers together, each with its `Killing` event and preStop
    /// hook, then the sidecars in reverse order with what is left of the grace period.
    async fn stop_containers(
        &mut self,
        pod: &Pod,
        grace: i64,
        ips: &[String],
    ) -> Result<Vec<String>, AgentError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let pod_ip = self.pod_ip(pod, ips);
        let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let started = Instant::now();
        let mut first: Vec<(String, &Container, bool)> = Vec::new();
        let mut sidecars: Vec<(String, &Container)> = Vec::new();
        for (slot, c) in self.init.iter().zip(&inits) {
            if let Some(a) = slot.current.as_ref().filter(|a| a.running()) {
                if slot.sidecar {
                    sidecars.push((a.id.clone(), c));
                } else {
                    first.push((a.id.clone(), c, true));
                }
            }
        }
        for (slot, c) in self.containers.iter().zip(&spec.containers) {
            if let Some(a) = slot.current.as_ref().filter(|a| a.running()) {
                first.push((a.id.clone(), c, false));
            }
        }
        let (node, cri) = (&*self.node, &*self.cri);
        let mut stopped: Vec<String> = first.iter().map(|(id, _, _)| id.clone()).collect();
        stopped.extend(sidecars.iter().map(|(id, _)| id.clone()));
        let stops = first
            .into_iter()
            .map(|(id, c, init)| stop_container(cri, node, pod, &pod_ip, id, c, init, grace));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        for (id, c) in sidecars.into_iter().rev() {
            let left = grace.saturating_sub(started.elapsed());
            stop_container(cri, node, pod, &pod_ip, id, c, true, left).await?;
        }
        Ok(stopped)
    }

    fn slot_mut(&mut self, init: bool, i: usize) -> Option<&mut Slot> {
        if init {
            self.init.get_mut(i)
        } else {
            self.containers.get_mut(i)
        }
    }

    /// The container exited and its policy restarts it: restart now, or report
    /// `CrashLoopBackOff` while its back-off window is open (kubelet `doBackOff`).
    async fn restart_or_back_off(
        &mut self,
        pod: &Pod,
        c: &Container,
        i: usize,
        init: bool,
        sb: &Sandbox,
        now: Instant,
    ) {
        let key = self.key.clone();
        let uid = self.uid.clone();
        let Some(slot) = self.slot_mut(init, i) else {
            return;
        };
        let Some(exit_seen) = slot.current.as_ref().and_then(|a| a.exit_seen) else {
            return;
        };
        // A pending start error keeps its own reason until its retry.
        let start_error = matches!(slot.waiting.as_ref(), Some((r, _)) if r != "CrashLoopBackOff");
        if !start_error {
            if slot.crash_backoff.remaining_since(exit_seen, now).is_some() {
                let window = slot.crash_backoff.window().as_secs();
                let (ns, name) = key.split_once('/').unwrap_or(("", &key));
                slot.waiting = waiting(
                    "CrashLoopBackOff",
                    Some(format!(
                        "back-off {window}s restarting failed container={} pod={name}_{ns}({uid})",
                        slot.name
                    )),
                );
                return;
            }
            slot.crash_backoff.next(exit_seen);
        }
        self.start(pod, c, i, init, sb, now).await;
    }

    /// Pulls the image as the policy says, then creates and starts the next attempt. Failures
    /// become the slot's waiting reason; nothing here fails the pass.
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        i: usize,
        init: bool,
        sb: &Sandbox,
        now: Instant,
    ) {
        let cri = self.cri.clone();
        let node = self.node.clone();
        let key = self.key.clone();
        let Some(slot) = self.slot_mut(init, i) else {
            return;
        };

        // A failed create/start retries when its back-off window closes.
        if matches!(slot.waiting.as_ref(), Some((r, _)) if r == "CreateContainerError" || r == "RunContainerError" || r == "CreateContainerConfigError" || r == "PostStartHookError")
            && slot.crash_backoff.remaining(now).is_some()
        {
            return;
        }
        let image = c.image.clone().unwrap_or_default();
        let field = container_path(init, &c.name);
        let emit_image = |ty, reason: &'static str, message| {
            emit(&node, pod, Some(field.clone()), ty, reason, message)
        };
        match ensure_image(
            &*cri,
            &node,
            pod,
            &mut slot.pull,
            c,
            &sb.config,
            now,
            &emit_image,
        )
        .await
        {
            Ok(image_ref) => slot.image_ref = image_ref,
            Err((reason, message)) => {
                if reason == "ImagePullBackOff" {
                    tracing::debug!(pod = %key, container = %c.name, %image, reason, "image not ready");
                } else {
                    tracing::warn!(pod = %key, container = %c.name, %image, reason, %message, "image not ready");
                }
                slot.waiting = waiting(reason, Some(message));
                return;
            }
        }
        let attempt = if slot.created_any {
            slot.restart_count + 1
        } else {
            0
        };
        let prepared =
            prepare::container(&*cri, &node, pod, c, attempt, &sb.ips, &self.volumes).await;
        let Some(slot) = self.slot_mut(init, i) else {
            return;
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let f = Failed::new(&node, pod, field, now);
                f.start_failed(slot, "CreateContainerConfigError", e.to_string());
                return;
            }
        };
        let config = prepared.config;
        make_dir(&format!("{}/{}", sb.config.log_directory, c.name), &key).await;
        let id = match cri
            .create_container(&sb.id, config, sb.config.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let f = Failed::new(&node, pod, field, now);
                f.start_failed(slot, "CreateContainerError", e.to_string());
                return;
            }
        };
        emit(
            &node,
            pod,
            Some(field.clone()),
            EventType::Normal,
            "Created",
            "Container created".to_owned(),
        );
        if let Err(e) = cri.start_container(&id).await {
            let _ = cri.remove_container(&id).await;
            let f = Failed::new(&node, pod, field, now);
            f.start_failed(slot, "RunContainerError", e.to_string());
            return;
        }
        emit(
            &node,
            pod,
            Some(field.clone()),
            EventType::Normal,
            "Started",
            "Container started".to_owned(),
        );
        // postStart runs before anything else happens to the pod, as in the kubelet; if it
        // fails, the container is killed and restarted under its policy.
        let pod_ip = prepare::addresses(&node, pod, &sb.ips)
            .pod_ips
            .first()
            .cloned()
            .unwrap_or_default();
        let emit_c =
            |ty, reason: &'static str, msg| emit(&node, pod, Some(field.clone()), ty, reason, msg);
        let hook = hooks::post_start(node.actions.as_ref(), &id, c, &pod_ip, &emit_c).await;
        let hook_error = match hook {
            Ok(()) => None,
            Err(message) => {
                let grace = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(spec::DEFAULT_GRACE_SECONDS);
                let stopped = hooks::stop(
                    &*cri,
                    &node.actions,
                    Stop {
                        id: &id,
                        container: Some(c),
                        pod_ip: &pod_ip,
                        grace: Duration::from_secs(u64::try_from(grace).unwrap_or(0)),
                        message: "FailedPostStartHook".to_owned(),
                    },
                    &emit_c,
                )
                .await;
                if let Err(e) = stopped {
                    tracing::warn!(pod = %key, container = %c.name, error = %e, "stop after postStart failure failed");
                }
                Some(message)
            }
        };
        let Some(slot) = self.slot_mut(init, i) else {
            return;
        };
        tracing::info!(pod = %key, container = %c.name, id = %id, attempt, "container started");
        // The attempt before the one that just ended is no longer needed for `previous` logs.
        if let Some(old) = slot.previous.take()
            && let Err(e) = cri.remove_container(&old).await
            && !e.is_not_found()
        {
            tracing::warn!(pod = %key, container = %c.name, error = %e, "remove old container failed");
        }
        if let Some(old) = slot.current.take() {
            slot.last_terminated = terminated_of(&old, &node.runtime_name);
            slot.previous = Some(old.id);
        }
        let mut attempt_rec = Attempt::new(id);
        attempt_rec.message_file = prepared.message_file;
        if let Ok(s) = cri.container_status(&attempt_rec.id).await {
            attempt_rec.status = Some(s);
        }
        slot.current = Some(attempt_rec);
        slot.restart_count = attempt;
        slot.created_any = true;
        slot.waiting = None;
        if let Some(message) = hook_error {
            slot.waiting = waiting("PostStartHookError", Some(message));
            slot.crash_backoff.next(now);
        }
    }

    fn ignore_not_found(&self, r: Result<(), AgentError>) -> Result<(), AgentError> {
        match r {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops and removes every container and sandbox of this pod, found by label as well as
    /// from memory, so a teardown after an agent restart misses nothing. With the pod, what
    /// runs is stopped as the kubelet kills a pod (events, preStop, sidecars last). Idempotent.
    async fn teardown(&mut self, pod: Option<&Pod>, grace: i64) -> Result<(), AgentError> {
        self.probes.stop_all();
        let stopped = match pod {
            Some(pod) => {
                let ips = match &self.state {
                    Lifecycle::Running(sb) => sb.ips.clone(),
                    _ => Vec::new(),
                };
                self.stop_containers(pod, grace, &ips).await?
            }
            None => Vec::new(),
        };
        let by_uid = HashMap::from([(cri::LABEL_POD_UID.to_owned(), self.uid.clone())]);
        let mut ids: Vec<String> = self
            .init
            .iter()
            .chain(&self.containers)
            .flat_map(|s| {
                s.current
                    .iter()
                    .map(|a| a.id.clone())
                    .chain(s.previous.clone())
            })
            .collect();
        for c in self
            .cri
            .list_containers(v1::ContainerFilter {
                label_selector: by_uid.clone(),
                ..Default::default()
            })
            .await?
        {
            if !ids.contains(&c.id) {
                ids.push(c.id);
            }
        }
        // Stop concurrently: each stop may take the whole grace period.
        let stops = ids
            .iter()
            .filter(|id| !stopped.contains(id))
            .map(|id| self.cri.stop_container(id, grace));
        for r in futures::future::join_all(stops).await {
            self.ignore_not_found(r)?;
        }
        for id in &ids {
            self.ignore_not_found(self.cri.remove_container(id).await)?;
        }
        let mut sandboxes: Vec<String> = self
            .cri
            .list_pod_sandbox(v1::PodSandboxFilter {
                label_selector: by_uid,
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if let Lifecycle::Running(sb) | Lifecycle::Completed(Some(sb)) = &self.state
            && !sandboxes.contains(&sb.id)
        {
            sandboxes.push(sb.id.clone());
        }
        for id in &sandboxes {
            self.ignore_not_found(self.cri.stop_pod_sandbox(id).await)?;
            self.ignore_not_found(self.cri.remove_pod_sandbox(id).await)?;
        }
        for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
            slot.current = None;
            slot.previous = None;
        }
        if !ids.is_empty() || !sandboxes.is_empty() {
            tracing::info!(pod = %self.key, containers = ids.len(), sandboxes = sandboxes.len(), "pod torn down");
        }
        // Volumes go once nothing runs that could use them.
        self.node.objects.release(&self.uid);
        self.node.volumes.teardown(&self.uid)?;
        self.volumes = PodVolumes::default();
        Ok(())
    }

    /// Sets up (or refreshes) the pod's volumes; a failure is a FailedMount event.
    async fn setup_volumes(&mut self, pod: &Pod, ips: &[String]) -> Result<(), AgentError> {
        let addresses = prepare::addresses(&self.node, pod, ips);
        let ctx = VolumeContext {
            objects: self.node.objects.as_ref(),
            claims: self.node.claims.as_ref(),
            addresses: &addresses,
            allocatable: self.node.allocatable,
        };
        let result = self.node.volumes.setup(pod, ctx, &mut self.volumes).await;
        if let Err(e) = &result {
            tracing::warn!(pod = %self.key, error = %e, "volume setup failed");
            emit(
                &self.node,
                pod,
                None,
                EventType::Warning,
                "FailedMount",
                e.to_string(),
            );
        }
        Ok(result?)
    }

    /// What the worker observed of the pod, for its phase and status.
    fn observed<'a>(&'a self, spec: &'a PodSpec) -> status::Observed<'a> {
        let sandbox = match &self.state {
            Lifecycle::Running(sb) => Some(sb),
            Lifecycle::Completed(sb) => sb.as_ref(),
            _ => None,
        };
        let host_ip = self.node.node_ip.to_string();
        let pod_ips = if spec::host_network(spec) {
            vec![host_ip.clone()]
        } else {
            sandbox.map(|sb| sb.ips.clone()).unwrap_or_default()
        };
        status::Observed {
            spec,
            init: &self.init,
            containers: &self.containers,
            runtime: &self.node.runtime_name,
            sandbox_error: self.sandbox_error.as_deref(),
            sandbox_ready: matches!(self.state, Lifecycle::Running(_)),
            pod_ips,
            host_ip,
            failure: self.failure,
        }
    }

    fn phase(&self, pod: &Pod) -> &'static str {
        let spec = pod.spec.clone().unwrap_or_default();
        self.observed(&spec).phase()
    }

    /// The pod status the kubelet would write now, or `None` when the pod's status is not
    /// this worker's to change (a finished pod's status is final).
    fn build_status(&mut self, pod: &Pod) -> Option<PodStatus> {
        if is_terminal_phase(pod)
            || matches!(self.state, Lifecycle::Adopting | Lifecycle::Terminated)
        {
            return None;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        let start_time = self.start_time.get_or_insert_with(|| now.clone()).clone();
        // The kubelet's own conditions as this worker last wrote them; the others (readiness
        // gates, DisruptionTarget, PodScheduled) as the pod has them now.
        const OWN: [&str; 4] = [
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
        ];
        let mut previous: Vec<PodCondition> = self
            .last_conditions
            .iter()
            .filter(|c| OWN.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        previous.extend(
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| !OWN.contains(&c.type_.as_str()))
                .cloned(),
        );
        // A pod whose PodScheduled was never written (bound directly) keeps the one this
        // worker added first, with its time.
        if !previous.iter().any(|c| c.type_ == "PodScheduled")
            && let Some(c) = self
                .last_conditions
                .iter()
                .find(|c| c.type_ == "PodScheduled")
        {
            previous.push(c.clone());
        }
        let status = self.observed(&spec).assemble(&previous, start_time, &now);
        self.last_conditions = status.conditions.clone().unwrap_or_default();
        Some(status)
    }
}

/// Every container of the pod spec with whether it is an init container and its index.
fn all_containers(spec: &PodSpec) -> Vec<(bool, usize, Container)> {
    let init = spec.init_containers.iter().flatten().cloned().enumerate();
    let regular = spec.containers.iter().cloned().enumerate();
    init.map(|(i, c)| (true, i, c))
        .chain(regular.map(|(i, c)| (false, i, c)))
        .collect()
}

/// Stops one container of the pod with `Stopping container X` (see `hooks::stop`).
#[allow(clippy::too_many_arguments)]
async fn stop_container<C: Cri>(
    cri: &C,
    node: &NodeContext,
    pod: &Pod,
    pod_ip: &str,
    id: String,
    c: &Container,
    init: bool,
    grace: Duration,
) -> Result<(), AgentError> {
    let field = container_path(init, &c.name);
    hooks::stop(
        cri,
        &node.actions,
        Stop {
            id: &id,
            container: Some(c),
            pod_ip,
            grace,
            message: format!("Stopping container {}", c.name),
        },
        &|ty, reason, msg| emit(node, pod, Some(field.clone()), ty, reason, msg),
    )
    .await
}

/// A CRI start time (nanoseconds since the epoch) as an instant of this process's clock.
fn instant_of(started_ns: i64) -> Instant {
    let now = Instant::now();
    let age = i128::from(started_ns)
        .checked_sub(0)
        .filter(|n| *n > 0)
        .and_then(|n| jiff::Timestamp::from_nanosecond(n).ok())
        .map(|t| jiff::Timestamp::now().duration_since(t))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// A container that could not be started: the kubelet's `Failed` event (`Error: ...`), the
/// waiting reason with the message, and the back-off before the next try.
struct Failed<'a> {
    node: &'a NodeContext,
    pod: &'a Pod,
    field: String,
    now: Instant,
}

impl<'a> Failed<'a> {
    fn new(node: &'a NodeContext, pod: &'a Pod, field: String, now: Instant) -> Self {
        Failed {
            node,
            pod,
            field,
            now,
        }
    }

    fn start_failed(self, slot: &mut Slot, reason: &str, message: String) {
        tracing::warn!(pod = %spec::pod_key(self.pod), container = %slot.name, reason, error = %message, "container not started");
        emit(
            self.node,
            self.pod,
            Some(self.field),
            EventType::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        slot.waiting = waiting(reason, Some(message));
        slot.crash_backoff.next(self.now);
    }
}

/// Records an event about the pod (or one of its containers, by field path).
fn emit(
    node: &NodeContext,
    pod: &Pod,
    field: Option<String>,
    ty: EventType,
    reason: &str,
    message: String,
) {
    node.events.record(EventRecord {
        object: pod_ref(pod, field),
        ty,
        reason: reason.to_owned(),
        message,
    });
}

/// Creates a log directory; a failure is the runtime's to report when it opens the log.
async fn make_dir(path: &str, key: &str) {
    if path.is_empty() {
        return;
    }
    if let Err(e) = tokio::fs::create_dir_all(path).await {
        tracing::warn!(pod = %key, path, error = %e, "create log directory failed");
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
