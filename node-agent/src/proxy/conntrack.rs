//! Stale UDP flows, cleared as kube-proxy clears them: UDP has no connection to end, so a
//! client that keeps sending to a Service (a resolver to its DNS server, say) would keep its
//! conntrack entry, and with it the NAT to an endpoint that is gone, for as long as it sends.
//! After the rules change, the node's UDP flows to a Service's addresses are deleted when they
//! were sent to an endpoint the Service no longer has, or were not sent to any (no endpoint
//! then) while it has some now; the next packet is then matched by the rules afresh.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::future::BoxFuture;

use super::model::{Protocol, ServicePort};
use crate::AgentError;

/// One tracked UDP flow, as the cleanup reads it.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Where the client sent it: a Service's address and port, or anything else.
    pub orig_dst: (Ipv4Addr, u16),
    /// Who answers: the endpoint it was sent to (DNAT), or `orig_dst` when it was not.
    pub reply_src: (Ipv4Addr, u16),
    /// The kernel's entry, to delete it by (`None` in unit tests).
    pub entry: Option<nlink::netlink::netfilter::ConntrackEntry>,
}

/// The node's connection tracking. The real one is conntrack over netlink; unit tests keep
/// flows in a list.
pub trait Conntrack: Send + Sync + 'static {
    /// The IPv4 UDP flows the node tracks.
    fn udp_flows(&self) -> BoxFuture<'_, Result<Vec<Flow>, AgentError>>;
    /// Deletes these flows; how many went (one that ended meanwhile is not counted).
    fn delete(&self, flows: Vec<Flow>) -> BoxFuture<'_, Result<usize, AgentError>>;
}

/// What the UDP ports look like: each frontend (address and port a client sends to) with the
/// endpoints new flows go to. Cleanup runs only when this changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UdpFrontends {
    by_frontend: HashMap<(Ipv4Addr, u16), HashSet<(Ipv4Addr, u16)>>,
    /// Node ports, answered on every address of the node.
    node_ports: HashMap<u16, HashSet<(Ipv4Addr, u16)>>,
}

impl UdpFrontends {
    pub fn of(ports: &[ServicePort]) -> Self {
        let mut f = UdpFrontends::default();
        for p in ports.iter().filter(|p| p.protocol == Protocol::Udp) {
            let eps: HashSet<(Ipv4Addr, u16)> =
                p.endpoints.iter().map(|e| (e.ip, e.port)).collect();
            for ip in std::iter::once(p.cluster_ip).chain(p.external_ips.iter().copied()) {
                f.by_frontend
                    .entry((ip, p.port))
                    .or_default()
                    .extend(eps.iter().copied());
            }
            if let Some(np) = p.node_port {
                f.node_ports
                    .entry(np)
                    .or_default()
                    .extend(eps.iter().copied());
            }
        }
        f
    }

    pub fn is_empty(&self) -> bool {
        self.by_frontend.is_empty() && self.node_ports.is_empty()
    }

    /// The endpoints of the Service port a flow to `dst` was sent to, if `dst` is one
    /// (`node_ips`: the node's own addresses, where node ports are answered).
    fn endpoints_of(
        &self,
        dst: (Ipv4Addr, u16),
        node_ips: &HashSet<Ipv4Addr>,
    ) -> Option<&HashSet<(Ipv4Addr, u16)>> {
        self.by_frontend.get(&dst).or_else(|| {
            node_ips
                .contains(&dst.0)
                .then(|| self.node_ports.get(&dst.1))
                .flatten()
        })
    }

    /// The flows to delete: to a Service's address, and either sent to an endpoint it no longer
    /// has, or sent nowhere while it has endpoints now; and those to an address that was a
    /// Service's in `previous` and is no longer.
    pub fn stale(
        &self,
        previous: &UdpFrontends,
        flows: Vec<Flow>,
        node_ips: &HashSet<Ipv4Addr>,
    ) -> Vec<Flow> {
        flows
            .into_iter()
            .filter(|f| {
                let Some(eps) = self.endpoints_of(f.orig_dst, node_ips) else {
                    return previous.endpoints_of(f.orig_dst, node_ips).is_some();
                };
                if f.reply_src == f.orig_dst {
                    !eps.is_empty()
                } else {
                    !eps.contains(&f.reply_src)
                }
            })
            .collect()
    }
}

/// Deletes the node's stale UDP flows now that `previous` became `frontends`; how many went.
pub async fn clear_stale<C: Conntrack + ?Sized>(
    conntrack: &C,
    previous: &UdpFrontends,
    frontends: &UdpFrontends,
    node_ips: &HashSet<Ipv4Addr>,
) -> Result<usize, AgentError> {
    let flows = conntrack.udp_flows().await?;
    let stale = frontends.stale(previous, flows, node_ips);
    if stale.is_empty() {
        return Ok(0);
    }
    conntrack.delete(stale).await
}

/// The node's IPv4 addresses (where node ports are answered).
pub fn node_addresses() -> HashSet<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|i| i.address)
        .filter_map(|a| a.as_sockaddr_in().map(|s| s.ip()))
        .collect()
}

/// conntrack through netlink (NETLINK_NETFILTER), in the agent's network namespace.
#[derive(Default)]
pub struct NetlinkConntrack {
    conn: tokio::sync::Mutex<Option<nlink::Connection<nlink::netlink::Netfilter>>>,
}

impl NetlinkConntrack {
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&nlink::Connection<nlink::netlink::Netfilter>) -> nlink::Result<T>,
    ) -> Result<T, AgentError> {
        let proxy = |source| AgentError::Proxy { source };
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(nlink::Connection::<nlink::netlink::Netfilter>::new().map_err(proxy)?);
        }
        let Some(c) = conn.as_ref() else {
            unreachable!("connected above")
        };
        let r = f(c).await;
        if r.is_err() {
            // A socket in a bad state is not kept.
            *conn = None;
        }
        r.map_err(proxy)
    }
}

fn v4(ip: Option<IpAddr>) -> Option<Ipv4Addr> {
    match ip? {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

impl Conntrack for NetlinkConntrack {
    fn udp_flows(&self) -> BoxFuture<'_, Result<Vec<Flow>, AgentError>> {
        use nlink::netlink::netfilter::{ConntrackFilter, IpProtocol};
        Box::pin(async move {
            let filter = ConntrackFilter::new()
                .family(nlink::netlink::types::AddressFamily::Inet)
                .proto(IpProtocol::Udp);
            let entries = self
                .with(async |c| c.get_conntrack_matching(&filter).await)
                .await?;
            Ok(entries
                .into_iter()
                .filter_map(|e| {
                    let orig_dst = (v4(e.orig.dst_ip)?, e.orig.dst_port?);
                    let reply_src = (v4(e.reply.src_ip)?, e.reply.src_port?);
                    Some(Flow {
                        orig_dst,
                        reply_src,
                        entry: Some(e),
                    })
                })
                .collect())
        })
    }

    fn delete(&self, flows: Vec<Flow>) -> BoxFuture<'_, Result<usize, AgentError>> {
        Box::pin(async move {
            self.with(async |c| {
                let mut gone = 0;
                for e in flows.iter().filter_map(|f| f.entry.as_ref()) {
                    match c.del_conntrack_entry(e).await {
                        Ok(()) => gone += 1,
                        Err(err) if err.is_not_found() => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(gone)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Endpoint;

    fn port(ip: [u8; 4], eps: &[([u8; 4], u16)], node_port: Option<u16>) -> ServicePort {
        ServicePort {
            id: "default/dns:dns/udp".into(),
            protocol: Protocol::Udp,
            port: 53,
            cluster_ip: Ipv4Addr::from(ip),
            external_ips: vec![],
            node_port,
            affinity_seconds: None,
            external_local: false,
            internal_local: false,
            endpoints: eps
                .iter()
                .map(|(ip, port)| Endpoint {
                    ip: Ipv4Addr::from(*ip),
                    port: *port,
                    local: false,
                })
                .collect(),
        }
    }

    fn flow(dst: ([u8; 4], u16), reply: ([u8; 4], u16)) -> Flow {
        Flow {
            orig_dst: (Ipv4Addr::from(dst.0), dst.1),
            reply_src: (Ipv4Addr::from(reply.0), reply.1),
            entry: None,
        }
    }

    fn dsts(flows: &[Flow]) -> Vec<(Ipv4Addr, u16, Ipv4Addr)> {
        flows
            .iter()
            .map(|f| (f.orig_dst.0, f.orig_dst.1, f.reply_src.0))
            .collect()
    }

    #[test]
    fn flows_to_gone_endpoints_and_blackholed_ones_go() {
        let svc = [10, 96, 0, 20];
        let node = HashSet::from([Ipv4Addr::new(172, 30, 1, 2)]);
        let ports = vec![port(svc, &[([10, 88, 1, 5], 5353)], Some(30053))];
        let f = UdpFrontends::of(&ports);
        let flows = vec![
            // To the endpoint it still has: kept.
            flow((svc, 53), ([10, 88, 1, 5], 5353)),
            // To one it no longer has: deleted.
            flow((svc, 53), ([10, 88, 1, 9], 5353)),
            // Sent nowhere while there was no endpoint: deleted now there is one.
            flow((svc, 53), (svc, 53)),
            // Through a node port on the node's address, to a gone endpoint: deleted.
            flow(([172, 30, 1, 2], 30053), ([10, 88, 1, 9], 5353)),
            // The same port on another host's address is not ours: kept.
            flow(([172, 30, 1, 9], 30053), ([10, 88, 1, 9], 5353)),
            // Anything else: kept.
            flow(([8, 8, 8, 8], 53), ([8, 8, 8, 8], 53)),
        ];
        let stale = f.stale(&UdpFrontends::default(), flows, &node);
        assert_eq!(
            dsts(&stale),
            [
                (Ipv4Addr::from(svc), 53, Ipv4Addr::new(10, 88, 1, 9)),
                (Ipv4Addr::from(svc), 53, Ipv4Addr::from(svc)),
                (
                    Ipv4Addr::new(172, 30, 1, 2),
                    30053,
                    Ipv4Addr::new(10, 88, 1, 9)
                ),
            ]
        );
        // A Service without endpoints keeps its unanswered flows, and deletes the others.
        let empty = UdpFrontends::of(&[port(svc, &[], None)]);
        let stale = empty.stale(
            &f,
            vec![
                flow((svc, 53), (svc, 53)),
                flow((svc, 53), ([10, 88, 1, 5], 5353)),
            ],
            &node,
        );
        assert_eq!(
            dsts(&stale),
            [(Ipv4Addr::from(svc), 53, Ipv4Addr::new(10, 88, 1, 5))]
        );
        // A Service that went: its flows go too.
        let gone = UdpFrontends::default().stale(
            &f,
            vec![
                flow((svc, 53), ([10, 88, 1, 5], 5353)),
                flow(([8, 8, 8, 8], 53), ([8, 8, 8, 8], 53)),
            ],
            &node,
        );
        assert_eq!(
            dsts(&gone),
            [(Ipv4Addr::from(svc), 53, Ipv4Addr::new(10, 88, 1, 5))]
        );
        // TCP ports are left to TCP.
        let mut tcp = port(svc, &[], None);
        tcp.protocol = Protocol::Tcp;
        assert!(UdpFrontends::of(&[tcp]).is_empty());
    }
}
