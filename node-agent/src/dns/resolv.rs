//! The resolv.conf each pod gets, by its `dnsPolicy` and `dnsConfig`, as the kubelet builds it:
//! ClusterFirst (the default) names the cluster DNS and searches the pod's namespace, the
//! cluster and the node's own search domains with `ndots:5`; Default copies the node's
//! resolv.conf; None has only the pod's `dnsConfig`; ClusterFirstWithHostNet is ClusterFirst
//! for hostNetwork pods, which under ClusterFirst get Default. `dnsConfig` is merged in.

use std::net::Ipv4Addr;

use cri_api::v1;
use k8s_openapi::api::core::v1::PodSpec;

/// A resolv.conf's nameservers, search domains and options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads resolv.conf text (the last `search` line wins, as the resolver reads it).
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => out.nameservers.extend(words.next().map(str::to_string)),
                Some("search" | "domain") => {
                    out.searches = words.map(str::to_string).collect();
                }
                Some("options") => out.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        out
    }
}

/// What a node knows about DNS: the cluster's DNS address and domain, and its own resolvers.
#[derive(Debug, Clone, Default)]
pub struct NodeDns {
    pub cluster_dns: Option<Ipv4Addr>,
    pub domain: String,
    pub host: ResolvConf,
}

/// The resolver's limits the kubelet applies: 3 nameservers, 32 search domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The pod's DNS config for CRI; `None` has the runtime copy the node's resolv.conf.
pub fn pod_dns_config(spec: &PodSpec, namespace: &str, node: &NodeDns) -> v1::DnsConfig {
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => node.cluster_dns,
        "ClusterFirst" if !host_network => node.cluster_dns,
        _ => None,
    };
    let mut conf = match (policy, cluster) {
        ("None", _) => ResolvConf::default(),
        (_, Some(ip)) => {
            let d = &node.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{d}"),
                format!("svc.{d}"),
                d.clone(),
            ];
            push_unique(&mut searches, node.host.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![ip.to_string()],
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => node.host.clone(),
    };
    if let Some(cfg) = &spec.dns_config {
        push_unique(
            &mut conf.nameservers,
            cfg.nameservers.iter().flatten().cloned(),
        );
        push_unique(&mut conf.searches, cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            // A pod's option replaces the one of the same name.
            conf.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            conf.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCHES);
    v1::DnsConfig {
        servers: conf.nameservers,
        searches: conf.searches,
        options: conf.options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(
            json!({"containers": [{"name": "c"}]})
                .as_object()
                .cloned()
                .map(|mut m| {
                    m.extend(v.as_object().cloned().unwrap_or_default());
                    serde_json::Value::Object(m)
                })
                .unwrap(),
        )
        .expect("a pod spec")
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: Some(Ipv4Addr::new(10, 96, 0, 10)),
            domain: "cluster.local".into(),
            host: ResolvConf::parse("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
        }
    }

    #[test]
    fn cluster_first_names_the_cluster_dns_and_searches() {
        let c = pod_dns_config(&spec(json!({})), "shop", &node());
        assert_eq!(c.servers, vec!["10.96.0.10"]);
        assert_eq!(
            c.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(c.options, vec!["ndots:5"]);
    }

    #[test]
    fn host_network_default_and_none() {
        let host = node().host;
        let c = pod_dns_config(&spec(json!({"hostNetwork": true})), "shop", &node());
        assert_eq!(
            (c.servers, c.searches),
            (host.nameservers.clone(), host.searches.clone())
        );
        let c = pod_dns_config(
            &spec(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            "shop",
            &node(),
        );
        assert_eq!(c.servers, vec!["10.96.0.10"]);
        let c = pod_dns_config(&spec(json!({"dnsPolicy": "Default"})), "shop", &node());
        assert_eq!(c.options, vec!["edns0"]);
        let c = pod_dns_config(
            &spec(
                json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}),
            ),
            "shop",
            &node(),
        );
        assert_eq!(c.servers, vec!["1.1.1.1"]);
        assert_eq!(c.searches, vec!["a.example"]);
        assert_eq!(c.options, vec!["ndots:2", "rotate"]);
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let c = pod_dns_config(
            &spec(
                json!({"dnsConfig": {"nameservers": ["10.96.0.10", "192.0.2.1"], "searches": ["extra.example"], "options": [{"name": "ndots", "value": "1"}]}}),
            ),
            "shop",
            &node(),
        );
        assert_eq!(c.servers, vec!["10.96.0.10", "192.0.2.1"]);
        assert_eq!(c.searches.last().map(String::as_str), Some("extra.example"));
        assert_eq!(c.options, vec!["ndots:1"]);
    }

    #[test]
    fn without_cluster_dns_cluster_first_is_default() {
        let mut n = node();
        n.cluster_dns = None;
        let c = pod_dns_config(&spec(json!({})), "shop", &n);
        assert_eq!(c.servers, vec!["192.0.2.53"]);
    }
}
