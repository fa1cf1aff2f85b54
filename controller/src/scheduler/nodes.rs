//! Whether a pod may go on a node by the node's own properties, as Kubernetes' scheduler
//! plugins NodeName, NodeUnschedulable, NodeAffinity (`nodeSelector` and required
//! `nodeAffinity`) and TaintToleration decide; the daemonset controller asks the same questions.

use serde_json::Value;

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    arr(v, key)
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The node's label `key`.
pub fn label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The node's name.
pub fn node_name(node: &Value) -> &str {
    node.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// One `NodeSelectorRequirement` against a value that may be absent.
fn requirement(req: &Value, value: Option<&str>) -> bool {
    let values = strs(req, "values");
    let int = |s: &str| s.parse::<i64>().ok();
    match req.get("operator").and_then(Value::as_str).unwrap_or("") {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(v), Some(x)) if v > x)
        }
        "Lt" => {
            matches!((value.and_then(int), values.first().and_then(|x| int(x))), (Some(v), Some(x)) if v < x)
        }
        _ => false,
    }
}

/// A `NodeSelectorTerm`: every expression on labels and every field (`metadata.name`) holds.
/// A term with neither matches nothing, as Kubernetes has it.
pub fn term_matches(term: &Value, node: &Value) -> bool {
    let exprs = arr(term, "matchExpressions");
    let fields = arr(term, "matchFields");
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement(r, label(node, r["key"].as_str().unwrap_or(""))))
        && fields.iter().all(|r| {
            let v = match r["key"].as_str() {
                Some("metadata.name") => Some(node_name(node)),
                _ => None,
            };
            requirement(r, v)
        })
}

/// A `NodeSelector` (terms ORed).
pub fn selector_matches(selector: &Value, node: &Value) -> bool {
    arr(selector, "nodeSelectorTerms")
        .iter()
        .any(|t| term_matches(t, node))
}

/// `nodeSelector` and required node affinity of a pod spec.
pub fn affinity_matches(spec: &Value, node: &Value) -> bool {
    let by_selector = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| v.as_str().is_some_and(|v| label(node, k) == Some(v)))
        });
    let required =
        spec.pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution");
    by_selector && required.is_none_or(|r| r.is_null() || selector_matches(r, node))
}

/// The sum of the weights of the preferred node-affinity terms the node matches.
pub fn preferred_affinity_score(spec: &Value, node: &Value) -> i64 {
    spec.pointer("/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p["preference"], node))
        .map(|p| p["weight"].as_i64().unwrap_or(0))
        .sum()
}

/// Whether `toleration` tolerates `taint` (key, operator Equal/Exists, value, effect).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let t_effect = toleration["effect"].as_str().unwrap_or("");
    if !t_effect.is_empty() && t_effect != taint["effect"].as_str().unwrap_or("") {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or("");
    let op = toleration["operator"].as_str().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates everything.
        return op == "Exists";
    }
    if key != taint["key"].as_str().unwrap_or("") {
        return false;
    }
    match op {
        "Exists" => true,
        _ => toleration["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""),
    }
}

/// The first of the node's taints with one of `effects` that none of `tolerations` tolerates.
pub fn untolerated_taint<'a>(
    tolerations: &[Value],
    node: &'a Value,
    effects: &[&str],
) -> Option<&'a Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| effects.contains(&t["effect"].as_str().unwrap_or("")))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// A pod spec's tolerations.
pub fn tolerations(spec: &Value) -> &[Value] {
    arr(spec, "tolerations")
}

/// The taint a cordoned node carries (TaintNodesByCondition): tolerating it lets a pod on.
pub fn unschedulable_taint() -> Value {
    serde_json::json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
}

/// `{key: value}` as the scheduler names a taint in its messages.
pub fn describe_taint(taint: &Value) -> String {
    format!(
        "{{{}: {}}}",
        taint["key"].as_str().unwrap_or(""),
        taint["value"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn selectors_and_affinity_terms() {
        let n = node("n1", json!({"disk": "ssd", "cores": "8"}), json!([]));
        assert!(affinity_matches(
            &json!({"nodeSelector": {"disk": "ssd"}}),
            &n
        ));
        assert!(!affinity_matches(
            &json!({"nodeSelector": {"disk": "hdd"}}),
            &n
        ));
        let aff = |exprs: Value| {
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}})
        };
        for (exprs, want) in [
            (
                json!([{"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}]),
                true,
            ),
            (
                json!([{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]),
                false,
            ),
            (json!([{"key": "gpu", "operator": "DoesNotExist"}]), true),
            (json!([{"key": "gpu", "operator": "Exists"}]), false),
            (
                json!([{"key": "cores", "operator": "Gt", "values": ["4"]}]),
                true,
            ),
            (
                json!([{"key": "cores", "operator": "Lt", "values": ["4"]}]),
                false,
            ),
            (
                json!([{"key": "gpu", "operator": "NotIn", "values": ["x"]}]),
                true,
            ),
        ] {
            assert_eq!(affinity_matches(&aff(exprs.clone()), &n), want, "{exprs}");
        }
        let by_name = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}});
        assert!(affinity_matches(&by_name, &n));
        assert!(!affinity_matches(
            &by_name,
            &node("n2", json!({}), json!([]))
        ));
        // An empty term matches nothing.
        let empty = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{}]}}}});
        assert!(!affinity_matches(&empty, &n));
        let pref = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 5, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}]}}});
        assert_eq!(preferred_affinity_score(&pref, &n), 10);
    }

    #[test]
    fn taints_and_tolerations() {
        let n = node(
            "n1",
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                   {"key": "soft", "effect": "PreferNoSchedule"}]),
        );
        let hard = ["NoSchedule", "NoExecute"];
        let t = untolerated_taint(&[], &n, &hard).unwrap();
        assert_eq!(describe_taint(t), "{dedicated: db}");
        for (tol, ok) in [
            (
                json!({"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}),
                true,
            ),
            (json!({"key": "dedicated", "value": "db"}), true),
            (json!({"key": "dedicated", "operator": "Exists"}), true),
            (json!({"key": "dedicated", "value": "web"}), false),
            (
                json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
                false,
            ),
            (json!({"operator": "Exists"}), true),
        ] {
            assert_eq!(
                untolerated_taint(std::slice::from_ref(&tol), &n, &hard).is_none(),
                ok,
                "{tol}"
            );
        }
    }
}
