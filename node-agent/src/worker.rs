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
use crate::images::ensure_image;
use crate::pod_files::with_hosts_file;
use crate::pull::{PullRecords, PullSecrets};
use crate::registry::PodEntry;
use crate::slot::{Attempt, Slot, refresh, terminated_of};
use crate::spec;
use crate::status::{self, RestartPolicy};
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

/// What the node knows that every pod worker needs.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub pod_log_dir: PathBuf,
    /// Per-pod files the agent makes (`<pods_dir>/<uid>/etc-hosts`).
    pub pods_dir: PathBuf,
    /// `<runtime_name>` from CRI `Version`, the scheme of `containerID`s.
    pub runtime_name: String,
    /// Pull secrets and what pulled each image.
    pub pulls: Arc<Pulls>,
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
}

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
    pub fn new(cri: Arc<C>, node: Arc<NodeContext>, pod: &Pod) -> Self {
        let slots = |cs: Option<&Vec<Container>>| {
            cs.into_iter()
                .flatten()
                .map(|c| Slot::new(&c.name))
                .collect()
        };
        let spec = pod.spec.as_ref();
        PodWorker {
            cri,
            node,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            key: spec::pod_key(pod),
            state: Lifecycle::Adopting,
            init: slots(spec.and_then(|s| s.init_containers.as_ref())),
            containers: slots(spec.map(|s| &s.containers)),
            sandbox_error: None,
            sandbox_backoff: Backoff::default(),
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
                self.teardown(0).await?;
                self.state = Lifecycle::Terminated;
                return Ok(SyncOutcome {
                    status: None,
                    finish_deletion: false,
                    requeue: IDLE_RESYNC,
                    done: true,
                });
            }
            Desired::Pod(pod) => pod.clone(),
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.teardown(spec::grace_seconds(&pod)).await?;
            self.state = Lifecycle::Terminated;
            return Ok(SyncOutcome {
                status: None,
                finish_deletion: true,
                requeue: IDLE_RESYNC,
                done: true,
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
        Ok(SyncOutcome {
            status,
            finish_deletion: false,
            requeue,
            done: false,
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
        let config =
            spec::sandbox_config(pod, &self.node.node_name, &self.node.pod_log_dir, attempt)?;
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
        let result = async {
            let config =
                spec::sandbox_config(pod, &self.node.node_name, &self.node.pod_log_dir, attempt)?;
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
            self.teardown(0).await?;
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
        for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
            refresh(&*self.cri, slot, now).await?;
        }

        // Init containers: one at a time, in order, each to a zero exit.
        let mut init_done = true;
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            let Some(slot) = self.init.get_mut(i) else {
                break;
            };
            match slot.current.as_ref().map(|a| (a.state(), a.exit_code())) {
                Some((_, Some(0))) => continue,
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

        let phase = self.phase(pod);
        if phase == status::SUCCEEDED || phase == status::FAILED {
            tracing::info!(pod = %self.key, phase, "pod finished; stopping sandbox");
            self.ignore_not_found(self.cri.stop_pod_sandbox(&sb.id).await)?;
            return Ok(Lifecycle::Completed(Some(sb)));
        }
        Ok(Lifecycle::Running(sb))
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
        if matches!(slot.waiting.as_ref(), Some((r, _)) if r == "CreateContainerError" || r == "RunContainerError" || r == "CreateContainerConfigError")
            && slot.crash_backoff.remaining(now).is_some()
        {
            return;
        }
        let image = c.image.clone().unwrap_or_default();
        match ensure_image(&*cri, &node, pod, &mut slot.pull, c, &sb.config, now).await {
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
        // Only asked when the pod cares: one more CRI call per start otherwise.
        let checked = if spec::run_as_non_root(pod, c) {
            match cri.image_status(&image).await {
                Ok(Some(img)) => {
                    spec::verify_run_as_non_root(pod, c, img.uid.map(|u| u.value), &img.username)
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        let config = match checked
            .and_then(|()| spec::container_config(pod, c, &node.node_name, attempt))
            .and_then(|cfg| with_hosts_file(&node, pod, &sb.ips, cfg))
        {
            Ok(cfg) => cfg,
            Err(e) => {
                slot.waiting = waiting("CreateContainerConfigError", Some(e.to_string()));
                slot.crash_backoff.next(now);
                return;
            }
        };
        make_dir(&format!("{}/{}", sb.config.log_directory, c.name), &key).await;
        let id = match cri
            .create_container(&sb.id, config, sb.config.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(pod = %key, container = %c.name, error = %e, "create container failed");
                slot.waiting = waiting("CreateContainerError", Some(e.to_string()));
                slot.crash_backoff.next(now);
                return;
            }
        };
        if let Err(e) = cri.start_container(&id).await {
            tracing::warn!(pod = %key, container = %c.name, error = %e, "start container failed");
            let _ = cri.remove_container(&id).await;
            slot.waiting = waiting("RunContainerError", Some(e.to_string()));
            slot.crash_backoff.next(now);
            return;
        }
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
        if let Ok(s) = cri.container_status(&attempt_rec.id).await {
            attempt_rec.status = Some(s);
        }
        slot.current = Some(attempt_rec);
        slot.restart_count = attempt;
        slot.created_any = true;
        slot.waiting = None;
    }

    fn ignore_not_found(&self, r: Result<(), AgentError>) -> Result<(), AgentError> {
        match r {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops and removes every container and sandbox of this pod, found by label as well as
    /// from memory, so a teardown after an agent restart misses nothing. Idempotent.
    async fn teardown(&mut self, grace: i64) -> Result<(), AgentError> {
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
        let stops = ids.iter().map(|id| self.cri.stop_container(id, grace));
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
        Ok(())
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
        let status = self
            .observed(&spec)
            .assemble(&self.last_conditions, start_time, &now);
        self.last_conditions = status.conditions.clone().unwrap_or_default();
        Some(status)
    }
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
