//! The pod dispatcher: watches the pods bound to this node with the kube-rs watcher, keeps one
//! worker task per pod UID (each gets the newest Pod through a `watch` channel, so the latest
//! spec wins), writes their status and finishes deletions, and reaps sandboxes of pods that no
//! longer exist here.
//!
//! Level-triggered (STYLE.md §4): every worker re-syncs on its own timer, the dispatcher pokes
//! them all periodically, and a re-list (`Init` … `InitDone`) retires workers whose pods vanished
//! while the watch was down.

use crate::AgentError;
use crate::backoff::Backoff;
use crate::cri::{self, Cri, v1};
use crate::registry::PodRegistry;
use crate::worker::{Desired, NodeContext, PodWorker};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often orphaned sandboxes are looked for, and every worker is poked while the runtime's
/// event stream is down (with it up, each worker's own requeue is the safety net: 60 s for a
/// steady pod, as the kubelet's evented PLEG relists rarely; poking 100 steady pods every 10 s
/// cost more than their probes).
const RESYNC: Duration = Duration::from_secs(10);
/// How long workers get to finish their current step at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Wait before subscribing again to the runtime's events after the stream broke.
const EVENTS_RETRY: Duration = Duration::from_secs(5);

/// Everything a pod worker task needs besides its pod.
struct Shared<C> {
    client: kube::Client,
    cri: Arc<C>,
    node: Arc<NodeContext>,
    registry: PodRegistry,
    /// Whether the runtime's container events are being received now: only then may steady
    /// pods wait for them instead of re-syncing every second.
    events_live: Arc<AtomicBool>,
}

/// Runs the pod watch and the workers until `cancel`.
pub async fn run<C: Cri>(
    client: kube::Client,
    cri: Arc<C>,
    node: Arc<NodeContext>,
    registry: PodRegistry,
    mut object_changes: tokio::sync::mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let shared = Arc::new(Shared {
        client: client.clone(),
        cri,
        node: node.clone(),
        registry,
        events_live: Arc::new(AtomicBool::new(false)),
    });
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.node_name));
    let stream = watcher(Api::<Pod>::all(client), config).default_backoff();
    let mut stream = std::pin::pin!(stream);

    let mut workers: HashMap<String, watch::Sender<Desired>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    // UIDs seen since the watcher's last `Init`; `None` outside a re-list.
    let mut relisting: Option<HashSet<String>> = None;
    let mut listed_once = false;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let worker_cancel = cancel.child_token();
    // The kubelet's evented PLEG: a container's exit wakes its pod's worker at once, rather
    // than at its next re-sync.
    let mut events = RuntimeEvents {
        live: shared.events_live.clone(),
        ..RuntimeEvents::default()
    };

    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            // A ConfigMap or Secret the pod reads changed: its volumes are rewritten.
            Some(uid) = object_changes.recv() => {
                if let Some(tx) = workers.get(&uid) {
                    tx.send_modify(|_| {});
                }
            }
            wake = events.next(&*shared.cri) => match wake {
                Wake::Pod(uid) => {
                    if let Some(tx) = workers.get(&uid) {
                        tx.send_modify(|_| {});
                    }
                }
                Wake::All => {
                    for tx in workers.values() {
                        tx.send_modify(|_| {});
                    }
                }
            },
            Some(done) = tasks.join_next() => match done {
                Ok(uid) => { workers.remove(&uid); }
                Err(e) => tracing::error!(error = %e, "pod worker task failed"),
            },
            event = stream.next() => match event {
                None => break Err(AgentError::Watch {
                    node: node.node_name.clone(),
                    message: "watch stream ended".to_owned(),
                }),
                // The watcher retries with back-off; a failed attempt is only worth a log line.
                Some(Err(e)) => tracing::warn!(node = %node.node_name, error = %e, "pod watch error"),
                Some(Ok(watcher::Event::Init)) => relisting = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (relisting.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    dispatch(&shared, &mut workers, &mut tasks, &worker_cancel, pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let seen = relisting.take().unwrap_or_default();
                    for (uid, tx) in &workers {
                        if !seen.contains(uid) {
                            tx.send_replace(Desired::Gone);
                        }
                    }
                    if !listed_once {
                        tracing::info!(node = %node.node_name, pods = seen.len(), "pod list synced");
                    }
                    listed_once = true;
                    reap_orphans(&*shared.cri, &node.node_name, &workers).await;
                }
                Some(Ok(watcher::Event::Apply(pod))) => {
                    dispatch(&shared, &mut workers, &mut tasks, &worker_cancel, pod);
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        tx.send_replace(Desired::Gone);
                    }
                }
            },
            _ = resync.tick() => {
                if !shared.events_live.load(Ordering::Relaxed) {
                    for tx in workers.values() {
                        // Marks the channel changed without changing the pod: the worker re-syncs.
                        tx.send_modify(|_| {});
                    }
                }
                if listed_once {
                    reap_orphans(&*shared.cri, &node.node_name, &workers).await;
                }
            }
        }
    };

    worker_cancel.cancel();
    drop(workers);
    // Containers belong to the runtime and keep running; workers only finish the step at hand.
    if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    result
}

/// The runtime's event stream, subscribed again when it breaks, and quiet for a runtime that
/// has none (checked once: a runtime is not expected to gain events while the agent runs).
#[derive(Default)]
struct RuntimeEvents {
    stream: Option<cri::PodEvents>,
    /// No subscribing again before this (set when a stream or a subscription failed).
    retry_at: Option<Instant>,
    subscribed_before: bool,
    unsupported: bool,
    /// Set while a stream is up.
    live: Arc<AtomicBool>,
}

/// What an event asks of the pod loop.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    /// Re-sync the pod with this UID.
    Pod(String),
    /// Re-sync every pod: events may have been missed while the stream was down.
    All,
}

impl RuntimeEvents {
    /// What to wake next. Cancel-safe: the loop drops the call whenever another branch wins;
    /// no received event is lost and the retry delay is kept across calls.
    async fn next<C: Cri>(&mut self, cri: &C) -> Wake {
        loop {
            if self.unsupported {
                return std::future::pending().await;
            }
            if let Some(stream) = self.stream.as_mut() {
                match stream.next().await {
                    Some(Ok(uid)) => return Wake::Pod(uid),
                    Some(Err(e)) => tracing::warn!(error = %e, "container events stream failed"),
                    None => tracing::warn!("the runtime ended the container events stream"),
                }
                self.live.store(false, Ordering::Relaxed);
                self.stream = None;
                self.retry_at = Some(Instant::now() + EVENTS_RETRY);
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            match cri.pod_events().await {
                Ok(Some(stream)) => {
                    self.stream = Some(stream);
                    self.live.store(true, Ordering::Relaxed);
                    if std::mem::replace(&mut self.subscribed_before, true) {
                        return Wake::All;
                    }
                }
                Ok(None) => {
                    tracing::info!(
                        "the runtime has no container events; pod status follows re-syncs"
                    );
                    self.unsupported = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to container events");
                    self.retry_at = Some(Instant::now() + EVENTS_RETRY);
                }
            }
        }
    }
}

fn dispatch<C: Cri>(
    shared: &Arc<Shared<C>>,
    workers: &mut HashMap<String, watch::Sender<Desired>>,
    tasks: &mut JoinSet<String>,
    cancel: &CancellationToken,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(&shared.node.node_name) {
        return;
    }
    let desired = Desired::Pod(Arc::new(pod));
    match workers.get(&uid) {
        Some(tx) => {
            tx.send_replace(desired);
        }
        None => {
            let (tx, rx) = watch::channel(desired);
            workers.insert(uid.clone(), tx);
            tasks.spawn(run_worker(shared.clone(), uid, rx, cancel.clone()));
        }
    }
}

/// One pod's task: sync, write status when it changed, finish deletion, wait for the next
/// pod version or the requeue timer. Returns the pod UID when done.
async fn run_worker<C: Cri>(
    shared: Arc<Shared<C>>,
    uid: String,
    mut rx: watch::Receiver<Desired>,
    cancel: CancellationToken,
) -> String {
    let Desired::Pod(first) = rx.borrow_and_update().clone() else {
        return uid;
    };
    let namespace = first
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = first.metadata.name.clone().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let mut worker = PodWorker::new(shared.cri.clone(), shared.node.clone(), &first);
    // What the API server holds, so an unchanged status is not written again.
    let mut written = first
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    let mut error_backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    tracing::info!(pod = %key, uid = %uid, "pod worker started");

    loop {
        let desired = rx.borrow_and_update().clone();
        let requeue;
        let mut finished = false;
        match worker.sync(&desired).await {
            Ok(outcome) => {
                shared
                    .registry
                    .set(&namespace, &name, worker.registry_entry());
                if let Some(status) = outcome.status
                    && let Ok(value) = serde_json::to_value(&status)
                    && written.as_ref() != Some(&value)
                {
                    let patch = serde_json::json!({ "status": value });
                    match api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::debug!(pod = %key, phase = ?status.phase, "status written");
                            written = Some(value);
                        }
                        Err(e) => tracing::warn!(pod = %key, error = %e, "write pod status failed"),
                    }
                }
                finished = outcome.done;
                if outcome.finish_deletion {
                    finished = finish_deletion(&api, &name, &uid, &key).await;
                }
                requeue = if outcome.steady && shared.events_live.load(Ordering::Relaxed) {
                    crate::worker::STEADY_RESYNC
                } else {
                    outcome.requeue
                };
            }
            Err(e) => {
                error_backoff.next(Instant::now());
                requeue = error_backoff.window();
                tracing::warn!(pod = %key, error = %e, retry_in = ?requeue, "pod sync failed");
            }
        }
        if finished {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(requeue) => {}
        }
    }
    shared.registry.remove(&namespace, &name, &uid);
    tracing::info!(pod = %key, uid = %uid, "pod worker stopped");
    uid
}

/// Deletes the terminated pod with grace 0 and a UID precondition: the API server removes a
/// pod that has a deletionTimestamp when its node does this. Returns whether it is done.
async fn finish_deletion(api: &Api<Pod>, name: &str, uid: &str, key: &str) -> bool {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %key, "pod deleted");
            true
        }
        Err(e) => {
            let e = AgentError::kube("delete", "pod", key, e);
            // Gone already, or a new pod took the name (UID precondition failed): nothing left.
            if e.is_not_found() || e.is_conflict() {
                true
            } else {
                tracing::warn!(pod = %key, error = %e, "finish pod deletion failed");
                false
            }
        }
    }
}

/// Stops and removes sandboxes this node made for pods it no longer has a worker for
/// (deleted while the agent was down, or bound elsewhere).
async fn reap_orphans<C: Cri>(
    cri: &C,
    node: &str,
    workers: &HashMap<String, watch::Sender<Desired>>,
) {
    let sandboxes = match cri.list_pod_sandbox(v1::PodSandboxFilter::default()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "list sandboxes for cleanup failed");
            return;
        }
    };
    for sb in sandboxes {
        let Some(uid) = sb.labels.get(cri::LABEL_POD_UID) else {
            continue;
        };
        // Another agent sharing this runtime owns sandboxes labelled with its node.
        if sb.labels.get(cri::LABEL_NODE).is_some_and(|n| n != node) || workers.contains_key(uid) {
            continue;
        }
        tracing::info!(sandbox = %sb.id, uid = %uid, "removing sandbox of a pod that is gone");
        if let Err(e) = remove_sandbox(cri, &sb.id).await {
            tracing::warn!(sandbox = %sb.id, error = %e, "remove orphaned sandbox failed");
        }
    }
}

async fn remove_sandbox<C: Cri>(cri: &C, id: &str) -> Result<(), AgentError> {
    let ok = |r: Result<(), AgentError>| match r {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    };
    let containers = cri
        .list_containers(v1::ContainerFilter {
            pod_sandbox_id: id.to_owned(),
            ..Default::default()
        })
        .await?;
    for c in &containers {
        ok(cri.stop_container(&c.id, 0).await)?;
        ok(cri.remove_container(&c.id).await)?;
    }
    ok(cri.stop_pod_sandbox(id).await)?;
    ok(cri.remove_pod_sandbox(id).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeCri;

    /// Sends `uid` on `tx` after `after`: the subscriber is waiting by then.
    fn send_later(tx: tokio::sync::broadcast::Sender<String>, uid: &str, after: Duration) {
        let uid = uid.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(uid);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn runtime_events_name_pods_and_resubscribe_after_a_break() {
        let fake = FakeCri::new();
        let (tx, _) = tokio::sync::broadcast::channel(8);
        fake.state().events = Some(tx.clone());
        let mut events = RuntimeEvents::default();
        let within = Duration::from_secs(60);
        send_later(tx, "uid-1", Duration::from_millis(10));
        let wake = tokio::time::timeout(within, events.next(&fake)).await;
        assert_eq!(wake.expect("an event"), Wake::Pod("uid-1".to_owned()));

        // The runtime restarts: the old stream ends, and a new one is subscribed to.
        let (tx2, _) = tokio::sync::broadcast::channel(8);
        fake.state().events = Some(tx2.clone());
        send_later(tx2, "uid-2", EVENTS_RETRY * 2);
        // What changed while the stream was down is unknown: every pod is woken once.
        let wake = tokio::time::timeout(within, events.next(&fake)).await;
        assert_eq!(wake.expect("a wake after subscribing again"), Wake::All);
        let wake = tokio::time::timeout(within, events.next(&fake)).await;
        assert_eq!(wake.expect("an event"), Wake::Pod("uid-2".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_before_subscribing_again_survives_a_dropped_call() {
        let fake = FakeCri::new();
        let (tx, _) = tokio::sync::broadcast::channel::<String>(8);
        fake.state().events = Some(tx);
        let mut events = RuntimeEvents::default();
        // Subscribes, then waits for an event that never comes.
        let waited = tokio::time::timeout(Duration::from_secs(1), events.next(&fake)).await;
        assert!(waited.is_err());
        // The runtime goes away: the stream ends and the retry wait begins; the loop drops the
        // call part-way, as its select! does whenever another branch wins.
        fake.state().events = None;
        let waited = tokio::time::timeout(Duration::from_secs(1), events.next(&fake)).await;
        assert!(waited.is_err());
        assert!(events.stream.is_none());
        let retry_at = events.retry_at.expect("still waiting to subscribe again");
        assert!(retry_at > Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_without_events_is_not_asked_again() {
        let fake = FakeCri::new();
        let mut events = RuntimeEvents::default();
        let waited = tokio::time::timeout(Duration::from_secs(3600), events.next(&fake)).await;
        assert!(
            waited.is_err(),
            "no event can come from a runtime without events"
        );
        assert!(events.unsupported);
    }

    #[tokio::test]
    async fn orphans_are_reaped_but_live_and_foreign_sandboxes_kept() {
        let fake = FakeCri::new();
        let label = |uid: &str, node: &str| v1::PodSandboxConfig {
            labels: [
                (cri::LABEL_POD_UID.to_owned(), uid.to_owned()),
                (cri::LABEL_NODE.to_owned(), node.to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        for (uid, node) in [("live", "n1"), ("gone", "n1"), ("other", "n2")] {
            fake.run_pod_sandbox(label(uid, node)).await.expect("run");
        }
        let (tx, _rx) = watch::channel(Desired::Gone);
        let workers = HashMap::from([("live".to_owned(), tx)]);
        reap_orphans(&fake, "n1", &workers).await;
        let left: Vec<String> = fake
            .state()
            .sandboxes
            .values()
            .map(|s| s.config.labels[cri::LABEL_POD_UID].clone())
            .collect();
        assert_eq!(left, ["live", "other"]);
    }
}
