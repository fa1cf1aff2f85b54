//! Nodes (core/v1): NoExecute taints stamped with `timeAdded`, the pod subnet set once, the
//! selectable `spec.unschedulable` and the columns of `kubectl get nodes`.

use serde_json::{Value, json};

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct NodeStrategy;

/// Gives each NoExecute taint its `timeAdded` (kept from the stored node when the taint was
/// there already): tolerationSeconds count from it.
fn stamp_no_execute_taints(old: Option<&Value>, obj: &mut Value) {
    let before: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/taints"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(taints) = obj
        .pointer_mut("/spec/taints")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for t in taints.iter_mut() {
        if t["effect"] != "NoExecute" || t.get("timeAdded").is_some_and(|v| !v.is_null()) {
            continue;
        }
        let kept = before
            .iter()
            .find(|b| {
                b["key"] == t["key"] && b["value"] == t["value"] && b["effect"] == t["effect"]
            })
            .and_then(|b| b.get("timeAdded"))
            .filter(|v| !v.is_null())
            .cloned();
        t["timeAdded"] = kept.unwrap_or_else(|| json!(crate::api::objects::now()));
    }
}

impl Strategy for NodeStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Node>()
    }

    fn prepare_create(&self, obj: &mut Value) {
        stamp_no_execute_taints(None, obj);
    }

    fn prepare_update(&self, old: &Value, obj: &mut Value) {
        stamp_no_execute_taints(Some(old), obj);
    }

    /// A node's pod subnet is set once (Kubernetes' ValidateNodeUpdate): its pods' addresses
    /// come from it.
    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let cidr = |v: &Value| {
            v.pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let now = cidr(obj);
        if let Some(list) = obj.pointer("/spec/podCIDRs").and_then(Value::as_array)
            && list
                .first()
                .and_then(Value::as_str)
                .is_some_and(|first| first != now)
        {
            errs.push(FieldError::invalid(
                "spec.podCIDRs",
                &json!(list),
                "must match the first entry in podCIDRs",
            ));
        }
        if let Some(old) = old {
            let was = cidr(old);
            if !was.is_empty() && was != now {
                errs.push(FieldError::forbidden(
                    "spec.podCIDRs",
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
        }
        errs
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "spec.unschedulable").then_some("/spec/unschedulable")
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Status", "string", 0, "The status of the node."),
            Column::new("Roles", "string", 0, "The roles of the node."),
            AGE,
            Column::new(
                "Version",
                "string",
                0,
                "Kubelet version reported by the node.",
            ),
            Column::new("Internal-IP", "string", 1, "The internal IP of the node."),
            Column::new("External-IP", "string", 1, "The external IP of the node."),
            Column::new(
                "OS-Image",
                "string",
                1,
                "The OS image reported by the node.",
            ),
            Column::new(
                "Kernel-Version",
                "string",
                1,
                "The kernel version reported by the node.",
            ),
            Column::new(
                "Container-Runtime",
                "string",
                1,
                "The container runtime reported by the node.",
            ),
        ];
        C
    }

    fn cells(&self, node: &Value) -> Vec<Value> {
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
            json!(str_at(node, "/metadata/name")),
            json!(status),
            json!(roles),
            age_cell(node),
            json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
            json!(addr("InternalIP")),
            json!(addr("ExternalIP")),
            json!(str_at(node, "/status/nodeInfo/osImage")),
            json!(str_at(node, "/status/nodeInfo/kernelVersion")),
            json!(str_at(node, "/status/nodeInfo/containerRuntimeVersion")),
        ]
    }
}
