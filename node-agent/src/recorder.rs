//! Events about pods, as the kubelet records them through client-go's recorder: the same event
//! again (same object, reason, message and type) raises the existing Event's `count` and
//! `lastTimestamp` with a PATCH instead of making a new one, and a token bucket per object
//! (25 at once, then one per 5 minutes) keeps a crash-looping pod from flooding the API.
//! Recording never blocks a pod worker: events go to a task that writes them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub object: ObjectReference,
    pub ty: EventType,
    pub reason: String,
    pub message: String,
}

/// Where events go.
pub trait EventSink: Send + Sync + 'static {
    /// Records an event; never blocks and never fails the caller.
    fn record(&self, event: EventRecord);
}

/// The reference to a pod, or to one of its containers (`fieldPath`).
pub fn pod_ref(pod: &Pod, field_path: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

/// `spec.containers{name}` or `spec.initContainers{name}`, as events name a container.
pub fn container_path(init: bool, name: &str) -> String {
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

/// Records events through the API server.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<EventRecord>,
}

impl EventSink for Recorder {
    fn record(&self, event: EventRecord) {
        let _ = self.tx.send(event);
    }
}

/// Burst and refill of the per-object token bucket (client-go's defaults).
const BURST: f64 = 25.0;
const REFILL: Duration = Duration::from_secs(300);
/// How many recorded events are remembered for counting repeats.
const CACHE: usize = 4096;

/// The identity of an event for counting repeats (client-go's `getEventKey`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// kind, namespace, name, uid and fieldPath of the object.
    object: [Option<String>; 5],
    ty: EventType,
    reason: String,
    message: String,
}

/// An event already written: its name and how often it happened.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
}

/// Counting and rate limiting, separate from the writing so it is tested without an API.
#[derive(Debug, Default)]
struct Correlator {
    seen: HashMap<Key, Seen>,
    order: VecDeque<Key>,
    buckets: HashMap<String, (f64, Instant)>,
}

/// What to do with an event.
#[derive(Debug, PartialEq)]
enum Action {
    Drop,
    Create,
    /// Raise the count of the existing event `name` to `count`.
    Bump {
        name: String,
        count: i32,
    },
}

impl Correlator {
    fn key(ev: &EventRecord) -> Key {
        let o = &ev.object;
        Key {
            object: [
                o.kind.clone(),
                o.namespace.clone(),
                o.name.clone(),
                o.uid.clone(),
                o.field_path.clone(),
            ],
            ty: ev.ty,
            reason: ev.reason.clone(),
            message: ev.message.clone(),
        }
    }

    /// Takes a token for the event's object, or says the event is dropped.
    fn allow(&mut self, ev: &EventRecord, now: Instant) -> bool {
        let id = ev.object.uid.clone().unwrap_or_default();
        let (tokens, at) = self.buckets.entry(id).or_insert((BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() / REFILL.as_secs_f64();
        *tokens = (*tokens + refill).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn observe(&mut self, ev: &EventRecord, now: Instant) -> Action {
        if !self.allow(ev, now) {
            return Action::Drop;
        }
        let key = Self::key(ev);
        match self.seen.get_mut(&key) {
            Some(s) => {
                s.count += 1;
                Action::Bump {
                    name: s.name.clone(),
                    count: s.count,
                }
            }
            None => Action::Create,
        }
    }

    fn created(&mut self, ev: &EventRecord, name: &str) {
        let key = Self::key(ev);
        self.seen.insert(
            key.clone(),
            Seen {
                name: name.to_owned(),
                count: 1,
            },
        );
        self.order.push_back(key);
        while self.order.len() > CACHE {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    fn forget(&mut self, ev: &EventRecord) {
        self.seen.remove(&Self::key(ev));
    }
}

/// Starts the task that writes events as `component` on `node`; it ends with `cancel`.
pub fn spawn(
    client: kube::Client,
    component: &str,
    node: &str,
    cancel: CancellationToken,
) -> Recorder {
    let (tx, mut rx) = mpsc::unbounded_channel::<EventRecord>();
    let component = component.to_owned();
    let node = node.to_owned();
    tokio::spawn(async move {
        let mut corr = Correlator::default();
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = rx.recv() => match ev { Some(ev) => ev, None => return },
            };
            write(&client, &component, &node, &mut corr, ev).await;
        }
    });
    Recorder { tx }
}

async fn write(
    client: &kube::Client,
    component: &str,
    node: &str,
    corr: &mut Correlator,
    ev: EventRecord,
) {
    let now = Time(jiff::Timestamp::now());
    let namespace = ev
        .object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    match corr.observe(&ev, Instant::now()) {
        Action::Drop => {
            tracing::debug!(reason = %ev.reason, "event dropped by the rate limit");
        }
        Action::Bump { name, count } => {
            let patch =
                serde_json::json!({"count": count, "lastTimestamp": now, "message": ev.message});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                // The event may have expired: record it anew next time.
                tracing::debug!(event = %name, error = %e, "event count not updated");
                corr.forget(&ev);
            }
        }
        Action::Create => {
            let obj_name = ev.object.name.clone().unwrap_or_default();
            let nanos = jiff::Timestamp::now().as_nanosecond();
            let name = format!("{obj_name}.{nanos:x}");
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                involved_object: ev.object.clone(),
                reason: Some(ev.reason.clone()),
                message: Some(ev.message.clone()),
                type_: Some(ev.ty.as_str().to_owned()),
                count: Some(1),
                first_timestamp: Some(now.clone()),
                last_timestamp: Some(now.clone()),
                source: Some(EventSource {
                    component: Some(component.to_owned()),
                    host: Some(node.to_owned()),
                }),
                reporting_component: Some(component.to_owned()),
                reporting_instance: Some(node.to_owned()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => corr.created(&ev, &name),
                Err(e) => tracing::debug!(reason = %ev.reason, error = %e, "event not recorded"),
            }
        }
    }
}

/// Collects events in memory, for unit tests.
#[derive(Debug, Default)]
pub struct FakeSink {
    events: Mutex<Vec<EventRecord>>,
}

impl FakeSink {
    pub fn events(&self) -> MutexGuard<'_, Vec<EventRecord>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `reason: message` of every event so far.
    pub fn reasons(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| format!("{}: {}", e.reason, e.message))
            .collect()
    }
}

impl EventSink for FakeSink {
    fn record(&self, event: EventRecord) {
        self.events().push(event);
    }
}

impl EventSink for Arc<FakeSink> {
    fn record(&self, event: EventRecord) {
        self.as_ref().record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(uid: &str, message: &str) -> EventRecord {
        EventRecord {
            object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ty: EventType::Warning,
            reason: "BackOff".into(),
            message: message.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_raise_the_count_and_floods_are_limited() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let e = ev("u1", "Back-off restarting failed container");
        assert_eq!(c.observe(&e, now), Action::Create);
        c.created(&e, "web.1");
        assert_eq!(
            c.observe(&e, now),
            Action::Bump {
                name: "web.1".into(),
                count: 2
            }
        );
        // Another message is another event.
        assert_eq!(c.observe(&ev("u1", "other"), now), Action::Create);
        // 25 per object at once, then one per five minutes.
        let mut allowed = 3;
        while c.observe(&e, now) != Action::Drop {
            allowed += 1;
        }
        assert_eq!(allowed, 25);
        assert_ne!(c.observe(&ev("u2", "x"), now), Action::Drop, "per object");
        assert_ne!(c.observe(&e, now + REFILL), Action::Drop);
        assert_eq!(c.observe(&e, now + REFILL), Action::Drop);
    }
}
