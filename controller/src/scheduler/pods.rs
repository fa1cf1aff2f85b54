//! Placement relative to other pods, as Kubernetes' InterPodAffinity and PodTopologySpread
//! plugins decide it: required pod affinity and anti-affinity (the incoming pod's terms, and the
//! anti-affinity terms of pods already placed, which hold both ways), preferred terms as a
//! score, and `topologySpreadConstraints` (DoNotSchedule filters, ScheduleAnyway scores).
//!
//! Topology domains are node label values: a term with `topologyKey: kubernetes.io/hostname`
//! speaks of single nodes, one with a zone label of groups of them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::nodes::{affinity_matches, label, node_name, tolerations, untolerated_taint};
use crate::api::selectors::selector_matches;
use crate::api::strategy::str_at as s;

/// A pod already on a node (bound before this pass, or placed earlier in it).
#[derive(Debug, Clone)]
pub struct Placed {
    pub pod: Value,
    pub node: String,
}

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

/// The pod's hostPorts as (host IP, protocol, port).
fn host_ports(pod: &Value) -> Vec<(String, String, i64)> {
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
    pub nodes: &'a [Value],
    pub placed: &'a [Placed],
    pub namespaces: &'a [Value],
}

const AFFINITY: &str = "/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution";
const ANTI: &str = "/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution";
const PREF_AFFINITY: &str =
    "/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution";
const PREF_ANTI: &str =
    "/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution";

impl Neighbours<'_> {
    fn node(&self, name: &str) -> Option<&Value> {
        self.nodes.iter().find(|n| node_name(n) == name)
    }

    /// The domain (`topologyKey` value) of a placed pod.
    fn domain_of(&self, p: &Placed, key: &str) -> Option<&str> {
        self.node(&p.node).and_then(|n| label(n, key))
    }

    /// Why `pod` may not go on `node` by pod (anti-)affinity, in the scheduler's words.
    pub fn affinity_problem(&self, pod: &Value, node: &Value) -> Option<&'static str> {
        for term in arr(pod, AFFINITY) {
            let key = s(term, "/topologyKey");
            let Some(domain) = label(node, key) else {
                return Some("node(s) didn't match pod affinity rules");
            };
            let matching: Vec<&Placed> = self
                .placed
                .iter()
                .filter(|p| term_selects(term, pod, &p.pod, self.namespaces))
                .collect();
            let here = matching
                .iter()
                .any(|p| self.domain_of(p, key) == Some(domain));
            // The first pod of a group that selects itself may go anywhere.
            let first = matching.is_empty() && term_selects(term, pod, pod, self.namespaces);
            if !here && !first {
                return Some("node(s) didn't match pod affinity rules");
            }
        }
        for term in arr(pod, ANTI) {
            let key = s(term, "/topologyKey");
            let Some(domain) = label(node, key) else {
                continue;
            };
            if self.placed.iter().any(|p| {
                self.domain_of(p, key) == Some(domain)
                    && term_selects(term, pod, &p.pod, self.namespaces)
            }) {
                return Some("node(s) didn't match pod anti-affinity rules");
            }
        }
        for p in self.placed {
            for term in arr(&p.pod, ANTI) {
                let key = s(term, "/topologyKey");
                let Some(domain) = label(node, key) else {
                    continue;
                };
                if self.domain_of(p, key) == Some(domain)
                    && term_selects(term, &p.pod, pod, self.namespaces)
                {
                    return Some("node(s) didn't satisfy existing pods anti-affinity rules");
                }
            }
        }
        None
    }

    /// Whether one of the pod's hostPorts is taken on `node` (same port and protocol, and the
    /// same host IP or either one the wildcard), as the NodePorts plugin checks.
    pub fn ports_conflict(&self, pod: &Value, node: &Value) -> bool {
        let wanted = host_ports(pod);
        if wanted.is_empty() {
            return false;
        }
        let name = node_name(node);
        self.placed
            .iter()
            .filter(|p| p.node == name)
            .flat_map(|p| host_ports(&p.pod))
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
                    .iter()
                    .filter(|p| {
                        self.domain_of(p, key) == Some(domain)
                            && term_selects(term, pod, &p.pod, self.namespaces)
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
        for p in self.placed {
            if !names.contains(p.node.as_str())
                || s(&p.pod, "/metadata/namespace") != s(pod, "/metadata/namespace")
                || p.pod
                    .pointer("/metadata/deletionTimestamp")
                    .is_some_and(|d| !d.is_null())
                || !selector_matches(
                    &sel,
                    p.pod.pointer("/metadata/labels").unwrap_or(&Value::Null),
                )
            {
                continue;
            }
            if let Some(d) = self.domain_of(p, key) {
                *counts.entry(d.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// Whether placing `pod` on `node` keeps every DoNotSchedule constraint within its skew.
    pub fn spread_problem(&self, pod: &Value, node: &Value) -> Option<&'static str> {
        for c in arr(pod, "/spec/topologySpreadConstraints") {
            if s(c, "/whenUnsatisfiable") == "ScheduleAnyway" {
                continue;
            }
            let key = s(c, "/topologyKey");
            let Some(domain) = label(node, key) else {
                return Some(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
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
            let here = counts.get(domain).copied().unwrap_or(0) + i64::from(own);
            if here - global_min > c["maxSkew"].as_i64().unwrap_or(1) {
                return Some("node(s) didn't match pod topology spread constraints");
            }
        }
        None
    }

    /// Matching pods already in the node's domains of the ScheduleAnyway constraints (fewer is
    /// better).
    pub fn spread_crowding(&self, pod: &Value, node: &Value) -> i64 {
        arr(pod, "/spec/topologySpreadConstraints")
            .iter()
            .filter(|c| s(c, "/whenUnsatisfiable") == "ScheduleAnyway")
            .map(|c| {
                let counts = self.spread_counts(pod, c);
                label(node, s(c, "/topologyKey"))
                    .and_then(|d| counts.get(d).copied())
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

    fn on(app: &str, node: &str, spec: Value) -> Placed {
        Placed {
            pod: pod(app, spec),
            node: node.into(),
        }
    }

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_both_ways() {
        let nodes = [node("a", "z1"), node("b", "z1"), node("c", "z2")];
        let placed = [on("web", "a", json!({}))];
        let n = Neighbours {
            nodes: &nodes,
            placed: &placed,
            namespaces: &[],
        };
        let p = pod(
            "web",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "kubernetes.io/hostname")]}}}),
        );
        assert_eq!(
            n.affinity_problem(&p, &nodes[0]),
            Some("node(s) didn't match pod anti-affinity rules")
        );
        assert_eq!(n.affinity_problem(&p, &nodes[1]), None);
        let zoned = pod(
            "web",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "zone")]}}}),
        );
        assert!(n.affinity_problem(&zoned, &nodes[1]).is_some());
        assert_eq!(n.affinity_problem(&zoned, &nodes[2]), None);
        // A placed pod's anti-affinity keeps others away from it too.
        let placed = [on(
            "db",
            "a",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term("web", "kubernetes.io/hostname")]}}}),
        )];
        let n = Neighbours {
            nodes: &nodes,
            placed: &placed,
            namespaces: &[],
        };
        assert_eq!(
            n.affinity_problem(&pod("web", json!({})), &nodes[0]),
            Some("node(s) didn't satisfy existing pods anti-affinity rules")
        );
    }

    #[test]
    fn affinity_follows_its_group_and_the_first_pod_goes_anywhere() {
        let nodes = [node("a", "z1"), node("b", "z2")];
        let want_cache = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("cache", "kubernetes.io/hostname")]}}});
        let n = Neighbours {
            nodes: &nodes,
            placed: &[],
            namespaces: &[],
        };
        // No cache anywhere, and the pod is not a cache itself: nowhere.
        assert!(
            n.affinity_problem(&pod("web", want_cache.clone()), &nodes[0])
                .is_some()
        );
        // A cache pod with affinity to caches is the first of its group.
        assert_eq!(
            n.affinity_problem(&pod("cache", want_cache.clone()), &nodes[0]),
            None
        );
        let placed = [on("cache", "b", json!({}))];
        let n = Neighbours {
            nodes: &nodes,
            placed: &placed,
            namespaces: &[],
        };
        let web = pod("web", want_cache);
        assert!(n.affinity_problem(&web, &nodes[0]).is_some());
        assert_eq!(n.affinity_problem(&web, &nodes[1]), None);
        let pref = pod(
            "web",
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "podAffinityTerm": term("cache", "kubernetes.io/hostname")}]}}}),
        );
        assert_eq!(n.affinity_score(&pref, &nodes[1]), -50);
        assert_eq!(n.affinity_score(&pref, &nodes[0]), 0);
    }

    #[test]
    fn host_ports_conflict_on_the_same_node_only() {
        let nodes = [node("a", "z1"), node("b", "z1")];
        let ports = |port: i64, ip: &str| json!({"containers": [{"ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]});
        let placed = [on("web", "a", ports(8080, ""))];
        let n = Neighbours {
            nodes: &nodes,
            placed: &placed,
            namespaces: &[],
        };
        assert!(n.ports_conflict(&pod("x", ports(8080, "127.0.0.1")), &nodes[0]));
        assert!(!n.ports_conflict(&pod("x", ports(8080, "")), &nodes[1]));
        assert!(!n.ports_conflict(&pod("x", ports(8081, "")), &nodes[0]));
        assert!(!n.ports_conflict(&pod("x", json!({"containers": [{}]})), &nodes[0]));
    }

    #[test]
    fn topology_spread_bounds_the_skew() {
        let nodes = [node("a", "z1"), node("b", "z2")];
        let placed = [
            on("web", "a", json!({})),
            on("web", "a", json!({})),
            on("web", "b", json!({})),
        ];
        let n = Neighbours {
            nodes: &nodes,
            placed: &placed,
            namespaces: &[],
        };
        let spread = |when: &str| {
            pod(
                "web",
                json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}),
            )
        };
        let p = spread("DoNotSchedule");
        assert_eq!(
            n.spread_problem(&p, &nodes[0]),
            Some("node(s) didn't match pod topology spread constraints")
        );
        assert_eq!(n.spread_problem(&p, &nodes[1]), None);
        assert!(
            n.spread_problem(&p, &json!({"metadata": {"name": "c", "labels": {}}}))
                .is_some()
        );
        let soft = spread("ScheduleAnyway");
        assert_eq!(n.spread_problem(&soft, &nodes[0]), None);
        assert!(n.spread_crowding(&soft, &nodes[0]) > n.spread_crowding(&soft, &nodes[1]));
    }
}
