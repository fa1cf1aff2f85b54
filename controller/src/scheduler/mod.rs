//! The scheduler: binds each pending pod to the best node that may take it, as Kubernetes'
//! default scheduler profile filters and scores (`decide`): Ready and not cordoned, taints
//! tolerated, `nodeSelector` and node affinity, allocatable cpu, memory and pod count on top of
//! the pods already there (`nodes`), the pod's PersistentVolumeClaims (`volumes`:
//! WaitForFirstConsumer claims are provisioned on the chosen node before the pod is bound),
//! topology spread and pod (anti-)affinity (`pods`); `schedulingGates` hold a pod back.
//!
//! The loop keeps its own view of the cluster (`view`) current from store events instead of
//! listing it for every decision, and a queue of pending pods, highest priority and oldest
//! first: a new pod is tried at once; one that fits nowhere waits until something it could
//! depend on changes (a node with room for it, a pod leaving a node, storage, namespaces), and
//! at least every 60 s. A chosen pod counts on its node at once and its binding is written while the next
//! pods are decided, as kube-scheduler assumes pods and binds them asynchronously.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub mod decide;
pub mod nodes;
pub mod pods;
pub mod preempt;
pub mod view;
pub mod volumes;

use view::{Nodes, Placements, View};

use crate::api::{self, ApiError, Objects, Part, resources};
use crate::quantity;
use crate::reconcile::Interest;
use crate::reconcile::events::{self, EventType};
use crate::store::state::Event;

/// cpu in millicores, memory in bytes, and a pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i128,
    pub memory: i128,
    pub pods: i128,
}

/// What a pod asks for: the sum of its containers' requests, or the largest init container's.
pub fn pod_requests(pod: &Value) -> Resources {
    let sum = |list: &str| -> (i128, i128, i128, i128) {
        let mut cpu = 0;
        let mut mem = 0;
        let mut max_cpu = 0;
        let mut max_mem = 0;
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let req = &c["resources"]["requests"];
            let ccpu = req["cpu"]
                .as_str()
                .and_then(quantity::parse_milli)
                .unwrap_or(0);
            let cmem = req["memory"]
                .as_str()
                .and_then(quantity::parse_units)
                .unwrap_or(0);
            cpu += ccpu;
            mem += cmem;
            max_cpu = max_cpu.max(ccpu);
            max_mem = max_mem.max(cmem);
        }
        (cpu, mem, max_cpu, max_mem)
    };
    let (cpu, mem, _, _) = sum("containers");
    let (_, _, icpu, imem) = sum("initContainers");
    Resources {
        cpu_milli: cpu.max(icpu),
        memory: mem.max(imem),
        pods: 1,
    }
}

/// cpu (millicores) and memory of the pod's containers, each at least
/// [`DEFAULT_CPU_MILLI`] and [`DEFAULT_MEMORY`], as Kubernetes' scorer counts them.
fn nonzero_requests(pod: &Value) -> (i128, i128) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let req = &c["resources"]["requests"];
        cpu += req["cpu"]
            .as_str()
            .and_then(quantity::parse_milli)
            .unwrap_or(0)
            .max(DEFAULT_CPU_MILLI);
        mem += req["memory"]
            .as_str()
            .and_then(quantity::parse_units)
            .unwrap_or(0)
            .max(DEFAULT_MEMORY);
    }
    (cpu, mem)
}

fn allocatable(node: &Value) -> Resources {
    let a = &node["status"]["allocatable"];
    Resources {
        cpu_milli: a["cpu"]
            .as_str()
            .and_then(quantity::parse_milli)
            .unwrap_or(0),
        memory: a["memory"]
            .as_str()
            .and_then(quantity::parse_units)
            .unwrap_or(0),
        pods: a["pods"]
            .as_str()
            .and_then(quantity::parse_units)
            .unwrap_or(0),
    }
}

pub fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// What the scheduler does with a pending pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Bind(String),
    /// No node fits; the message says why, per node, in Kubernetes' words.
    Unschedulable(String),
    /// `schedulingGates` hold the pod back.
    Gated,
    /// Its WaitForFirstConsumer claims are being provisioned on this node.
    Wait(String),
    /// The node is chosen; its WaitForFirstConsumer claims are to be provisioned there first.
    Provision {
        node: String,
        claims: Vec<volumes::Delayed>,
    },
}

/// What the scorer assumes a container without requests uses, as Kubernetes' scorer does, so
/// pods without requests still spread over nodes.
const DEFAULT_CPU_MILLI: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024;

/// Sets the pod's PodScheduled condition to False with `reason` (once per message), and
/// records FailedScheduling for Unschedulable.
async fn not_scheduled(objects: &Objects, pod: &Value, reason: &str, msg: &str) {
    let already = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["message"] == msg);
    if already {
        return;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let r = objects
        .modify(resources::pods(), Some(ns), name, Part::Status, |p| {
            let cs = p["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(cs)) = cs {
                cs.retain(|c| c["type"] != "PodScheduled");
                cs.push(json!({"type": "PodScheduled", "status": "False", "reason": reason, "message": msg, "lastProbeTime": null, "lastTransitionTime": api::objects::now()}));
            }
            Ok(())
        })
        .await;
    match r {
        Ok(p) if reason == "Unschedulable" => {
            events::record(
                objects,
                &p,
                EventType::Warning,
                "FailedScheduling",
                msg,
                "default-scheduler",
            )
            .await;
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(pod = %name, error = %e, "cannot record {reason}"),
    }
}

/// Names `node` on the pod's WaitForFirstConsumer claims, for the storage controller.
async fn select_node(
    objects: &Objects,
    claims: &[volumes::Delayed],
    node: &str,
) -> Result<(), ApiError> {
    for c in claims {
        objects
            .modify(
                resources::persistent_volume_claims(),
                Some(&c.namespace),
                &c.name,
                Part::Main,
                |claim| {
                    let meta = claim["metadata"].as_object_mut();
                    if let Some(meta) = meta {
                        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
                        ann[volumes::SELECTED_NODE] = json!(node);
                    }
                    Ok(())
                },
            )
            .await?;
    }
    Ok(())
}

/// `status.nominatedNodeName`, when set.
fn nominated_node(pod: &Value) -> Option<&str> {
    pod.pointer("/status/nominatedNodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// Writes (or clears) the pod's `status.nominatedNodeName`.
async fn write_nomination(objects: &Objects, key: &str, node: Option<&str>) {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let r = objects
        .modify(resources::pods(), Some(ns), name, Part::Status, |p| {
            if let Some(st) = p["status"].as_object_mut() {
                match node {
                    Some(n) => st.insert("nominatedNodeName".into(), json!(n)),
                    None => st.remove("nominatedNodeName"),
                };
            }
            Ok(())
        })
        .await;
    if let Err(e) = r {
        tracing::debug!(pod = %key, error = %e, "cannot write the nominated node");
    }
}

fn priority(pod: &Value) -> i64 {
    pod["spec"]["priority"].as_i64().unwrap_or(0)
}

/// `namespace/name`.
fn pod_key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Whether this scheduler places the pod: unbound, its `schedulerName`, not being deleted.
fn is_pending(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
        && pod["spec"]["schedulerName"]
            .as_str()
            .unwrap_or("default-scheduler")
            == "default-scheduler"
        && pod["metadata"]["deletionTimestamp"].is_null()
        && !is_terminal(pod)
}

/// A pending pod's place in the queue: highest priority, then oldest, first.
type Order = (Reverse<i64>, String, String);

/// A pod that fits nowhere now.
#[derive(Debug)]
struct Waiting {
    /// It has required pod affinity: another pod's arrival may let it on.
    wants_neighbours: bool,
    /// What it asks of a node, for the quick check of whether a changed node could take it.
    want: Resources,
    /// When its PodScheduled condition was last written.
    written: Option<Instant>,
    /// A newer message than the one written is held back (written at most once a second).
    stale: bool,
}

/// The pending pods: those to try (`active`) and those waiting for the cluster to change, both
/// in queue order.
#[derive(Debug, Default)]
struct Queue {
    pods: HashMap<String, Value>,
    order: HashMap<String, Order>,
    active: BTreeSet<Order>,
    waiting: BTreeMap<Order, Waiting>,
}

impl Queue {
    /// Adds or refreshes a pending pod; a new one, or one whose spec or labels changed (a
    /// scheduling gate lifted, a toleration added), is tried again.
    fn upsert(&mut self, key: &str, pod: Value) {
        let retry = self.pods.get(key).is_none_or(|old| {
            old.get("spec") != pod.get("spec")
                || old.pointer("/metadata/labels") != pod.pointer("/metadata/labels")
        });
        if retry {
            let order = (
                Reverse(priority(&pod)),
                pod["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                key.to_string(),
            );
            if let Some(old) = self.order.insert(key.to_string(), order.clone()) {
                self.active.remove(&old);
                self.waiting.remove(&old);
            }
            self.active.insert(order);
        }
        self.pods.insert(key.to_string(), pod);
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        if let Some(o) = self.order.remove(key) {
            self.active.remove(&o);
            self.waiting.remove(&o);
        }
        self.pods.remove(key)
    }

    /// The next pod to try, taken off the active list (it stays known until removed).
    fn pop(&mut self) -> Option<(String, Value)> {
        let order = self.active.pop_first()?;
        let pod = self.pods.get(&order.2)?.clone();
        Some((order.2, pod))
    }

    /// Puts a pod that fits nowhere aside; returns whether its condition may be written now
    /// (when `changed`: at most once a second, the latest message held back until then).
    fn wait(&mut self, key: &str, pod: &Value, changed: bool) -> bool {
        let Some(order) = self.order.get(key) else {
            return false;
        };
        let w = self
            .waiting
            .entry(order.clone())
            .or_insert_with(|| Waiting {
                wants_neighbours: pods::wants_neighbours(pod),
                want: pod_requests(pod),
                written: None,
                stale: false,
            });
        if !changed {
            w.stale = false;
            return false;
        }
        let now = Instant::now();
        let may = w
            .written
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if may {
            w.written = Some(now);
        }
        w.stale = !may;
        may
    }

    /// Tries the waiting pods again (those `which` selects).
    fn wake(&mut self, which: impl Fn(&Waiting) -> bool) {
        let orders: Vec<Order> = self
            .waiting
            .iter()
            .filter(|(_, w)| which(w))
            .map(|(o, _)| o.clone())
            .collect();
        for o in orders {
            self.waiting.remove(&o);
            self.active.insert(o);
        }
    }

    /// Tries again, in queue order, as many waiting pods as `node` has room for now that it
    /// changed (a pod that a quick look says it could not take stays waiting), as
    /// kube-scheduler's queueing hints move only the pods an event may help.
    fn wake_for(&mut self, view: &View, node: &str) {
        let Some((n, facts)) = view.nodes.with_facts(node) else {
            return;
        };
        let used = view.placed.on(node).map(|h| h.used).unwrap_or_default();
        let mut free = Resources {
            cpu_milli: facts.alloc.cpu_milli - used.cpu_milli,
            memory: facts.alloc.memory - used.memory,
            pods: facts.alloc.pods - used.pods,
        };
        let mut woken = Vec::new();
        for (order, w) in &self.waiting {
            if free.pods <= 0 {
                break;
            }
            let Some(pod) = self.pods.get(&order.2) else {
                continue;
            };
            if decide::could_take(pod, &w.want, n, facts, &free) {
                free.cpu_milli -= w.want.cpu_milli;
                free.memory -= w.want.memory;
                free.pods -= 1;
                woken.push(order.clone());
            }
        }
        for o in woken {
            self.waiting.remove(&o);
            self.active.insert(o);
        }
    }

    fn any_stale(&self) -> bool {
        self.waiting.values().any(|w| w.stale)
    }
}

/// What a binding or preemption task reports back.
enum Feedback {
    /// The binding (or the claims' node selection) was not written: forget the assumption.
    Failed { key: String, node: String },
    /// The pod's victims were told to go and its nomination written.
    Preempted { key: String },
}

/// The resources the scheduler follows, with their store key prefixes.
struct Prefixes {
    pods: String,
    nodes: String,
    namespaces: String,
    claims: String,
    volumes: String,
    classes: String,
}

const FOLLOWED: Interest = Interest::Resources(&[
    "pods",
    "nodes",
    "namespaces",
    "persistentvolumeclaims",
    "persistentvolumes",
    "storageclasses",
]);

/// How many bindings may be written at once.
const BINDINGS_IN_FLIGHT: usize = 256;
/// Waiting pods are tried again at least this often, whatever happens.
const RETRY_PERIOD: Duration = Duration::from_secs(60);

/// A pod counted on a node before it is bound there.
#[derive(Debug)]
struct Hold {
    node: String,
    /// Its binding is being written (otherwise its claims are being provisioned there).
    binding: bool,
}

/// Why the loop stopped.
enum Stop {
    Cancelled,
    /// Events were lost: build the view again.
    Lagged,
}

struct Scheduler {
    objects: Objects,
    view: View,
    queue: Queue,
    /// Pods counted on a node before the store says they are there.
    held: HashMap<String, Hold>,
    /// The store revision of every object the view reflects, so that events older than the
    /// listing it started from are skipped.
    revisions: HashMap<String, u64>,
    prefixes: Prefixes,
    feedback: (
        mpsc::UnboundedSender<Feedback>,
        mpsc::UnboundedReceiver<Feedback>,
    ),
    binds: Arc<Semaphore>,
    last_retry: Instant,
    /// Pods whose victims are being deleted; they do not preempt again meanwhile.
    preempting: std::collections::HashSet<String>,
}

impl Scheduler {
    /// Lists what the view needs; events after `after` are applied on top.
    fn new(objects: Objects) -> Result<Self, ApiError> {
        let list = |res: &resources::Resource| -> Result<Vec<Value>, ApiError> {
            Ok(objects.list(res, None)?.0)
        };
        let prefixes = Prefixes {
            pods: resources::pods().prefix(),
            nodes: resources::nodes().prefix(),
            namespaces: resources::namespaces().prefix(),
            claims: resources::persistent_volume_claims().prefix(),
            volumes: resources::persistent_volumes().prefix(),
            classes: resources::storage_classes().prefix(),
        };
        let mut revisions = HashMap::new();
        let mut note = |res: &resources::Resource, items: &[Value]| {
            for o in items {
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let ns = o["metadata"]["namespace"].as_str();
                let name = o["metadata"]["name"].as_str().unwrap_or("");
                revisions.insert(res.key(ns, name), rv);
            }
        };
        let nodes = list(resources::nodes())?;
        note(resources::nodes(), &nodes);
        let all_pods = list(resources::pods())?;
        note(resources::pods(), &all_pods);
        let mut view = View {
            nodes: Nodes::new(nodes),
            placed: Placements::default(),
            namespaces: list(resources::namespaces())?,
            claims: list(resources::persistent_volume_claims())?,
            volumes: list(resources::persistent_volumes())?,
            classes: list(resources::storage_classes())?,
            next_start: 0,
            nominated: view::Nominated::default(),
        };
        note(resources::namespaces(), &view.namespaces);
        note(resources::persistent_volume_claims(), &view.claims);
        note(resources::persistent_volumes(), &view.volumes);
        note(resources::storage_classes(), &view.classes);
        let mut queue = Queue::default();
        for p in all_pods {
            let key = pod_key(&p);
            let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
            if !node.is_empty() {
                if !is_terminal(&p) {
                    view.placed.add(&key, &node, p);
                }
            } else if is_pending(&p) {
                if let Some(n) = nominated_node(&p) {
                    view.nominated.set(&key, n, &p);
                }
                queue.upsert(&key, p);
            }
        }
        Ok(Scheduler {
            objects,
            view,
            queue,
            held: HashMap::new(),
            revisions,
            prefixes,
            feedback: mpsc::unbounded_channel(),
            binds: Arc::new(Semaphore::new(BINDINGS_IN_FLIGHT)),
            last_retry: Instant::now(),
            preempting: Default::default(),
        })
    }

    /// Brings the view up to date with one store event.
    fn apply(&mut self, e: &Event) {
        if self.revisions.get(&e.key).is_some_and(|&r| e.revision <= r) {
            return;
        }
        let obj = e.record.as_ref().and_then(|r| api::objects::decode(r).ok());
        match &obj {
            Some(_) => self.revisions.insert(e.key.clone(), e.revision),
            None => self.revisions.remove(&e.key),
        };
        let p = &self.prefixes;
        if let Some(key) = e.key.strip_prefix(&p.pods) {
            let key = key.to_string();
            self.pod_changed(&key, obj);
        } else if let Some(name) = e.key.strip_prefix(&p.nodes) {
            if let Some(n) = obj
                && self.view.nodes.upsert(n)
            {
                let name = name.to_string();
                self.queue.wake_for(&self.view, &name);
            } else if e.record.is_none() {
                self.view.nodes.remove(name);
            }
        } else {
            let list = if e.key.starts_with(&p.namespaces) {
                &mut self.view.namespaces
            } else if e.key.starts_with(&p.claims) {
                &mut self.view.claims
            } else if e.key.starts_with(&p.volumes) {
                &mut self.view.volumes
            } else if e.key.starts_with(&p.classes) {
                &mut self.view.classes
            } else {
                return;
            };
            replace(list, &e.key, obj);
            self.queue.wake(|_| true);
        }
    }

    fn pod_changed(&mut self, key: &str, pod: Option<Value>) {
        let Some(pod) = pod else {
            self.queue.remove(key);
            self.held.remove(key);
            self.unnominate(key);
            self.leave(key);
            return;
        };
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            if self.held.get(key).is_some_and(|h| h.binding) {
                // Its binding is being written; this is an older state.
                return;
            }
            if is_pending(&pod) {
                match nominated_node(&pod) {
                    Some(n) if self.view.nominated.node_of(key) != Some(n) => {
                        if let Some(old) = self.view.nominated.set(key, n, &pod) {
                            self.queue.wake_for(&self.view, &old);
                        }
                    }
                    // Until the preemption task writes it, the store does not know it yet.
                    None if !self.preempting.contains(key) => self.unnominate(key),
                    _ => {}
                }
                self.queue.upsert(key, pod);
            } else {
                self.queue.remove(key);
                self.unnominate(key);
                if self.held.remove(key).is_some() {
                    self.leave(key);
                }
            }
            return;
        }
        self.queue.remove(key);
        self.held.remove(key);
        self.unnominate(key);
        if is_terminal(&pod) {
            self.leave(key);
            return;
        }
        let arrived = self.view.placed.node_of(key) != Some(node.as_str());
        self.view.placed.add(key, &node, pod);
        if arrived {
            self.queue.wake(|w| w.wants_neighbours);
        }
    }

    /// Drops the pod's nomination and tries the waiting pods the room it kept may let on.
    fn unnominate(&mut self, key: &str) {
        if let Some(node) = self.view.nominated.remove(key) {
            self.queue.wake_for(&self.view, &node);
        }
    }

    /// kube-scheduler's PostFilter for a pod that fits nowhere: preempts lower-priority pods
    /// where that makes room (the message stays the filters'), or adds why it cannot.
    fn post_filter(&mut self, key: &str, pod: &Value, msg: String, resolvable: &[usize]) -> String {
        if self.preempting.contains(key) || self.view.nodes.is_empty() {
            return msg;
        }
        if let Err(why) = preempt::eligible(&self.view, pod, key) {
            return format!("{msg} preemption: {why}");
        }
        let objects = &self.objects;
        let outcome = self.view.preempt(pod, resolvable, || {
            objects
                .list(resources::pod_disruption_budgets(), None)
                .map(|(l, _)| l.iter().filter_map(preempt::Budget::of).collect())
                .unwrap_or_default()
        });
        match outcome {
            Ok(plan) => {
                self.start_preemption(key, pod, plan);
                msg
            }
            Err(why) => {
                self.unnominate(key);
                if nominated_node(pod).is_some() {
                    let (objects, key) = (self.objects.clone(), key.to_string());
                    tokio::spawn(async move { write_nomination(&objects, &key, None).await });
                }
                format!("{msg} preemption: {why}")
            }
        }
    }

    /// Nominates the pod to the plan's node, where it keeps its room from lower priorities,
    /// and deletes the victims in a task (each marked a DisruptionTarget first, with a
    /// Preempted event), as kube-scheduler's preemption does.
    fn start_preemption(&mut self, key: &str, pod: &Value, plan: preempt::Plan) {
        let p = priority(pod);
        let displaced = self.view.nominated.below(&plan.node, p);
        for k in &displaced {
            self.view.nominated.remove(k);
        }
        self.view.nominated.set(key, &plan.node, pod);
        self.preempting.insert(key.to_string());
        tracing::info!(pod = %key, node = %plan.node, victims = plan.victims.len(), "preempting");
        let (objects, tx) = (self.objects.clone(), self.feedback.0.clone());
        let key = key.to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let scheduler = pod["spec"]["schedulerName"]
            .as_str()
            .unwrap_or("default-scheduler")
            .to_string();
        tokio::spawn(async move {
            let node = plan.node;
            for (vkey, victim) in plan.victims {
                let (ns, name) = vkey.split_once('/').unwrap_or(("", &vkey));
                let why = format!("{scheduler}: preempting to accommodate a higher priority pod");
                let r = crate::api::kinds::pod::mark_disruption_target(
                    &objects,
                    Some(ns),
                    name,
                    preempt::REASON,
                    &why,
                )
                .await;
                let r = match r {
                    Ok(()) => objects
                        .delete(
                            resources::pods(),
                            Some(ns),
                            name,
                            &api::DeleteOptions::default(),
                        )
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) | Err(ApiError::NotFound { .. }) => {
                        let msg = format!("Preempted by pod {uid} on node {node}");
                        events::record(
                            &objects,
                            &victim,
                            EventType::Normal,
                            "Preempted",
                            &msg,
                            "default-scheduler",
                        )
                        .await;
                    }
                    Err(e) => tracing::warn!(pod = %vkey, error = %e, "cannot preempt"),
                }
            }
            for k in displaced {
                write_nomination(&objects, &k, None).await;
            }
            write_nomination(&objects, &key, Some(&node)).await;
            let _ = tx.send(Feedback::Preempted { key });
        });
    }

    /// Takes a pod off its node and tries the waiting pods its room (or, if it kept others
    /// away by anti-affinity, its absence) may let on.
    fn leave(&mut self, key: &str) {
        let anti = self.view.placed.keeps_others_away(key);
        let Some(node) = self.view.placed.remove(key) else {
            return;
        };
        if anti {
            self.queue.wake(|_| true);
        } else {
            self.queue.wake_for(&self.view, &node);
        }
    }

    /// Tries every active pod, in order.
    async fn schedule_active(&mut self, cancel: &CancellationToken) {
        while let Some((key, pod)) = self.queue.pop() {
            if cancel.is_cancelled() {
                return;
            }
            // A pod held on a node for its claims is decided afresh.
            if self.held.remove(&key).is_some() {
                self.view.placed.remove(&key);
            }
            let decision = match self.view.decide(&pod) {
                (Decision::Unschedulable(msg), resolvable) => {
                    Decision::Unschedulable(self.post_filter(&key, &pod, msg, &resolvable))
                }
                (d, _) => d,
            };
            self.act(key, pod, decision).await;
        }
    }

    async fn act(&mut self, key: String, pod: Value, decision: Decision) {
        let (ns, name) = key.split_once('/').unwrap_or(("", &key));
        let (ns, name) = (ns.to_string(), name.to_string());
        match decision {
            Decision::Bind(node) => {
                self.hold(&key, &node, &pod, true);
                self.queue.remove(&key);
                let Ok(permit) = self.binds.clone().acquire_owned().await else {
                    return;
                };
                let (objects, tx) = (self.objects.clone(), self.feedback.0.clone());
                tokio::spawn(async move {
                    let binding = json!({"target": {"kind": "Node", "name": node}});
                    match api::bind_pod(&objects, Some(&ns), &name, &binding).await {
                        Ok(()) => {
                            tracing::info!(pod = %key, node = %node, "bound");
                            let msg = format!("Successfully assigned {key} to {node}");
                            events::record(
                                &objects,
                                &pod,
                                EventType::Normal,
                                "Scheduled",
                                &msg,
                                "default-scheduler",
                            )
                            .await;
                        }
                        Err(e) => {
                            tracing::debug!(pod = %key, error = %e, "binding failed; retried");
                            let _ = tx.send(Feedback::Failed { key, node });
                        }
                    }
                    drop(permit);
                });
            }
            Decision::Provision { node, claims } => {
                self.hold(&key, &node, &pod, false);
                self.queue.wait(&key, &pod, false);
                let (objects, tx) = (self.objects.clone(), self.feedback.0.clone());
                tokio::spawn(async move {
                    match select_node(&objects, &claims, &node).await {
                        Ok(()) => {
                            tracing::info!(pod = %key, node = %node, "claims to be provisioned on the chosen node")
                        }
                        Err(e) => {
                            tracing::debug!(pod = %key, error = %e, "cannot select node");
                            let _ = tx.send(Feedback::Failed { key, node });
                        }
                    }
                });
            }
            Decision::Wait(node) => {
                self.hold(&key, &node, &pod, false);
                self.queue.wait(&key, &pod, false);
            }
            Decision::Gated => {
                let msg = "Scheduling is blocked due to non-empty scheduling gates";
                let changed = !has_condition(&pod, "SchedulingGated", msg);
                if self.queue.wait(&key, &pod, changed) {
                    let objects = self.objects.clone();
                    tokio::spawn(async move {
                        not_scheduled(&objects, &pod, "SchedulingGated", msg).await;
                    });
                }
            }
            Decision::Unschedulable(msg) => {
                let changed = !has_condition(&pod, "Unschedulable", &msg);
                if self.queue.wait(&key, &pod, changed) {
                    let objects = self.objects.clone();
                    tokio::spawn(async move {
                        not_scheduled(&objects, &pod, "Unschedulable", &msg).await;
                    });
                }
            }
        }
    }

    /// Counts the pod on `node` until the store says otherwise.
    fn hold(&mut self, key: &str, node: &str, pod: &Value, binding: bool) {
        self.view.placed.add(key, node, pod.clone());
        self.held.insert(
            key.to_string(),
            Hold {
                node: node.to_string(),
                binding,
            },
        );
    }

    /// A binding that was not written: the pod is taken off the node and looked at again as
    /// the store has it.
    fn failed(&mut self, key: &str, node: &str) {
        if self.held.get(key).is_none_or(|h| h.node != node) {
            return;
        }
        self.held.remove(key);
        self.leave(key);
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        match self.objects.get(resources::pods(), Some(ns), name) {
            Ok(pod) => {
                let rv = pod["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                self.revisions
                    .insert(resources::pods().key(Some(ns), name), rv);
                self.pod_changed(key, Some(pod));
            }
            Err(_) => self.pod_changed(key, None),
        }
    }

    fn feedback(&mut self, f: Feedback) {
        match f {
            Feedback::Failed { key, node } => self.failed(&key, &node),
            Feedback::Preempted { key } => {
                self.preempting.remove(&key);
            }
        }
    }

    /// Runs until cancelled or events are lost.
    async fn run(
        &mut self,
        sub: &mut crate::store::watch::FilteredSubscription,
        cancel: &CancellationToken,
    ) -> Stop {
        loop {
            while let Ok(f) = self.feedback.1.try_recv() {
                self.feedback(f);
            }
            self.schedule_active(cancel).await;
            let period = if self.queue.any_stale() {
                Duration::from_secs(1)
            } else {
                RETRY_PERIOD.saturating_sub(self.last_retry.elapsed())
            };
            tokio::select! {
                _ = cancel.cancelled() => return Stop::Cancelled,
                _ = sub.changed() => {
                    // Let a burst of changes settle into one pass.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match sub.take() {
                        Ok(evs) => {
                            for e in evs {
                                self.apply(&e);
                            }
                        }
                        Err(_) => return Stop::Lagged,
                    }
                }
                Some(f) = self.feedback.1.recv() => self.feedback(f),
                _ = tokio::time::sleep(period) => {
                    if self.last_retry.elapsed() >= RETRY_PERIOD {
                        self.last_retry = Instant::now();
                        self.queue.wake(|_| true);
                    } else {
                        self.queue.wake(|w| w.stale);
                    }
                }
            }
        }
    }
}

/// Replaces (or removes) the object stored at `key` in `list`.
fn replace(list: &mut Vec<Value>, key: &str, obj: Option<Value>) {
    let tail = key.rsplit('/').next().unwrap_or("");
    let ns = key.rsplit('/').nth(1).unwrap_or("");
    let same = |o: &Value| {
        o["metadata"]["name"].as_str() == Some(tail)
            && o["metadata"]["namespace"].as_str().is_none_or(|n| n == ns)
    };
    list.retain(|o| !same(o));
    if let Some(o) = obj {
        list.push(o);
    }
}

fn has_condition(pod: &Value, reason: &str, msg: &str) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == reason && c["message"] == msg)
}

/// Runs the scheduler until cancelled.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    while !cancel.is_cancelled() {
        let after = objects.store.revision();
        let sub = objects
            .store
            .watch_filtered(after, Box::new(|e| FOLLOWED.matches(e)));
        let started = sub
            .map_err(ApiError::from)
            .and_then(|sub| Ok((sub, Scheduler::new(objects.clone())?)));
        let (mut sub, mut scheduler) = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler cannot start; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        for e in std::mem::take(&mut sub.backlog) {
            scheduler.apply(&e);
        }
        match scheduler.run(&mut sub, &cancel).await {
            Stop::Cancelled => return,
            Stop::Lagged => tracing::info!(
                "scheduler fell behind the store's events; looking at everything again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::tests::objects;

    fn node(name: &str, cpu: &str, mem: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name}, "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    fn view(nodes: &[Value]) -> View {
        View {
            nodes: Nodes::new(nodes.to_vec()),
            ..View::default()
        }
    }

    #[test]
    fn fits_by_cpu_memory_and_readiness() {
        let nodes = vec![
            node("a", "2", "1Gi", true),
            node("b", "4", "4Gi", false),
            node("c", "2", "2Gi", true),
        ];
        let mut v = view(&nodes);
        assert_eq!(
            v.choose(&pod("500m", "512Mi")),
            Decision::Bind("c".into()),
            "the least allocated node"
        );
        v.placed.add("default/big", "c", pod("1900m", "0"));
        assert_eq!(v.choose(&pod("500m", "512Mi")), Decision::Bind("a".into()));
        let Decision::Unschedulable(msg) = v.choose(&pod("3", "3Gi")) else {
            panic!("should not fit")
        };
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn pods_without_requests_spread_over_nodes() {
        let nodes = vec![node("a", "2", "2Gi", true), node("b", "2", "2Gi", true)];
        let mut v = view(&nodes);
        let p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{}]}});
        let mut on = Vec::new();
        for i in 0..4 {
            let Decision::Bind(n) = v.choose(&p) else {
                panic!()
            };
            v.placed.add(&format!("default/p{i}"), &n, p.clone());
            on.push(n);
        }
        assert_eq!(on, ["a", "b", "a", "b"]);
    }

    #[test]
    fn selectors_taints_cordons_and_gates() {
        let mut a = node("a", "2", "2Gi", true);
        a["metadata"]["labels"] = json!({"disk": "ssd"});
        let mut b = node("b", "2", "2Gi", true);
        b["spec"] =
            json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
        let mut c = node("c", "2", "2Gi", true);
        c["spec"] = json!({"unschedulable": true});
        let mut v = view(&[a, b, c]);
        let Decision::Unschedulable(msg) =
            v.choose(&json!({"spec": {"nodeSelector": {"disk": "hdd"}}}))
        else {
            panic!()
        };
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable."
        );
        let tolerant = json!({"spec": {"nodeSelector": {}, "tolerations": [
            {"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}}}});
        assert_eq!(v.choose(&tolerant), Decision::Bind("b".into()));
        let gated = json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}});
        assert_eq!(v.choose(&gated), Decision::Gated);
        let cordon_tolerant = json!({"spec": {"nodeSelector": {"disk": "none"}, "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}});
        let Decision::Unschedulable(msg) = v.choose(&cordon_tolerant) else {
            panic!()
        };
        assert!(
            msg.contains("2 node(s) didn't match") && !msg.contains("unschedulable"),
            "{msg}"
        );
    }

    #[test]
    fn wait_for_first_consumer_claims_are_provisioned_before_binding() {
        let mut a = node("a", "2", "2Gi", true);
        a["metadata"]["annotations"] = json!({volumes::ROOT_ANNOTATION: "/s"});
        let nodes = vec![a, node("b", "2", "2Gi", true)];
        let classes = vec![json!({"metadata": {"name": "local-path"},
            "provisioner": crate::api::kinds::storageclass::LOCAL_PATH,
            "volumeBindingMode": "WaitForFirstConsumer"})];
        let mut claims = vec![json!({"metadata": {"name": "data", "namespace": "default"},
            "spec": {"storageClassName": "local-path"}, "status": {"phase": "Pending"}})];
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
        let mut v = view(&nodes);
        v.classes = classes.clone();
        v.claims = claims.clone();
        let Decision::Provision {
            node,
            claims: delayed,
        } = v.choose(&pod)
        else {
            panic!()
        };
        assert_eq!(node, "a", "only a offers local-path storage");
        assert_eq!(delayed[0].name, "data");
        claims[0]["metadata"]["annotations"] = json!({volumes::SELECTED_NODE: "a"});
        v.claims = claims;
        assert_eq!(v.choose(&pod), Decision::Wait("a".into()));
    }

    #[test]
    fn init_containers_count_by_their_largest() {
        let p = json!({"spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Mi"}}}, {"resources": {"requests": {"cpu": "500m"}}}]}});
        let r = pod_requests(&p);
        assert_eq!((r.cpu_milli, r.memory), (2000, 1 << 20));
    }

    #[test]
    fn large_clusters_are_searched_in_turns() {
        assert_eq!(decide::nodes_to_find(50), 50);
        assert_eq!(decide::nodes_to_find(150), 100);
        assert_eq!(decide::nodes_to_find(1000), 420);
        assert_eq!(decide::nodes_to_find(5000), 500);
        assert_eq!(decide::nodes_to_find(20_000), 1000);
        let nodes: Vec<Value> = (0..300)
            .map(|i| node(&format!("n{i:03}"), "4", "4Gi", true))
            .collect();
        let mut v = view(&nodes);
        let p = pod("100m", "100Mi");
        // 300 nodes: the first 144 feasible (n000..n143) are scored; ties go to the first name.
        assert_eq!(decide::nodes_to_find(300), 144);
        assert_eq!(v.choose(&p), Decision::Bind("n000".into()));
        // The next search starts where that one stopped, and wraps around.
        assert_eq!(v.choose(&p), Decision::Bind("n144".into()));
        assert_eq!(v.choose(&p), Decision::Bind("n000".into()));
        assert_eq!(v.choose(&p), Decision::Bind("n132".into()));
        // Nothing feasible: every node is looked at and counted.
        let Decision::Unschedulable(msg) = v.choose(&pod("8", "1Mi")) else {
            panic!()
        };
        assert_eq!(msg, "0/300 nodes are available: 300 Insufficient cpu.");
    }

    #[test]
    fn closed_nodes_are_counted_without_being_tried_and_follow_their_changes() {
        let cordon = |mut n: Value| {
            n["spec"] = json!({"unschedulable": true});
            n
        };
        let nodes = vec![
            cordon(node("c1", "4", "4Gi", true)),
            node("open1", "1", "4Gi", true),
            cordon(node("c2", "4", "4Gi", true)),
            node("down", "4", "4Gi", false),
            node("open2", "1", "4Gi", true),
        ];
        let mut v = view(&nodes);
        let big = pod("2", "1Mi");
        let Decision::Unschedulable(msg) = v.choose(&big) else {
            panic!()
        };
        assert_eq!(
            msg,
            "0/5 nodes are available: 1 node(s) were not ready, 2 Insufficient cpu, 2 node(s) were unschedulable."
        );
        // A pod that tolerates the cordon is tried on every node, as before.
        let mut tolerant = big.clone();
        tolerant["spec"]["tolerations"] =
            json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]);
        assert_eq!(v.choose(&tolerant), Decision::Bind("c1".into()));
        // Removing nodes moves others into their places: the open set follows.
        assert!(v.nodes.remove("c1"));
        assert!(v.nodes.remove("open1"));
        assert_eq!(v.nodes.closed(), (1, 1));
        assert_eq!(v.nodes.open_from(0).count(), 1);
        // Uncordoned, c2 takes the pod; cordoned again, it is counted as before.
        v.nodes.upsert(node("c2", "4", "4Gi", true));
        assert_eq!(v.nodes.closed(), (1, 0));
        assert_eq!(v.choose(&big), Decision::Bind("c2".into()));
        v.nodes.upsert(cordon(node("c2", "4", "4Gi", true)));
        let Decision::Unschedulable(msg) = v.choose(&big) else {
            panic!()
        };
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn balanced_allocation_and_image_locality_score() {
        // Same free share on average, but b would use cpu and memory evenly.
        let nodes = vec![node("a", "4", "4Gi", true), node("b", "4", "4Gi", true)];
        let mut v = view(&nodes);
        v.placed.add("default/x", "a", pod("2", "0"));
        v.placed.add("default/y", "b", pod("1", "1Gi"));
        assert_eq!(v.choose(&pod("0", "0")), Decision::Bind("b".into()));
        // A node that has the pod's large image wins an otherwise even choice.
        let mut with_image = node("z", "4", "4Gi", true);
        with_image["status"]["images"] =
            json!([{"names": ["docker.io/library/app:1"], "sizeBytes": 900_000_000}]);
        let mut v = view(&[node("y", "4", "4Gi", true), with_image]);
        let p = json!({"spec": {"containers": [{"image": "app:1"}]}});
        assert_eq!(v.choose(&p), Decision::Bind("z".into()));
        assert_eq!(
            decide::full_image_name("registry.local:5000/team/app"),
            "registry.local:5000/team/app:latest"
        );
        assert_eq!(
            decide::full_image_name("team/app@sha256:ab"),
            "docker.io/team/app@sha256:ab"
        );
    }

    #[test]
    fn a_changed_node_wakes_only_the_pods_it_has_room_for() {
        let mut v = view(&[node("n", "2", "2Gi", true)]);
        let mut q = Queue::default();
        for (i, cpu) in ["1", "1", "1", "500m"].iter().enumerate() {
            let mut p = pod(cpu, "0");
            p["metadata"] = json!({"name": format!("p{i}"), "namespace": "default",
                "creationTimestamp": format!("2026-01-01T00:00:0{i}Z")});
            let key = format!("default/p{i}");
            q.upsert(&key, p.clone());
            q.pop();
            q.wait(&key, &p, true);
        }
        q.wake_for(&v, "n");
        let woken: Vec<&str> = q.active.iter().map(|o| o.2.as_str()).collect();
        assert_eq!(
            woken,
            ["default/p0", "default/p1"],
            "two 1-cpu pods fill it"
        );
        // With one cpu taken, the oldest pod that still fits comes next.
        v.placed.add("default/other", "n", pod("1500m", "0"));
        q.wake_for(&v, "n");
        assert!(q.active.iter().any(|o| o.2 == "default/p3"));
        assert!(!q.active.iter().any(|o| o.2 == "default/p2"));
    }

    async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..200 {
            if let Some(t) = f() {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn force_delete(objects: &Objects, name: &str) {
        let now = crate::api::DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        objects
            .delete(resources::pods(), Some("default"), name, &now)
            .await
            .unwrap();
    }

    fn node_of(objects: &Objects, name: &str) -> Option<String> {
        let p = objects.get(resources::pods(), Some("default"), name).ok()?;
        p["spec"]["nodeName"].as_str().map(str::to_string)
    }

    #[tokio::test]
    async fn the_loop_binds_waits_for_room_and_frees_it() {
        let objects = objects().await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(objects.clone(), cancel.clone()));
        let mk = |name: &str, cpu: &str| {
            json!({"metadata": {"name": name}, "spec": {"containers": [
                {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}})
        };
        objects
            .create(
                resources::pods(),
                Some("default"),
                mk("first", "1500m"),
                false,
            )
            .await
            .unwrap();
        // No node yet: the pod says why and waits.
        let msg = eventually("PodScheduled=False", || {
            let p = objects
                .get(resources::pods(), Some("default"), "first")
                .ok()?;
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                .and_then(|c| c["message"].as_str().map(str::to_string))
        })
        .await;
        assert_eq!(msg, "no nodes available to schedule pods");
        let mut n = node("n1", "2", "2Gi", true);
        n["apiVersion"] = json!("v1");
        n["kind"] = json!("Node");
        objects
            .create(resources::nodes(), None, n, false)
            .await
            .unwrap();
        assert_eq!(
            eventually("first bound", || node_of(&objects, "first")).await,
            "n1"
        );
        // The node is full for a second such pod until the first goes.
        objects
            .create(
                resources::pods(),
                Some("default"),
                mk("second", "1500m"),
                false,
            )
            .await
            .unwrap();
        let msg = eventually("second unschedulable", || {
            let p = objects
                .get(resources::pods(), Some("default"), "second")
                .ok()?;
            p["status"]["conditions"][0]["message"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        assert_eq!(
            msg,
            "0/1 nodes are available: 1 Insufficient cpu. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
        force_delete(&objects, "first").await;
        assert_eq!(
            eventually("second bound", || node_of(&objects, "second")).await,
            "n1"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_loop_preempts_lower_priority_pods_and_keeps_their_room() {
        let objects = objects().await;
        for (name, value) in [("low", 10), ("mid", 50), ("high", 100)] {
            let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value});
            objects
                .create(resources::priority_classes(), None, class, false)
                .await
                .unwrap();
        }
        let mut n = node("n1", "2", "2Gi", true);
        n["apiVersion"] = json!("v1");
        n["kind"] = json!("Node");
        objects
            .create(resources::nodes(), None, n, false)
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(objects.clone(), cancel.clone()));
        let create = |name: &'static str, class: &'static str| {
            let objects = objects.clone();
            async move {
                let p = json!({"metadata": {"name": name}, "spec": {"priorityClassName": class,
                    "containers": [{"name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "1500m"}}}]}});
                objects
                    .create(resources::pods(), Some("default"), p, false)
                    .await
                    .unwrap()
            }
        };
        create("victim", "low").await;
        eventually("victim bound", || node_of(&objects, "victim")).await;
        let high = create("preemptor", "high").await;
        let get = |name: &str| {
            objects
                .get(resources::pods(), Some("default"), name)
                .unwrap()
        };
        eventually("the victim marked and deleted", || {
            let v = get("victim");
            let marked = v["status"]["conditions"].as_array()?.iter().any(|c| {
                c["type"] == "DisruptionTarget"
                    && c["reason"] == "PreemptionByScheduler"
                    && c["message"]
                        == "default-scheduler: preempting to accommodate a higher priority pod"
            });
            (marked && !v["metadata"]["deletionTimestamp"].is_null()).then_some(())
        })
        .await;
        eventually("the preemptor nominated", || {
            (get("preemptor")["status"]["nominatedNodeName"] == "n1").then_some(())
        })
        .await;
        let uid = high["metadata"]["uid"].as_str().unwrap().to_string();
        eventually("a Preempted event", || {
            let (evs, _) = objects.list(resources::events(), Some("default")).ok()?;
            evs.iter()
                .any(|e| {
                    e["reason"] == "Preempted"
                        && e["involvedObject"]["name"] == "victim"
                        && e["message"] == format!("Preempted by pod {uid} on node n1")
                })
                .then_some(())
        })
        .await;
        // A pod between the two arrives while the victim terminates: the room is kept for the
        // preemptor, and the preemptor is not preempted in turn.
        create("middle", "mid").await;
        force_delete(&objects, "victim").await;
        assert_eq!(
            eventually("the preemptor bound", || node_of(&objects, "preemptor")).await,
            "n1"
        );
        let msg = eventually("the middle pod's reason", || {
            get("middle")["status"]["conditions"][0]["message"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        assert!(
            msg.starts_with("0/1 nodes are available: 1 Insufficient cpu. preemption: "),
            "{msg}"
        );
        assert!(node_of(&objects, "middle").is_none());
        cancel.cancel();
        task.await.unwrap();
    }
}
