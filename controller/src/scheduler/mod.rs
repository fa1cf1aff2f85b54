//! The scheduler: binds each pending pod to a Ready, schedulable node whose allocatable cpu,
//! memory and pod count fit the pod's requests on top of the pods already bound there. It is
//! level-triggered: every pass looks at all pending pods, and store events only wake it early.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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

fn node_ready(node: &Value) -> bool {
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

/// Why no node fits, per node, in the scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    Unschedulable(String),
}

/// Picks the node for `pod`: the fitting node with the most free memory (ties by name).
pub fn choose(pod: &Value, nodes: &[Value], bound: &HashMap<String, Resources>) -> Decision {
    let want = pod_requests(pod);
    let mut reasons: HashMap<&'static str, usize> = HashMap::new();
    let mut best: Option<(i128, String)> = None;
    for node in nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !node_ready(node) {
            *reasons.entry("node(s) were not ready").or_default() += 1;
            continue;
        }
        if node["spec"]["unschedulable"].as_bool() == Some(true) {
            *reasons.entry("node(s) were unschedulable").or_default() += 1;
            continue;
        }
        let alloc = allocatable(node);
        let used = bound.get(&name).copied().unwrap_or_default();
        let mut fits = true;
        if used.pods + want.pods > alloc.pods {
            *reasons.entry("Too many pods").or_default() += 1;
            fits = false;
        }
        if used.cpu_milli + want.cpu_milli > alloc.cpu_milli {
            *reasons.entry("Insufficient cpu").or_default() += 1;
            fits = false;
        }
        if used.memory + want.memory > alloc.memory {
            *reasons.entry("Insufficient memory").or_default() += 1;
            fits = false;
        }
        if fits {
            let free = alloc.memory - used.memory - want.memory;
            if best
                .as_ref()
                .is_none_or(|(f, n)| free > *f || (free == *f && name < *n))
            {
                best = Some((free, name));
            }
        }
    }
    match best {
        Some((_, n)) => Decision::Bind(n),
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
            Decision::Unschedulable(format!("0/{} nodes are available:{tail}", nodes.len()))
        }
    }
}

/// One scheduling pass over every pending pod.
pub async fn schedule_once(objects: &Objects) -> Result<usize, ApiError> {
    let (pods, _) = objects.list(resources::pods(), None)?;
    let (nodes, _) = objects.list(resources::nodes(), None)?;
    let mut bound: HashMap<String, Resources> = HashMap::new();
    let mut pending = Vec::new();
    for p in pods {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("");
        if node.is_empty() {
            let mine = p["spec"]["schedulerName"]
                .as_str()
                .unwrap_or("default-scheduler")
                == "default-scheduler";
            if mine && p["metadata"]["deletionTimestamp"].is_null() {
                pending.push(p);
            }
        } else if !is_terminal(&p) {
            let r = pod_requests(&p);
            let e = bound.entry(node.to_string()).or_default();
            e.cpu_milli += r.cpu_milli;
            e.memory += r.memory;
            e.pods += 1;
        }
    }
    let mut placed = 0;
    for pod in pending {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match choose(&pod, &nodes, &bound) {
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
                        let r = pod_requests(&pod);
                        let e = bound.entry(node).or_default();
                        e.cpu_milli += r.cpu_milli;
                        e.memory += r.memory;
                        e.pods += 1;
                        placed += 1;
                    }
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "binding failed; next pass retries")
                    }
                }
            }
            Decision::Unschedulable(msg) => {
                let already = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["message"] == msg.as_str());
                if already {
                    continue;
                }
                let r = objects
                    .modify(resources::pods(), Some(&ns), &name, Part::Status, |p| {
                        let cs = p["status"]
                            .as_object_mut()
                            .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
                        if let Some(Value::Array(cs)) = cs {
                            cs.retain(|c| c["type"] != "PodScheduled");
                            cs.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": api::objects::now()}));
                        }
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(p) => {
                        events::record(
                            objects,
                            &p,
                            EventType::Warning,
                            "FailedScheduling",
                            &msg,
                            "default-scheduler",
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "cannot record Unschedulable")
                    }
                }
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
        let interest = Interest::Resources(&["pods", "nodes"]);
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

    #[test]
    fn fits_by_cpu_memory_and_readiness() {
        let nodes = vec![
            node("a", "2", "1Gi", true),
            node("b", "4", "4Gi", false),
            node("c", "1", "2Gi", true),
        ];
        let mut bound = HashMap::new();
        assert_eq!(
            choose(&pod("500m", "512Mi"), &nodes, &bound),
            Decision::Bind("c".into())
        );
        bound.insert(
            "c".to_string(),
            Resources {
                cpu_milli: 900,
                memory: 0,
                pods: 1,
            },
        );
        assert_eq!(
            choose(&pod("500m", "512Mi"), &nodes, &bound),
            Decision::Bind("a".into())
        );
        let Decision::Unschedulable(msg) = choose(&pod("3", "3Gi"), &nodes, &bound) else {
            panic!("should not fit")
        };
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient cpu, 2 Insufficient memory."
        );
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
