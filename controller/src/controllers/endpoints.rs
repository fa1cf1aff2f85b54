//! The endpoints controllers: for every Service with a selector, an Endpoints object of the
//! same name and an EndpointSlice (`<service>-<hash>`, labelled `kubernetes.io/service-name`)
//! listing the pods that match, Ready ones as addresses and the rest as not ready, with the
//! service's ports resolved against each pod (named target ports by container port name).
//! Both are owned by the Service, so the garbage collector removes them with it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{controller_ref, deleting, name, namespace, pod_ready, pod_terminal};
use crate::api::{ApiError, Objects, Part, resources};

/// One pass over every service.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (services, _) = objects.list(resources::services(), None)?;
    // Services without a selector (the `kubernetes` Service, hand-made endpoints) are not
    // this controller's: without others, the pods need not be read at all.
    let services: Vec<Value> = services
        .into_iter()
        .filter(|svc| {
            let selector = svc.pointer("/spec/selector").and_then(Value::as_object);
            !deleting(svc) && selector.is_some_and(|s| !s.is_empty())
        })
        .collect();
    if services.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    for svc in services {
        if let Err(e) = sync(objects, &svc, &pods).await {
            tracing::debug!(service = %name(&svc), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

fn selects(svc: &Value, pod: &Value) -> bool {
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|sel| {
            sel.iter()
                .all(|(k, v)| pod.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        })
}

/// The service's ports as resolved for one pod: (name, port, protocol).
fn resolve_ports(svc: &Value, pod: &Value) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let pname = p
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let proto = p
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        let port = match p.get("targetPort") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok().or_else(|| {
                pod.pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|c| {
                        c.get("ports")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .find(|cp| cp.get("name").and_then(Value::as_str) == Some(s))
                    .and_then(|cp| cp.get("containerPort").and_then(Value::as_i64))
            }),
            _ => p.get("port").and_then(Value::as_i64),
        };
        if let Some(port) = port {
            out.push((pname, port, proto));
        }
    }
    out
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": namespace(pod), "name": name(pod), "uid": pod["metadata"]["uid"]})
}

async fn sync(objects: &Objects, svc: &Value, pods: &[Value]) -> Result<(), ApiError> {
    let ns = namespace(svc);
    let mut chosen: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            namespace(p) == ns
                && selects(svc, p)
                && !pod_terminal(p)
                && p.pointer("/status/podIP")
                    .and_then(Value::as_str)
                    .is_some_and(|ip| !ip.is_empty())
        })
        .collect();
    chosen.sort_by_key(|p| name(p).to_string());
    // Endpoints: subsets grouped by the resolved port list.
    let mut subsets: BTreeMap<String, (Value, Vec<Value>, Vec<Value>)> = BTreeMap::new();
    let mut slice_eps = Vec::new();
    let mut slice_ports: Option<Vec<(String, i64, String)>> = None;
    for p in &chosen {
        let ports = resolve_ports(svc, p);
        let ip = p["status"]["podIP"].as_str().unwrap_or("");
        let mut addr = json!({"ip": ip, "targetRef": target_ref(p)});
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            addr["nodeName"] = json!(n);
        }
        let ports_json: Vec<Value> = ports
            .iter()
            .map(|(n, port, proto)| {
                let mut v = json!({"port": port, "protocol": proto});
                if !n.is_empty() {
                    v["name"] = json!(n);
                }
                v
            })
            .collect();
        let entry = subsets
            .entry(Value::Array(ports_json.clone()).to_string())
            .or_insert_with(|| (Value::Array(ports_json), Vec::new(), Vec::new()));
        let ready = pod_ready(p) && !deleting(p);
        if ready {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
        slice_ports.get_or_insert(ports);
        let mut ep = json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": pod_ready(p), "terminating": deleting(p)},
            "targetRef": target_ref(p),
        });
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            ep["nodeName"] = json!(n);
        }
        slice_eps.push(ep);
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut s = Map::new();
            if !ready.is_empty() {
                s.insert("addresses".into(), Value::Array(ready));
            }
            if !not_ready.is_empty() {
                s.insert("notReadyAddresses".into(), Value::Array(not_ready));
            }
            if ports.as_array().is_some_and(|p| !p.is_empty()) {
                s.insert("ports".into(), ports);
            }
            Value::Object(s)
        })
        .collect();
    let labels = svc
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let mut endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name(svc), "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(svc)]},
    });
    if !subsets.is_empty() {
        endpoints["subsets"] = json!(subsets);
    }
    upsert(
        objects,
        resources::endpoints(),
        ns,
        name(svc),
        endpoints,
        &["subsets"],
    )
    .await?;

    let mut slice_labels = labels.as_object().cloned().unwrap_or_default();
    slice_labels.insert("kubernetes.io/service-name".into(), json!(name(svc)));
    slice_labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        json!("endpointslice-controller.k8s.io"),
    );
    let ports: Vec<Value> = slice_ports
        .unwrap_or_else(|| resolve_ports(svc, &Value::Null))
        .into_iter()
        .map(|(n, port, proto)| json!({"name": n, "port": port, "protocol": proto}))
        .collect();
    let slice_name = format!("{}-{}", name(svc), short_hash(svc));
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": ns, "labels": slice_labels, "ownerReferences": [controller_ref(svc)]},
        "addressType": "IPv4",
        "endpoints": slice_eps,
        "ports": ports,
    });
    upsert(
        objects,
        resources::endpoint_slices(),
        ns,
        &slice_name,
        slice,
        &["endpoints", "ports"],
    )
    .await
}

/// A short, stable suffix from the service's uid (Kubernetes uses a random one).
fn short_hash(svc: &Value) -> String {
    let uid = svc
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    uid.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect()
}

/// Creates `want`, or updates the `fields` (and labels) of the existing object if they differ.
async fn upsert(
    objects: &Objects,
    res: &resources::Resource,
    ns: &str,
    obj_name: &str,
    want: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    match objects.get(res, Some(ns), obj_name) {
        Err(ApiError::NotFound { .. }) => match objects.create(res, Some(ns), want, false).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
        Ok(cur) => {
            let same = fields.iter().all(|f| cur.get(*f) == want.get(*f))
                && cur.pointer("/metadata/labels") == want.pointer("/metadata/labels");
            if same {
                return Ok(());
            }
            objects
                .modify(res, Some(ns), obj_name, Part::Main, |o| {
                    for f in fields {
                        match want.get(*f) {
                            Some(v) => o[*f] = v.clone(),
                            None => {
                                if let Some(m) = o.as_object_mut() {
                                    m.remove(*f);
                                }
                            }
                        }
                    }
                    o["metadata"]["labels"] = want["metadata"]["labels"].clone();
                    Ok(())
                })
                .await
                .map(|_| ())
        }
    }
}
