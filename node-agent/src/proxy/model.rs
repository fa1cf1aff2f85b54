//! What the proxy programs, as plain data: each port of each Service with the addresses it is
//! reached at and the endpoints that take its new connections, computed from the Services and
//! EndpointSlices the agent watches, as kube-proxy reads them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort as SpecPort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The transport protocol of a service port, by its IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One endpoint of a service port: where a new connection may go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node (for the `Local` traffic policies).
    pub local: bool,
}

/// One port of one Service, as the data path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name/protocol`, unique; chain names are derived from it.
    pub id: String,
    pub protocol: Protocol,
    pub port: u16,
    /// The cluster IP (none for headless and ExternalName Services, which get no rules).
    pub cluster_ip: Ipv4Addr,
    /// Addresses from outside the cluster: `spec.externalIPs` and the load balancer's ingress.
    pub external_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`: how long a client sticks to its endpoint, in seconds.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local`: outside traffic only to this node's endpoints.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`: cluster IP traffic only to this node's endpoints.
    pub internal_local: bool,
    /// The endpoints new connections go to: the ready ones, or, while none is ready, those
    /// still serving while they terminate (as kube-proxy does since KEP-1669). Sorted.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// The endpoints on this node that take connections: ready ones, else serving ones.
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        self.endpoints.iter().filter(|e| e.local).collect()
    }

    /// Whether anything reaches this port from outside the cluster.
    pub fn is_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// An endpoint's state in its slice, as the proxy chooses among them.
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving: bool,
}

/// Every service port to program on `node`, sorted by id.
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> Vec<ServicePort> {
    // Slices by (namespace, service name).
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let labels = slice.metadata.labels.as_ref();
        let Some(name) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service
            .entry((ns, name.clone()))
            .or_default()
            .push(slice);
    }
    let mut out = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let Some(spec) = &svc.spec else { continue };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ty == "LoadBalancer" {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            external_ips.extend(
                ingress
                    .into_iter()
                    .flatten()
                    // `ipMode: Proxy` means the load balancer itself forwards to the node.
                    .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                    .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
            );
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        let external_local = matches!(ty, "NodePort" | "LoadBalancer")
            && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            out.push(ServicePort {
                id: format!("{ns}/{name}:{port_name}/{}", protocol.name()),
                protocol,
                port,
                cluster_ip,
                external_ips: external_ips.clone(),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                affinity_seconds,
                external_local,
                internal_local,
                endpoints: endpoints(slices, p, protocol, node),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The endpoints of `port` across the service's slices: matched by port name and protocol
/// (the EndpointSlice controller resolved named target ports per pod already).
fn endpoints(
    slices: &[&EndpointSlice],
    port: &SpecPort,
    protocol: Protocol,
    node: &str,
) -> Vec<Endpoint> {
    let want = port.name.clone().unwrap_or_default();
    let mut all = Vec::new();
    for slice in slices {
        let Some(target) = slice.ports.iter().flatten().find(|sp| {
            sp.name.clone().unwrap_or_default() == want
                && Protocol::parse(sp.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // Unset conditions mean ready and serving, as the API documents.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let local = ep.node_name.as_deref() == Some(node);
            for ip in ep
                .addresses
                .iter()
                .filter_map(|a| a.parse::<Ipv4Addr>().ok())
            {
                all.push(Candidate {
                    endpoint: Endpoint {
                        ip,
                        port: target,
                        local,
                    },
                    ready,
                    serving,
                });
            }
        }
    }
    let ready: Vec<Endpoint> = all
        .iter()
        .filter(|c| c.ready)
        .map(|c| c.endpoint.clone())
        .collect();
    let mut chosen = if ready.is_empty() {
        all.into_iter()
            .filter(|c| c.serving)
            .map(|c| c.endpoint)
            .collect()
    } else {
        ready
    };
    chosen.sort();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("a service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("a slice")
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "externalIPs": ["192.0.2.9"],
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "externalTrafficPolicy": "Local",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "protocol": "UDP"}
                ]}
        }))
    }

    fn web_slice() -> EndpointSlice {
        slice(json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.88.0.5"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.88.0.6"], "nodeName": "n2", "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.88.0.7"], "nodeName": "n1"}
            ]
        }))
    }

    #[test]
    fn ports_carry_addresses_policies_and_ready_endpoints() {
        let ports = service_ports([&web()], [&web_slice()], "n1");
        assert_eq!(ports.len(), 2);
        let dns = &ports[0];
        assert_eq!(dns.id, "shop/web:dns/udp");
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.node_port, None);
        assert_eq!(dns.endpoints.len(), 2);
        assert!(dns.endpoints.iter().all(|e| e.port == 5353));
        let http = &ports[1];
        assert_eq!(http.cluster_ip, Ipv4Addr::new(10, 96, 0, 20));
        assert_eq!(http.external_ips, vec![Ipv4Addr::new(192, 0, 2, 9)]);
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_seconds, Some(60));
        assert!(http.external_local && !http.internal_local);
        // The terminating endpoint takes no new connections while others are ready; unset
        // conditions are ready.
        let ips: Vec<_> = http
            .endpoints
            .iter()
            .map(|e| (e.ip.octets()[3], e.port, e.local))
            .collect();
        assert_eq!(ips, vec![(5, 8080, true), (7, 8080, true)]);
        assert_eq!(http.local_endpoints().len(), 2);
        assert!(http.is_external());
    }

    #[test]
    fn terminating_endpoints_serve_while_none_is_ready() {
        let mut s = web_slice();
        s.endpoints.retain(|e| e.addresses[0] == "10.88.0.6");
        let ports = service_ports([&web()], [&s], "n1");
        assert_eq!(ports[1].endpoints.len(), 1);
        assert!(!ports[1].endpoints[0].local);
        // Not serving either: nothing.
        s.endpoints[0].conditions.as_mut().unwrap().serving = Some(false);
        let ports = service_ports([&web()], [&s], "n1");
        assert!(ports[1].endpoints.is_empty());
    }

    #[test]
    fn headless_external_name_and_other_services_slices_are_left_out() {
        let headless = svc(json!({"metadata": {"name": "h", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let external = svc(json!({"metadata": {"name": "x", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(service_ports([&headless, &external], [&web_slice()], "n1").is_empty());
        // A slice of another namespace's `web` is not this one's.
        let mut other = web_slice();
        other.metadata.namespace = Some("other".into());
        let ports = service_ports([&web()], [&other], "n1");
        assert!(ports.iter().all(|p| p.endpoints.is_empty()));
    }

    #[test]
    fn load_balancer_ingress_is_an_external_address_unless_proxied() {
        let lb = svc(json!({"metadata": {"name": "lb", "namespace": "d"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.30", "ports": [{"port": 80, "nodePort": 31000}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.2", "ipMode": "VIP"}, {"ip": "192.0.2.3", "ipMode": "Proxy"}]}}}));
        let ports = service_ports([&lb], [], "n1");
        assert_eq!(ports[0].external_ips, vec![Ipv4Addr::new(192, 0, 2, 2)]);
        assert_eq!(ports[0].id, "d/lb:/tcp");
    }
}
