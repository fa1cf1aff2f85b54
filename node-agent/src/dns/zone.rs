//! The cluster's DNS records, as CoreDNS's kubernetes plugin publishes them (the DNS
//! specification of Kubernetes): `<svc>.<ns>.svc.<domain>` is the cluster IP, or for a
//! headless Service its ready endpoints (and `<hostname>.<svc>...` for endpoints with a
//! hostname, as StatefulSet pods under their governing Service); `_<port>._<proto>.<svc>...`
//! SRV for named ports; ExternalName a CNAME; `<a-b-c-d>.<ns>.pod.<domain>` a pod's address
//! (CoreDNS's `pods insecure`); PTR for cluster IPs and named endpoints. Built from the
//! watched objects on each change; looked up per query.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::proxy::model::SERVICE_NAME_LABEL;

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Cname(String),
    Srv { port: u16, target: String },
    Ptr(String),
}

impl Data {
    fn kind(&self) -> Kind {
        match self {
            Data::A(_) => Kind::A,
            Data::Cname(_) => Kind::Cname,
            Data::Srv { .. } => Kind::Srv,
            Data::Ptr(_) => Kind::Ptr,
        }
    }
}

/// The record types the zone holds; anything else asked of a name it has is "no data".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Cname,
    Srv,
    Ptr,
    Other,
}

/// A lookup's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The records (a CNAME answers every type, as DNS has it).
    Records(Vec<Data>),
    /// The name exists, without records of that type.
    NoData,
    /// No such name in the cluster's domain.
    NxDomain,
    /// Not the cluster's to answer: forward it.
    Outside,
}

/// The cluster's records, by lowercase name without the final dot.
#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    records: HashMap<String, Vec<Data>>,
    /// Names without records that exist as parents of others (`<ns>.svc.<domain>`).
    parents: HashSet<String>,
}

/// Whether `name` is `domain` or under it (any case, final dot or not).
pub fn in_domain(domain: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == domain || name.ends_with(&format!(".{domain}"))
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn reverse(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

impl Zone {
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = Zone {
            domain: domain.clone(),
            ..Default::default()
        };
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if s.address_type != "IPv4" {
                continue;
            }
            if let Some(name) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                let ns = s.metadata.namespace.clone().unwrap_or_default();
                by_service.entry((ns, name.clone())).or_default().push(s);
            }
        }
        for svc in services {
            let (Some(name), Some(ns), Some(spec)) =
                (&svc.metadata.name, &svc.metadata.namespace, &svc.spec)
            else {
                continue;
            };
            let base = format!("{name}.{ns}.svc.{domain}").to_ascii_lowercase();
            zone.parents
                .insert(format!("{ns}.svc.{domain}").to_ascii_lowercase());
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = &spec.external_name {
                    let target = target.trim_end_matches('.').to_ascii_lowercase();
                    zone.add(&base, Data::Cname(target));
                }
                continue;
            }
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            match spec.cluster_ip.as_deref() {
                Some("None") => zone.headless(&base, spec, slices),
                Some(ip) => {
                    let Ok(ip) = ip.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    zone.add(&base, Data::A(ip));
                    zone.add(&reverse(ip), Data::Ptr(base.clone()));
                    for p in spec.ports.iter().flatten() {
                        let (Some(pname), Ok(port)) = (&p.name, u16::try_from(p.port)) else {
                            continue;
                        };
                        let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                        zone.add(
                            &format!("_{pname}._{proto}.{base}").to_ascii_lowercase(),
                            Data::Srv {
                                port,
                                target: base.clone(),
                            },
                        );
                    }
                }
                None => {}
            }
        }
        zone
    }

    fn add(&mut self, name: &str, data: Data) {
        let list = self.records.entry(name.to_string()).or_default();
        if !list.contains(&data) {
            list.push(data);
        }
    }

    /// A headless Service's records: its ready endpoints (all of them with
    /// `publishNotReadyAddresses`), each also under its hostname or dashed address.
    fn headless(
        &mut self,
        base: &str,
        spec: &k8s_openapi::api::core::v1::ServiceSpec,
        slices: &[&EndpointSlice],
    ) {
        let all = spec.publish_not_ready_addresses.unwrap_or(false);
        for slice in slices {
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !all {
                    continue;
                }
                for ip in ep
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                {
                    self.add(base, Data::A(ip));
                    let host = match &ep.hostname {
                        Some(h) => {
                            let named = format!("{h}.{base}").to_ascii_lowercase();
                            self.add(&reverse(ip), Data::Ptr(named.clone()));
                            named
                        }
                        None => format!("{}.{base}", dashed(ip)),
                    };
                    self.add(&host, Data::A(ip));
                    for p in slice.ports.iter().flatten() {
                        let (Some(pname), Some(port)) =
                            (&p.name, p.port.and_then(|n| u16::try_from(n).ok()))
                        else {
                            continue;
                        };
                        if pname.is_empty() {
                            continue;
                        }
                        let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                        self.add(
                            &format!("_{pname}._{proto}.{base}").to_ascii_lowercase(),
                            Data::Srv {
                                port,
                                target: host.clone(),
                            },
                        );
                    }
                }
            }
        }
        if !self.records.contains_key(base) {
            // A headless Service without ready endpoints still exists.
            self.parents.insert(base.to_string());
        }
    }

    /// Whether `name` (lowercase, no final dot) is this zone's to answer.
    fn owns(&self, name: &str) -> bool {
        in_domain(&self.domain, name) || self.records.contains_key(name)
    }

    /// Answers `name` of type `kind`.
    pub fn lookup(&self, name: &str, kind: Kind) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(records) = self.records.get(&name) {
            let cname: Vec<Data> = records
                .iter()
                .filter(|d| matches!(d, Data::Cname(_)))
                .cloned()
                .collect();
            if !cname.is_empty() {
                return Answer::Records(cname);
            }
            let hits: Vec<Data> = records
                .iter()
                .filter(|d| d.kind() == kind)
                .cloned()
                .collect();
            return if hits.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(hits)
            };
        }
        if !self.owns(&name) {
            return Answer::Outside;
        }
        if let Some(ip) = self.pod_address(&name) {
            return if kind == Kind::A {
                Answer::Records(vec![Data::A(ip)])
            } else {
                Answer::NoData
            };
        }
        let d = &self.domain;
        let structural = [d.clone(), format!("svc.{d}"), format!("pod.{d}")];
        if structural.contains(&name) || self.parents.contains(&name) {
            return Answer::NoData;
        }
        Answer::NxDomain
    }

    /// `a-b-c-d.<ns>.pod.<domain>`'s address.
    fn pod_address(&self, name: &str) -> Option<Ipv4Addr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (label, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        label.replace('-', ".").parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let svcs: Vec<Service> = [
            json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": "Example.COM."}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("service"))
        .collect();
        let slices: Vec<EndpointSlice> = [json!({
        "metadata": {"name": "db-1", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.88.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.88.0.8"], "conditions": {"ready": true}},
            {"addresses": ["10.88.0.9"], "hostname": "db-2", "conditions": {"ready": false}}
        ]})]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("slice"))
        .collect();
        Zone::build("cluster.local", &svcs, &slices)
    }

    #[test]
    fn services_resolve_to_cluster_ips_with_srv_and_ptr() {
        let z = zone();
        let a = |ip: [u8; 4]| Data::A(Ipv4Addr::from(ip));
        assert_eq!(
            z.lookup("web.shop.svc.cluster.local.", Kind::A),
            Answer::Records(vec![a([10, 96, 0, 20])])
        );
        assert_eq!(
            z.lookup("WEB.Shop.svc.cluster.local", Kind::A),
            Answer::Records(vec![a([10, 96, 0, 20])])
        );
        assert_eq!(
            z.lookup("web.shop.svc.cluster.local", Kind::Other),
            Answer::NoData
        );
        assert_eq!(
            z.lookup("_dns._udp.web.shop.svc.cluster.local", Kind::Srv),
            Answer::Records(vec![Data::Srv {
                port: 53,
                target: "web.shop.svc.cluster.local".into()
            }])
        );
        assert_eq!(
            z.lookup("20.0.96.10.in-addr.arpa", Kind::Ptr),
            Answer::Records(vec![Data::Ptr("web.shop.svc.cluster.local".into())])
        );
    }

    #[test]
    fn headless_services_list_ready_endpoints_by_hostname() {
        let z = zone();
        let Answer::Records(r) = z.lookup("db.shop.svc.cluster.local", Kind::A) else {
            panic!()
        };
        assert_eq!(r.len(), 2, "the not-ready endpoint is left out: {r:?}");
        assert_eq!(
            z.lookup("db-0.db.shop.svc.cluster.local", Kind::A),
            Answer::Records(vec![Data::A(Ipv4Addr::new(10, 88, 0, 7))])
        );
        assert_eq!(
            z.lookup("10-88-0-8.db.shop.svc.cluster.local", Kind::A),
            Answer::Records(vec![Data::A(Ipv4Addr::new(10, 88, 0, 8))])
        );
        assert_eq!(
            z.lookup("db-2.db.shop.svc.cluster.local", Kind::A),
            Answer::NxDomain
        );
        let Answer::Records(srv) = z.lookup("_pg._tcp.db.shop.svc.cluster.local", Kind::Srv) else {
            panic!()
        };
        assert!(srv.contains(&Data::Srv {
            port: 5432,
            target: "db-0.db.shop.svc.cluster.local".into()
        }));
    }

    #[test]
    fn external_names_pods_and_what_is_not_the_clusters() {
        let z = zone();
        assert_eq!(
            z.lookup("ext.shop.svc.cluster.local", Kind::A),
            Answer::Records(vec![Data::Cname("example.com".into())])
        );
        assert_eq!(
            z.lookup("10-88-0-5.shop.pod.cluster.local", Kind::A),
            Answer::Records(vec![Data::A(Ipv4Addr::new(10, 88, 0, 5))])
        );
        assert_eq!(
            z.lookup("nope.shop.svc.cluster.local", Kind::A),
            Answer::NxDomain
        );
        // The search path's misses answer at once.
        assert_eq!(
            z.lookup("web.shop.svc.cluster.local.shop.svc.cluster.local", Kind::A),
            Answer::NxDomain
        );
        assert_eq!(z.lookup("shop.svc.cluster.local", Kind::A), Answer::NoData);
        assert_eq!(z.lookup("example.com", Kind::A), Answer::Outside);
        assert_eq!(
            z.lookup("5.0.88.10.in-addr.arpa", Kind::Ptr),
            Answer::Outside
        );
    }
}
