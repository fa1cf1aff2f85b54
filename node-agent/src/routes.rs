//! Pod routes between nodes (flannel's job, in every node agent): each other Node's
//! `spec.podCIDR` is routed through that node's InternalIP when the two share a link (flannel's
//! host-gw), and through a VXLAN overlay otherwise (flannel's vxlan backend): every node with a
//! pod subnet and a non-loopback address has the device [`VTEP`] (VNI 1, UDP [`VXLAN_PORT`],
//! the pod subnet's first address on it, a MAC derived from the node's address and published
//! in the Node's [`MAC_ANNOTATION`]), and a far node's subnet is routed `via <its first
//! address> dev skiff.vxlan onlink`, with a permanent neighbour (that address → the far
//! node's MAC) and forwarding entry (that MAC → the far node's InternalIP). VXLAN packets are
//! taken only from the cluster's nodes (a guard chain drops the rest), since whoever can send
//! them could put packets into the pod network. Packets from this node's pods to another
//! node's pods keep their source address: they carry [`KEEP_SOURCE_MARK`], set in the table
//! `ip skiff-routes`, which the runtime's pod masquerade leaves alone.
//!
//! [`plan`] decides from the Node objects and the node's own addresses; [`RouteTable`] is the
//! kernel boundary ([`NetlinkRoutes`]: routes tagged with [`ROUTE_PROTOCOL`] in the main
//! table, the VXLAN device and its entries, and the nftables table, all through netlink).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::AgentError;

/// The packet mark bit of traffic between pods of different nodes, which must not be
/// masqueraded (the runtime's masquerade rule skips packets that carry it).
pub const KEEP_SOURCE_MARK: u32 = cri_api::KEEP_SOURCE_MARK;

/// The routing protocol number skiff's pod routes carry, which tells them from every other
/// route (`ip route` prints `proto 95`).
pub const ROUTE_PROTOCOL: u8 = 95;

/// The nftables table holding the mark rules and the VXLAN guard.
pub const TABLE: &str = "skiff-routes";
const CHAIN: &str = "keep-pod-source";
const GUARD: &str = "vxlan-guard";
/// The overlay's device.
pub const VTEP: &str = "skiff.vxlan";
/// The overlay's VXLAN network identifier and UDP port (flannel's).
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// The Node annotation holding its overlay device's MAC.
pub const MAC_ANNOTATION: &str = "skiff.io/vtep-mac";
/// The overlay device's MTU: a 1500-byte link less VXLAN's 50 bytes of headers.
const VTEP_MTU: u32 = 1450;

/// The overlay MAC of the node at `ip`: locally administered, and the same at every start, so
/// other nodes' entries stay right across restarts.
pub fn vtep_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0e, 0x53, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC in `aa:bb:cc:dd:ee:ff` form, if it is one.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok().filter(|_| b.len() == 2))
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/n`, with host bits cleared; `None` for anything else (IPv6 included).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Self {
            addr: network(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        network(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn network(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(u32::from(ip) & mask)
}

/// Where the overlay sends a far node's pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tunnel {
    /// The far node's overlay MAC.
    pub mac: [u8; 6],
    /// The far node's InternalIP, where its VXLAN packets go.
    pub node: Ipv4Addr,
}

/// One other node's pod subnet, reached through that node: on a shared link, or through the
/// overlay (`tunnel`, with `via` the subnet's first address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRoute {
    pub subnet: Subnet,
    pub via: Ipv4Addr,
    pub tunnel: Option<Tunnel>,
}

/// What the node's routes should be.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub routes: Vec<PodRoute>,
    /// Far nodes with a pod subnet that publish no overlay MAC yet (name, IP).
    pub off_link: Vec<(String, Ipv4Addr)>,
    /// Every other node's InternalIP: the only senders of VXLAN packets taken.
    pub peers: Vec<Ipv4Addr>,
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The routes to every other node's pod subnet, given this node's name and the addresses of
/// its links (`(address, prefix)`, loopback included or not). A node on this host (its
/// InternalIP is one of ours, as `skiff up` and an extra `skiff agent` on the same machine
/// are) needs no route: its pods' bridge is a link of this host already.
pub fn plan<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    me: &str,
    links: &[(Ipv4Addr, u8)],
) -> Plan {
    let own: BTreeSet<Ipv4Addr> = links.iter().map(|(a, _)| *a).collect();
    let nets: Vec<Subnet> = links
        .iter()
        .filter(|(a, p)| !a.is_loopback() && *p < 32)
        .map(|&(a, p)| Subnet {
            addr: network(a, p),
            prefix: p,
        })
        .collect();
    let mut plan = Plan::default();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == me {
            continue;
        }
        let Some(subnet) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(Subnet::parse)
        else {
            continue;
        };
        let Some(via) = internal_ip(node) else {
            continue;
        };
        if own.contains(&via) || via.is_loopback() {
            continue;
        }
        plan.peers.push(via);
        let mac = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MAC_ANNOTATION))
            .and_then(|m| parse_mac(m));
        if nets.iter().any(|n| n.contains(via)) {
            plan.routes.push(PodRoute {
                subnet,
                via,
                tunnel: None,
            });
        } else if let Some(mac) = mac {
            plan.routes.push(PodRoute {
                subnet,
                via: subnet.addr,
                tunnel: Some(Tunnel { mac, node: via }),
            });
        } else {
            plan.off_link.push((name.to_owned(), via));
        }
    }
    plan.routes.sort();
    plan.off_link.sort();
    plan.peers.sort();
    plan
}

/// This node's InternalIP and pod subnet, when it has both and the address is not loopback:
/// what its overlay device needs.
pub fn own_overlay<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    me: &str,
) -> Option<(Ipv4Addr, Subnet)> {
    let node = nodes
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))?;
    let ip = internal_ip(node).filter(|ip| !ip.is_loopback())?;
    let subnet = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(Subnet::parse)?;
    Some((ip, subnet))
}

/// The kernel's routes and marks. The real one is [`NetlinkRoutes`]; unit tests record.
pub trait RouteTable: Send + Sync + 'static {
    /// The IPv4 addresses of the node's links, with their prefixes.
    fn addresses(&self) -> BoxFuture<'_, Result<Vec<(Ipv4Addr, u8)>, AgentError>>;
    /// Makes the overlay device exist for this node's address and pod subnet (made anew the
    /// first time in a process, so nothing stale stays in it); returns its MAC.
    fn ensure_vtep(
        &self,
        local: Ipv4Addr,
        own: Subnet,
    ) -> BoxFuture<'_, Result<[u8; 6], AgentError>>;
    /// Makes skiff's pod routes, the overlay's entries and the marks and guard exactly these;
    /// returns how many routes it added or removed.
    fn sync<'a>(
        &'a self,
        routes: &'a [PodRoute],
        peers: &'a [Ipv4Addr],
    ) -> BoxFuture<'a, Result<usize, AgentError>>;
}

/// What the nftables table holds: the subnets marked, the peers let through the guard, and
/// whether there is a guard (only with an overlay device).
type Marked = (BTreeSet<Subnet>, Vec<Ipv4Addr>, bool);

/// Routes and nftables through netlink, in the agent's network namespace.
#[derive(Default)]
pub struct NetlinkRoutes {
    /// What the nftables table was last written with; `None` before the first write and
    /// after a failed one.
    marked: Mutex<Option<Marked>>,
    /// The overlay device as made in this process (address, subnet), and its entries.
    vtep: Mutex<Option<(Ipv4Addr, Subnet)>>,
    tunnels: Mutex<BTreeSet<(Subnet, Tunnel)>>,
}

fn routes_err(source: nlink::Error) -> AgentError {
    AgentError::Routes { source }
}

impl NetlinkRoutes {
    async fn sync_routes(&self, routes: &[PodRoute]) -> Result<usize, AgentError> {
        use nlink::netlink::route::Ipv4Route;
        use nlink::netlink::types::route::RouteProtocol;
        let conn = nlink::Connection::<nlink::Route>::new().map_err(routes_err)?;
        let ours = RouteProtocol::from(ROUTE_PROTOCOL);
        let mut present: BTreeMap<Subnet, Option<Ipv4Addr>> = BTreeMap::new();
        for r in conn.get_routes().await.map_err(routes_err)? {
            if r.protocol() != ours || !r.is_ipv4() || r.table_id() != 254 {
                continue;
            }
            let Some(IpAddr::V4(dst)) = r.destination().copied() else {
                continue;
            };
            let via = match r.gateway() {
                Some(IpAddr::V4(g)) => Some(*g),
                _ => None,
            };
            present.insert(
                Subnet {
                    addr: dst,
                    prefix: r.dst_len(),
                },
                via,
            );
        }
        let wanted: BTreeMap<Subnet, Ipv4Addr> = routes.iter().map(|r| (r.subnet, r.via)).collect();
        let tunneled: BTreeSet<Subnet> = routes
            .iter()
            .filter(|r| r.tunnel.is_some())
            .map(|r| r.subnet)
            .collect();
        let mut changes = 0;
        for (subnet, via) in &present {
            if wanted.get(subnet).copied() != *via {
                let mut route = Ipv4Route::new(subnet.addr, subnet.prefix).protocol(ours);
                if let Some(via) = via {
                    route = route.gateway(*via);
                }
                conn.del_route_if_exists(route).await.map_err(routes_err)?;
                changes += 1;
            }
        }
        for (subnet, via) in &wanted {
            if present.get(subnet).copied().flatten() != Some(*via) {
                let mut route = Ipv4Route::new(subnet.addr, subnet.prefix)
                    .gateway(*via)
                    .protocol(ours);
                if tunneled.contains(subnet) {
                    route = route.dev(VTEP).onlink();
                }
                conn.replace_route(route).await.map_err(routes_err)?;
                changes += 1;
            }
        }
        Ok(changes)
    }

    async fn sync_marks(
        &self,
        subnets: BTreeSet<Subnet>,
        peers: &[Ipv4Addr],
    ) -> Result<(), AgentError> {
        use nlink::netlink::nftables::{BaseChain, Chain, Family, FilterHook, Priority, Rule};
        let guarded = self.vtep.lock().await.is_some();
        let want = (subnets, peers.to_vec(), guarded);
        let mut marked = self.marked.lock().await;
        if marked.as_ref() == Some(&want) {
            return Ok(());
        }
        let (subnets, peers, guarded) = &want;
        let conn = nlink::Connection::<nlink::Nftables>::new().map_err(routes_err)?;
        let exists = conn
            .list_tables_in(Family::Ip)
            .await
            .map_err(routes_err)?
            .iter()
            .any(|t| t.name == TABLE);
        let mut tx = conn.transaction();
        if exists {
            tx = tx.del_table(TABLE, Family::Ip);
        }
        if !subnets.is_empty() || *guarded {
            tx = tx.add_table(TABLE, Family::Ip);
        }
        if !subnets.is_empty() {
            let chain = Chain::new(TABLE, CHAIN).map_err(routes_err)?;
            tx = tx.add_chain(
                chain
                    .family(Family::Ip)
                    // Before the masquerade (srcnat, 100) looks at the mark.
                    .base(BaseChain::filter(
                        FilterHook::Postrouting,
                        Priority::Custom(90),
                    )),
            );
            for s in subnets {
                tx = tx.add_rule(
                    Rule::new(TABLE, CHAIN)
                        .family(Family::Ip)
                        .match_daddr_v4(s.addr, s.prefix)
                        .set_mark_masked(KEEP_SOURCE_MARK, KEEP_SOURCE_MARK),
                );
            }
        }
        if *guarded {
            let chain = Chain::new(TABLE, GUARD).map_err(routes_err)?;
            tx = tx.add_chain(
                chain
                    .family(Family::Ip)
                    .base(BaseChain::filter(FilterHook::Input, Priority::Filter)),
            );
            for p in peers {
                tx = tx.add_rule(
                    Rule::new(TABLE, GUARD)
                        .family(Family::Ip)
                        .match_saddr_v4(*p, 32)
                        .match_udp_dport(VXLAN_PORT)
                        .accept(),
                );
            }
            tx = tx.add_rule(
                Rule::new(TABLE, GUARD)
                    .family(Family::Ip)
                    .match_udp_dport(VXLAN_PORT)
                    .drop(),
            );
        }
        *marked = None;
        if exists || !subnets.is_empty() || *guarded {
            tx.commit(&conn).await.map_err(routes_err)?;
        }
        *marked = Some(want);
        Ok(())
    }

    /// The overlay's neighbour and forwarding entries for exactly `wanted`.
    async fn sync_tunnels(&self, wanted: BTreeSet<(Subnet, Tunnel)>) -> Result<(), AgentError> {
        use nlink::netlink::fdb::FdbEntryBuilder;
        use nlink::netlink::neigh::Neighbor;
        let mut tunnels = self.tunnels.lock().await;
        if *tunnels == wanted {
            return Ok(());
        }
        let conn = nlink::Connection::<nlink::Route>::new().map_err(routes_err)?;
        for (subnet, t) in tunnels.difference(&wanted) {
            let _ = conn
                .del_neighbor_if_exists(Neighbor::new_v4(VTEP, subnet.addr))
                .await;
            let _ = conn
                .del_fdb_entry(
                    FdbEntryBuilder::new(t.mac)
                        .dev(VTEP)
                        .dst(IpAddr::V4(t.node))
                        .self_(),
                )
                .await;
        }
        for (subnet, t) in wanted.difference(&tunnels) {
            conn.replace_fdb(
                FdbEntryBuilder::new(t.mac)
                    .dev(VTEP)
                    .dst(IpAddr::V4(t.node))
                    .self_()
                    .permanent(),
            )
            .await
            .map_err(routes_err)?;
            conn.replace_neighbor(
                Neighbor::new_v4(VTEP, subnet.addr)
                    .lladdr(t.mac)
                    .permanent(),
            )
            .await
            .map_err(routes_err)?;
        }
        *tunnels = wanted;
        Ok(())
    }
}

impl RouteTable for NetlinkRoutes {
    fn addresses(&self) -> BoxFuture<'_, Result<Vec<(Ipv4Addr, u8)>, AgentError>> {
        Box::pin(async {
            let conn = nlink::Connection::<nlink::Route>::new().map_err(routes_err)?;
            Ok(conn
                .get_addresses()
                .await
                .map_err(routes_err)?
                .iter()
                .filter_map(|a| match a.address() {
                    Some(IpAddr::V4(ip)) => Some((*ip, a.prefix_len())),
                    _ => None,
                })
                .collect())
        })
    }

    fn ensure_vtep(
        &self,
        local: Ipv4Addr,
        own: Subnet,
    ) -> BoxFuture<'_, Result<[u8; 6], AgentError>> {
        Box::pin(async move {
            use nlink::netlink::link::VxlanLink;
            let mac = vtep_mac(local);
            let mut vtep = self.vtep.lock().await;
            if *vtep == Some((local, own)) {
                return Ok(mac);
            }
            let conn = nlink::Connection::<nlink::Route>::new().map_err(routes_err)?;
            // Made anew: its entries and routes are this process's to write.
            conn.del_link_if_exists(VTEP).await.map_err(routes_err)?;
            self.tunnels.lock().await.clear();
            conn.add_link(
                VxlanLink::new(VTEP, VNI)
                    .local(local)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .mtu(VTEP_MTU)
                    .address(mac),
            )
            .await
            .map_err(routes_err)?;
            conn.replace_address(nlink::netlink::addr::Ipv4Address::new(VTEP, own.addr, 32))
                .await
                .map_err(routes_err)?;
            conn.set_link_up(VTEP).await.map_err(routes_err)?;
            *vtep = Some((local, own));
            // The guard must be written now that there is a device to guard.
            *self.marked.lock().await = None;
            tracing::info!(device = VTEP, %local, mac = %mac_text(mac), "overlay device ready");
            Ok(mac)
        })
    }

    fn sync<'a>(
        &'a self,
        routes: &'a [PodRoute],
        peers: &'a [Ipv4Addr],
    ) -> BoxFuture<'a, Result<usize, AgentError>> {
        Box::pin(async move {
            self.sync_marks(routes.iter().map(|r| r.subnet).collect(), peers)
                .await?;
            self.sync_tunnels(
                routes
                    .iter()
                    .filter_map(|r| r.tunnel.map(|t| (r.subnet, t)))
                    .collect(),
            )
            .await?;
            self.sync_routes(routes).await
        })
    }
}

/// Removes skiff's pod routes and their mark table from the node (`skiff down`); what it
/// removed.
pub async fn remove() -> Result<Vec<String>, AgentError> {
    use nlink::netlink::route::Ipv4Route;
    use nlink::netlink::types::route::RouteProtocol;
    let mut removed = Vec::new();
    let conn = nlink::Connection::<nlink::Route>::new().map_err(routes_err)?;
    let ours = RouteProtocol::from(ROUTE_PROTOCOL);
    for r in conn.get_routes().await.map_err(routes_err)? {
        let (Some(IpAddr::V4(dst)), Some(IpAddr::V4(via))) =
            (r.destination().copied(), r.gateway().copied())
        else {
            continue;
        };
        if r.protocol() == ours && r.table_id() == 254 {
            let route = Ipv4Route::new(dst, r.dst_len()).gateway(via).protocol(ours);
            if conn.del_route_if_exists(route).await.map_err(routes_err)? {
                removed.push(format!("route {dst}/{} via {via}", r.dst_len()));
            }
        }
    }
    if conn.del_link_if_exists(VTEP).await.map_err(routes_err)? {
        removed.push(format!("overlay device {VTEP}"));
    }
    let nft = nlink::Connection::<nlink::Nftables>::new().map_err(routes_err)?;
    if nft
        .del_table_if_exists(TABLE, nlink::netlink::nftables::Family::Ip)
        .await
        .map_err(routes_err)?
    {
        removed.push(format!("nftables table ip {TABLE}"));
    }
    Ok(removed)
}

/// How often the routes are re-checked with no change (a route someone deleted comes back).
const RESYNC: Duration = Duration::from_secs(60);

/// Keeps the node's pod routes until `cancel`, from a watch of every Node.
pub async fn run<T: RouteTable>(
    client: kube::Client,
    me: String,
    table: Arc<T>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let (tx, mut changes) = tokio::sync::watch::channel(0u64);
    let api: kube::Api<Node> = kube::Api::all(client);
    let (nodes, mut listed) =
        crate::services::reflect::<Node>(api.clone(), Arc::new(tx), cancel.clone());
    tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = listed.wait_for(|l| *l) => if r.is_err() { return Ok(()) },
    }
    let mut synced: Option<(Vec<PodRoute>, Vec<Ipv4Addr>)> = None;
    let mut warned: BTreeSet<(String, Ipv4Addr)> = BTreeSet::new();
    let mut failures = 0u32;
    let mut last_full = tokio::time::Instant::now();
    loop {
        changes.mark_unchanged();
        let result = async {
            let state = nodes.state();
            let own = own_overlay(state.iter().map(AsRef::as_ref), &me);
            if let Some((ip, own)) = own {
                let mac = mac_text(table.ensure_vtep(ip, own).await?);
                let published = state
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(me.as_str()))
                    .and_then(|n| n.metadata.annotations.as_ref())
                    .and_then(|a| a.get(MAC_ANNOTATION))
                    .cloned();
                if published.as_deref() != Some(mac.as_str()) {
                    let patch = serde_json::json!({"metadata": {"annotations": {MAC_ANNOTATION: mac}}});
                    api.patch(&me, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
                        .await
                        .map_err(|e| AgentError::kube("patch", "node", &me, e))?;
                }
            }
            let links = table.addresses().await?;
            let mut plan = plan(state.iter().map(AsRef::as_ref), &me, &links);
            if own.is_none() {
                // No overlay device yet (no pod subnet, or a loopback address): far nodes wait.
                plan.routes.retain(|r| r.tunnel.is_none());
            }
            for off in &plan.off_link {
                if warned.insert(off.clone()) {
                    tracing::warn!(node = %off.0, ip = %off.1, "node shares no link with this one and publishes no overlay address yet: its pods are not reachable by pod IP from here until it does");
                }
            }
            let due = last_full.elapsed() >= RESYNC;
            if synced.as_ref() != Some(&(plan.routes.clone(), plan.peers.clone())) || due {
                let n = table.sync(&plan.routes, &plan.peers).await?;
                if n > 0 {
                    tracing::info!(routes = plan.routes.len(), changes = n, "pod routes synced");
                }
                synced = Some((plan.routes, plan.peers));
                last_full = tokio::time::Instant::now();
            }
            Ok::<_, AgentError>(())
        }
        .await;
        let retry = match result {
            Ok(()) => {
                failures = 0;
                None
            }
            Err(e) => {
                synced = None;
                failures += 1;
                let delay = Duration::from_secs(1 << failures.min(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot program pod routes");
                Some(delay)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { return Ok(()) },
            _ = tokio::time::sleep(retry.unwrap_or(RESYNC)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..Default::default()
            }),
        }
    }

    fn route(subnet: &str, via: &str) -> PodRoute {
        PodRoute {
            subnet: Subnet::parse(subnet).expect("subnet"),
            via: via.parse().expect("ip"),
            tunnel: None,
        }
    }

    const LINKS: &[(Ipv4Addr, u8)] = &[
        (Ipv4Addr::new(127, 0, 0, 1), 8),
        (Ipv4Addr::new(10, 96, 0, 10), 32),
        (Ipv4Addr::new(172, 30, 1, 2), 24),
        (Ipv4Addr::new(10, 88, 0, 1), 24),
    ];

    #[test]
    fn other_nodes_on_a_shared_link_are_routed_through_their_address() {
        let nodes = [
            node("me", Some("10.88.0.0/24"), Some("172.30.1.2")),
            node("b", Some("10.88.2.0/24"), Some("172.30.1.4")),
            node("a", Some("10.88.1.0/24"), Some("172.30.1.3")),
        ];
        let p = plan(&nodes, "me", LINKS);
        assert_eq!(
            p.routes,
            vec![
                route("10.88.1.0/24", "172.30.1.3"),
                route("10.88.2.0/24", "172.30.1.4")
            ]
        );
        assert!(p.off_link.is_empty());
    }

    #[test]
    fn nodes_without_a_subnet_or_address_on_this_host_or_elsewhere_get_no_route() {
        let nodes = [
            node("no-cidr", None, Some("172.30.1.5")),
            node("no-ip", Some("10.88.3.0/24"), None),
            node("ipv6", Some("fd00::/64"), Some("172.30.1.6")),
            node("same-host", Some("10.88.4.0/24"), Some("172.30.1.2")),
            node("loopback", Some("10.88.5.0/24"), Some("127.0.0.1")),
            node("far", Some("10.88.6.0/24"), Some("192.168.7.9")),
        ];
        let p = plan(&nodes, "me", LINKS);
        assert!(p.routes.is_empty(), "{p:?}");
        // Only a host /32 or loopback prefix holds 10.96.0.10 and 127.0.0.1: neither is a link
        // another node can be on.
        assert_eq!(
            p.off_link,
            vec![("far".into(), "192.168.7.9".parse().unwrap())]
        );
    }

    #[test]
    fn subnets_parse_with_host_bits_cleared() {
        let s = Subnet::parse("10.88.1.7/24").expect("subnet");
        assert_eq!(s.to_string(), "10.88.1.0/24");
        assert!(s.contains("10.88.1.200".parse().unwrap()));
        assert!(!s.contains("10.88.2.1".parse().unwrap()));
        assert_eq!(Subnet::parse("10.88.1.0/33"), None);
        assert_eq!(Subnet::parse("10.88.1.0"), None);
        assert_eq!(
            Subnet::parse("0.0.0.0/0").map(|s| s.contains("1.2.3.4".parse().unwrap())),
            Some(true)
        );
    }

    #[test]
    fn far_nodes_that_publish_an_overlay_mac_are_reached_through_it() {
        let mut far = node("far", Some("10.88.6.0/24"), Some("192.168.7.9"));
        far.metadata.annotations = Some(
            [(MAC_ANNOTATION.to_owned(), "0e:53:c0:a8:07:09".to_owned())]
                .into_iter()
                .collect(),
        );
        let near = node("near", Some("10.88.1.0/24"), Some("172.30.1.3"));
        let p = plan([&far, &near], "me", LINKS);
        assert_eq!(p.routes[0], route("10.88.1.0/24", "172.30.1.3"));
        assert_eq!(
            p.routes[1],
            PodRoute {
                subnet: Subnet::parse("10.88.6.0/24").unwrap(),
                via: "10.88.6.0".parse().unwrap(),
                tunnel: Some(Tunnel {
                    mac: [0x0e, 0x53, 192, 168, 7, 9],
                    node: "192.168.7.9".parse().unwrap()
                }),
            }
        );
        assert!(p.off_link.is_empty());
        assert_eq!(
            p.peers,
            [
                "172.30.1.3".parse::<Ipv4Addr>().unwrap(),
                "192.168.7.9".parse().unwrap()
            ]
        );
    }

    #[test]
    fn macs_are_derived_from_the_address_and_read_back() {
        let mac = vtep_mac("172.30.1.3".parse().unwrap());
        assert_eq!(mac_text(mac), "0e:53:ac:1e:01:03");
        assert_eq!(parse_mac("0e:53:ac:1e:01:03"), Some(mac));
        assert_eq!(parse_mac("0e:53:ac:1e:01"), None);
        assert_eq!(parse_mac("0e:53:ac:1e:01:3"), None);
        assert_eq!(parse_mac("zz:53:ac:1e:01:03"), None);
    }

    #[test]
    fn the_overlay_needs_a_subnet_and_a_reachable_address() {
        let me = node("me", Some("10.88.0.0/24"), Some("172.30.1.2"));
        assert_eq!(
            own_overlay([&me], "me"),
            Some((
                "172.30.1.2".parse().unwrap(),
                Subnet::parse("10.88.0.0/24").unwrap()
            ))
        );
        let local = node("me", Some("10.88.0.0/24"), Some("127.0.0.1"));
        assert_eq!(own_overlay([&local], "me"), None);
        let bare = node("me", None, Some("172.30.1.2"));
        assert_eq!(own_overlay([&bare], "me"), None);
    }
}
