//! The downward API's values, shared by environment variables and downwardAPI volumes: a pod
//! field named by `fieldRef.fieldPath` and a container resource named by `resourceFieldRef`
//! (with its divisor, rounded up; a limit the container does not set is the node's
//! allocatable amount, as the kubelet reports it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use crate::AgentError;
use crate::quantity;

/// What the node can give a container whose limits are unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: i64,
    pub memory: i64,
}

/// Where the pod runs, for `status.podIP(s)` and `status.hostIP(s)`.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub pod_ips: Vec<String>,
    pub host_ip: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> AgentError {
    AgentError::FieldRef {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// `key="value"` lines in key order, as the kubelet writes labels and annotations (Go's `%q`).
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string quoted as Go's `strconv.Quote` does for the characters labels and annotations hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `metadata.labels['key']` → `("labels", "key")`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (field, rest) = path.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((field.strip_prefix("metadata.")?, key))
}

/// The value of a pod field (`fieldRef.fieldPath`).
pub fn pod_field(
    pod: &Pod,
    sel: &ObjectFieldSelector,
    addr: &Addresses,
) -> Result<String, AgentError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = sel.field_path.as_str();
    if let Some((field, key)) = subscript(path) {
        let map = match field {
            "labels" => meta.labels.as_ref(),
            "annotations" => meta.annotations.as_ref(),
            _ => return Err(invalid(path, "unsupported fieldPath")),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&meta.labels.clone().unwrap_or_default()),
        "metadata.annotations" => format_map(&meta.annotations.clone().unwrap_or_default()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        "status.hostIP" => addr.host_ip.clone(),
        "status.hostIPs" => addr.host_ip.clone(),
        "status.podIP" => addr.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => addr.pod_ips.join(","),
        other => {
            return Err(invalid(
                other,
                "unsupported fieldPath: supported are metadata.name, metadata.namespace, \
                 metadata.uid, metadata.labels, metadata.annotations, spec.nodeName, \
                 spec.serviceAccountName, status.hostIP(s), status.podIP(s)",
            ));
        }
    })
}

/// The value of a container resource (`resourceFieldRef`), divided by its divisor and rounded
/// up; an unset limit is the node's allocatable amount, an unset request is 0 (cpu: the limit).
pub fn resource_field(
    container: &Container,
    sel: &ResourceFieldSelector,
    node: Allocatable,
) -> Result<String, AgentError> {
    let res = container.resources.as_ref();
    let get = |which: &str, name: &str| {
        let m = match which {
            "limits" => res.and_then(|r| r.limits.as_ref()),
            _ => res.and_then(|r| r.requests.as_ref()),
        };
        m.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let resource = sel.resource.as_str();
    let (which, name) = resource
        .split_once('.')
        .ok_or_else(|| invalid(resource, "unsupported resource"))?;
    if which != "limits" && which != "requests" {
        return Err(invalid(resource, "unsupported resource"));
    }
    let divisor = sel.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    match name {
        "cpu" => {
            let milli = match get(which, "cpu") {
                Some(q) => quantity::to_milli(&q)?,
                None if which == "limits" => node.cpu_milli,
                // An unset cpu request reports as the limit (or the node's), as the kubelet does.
                None => match get("limits", "cpu") {
                    Some(q) => quantity::to_milli(&q)?,
                    None => node.cpu_milli,
                },
            };
            let div = quantity::to_milli(divisor)?.max(1);
            Ok(ceil_div(milli, div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let value = match get(which, name) {
                Some(q) => quantity::to_value(&q)?,
                None if which == "limits" && name == "memory" => node.memory,
                None => 0,
            };
            let div = quantity::to_value(divisor)?.max(1);
            Ok(ceil_div(value, div).to_string())
        }
        n if n.starts_with("hugepages-") => {
            let value = match get(which, name) {
                Some(q) => quantity::to_value(&q)?,
                None => 0,
            };
            let div = quantity::to_value(divisor)?.max(1);
            Ok(ceil_div(value, div).to_string())
        }
        _ => Err(invalid(resource, "unsupported resource")),
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    if a <= 0 { 0 } else { (a + b - 1) / b }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-1".into());
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("u1".into());
        p.metadata.labels = Some(BTreeMap::from([
            ("app".into(), "web".into()),
            ("tier".into(), "front \"end\"".into()),
        ]));
        p.spec = Some(Default::default());
        p
    }

    fn field(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            field_path: path.into(),
            api_version: None,
        }
    }

    #[test]
    fn pod_fields_as_the_kubelet_gives_them() {
        let addr = Addresses {
            pod_ips: vec!["10.88.0.7".into()],
            host_ip: "192.168.1.2".into(),
        };
        let p = pod();
        let v = |path: &str| pod_field(&p, &field(path), &addr).unwrap();
        assert_eq!(v("metadata.name"), "web-1");
        assert_eq!(v("metadata.namespace"), "shop");
        assert_eq!(v("metadata.labels['app']"), "web");
        assert_eq!(v("metadata.labels['none']"), "");
        assert_eq!(
            v("metadata.labels"),
            "app=\"web\"\ntier=\"front \\\"end\\\"\""
        );
        assert_eq!(v("status.podIP"), "10.88.0.7");
        assert_eq!(v("status.hostIP"), "192.168.1.2");
        assert_eq!(v("spec.serviceAccountName"), "default");
        assert!(pod_field(&p, &field("spec.bogus"), &addr).is_err());
    }

    #[test]
    fn resources_round_up_and_default_to_the_node() {
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".into(),
                    Quantity("129Mi".into()),
                )])),
                requests: Some(BTreeMap::from([("cpu".into(), Quantity("250m".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = Allocatable {
            cpu_milli: 2000,
            memory: 8 << 30,
        };
        let r = |res: &str, div: Option<&str>| {
            resource_field(
                &c,
                &ResourceFieldSelector {
                    resource: res.into(),
                    divisor: div.map(|d| Quantity(d.into())),
                    container_name: None,
                },
                node,
            )
            .unwrap()
        };
        assert_eq!(r("requests.cpu", None), "1");
        assert_eq!(r("requests.cpu", Some("1m")), "250");
        assert_eq!(r("limits.cpu", None), "2");
        assert_eq!(r("limits.memory", Some("1Mi")), "129");
        assert_eq!(r("limits.memory", Some("1Gi")), "1");
        assert_eq!(r("requests.memory", None), "0");
    }
}
