//! Admission for services and workloads (Deployment, ReplicaSet, DaemonSet, Job): Kubernetes'
//! defaulting (`SetDefaults_*`) and the validation rules clients meet first (selector required
//! and matching the template, replicas non-negative, the template's pod spec valid).

use serde_json::{Map, Value, json};

use super::admission::{default_pod_spec, validate_pod};
use super::error::FieldError;
use super::selectors::selector_matches;

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// Defaults the pod template of a workload (`spec.template.spec`).
fn default_template(spec: &mut Map<String, Value>) {
    let t = spec.entry("template").or_insert_with(|| json!({}));
    if !t.is_object() {
        return;
    }
    if let Some(ps) = obj_mut(t, "spec") {
        default_pod_spec(ps);
    }
    if let Some(m) = obj_mut(t, "metadata") {
        m.remove("creationTimestamp");
    }
}

/// Whether `default_object` does anything for `kind`.
pub fn has_defaults(kind: &str) -> bool {
    matches!(
        kind,
        "Service" | "Deployment" | "ReplicaSet" | "DaemonSet" | "Job"
    )
}

/// Defaults of a new or replaced object of `kind`; a no-op for other kinds.
pub fn default_object(kind: &str, obj: &mut Value) {
    match kind {
        "Service" => default_service(obj),
        "Deployment" => {
            let Some(spec) = obj_mut(obj, "spec") else {
                return;
            };
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
            if let Some(st) = strategy.as_object_mut() {
                set_default(st, "type", json!("RollingUpdate"));
                if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_template(spec);
        }
        "ReplicaSet" => {
            let Some(spec) = obj_mut(obj, "spec") else {
                return;
            };
            set_default(spec, "replicas", json!(1));
            default_template(spec);
        }
        "DaemonSet" => {
            let Some(spec) = obj_mut(obj, "spec") else {
                return;
            };
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
            if let Some(st) = strategy.as_object_mut() {
                set_default(st, "type", json!("RollingUpdate"));
                if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "maxUnavailable", json!(1));
                        set_default(ru, "maxSurge", json!(0));
                    }
                }
            }
            default_template(spec);
        }
        "Job" => default_job(obj),
        _ => {}
    }
}

fn default_service(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
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

/// The labels the job controller puts on a job's pods (and selects them by).
pub fn job_labels(uid: &str, name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
    m.insert("batch.kubernetes.io/job-name".into(), json!(name));
    m.insert("controller-uid".into(), json!(uid));
    m.insert("job-name".into(), json!(name));
    m
}

fn default_job(obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual && !uid.is_empty() && spec.get("selector").is_none_or(Value::is_null) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        let t = spec.entry("template").or_insert_with(|| json!({}));
        if t.is_object()
            && let Some(meta) = obj_mut(t, "metadata")
        {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                for (k, v) in job_labels(&uid, &name) {
                    l.insert(k, v);
                }
            }
        }
    }
    default_template(spec);
}

fn non_negative(errs: &mut Vec<FieldError>, obj: &Value, ptr: &str, field: &str) {
    if let Some(v) = obj.pointer(ptr)
        && !v.is_null()
        && v.as_i64().is_none_or(|n| n < 0)
    {
        errs.push(FieldError::invalid(
            field,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// Validation of a workload or service of `kind` (empty for other kinds).
pub fn validate_object(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => {
            let sel = obj.pointer("/spec/selector").unwrap_or(&Value::Null);
            if sel.is_null() {
                errs.push(FieldError::required("spec.selector"));
            } else if sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|e| e.is_empty())
            {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    format!("empty selector is invalid for {}", kind.to_lowercase()),
                ));
            } else {
                let labels = obj
                    .pointer("/spec/template/metadata/labels")
                    .unwrap_or(&Value::Null);
                if !selector_matches(sel, labels) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            if let Some(old) = old
                && kind != "Job"
                && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
            {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    "field is immutable",
                ));
            }
            non_negative(&mut errs, obj, "/spec/replicas", "spec.replicas");
            non_negative(&mut errs, obj, "/spec/completions", "spec.completions");
            non_negative(&mut errs, obj, "/spec/parallelism", "spec.parallelism");
            non_negative(&mut errs, obj, "/spec/backoffLimit", "spec.backoffLimit");
            non_negative(
                &mut errs,
                obj,
                "/spec/minReadySeconds",
                "spec.minReadySeconds",
            );
            let template = obj.pointer("/spec/template/spec").cloned();
            match template {
                None => errs.push(FieldError::required("spec.template.spec.containers")),
                Some(t) => {
                    for mut e in validate_pod(&json!({"spec": t})) {
                        e.field = format!("spec.template.{}", e.field);
                        errs.push(e);
                    }
                    let rp = t.get("restartPolicy").and_then(Value::as_str);
                    let allowed: &[&str] = if kind == "Job" {
                        &["OnFailure", "Never"]
                    } else {
                        &["Always"]
                    };
                    if let Some(p) = rp
                        && !allowed.contains(&p)
                    {
                        errs.push(FieldError::not_supported(
                            "spec.template.spec.restartPolicy",
                            &json!(p),
                            allowed,
                        ));
                    }
                }
            }
        }
        "Service" => validate_service(obj, old, &mut errs),
        _ => {}
    }
    errs
}

fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !types.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", &json!(ty), &types));
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
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
}

/// Keeps a service's allocated cluster IP (and node ports) when a replacement leaves them out,
/// as the API server does for `kubectl replace` and `apply`.
pub fn keep_allocations(old: &Value, new: &mut Value) {
    for k in ["clusterIP", "clusterIPs"] {
        let missing = new
            .pointer(&format!("/spec/{k}"))
            .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
        if missing && let Some(v) = old.pointer(&format!("/spec/{k}")) {
            new["spec"][k] = v.clone();
        }
    }
    let old_ports = old.pointer("/spec/ports").and_then(Value::as_array);
    if let (Some(olds), Some(Value::Array(news))) = (old_ports, new.pointer_mut("/spec/ports")) {
        for p in news.iter_mut() {
            if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                continue;
            }
            let same = olds
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = np.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_like_kubernetes() {
        let mut d = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "w"}},
            "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        default_object("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(validate_object("Deployment", &d, None).is_empty());
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("x");
        let errs = validate_object("Deployment", &d, None);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        d["spec"]["selector"] = Value::Null;
        assert_eq!(
            validate_object("Deployment", &d, None)[0].field,
            "spec.selector"
        );
    }

    #[test]
    fn job_defaults_generate_selector_and_labels() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        default_object("Job", &mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert!(validate_object("Job", &j, None).is_empty());
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert_eq!(
            validate_object("Job", &j, None)[0].field,
            "spec.template.spec.restartPolicy"
        );
    }

    #[test]
    fn service_defaults_ports() {
        let mut s = json!({"spec": {"selector": {"app": "w"}, "ports": [{"port": 80}]}});
        default_object("Service", &mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert!(validate_object("Service", &s, None).is_empty());
    }
}
