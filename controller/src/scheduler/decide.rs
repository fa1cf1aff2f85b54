//! One scheduling decision, as Kubernetes' default profile makes it: the filters in plugin order
//! until enough feasible nodes are found (`nodes_to_find`, kube-scheduler's adaptive
//! percentageOfNodesToScore, each search starting where the last one stopped), then the score
//! plugins with their default weights, or the `0/N nodes are available: ...` message.

use std::borrow::Cow;

use serde_json::Value;

use super::nodes;
use super::pods::{
    HostPort, Neighbours, Spread, has_preferred_terms, has_required_terms, host_ports,
};
use super::view::{NodeFacts, View};
use super::volumes::{Claims, Storage};
use super::{Decision, Resources, nonzero_requests, pod_requests};

/// The taint effects that keep pods off a node.
const HARD_EFFECTS: &[&str] = &["NoSchedule", "NoExecute"];

/// How many feasible nodes to find before choosing among them: every node in a small cluster,
/// then a share that shrinks from 50% to 5% as the cluster grows, never fewer than 100.
pub fn nodes_to_find(total: usize) -> usize {
    const MIN: usize = 100;
    if total < MIN {
        return total;
    }
    let pct = (50 - i64::try_from(total / 125).unwrap_or(45)).max(5);
    (total * usize::try_from(pct).unwrap_or(5) / 100).max(MIN)
}

/// What the filters and scores read of the pod being placed, worked out once per decision.
pub(super) struct Candidate<'p> {
    pod: &'p Value,
    /// `namespace/name`.
    key: String,
    priority: i64,
    spec: &'p Value,
    tolerations: &'p [Value],
    tolerates_cordon: bool,
    /// It has a `nodeSelector` or required node affinity.
    selects_nodes: bool,
    want: Resources,
    nonzero: (i128, i128),
    spread: Spread,
    /// Pod (anti-)affinity must be checked: its own required terms, or placed pods' anti terms.
    pod_terms: bool,
    images: Vec<String>,
    /// Its hostPorts (most pods have none, and skip the check).
    host_ports: Vec<HostPort>,
}

/// Why a node may not take the pod.
pub(super) enum Problem {
    Reason(Cow<'static, str>),
    /// NodeResourcesFit: what is short.
    Short {
        pods: bool,
        cpu: bool,
        memory: bool,
    },
}

impl Problem {
    /// Whether taking pods off the node could remove it (kube-scheduler's `Unschedulable`, not
    /// `UnschedulableAndUnresolvable`): room, host ports, anti-affinity and spread skew.
    pub(super) fn resolvable(&self) -> bool {
        match self {
            Problem::Short { .. } => true,
            Problem::Reason(r) => matches!(
                r.as_ref(),
                "node(s) didn't have free ports for the requested pod ports"
                    | "node(s) didn't match pod anti-affinity rules"
                    | "node(s) didn't satisfy existing pods anti-affinity rules"
                    | "node(s) didn't match pod topology spread constraints"
            ),
        }
    }

    /// Counts the problem in `tally`, one reason per resource that is short.
    pub(super) fn count(self, tally: &mut Tally) {
        match self {
            Problem::Reason(r) => tally.add(r),
            Problem::Short { pods, cpu, memory } => {
                for (short, r) in [
                    (pods, "Too many pods"),
                    (cpu, "Insufficient cpu"),
                    (memory, "Insufficient memory"),
                ] {
                    if short {
                        tally.add(Cow::Borrowed(r));
                    }
                }
            }
        }
    }
}

/// What the pods placed on a node take: their requests, and the same with the defaults the
/// scores give pods that request nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Taken {
    used: Resources,
    nonzero: (i128, i128),
}

/// Why a node that is not Ready, or one that is cordoned, takes no pod.
const NOT_READY: &str = "node(s) were not ready";
const UNSCHEDULABLE: &str = "node(s) were unschedulable";

/// Reasons with the number of nodes each ruled out (few distinct ones: a list beats a map).
#[derive(Default)]
pub(super) struct Tally(Vec<(Cow<'static, str>, usize)>);

impl Tally {
    pub(super) fn add(&mut self, reason: Cow<'static, str>) {
        self.add_n(reason, 1);
    }

    /// Counts `reason` for `n` nodes.
    pub(super) fn add_n(&mut self, reason: Cow<'static, str>, n: usize) {
        if n == 0 {
            return;
        }
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.0.push((reason, n)),
        }
    }

    /// The reasons counted, without their counts.
    pub(super) fn into_reasons(self) -> Vec<Cow<'static, str>> {
        self.0.into_iter().map(|(r, _)| r).collect()
    }

    pub(super) fn message(self, total: usize) -> String {
        let mut rs: Vec<String> = self
            .0
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        rs.sort();
        let tail = if rs.is_empty() {
            String::new()
        } else {
            format!(" {}.", rs.join(", "))
        };
        format!("0/{total} nodes are available:{tail}")
    }
}

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

/// An image reference in full (`registry/repository:tag`), as node status names images.
pub fn full_image_name(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_registry {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    match (digest, tag) {
        (Some(d), _) => format!("{repo}@{d}"),
        (None, Some(t)) => format!("{repo}:{t}"),
        (None, None) => format!("{repo}:latest"),
    }
}

/// A quick look at whether `node` could take the pod, with `free` room left on it: its
/// readiness, cordon, taints, node selection and room, not what other pods or storage say.
pub fn could_take(
    pod: &Value,
    want: &Resources,
    node: &Value,
    facts: &NodeFacts,
    free: &Resources,
) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let tolerations = nodes::tolerations(spec);
    facts.ready
        && (!facts.unschedulable
            || tolerations
                .iter()
                .any(|t| nodes::tolerates(t, &nodes::unschedulable_taint())))
        && (!facts.hard_taints
            || nodes::untolerated_taint(tolerations, node, HARD_EFFECTS).is_none())
        && nodes::affinity_matches(spec, node)
        && want.pods <= free.pods
        && want.cpu_milli <= free.cpu_milli
        && want.memory <= free.memory
}

impl View {
    pub(super) fn candidate<'p>(&self, pod: &'p Value) -> Candidate<'p> {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let tolerations = nodes::tolerations(spec);
        let cordon = nodes::unschedulable_taint();
        let selects_nodes = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .is_some_and(|s| !s.is_empty())
            || spec
                .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
                .is_some_and(|r| !r.is_null());
        let images = ["containers", "initContainers"]
            .iter()
            .flat_map(|list| spec[*list].as_array().into_iter().flatten())
            .filter_map(|c| c["image"].as_str())
            .map(full_image_name)
            .collect();
        Candidate {
            pod,
            key: super::pod_key(pod),
            priority: super::priority(pod),
            spec,
            tolerations,
            tolerates_cordon: tolerations.iter().any(|t| nodes::tolerates(t, &cordon)),
            selects_nodes,
            want: pod_requests(pod),
            nonzero: nonzero_requests(pod),
            spread: self.neighbours().spread(pod),
            pod_terms: has_required_terms(pod) || self.placed.with_anti().next().is_some(),
            images,
            host_ports: host_ports(pod),
        }
    }

    pub(super) fn storage(&self) -> Storage<'_> {
        Storage {
            claims: &self.claims,
            volumes: &self.volumes,
            classes: &self.classes,
        }
    }

    fn neighbours(&self) -> Neighbours<'_> {
        Neighbours {
            nodes: &self.nodes,
            placed: &self.placed,
            namespaces: &self.namespaces,
        }
    }

    /// The first reason, in Kubernetes' plugin order, why the pod may not go on `node`.
    pub(super) fn problem(
        &self,
        c: &Candidate<'_>,
        node: &Value,
        facts: &NodeFacts,
        claims: &Claims<'_>,
    ) -> Option<Problem> {
        self.fit(c, node, facts, claims).err()
    }

    /// What the pods placed on `node` take, if the pod may go there; else the first reason, in
    /// Kubernetes' plugin order, why not. The scores read the totals from here: looking a node
    /// up among the placements by name is a cache miss at thousands of nodes, once is enough.
    fn fit(
        &self,
        c: &Candidate<'_>,
        node: &Value,
        facts: &NodeFacts,
        claims: &Claims<'_>,
    ) -> Result<Taken, Problem> {
        let reason = |r: &'static str| Err(Problem::Reason(Cow::Borrowed(r)));
        if !facts.ready {
            return reason(NOT_READY);
        }
        if facts.unschedulable && !c.tolerates_cordon {
            return reason(UNSCHEDULABLE);
        }
        if facts.hard_taints
            && let Some(t) = nodes::untolerated_taint(c.tolerations, node, HARD_EFFECTS)
        {
            return Err(Problem::Reason(Cow::Owned(format!(
                "node(s) had untolerated taint {}",
                nodes::describe_taint(t)
            ))));
        }
        if c.selects_nodes && !nodes::affinity_matches(c.spec, node) {
            return reason("node(s) didn't match Pod's node affinity/selector");
        }
        let around = self.neighbours();
        if !c.host_ports.is_empty() && around.ports_conflict(&c.host_ports, &facts.name) {
            return reason("node(s) didn't have free ports for the requested pod ports");
        }
        let taken = self
            .placed
            .on(&facts.name)
            .map(|h| Taken {
                used: h.used,
                nonzero: h.nonzero,
            })
            .unwrap_or_default();
        let mut used = taken.used;
        let kept = self.nominated.reserved(&facts.name, c.priority, &c.key);
        used.cpu_milli += kept.cpu_milli;
        used.memory += kept.memory;
        used.pods += kept.pods;
        let alloc = facts.alloc;
        let short = (
            used.pods + c.want.pods > alloc.pods,
            used.cpu_milli + c.want.cpu_milli > alloc.cpu_milli,
            used.memory + c.want.memory > alloc.memory,
        );
        if short.0 || short.1 || short.2 {
            return Err(Problem::Short {
                pods: short.0,
                cpu: short.1,
                memory: short.2,
            });
        }
        if let Some(p) = claims.problem(node) {
            return reason(p);
        }
        if let Some(p) = c.spread.problem(node) {
            return reason(p);
        }
        if c.pod_terms
            && let Some(p) = around.affinity_problem(c.pod, node)
        {
            return reason(p);
        }
        Ok(taken)
    }

    /// The mean share of cpu and memory left free on `node` with the pod on it (0..=100):
    /// NodeResourcesFit's LeastAllocated.
    fn least_allocated(c: &Candidate<'_>, facts: &NodeFacts, taken: &Taken) -> i64 {
        let (used_cpu, used_mem) = taken.nonzero;
        let share = |used: i128, cap: i128| {
            if cap <= 0 {
                0
            } else {
                i64::try_from((cap - used.min(cap)) * 100 / cap).unwrap_or(0)
            }
        };
        (share(used_cpu + c.nonzero.0, facts.alloc.cpu_milli)
            + share(used_mem + c.nonzero.1, facts.alloc.memory))
            / 2
    }

    /// How evenly cpu and memory would be used with the pod on `node` (0..=100):
    /// NodeResourcesBalancedAllocation, one minus the standard deviation of the two fractions.
    fn balanced(c: &Candidate<'_>, facts: &NodeFacts, taken: &Taken) -> i64 {
        let used = taken.used;
        let fraction = |used: i128, cap: i128| {
            if cap <= 0 {
                1.0
            } else {
                (used as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = fraction(used.cpu_milli + c.want.cpu_milli, facts.alloc.cpu_milli);
        let mem = fraction(used.memory + c.want.memory, facts.alloc.memory);
        ((1.0 - (cpu - mem).abs() / 2.0) * 100.0) as i64
    }

    /// ImageLocality: the sizes of the pod's images already on `node`, each scaled by the share
    /// of nodes that have it (so an image everywhere does not pull every pod to one node),
    /// between 23 MB and 1000 MB per container (0..=100).
    fn image_locality(&self, c: &Candidate<'_>, facts: &NodeFacts) -> i64 {
        const MIN: f64 = 23.0 * 1024.0 * 1024.0;
        const MAX_PER_CONTAINER: f64 = 1000.0 * 1024.0 * 1024.0;
        if c.images.is_empty() {
            return 0;
        }
        let total = self.nodes.len().max(1) as f64;
        let sum: f64 = c
            .images
            .iter()
            .filter_map(|img| {
                let size = *facts.images.get(img)?;
                let spread = self.nodes.nodes_with_image(img) as f64 / total;
                Some(size as f64 * spread)
            })
            .sum();
        let max = MAX_PER_CONTAINER * c.images.len() as f64;
        let sum = sum.clamp(MIN, max);
        ((sum - MIN) * 100.0 / (max - MIN)) as i64
    }

    /// The best of the feasible nodes by Kubernetes' default score plugins and weights:
    /// TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2,
    /// NodeResourcesFit (least allocated) 1, NodeResourcesBalancedAllocation 1, ImageLocality 1.
    /// Ties go to the first name.
    fn best(&self, c: &Candidate<'_>, feasible: &[(usize, Taken)]) -> Option<usize> {
        let at = |i: usize| self.nodes.at(i);
        let scored = |f: &dyn Fn(&Value, &NodeFacts, &Taken) -> i64| {
            feasible
                .iter()
                .map(|(i, taken)| {
                    let (n, facts) = at(*i);
                    f(n, facts, taken)
                })
                .collect::<Vec<_>>()
        };
        let raw = |f: &dyn Fn(&Value, &NodeFacts) -> i64| scored(&|n, facts, _| f(n, facts));
        let zeros = vec![0; feasible.len()];
        let taints = if feasible.iter().any(|&(i, _)| at(i).1.soft_taints) {
            normalise(
                &raw(&|n, _| {
                    n.pointer("/spec/taints")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|t| t["effect"] == "PreferNoSchedule")
                        .filter(|t| !c.tolerations.iter().any(|tol| nodes::tolerates(tol, t)))
                        .count() as i64
                }),
                false,
            )
        } else {
            zeros.clone()
        };
        let affinity = if c
            .spec
            .pointer("/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
            .is_some()
        {
            normalise(
                &raw(&|n, _| nodes::preferred_affinity_score(c.spec, n)),
                true,
            )
        } else {
            zeros.clone()
        };
        let spread = if c.spread.scores() {
            normalise(&raw(&|n, _| c.spread.crowding(n)), false)
        } else {
            zeros.clone()
        };
        let inter = if has_preferred_terms(c.pod) {
            let around = self.neighbours();
            normalise(&raw(&|n, _| around.affinity_score(c.pod, n)), true)
        } else {
            zeros.clone()
        };
        let least = scored(&|_, f, t| Self::least_allocated(c, f, t));
        let balanced = scored(&|_, f, t| Self::balanced(c, f, t));
        let images = if c.images.iter().any(|i| self.nodes.nodes_with_image(i) > 0) {
            raw(&|_, f| self.image_locality(c, f))
        } else {
            zeros
        };
        let total: Vec<i64> = (0..feasible.len())
            .map(|k| {
                3 * taints[k]
                    + 2 * affinity[k]
                    + 2 * spread[k]
                    + 2 * inter[k]
                    + least[k]
                    + balanced[k]
                    + images[k]
            })
            .collect();
        (0..feasible.len())
            .max_by(|&a, &b| {
                total[a]
                    .cmp(&total[b])
                    .then_with(|| at(feasible[b].0).1.name.cmp(&at(feasible[a].0).1.name))
            })
            .map(|k| feasible[k].0)
    }

    /// Decides where `pod` goes.
    pub fn choose(&mut self, pod: &Value) -> Decision {
        self.decide(pod).0
    }

    /// Decides where `pod` goes; when it fits nowhere, also the nodes that taking pods off
    /// could open to it (for preemption).
    pub fn decide(&mut self, pod: &Value) -> (Decision, Vec<usize>) {
        let gated = pod
            .pointer("/spec/schedulingGates")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty());
        if gated {
            return (Decision::Gated, Vec::new());
        }
        let total = self.nodes.len();
        if total == 0 {
            let msg = "no nodes available to schedule pods".to_string();
            return (Decision::Unschedulable(msg), Vec::new());
        }
        // The fields themselves, not `self.storage()`: `next_start` changes while they are read.
        let storage = Storage {
            claims: &self.claims,
            volumes: &self.volumes,
            classes: &self.classes,
        };
        let claims = match storage.claims_of(pod) {
            Ok(c) => c,
            Err(msg) => {
                let msg = format!("0/{total} nodes are available: {msg}.");
                return (Decision::Unschedulable(msg), Vec::new());
            }
        };
        if let Some(node) = claims.waiting_on() {
            return (Decision::Wait(node.to_string()), Vec::new());
        }
        let c = self.candidate(pod);
        // A pod that preempted others goes where it made room, if it still fits there.
        if claims.delayed.is_empty()
            && let Some(node) = self.nominated.node_of(&c.key)
            && let Some((n, facts)) = self.nodes.with_facts(node)
            && self.problem(&c, n, facts, &claims).is_none()
        {
            return (Decision::Bind(node.to_string()), Vec::new());
        }
        let enough = nodes_to_find(total);
        let start = if total == 0 {
            0
        } else {
            self.next_start % total
        };
        let mut tally = Tally::default();
        let mut feasible = Vec::new();
        let mut resolvable = Vec::new();
        // A pod that does not tolerate a cordon can only go to open nodes: the others are
        // counted at once, for the reason `problem` would give each of them.
        let order: Box<dyn Iterator<Item = usize> + '_> = if c.tolerates_cordon {
            Box::new((0..total).map(|k| (start + k) % total))
        } else {
            let (not_ready, cordoned) = self.nodes.closed();
            tally.add_n(Cow::Borrowed(NOT_READY), not_ready);
            tally.add_n(Cow::Borrowed(UNSCHEDULABLE), cordoned);
            Box::new(self.nodes.open_from(start))
        };
        let mut next = None;
        for i in order {
            if feasible.len() >= enough {
                break;
            }
            next = Some(i + 1);
            let (node, facts) = self.nodes.at(i);
            match self.fit(&c, node, facts, &claims) {
                Ok(taken) => feasible.push((i, taken)),
                Err(p) => {
                    if p.resolvable() {
                        resolvable.push(i);
                    }
                    p.count(&mut tally);
                }
            }
        }
        if let Some(next) = next {
            self.next_start = next % total;
        }
        let Some(best) = self.best(&c, &feasible) else {
            return (Decision::Unschedulable(tally.message(total)), resolvable);
        };
        let node = self.nodes.at(best).1.name.clone();
        let decision = if claims.delayed.is_empty() {
            Decision::Bind(node)
        } else {
            Decision::Provision {
                node,
                claims: claims.delayed,
            }
        };
        (decision, Vec::new())
    }
}
