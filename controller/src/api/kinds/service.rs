//! Services (core/v1): defaulting and validation, and the cluster IP: each service of a type
//! that has one gets an address from the service CIDR (10.96.0.0/12), reserved under its own
//! store key with a create-if-absent write so two services racing for one address cannot both
//! get it, kept across replacements that leave it out, and released when the service goes.

use std::future::Future;
use std::pin::Pin;

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

async fn reserve_ip(objects: &Objects, ip: &str, owner: &str) -> Result<bool, ApiError> {
    match objects
        .store
        .put(
            &format!("{SERVICE_IP_PREFIX}{ip}"),
            owner.as_bytes().to_vec(),
            Precondition::Absent,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::PreconditionFailed { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn release_ip(objects: &Objects, ip: &str) {
    if let Err(e) = objects
        .store
        .delete(&format!("{SERVICE_IP_PREFIX}{ip}"), Precondition::None)
        .await
    {
        tracing::debug!(ip, error = %e, "cluster IP was not reserved");
    }
}

/// Gives a new service its cluster IP (the one asked for, or a free one); returns the reserved
/// address, to release if the service is not stored.
async fn allocate_cluster_ip(
    objects: &Objects,
    svc: &mut Value,
    key: &str,
) -> Result<Allocation, ApiError> {
    if str_at(svc, "/spec/type") == "ExternalName" {
        return Ok(None);
    }
    let name = str_at(svc, "/metadata/name").to_string();
    let asked = Some(str_at(svc, "/spec/clusterIP").to_string()).filter(|s| !s.is_empty());
    if asked.as_deref() == Some("None") {
        svc["spec"]["clusterIPs"] = json!(["None"]);
        return Ok(None);
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
        if !reserve_ip(objects, &ip, key).await? {
            return Err(invalid(
                &ip,
                "failed to allocate IP: provided IP is already allocated",
            ));
        }
        svc["spec"]["clusterIPs"] = json!([ip]);
        return Ok(Some(ip));
    }
    // Start at a random offset and probe upwards: few collisions, no central counter.
    let size: u32 = 1 << 20;
    let start = u32::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..4]
            .try_into()
            .unwrap_or([0; 4]),
    ) % size;
    for i in 0..size {
        let off = (start + i) % size;
        // .0 is the network, .1 the `kubernetes` service, the last the broadcast.
        if off < 10 || off == size - 1 {
            continue;
        }
        let ip = service_ip(off);
        if reserve_ip(objects, &ip, key).await? {
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
            return Ok(Some(ip));
        }
    }
    Err(ApiError::Internal("the service IP range is full".into()))
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
        let old_ports = old.pointer("/spec/ports").and_then(Value::as_array);
        if let (Some(olds), Some(Value::Array(news))) = (old_ports, new.pointer_mut("/spec/ports"))
        {
            for p in news.iter_mut() {
                if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                    continue;
                }
                let same = olds.iter().find(|o| {
                    o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                });
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
        key: &'a str,
    ) -> Hook<'a, Allocation> {
        Box::pin(allocate_cluster_ip(objects, obj, key))
    }

    fn release<'a>(
        &'a self,
        objects: &'a Objects,
        obj: &'a Value,
        allocation: Allocation,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let ip = match allocation {
                Some(ip) => ip,
                None => str_at(obj, "/spec/clusterIP").to_string(),
            };
            if service_ip_offset(&ip).is_some() {
                release_ip(objects, &ip).await;
            }
        })
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
