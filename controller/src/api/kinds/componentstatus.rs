//! ComponentStatus (core/v1), deprecated since 1.19 and still answered by the kube-apiserver
//! (`kubectl get cs`): the health of the control plane's parts, computed when read. In skiff
//! the store stands where etcd does (`etcd-0`: healthy while a raft leader is known) and the
//! scheduler and controllers run in the leading member (healthy while one leads).

use serde_json::{Value, json};

use crate::api::objects::Objects;
use crate::api::strategy::{Column, NAME, Strategy, TypeOps, str_at};

#[derive(Debug)]
pub struct ComponentStatusStrategy;

fn component(name: &str, healthy: bool, message: &str, error: &str) -> Value {
    let mut c = json!({"type": "Healthy", "status": if healthy { "True" } else { "False" }});
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    if !error.is_empty() {
        c["error"] = json!(error);
    }
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [c],
    })
}

fn compute(objects: &Objects) -> Vec<Value> {
    let status = objects.store.status();
    let led = status.leader.is_some();
    let no_leader = "no raft leader is known to this member";
    let run = |name: &str| {
        if led {
            component(name, true, "ok", "")
        } else {
            component(name, false, "", no_leader)
        }
    };
    vec![
        run("controller-manager"),
        run("scheduler"),
        if led {
            component("etcd-0", true, r#"{"health":"true","reason":""}"#, "")
        } else {
            component("etcd-0", false, "", no_leader)
        },
    ]
}

impl Strategy for ComponentStatusStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::ComponentStatus>()
    }

    fn computed(&self) -> Option<fn(&Objects) -> Vec<Value>> {
        Some(compute)
    }

    fn read_warning(&self) -> Option<&'static str> {
        Some("v1 ComponentStatus is deprecated in v1.19+")
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Status", "string", 0, "Status of the component conditions"),
            Column::new(
                "Message",
                "string",
                0,
                "Message of the component conditions",
            ),
            Column::new("Error", "string", 0, "Error of the component conditions"),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let c = &obj["conditions"][0];
        let status = if c["status"] == "True" {
            "Healthy"
        } else {
            "Unhealthy"
        };
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(status),
            json!(str_at(c, "/message")),
            json!(str_at(c, "/error")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_print_as_kubectl_get_cs_does() {
        let ok = component("scheduler", true, "ok", "");
        assert_eq!(
            ComponentStatusStrategy.cells(&ok),
            vec![json!("scheduler"), json!("Healthy"), json!("ok"), json!("")]
        );
        let bad = component("etcd-0", false, "", "no leader");
        assert_eq!(ComponentStatusStrategy.cells(&bad)[1], "Unhealthy");
        assert_eq!(bad["conditions"][0]["error"], "no leader");
    }
}
