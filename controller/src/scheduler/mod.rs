//! The scheduler: binds each pending pod to the best node that may take it, as Kubernetes'
//! default scheduler profile filters and scores: Ready and not cordoned, taints tolerated,
//! `nodeSelector` and node affinity, allocatable cpu, memory and pod count on top of the pods
//! already there (`nodes`), the pod's PersistentVolumeClaims (`volumes`: WaitForFirstConsumer
//! claims are provisioned on the chosen node before the pod is bound), topology spread and pod
//! (anti-)affinity (`pods`); `schedulingGates` hold a pod back. It is level-triggered: every
//! pass looks at all pending pods, and store events only wake it early.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub mod nodes;
pub mod pods;
pub mod volumes;

use pods::{Neighbours, Placed};
use volumes::Storage;

use crate::api::{self, ApiError, Objects, Part, resources};
use crate::quantity;
use crate::reconcile::events::{self, EventType};
use crate::reconcile::{Interest, Wake, wait_for_change};

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

/// What a scheduling pass reads: the nodes, what is placed on them, and the storage objects.
pub struct Snapshot<'a> {
    pub nodes: &'a [Value],
    /// Requests of the pods on each node.
    pub used: HashMap<String, Resources>,
    /// The same with [`DEFAULT_CPU_MILLI`] and [`DEFAULT_MEMORY`] for containers without
    /// requests, for scoring.
    pub nonzero: HashMap<String, (i128, i128)>,
    pub placed: Vec<Placed>,
    pub namespaces: &'a [Value],
    pub storage: Storage<'a>,
}

/// The taint effects that keep pods off a node.
const HARD_EFFECTS: &[&str] = &["NoSchedule", "NoExecute"];
/// What the scorer assumes a container without requests uses, as Kubernetes' scorer does, so
/// pods without requests still spread over nodes.
const DEFAULT_CPU_MILLI: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024;

/// min-max normalised to 0..=100 (all equal: 0), reversed when lower is better.
fn normalise(raw: &[i64], higher_is_better: bool) -> Vec<i64> {
    let (Some(&min), Some(&max)) = (raw.iter().min(), raw.iter().max()) else {
        return Vec::new();
    };
    raw.iter()
        .map(|&x| {
            if max == min {
                0
            } else if higher_is_better {
                (x - min) * 100 / (max - min)
            } else {
                (max - x) * 100 / (max - min)
            }
        })
        .collect()
}

impl Snapshot<'_> {
    /// Counts `pod` as placed on `node` for the rest of the pass.
    pub fn assume(&mut self, pod: &Value, node: &str) {
        let r = pod_requests(pod);
        let e = self.used.entry(node.to_string()).or_default();
        e.cpu_milli += r.cpu_milli;
        e.memory += r.memory;
        e.pods += 1;
        let (cpu, mem) = nonzero_requests(pod);
        let z = self.nonzero.entry(node.to_string()).or_default();
        z.0 += cpu;
        z.1 += mem;
        self.placed.push(Placed {
            pod: pod.clone(),
            node: node.to_string(),
        });
    }

    /// The first reasons, in Kubernetes' plugin order, why `pod` may not go on `node`.
    fn problems(&self, pod: &Value, node: &Value, claims: &volumes::Claims<'_>) -> Vec<String> {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let tols = nodes::tolerations(spec);
        if !node_ready(node) {
            return vec!["node(s) were not ready".into()];
        }
        if node["spec"]["unschedulable"].as_bool() == Some(true)
            && !tols
                .iter()
                .any(|t| nodes::tolerates(t, &nodes::unschedulable_taint()))
        {
            return vec!["node(s) were unschedulable".into()];
        }
        if let Some(t) = nodes::untolerated_taint(tols, node, HARD_EFFECTS) {
            return vec![format!(
                "node(s) had untolerated taint {}",
                nodes::describe_taint(t)
            )];
        }
        if !nodes::affinity_matches(spec, node) {
            return vec!["node(s) didn't match Pod's node affinity/selector".into()];
        }
        let around = Neighbours {
            nodes: self.nodes,
            placed: &self.placed,
            namespaces: self.namespaces,
        };
        if around.ports_conflict(pod, node) {
            return vec!["node(s) didn't have free ports for the requested pod ports".into()];
        }
        let want = pod_requests(pod);
        let alloc = allocatable(node);
        let used = self
            .used
            .get(nodes::node_name(node))
            .copied()
            .unwrap_or_default();
        let mut fit = Vec::new();
        if used.pods + want.pods > alloc.pods {
            fit.push("Too many pods".to_string());
        }
        if used.cpu_milli + want.cpu_milli > alloc.cpu_milli {
            fit.push("Insufficient cpu".to_string());
        }
        if used.memory + want.memory > alloc.memory {
            fit.push("Insufficient memory".to_string());
        }
        if !fit.is_empty() {
            return fit;
        }
        if let Some(p) = claims.problem(node) {
            return vec![p.into()];
        }
        if let Some(p) = around.spread_problem(pod, node) {
            return vec![p.into()];
        }
        if let Some(p) = around.affinity_problem(pod, node) {
            return vec![p.into()];
        }
        Vec::new()
    }

    /// The best of the feasible nodes, by Kubernetes' default score plugins and weights:
    /// TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2,
    /// NodeResourcesFit (least allocated) 1. Ties go to the first name.
    fn best<'n>(&self, pod: &Value, feasible: &[&'n Value]) -> Option<&'n Value> {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let around = Neighbours {
            nodes: self.nodes,
            placed: &self.placed,
            namespaces: self.namespaces,
        };
        let raw = |f: &dyn Fn(&Value) -> i64| feasible.iter().map(|n| f(n)).collect::<Vec<_>>();
        let taints = normalise(
            &raw(&|n| {
                n.pointer("/spec/taints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|t| t["effect"] == "PreferNoSchedule")
                    .filter(|t| {
                        !nodes::tolerations(spec)
                            .iter()
                            .any(|tol| nodes::tolerates(tol, t))
                    })
                    .count() as i64
            }),
            false,
        );
        let affinity = normalise(&raw(&|n| nodes::preferred_affinity_score(spec, n)), true);
        let spread = normalise(&raw(&|n| around.spread_crowding(pod, n)), false);
        let inter = normalise(&raw(&|n| around.affinity_score(pod, n)), true);
        let least = raw(&|n| self.free_percent(pod, n));
        let total =
            |i: usize| 3 * taints[i] + 2 * affinity[i] + 2 * spread[i] + 2 * inter[i] + least[i];
        (0..feasible.len())
            .max_by(|&a, &b| {
                total(a)
                    .cmp(&total(b))
                    .then_with(|| nodes::node_name(feasible[b]).cmp(nodes::node_name(feasible[a])))
            })
            .map(|i| feasible[i])
    }

    /// The mean share of cpu and memory left free on `node` with `pod` on it (0..=100).
    fn free_percent(&self, pod: &Value, node: &Value) -> i64 {
        let alloc = allocatable(node);
        let (used_cpu, used_mem) = self
            .nonzero
            .get(nodes::node_name(node))
            .copied()
            .unwrap_or_default();
        let (cpu, mem) = nonzero_requests(pod);
        let share = |used: i128, cap: i128| {
            if cap <= 0 {
                0
            } else {
                i64::try_from((cap - used.min(cap)) * 100 / cap).unwrap_or(0)
            }
        };
        (share(used_cpu + cpu, alloc.cpu_milli) + share(used_mem + mem, alloc.memory)) / 2
    }

    /// Decides where `pod` goes.
    pub fn choose(&self, pod: &Value) -> Decision {
        let gated = pod
            .pointer("/spec/schedulingGates")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        if gated {
            return Decision::Gated;
        }
        let total = self.nodes.len();
        let claims = match self.storage.claims_of(pod) {
            Ok(c) => c,
            Err(msg) => {
                return Decision::Unschedulable(format!("0/{total} nodes are available: {msg}."));
            }
        };
        if let Some(node) = claims.waiting_on() {
            return Decision::Wait(node.to_string());
        }
        let mut reasons: HashMap<String, usize> = HashMap::new();
        let mut feasible = Vec::new();
        for node in self.nodes {
            let problems = self.problems(pod, node, &claims);
            if problems.is_empty() {
                feasible.push(node);
            }
            for p in problems {
                *reasons.entry(p).or_default() += 1;
            }
        }
        match self.best(pod, &feasible) {
            Some(node) => {
                let node = nodes::node_name(node).to_string();
                if claims.delayed.is_empty() {
                    Decision::Bind(node)
                } else {
                    Decision::Provision {
                        node,
                        claims: claims.delayed,
                    }
                }
            }
            None => {
                let mut rs: Vec<String> = reasons
                    .into_iter()
                    .map(|(r, n)| format!("{n} {r}"))
                    .collect();
                rs.sort();
                let tail = if rs.is_empty() {
                    String::new()
                } else {
                    format!(" {}.", rs.join(", "))
                };
                Decision::Unschedulable(format!("0/{total} nodes are available:{tail}"))
            }
        }
    }
}

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

fn priority(pod: &Value) -> i64 {
    pod["spec"]["priority"].as_i64().unwrap_or(0)
}

/// One scheduling pass over every pending pod, highest priority and oldest first.
pub async fn schedule_once(objects: &Objects) -> Result<usize, ApiError> {
    let (pods, _) = objects.list(resources::pods(), None)?;
    let (node_list, _) = objects.list(resources::nodes(), None)?;
    let (namespaces, _) = objects.list(resources::namespaces(), None)?;
    let (claims, _) = objects.list(resources::persistent_volume_claims(), None)?;
    let (pvs, _) = objects.list(resources::persistent_volumes(), None)?;
    let (classes, _) = objects.list(resources::storage_classes(), None)?;
    let mut snap = Snapshot {
        nodes: &node_list,
        used: HashMap::new(),
        nonzero: HashMap::new(),
        placed: Vec::new(),
        namespaces: &namespaces,
        storage: Storage {
            claims: &claims,
            volumes: &pvs,
            classes: &classes,
        },
    };
    let mut pending = Vec::new();
    for p in pods {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            let mine = p["spec"]["schedulerName"]
                .as_str()
                .unwrap_or("default-scheduler")
                == "default-scheduler";
            if mine && p["metadata"]["deletionTimestamp"].is_null() {
                pending.push(p);
            }
        } else if !is_terminal(&p) {
            snap.assume(&p, &node);
        }
    }
    pending.sort_by(|a, b| {
        priority(b).cmp(&priority(a)).then_with(|| {
            a["metadata"]["creationTimestamp"]
                .as_str()
                .cmp(&b["metadata"]["creationTimestamp"].as_str())
        })
    });
    let mut placed = 0;
    for pod in pending {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match snap.choose(&pod) {
            Decision::Bind(node) => {
                let binding = json!({"target": {"kind": "Node", "name": node}});
                match api::bind_pod(objects, Some(&ns), &name, &binding).await {
                    Ok(()) => {
                        tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "bound");
                        let msg = format!("Successfully assigned {ns}/{name} to {node}");
                        events::record(
                            objects,
                            &pod,
                            EventType::Normal,
                            "Scheduled",
                            &msg,
                            "default-scheduler",
                        )
                        .await;
                        snap.assume(&pod, &node);
                        placed += 1;
                    }
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "binding failed; next pass retries")
                    }
                }
            }
            Decision::Provision { node, claims } => {
                match select_node(objects, &claims, &node).await {
                    Ok(()) => {
                        tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "claims to be provisioned on the chosen node");
                        snap.assume(&pod, &node);
                    }
                    Err(e) => tracing::debug!(pod = %name, error = %e, "cannot select node"),
                }
            }
            Decision::Wait(node) => snap.assume(&pod, &node),
            Decision::Gated => {
                not_scheduled(
                    objects,
                    &pod,
                    "SchedulingGated",
                    "Scheduling is blocked due to non-empty scheduling gates",
                )
                .await;
            }
            Decision::Unschedulable(msg) => {
                not_scheduled(objects, &pod, "Unschedulable", &msg).await;
            }
        }
    }
    Ok(placed)
}

/// Runs the scheduler until cancelled: a pass on every pod or node change, and every few seconds.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    loop {
        let after = objects.store.revision();
        if let Err(e) = schedule_once(&objects).await {
            tracing::warn!(error = %e, "scheduling pass failed");
        }
        let period = Duration::from_secs(5);
        let interest = Interest::Resources(&["pods", "nodes", "persistentvolumeclaims"]);
        let wake = wait_for_change(&objects.store, after, period, &cancel, move |e| {
            interest.matches(e)
        });
        if matches!(wake.await, Wake::Cancelled) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, mem: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name}, "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    fn snapshot(nodes: &[Value]) -> Snapshot<'_> {
        Snapshot {
            nodes,
            used: HashMap::new(),
            nonzero: HashMap::new(),
            placed: Vec::new(),
            namespaces: &[],
            storage: Storage {
                claims: &[],
                volumes: &[],
                classes: &[],
            },
        }
    }

    #[test]
    fn fits_by_cpu_memory_and_readiness() {
        let nodes = vec![
            node("a", "2", "1Gi", true),
            node("b", "4", "4Gi", false),
            node("c", "2", "2Gi", true),
        ];
        let mut snap = snapshot(&nodes);
        assert_eq!(
            snap.choose(&pod("500m", "512Mi")),
            Decision::Bind("c".into()),
            "the least allocated node"
        );
        snap.used.insert(
            "c".to_string(),
            Resources {
                cpu_milli: 1900,
                memory: 0,
                pods: 1,
            },
        );
        assert_eq!(
            snap.choose(&pod("500m", "512Mi")),
            Decision::Bind("a".into())
        );
        let Decision::Unschedulable(msg) = snap.choose(&pod("3", "3Gi")) else {
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
        let mut snap = snapshot(&nodes);
        let p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{}]}});
        let mut on = Vec::new();
        for _ in 0..4 {
            let Decision::Bind(n) = snap.choose(&p) else {
                panic!()
            };
            snap.assume(&p, &n);
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
        let nodes = vec![a, b, c];
        let snap = snapshot(&nodes);
        let Decision::Unschedulable(msg) =
            snap.choose(&json!({"spec": {"nodeSelector": {"disk": "hdd"}}}))
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
        assert_eq!(snap.choose(&tolerant), Decision::Bind("b".into()));
        let gated = json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}});
        assert_eq!(snap.choose(&gated), Decision::Gated);
        let cordon_tolerant = json!({"spec": {"nodeSelector": {"disk": "none"}, "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}});
        let Decision::Unschedulable(msg) = snap.choose(&cordon_tolerant) else {
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
        let classes = [json!({"metadata": {"name": "local-path"},
            "provisioner": crate::api::kinds::storageclass::LOCAL_PATH,
            "volumeBindingMode": "WaitForFirstConsumer"})];
        let mut claims = vec![json!({"metadata": {"name": "data", "namespace": "default"},
            "spec": {"storageClassName": "local-path"}, "status": {"phase": "Pending"}})];
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
        let mut snap = snapshot(&nodes);
        snap.storage.classes = &classes;
        snap.storage.claims = &claims;
        let Decision::Provision {
            node,
            claims: delayed,
        } = snap.choose(&pod)
        else {
            panic!()
        };
        assert_eq!(node, "a", "only a offers local-path storage");
        assert_eq!(delayed[0].name, "data");
        claims[0]["metadata"]["annotations"] = json!({volumes::SELECTED_NODE: "a"});
        let mut snap = snapshot(&nodes);
        snap.storage.classes = &classes;
        snap.storage.claims = &claims;
        assert_eq!(snap.choose(&pod), Decision::Wait("a".into()));
    }

    #[test]
    fn init_containers_count_by_their_largest() {
        let p = json!({"spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Mi"}}}, {"resources": {"requests": {"cpu": "500m"}}}]}});
        let r = pod_requests(&p);
        assert_eq!((r.cpu_milli, r.memory), (2000, 1 << 20));
    }
}
