//! The nftables ruleset for the service ports, in table `ip skiff-proxy`, laid out as
//! kube-proxy's nftables mode lays out its own: packets are matched against maps keyed by
//! destination (`ip daddr . meta l4proto . th dport`, and `meta l4proto . th dport` for node
//! ports on the node's addresses), whose verdicts jump to one chain per service port; that
//! chain picks an endpoint chain with `numgen random` (or the client's remembered endpoint for
//! `sessionAffinity: ClientIP`), which DNATs. Packets that must leave with the node's address
//! (from outside with `externalTrafficPolicy: Cluster`, a pod reaching itself through its
//! Service) carry a mark that the postrouting chain masquerades.

use std::net::Ipv4Addr;
use std::time::Duration;

use nlink::netlink::nftables::config::{DeclaredTableBuilder, NftablesConfig};
use nlink::netlink::nftables::{
    BaseChain, ChainName, Expr, Family, FibFlags, LookupExpr, MetaKey, NatHook, NumgenKind,
    PacketField, PayloadBase, Priority, Register, Rule, SetElement, SetKeyType, Verdict,
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

fn chain(name: &str) -> ChainName {
    // Every name here is built from a fixed prefix and hex digits: valid by construction.
    name.parse()
        .unwrap_or_else(|_| unreachable!("invalid chain name {name}"))
}

fn goto(name: &str) -> Verdict {
    Verdict::GotoTo(chain(name))
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

/// The whole table for `ports`.
pub fn ruleset(ports: &[ServicePort], opts: Options) -> NftablesConfig {
    let ports = ports.to_vec();
    NftablesConfig::new().table(TABLE, Family::Ip, move |t| {
        let mut t = skeleton(t);
        let mut ips = Vec::new();
        let mut node_ports = Vec::new();
        for port in &ports {
            let (table, dest) = service(t, port, opts);
            t = table;
            let proto = SetElement::inet_proto(port.protocol.number());
            let key = |ip: Ipv4Addr| {
                SetElement::concat([
                    SetElement::ipv4(ip),
                    proto.clone(),
                    SetElement::port(port.port),
                ])
            };
            ips.push(key(port.cluster_ip).verdict(dest.internal.clone()));
            if let Some(external) = &dest.external {
                for ip in &port.external_ips {
                    ips.push(key(*ip).verdict(external.clone()));
                }
                if let Some(np) = port.node_port {
                    node_ports.push(
                        SetElement::concat([proto.clone(), SetElement::port(np)])
                            .verdict(external.clone()),
                    );
                }
            }
        }
        t.set(SERVICE_IPS, move |s| {
            s.key_type(SetKeyType::Concat(vec![
                SetKeyType::Ipv4Addr,
                SetKeyType::InetProto,
                SetKeyType::InetService,
            ]))
            .vmap()
            .elements(ips)
        })
        .set(SERVICE_NODEPORTS, move |s| {
            s.key_type(SetKeyType::Concat(vec![
                SetKeyType::InetProto,
                SetKeyType::InetService,
            ]))
            .vmap()
            .elements(node_ports)
        })
    })
}

/// The base chains and the chains every service shares.
fn skeleton(t: DeclaredTableBuilder) -> DeclaredTableBuilder {
    t.chain("nat-prerouting", |c| {
        c.base(BaseChain::nat(NatHook::Prerouting, Priority::DstNat))
    })
    .chain("nat-output", |c| {
        c.base(BaseChain::nat(NatHook::Output, Priority::DstNat))
    })
    .chain("nat-postrouting", |c| {
        c.base(BaseChain::nat(NatHook::Postrouting, Priority::SrcNat))
    })
    .chain("services", |c| c)
    .chain(MARK_FOR_MASQUERADE, |c| c)
    .chain(REJECT, |c| c)
    .rule_keyed("nat-prerouting", "services", |r| r.jump(chain("services")))
    .rule_keyed("nat-output", "services", |r| r.jump(chain("services")))
    .rule_keyed("nat-postrouting", "masquerade", |r| {
        r.match_mark_masked(MASQUERADE_MARK, MASQUERADE_MARK)
            .set_mark_masked(0, MASQUERADE_MARK)
            .masquerade()
    })
    .rule_keyed(MARK_FOR_MASQUERADE, "mark", |r| {
        r.set_mark_masked(MASQUERADE_MARK, MASQUERADE_MARK)
    })
    // A reset refuses a TCP connection at once; ICMP port unreachable the rest.
    .rule_keyed(REJECT, "tcp", |r| r.match_l4proto(6).reject_tcp_reset())
    .rule_keyed(REJECT, "other", Rule::reject)
    .rule_keyed("services", "service-ips", |r| {
        with(r, destination_key()).expr(vmap(SERVICE_IPS))
    })
    // Node ports on every address of the node but loopback (as kube-proxy's nftables mode).
    .rule_keyed("services", "service-nodeports", |r| {
        with(
            r.match_fib_type(FibFlags::DADDR, RouteType::Local)
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
        .expr(vmap(SERVICE_NODEPORTS))
    })
}

/// Where a service port's traffic goes: from inside the cluster, and from outside (when
/// anything reaches it from outside).
struct Destinations {
    internal: Verdict,
    external: Option<Verdict>,
}

/// Declares the chains of one service port.
fn service(
    mut t: DeclaredTableBuilder,
    port: &ServicePort,
    opts: Options,
) -> (DeclaredTableBuilder, Destinations) {
    let names = Names::of(port);
    for ep in &port.endpoints {
        t = endpoint(t, port, ep);
    }
    let all: Vec<&Endpoint> = port.endpoints.iter().collect();
    let local = port.local_endpoints();
    let cluster = if all.is_empty() {
        goto(REJECT)
    } else {
        t = balancer(t, &names.cluster, port, &all, opts);
        goto(&names.cluster)
    };
    let needs_local = port.internal_local || (port.external_local && port.is_external());
    // With a Local policy and no endpoint here, traffic is dropped (kube-proxy's choice: the
    // client's retry may reach another node).
    let local_dest = if !needs_local {
        None
    } else if local.is_empty() {
        Some(Verdict::Drop)
    } else {
        t = balancer(t, &names.local, port, &local, opts);
        Some(goto(&names.local))
    };
    let internal = match (&local_dest, port.internal_local) {
        (Some(l), true) => l.clone(),
        _ => cluster.clone(),
    };
    if !port.is_external() {
        return (
            t,
            Destinations {
                internal,
                external: None,
            },
        );
    }
    let ext = names.external;
    let id = port.id.clone();
    t = t.chain(ext.clone(), |c| c);
    t = match (local_dest, port.external_local) {
        (Some(l), true) => {
            // The node itself is no outside client: its own connections go to any endpoint,
            // masqueraded so that the replies come back through it.
            let to_cluster = cluster.clone();
            t.rule_keyed(&ext, "local-source", move |r| {
                r.match_fib_type(FibFlags::SADDR, RouteType::Local)
                    .jump(chain(MARK_FOR_MASQUERADE))
                    .comment(&id)
            })
            .rule_keyed(&ext, "local-source-cluster", move |r| {
                r.match_fib_type(FibFlags::SADDR, RouteType::Local)
                    .then(to_cluster)
            })
            .rule_keyed(&ext, "local-endpoints", move |r| r.then(l))
        }
        _ => {
            let to_cluster = cluster.clone();
            t.rule_keyed(&ext, "masquerade", move |r| {
                r.jump(chain(MARK_FOR_MASQUERADE)).comment(&id)
            })
            .rule_keyed(&ext, "cluster", move |r| r.then(to_cluster))
        }
    };
    (
        t,
        Destinations {
            internal,
            external: Some(goto(&ext)),
        },
    )
}

/// A chain that sends a new connection to one of `endpoints`: the client's remembered one
/// under session affinity, else one at random.
fn balancer(
    mut t: DeclaredTableBuilder,
    name: &str,
    port: &ServicePort,
    endpoints: &[&Endpoint],
    opts: Options,
) -> DeclaredTableBuilder {
    let id = port.id.clone();
    t = t.chain(name.to_string(), |c| c);
    if opts.masquerade_all {
        t = t.rule_keyed(name, "masquerade-all", |r| {
            r.jump(chain(MARK_FOR_MASQUERADE))
        });
    }
    if port.affinity_seconds.is_some() {
        for ep in endpoints {
            let (set, target) = (affinity_set(port, ep), endpoint_name(port, ep));
            t = t.rule_keyed(name, format!("affinity-{target}"), move |r| {
                r.match_saddr_in_set(&set).goto(chain(&target))
            });
        }
    }
    let map = format!("{name}-endpoints");
    let modulus = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
    let elements: Vec<SetElement> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| numgen_key(i).verdict(goto(&endpoint_name(port, ep))))
        .collect();
    let lookup = map.clone();
    t.set(map, move |s| {
        s.key_type(SetKeyType::Mark).vmap().elements(elements)
    })
    .rule_keyed(name, "balance", move |r| {
        r.expr(Expr::Numgen {
            dreg: Register::Reg32_00,
            kind: NumgenKind::Random,
            modulus,
            offset: 0,
        })
        .expr(vmap(&lookup))
        .comment(&id)
    })
}

/// An endpoint's chain: remember the client under session affinity, mark a pod reaching
/// itself for masquerade (hairpin), DNAT.
fn endpoint(
    mut t: DeclaredTableBuilder,
    port: &ServicePort,
    ep: &Endpoint,
) -> DeclaredTableBuilder {
    let name = endpoint_name(port, ep);
    let (ip, target, proto) = (ep.ip, ep.port, port.protocol.number());
    t = t
        .chain(name.clone(), |c| c)
        .rule_keyed(&name, "hairpin", move |r| {
            r.match_saddr_v4(ip, 32).jump(chain(MARK_FOR_MASQUERADE))
        });
    if let Some(seconds) = port.affinity_seconds {
        let set = affinity_set(port, ep);
        let update = set.clone();
        t = t
            .set(set, move |s| {
                s.key_type(SetKeyType::Ipv4Addr)
                    .dynamic()
                    .timeout(Duration::from_secs(u64::from(seconds)))
            })
            .rule_keyed(&name, "affinity", move |r| {
                r.update_in_set(PacketField::Ip4Saddr, &update, None)
            });
    }
    t.rule_keyed(&name, "dnat", move |r| {
        r.match_l4proto(proto).dnat(ip, Some(target))
    })
}
