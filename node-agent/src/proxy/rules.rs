//! The nftables ruleset for the service ports, in table `ip skiff-proxy`, laid out as
//! kube-proxy's nftables mode lays out its own: packets are matched against maps keyed by
//! destination (`ip daddr . meta l4proto . th dport`, and `meta l4proto . th dport` for node
//! ports on the node's addresses), whose verdicts jump to one chain per service port; that
//! chain picks an endpoint chain with `numgen random` (or the client's remembered endpoint for
//! `sessionAffinity: ClientIP`), which DNATs. Packets that must leave with the node's address
//! (from outside with `externalTrafficPolicy: Cluster`, a pod reaching itself through its
//! Service) carry a mark that the postrouting chain masquerades.
//!
//! [`plan`] turns what the kernel holds (as the proxy last wrote it) and what it should hold
//! into the operations of one nftables transaction, in an order the kernel accepts: only the
//! service ports that changed are touched, so a sync costs what changed, not the size of the
//! cluster, and nothing is read back from the kernel. The first sync, and the one after a
//! failed transaction, replaces the whole table in one transaction instead.

use std::net::Ipv4Addr;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use nlink::netlink::nftables::{
    BaseChain, Chain, ChainName, Expr, Family, FibFlags, LookupExpr, MetaKey, NatHook, NumgenKind,
    PacketField, PayloadBase, Priority, Register, Rule, Set, SetElement, SetKeyType, Verdict,
};
use nlink::netlink::types::route::RouteType;
use sha2::{Digest, Sha256};

use super::model::{Endpoint, ServicePort};

/// The proxy's table; nothing else writes it.
pub const TABLE: &str = "skiff-proxy";

/// The mark bit of packets to masquerade (kube-proxy's bit, with the same meaning).
const MASQUERADE_MARK: u32 = 0x4000;

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT: &str = "reject";

/// How the node's network needs service traffic handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Masquerade every connection to a service. Needed when bridged traffic skips the IP
    /// hooks (no `br_netfilter`): a pod's reply to a client on its own bridge would otherwise
    /// bypass the DNAT's reverse translation.
    pub masquerade_all: bool,
}

/// A short stable name part for `what`: chain names must stay well under the kernel's limit
/// whatever the namespace and Service names are.
fn hash(what: &str) -> String {
    let d = Sha256::digest(what.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn chain_name(name: &str) -> ChainName {
    // Every name here is built from a fixed prefix and hex digits: valid by construction.
    name.parse()
        .unwrap_or_else(|_| unreachable!("invalid chain name {name}"))
}

fn goto(name: &str) -> Verdict {
    Verdict::GotoTo(chain_name(name))
}

struct Names {
    cluster: String,
    local: String,
    external: String,
}

impl Names {
    fn of(port: &ServicePort) -> Self {
        let h = hash(&port.id);
        Self {
            cluster: format!("svc-{h}"),
            local: format!("lcl-{h}"),
            external: format!("ext-{h}"),
        }
    }
}

fn endpoint_name(port: &ServicePort, ep: &Endpoint) -> String {
    format!("ep-{}", hash(&format!("{} {}:{}", port.id, ep.ip, ep.port)))
}

fn affinity_set(port: &ServicePort, ep: &Endpoint) -> String {
    format!(
        "aff-{}",
        hash(&format!("{} {}:{}", port.id, ep.ip, ep.port))
    )
}

/// `ip daddr . meta l4proto . th dport` into consecutive 32-bit registers, as a concatenated
/// set key is laid out.
fn destination_key() -> [Expr; 3] {
    [
        Expr::Payload {
            dreg: Register::Reg32_00,
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
        },
        Expr::Meta {
            dreg: Register::Reg32_01,
            key: MetaKey::L4Proto,
        },
        Expr::Payload {
            dreg: Register::Reg32_02,
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
        },
    ]
}

fn vmap(map: &str) -> Expr {
    Expr::Lookup(LookupExpr::new(map, Register::Reg32_00).dreg(Register::Verdict))
}

fn with(rule: Rule, exprs: impl IntoIterator<Item = Expr>) -> Rule {
    exprs.into_iter().fold(rule, Rule::expr)
}

/// The key of an element of a `mark : verdict` map that `numgen` output is looked up in: both
/// are 32-bit numbers in host byte order.
fn numgen_key(i: usize) -> SetElement {
    SetElement::mark(u32::try_from(i).unwrap_or(u32::MAX))
}

/// One operation of a transaction on the proxy's table.
#[derive(Debug, Clone)]
pub enum Op {
    /// The table of an earlier run: a full sync starts from nothing.
    DeleteTable,
    AddTable,
    /// A chain, with a hook for a base chain.
    AddChain(String, Option<BaseChain>),
    DeleteChain(String),
    /// Every rule of the chain, which stays (something still refers to it).
    FlushChain(String),
    /// A rule at the end of the named chain.
    AddRule(String, Rule),
    AddSet(Set),
    DeleteSet(String),
    AddElements(Set, Vec<SetElement>),
    DeleteElements(Set, Vec<SetElement>),
}

impl Op {
    /// One line for logs and tests.
    pub fn describe(&self) -> String {
        match self {
            Op::DeleteTable => "delete table".into(),
            Op::AddTable => "add table".into(),
            Op::AddChain(c, _) => format!("add chain {c}"),
            Op::DeleteChain(c) => format!("delete chain {c}"),
            Op::FlushChain(c) => format!("flush chain {c}"),
            Op::AddRule(c, r) => format!(
                "add rule {c}: {}",
                r.nft_syntax().unwrap_or_else(|| "(raw)".into())
            ),
            Op::AddSet(s) => format!("add set {}", s.name()),
            Op::DeleteSet(s) => format!("delete set {s}"),
            Op::AddElements(s, e) => format!("add {} elements to {}", e.len(), s.name()),
            Op::DeleteElements(s, e) => format!("delete {} elements from {}", e.len(), s.name()),
        }
    }
}

/// What the table holds, as the proxy wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    pub ports: BTreeMap<String, ServicePort>,
    pub opts: Options,
}

impl Programmed {
    pub fn of(ports: &[ServicePort], opts: Options) -> Self {
        Self {
            ports: ports.iter().map(|p| (p.id.clone(), p.clone())).collect(),
            opts,
        }
    }
}

/// The chain `name` of the table, a base chain when `base` says so.
pub fn new_chain(name: &str, base: Option<&BaseChain>) -> Chain {
    let chain = Chain::new(TABLE, name)
        .unwrap_or_else(|_| unreachable!("invalid chain name {name}"))
        .family(Family::Ip);
    match base {
        Some(b) => chain.base(b.clone()),
        None => chain,
    }
}

fn new_rule(chain: &str) -> Rule {
    Rule::new(TABLE, chain).family(Family::Ip)
}

fn new_set(name: &str) -> Set {
    Set::new(TABLE, name).family(Family::Ip)
}

fn service_ips() -> Set {
    new_set(SERVICE_IPS)
        .key_type(SetKeyType::Concat(vec![
            SetKeyType::Ipv4Addr,
            SetKeyType::InetProto,
            SetKeyType::InetService,
        ]))
        .vmap()
}

fn service_nodeports() -> Set {
    new_set(SERVICE_NODEPORTS)
        .key_type(SetKeyType::Concat(vec![
            SetKeyType::InetProto,
            SetKeyType::InetService,
        ]))
        .vmap()
}

fn endpoints_map(chain: &str) -> Set {
    new_set(&format!("{chain}-endpoints"))
        .key_type(SetKeyType::Mark)
        .vmap()
}

fn affinity(name: &str, seconds: u32) -> Set {
    new_set(name)
        .key_type(SetKeyType::Ipv4Addr)
        .dynamic()
        .timeout(Duration::from_secs(u64::from(seconds)))
        .size(65535)
}

/// Where a packet goes: a chain, or dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Goto(String),
    Drop,
}

impl Target {
    fn verdict(&self) -> Verdict {
        match self {
            Target::Goto(c) => goto(c),
            Target::Drop => Verdict::Drop,
        }
    }
}

/// Which chains a service port has, and where its traffic enters them.
struct Shape {
    names: Names,
    /// `svc-`: every endpoint (absent without endpoints: traffic is refused).
    cluster: bool,
    /// `lcl-`: this node's endpoints, for a Local policy.
    local: bool,
    /// `ext-`: traffic from outside (node ports, external addresses).
    external: bool,
    internal_target: Target,
    external_target: Option<Target>,
}

impl Shape {
    fn of(port: &ServicePort) -> Self {
        let names = Names::of(port);
        let cluster = !port.endpoints.is_empty();
        let cluster_target = if cluster {
            Target::Goto(names.cluster.clone())
        } else {
            Target::Goto(REJECT.into())
        };
        let needs_local = port.internal_local || (port.external_local && port.is_external());
        let local = needs_local && !port.local_endpoints().is_empty();
        // With a Local policy and no endpoint here, traffic is dropped (kube-proxy's choice:
        // the client's retry may reach another node).
        let local_target = if local {
            Target::Goto(names.local.clone())
        } else {
            Target::Drop
        };
        let internal_target = if port.internal_local {
            local_target
        } else {
            cluster_target
        };
        let external = port.is_external();
        let external_target = external.then(|| Target::Goto(names.external.clone()));
        Self {
            names,
            cluster,
            local,
            external,
            internal_target,
            external_target,
        }
    }
}

type IpKey = (Ipv4Addr, u8, u16);
type Entries<K> = Vec<(K, Target)>;
type NodePortKey = (u8, u16);

/// The entries of the two top-level maps that `ports` need.
fn entries(
    ports: &BTreeMap<String, ServicePort>,
) -> (BTreeMap<IpKey, Target>, BTreeMap<NodePortKey, Target>) {
    let mut ips = BTreeMap::new();
    let mut node_ports = BTreeMap::new();
    for port in ports.values() {
        let shape = Shape::of(port);
        let proto = port.protocol.number();
        ips.insert(
            (port.cluster_ip, proto, port.port),
            shape.internal_target.clone(),
        );
        if let Some(ext) = &shape.external_target {
            for ip in &port.external_ips {
                ips.insert((*ip, proto, port.port), ext.clone());
            }
            if let Some(np) = port.node_port {
                node_ports.insert((proto, np), ext.clone());
            }
        }
    }
    (ips, node_ports)
}

fn ip_element((ip, proto, port): &IpKey, target: &Target) -> SetElement {
    SetElement::concat([
        SetElement::ipv4(*ip),
        SetElement::inet_proto(*proto),
        SetElement::port(*port),
    ])
    .verdict(target.verdict())
}

fn node_port_element((proto, port): &NodePortKey, target: &Target) -> SetElement {
    SetElement::concat([SetElement::inet_proto(*proto), SetElement::port(*port)])
        .verdict(target.verdict())
}

/// Entries of `old` that `new` lacks or maps elsewhere, and entries of `new` that `old` lacks
/// or maps elsewhere.
fn changed<K: Ord + Clone>(
    old: &BTreeMap<K, Target>,
    new: &BTreeMap<K, Target>,
) -> (Entries<K>, Entries<K>) {
    let gone = old
        .iter()
        .filter(|(k, t)| new.get(*k) != Some(*t))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    let came = new
        .iter()
        .filter(|(k, t)| old.get(*k) != Some(*t))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    (gone, came)
}

/// The operations that turn `old` (what the table holds; `None` when unknown: the first sync
/// or after a failure) into what `ports` need. `table_exists` says whether a table of an
/// earlier run is there to replace.
pub fn plan(old: Option<&Programmed>, new: &Programmed, table_exists: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    let empty = Programmed::default();
    let old = match old {
        Some(old) if old.opts == new.opts => old,
        _ => {
            if table_exists {
                ops.push(Op::DeleteTable);
            }
            ops.push(Op::AddTable);
            skeleton(&mut ops);
            &empty
        }
    };
    let (old_ips, old_nps) = entries(&old.ports);
    let (new_ips, new_nps) = entries(&new.ports);
    let (gone_ips, came_ips) = changed(&old_ips, &new_ips);
    let (gone_nps, came_nps) = changed(&old_nps, &new_nps);
    // Entries first out, so no element names a chain that goes.
    if !gone_ips.is_empty() {
        let elements = gone_ips.iter().map(|(k, t)| ip_element(k, t)).collect();
        ops.push(Op::DeleteElements(service_ips(), elements));
    }
    if !gone_nps.is_empty() {
        let elements = gone_nps
            .iter()
            .map(|(k, t)| node_port_element(k, t))
            .collect();
        ops.push(Op::DeleteElements(service_nodeports(), elements));
    }
    for (id, port) in &old.ports {
        match new.ports.get(id) {
            Some(next) if next == port => {}
            next => remove_service(&mut ops, port, next),
        }
    }
    for (id, port) in &new.ports {
        match old.ports.get(id) {
            Some(prev) if prev == port => {}
            prev => add_service(&mut ops, port, new.opts, prev),
        }
    }
    if !came_ips.is_empty() {
        let elements = came_ips.iter().map(|(k, t)| ip_element(k, t)).collect();
        ops.push(Op::AddElements(service_ips(), elements));
    }
    if !came_nps.is_empty() {
        let elements = came_nps
            .iter()
            .map(|(k, t)| node_port_element(k, t))
            .collect();
        ops.push(Op::AddElements(service_nodeports(), elements));
    }
    ops
}

/// The affinity sets of `old` that `new` keeps (same endpoint, same timeout): their clients
/// stay with their endpoints across the change.
fn kept_affinity(old: &ServicePort, new: Option<&ServicePort>) -> BTreeSet<String> {
    let Some(new) = new else {
        return BTreeSet::new();
    };
    if old.affinity_seconds.is_none() || old.affinity_seconds != new.affinity_seconds {
        return BTreeSet::new();
    }
    let mine: BTreeSet<String> = old.endpoints.iter().map(|e| affinity_set(old, e)).collect();
    new.endpoints
        .iter()
        .map(|e| affinity_set(new, e))
        .filter(|s| mine.contains(s))
        .collect()
}

/// The base chains and what every service shares.
fn skeleton(ops: &mut Vec<Op>) {
    let base = |name: &str, hook: NatHook, priority: Priority| {
        Op::AddChain(name.into(), Some(BaseChain::nat(hook, priority)))
    };
    ops.push(base(
        "nat-prerouting",
        NatHook::Prerouting,
        Priority::DstNat,
    ));
    ops.push(base("nat-output", NatHook::Output, Priority::DstNat));
    ops.push(base(
        "nat-postrouting",
        NatHook::Postrouting,
        Priority::SrcNat,
    ));
    for name in ["services", MARK_FOR_MASQUERADE, REJECT] {
        ops.push(Op::AddChain(name.into(), None));
    }
    ops.push(Op::AddSet(service_ips()));
    ops.push(Op::AddSet(service_nodeports()));
    let rules = [
        (
            "nat-prerouting",
            new_rule("nat-prerouting").jump(chain_name("services")),
        ),
        (
            "nat-output",
            new_rule("nat-output").jump(chain_name("services")),
        ),
        (
            "nat-postrouting",
            new_rule("nat-postrouting")
                .match_mark_masked(MASQUERADE_MARK, MASQUERADE_MARK)
                .set_mark_masked(0, MASQUERADE_MARK)
                .masquerade(),
        ),
        (
            MARK_FOR_MASQUERADE,
            new_rule(MARK_FOR_MASQUERADE).set_mark_masked(MASQUERADE_MARK, MASQUERADE_MARK),
        ),
        // A reset refuses a TCP connection at once; ICMP port unreachable the rest.
        (REJECT, new_rule(REJECT).match_l4proto(6).reject_tcp_reset()),
        (REJECT, new_rule(REJECT).reject()),
        (
            "services",
            with(new_rule("services"), destination_key()).expr(vmap(SERVICE_IPS)),
        ),
        // Node ports on every address of the node but loopback (as kube-proxy's nftables
        // mode).
        (
            "services",
            with(
                new_rule("services")
                    .match_fib_type(FibFlags::DADDR, RouteType::Local)
                    .match_daddr_v4_not(Ipv4Addr::new(127, 0, 0, 0), 8),
                [
                    Expr::Meta {
                        dreg: Register::Reg32_00,
                        key: MetaKey::L4Proto,
                    },
                    Expr::Payload {
                        dreg: Register::Reg32_01,
                        base: PayloadBase::Transport,
                        offset: 2,
                        len: 2,
                    },
                ],
            )
            .expr(vmap(SERVICE_NODEPORTS)),
        ),
    ];
    ops.extend(rules.into_iter().map(|(c, r)| Op::AddRule(c.into(), r)));
}

/// The chains a service port has.
fn chains(port: &ServicePort) -> BTreeSet<String> {
    let shape = Shape::of(port);
    let mut out: BTreeSet<String> = port
        .endpoints
        .iter()
        .map(|e| endpoint_name(port, e))
        .collect();
    for (present, name) in [
        (shape.external, shape.names.external),
        (shape.cluster, shape.names.cluster),
        (shape.local, shape.names.local),
    ] {
        if present {
            out.insert(name);
        }
    }
    out
}

/// Takes a service port's chains and sets out, referrers before what they refer to. With
/// `next`, the port's new version, the chains both have are flushed instead (a map element
/// that does not change may still point at them) and the affinity sets both keep stay.
fn remove_service(ops: &mut Vec<Op>, port: &ServicePort, next: Option<&ServicePort>) {
    let shape = Shape::of(port);
    let kept = next.map(chains).unwrap_or_default();
    let keep_affinity = kept_affinity(port, next);
    let out = |ops: &mut Vec<Op>, chain: &String| {
        ops.push(if kept.contains(chain) {
            Op::FlushChain(chain.clone())
        } else {
            Op::DeleteChain(chain.clone())
        });
    };
    if shape.external {
        out(ops, &shape.names.external);
    }
    for (present, chain) in [
        (shape.cluster, &shape.names.cluster),
        (shape.local, &shape.names.local),
    ] {
        if present {
            out(ops, chain);
            ops.push(Op::DeleteSet(format!("{chain}-endpoints")));
        }
    }
    for ep in &port.endpoints {
        out(ops, &endpoint_name(port, ep));
    }
    if port.affinity_seconds.is_some() {
        for ep in &port.endpoints {
            let set = affinity_set(port, ep);
            if !keep_affinity.contains(&set) {
                ops.push(Op::DeleteSet(set));
            }
        }
    }
}

/// Adds a service port's sets, chains and rules, what is referred to before its referrers.
/// With `prev`, the version [`remove_service`] took out, the chains and affinity sets both
/// have are there already.
fn add_service(ops: &mut Vec<Op>, port: &ServicePort, opts: Options, prev: Option<&ServicePort>) {
    let shape = Shape::of(port);
    let existing = prev.map(chains).unwrap_or_default();
    let affinity = prev
        .map(|p| kept_affinity(p, Some(port)))
        .unwrap_or_default();
    let open = |ops: &mut Vec<Op>, chain: &str| {
        if !existing.contains(chain) {
            ops.push(Op::AddChain(chain.into(), None));
        }
    };
    for ep in &port.endpoints {
        open(ops, &endpoint_name(port, ep));
        endpoint(ops, port, ep, &affinity);
    }
    if shape.cluster {
        let all: Vec<&Endpoint> = port.endpoints.iter().collect();
        open(ops, &shape.names.cluster);
        balancer(ops, &shape.names.cluster, port, &all, opts);
    }
    if shape.local {
        open(ops, &shape.names.local);
        balancer(ops, &shape.names.local, port, &port.local_endpoints(), opts);
    }
    if !shape.external {
        return;
    }
    let ext = &shape.names.external;
    open(ops, ext);
    // An internal Local policy does not bind the node's own external connections.
    let cluster = if shape.cluster {
        goto(&shape.names.cluster)
    } else {
        goto(REJECT)
    };
    let local = if shape.local {
        goto(&shape.names.local)
    } else {
        Verdict::Drop
    };
    let rules = if port.external_local {
        // The node itself is no outside client: its own connections go to any endpoint,
        // masqueraded so that the replies come back through it.
        vec![
            new_rule(ext)
                .match_fib_type(FibFlags::SADDR, RouteType::Local)
                .jump(chain_name(MARK_FOR_MASQUERADE))
                .comment(&port.id),
            new_rule(ext)
                .match_fib_type(FibFlags::SADDR, RouteType::Local)
                .then(cluster),
            new_rule(ext).then(local),
        ]
    } else {
        vec![
            new_rule(ext)
                .jump(chain_name(MARK_FOR_MASQUERADE))
                .comment(&port.id),
            new_rule(ext).then(cluster),
        ]
    };
    ops.extend(rules.into_iter().map(|r| Op::AddRule(ext.clone(), r)));
}

/// The rules (and endpoint map) of a chain that sends a new connection to one of `endpoints`: the client's remembered one
/// under session affinity, else one at random.
fn balancer(
    ops: &mut Vec<Op>,
    name: &str,
    port: &ServicePort,
    endpoints: &[&Endpoint],
    opts: Options,
) {
    let map = endpoints_map(name);
    let elements: Vec<SetElement> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| numgen_key(i).verdict(goto(&endpoint_name(port, ep))))
        .collect();
    ops.push(Op::AddSet(map.clone()));
    ops.push(Op::AddElements(map.clone(), elements));
    if opts.masquerade_all {
        ops.push(Op::AddRule(
            name.into(),
            new_rule(name).jump(chain_name(MARK_FOR_MASQUERADE)),
        ));
    }
    if port.affinity_seconds.is_some() {
        for ep in endpoints {
            ops.push(Op::AddRule(
                name.into(),
                new_rule(name)
                    .match_saddr_in_set(&affinity_set(port, ep))
                    .goto(chain_name(&endpoint_name(port, ep))),
            ));
        }
    }
    let modulus = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
    ops.push(Op::AddRule(
        name.into(),
        new_rule(name)
            .expr(Expr::Numgen {
                dreg: Register::Reg32_00,
                kind: NumgenKind::Random,
                modulus,
                offset: 0,
            })
            .expr(vmap(map.name()))
            .comment(&port.id),
    ));
}

/// An endpoint chain's rules: remember the client under session affinity, mark a pod reaching
/// itself for masquerade (hairpin), DNAT. The affinity sets in `existing` are there already.
fn endpoint(ops: &mut Vec<Op>, port: &ServicePort, ep: &Endpoint, existing: &BTreeSet<String>) {
    let name = endpoint_name(port, ep);
    if let Some(seconds) = port.affinity_seconds {
        let set = affinity_set(port, ep);
        if !existing.contains(&set) {
            ops.push(Op::AddSet(affinity(&set, seconds)));
        }
    }
    ops.push(Op::AddRule(
        name.clone(),
        new_rule(&name)
            .match_saddr_v4(ep.ip, 32)
            .jump(chain_name(MARK_FOR_MASQUERADE)),
    ));
    if port.affinity_seconds.is_some() {
        ops.push(Op::AddRule(
            name.clone(),
            new_rule(&name).update_in_set(PacketField::Ip4Saddr, &affinity_set(port, ep), None),
        ));
    }
    ops.push(Op::AddRule(
        name.clone(),
        new_rule(&name)
            .match_l4proto(port.protocol.number())
            .dnat(ep.ip, Some(ep.port)),
    ));
}
