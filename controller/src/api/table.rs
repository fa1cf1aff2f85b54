//! Server-side printing: the `Table` kubectl asks for (`Accept: application/json;as=Table;...`)
//! with the columns kubectl shows for each kind.

use serde_json::{Value, json};

use super::resources::Resource;
use super::selectors::selector_string;

fn col(name: &str, ty: &str, priority: i32, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// A human age as kubectl prints it (`45s`, `3m12s`, `5h`, `2d3h`, `40d`).
pub fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now().duration_since(t).as_secs().max(0);
    human_duration(secs)
}

pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if d < 2 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// The pod STATUS column, following kubectl's printPod.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/phase").to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let total_init = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut initializing = false;
    if let Some(ics) = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
    {
        for (i, c) in ics.iter().enumerate() {
            let term = c.pointer("/state/terminated");
            if term.is_some_and(|t| t["exitCode"].as_i64() == Some(0)) {
                continue;
            }
            initializing = true;
            if let Some(t) = term {
                reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => format!("Init:{r}"),
                    None => format!("Init:ExitCode:{}", t["exitCode"]),
                };
            } else if let Some(r) = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty() && *r != "PodInitializing")
            {
                reason = format!("Init:{r}");
            } else {
                reason = format!("Init:{i}/{total_init}");
            }
            break;
        }
    }
    if !initializing {
        let mut has_running = false;
        if let Some(cs) = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
        {
            for c in cs.iter().rev() {
                if let Some(r) = c
                    .pointer("/state/waiting/reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    reason = r.to_string();
                } else if let Some(t) = c.pointer("/state/terminated") {
                    reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                        Some(r) => r.to_string(),
                        None => match t["signal"].as_i64().filter(|s| *s != 0) {
                            Some(sig) => format!("Signal:{sig}"),
                            None => format!("ExitCode:{}", t["exitCode"]),
                        },
                    };
                } else if c["ready"].as_bool() == Some(true)
                    && c.pointer("/state/running").is_some()
                {
                    has_running = true;
                }
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    reason
}

fn pod_row(pod: &Value) -> Vec<Value> {
    let cs = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = cs
        .iter()
        .filter(|c| c["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
    let ip = match s(pod, "/status/podIP") {
        "" => "<none>",
        ip => ip,
    };
    let node = match s(pod, "/spec/nodeName") {
        "" => "<none>",
        n => n,
    };
    vec![
        json!(s(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(pod_status(pod)),
        json!(restarts),
        json!(age(s(pod, "/metadata/creationTimestamp"))),
        json!(ip),
        json!(node),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn node_row(node: &Value) -> Vec<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].as_str().unwrap_or(""));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let addr = |t: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == t))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    vec![
        json!(s(node, "/metadata/name")),
        json!(status),
        json!(roles),
        json!(age(s(node, "/metadata/creationTimestamp"))),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(s(node, "/status/nodeInfo/osImage")),
        json!(s(node, "/status/nodeInfo/kernelVersion")),
        json!(s(node, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

fn columns(res: &Resource) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col("Age", "string", 0, "Time since the object was created.");
    match res.kind {
        "Pod" => vec![
            name,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            age,
            col("IP", "string", 1, "IP address allocated to the pod."),
            col(
                "Node",
                "string",
                1,
                "Name of the node the pod is assigned to.",
            ),
            col(
                "Nominated Node",
                "string",
                1,
                "Name of the node the pod is nominated to.",
            ),
            col("Readiness Gates", "string", 1, "Pod readiness gates."),
        ],
        "Node" => vec![
            name,
            col("Status", "string", 0, "The status of the node."),
            col("Roles", "string", 0, "The roles of the node."),
            age,
            col(
                "Version",
                "string",
                0,
                "Kubelet version reported by the node.",
            ),
            col("Internal-IP", "string", 1, "The internal IP of the node."),
            col("External-IP", "string", 1, "The external IP of the node."),
            col(
                "OS-Image",
                "string",
                1,
                "The OS image reported by the node.",
            ),
            col(
                "Kernel-Version",
                "string",
                1,
                "The kernel version reported by the node.",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "The container runtime reported by the node.",
            ),
        ],
        "Namespace" => vec![
            name,
            col("Status", "string", 0, "The status of the namespace."),
            age,
        ],
        "Lease" => vec![
            name,
            col("Holder", "string", 0, "The holder of the lease."),
            age,
        ],
        "ConfigMap" => vec![name, col("Data", "string", 0, "Number of data items."), age],
        "Secret" => vec![
            name,
            col("Type", "string", 0, "The type of the secret."),
            col("Data", "string", 0, "Number of data items."),
            age,
        ],
        "ServiceAccount" => vec![name, col("Secrets", "string", 0, "Number of secrets."), age],
        "Service" => vec![
            name,
            col("Type", "string", 0, "The type of the service."),
            col("Cluster-IP", "string", 0, "The cluster IP of the service."),
            col("External-IP", "string", 0, "External IPs of the service."),
            col("Port(s)", "string", 0, "The ports of the service."),
            age,
            col(
                "Selector",
                "string",
                1,
                "The label selector of the service.",
            ),
        ],
        "Endpoints" => vec![
            name,
            col("Endpoints", "string", 0, "The addresses of the endpoints."),
            age,
        ],
        "EndpointSlice" => vec![
            name,
            col("AddressType", "string", 0, "The type of the addresses."),
            col("Ports", "string", 0, "The ports of the slice."),
            col("Endpoints", "string", 0, "The addresses in the slice."),
            age,
        ],
        "Deployment" => {
            let mut v = vec![
                name,
                col("Ready", "string", 0, "Number of ready pods out of desired."),
                col("Up-to-date", "integer", 0, "Number of updated replicas."),
                col("Available", "integer", 0, "Number of available replicas."),
                age,
            ];
            v.extend(workload_wide_columns());
            v
        }
        "ReplicaSet" => {
            let mut v = vec![
                name,
                col("Desired", "integer", 0, "Number of desired replicas."),
                col("Current", "integer", 0, "Number of current replicas."),
                col("Ready", "integer", 0, "Number of ready replicas."),
                age,
            ];
            v.extend(workload_wide_columns());
            v
        }
        "DaemonSet" => {
            let mut v = vec![
                name,
                col(
                    "Desired",
                    "integer",
                    0,
                    "Number of nodes that should run the pod.",
                ),
                col("Current", "integer", 0, "Number of nodes running the pod."),
                col("Ready", "integer", 0, "Number of ready pods."),
                col("Up-to-date", "integer", 0, "Number of updated pods."),
                col("Available", "integer", 0, "Number of available pods."),
                col(
                    "Node Selector",
                    "string",
                    0,
                    "The node selector of the pods.",
                ),
                age,
            ];
            v.extend(workload_wide_columns());
            v
        }
        "Job" => {
            let mut v = vec![
                name,
                col("Status", "string", 0, "Status of the job."),
                col(
                    "Completions",
                    "string",
                    0,
                    "Desired and successful completions.",
                ),
                col("Duration", "string", 0, "Time the job took to finish."),
                age,
            ];
            v.extend(workload_wide_columns());
            v
        }
        "Event" => vec![
            col(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            col("Type", "string", 0, "Type of the event."),
            col("Reason", "string", 0, "Why the event happened."),
            col("Object", "string", 0, "The object the event is about."),
            col("Subobject", "string", 1, "The part of the object."),
            col("Source", "string", 1, "Who reported the event."),
            col("Message", "string", 0, "What happened."),
            col(
                "First Seen",
                "string",
                1,
                "Time since the event was first seen.",
            ),
            col("Count", "string", 1, "How often it happened."),
            col("Name", "string", 1, "Name of the event."),
        ],
        _ => vec![name, age],
    }
}

fn workload_wide_columns() -> Vec<Value> {
    vec![
        col("Containers", "string", 1, "Names of the containers."),
        col("Images", "string", 1, "Images of the containers."),
        col("Selector", "string", 1, "The label selector of the pods."),
    ]
}

fn workload_wide_cells(obj: &Value) -> Vec<Value> {
    let cs = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    let sel = obj
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(Value::Null);
    vec![
        json!(names.join(",")),
        json!(images.join(",")),
        json!(none_if_empty(selector_string(&sel))),
    ]
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn service_cells(obj: &Value) -> Vec<Value> {
    let ty = s(obj, "/spec/type");
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
            let a = if s(i, "/ip").is_empty() {
                s(i, "/hostname")
            } else {
                s(i, "/ip")
            };
            external.push(a.to_string());
        }
    }
    let external = match ty {
        "ExternalName" => s(obj, "/spec/externalName").to_string(),
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
    let cip = match s(obj, "/spec/clusterIP") {
        "" => "<none>",
        ip => ip,
    };
    vec![
        json!(s(obj, "/metadata/name")),
        json!(ty),
        json!(cip),
        json!(external),
        json!(none_if_empty(ports.join(","))),
        json!(age(s(obj, "/metadata/creationTimestamp"))),
        json!(none_if_empty(sel.join(","))),
    ]
}

/// At most three entries and a count of the rest, as kubectl's `formatEndpoints` prints.
fn first_three(all: Vec<String>) -> String {
    if all.is_empty() {
        return "<none>".into();
    }
    let mut out = all.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if all.len() > 3 {
        out.push_str(&format!(" + {} more...", all.len() - 3));
    }
    out
}

fn endpoints_cell(obj: &Value) -> String {
    let mut all = Vec::new();
    for subset in obj
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| int(p, "/port"))
            .collect();
        for a in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if ports.is_empty() {
                all.push(s(a, "/ip").to_string());
            }
            for p in &ports {
                all.push(format!("{}:{p}", s(a, "/ip")));
            }
        }
    }
    first_three(all)
}

fn job_cells(obj: &Value) -> Vec<Value> {
    let conds = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        "Suspended"
    } else {
        "Running"
    };
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", int(obj, "/status/succeeded")),
        None => format!(
            "{}/1 of {}",
            int(obj, "/status/succeeded"),
            int(obj, "/spec/parallelism")
        ),
    };
    let start = s(obj, "/status/startTime").parse::<jiff::Timestamp>().ok();
    let end = s(obj, "/status/completionTime")
        .parse::<jiff::Timestamp>()
        .ok()
        .unwrap_or_else(jiff::Timestamp::now);
    let duration = match start {
        Some(st) => human_duration(end.duration_since(st).as_secs().max(0)),
        None => String::new(),
    };
    vec![
        json!(s(obj, "/metadata/name")),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(s(obj, "/metadata/creationTimestamp"))),
    ]
}

fn event_cells(obj: &Value) -> Vec<Value> {
    let last = [
        s(obj, "/lastTimestamp"),
        s(obj, "/eventTime"),
        s(obj, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or("");
    let first = match s(obj, "/firstTimestamp") {
        "" => last,
        f => f,
    };
    let kind = s(obj, "/involvedObject/kind").to_lowercase();
    let source = [s(obj, "/source/component"), s(obj, "/reportingComponent")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("");
    let mut source = source.to_string();
    if !s(obj, "/source/host").is_empty() {
        source = format!("{source}, {}", s(obj, "/source/host"));
    }
    vec![
        json!(age(last)),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(format!("{kind}/{}", s(obj, "/involvedObject/name"))),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(age(first)),
        json!(obj.get("count").and_then(Value::as_i64).unwrap_or(1)),
        json!(s(obj, "/metadata/name")),
    ]
}

fn row_cells(res: &Resource, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let age = json!(age(s(obj, "/metadata/creationTimestamp")));
    let count = |k: &str| {
        json!(
            obj.get(k).and_then(Value::as_object).map_or(0, |m| m.len())
                + if k == "data" {
                    obj.get("binaryData")
                        .and_then(Value::as_object)
                        .map_or(0, |m| m.len())
                } else {
                    0
                }
        )
    };
    match res.kind {
        "Pod" => pod_row(obj),
        "Node" => node_row(obj),
        "Namespace" => vec![name, json!(s(obj, "/status/phase")), age],
        "Lease" => vec![name, json!(s(obj, "/spec/holderIdentity")), age],
        "ConfigMap" => vec![name, count("data"), age],
        "Secret" => vec![name, json!(s(obj, "/type")), count("data"), age],
        "ServiceAccount" => vec![
            name,
            json!(
                obj.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            age,
        ],
        "Service" => service_cells(obj),
        "Endpoints" => vec![name, json!(endpoints_cell(obj)), age],
        "EndpointSlice" => {
            let ports: Vec<String> = obj
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| int(p, "/port").to_string())
                .collect();
            let addrs: Vec<String> = obj
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(none_if_empty(ports.join(","))),
                json!(first_three(addrs)),
                age,
            ]
        }
        "Deployment" => {
            let mut v = vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                age,
            ];
            v.extend(workload_wide_cells(obj));
            v
        }
        "ReplicaSet" => {
            let mut v = vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                age,
            ];
            v.extend(workload_wide_cells(obj));
            v
        }
        "DaemonSet" => {
            let mut ns: Vec<String> = obj
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            ns.sort();
            let mut v = vec![
                name,
                json!(int(obj, "/status/desiredNumberScheduled")),
                json!(int(obj, "/status/currentNumberScheduled")),
                json!(int(obj, "/status/numberReady")),
                json!(int(obj, "/status/updatedNumberScheduled")),
                json!(int(obj, "/status/numberAvailable")),
                json!(none_if_empty(ns.join(","))),
                age,
            ];
            v.extend(workload_wide_cells(obj));
            v
        }
        "Job" => {
            let mut v = job_cells(obj);
            v.extend(workload_wide_cells(obj));
            v
        }
        "Event" => event_cells(obj),
        _ => vec![name, age],
    }
}

/// The partial object metadata kubectl expects in each row.
fn row_object(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A Table of `items`; `include_object` says whether rows carry the full object.
pub fn table(
    res: &Resource,
    items: &[Value],
    resource_version: &str,
    include_object: bool,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": row_cells(res, o),
                "object": if include_object { o.clone() } else { row_object(o) },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_column() {
        let running = json!({"spec": {"containers": [{}]}, "status": {"phase": "Running", "containerStatuses": [{"ready": true, "state": {"running": {}}}]}});
        assert_eq!(pod_status(&running), "Running");
        let backoff = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status(&backoff), "ImagePullBackOff");
        let done = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}});
        assert_eq!(pod_status(&done), "Completed");
        let code = json!({"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}});
        assert_eq!(pod_status(&code), "ExitCode:3");
        let deleting =
            json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&deleting), "Terminating");
    }

    #[test]
    fn ages_as_kubectl_prints_them() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(86400 * 3 + 3600 * 2), "3d2h");
        assert_eq!(human_duration(86400 * 40), "40d");
    }

    #[test]
    fn table_accept_header() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn service_and_deployment_rows() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
            "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let cells = service_cells(&svc);
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.96.0.20");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP");
        assert_eq!(cells[6], "app=web");
        let res = super::super::resources::deployments();
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(res, &[d], "1", false);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "d",
                "2/3",
                3,
                2,
                t["rows"][0]["cells"][4],
                "c",
                "busybox",
                "app=w"
            ])
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 8);
    }
}
