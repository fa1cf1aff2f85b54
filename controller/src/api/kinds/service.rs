//! Services (core/v1): defaulting and validation, and what a service takes from the cluster's
//! pools: a cluster IP from the service CIDR (10.96.0.0/12) for each type that has one, and
//! node ports from 30000-32767 for NodePort and LoadBalancer services (and a health check
//! port for a LoadBalancer with `externalTrafficPolicy: Local`). Each is reserved under a
//! store key of its own with a create-if-absent write, so two services racing for one cannot
//! both get it; kept across replacements that leave it out, given back when an update drops
//! it (a NodePort service made ClusterIP) and when the service goes.

use serde_json::{Value, json};

use crate::api::error::{ApiError, FieldError};
use crate::api::objects::{Objects, Part};
use crate::api::strategy::{
    AGE, Allocation, Column, Hook, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::api::table::{int, none_if_empty};
use crate::store::{Precondition, StoreError};

#[derive(Debug)]
pub struct ServiceStrategy;

/// Where reserved service cluster IPs live in the store (not a served resource).
const SERVICE_IP_PREFIX: &str = "/registry/skiff/serviceips/";

/// The `n`th address of the service CIDR 10.96.0.0/12.
fn service_ip(n: u32) -> String {
    let a = (10u32 << 24) | (96 << 16) | n;
    std::net::Ipv4Addr::from(a).to_string()
}

/// The offset of `ip` in the service CIDR, if it is in it.
fn service_ip_offset(ip: &str) -> Option<u32> {
    let a: std::net::Ipv4Addr = ip.parse().ok()?;
    let a = u32::from(a);
    let base = (10u32 << 24) | (96 << 16);
    (a & 0xFFF0_0000 == base).then_some(a - base)
}

/// Where reserved node ports live in the store (not a served resource).
const NODE_PORT_PREFIX: &str = "/registry/skiff/servicenodeports/";

/// Kubernetes' default `--service-node-port-range`.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

fn node_port_key(port: u16) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

fn ip_key(ip: &str) -> String {
    format!("{SERVICE_IP_PREFIX}{ip}")
}

/// Reserves `key` for `owner` with a create-if-absent write: `false` if someone holds it.
async fn reserve(objects: &Objects, key: &str, owner: &str) -> Result<bool, ApiError> {
    match objects
        .store
        .put(key, owner.as_bytes().to_vec(), Precondition::Absent)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::PreconditionFailed { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A random start for probing a pool: few collisions, no central counter.
fn random_below(n: u32) -> u32 {
    u32::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..4]
            .try_into()
            .unwrap_or([0; 4]),
    ) % n
}

/// Whether a service of this spec has a cluster IP of its own.
fn has_cluster_ip(svc: &Value) -> bool {
    str_at(svc, "/spec/type") != "ExternalName" && str_at(svc, "/spec/clusterIP") != "None"
}

/// Whether a service of this spec gets node ports: NodePort, and LoadBalancer unless
/// `allocateLoadBalancerNodePorts` is false.
fn has_node_ports(svc: &Value) -> bool {
    match str_at(svc, "/spec/type") {
        "NodePort" => true,
        "LoadBalancer" => svc
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

/// Whether a service of this spec gets a health check node port (a LoadBalancer that keeps
/// client addresses).
fn has_health_check_port(svc: &Value) -> bool {
    str_at(svc, "/spec/type") == "LoadBalancer"
        && str_at(svc, "/spec/externalTrafficPolicy") == "Local"
}

fn port_at(v: &Value, ptr: &str) -> Option<u16> {
    v.pointer(ptr)
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

/// The node ports `svc` holds, by where they are in it.
fn node_ports(svc: &Value) -> Vec<u16> {
    let mut held = Vec::new();
    if has_node_ports(svc) {
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            held.extend(port_at(p, "/nodePort"));
        }
    }
    if has_health_check_port(svc) {
        held.extend(port_at(svc, "/spec/healthCheckNodePort"));
    }
    held
}

/// Gives the service what its type needs from the cluster's pools (a cluster IP, node ports),
/// keeping what `old` already holds; returns the keys it reserved. Nothing stays reserved when
/// it fails.
async fn admit_service(
    objects: &Objects,
    svc: &mut Value,
    old: Option<&Value>,
    key: &str,
) -> Result<Allocation, ApiError> {
    let mut got = Vec::new();
    let result = async {
        allocate_cluster_ip(objects, svc, old, key, &mut got).await?;
        allocate_node_ports(objects, svc, old, key, &mut got).await
    }
    .await;
    match result {
        Ok(()) => Ok(got),
        Err(e) => {
            objects.release(&got).await;
            Err(e)
        }
    }
}

async fn allocate_cluster_ip(
    objects: &Objects,
    svc: &mut Value,
    old: Option<&Value>,
    key: &str,
    got: &mut Allocation,
) -> Result<(), ApiError> {
    if !has_cluster_ip(svc) {
        if str_at(svc, "/spec/clusterIP") == "None" {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        }
        return Ok(());
    }
    let name = str_at(svc, "/metadata/name").to_string();
    let asked = Some(str_at(svc, "/spec/clusterIP").to_string()).filter(|s| !s.is_empty());
    let held = old
        .filter(|o| has_cluster_ip(o))
        .map(|o| str_at(o, "/spec/clusterIP").to_string())
        .filter(|ip| service_ip_offset(ip).is_some());
    if asked.is_some() && asked == held {
        return Ok(());
    }
    let invalid = |ip: &str, why: &str| ApiError::Invalid {
        kind: "Service".into(),
        name: name.clone(),
        causes: vec![FieldError::invalid("spec.clusterIPs", &json!([ip]), why)],
    };
    if let Some(ip) = asked {
        if service_ip_offset(&ip).is_none() {
            return Err(invalid(
                &ip,
                "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
            ));
        }
        if !reserve(objects, &ip_key(&ip), key).await? {
            return Err(invalid(
                &ip,
                "failed to allocate IP: provided IP is already allocated",
            ));
        }
        got.push(ip_key(&ip));
        svc["spec"]["clusterIPs"] = json!([ip]);
        return Ok(());
    }
    let size: u32 = 1 << 20;
    let start = random_below(size);
    for i in 0..size {
        let off = (start + i) % size;
        // .0 is the network, .1 the `kubernetes` service, the last the broadcast.
        if off < 10 || off == size - 1 {
            continue;
        }
        let ip = service_ip(off);
        if reserve(objects, &ip_key(&ip), key).await? {
            got.push(ip_key(&ip));
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
            return Ok(());
        }
    }
    Err(ApiError::Internal("the service IP range is full".into()))
}

/// Reserves `asked` (kept if `old` holds it or this service already took it for a port of
/// another protocol), or a free node port; the port it holds.
async fn node_port(
    objects: &Objects,
    asked: Option<u16>,
    held: &[u16],
    key: &str,
    got: &mut Allocation,
    invalid: impl Fn(u16, &str) -> ApiError,
) -> Result<u16, ApiError> {
    if let Some(port) = asked {
        if held.contains(&port) || got.contains(&node_port_key(port)) {
            return Ok(port);
        }
        if !NODE_PORTS.contains(&port) {
            return Err(invalid(
                port,
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    NODE_PORTS.start(),
                    NODE_PORTS.end()
                ),
            ));
        }
        if !reserve(objects, &node_port_key(port), key).await? {
            return Err(invalid(port, "provided port is already allocated"));
        }
        got.push(node_port_key(port));
        return Ok(port);
    }
    let size = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
    let start = random_below(size);
    for i in 0..size {
        let port = NODE_PORTS.start() + u16::try_from((start + i) % size).unwrap_or(0);
        if held.contains(&port) {
            continue;
        }
        if reserve(objects, &node_port_key(port), key).await? {
            got.push(node_port_key(port));
            return Ok(port);
        }
    }
    Err(ApiError::Internal("the node port range is full".into()))
}

async fn allocate_node_ports(
    objects: &Objects,
    svc: &mut Value,
    old: Option<&Value>,
    key: &str,
    got: &mut Allocation,
) -> Result<(), ApiError> {
    let held = old.map(node_ports).unwrap_or_default();
    let name = str_at(svc, "/metadata/name").to_string();
    let invalid = |field: String| {
        let name = name.clone();
        move |port: u16, why: &str| ApiError::Invalid {
            kind: "Service".into(),
            name: name.clone(),
            causes: vec![FieldError::invalid(field.clone(), &json!(port), why)],
        }
    };
    if has_node_ports(svc) {
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let ptr = format!("/spec/ports/{i}/nodePort");
            let asked = port_at(svc, &ptr);
            let field = format!("spec.ports[{i}].nodePort");
            let port = node_port(objects, asked, &held, key, got, invalid(field)).await?;
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    if has_health_check_port(svc) {
        let asked = port_at(svc, "/spec/healthCheckNodePort");
        let field = "spec.healthCheckNodePort".to_string();
        let port = node_port(objects, asked, &held, key, got, invalid(field)).await?;
        svc["spec"]["healthCheckNodePort"] = json!(port);
    }
    Ok(())
}

/// `kube-system/kube-dns`, the Service pods' resolv.conf names under ClusterFirst (its name
/// and labels as kubeadm's, so what looks for it finds it). It has no selector and no
/// endpoints: every node agent answers its address itself.
pub fn cluster_dns_service(ip: std::net::Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            "annotations": {"skiff.io/served-by": "every node agent"}
        },
        "spec": {
            "clusterIP": ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}
            ]
        }
    })
}

impl Strategy for ServiceStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Service>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty != "ExternalName" {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if ty == "LoadBalancer" {
            set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
        }
        if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
            let cfg = spec
                .entry("sessionAffinityConfig")
                .or_insert_with(|| json!({}));
            if let Some(cfg) = cfg.as_object_mut() {
                let ip = cfg.entry("clientIP").or_insert_with(|| json!({}));
                if let Some(ip) = ip.as_object_mut() {
                    set_default(ip, "timeoutSeconds", json!(10800));
                }
            }
        }
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            }
        }
        if let Some(m) = obj.as_object_mut() {
            m.entry("status")
                .or_insert_with(|| json!({"loadBalancer": {}}));
        }
    }

    /// Keeps the allocated cluster IP (and node ports) when a replacement leaves them out, as
    /// the API server does for `kubectl replace` and `apply`.
    fn prepare_update(&self, old: &Value, new: &mut Value) {
        for k in ["clusterIP", "clusterIPs"] {
            let missing = new
                .pointer(&format!("/spec/{k}"))
                .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
            if missing && let Some(v) = old.pointer(&format!("/spec/{k}")) {
                new["spec"][k] = v.clone();
            }
        }
        // What only external types have goes when the type changes and the client left it as
        // it was (Kubernetes' dropTypeDependentFields).
        if !has_node_ports(new)
            && !["NodePort", "LoadBalancer"].contains(&str_at(new, "/spec/type"))
        {
            for k in [
                "externalTrafficPolicy",
                "healthCheckNodePort",
                "allocateLoadBalancerNodePorts",
            ] {
                let same = new.pointer(&format!("/spec/{k}")) == old.pointer(&format!("/spec/{k}"));
                if same && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove(k);
                }
            }
            if let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    let port = p.get("port").cloned();
                    let carried = old
                        .pointer("/spec/ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|o| {
                            o.get("port") == port.as_ref() && o.get("nodePort") == p.get("nodePort")
                        });
                    if carried {
                        p.remove("nodePort");
                    }
                }
            }
        }
        // Node ports stay with a type that has them; a change to ClusterIP gives them back.
        let keeps_ports = has_node_ports(new) && has_node_ports(old);
        if has_health_check_port(new)
            && new
                .pointer("/spec/healthCheckNodePort")
                .is_none_or(Value::is_null)
            && let Some(p) = old.pointer("/spec/healthCheckNodePort")
        {
            new["spec"]["healthCheckNodePort"] = p.clone();
        }
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .filter(|_| keeps_ports);
        if let (Some(olds), Some(Value::Array(news))) = (old_ports, new.pointer_mut("/spec/ports"))
        {
            for p in news.iter_mut() {
                if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                    continue;
                }
                let proto = |v: &Value| {
                    v.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string()
                };
                let same = olds
                    .iter()
                    .find(|o| o.get("port") == p.get("port") && proto(o) == proto(p));
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
        if !types.contains(&ty) {
            errs.push(FieldError::not_supported("spec.type", &json!(ty), &types));
        }
        let headless = str_at(obj, "/spec/clusterIP") == "None";
        let ports = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if ports.is_empty() && !headless && ty != "ExternalName" {
            errs.push(FieldError::required("spec.ports"));
        }
        let mut names = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            let port = p.get("port").and_then(Value::as_i64);
            if !port.is_some_and(|n| (1..=65535).contains(&n)) {
                errs.push(FieldError::invalid(
                    format!("{path}.port"),
                    p.get("port").unwrap_or(&Value::Null),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(format!("{path}.name")));
            } else if names.contains(&name) {
                errs.push(FieldError::duplicate(format!("{path}.name"), &json!(name)));
            }
            names.push(name);
            if p.get("nodePort").is_some_and(|n| !n.is_null())
                && (ty == "ClusterIP" || ty == "ExternalName")
            {
                errs.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            }
            if let Some(proto) = p.get("protocol") {
                let ok = ["TCP", "UDP", "SCTP"];
                if !proto.as_str().is_some_and(|s| ok.contains(&s)) {
                    errs.push(FieldError::not_supported(
                        format!("{path}.protocol"),
                        proto,
                        &ok,
                    ));
                }
            }
        }
        let affinity = str_at(obj, "/spec/sessionAffinity");
        if !affinity.is_empty() && !["None", "ClientIP"].contains(&affinity) {
            errs.push(FieldError::not_supported(
                "spec.sessionAffinity",
                &json!(affinity),
                &["ClientIP", "None"],
            ));
        }
        if let Some(t) = obj.pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
            && !t.as_i64().is_some_and(|t| (1..=86400).contains(&t))
        {
            errs.push(FieldError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t,
                "must be greater than 0 and less than 86400",
            ));
        }
        for field in ["externalTrafficPolicy", "internalTrafficPolicy"] {
            let v = str_at(obj, &format!("/spec/{field}"));
            if !v.is_empty() && !["Cluster", "Local"].contains(&v) {
                errs.push(FieldError::not_supported(
                    format!("spec.{field}"),
                    &json!(v),
                    &["Cluster", "Local"],
                ));
            }
        }
        let etp = str_at(obj, "/spec/externalTrafficPolicy");
        if !etp.is_empty() && !["NodePort", "LoadBalancer"].contains(&ty) {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                &json!(etp),
                "may only be set for externally-accessible services",
            ));
        }
        if let Some(old) = old {
            let was = old.pointer("/spec/clusterIP").and_then(Value::as_str);
            let now = obj.pointer("/spec/clusterIP").and_then(Value::as_str);
            if was.is_some_and(|w| !w.is_empty()) && was != now {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    &json!(now),
                    "may not change once set",
                ));
            }
        }
        errs
    }

    fn admit<'a>(
        &'a self,
        objects: &'a Objects,
        obj: &'a mut Value,
        old: Option<&'a Value>,
        key: &'a str,
    ) -> Hook<'a, Allocation> {
        Box::pin(admit_service(objects, obj, old, key))
    }

    fn reservations(&self, obj: &Value) -> Vec<String> {
        let mut keys: Vec<String> = node_ports(obj).into_iter().map(node_port_key).collect();
        let ip = str_at(obj, "/spec/clusterIP");
        if has_cluster_ip(obj) && service_ip_offset(ip).is_some() {
            keys.push(ip_key(ip));
        }
        keys
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Type", "string", 0, "The type of the service."),
            Column::new("Cluster-IP", "string", 0, "The cluster IP of the service."),
            Column::new("External-IP", "string", 0, "External IPs of the service."),
            Column::new("Port(s)", "string", 0, "The ports of the service."),
            AGE,
            Column::new(
                "Selector",
                "string",
                1,
                "The label selector of the service.",
            ),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let ty = str_at(obj, "/spec/type");
        let mut external: Vec<String> = obj
            .pointer("/spec/externalIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if ty == "LoadBalancer" {
            for i in obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let a = if str_at(i, "/ip").is_empty() {
                    str_at(i, "/hostname")
                } else {
                    str_at(i, "/ip")
                };
                external.push(a.to_string());
            }
        }
        let external = match ty {
            "ExternalName" => str_at(obj, "/spec/externalName").to_string(),
            "LoadBalancer" if external.is_empty() => "<pending>".into(),
            _ => none_if_empty(external.join(",")),
        };
        let ports: Vec<String> = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(np) => format!("{}:{np}/{proto}", int(p, "/port")),
                    None => format!("{}/{proto}", int(p, "/port")),
                }
            })
            .collect();
        let mut sel: Vec<String> = obj
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        sel.sort();
        let cip = match str_at(obj, "/spec/clusterIP") {
            "" => "<none>",
            ip => ip,
        };
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(ty),
            json!(cip),
            json!(external),
            json!(none_if_empty(ports.join(","))),
            age_cell(obj),
            json!(none_if_empty(sel.join(","))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_defaults_ports() {
        let mut s = json!({"spec": {"selector": {"app": "w"}, "ports": [{"port": 80}]}});
        ServiceStrategy.default(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert!(ServiceStrategy.validate(&s, None, Part::Main).is_empty());
    }

    #[test]
    fn service_row() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
            "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let cells = ServiceStrategy.cells(&svc);
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.96.0.20");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP");
        assert_eq!(cells[6], "app=web");
    }
}
