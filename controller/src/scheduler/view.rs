//! The scheduler's view of the cluster: the nodes, each with the facts its filters read most
//! worked out once per change (`NodeFacts`), and the pods placed on each node with what they
//! request (`Placements`). The scheduler builds it from one list and keeps it current from
//! store events (as kube-scheduler's informer cache and snapshot do), so the cost of placing a
//! pod does not grow with every pod and event in the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::decide::full_image_name;
use super::nodes::node_name;
use super::{Resources, allocatable, node_ready, nonzero_requests, pod_requests};

/// A map by name with a fast seeded hash: the scheduler looks names up for every node of
/// every decision, where SipHash was a tenth of its time.
pub type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// What a scheduling decision reads, kept current by the scheduler's loop.
#[derive(Debug, Default)]
pub struct View {
    pub nodes: Nodes,
    pub placed: Placements,
    pub namespaces: Vec<Value>,
    pub claims: Vec<Value>,
    pub volumes: Vec<Value>,
    pub classes: Vec<Value>,
    /// Where the next search for feasible nodes starts, so every node gets its turn.
    pub next_start: usize,
    /// Pods that preempted others and wait for their room (`status.nominatedNodeName`).
    pub nominated: Nominated,
}

/// What most filters need to know about a node, worked out when it changes.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// The node's name (read for every node of every decision).
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    /// It has a NoSchedule or NoExecute taint.
    pub hard_taints: bool,
    /// It has a PreferNoSchedule taint.
    pub soft_taints: bool,
    pub alloc: Resources,
    /// The images the node reports (`status.images`), by full name, with their sizes.
    pub images: Map<String, i64>,
}

impl NodeFacts {
    pub fn of(node: &Value) -> Self {
        let effects: Vec<&str> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t["effect"].as_str())
            .collect();
        NodeFacts {
            name: node_name(node).to_string(),
            ready: node_ready(node),
            unschedulable: node["spec"]["unschedulable"].as_bool() == Some(true),
            hard_taints: effects
                .iter()
                .any(|e| matches!(*e, "NoSchedule" | "NoExecute")),
            soft_taints: effects.contains(&"PreferNoSchedule"),
            alloc: allocatable(node),
            images: node
                .pointer("/status/images")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|i| {
                    let size = i["sizeBytes"].as_i64().unwrap_or(0);
                    i["names"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(move |n| (full_image_name(n), size))
                })
                .collect(),
        }
    }

    /// Ready and not cordoned: a node most pods may go to.
    fn open(&self) -> bool {
        self.ready && !self.unschedulable
    }
}

/// The nodes, in no particular order, with a name index.
#[derive(Debug, Default)]
pub struct Nodes {
    list: Vec<(Value, NodeFacts)>,
    index: Map<String, usize>,
    /// How many nodes have each image.
    images: Map<String, usize>,
    /// The positions of the open nodes: a pod that does not tolerate a cordon is tried only
    /// on these, the others counted at once (thousands of cordoned nodes cost nothing per pod).
    open: BTreeSet<usize>,
    /// Nodes not Ready, and Ready but cordoned.
    not_ready: usize,
    cordoned: usize,
}

impl Nodes {
    pub fn new(nodes: impl IntoIterator<Item = Value>) -> Self {
        let mut n = Nodes::default();
        for node in nodes {
            n.upsert(node);
        }
        n
    }

    /// Adds or replaces a node; returns whether anything a filter or score reads changed.
    pub fn upsert(&mut self, node: Value) -> bool {
        let facts = NodeFacts::of(&node);
        let name = node_name(&node).to_string();
        match self.index.get(&name) {
            Some(&i) => {
                let old = &self.list[i].0;
                let relevant = |n: &Value| {
                    (
                        n.pointer("/metadata/labels").cloned(),
                        n.pointer("/spec/taints").cloned(),
                        n.pointer("/status/images").cloned(),
                    )
                };
                let changed = relevant(old) != relevant(&node)
                    || facts.ready != self.list[i].1.ready
                    || facts.unschedulable != self.list[i].1.unschedulable
                    || facts.alloc != self.list[i].1.alloc
                    || old.pointer("/metadata/annotations")
                        != node.pointer("/metadata/annotations");
                if changed {
                    let old = std::mem::take(&mut self.list[i].1.images);
                    self.count_images(&old, -1);
                    self.count_images(&facts.images, 1);
                }
                self.count_state(i, -1);
                self.list[i] = (node, facts);
                self.count_state(i, 1);
                changed
            }
            None => {
                self.count_images(&facts.images, 1);
                let i = self.list.len();
                self.index.insert(name, i);
                self.list.push((node, facts));
                self.count_state(i, 1);
                true
            }
        }
    }

    /// Counts the node at `i` in (or, with -1, out of) the open set and the closed tallies.
    fn count_state(&mut self, i: usize, by: isize) {
        let facts = &self.list[i].1;
        let (open, not_ready, cordoned) = (
            facts.open(),
            !facts.ready,
            facts.ready && facts.unschedulable,
        );
        if open {
            if by > 0 {
                self.open.insert(i);
            } else {
                self.open.remove(&i);
            }
        }
        if not_ready {
            self.not_ready = self.not_ready.saturating_add_signed(by);
        }
        if cordoned {
            self.cordoned = self.cordoned.saturating_add_signed(by);
        }
    }

    /// The positions of the open nodes, from `start` on and round again.
    pub fn open_from(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        self.open
            .range(start..)
            .chain(self.open.range(..start))
            .copied()
    }

    /// How many nodes are not Ready, and how many are Ready but cordoned.
    pub fn closed(&self) -> (usize, usize) {
        (self.not_ready, self.cordoned)
    }

    fn count_images(&mut self, images: &Map<String, i64>, by: isize) {
        for name in images.keys() {
            let n = self.images.entry(name.clone()).or_default();
            *n = n.saturating_add_signed(by);
            if *n == 0 {
                self.images.remove(name);
            }
        }
    }

    /// How many nodes report the image (by full name).
    pub fn nodes_with_image(&self, image: &str) -> usize {
        self.images.get(image).copied().unwrap_or(0)
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.index.remove(name) else {
            return false;
        };
        self.count_state(i, -1);
        let last = self.list.len() - 1;
        if i != last {
            self.count_state(last, -1);
        }
        let (_, facts) = self.list.swap_remove(i);
        self.count_images(&facts.images, -1);
        if let Some((moved, _)) = self.list.get(i) {
            self.index.insert(node_name(moved).to_string(), i);
            self.count_state(i, 1);
        }
        true
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.index.get(name).map(|&i| &self.list[i].0)
    }

    /// The node's position, for [`Nodes::at`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn with_facts(&self, name: &str) -> Option<(&Value, &NodeFacts)> {
        self.index.get(name).map(|&i| self.at(i))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The `i`th node (0 ≤ i < len).
    pub fn at(&self, i: usize) -> (&Value, &NodeFacts) {
        let (n, f) = &self.list[i];
        (n, f)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        self.list.iter().map(|(n, _)| n)
    }
}

/// The pods on one node and what they take.
#[derive(Debug, Default)]
pub struct NodePods {
    pub pods: BTreeMap<String, Value>,
    /// Their requests.
    pub used: Resources,
    /// cpu and memory with the scorer's defaults for containers without requests.
    pub nonzero: (i128, i128),
}

/// The pods placed on nodes (bound, or assumed while their binding is written), keyed
/// `namespace/name`.
#[derive(Debug, Default)]
pub struct Placements {
    by_node: Map<String, NodePods>,
    node_of: Map<String, String>,
    /// The placed pods with required anti-affinity terms, which every placement must respect.
    anti: HashSet<String>,
    /// How many placed pods have each priority, so preemption knows at once when no pod is
    /// below a pending one.
    priorities: BTreeMap<i64, usize>,
}

const ANTI: &str = "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution";

impl Placements {
    /// Places (or moves, or refreshes) the pod `key` on `node`.
    pub fn add(&mut self, key: &str, node: &str, pod: Value) {
        self.remove(key);
        let r = pod_requests(&pod);
        let (cpu, mem) = nonzero_requests(&pod);
        if pod
            .pointer(ANTI)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            self.anti.insert(key.to_string());
        }
        *self.priorities.entry(super::priority(&pod)).or_default() += 1;
        let here = self.by_node.entry(node.to_string()).or_default();
        here.used.cpu_milli += r.cpu_milli;
        here.used.memory += r.memory;
        here.used.pods += r.pods;
        here.nonzero.0 += cpu;
        here.nonzero.1 += mem;
        here.pods.insert(key.to_string(), pod);
        self.node_of.insert(key.to_string(), node.to_string());
    }

    /// Takes the pod `key` off its node; returns the node it was on.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let node = self.node_of.remove(key)?;
        self.anti.remove(key);
        if let Some(here) = self.by_node.get_mut(&node) {
            if let Some(pod) = here.pods.remove(key) {
                let p = super::priority(&pod);
                if let Some(n) = self.priorities.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.priorities.remove(&p);
                    }
                }
                let r = pod_requests(&pod);
                let (cpu, mem) = nonzero_requests(&pod);
                here.used.cpu_milli -= r.cpu_milli;
                here.used.memory -= r.memory;
                here.used.pods -= r.pods;
                here.nonzero.0 -= cpu;
                here.nonzero.1 -= mem;
            }
            if here.pods.is_empty() {
                self.by_node.remove(&node);
            }
        }
        Some(node)
    }

    /// The node the pod `key` is placed on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.node_of.get(key).map(String::as_str)
    }

    /// The pods on `node`, with what they take.
    pub fn on(&self, node: &str) -> Option<&NodePods> {
        self.by_node.get(node)
    }

    /// Every placed pod with its node.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.by_node
            .iter()
            .flat_map(|(n, here)| here.pods.values().map(move |p| (n.as_str(), p)))
    }

    /// The placed pods with required anti-affinity terms, with their nodes.
    pub fn with_anti(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.anti.iter().filter_map(|k| {
            let node = self.node_of.get(k)?;
            let pod = self.by_node.get(node)?.pods.get(k)?;
            Some((node.as_str(), pod))
        })
    }

    /// The lowest priority of any placed pod.
    pub fn lowest_priority(&self) -> Option<i64> {
        self.priorities.keys().next().copied()
    }

    /// Whether the placed pod `key` has required anti-affinity terms.
    pub fn keeps_others_away(&self, key: &str) -> bool {
        self.anti.contains(key)
    }
}

/// A pending pod's claim on a node whose pods it preempted.
#[derive(Debug, Clone)]
struct Nomination {
    node: String,
    priority: i64,
    want: Resources,
}

/// The pending pods nominated to nodes, whose requests those nodes keep for them against pods
/// of lower priority (as kube-scheduler's nominator adds nominated pods in its filters), so the
/// room their victims leave is not taken by others.
#[derive(Debug, Default)]
pub struct Nominated {
    by_pod: Map<String, Nomination>,
    by_node: Map<String, BTreeSet<String>>,
}

impl Nominated {
    /// Nominates the pod `key` to `node`; returns the node it was nominated to before.
    pub fn set(&mut self, key: &str, node: &str, pod: &Value) -> Option<String> {
        let old = self.remove(key);
        let n = Nomination {
            node: node.to_string(),
            priority: super::priority(pod),
            want: pod_requests(pod),
        };
        self.by_node
            .entry(node.to_string())
            .or_default()
            .insert(key.to_string());
        self.by_pod.insert(key.to_string(), n);
        old
    }

    /// Drops the pod's nomination; returns the node it had.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let n = self.by_pod.remove(key)?;
        if let Some(keys) = self.by_node.get_mut(&n.node) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_node.remove(&n.node);
            }
        }
        Some(n.node)
    }

    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.by_pod.get(key).map(|n| n.node.as_str())
    }

    /// What `node` keeps for pods nominated to it with at least `priority`, other than `key`.
    pub fn reserved(&self, node: &str, priority: i64, key: &str) -> Resources {
        let mut r = Resources::default();
        if self.by_pod.is_empty() {
            // The usual case, asked for every node a pod is tried on: no lookup by name.
            return r;
        }
        for k in self.by_node.get(node).into_iter().flatten() {
            if k == key {
                continue;
            }
            if let Some(n) = self.by_pod.get(k)
                && n.priority >= priority
            {
                r.cpu_milli += n.want.cpu_milli;
                r.memory += n.want.memory;
                r.pods += n.want.pods;
            }
        }
        r
    }

    /// The pods nominated to `node` with less than `priority`.
    pub fn below(&self, node: &str, priority: i64) -> Vec<String> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|k| self.by_pod.get(*k).is_some_and(|n| n.priority < priority))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(cpu: &str) -> Value {
        json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}})
    }

    #[test]
    fn placements_account_and_move() {
        let mut p = Placements::default();
        p.add("default/a", "n1", pod("500m"));
        p.add("default/b", "n1", pod("250m"));
        assert_eq!(
            p.on("n1").map(|h| (h.used.cpu_milli, h.used.pods)),
            Some((750, 2))
        );
        // A refresh of the same pod does not count it twice; a move frees the old node.
        p.add("default/a", "n2", pod("500m"));
        assert_eq!(p.on("n1").map(|h| h.used.cpu_milli), Some(250));
        assert_eq!(p.node_of("default/a"), Some("n2"));
        assert_eq!(p.remove("default/b").as_deref(), Some("n1"));
        assert!(p.on("n1").is_none());
        assert_eq!(p.all().count(), 1);
        assert_eq!(p.remove("default/b"), None);
    }

    #[test]
    fn lowest_priority_follows_placements() {
        let mut p = Placements::default();
        assert_eq!(p.lowest_priority(), None);
        let with = |prio: i64| json!({"spec": {"priority": prio, "containers": [{}]}});
        p.add("default/a", "n1", with(5));
        p.add("default/b", "n2", with(-3));
        assert_eq!(p.lowest_priority(), Some(-3));
        p.add("default/b", "n2", with(7));
        assert_eq!(p.lowest_priority(), Some(5));
        p.remove("default/a");
        assert_eq!(p.lowest_priority(), Some(7));
    }

    #[test]
    fn anti_affinity_pods_are_indexed() {
        let mut p = Placements::default();
        let anti = json!({"spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}}}});
        p.add("default/a", "n1", anti);
        p.add("default/b", "n1", pod("1"));
        assert_eq!(p.with_anti().count(), 1);
        p.remove("default/a");
        assert_eq!(p.with_anti().count(), 0);
    }

    #[test]
    fn nodes_index_survives_removal_and_reports_relevant_changes() {
        let node = |name: &str, ready: &str| json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}});
        let mut n = Nodes::new([node("a", "True"), node("b", "True"), node("c", "True")]);
        assert!(n.remove("a"));
        assert_eq!(n.get("c").map(node_name), Some("c"));
        assert_eq!(n.len(), 2);
        let mut heartbeat = node("b", "True");
        heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:00Z");
        assert!(
            !n.upsert(heartbeat),
            "a heartbeat changes nothing the scheduler reads"
        );
        assert!(n.upsert(node("b", "False")));
        assert!(!n.at(n.index["b"]).1.ready);
    }
}
