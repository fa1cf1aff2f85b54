//! Server-side printing: the `Table` kubectl asks for (`Accept: application/json;as=Table;...`),
//! with the columns and cells each kind's strategy gives, and the helpers those cells share.

use serde_json::{Value, json};

use super::resources::Resource;

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

pub fn none_if_empty(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

pub fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// At most three entries and a count of the rest, as kubectl's `formatEndpoints` prints.
pub fn first_three(all: Vec<String>) -> String {
    if all.is_empty() {
        return "<none>".into();
    }
    let mut out = all.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if all.len() > 3 {
        out.push_str(&format!(" + {} more...", all.len() - 3));
    }
    out
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
                "cells": res.strategy.cells(o),
                "object": if include_object { o.clone() } else { row_object(o) },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": res.strategy.columns().iter().map(|c| c.definition()).collect::<Vec<_>>(),
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
    fn deployment_table() {
        let res = super::super::resources::deployments();
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(res, &[d], "1", false);
        assert_eq!(t["rows"][0]["cells"][1], "2/3");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 8);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
    }
}
