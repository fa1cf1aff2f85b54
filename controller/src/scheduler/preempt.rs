//! Preemption, as kube-scheduler's DefaultPreemption plugin does it when a pod fits nowhere:
//! on each node that taking pods off could open (room, host ports, anti-affinity, spread),
//! every pod of lower priority is taken off in a dry run; if the pod then fits, the most
//! important of them (PodDisruptionBudget-protected first, then by priority and age) are put
//! back one by one while it still fits, and the rest are that node's victims. The node whose
//! victims break the fewest budgets, then have the lowest highest priority, the lowest sum of
//! priorities and are fewest, is chosen; the scheduler then deletes its victims and nominates
//! the pod to it.

use std::borrow::Cow;

use serde_json::Value;

use super::decide::Tally;
use super::priority;
use super::view::View;
use crate::api::selectors::selector_matches;

/// Why a pod may not preempt, in kube-scheduler's words.
pub const NEVER: &str = "not eligible due to preemptionPolicy=Never.";
pub const TERMINATING: &str = "not eligible due to a terminating pod on the nominated node.";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// The `DisruptionTarget` condition's reason on a victim.
pub const REASON: &str = "PreemptionByScheduler";

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone)]
pub struct Budget {
    namespace: String,
    selector: Value,
    allowed: i64,
}

impl Budget {
    /// The budget, unless its selector is empty (which protects nothing here, as in Kubernetes'
    /// preemption).
    pub fn of(pdb: &Value) -> Option<Budget> {
        let selector = pdb.pointer("/spec/selector")?;
        let empty = selector.as_object().is_none_or(|s| {
            s.values().all(|v| {
                v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
                    || v.is_null()
            })
        });
        if empty {
            return None;
        }
        Some(Budget {
            namespace: pdb["metadata"]["namespace"].as_str()?.to_string(),
            selector: selector.clone(),
            allowed: pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        })
    }

    fn covers(&self, pod: &Value) -> bool {
        pod["metadata"]["namespace"].as_str() == Some(self.namespace.as_str())
            && selector_matches(
                &self.selector,
                pod.pointer("/metadata/labels").unwrap_or(&Value::Null),
            )
    }
}

/// Whether the pod may preempt others: not with `preemptionPolicy: Never`, and not again
/// while pods it preempted on its nominated node are still terminating.
pub fn eligible(view: &View, pod: &Value, key: &str) -> Result<(), &'static str> {
    if pod
        .pointer("/spec/preemptionPolicy")
        .and_then(Value::as_str)
        == Some("Never")
    {
        return Err(NEVER);
    }
    let Some(node) = view.nominated.node_of(key).or_else(|| {
        pod.pointer("/status/nominatedNodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    }) else {
        return Ok(());
    };
    let p = priority(pod);
    let waiting = view.placed.on(node).is_some_and(|here| {
        here.pods
            .values()
            .any(|v| priority(v) < p && terminating_by_preemption(v))
    });
    if waiting { Err(TERMINATING) } else { Ok(()) }
}

fn terminating_by_preemption(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == REASON)
}

/// Pods to take off a node, `namespace/name` and the pod, most important first.
pub type Victims = Vec<(String, Value)>;

/// A node chosen for preemption and the pods to take off it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub node: String,
    pub victims: Victims,
}

/// One node's outcome of the dry run.
struct Found {
    node: usize,
    victims: Victims,
    violations: usize,
}

/// More important first: higher priority, then started earlier.
fn importance(a: &Value, b: &Value) -> std::cmp::Ordering {
    priority(b)
        .cmp(&priority(a))
        .then_with(|| start_time(a).cmp(start_time(b)))
}

fn start_time(pod: &Value) -> &str {
    pod.pointer("/status/startTime")
        .or_else(|| pod.pointer("/metadata/creationTimestamp"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// How many nodes to find victims on before choosing: 10% of those that could help, at least
/// 100 (kube-scheduler's defaults).
fn candidates_to_find(potential: usize) -> usize {
    (potential / 10).max(100).min(potential)
}

impl View {
    /// Finds where the pod could go by taking lower-priority pods off a node (`resolvable`: the
    /// nodes whose filters failed for reasons that could change that way), or says why nowhere,
    /// as the message after `preemption: `. `budgets` are read only if there is a dry run.
    pub fn preempt(
        &mut self,
        pod: &Value,
        resolvable: &[usize],
        budgets: impl FnOnce() -> Vec<Budget>,
    ) -> Result<Plan, String> {
        let total = self.nodes.len();
        let mut tally = Tally::default();
        if self
            .placed
            .lowest_priority()
            .is_none_or(|lowest| lowest >= priority(pod))
        {
            // No pod anywhere is below this one: no node has victims.
            tally.add_n(Cow::Borrowed(NO_VICTIMS), resolvable.len());
            tally.add_n(Cow::Borrowed(NOT_HELPFUL), total - resolvable.len());
            return Err(tally.message(total));
        }
        let budgets = if resolvable.is_empty() {
            Vec::new()
        } else {
            budgets()
        };
        let budgets = budgets.as_slice();
        let enough = candidates_to_find(resolvable.len());
        let mut found: Vec<Found> = Vec::new();
        let start = if resolvable.is_empty() {
            0
        } else {
            self.next_start % resolvable.len()
        };
        let mut looked = 0;
        for k in 0..resolvable.len() {
            if found.len() >= enough && found.iter().any(|f| f.violations == 0) {
                break;
            }
            looked += 1;
            let i = resolvable[(start + k) % resolvable.len()];
            match self.victims_on(pod, i, budgets) {
                Ok((victims, violations)) => found.push(Found {
                    node: i,
                    victims,
                    violations,
                }),
                Err(reasons) => {
                    for r in reasons {
                        tally.add(r);
                    }
                }
            }
        }
        let Some(best) = pick(found) else {
            tally.add_n(Cow::Borrowed(NOT_HELPFUL), total - looked);
            return Err(tally.message(total));
        };
        Ok(Plan {
            node: self.nodes.at(best.node).1.name.clone(),
            victims: best.victims,
        })
    }

    /// The fewest and least important pods of lower priority to take off node `i` for the pod
    /// to fit, with how many of them break a budget; or why it would not fit anyway.
    fn victims_on(
        &mut self,
        pod: &Value,
        i: usize,
        budgets: &[Budget],
    ) -> Result<(Victims, usize), Vec<Cow<'static, str>>> {
        let p = priority(pod);
        let name = self.nodes.at(i).1.name.clone();
        let mut lower: Vec<(String, Value)> = self
            .placed
            .on(&name)
            .into_iter()
            .flat_map(|here| here.pods.iter())
            .filter(|(_, v)| priority(v) < p)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if lower.is_empty() {
            return Err(vec![Cow::Borrowed(NO_VICTIMS)]);
        }
        for (k, _) in &lower {
            self.placed.remove(k);
        }
        let fits = |view: &View| {
            let claims = match view.storage().claims_of(pod) {
                Ok(c) => c,
                Err(msg) => return Err(vec![Cow::Owned(msg)]),
            };
            let c = view.candidate(pod);
            let (n, facts) = view.nodes.at(i);
            match view.problem(&c, n, facts, &claims) {
                None => Ok(()),
                Some(problem) => {
                    let mut t = Tally::default();
                    problem.count(&mut t);
                    Err(t.into_reasons())
                }
            }
        };
        if let Err(reasons) = fits(self) {
            for (k, v) in lower {
                self.placed.add(&k, &name, v);
            }
            return Err(reasons);
        }
        lower.sort_by(|a, b| importance(&a.1, &b.1));
        // Budget-protected pods are put back first, so they are the last to go.
        let mut left: Vec<i64> = budgets.iter().map(|b| b.allowed).collect();
        let (mut protected, mut free) = (Vec::new(), Vec::new());
        for (k, v) in lower {
            let mut breaks = false;
            for (b, left) in budgets.iter().zip(left.iter_mut()) {
                if b.covers(&v) {
                    *left -= 1;
                    breaks |= *left < 0;
                }
            }
            if breaks {
                protected.push((k, v));
            } else {
                free.push((k, v));
            }
        }
        let mut victims = Vec::new();
        let mut violations = 0;
        for (breaks, (k, v)) in protected
            .into_iter()
            .map(|x| (true, x))
            .chain(free.into_iter().map(|x| (false, x)))
        {
            self.placed.add(&k, &name, v.clone());
            if fits(self).is_err() {
                self.placed.remove(&k);
                violations += usize::from(breaks);
                victims.push((k, v));
            }
        }
        for (k, v) in &victims {
            self.placed.add(k, &name, v.clone());
        }
        victims.sort_by(|a, b| importance(&a.1, &b.1));
        Ok((victims, violations))
    }
}

/// kube-scheduler's choice among nodes with victims: fewest budget violations, lowest highest
/// victim priority, lowest sum of priorities, fewest victims, the latest-started most
/// important victim; then the first.
fn pick(found: Vec<Found>) -> Option<Found> {
    let key = |f: &Found| {
        let top = f
            .victims
            .first()
            .map(|(_, v)| priority(v))
            .unwrap_or(i64::MIN);
        let sum: i128 = f
            .victims
            .iter()
            .map(|(_, v)| i128::from(priority(v)) + i128::from(i32::MAX) + 1)
            .sum();
        let earliest_top = f
            .victims
            .iter()
            .filter(|(_, v)| priority(v) == top)
            .map(|(_, v)| start_time(v).to_string())
            .min()
            .unwrap_or_default();
        (
            f.violations,
            top,
            sum,
            f.victims.len(),
            std::cmp::Reverse(earliest_top),
        )
    };
    let mut best: Option<(Found, _)> = None;
    for f in found {
        let k = key(&f);
        if best.as_ref().is_none_or(|(_, bk)| k < *bk) {
            best = Some((f, k));
        }
    }
    best.map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduler::Decision;
    use crate::scheduler::view::Nodes;

    fn node(name: &str, cpu: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "status": {
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(name: &str, cpu: &str, prio: i64, started: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"priority": prio, "containers": [{"resources": {"requests": {"cpu": cpu}}}]},
            "status": {"startTime": started}})
    }

    fn view(nodes: &[&str]) -> View {
        View {
            nodes: Nodes::new(nodes.iter().map(|n| node(n, "2"))),
            ..View::default()
        }
    }

    fn place(v: &mut View, node: &str, p: Value) {
        let key = crate::scheduler::pod_key(&p);
        v.placed.add(&key, node, p);
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.victims.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn takes_the_fewest_least_important_pods_off_the_cheapest_node() {
        let mut v = view(&["a", "b"]);
        place(&mut v, "a", pod("a-low", "1", 10, "2026-01-01T00:00:00Z"));
        place(&mut v, "a", pod("a-mid", "1", 50, "2026-01-01T00:00:00Z"));
        place(&mut v, "b", pod("b-low1", "1", 10, "2026-01-01T00:00:00Z"));
        place(&mut v, "b", pod("b-low2", "1", 10, "2026-01-02T00:00:00Z"));
        let big = pod("big", "1", 100, "");
        let (d, resolvable) = v.decide(&big);
        assert_eq!(
            d,
            Decision::Unschedulable("0/2 nodes are available: 2 Insufficient cpu.".into())
        );
        let plan = v.preempt(&big, &resolvable, Vec::new).expect("a plan");
        // Node a would lose a priority-10 pod, as would b; a's lowest is as low, so the sum
        // decides: one victim of 10 either way, then the latest-started top victim (b-low2).
        assert_eq!(plan.node, "b");
        assert_eq!(names(&plan), ["default/b-low2"]);
        // The dry run left every pod where it was.
        assert_eq!(v.placed.on("a").map(|h| h.pods.len()), Some(2));
        assert_eq!(v.placed.on("b").map(|h| h.pods.len()), Some(2));
    }

    #[test]
    fn prefers_the_node_whose_victims_matter_least() {
        let mut v = view(&["a", "b"]);
        place(&mut v, "a", pod("a-mid", "2", 50, "2026-01-01T00:00:00Z"));
        place(&mut v, "b", pod("b-low", "2", 10, "2026-01-01T00:00:00Z"));
        let big = pod("big", "2", 100, "");
        let (_, resolvable) = v.decide(&big);
        let plan = v.preempt(&big, &resolvable, Vec::new).expect("a plan");
        assert_eq!(
            (plan.node.as_str(), names(&plan)),
            ("b", vec!["default/b-low"])
        );
    }

    #[test]
    fn budgets_protect_pods_when_another_choice_exists() {
        let mut v = view(&["a", "b"]);
        place(&mut v, "a", pod("guarded", "2", 10, "2026-01-01T00:00:00Z"));
        place(&mut v, "b", pod("other", "2", 20, "2026-01-01T00:00:00Z"));
        let pdb = json!({"metadata": {"name": "g", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0}});
        let budgets: Vec<Budget> = Budget::of(&pdb).into_iter().collect();
        let big = pod("big", "2", 100, "");
        let (_, resolvable) = v.decide(&big);
        let plan = v
            .preempt(&big, &resolvable, || budgets.clone())
            .expect("a plan");
        assert_eq!(
            plan.node, "b",
            "the unguarded pod goes, though its priority is higher"
        );
        assert!(
            Budget::of(&json!({"metadata": {"namespace": "default"}, "spec": {"selector": {}}}))
                .is_none()
        );
    }

    #[test]
    fn says_why_preemption_cannot_help() {
        let mut v = view(&["a", "b", "c"]);
        place(&mut v, "a", pod("a-high", "2", 500, "2026-01-01T00:00:00Z"));
        place(&mut v, "b", pod("b-low", "1", 1, "2026-01-01T00:00:00Z"));
        v.nodes.upsert(
            json!({"metadata": {"name": "c"}, "spec": {"unschedulable": true}, "status": {
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let big = pod("big", "3", 100, "");
        let (_, resolvable) = v.decide(&big);
        assert_eq!(resolvable.len(), 2);
        let msg = v.preempt(&big, &resolvable, Vec::new).expect_err("no plan");
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        let equal = pod("equal", "3", 1, "");
        let (_, resolvable) = v.decide(&equal);
        let read = std::cell::Cell::new(false);
        let msg = v
            .preempt(&equal, &resolvable, || {
                read.set(true);
                Vec::new()
            })
            .expect_err("nothing below it");
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        assert!(!read.get(), "no budgets are read when no pod is below");
    }

    #[test]
    fn eligibility() {
        let mut v = view(&["a"]);
        let mut never = pod("n", "1", 100, "");
        never["spec"]["preemptionPolicy"] = json!("Never");
        assert_eq!(eligible(&v, &never, "default/n"), Err(NEVER));
        let p = pod("p", "1", 100, "");
        assert_eq!(eligible(&v, &p, "default/p"), Ok(()));
        let mut victim = pod("v", "1", 1, "");
        victim["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        victim["status"]["conditions"] = json!([{"type": "DisruptionTarget", "reason": REASON}]);
        place(&mut v, "a", victim);
        v.nominated.set("default/p", "a", &p);
        assert_eq!(eligible(&v, &p, "default/p"), Err(TERMINATING));
    }

    #[test]
    fn a_nominated_pod_keeps_its_room_from_lower_priorities() {
        let mut v = view(&["a"]);
        let big = pod("big", "2", 100, "");
        v.nominated.set("default/big", "a", &big);
        let Decision::Unschedulable(msg) = v.choose(&pod("small", "1", 0, "")) else {
            panic!("the room is kept")
        };
        assert_eq!(msg, "0/1 nodes are available: 1 Insufficient cpu.");
        assert_eq!(
            v.choose(&pod("higher", "1", 200, "")),
            Decision::Bind("a".into())
        );
        assert_eq!(v.choose(&big), Decision::Bind("a".into()));
    }
}
