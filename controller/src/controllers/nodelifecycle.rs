//! Node lifecycle, as kube-controller-manager's node-lifecycle-controller: a node whose agent
//! has neither renewed its Lease nor posted its status for the grace period
//! (`--node-monitor-grace-period`, 40 s) gets its conditions set to Unknown ("Kubelet stopped
//! posting node status."), the `node.kubernetes.io/unreachable` NoSchedule and NoExecute
//! taints, and its pods marked not Ready, so Services stop sending them traffic; a node that
//! says it is not Ready gets the `node.kubernetes.io/not-ready` taints. The taint eviction pass
//! then deletes the pods once their tolerations run out (300 s with the tolerations the API
//! adds to every pod, as DefaultTolerationSeconds does), and their owners replace them on live
//! nodes. A node that posts Ready again loses the taints.
//!
//! Freshness is measured on this member's clock from when it last saw a node's heartbeat
//! change, as Kubernetes' controller does, so a new leader gives every node a full grace
//! period instead of judging timestamps written before it led.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::name;
use crate::api::objects::decode;
use crate::api::{ApiError, Objects, Part, resources};
use crate::reconcile::events::{EventType, record};
use crate::reconcile::{Interest, Wake, wait_for_change};

/// The taint of a node whose agent stopped posting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent says it is not Ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Where node agents keep their Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// kube-controller-manager's `--node-monitor-grace-period`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(40);
/// How often nodes are checked with no change (`--node-monitor-period`).
const PERIOD: Duration = Duration::from_secs(5);
const COMPONENT: &str = "node-controller";
/// The conditions the controller sets to Unknown, as Kubernetes' does.
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The status of the node's Ready condition: "True", "False", "Unknown", or `None`.
fn ready(node: &Value) -> Option<&str> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
}

/// What says the node's agent is alive: its Lease's renew time and its Ready heartbeat. Any
/// change of it is a heartbeat.
pub fn heartbeat(node: &Value, lease: Option<&Value>) -> String {
    let renew = lease
        .and_then(|l| l.pointer("/spec/renewTime"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let posted = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastHeartbeatTime"].as_str())
        .unwrap_or_default();
    format!("{renew}|{posted}")
}

/// The taints this controller owns that a node with this Ready status should have.
pub fn wanted_taints(ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let key = match ready {
        Some("True") => return Vec::new(),
        Some("False") => NOT_READY,
        // Unknown, or never posted (set to Unknown once the grace period is over).
        _ => UNREACHABLE,
    };
    vec![(key, "NoSchedule"), (key, "NoExecute")]
}

/// The node's taints with this controller's made to be `wanted` (others kept as they are, and
/// ours that stay keep their timeAdded, from which tolerationSeconds count); `None` when
/// nothing changes.
pub fn taints_with(current: &[Value], wanted: &[(&str, &str)], now: &str) -> Option<Vec<Value>> {
    let ours = |t: &Value| t["key"] == UNREACHABLE || t["key"] == NOT_READY;
    let is = |t: &Value, (k, e): (&str, &str)| t["key"] == k && t["effect"] == e;
    let mut out: Vec<Value> = current
        .iter()
        .filter(|t| !ours(t) || wanted.iter().any(|w| is(t, *w)))
        .cloned()
        .collect();
    for w in wanted {
        if !out.iter().any(|t| is(t, *w)) {
            let mut t = json!({"key": w.0, "effect": w.1});
            if w.1 == "NoExecute" {
                t["timeAdded"] = json!(now);
            }
            out.push(t);
        }
    }
    (out.len() != current.len() || out.iter().zip(current).any(|(a, b)| a != b)).then_some(out)
}

/// The node's conditions with every one [`CONDITIONS`] names set to Unknown, as when its
/// agent stopped posting; `None` when they all are already.
pub fn unknown_conditions(current: &[Value], now: &str) -> Option<Vec<Value>> {
    let mut out = current.to_vec();
    let mut changed = false;
    for ty in CONDITIONS {
        match out.iter_mut().find(|c| c["type"] == ty) {
            Some(c) if c["status"] == "Unknown" => {}
            Some(c) => {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now);
                changed = true;
            }
            None => {
                out.push(json!({
                    "type": ty, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }));
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// What the controller remembers of one node between passes.
struct Seen {
    /// Its last heartbeat, and when this member saw it change.
    beat: String,
    at: Instant,
    /// The store revisions of the node and its Lease when a pass last went through it: while
    /// they stay, only the clock can change what a pass would do.
    revisions: (u64, Option<u64>),
}

/// What the controller remembers of each node between passes.
#[derive(Default)]
pub struct Monitor {
    seen: HashMap<String, Seen>,
}

impl Monitor {
    /// One pass over every node at `now`. Nodes and Leases are decoded only when they changed
    /// since the last pass or the node's grace period is over, so a pass over thousands of
    /// quiet nodes reads no JSON.
    pub async fn pass(
        &mut self,
        objects: &Objects,
        grace: Duration,
        now: Instant,
    ) -> Result<(), ApiError> {
        let node_prefix = resources::nodes().list_prefix(None);
        let lease_prefix = resources::leases().list_prefix(Some(NODE_LEASE_NAMESPACE));
        let (nodes, _) = objects.store.list(&node_prefix);
        let (leases, _) = objects.store.list(&lease_prefix);
        // By name, so a pass costs the same per node however many nodes there are.
        let leases: HashMap<&str, &crate::store::Record> = leases
            .iter()
            .filter_map(|(k, r)| Some((k.strip_prefix(&lease_prefix)?, r)))
            .collect();
        let names: std::collections::HashSet<&str> = nodes
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(&node_prefix))
            .collect();
        self.seen.retain(|n, _| names.contains(n.as_str()));
        for (key, rec) in &nodes {
            let Some(node_name) = key.strip_prefix(&node_prefix) else {
                continue;
            };
            let lease_rec = leases.get(node_name).copied();
            let revisions = (rec.mod_revision, lease_rec.map(|l| l.mod_revision));
            if let Some(seen) = self.seen.get(node_name)
                && seen.revisions == revisions
                && now.duration_since(seen.at) <= grace
            {
                continue;
            }
            let node = &decode(rec)?;
            let lease = lease_rec.map(decode).transpose()?;
            let beat = heartbeat(node, lease.as_ref());
            let entry = self
                .seen
                .entry(node_name.to_owned())
                .or_insert_with(|| Seen {
                    beat: beat.clone(),
                    at: now,
                    revisions: (0, None),
                });
            if entry.beat != beat {
                entry.beat = beat;
                entry.at = now;
            }
            let stale = now.duration_since(entry.at) > grace;
            let mut status = ready(node).map(str::to_owned);
            if stale {
                let stamp = crate::api::objects::now();
                let conds: Vec<Value> = node
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(updated) = unknown_conditions(&conds, &stamp) {
                    self.set_unknown(objects, node, updated).await?;
                }
                status = Some("Unknown".to_owned());
            } else if status.is_none() {
                // A new node that has not posted yet: its grace period is not over.
                entry.revisions = revisions;
                continue;
            }
            let current: Vec<Value> = node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let wanted = wanted_taints(status.as_deref());
            if let Some(taints) = taints_with(&current, &wanted, &crate::api::objects::now()) {
                let r = objects
                    .modify(resources::nodes(), None, node_name, Part::Main, |n| {
                        n["spec"]["taints"] = json!(taints);
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                tracing::info!(node = %node_name, taints = ?wanted, "node taints updated");
            }
            // Only once everything for the node is written: a pass that failed on it comes
            // back to it.
            if let Some(seen) = self.seen.get_mut(node_name) {
                seen.revisions = revisions;
            }
        }
        Ok(())
    }

    /// Marks the node's conditions Unknown, its pods not Ready, and says so in Events.
    async fn set_unknown(
        &self,
        objects: &Objects,
        node: &Value,
        conditions: Vec<Value>,
    ) -> Result<(), ApiError> {
        let node_name = name(node);
        tracing::warn!(node = %node_name, "node stopped posting status: marking it Unknown");
        let r = objects
            .modify(resources::nodes(), None, node_name, Part::Status, |n| {
                n["status"]["conditions"] = json!(conditions);
                Ok(())
            })
            .await;
        match r {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        record(
            objects,
            node,
            EventType::Normal,
            "NodeNotReady",
            &format!("Node {node_name} status is now: NodeNotReady"),
            COMPONENT,
        )
        .await;
        let (pods, _) = objects.list(resources::pods(), None)?;
        for pod in pods
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node_name))
        {
            mark_not_ready(objects, pod).await?;
            record(
                objects,
                pod,
                EventType::Warning,
                "NodeNotReady",
                "Node is not ready",
                COMPONENT,
            )
            .await;
        }
        Ok(())
    }
}

/// Sets the pod's Ready condition to False (the endpoints controller then takes it out of its
/// Services' endpoints).
async fn mark_not_ready(objects: &Objects, pod: &Value) -> Result<(), ApiError> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str);
    let r = objects
        .modify(resources::pods(), ns, name(pod), Part::Status, |p| {
            if let Some(Value::Array(cs)) = p.pointer_mut("/status/conditions") {
                for c in cs.iter_mut().filter(|c| c["type"] == "Ready") {
                    if c["status"] != "False" {
                        c["status"] = json!("False");
                        c["lastTransitionTime"] = json!(crate::api::objects::now());
                    }
                }
            }
            Ok(())
        })
        .await;
    match r {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Watches nodes until cancelled: every [`PERIOD`], and when a node or Lease changes, at most
/// once a second (a pass reads every node; heartbeats come every 10 s and the grace period is
/// tens of seconds, so a second's delay changes nothing, while thousands of node writes a
/// second would otherwise each cost a pass).
pub async fn run(objects: Objects, grace: Duration, cancel: CancellationToken) {
    const NODES: Interest = Interest::Resources(&["nodes", "leases"]);
    let mut monitor = Monitor::default();
    loop {
        let after = objects.store.revision();
        let started = Instant::now();
        if let Err(e) = monitor.pass(&objects, grace, started).await {
            tracing::warn!(error = %e, "node lifecycle pass failed");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())) => {}
        }
        let wake =
            wait_for_change(&objects.store, after, PERIOD, &cancel, |e| NODES.matches(e)).await;
        if matches!(wake, Wake::Cancelled) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Value {
        json!({"key": key, "effect": effect})
    }

    #[test]
    fn a_ready_node_has_none_of_our_taints_and_others_get_theirs() {
        assert!(wanted_taints(Some("True")).is_empty());
        assert_eq!(
            wanted_taints(Some("False")),
            [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
        );
        assert_eq!(
            wanted_taints(Some("Unknown")),
            [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
        );
    }

    #[test]
    fn taints_change_only_where_ours_do() {
        let admin = taint("dedicated", "NoSchedule");
        let now = "2026-12-07T10:00:00Z";
        let wanted = wanted_taints(Some("Unknown"));
        let added = taints_with(std::slice::from_ref(&admin), &wanted, now).expect("changed");
        assert_eq!(added[0], admin);
        assert_eq!(added[1], taint(UNREACHABLE, "NoSchedule"));
        assert_eq!(added[2]["timeAdded"], now);
        // Again later: unchanged, and the eviction clock keeps its start.
        assert_eq!(taints_with(&added, &wanted, "2026-12-07T10:05:00Z"), None);
        // Unreachable → not ready: swapped.
        let swapped = taints_with(&added, &wanted_taints(Some("False")), now).expect("changed");
        assert!(swapped.iter().all(|t| t["key"] != UNREACHABLE));
        assert_eq!(swapped.len(), 3);
        // Back to Ready: only the admin's.
        assert_eq!(
            taints_with(&swapped, &wanted_taints(Some("True")), now),
            Some(vec![admin])
        );
    }

    #[test]
    fn a_silent_nodes_conditions_become_unknown_once() {
        let now = "2026-12-07T10:00:00Z";
        let conds = vec![
            json!({"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-07T09:59:00Z"}),
            json!({"type": "MemoryPressure", "status": "False"}),
        ];
        let u = unknown_conditions(&conds, now).expect("changed");
        assert_eq!(u.len(), 4);
        assert_eq!(u[0]["status"], "Unknown");
        assert_eq!(u[0]["reason"], "NodeStatusUnknown");
        assert_eq!(u[0]["message"], "Kubelet stopped posting node status.");
        // The last heartbeat stays what the agent last wrote.
        assert_eq!(u[0]["lastHeartbeatTime"], "2026-12-07T09:59:00Z");
        assert_eq!(u[2]["type"], "DiskPressure");
        assert_eq!(u[2]["reason"], "NodeStatusNeverUpdated");
        assert_eq!(unknown_conditions(&u, now), None);
    }

    #[test]
    fn a_heartbeat_is_a_lease_renewal_or_a_status_post() {
        let node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1"}]}});
        let lease = json!({"spec": {"renewTime": "r1"}});
        let a = heartbeat(&node, Some(&lease));
        let renewed = json!({"spec": {"renewTime": "r2"}});
        assert_ne!(a, heartbeat(&node, Some(&renewed)));
        assert_ne!(a, heartbeat(&node, None));
    }
}
