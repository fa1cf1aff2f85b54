//! ServiceLB, as k3s' is: a LoadBalancer Service without a `loadBalancerClass` is served on
//! the nodes' own addresses. Its `status.loadBalancer.ingress` lists every Ready node's
//! InternalIP (loopback addresses aside: no one else reaches them), and every node's service
//! proxy answers its ports there as it answers a cluster IP. Two Services cannot hold the same
//! port and protocol on the nodes, nor a port skiff itself listens on there: the later one
//! stays pending (no ingress) with a Warning Event that names the holder, and takes the port
//! when it is free. A Service that is no longer a LoadBalancer loses its ingress.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{deleting, name, namespace};
use crate::api::{ApiError, Objects, Part, resources};
use crate::reconcile::events::{EventType, record};

const COMPONENT: &str = "service-lb-controller";

/// Ports skiff's own processes listen on at a node's address: the API server, the control
/// plane's peers, the node agent.
pub const RESERVED_PORTS: [(u16, &str); 3] = [
    (6443, "the API server"),
    (6444, "the control plane's peer service"),
    (10250, "the node agent"),
];

fn ready_node_ips(nodes: &[Value]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .filter_map(|n| {
            n.pointer("/status/addresses")
                .and_then(Value::as_array)?
                .iter()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
        })
        .filter(|ip| {
            ip.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_owned)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Whether ServiceLB serves this Service.
fn served(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc
            .pointer("/spec/loadBalancerClass")
            .is_none_or(Value::is_null)
        && !deleting(svc)
}

fn ports(svc: &Value) -> Vec<(String, u16)> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p["port"].as_u64()?).ok()?;
            Some((p["protocol"].as_str().unwrap_or("TCP").to_owned(), port))
        })
        .collect()
}

/// What each Service's ingress should be: the node addresses, or `Err(holder)` when one of
/// its ports is taken (by an older Service, or by skiff on the nodes). Services that are not
/// served map to an empty ingress. Older Services (by creation time, then name) claim first.
pub fn plan(
    services: &[Value],
    nodes: &[Value],
) -> Vec<(String, String, Result<Vec<String>, String>)> {
    let ips = ready_node_ips(nodes);
    let mut ordered: Vec<&Value> = services.iter().collect();
    ordered.sort_by_key(|s| {
        (
            s.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            namespace(s).to_owned(),
            name(s).to_owned(),
        )
    });
    let mut claimed: BTreeMap<(String, u16), String> = BTreeMap::new();
    ordered
        .into_iter()
        .map(|svc| {
            let key = (namespace(svc).to_owned(), name(svc).to_owned());
            if !served(svc) {
                return (key.0, key.1, Ok(Vec::new()));
            }
            let mine = ports(svc);
            let taken = mine.iter().find_map(|(proto, port)| {
                if let Some((_, who)) = RESERVED_PORTS.iter().find(|(p, _)| p == port) {
                    return Some(format!("port {port} is {who}'s on the nodes"));
                }
                claimed
                    .get(&(proto.clone(), *port))
                    .map(|holder| format!("port {port}/{proto} is held by Service {holder}"))
            });
            match taken {
                Some(why) => (key.0, key.1, Err(why)),
                None => {
                    for p in mine {
                        claimed.insert(p, format!("{}/{}", key.0, key.1));
                    }
                    (key.0, key.1, Ok(ips.clone()))
                }
            }
        })
        .collect()
}

fn current_ingress(svc: &Value) -> Vec<String> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_owned))
        .collect()
}

/// One pass over every Service.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (services, _) = objects.list(resources::services(), None)?;
    if !services
        .iter()
        .any(|s| served(s) || !current_ingress(s).is_empty())
    {
        return Ok(());
    }
    let (nodes, _) = objects.list(resources::nodes(), None)?;
    for (ns, svc_name, wanted) in plan(&services, &nodes) {
        let Some(svc) = services
            .iter()
            .find(|s| namespace(s) == ns && name(s) == svc_name)
        else {
            continue;
        };
        let ips = match &wanted {
            Ok(ips) => ips.clone(),
            Err(_) => Vec::new(),
        };
        if current_ingress(svc) == ips {
            continue;
        }
        if let Err(why) = &wanted {
            record(
                objects,
                svc,
                EventType::Warning,
                "PortInUse",
                &format!("ServiceLB cannot serve this Service on the nodes: {why}"),
                COMPONENT,
            )
            .await;
        }
        let ingress: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        let r = objects
            .modify(
                resources::services(),
                Some(&ns),
                &svc_name,
                Part::Status,
                |s| {
                    s["status"]["loadBalancer"] = if ingress.is_empty() {
                        json!({})
                    } else {
                        json!({"ingress": ingress})
                    };
                    Ok(())
                },
            )
            .await;
        match r {
            Ok(_) | Err(ApiError::NotFound { .. }) => {
                tracing::info!(service = %format!("{ns}/{svc_name}"), ingress = ?ips, "load balancer ingress");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn svc(name: &str, ty: &str, port: u16, created: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"type": ty, "ports": [{"port": port, "protocol": "TCP"}]}})
    }

    #[test]
    fn load_balancers_get_the_ready_nodes_addresses() {
        let nodes = [
            node("b", "172.30.1.4", true),
            node("a", "172.30.1.3", true),
            node("down", "172.30.1.5", false),
            node("local", "127.0.0.1", true),
        ];
        let services = [
            svc("web", "LoadBalancer", 80, "2026-01-01T00:00:00Z"),
            svc("internal", "ClusterIP", 80, "2026-01-01T00:00:00Z"),
        ];
        let p = plan(&services, &nodes);
        assert_eq!(
            p[1],
            (
                "default".into(),
                "web".into(),
                Ok(vec!["172.30.1.3".into(), "172.30.1.4".into()])
            )
        );
        assert_eq!(p[0].2, Ok(Vec::new()));
    }

    #[test]
    fn a_port_goes_to_the_older_service_and_skiffs_own_ports_to_none() {
        let nodes = [node("a", "172.30.1.3", true)];
        let mut classed = svc("other", "LoadBalancer", 80, "2026-01-01T00:00:00Z");
        classed["spec"]["loadBalancerClass"] = json!("example.com/lb");
        let services = [
            svc("newer", "LoadBalancer", 80, "2026-01-02T00:00:00Z"),
            svc("older", "LoadBalancer", 80, "2026-01-01T00:00:00Z"),
            svc("api", "LoadBalancer", 6443, "2026-01-01T00:00:00Z"),
            classed,
        ];
        let p = plan(&services, &nodes);
        let get = |n: &str| p.iter().find(|(_, s, _)| s == n).map(|x| x.2.clone());
        assert_eq!(get("older"), Some(Ok(vec!["172.30.1.3".into()])));
        assert_eq!(
            get("newer"),
            Some(Err("port 80/TCP is held by Service default/older".into()))
        );
        assert_eq!(
            get("api"),
            Some(Err("port 6443 is the API server's on the nodes".into()))
        );
        // Another class's load balancer is not ServiceLB's.
        assert_eq!(get("other"), Some(Ok(Vec::new())));
    }
}
