//! Placement relative to other pods, as Kubernetes' InterPodAffinity and PodTopologySpread
//! plugins decide it: required pod affinity and anti-affinity (the incoming pod's terms, and the
//! anti-affinity terms of pods already placed, which hold both ways), preferred terms as a
//! score, and `topologySpreadConstraints` (DoNotSchedule filters, ScheduleAnyway scores).
//!
//! Topology domains are node label values: a term with `topologyKey: kubernetes.io/hostname`
//! speaks of single nodes, one with a zone label of groups of them. What a pod's spread
//! constraints count is worked out once per pod (`Spread`), as the plugin's PreFilter does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::nodes::{affinity_matches, label, node_name, tolerations, untolerated_taint};
use super::view::{Nodes, Placements};
use crate::api::selectors::selector_matches;
use crate::api::strategy::str_at as s;

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `labelSelector` of a term or constraint, with `matchLabelKeys` (and `mismatchLabelKeys`)
/// turned into expressions on the owner pod's values of those labels.
fn effective_selector(term: &Value, owner: &Value) -> Value {
    let mut sel = term.get("labelSelector").cloned().unwrap_or(Value::Null);
    let extra: Vec<Value> = [("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")]
        .iter()
        .flat_map(|(field, op)| {
            arr(term, &format!("/{field}"))
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|k| {
                    let v = owner.pointer("/metadata/labels")?.get(k)?.as_str()?;
                    Some(json!({"key": k, "operator": op, "values": [v]}))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if !extra.is_empty() && sel.is_object() {
        let exprs = sel
            .as_object_mut()
            .map(|o| o.entry("matchExpressions").or_insert_with(|| json!([])));
        if let Some(Value::Array(e)) = exprs {
            e.extend(extra);
        }
    }
    sel
}

/// Whether `target` is one of the pods `term` (owned by `owner`) speaks of: in its namespaces
/// (the owner's when none are named) and matched by its selector.
fn term_selects(term: &Value, owner: &Value, target: &Value, namespaces: &[Value]) -> bool {
    let target_ns = s(target, "/metadata/namespace");
    let named: Vec<&str> = arr(term, "/namespaces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ns_selector = term.get("namespaceSelector").filter(|v| !v.is_null());
    let in_ns = if named.is_empty() && ns_selector.is_none() {
        target_ns == s(owner, "/metadata/namespace")
    } else {
        named.contains(&target_ns)
            || ns_selector.is_some_and(|sel| {
                namespaces.iter().any(|n| {
                    s(n, "/metadata/name") == target_ns
                        && selector_matches(
                            sel,
                            n.pointer("/metadata/labels").unwrap_or(&Value::Null),
                        )
                })
            })
    };
    in_ns
        && selector_matches(
            &effective_selector(term, owner),
            target.pointer("/metadata/labels").unwrap_or(&Value::Null),
        )
}

/// A hostPort: host IP, protocol, port.
pub type HostPort = (String, String, i64);

/// The pod's hostPorts.
pub fn host_ports(pod: &Value) -> Vec<HostPort> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .flat_map(|ptr| arr(pod, ptr))
        .flat_map(|c| arr(c, "/ports"))
        .filter_map(|p| {
            let port = p["hostPort"].as_i64().filter(|p| *p > 0)?;
            let ip = match s(p, "/hostIP") {
                "" => "0.0.0.0",
                ip => ip,
            };
            let proto = match s(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            Some((ip.to_string(), proto.to_string(), port))
        })
        .collect()
}

/// What the pods around a node say about placing a pod there.
pub struct Neighbours<'a> {
    pub nodes: &'a Nodes,
    pub placed: &'a Placements,
    pub namespaces: &'a [Value],
}

const AFFINITY: &str = "/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution";
const ANTI: &str = "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution";
const PREF_AFFINITY: &str =
    "/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution";
const PREF_ANTI: &str =
    "/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution";

/// Whether the pod has required pod affinity or anti-affinity terms of its own.
pub fn has_required_terms(pod: &Value) -> bool {
    !arr(pod, AFFINITY).is_empty() || !arr(pod, ANTI).is_empty()
}

/// Whether the pod has preferred pod affinity or anti-affinity terms.
pub fn has_preferred_terms(pod: &Value) -> bool {
    !arr(pod, PREF_AFFINITY).is_empty() || !arr(pod, PREF_ANTI).is_empty()
}

/// Whether the pod asks for pods to be near it (so another pod's arrival may let it on).
pub fn wants_neighbours(pod: &Value) -> bool {
    !arr(pod, AFFINITY).is_empty()
}

impl Neighbours<'_> {
    /// The domain (`topologyKey` value) of the node a placed pod is on.
    fn domain_of(&self, node: &str, key: &str) -> Option<&str> {
        self.nodes.get(node).and_then(|n| label(n, key))
    }

    /// Why `pod` may not go on `node` by pod (anti-)affinity, in the scheduler's words.
    pub fn affinity_problem(&self, pod: &Value, node: &Value) -> Option<&'static str> {
        for term in arr(pod, AFFINITY) {
            let key = s(term, "/topologyKey");
            let Some(domain) = label(node, key) else {
                return Some("node(s) didn't match pod affinity rules");
            };
            let mut matching = self
                .placed
                .all()
                .filter(|(_, p)| term_selects(term, pod, p, self.namespaces))
                .peekable();
            let first = matching.peek().is_none() && term_selects(term, pod, pod, self.namespaces);
            let here = matching.any(|(n, _)| self.domain_of(n, key) == Some(domain));
            // The first pod of a group that selects itself may go anywhere.
            if !here && !first {
                return Some("node(s) didn't match pod affinity rules");
            }
        }
        for term in arr(pod, ANTI) {
            let key = s(term, "/topologyKey");
            let Some(domain) = label(node, key) else {
                continue;
            };
            if self.placed.all().any(|(n, p)| {
                self.domain_of(n, key) == Some(domain)
                    && term_selects(term, pod, p, self.namespaces)
            }) {
                return Some("node(s) didn't match pod anti-affinity rules");
            }
        }
        for (n, p) in self.placed.with_anti() {
            for term in arr(p, ANTI) {
                let key = s(term, "/topologyKey");
                let Some(domain) = label(node, key) else {
                    continue;
                };
                if self.domain_of(n, key) == Some(domain)
                    && term_selects(term, p, pod, self.namespaces)
                {
                    return Some("node(s) didn't satisfy existing pods anti-affinity rules");
                }
            }
        }
        None
    }

    /// Whether one of the pod's hostPorts is taken on `node` (same port and protocol, and the
    /// same host IP or either one the wildcard), as the NodePorts plugin checks.
    pub fn ports_conflict(&self, wanted: &[HostPort], node: &str) -> bool {
        if wanted.is_empty() {
            return false;
        }
        let Some(here) = self.placed.on(node) else {
            return false;
        };
        here.pods
            .values()
            .flat_map(host_ports)
            .any(|(ip, proto, port)| {
                wanted.iter().any(|(wip, wproto, wport)| {
                    *wport == port
                        && *wproto == proto
                        && (wip == &ip || wip == "0.0.0.0" || ip == "0.0.0.0")
                })
            })
    }

    /// Preferred pod affinity minus preferred anti-affinity, by the weights of the terms each
    /// placed pod in the node's domain matches.
    pub fn affinity_score(&self, pod: &Value, node: &Value) -> i64 {
        let mut score = 0;
        for (ptr, sign) in [(PREF_AFFINITY, 1), (PREF_ANTI, -1)] {
            for wt in arr(pod, ptr) {
                let term = &wt["podAffinityTerm"];
                let weight = wt["weight"].as_i64().unwrap_or(0);
                let key = s(term, "/topologyKey");
                let Some(domain) = label(node, key) else {
                    continue;
                };
                let n = self
                    .placed
                    .all()
                    .filter(|(n, p)| {
                        self.domain_of(n, key) == Some(domain)
                            && term_selects(term, pod, p, self.namespaces)
                    })
                    .count();
                score += sign * weight * i64::try_from(n).unwrap_or(i64::MAX);
            }
        }
        score
    }

    /// Matching pods per domain of `constraint`, over the nodes it counts (those the pod's
    /// node affinity admits unless `nodeAffinityPolicy: Ignore`, and, with `nodeTaintsPolicy:
    /// Honor`, those whose taints it tolerates).
    fn spread_counts(&self, pod: &Value, constraint: &Value) -> BTreeMap<String, i64> {
        let key = s(constraint, "/topologyKey");
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let honour_affinity = s(constraint, "/nodeAffinityPolicy") != "Ignore";
        let honour_taints = s(constraint, "/nodeTaintsPolicy") == "Honor";
        let counted: Vec<&Value> = self
            .nodes
            .iter()
            .filter(|n| label(n, key).is_some())
            .filter(|n| !honour_affinity || affinity_matches(spec, n))
            .filter(|n| {
                !honour_taints
                    || untolerated_taint(tolerations(spec), n, &["NoSchedule", "NoExecute"])
                        .is_none()
            })
            .collect();
        let mut counts: BTreeMap<String, i64> = counted
            .iter()
            .filter_map(|n| label(n, key))
            .map(|d| (d.to_string(), 0))
            .collect();
        let names: BTreeSet<&str> = counted.iter().map(|n| node_name(n)).collect();
        let sel = effective_selector(constraint, pod);
        for (node, p) in self.placed.all() {
            if !names.contains(node)
                || s(p, "/metadata/namespace") != s(pod, "/metadata/namespace")
                || p.pointer("/metadata/deletionTimestamp")
                    .is_some_and(|d| !d.is_null())
                || !selector_matches(&sel, p.pointer("/metadata/labels").unwrap_or(&Value::Null))
            {
                continue;
            }
            if let Some(d) = self.domain_of(node, key) {
                *counts.entry(d.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// What the pod's spread constraints count, once for every node it is tried on.
    pub fn spread(&self, pod: &Value) -> Spread {
        let constraints = arr(pod, "/spec/topologySpreadConstraints")
            .iter()
            .map(|c| {
                let counts = self.spread_counts(pod, c);
                let min_domains = c["minDomains"].as_i64().unwrap_or(1);
                let global_min = if i64::try_from(counts.len()).unwrap_or(0) < min_domains {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                };
                let own = selector_matches(
                    &effective_selector(c, pod),
                    pod.pointer("/metadata/labels").unwrap_or(&Value::Null),
                );
                Counted {
                    key: s(c, "/topologyKey").to_string(),
                    hard: s(c, "/whenUnsatisfiable") != "ScheduleAnyway",
                    max_skew: c["maxSkew"].as_i64().unwrap_or(1),
                    counts,
                    global_min,
                    own: i64::from(own),
                }
            })
            .collect();
        Spread { constraints }
    }
}

/// One spread constraint, counted.
#[derive(Debug)]
struct Counted {
    key: String,
    /// DoNotSchedule (a filter) rather than ScheduleAnyway (a score).
    hard: bool,
    max_skew: i64,
    counts: BTreeMap<String, i64>,
    global_min: i64,
    /// 1 when the pod matches its own selector (placing it adds to the count).
    own: i64,
}

/// A pod's topology spread constraints with the matching pods counted per domain.
#[derive(Debug, Default)]
pub struct Spread {
    constraints: Vec<Counted>,
}

impl Spread {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    /// Whether it has ScheduleAnyway constraints (which score).
    pub fn scores(&self) -> bool {
        self.constraints.iter().any(|c| !c.hard)
    }

    /// Whether placing the pod on `node` keeps every DoNotSchedule constraint within its skew.
    pub fn problem(&self, node: &Value) -> Option<&'static str> {
        for c in self.constraints.iter().filter(|c| c.hard) {
            let Some(domain) = label(node, &c.key) else {
                return Some(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
            let here = c.counts.get(domain).copied().unwrap_or(0) + c.own;
            if here - c.global_min > c.max_skew {
                return Some("node(s) didn't match pod topology spread constraints");
            }
        }
        None
    }

    /// Matching pods already in the node's domains of the ScheduleAnyway constraints (fewer is
    /// better).
    pub fn crowding(&self, node: &Value) -> i64 {
        self.constraints
            .iter()
            .filter(|c| !c.hard)
            .map(|c| {
                label(node, &c.key)
                    .and_then(|d| c.counts.get(d).copied())
                    .unwrap_or(0)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}}})
    }

    fn pod(app: &str, spec: Value) -> Value {
        json!({"metadata": {"name": format!("{app}-x"), "namespace": "default", "labels": {"app": app}},
               "spec": spec})
    }

    /// Pods `(app, node, spec)` placed on nodes.
    fn placed(pods: &[(&str, &str, Value)]) -> Placements {
        let mut p = Placements::default();
        for (i, (app, node, spec)) in pods.iter().enumerate() {
            p.add(&format!("default/{app}-{i}"), node, pod(app, spec.clone()));
        }
        p
    }

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_both_ways() {
        let list = [node("a", "z1"), node("b", "z1"), node("c", "z2")];
        let nodes = Nodes::new(list.clone());
        let placements = placed(&[("web", "a", json!({}))]);
        let n = Neighbours {
            nodes: &nodes,
            placed: &placements,
            namespaces: &[],
        };
        let p = pod(
            "web",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "kubernetes.io/hostname")]}}}),
        );
        assert_eq!(
            n.affinity_problem(&p, &list[0]),
            Some("node(s) didn't match pod anti-affinity rules")
        );
        assert_eq!(n.affinity_problem(&p, &list[1]), None);
        let zoned = pod(
            "web",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "zone")]}}}),
        );
        assert!(n.affinity_problem(&zoned, &list[1]).is_some());
        assert_eq!(n.affinity_problem(&zoned, &list[2]), None);
        // A placed pod's anti-affinity keeps others away from it too.
        let placements = placed(&[(
            "db",
            "a",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "kubernetes.io/hostname")]}}}),
        )]);
        let n = Neighbours {
            nodes: &nodes,
            placed: &placements,
            namespaces: &[],
        };
        assert_eq!(
            n.affinity_problem(&pod("web", json!({})), &list[0]),
            Some("node(s) didn't satisfy existing pods anti-affinity rules")
        );
    }

    #[test]
    fn affinity_follows_its_group_and_the_first_pod_goes_anywhere() {
        let list = [node("a", "z1"), node("b", "z2")];
        let nodes = Nodes::new(list.clone());
        let want_cache = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("cache", "kubernetes.io/hostname")]}}});
        let empty = Placements::default();
        let n = Neighbours {
            nodes: &nodes,
            placed: &empty,
            namespaces: &[],
        };
        // No cache anywhere, and the pod is not a cache itself: nowhere.
        assert!(
            n.affinity_problem(&pod("web", want_cache.clone()), &list[0])
                .is_some()
        );
        // A cache pod with affinity to caches is the first of its group.
        assert_eq!(
            n.affinity_problem(&pod("cache", want_cache.clone()), &list[0]),
            None
        );
        let placements = placed(&[("cache", "b", json!({}))]);
        let n = Neighbours {
            nodes: &nodes,
            placed: &placements,
            namespaces: &[],
        };
        let web = pod("web", want_cache);
        assert!(n.affinity_problem(&web, &list[0]).is_some());
        assert_eq!(n.affinity_problem(&web, &list[1]), None);
        let pref = pod(
            "web",
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": term("cache", "kubernetes.io/hostname")}]}}}),
        );
        assert_eq!(n.affinity_score(&pref, &list[1]), -50);
        assert_eq!(n.affinity_score(&pref, &list[0]), 0);
    }

    #[test]
    fn host_ports_conflict_on_the_same_node_only() {
        let list = [node("a", "z1"), node("b", "z1")];
        let nodes = Nodes::new(list.clone());
        let ports = |port: i64, ip: &str| json!({"containers": [{"ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]});
        let placements = placed(&[("web", "a", ports(8080, ""))]);
        let n = Neighbours {
            nodes: &nodes,
            placed: &placements,
            namespaces: &[],
        };
        let wants = |spec: Value| host_ports(&pod("x", spec));
        assert!(n.ports_conflict(&wants(ports(8080, "127.0.0.1")), "a"));
        assert!(!n.ports_conflict(&wants(ports(8080, "")), "b"));
        assert!(!n.ports_conflict(&wants(ports(8081, "")), "a"));
        assert!(!n.ports_conflict(&wants(json!({"containers": [{}]})), "a"));
    }

    #[test]
    fn topology_spread_bounds_the_skew() {
        let list = [node("a", "z1"), node("b", "z2")];
        let nodes = Nodes::new(list.clone());
        let placements = placed(&[
            ("web", "a", json!({})),
            ("web", "a", json!({})),
            ("web", "b", json!({})),
        ]);
        let n = Neighbours {
            nodes: &nodes,
            placed: &placements,
            namespaces: &[],
        };
        let spread = |when: &str| {
            pod(
                "web",
                json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}),
            )
        };
        let hard = n.spread(&spread("DoNotSchedule"));
        assert_eq!(
            hard.problem(&list[0]),
            Some("node(s) didn't match pod topology spread constraints")
        );
        assert_eq!(hard.problem(&list[1]), None);
        assert!(
            hard.problem(&json!({"metadata": {"name": "c", "labels": {}}}))
                .is_some()
        );
        let soft = n.spread(&spread("ScheduleAnyway"));
        assert_eq!(soft.problem(&list[0]), None);
        assert!(soft.crowding(&list[0]) > soft.crowding(&list[1]));
    }
}
