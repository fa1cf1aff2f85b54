//! StatefulSets (apps/v1): Kubernetes' defaults (OrderedReady, RollingUpdate with partition 0,
//! claims retained, history limit 10), the workload validation plus what is particular to
//! StatefulSets (which spec fields may change, volumeClaimTemplates), and the columns of
//! `kubectl get statefulsets`.

use serde_json::{Value, json};

use super::workload::{self, WIDE_COLUMNS, default_template, wide_cells};
use crate::api::admission::dns_label_problem;
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::api::table::int;

#[derive(Debug)]
pub struct StatefulSetStrategy;

/// The spec fields an update may change; the others are fixed once created.
const MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

impl Strategy for StatefulSetStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::apps::v1::StatefulSet>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        if spec.get("updateStrategy").is_none_or(Value::is_null) {
            spec.insert(
                "updateStrategy".into(),
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
        }
        if let Some(Value::Object(st)) = spec.get_mut("updateStrategy") {
            set_default(st, "type", json!("RollingUpdate"));
            if let Some(Value::Object(ru)) = st.get_mut("rollingUpdate") {
                set_default(ru, "partition", json!(0));
            }
        }
        let policy = spec
            .entry("persistentVolumeClaimRetentionPolicy")
            .or_insert_with(|| json!({}));
        if let Some(p) = policy.as_object_mut() {
            set_default(p, "whenDeleted", json!("Retain"));
            set_default(p, "whenScaled", json!("Retain"));
        }
        if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
            for c in claims.iter_mut() {
                if let Some(cs) = c.get_mut("spec").and_then(Value::as_object_mut) {
                    set_default(cs, "volumeMode", json!("Filesystem"));
                }
                if let Some(m) = c.as_object_mut() {
                    m.insert("apiVersion".into(), json!("v1"));
                    m.insert("kind".into(), json!("PersistentVolumeClaim"));
                }
            }
        }
        default_template(spec);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, part: Part) -> Vec<FieldError> {
        let mut errs = workload::validate("StatefulSet", obj, old, true, &["Always"]);
        if let Some(p) = obj
            .pointer("/spec/podManagementPolicy")
            .and_then(Value::as_str)
            && p != "OrderedReady"
            && p != "Parallel"
        {
            errs.push(FieldError::not_supported(
                "spec.podManagementPolicy",
                &json!(p),
                &["OrderedReady", "Parallel"],
            ));
        }
        let ty = str_at(obj, "/spec/updateStrategy/type");
        if !ty.is_empty() && ty != "RollingUpdate" && ty != "OnDelete" {
            errs.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                &json!(ty),
                &["OnDelete", "RollingUpdate"],
            ));
        }
        if let Some(ru) = obj.pointer("/spec/updateStrategy/rollingUpdate")
            && !ru.is_null()
        {
            if ty == "OnDelete" {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
            if ru
                .get("partition")
                .and_then(Value::as_i64)
                .is_some_and(|p| p < 0)
            {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate.partition",
                    &ru["partition"],
                    "must be greater than or equal to 0",
                ));
            }
        }
        for k in ["whenDeleted", "whenScaled"] {
            let v = obj.pointer(&format!("/spec/persistentVolumeClaimRetentionPolicy/{k}"));
            if let Some(v) = v.and_then(Value::as_str)
                && v != "Retain"
                && v != "Delete"
            {
                errs.push(FieldError::not_supported(
                    format!("spec.persistentVolumeClaimRetentionPolicy.{k}"),
                    &json!(v),
                    &["Retain", "Delete"],
                ));
            }
        }
        for (i, c) in obj
            .pointer("/spec/volumeClaimTemplates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let f = format!("spec.volumeClaimTemplates[{i}]");
            let n = str_at(c, "/metadata/name");
            if n.is_empty() {
                errs.push(FieldError::required(format!("{f}.metadata.name")));
            } else if let Some(p) = dns_label_problem(n) {
                errs.push(FieldError::invalid(
                    format!("{f}.metadata.name"),
                    &json!(n),
                    p,
                ));
            }
            if c.pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
            {
                errs.push(FieldError::required(format!("{f}.spec.accessModes")));
            }
            if c.pointer("/spec/resources/requests/storage").is_none() {
                errs.push(FieldError::required(format!("{f}.spec.resources[storage]")));
            }
        }
        if let Some(old) = old
            && part == Part::Main
        {
            let strip = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                if let Some(m) = s.as_object_mut() {
                    for k in MUTABLE {
                        m.remove(*k);
                    }
                }
                s
            };
            if strip(old) != strip(obj) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        errs
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::warnings(obj)
    }

    fn columns(&self) -> &'static [Column] {
        const C: [Column; 6] = [
            NAME,
            Column::new("Ready", "string", 0, "Number of ready pods out of desired."),
            AGE,
            WIDE_COLUMNS[0],
            WIDE_COLUMNS[1],
            WIDE_COLUMNS[2],
        ];
        &C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut v = vec![
            json!(str_at(obj, "/metadata/name")),
            json!(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                int(obj, "/spec/replicas")
            )),
            age_cell(obj),
        ];
        v.extend(wide_cells(obj));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Value {
        json!({"metadata": {"name": "db"}, "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    }

    #[test]
    fn defaults_and_immutable_fields() {
        let s = StatefulSetStrategy;
        let mut a = set();
        s.default(&mut a);
        assert_eq!(a["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(a["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(
            a["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "Retain"
        );
        assert_eq!(
            a["spec"]["volumeClaimTemplates"][0]["kind"],
            "PersistentVolumeClaim"
        );
        assert!(s.validate(&a, None, Part::Main).is_empty());
        let mut b = a.clone();
        b["spec"]["replicas"] = json!(3);
        assert!(s.validate(&b, Some(&a), Part::Main).is_empty());
        b["spec"]["serviceName"] = json!("other");
        assert_eq!(s.validate(&b, Some(&a), Part::Main)[0].field, "spec");
    }

    #[test]
    fn containers_mount_the_claim_templates() {
        let s = StatefulSetStrategy;
        let mut a = set();
        a["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        s.default(&mut a);
        assert!(s.validate(&a, None, Part::Main).is_empty());
        a["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = json!("other");
        let errs = s.validate(&a, None, Part::Main);
        assert_eq!(
            errs[0].field,
            "spec.template.spec.containers[0].volumeMounts[0].name"
        );
    }
}
