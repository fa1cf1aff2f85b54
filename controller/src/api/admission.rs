//! Admission: what the API server does to an object before it is stored. Type checking against
//! the Kubernetes schema (k8s-openapi types), metadata rules, and per-kind defaulting and
//! validation as Kubernetes does them (pods above all).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldError};
use super::resources::{Resource, WithType, with_type};
use crate::quantity;

fn dns_label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("a lowercase RFC 1123 label must not be empty".into());
    }
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
    })
}

fn dns_subdomain_problem(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty() && s.split('.').all(|l| dns_label_problem(l).is_none());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()
    })
}

/// Decodes the object as the Kubernetes type of its kind and encodes it again: wrong types are a
/// 400 that names the field, as the Kubernetes decoder reports them, and the round trip is what
/// strict field validation compares the body with.
fn round_trip<T: DeserializeOwned + serde::Serialize>(
    obj: &Value,
    kind: &str,
    version: &str,
) -> Result<Value, ApiError> {
    let typed = serde_path_to_error::deserialize::<_, T>(obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {}: {}",
            e.path(),
            e.inner()
        ))
    })?;
    serde_json::to_value(&typed).map_err(|e| ApiError::Internal(format!("re-encode {kind}: {e}")))
}

/// The object as its Kubernetes type sees it (`None` for kinds without a schema here).
fn typed(res: &Resource, obj: &Value) -> Result<Option<Value>, ApiError> {
    struct RoundTrip<'a>(&'a Value, &'a Resource);
    impl WithType for RoundTrip<'_> {
        type Output = Result<Value, ApiError>;
        fn call<T>(self) -> Self::Output
        where
            T: DeserializeOwned + serde::Serialize + k8s_openapi::schemars::JsonSchema,
        {
            round_trip::<T>(self.0, self.1.kind, self.1.version)
        }
    }
    with_type(res.kind, RoundTrip(obj, res)).transpose()
}

pub fn check_types(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    typed(res, obj).map(|_| ())
}

/// The paths of fields in `obj` that its Kubernetes type does not know (`spec.foo`,
/// `spec.containers[0].bar`), as strict field validation reports them.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Result<Vec<String>, ApiError> {
    let Some(known) = typed(res, obj)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    diff_unknown(obj, &known, "", &mut out);
    Ok(out)
}

/// Removes the fields `unknown_fields` reports: Kubernetes drops them when it decodes a body, so
/// they are never stored.
pub fn prune_unknown(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let Some(known) = typed(res, obj)? else {
        return Ok(());
    };
    prune(obj, &known);
    Ok(())
}

fn prune(body: &mut Value, known: &Value) {
    match (body, known) {
        (Value::Object(b), Value::Object(k)) => {
            b.retain(|key, v| {
                k.contains_key(key)
                    || v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            });
            for (key, v) in b.iter_mut() {
                if let Some(kv) = k.get(key) {
                    prune(v, kv);
                }
            }
        }
        (Value::Array(b), Value::Array(k)) => {
            for (bv, kv) in b.iter_mut().zip(k) {
                prune(bv, kv);
            }
        }
        _ => {}
    }
}

fn diff_unknown(body: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (body, known) {
        (Value::Object(b), Value::Object(k)) => {
            for (key, v) in b {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff_unknown(v, kv, &p, out),
                    // A null or empty value of a known field may be dropped by the round trip.
                    None if v.is_null() => {}
                    None if v.as_object().is_some_and(|m| m.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()) =>
                    {
                        // Empty containers of known optional fields are dropped as well; an
                        // unknown field holding `{}` is the one case this misses.
                    }
                    None => out.push(p),
                }
            }
        }
        (Value::Array(b), Value::Array(k)) => {
            for (i, (bv, kv)) in b.iter().zip(k).enumerate() {
                diff_unknown(bv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Validates metadata common to every kind.
pub fn validate_metadata(res: &Resource, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None | Some("") => errs.push(FieldError::required("metadata.name")),
        Some(n) => {
            let problem = if res.kind == "Namespace" {
                dns_label_problem(n)
            } else if res.kind == "Event" || res.kind == "Lease" || res.kind == "Node" {
                // Kubernetes allows dotted names here too (node names may be FQDNs).
                dns_subdomain_problem(n)
            } else {
                dns_subdomain_problem(n)
            };
            if let Some(p) = problem {
                errs.push(FieldError::invalid("metadata.name", &json!(n), p));
            }
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(Value::Object(m)) = obj.pointer(&format!("/metadata/{field}")) {
            for (k, v) in m {
                if !v.is_string() {
                    errs.push(FieldError::invalid(
                        format!("metadata.{field}"),
                        v,
                        "values must be strings",
                    ));
                }
                if field == "labels" {
                    let value = v.as_str().unwrap_or("");
                    let ok = value.len() <= 63
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !ok {
                        errs.push(FieldError::invalid(
                            "metadata.labels".to_string(),
                            v,
                            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                        ));
                    }
                    let _ = k;
                }
            }
        }
    }
    errs
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just made an object"),
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// Kubernetes' defaulting of a new pod (SetDefaults_Pod and friends).
pub fn default_pod(pod: &mut Value) {
    default_pod_spec(obj_mut(pod, "spec"));
    let qos = qos_class(pod);
    let status = obj_mut(pod, "status");
    set_default(status, "phase", json!("Pending"));
    status.insert("qosClass".into(), json!(qos));
}

/// Defaults of a pod spec, in a pod or in a workload's pod template.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    let tag = last.split_once(':').map(|(_, t)| t);
    let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent"
    } else {
        "Always"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    // Requests default to limits where only limits are given.
    if let Some(Value::Object(res)) = c.get_mut("resources")
        && let Some(Value::Object(limits)) = res.get("limits").cloned()
    {
        let requests = res
            .entry("requests")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(requests) = requests {
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let cs: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &cs {
        let req = c.pointer("/resources/requests");
        let lim = c.pointer("/resources/limits");
        for r in ["cpu", "memory"] {
            let rq = req.and_then(|x| x.get(r)).and_then(Value::as_str);
            let lm = lim.and_then(|x| x.get(r)).and_then(Value::as_str);
            if rq.is_some() || lm.is_some() {
                any = true;
            }
            match (
                rq.and_then(quantity::parse_milli),
                lm.and_then(quantity::parse_milli),
            ) {
                (Some(a), Some(b)) if a == b => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Validation of a pod spec (ValidatePodCreate's rules that matter here).
pub fn validate_pod(pod: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let cs = spec.get("containers").and_then(Value::as_array);
    if cs.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required("spec.containers"));
    }
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let path = format!("spec.{list}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(format!("{path}.name"))),
                Some(n) => {
                    if let Some(p) = dns_label_problem(n) {
                        errs.push(FieldError::invalid(format!("{path}.name"), &json!(n), p));
                    } else if names.contains(&n) {
                        errs.push(FieldError::duplicate(format!("{path}.name"), &json!(n)));
                    }
                    names.push(n);
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
            {
                errs.push(FieldError::required(format!("{path}.image")));
            }
            if let Some(p) = c.get("imagePullPolicy") {
                let ok = ["Always", "IfNotPresent", "Never"];
                if !p.as_str().is_some_and(|s| ok.contains(&s)) {
                    errs.push(FieldError::not_supported(
                        format!("{path}.imagePullPolicy"),
                        p,
                        &ok,
                    ));
                }
            }
            for (j, port) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let cp = port.get("containerPort").and_then(Value::as_i64);
                if !cp.is_some_and(|p| (1..=65535).contains(&p)) {
                    errs.push(FieldError::invalid(
                        format!("{path}.ports[{j}].containerPort"),
                        port.get("containerPort").unwrap_or(&Value::Null),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            for kind in ["requests", "limits"] {
                if let Some(Value::Object(m)) = c.pointer(&format!("/resources/{kind}")) {
                    for (r, q) in m {
                        let parsed = q.as_str().and_then(quantity::parse_milli);
                        match parsed {
                            None => errs.push(FieldError::invalid(
                                format!("{path}.resources.{kind}[{r}]"),
                                q,
                                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                            )),
                            Some(v) if v < 0 => errs.push(FieldError::invalid(
                                format!("{path}.resources.{kind}[{r}]"),
                                q,
                                "must be greater than or equal to 0",
                            )),
                            _ => {}
                        }
                    }
                }
            }
            if let (Some(Value::Object(req)), Some(Value::Object(lim))) = (
                c.pointer("/resources/requests"),
                c.pointer("/resources/limits"),
            ) {
                for (r, q) in req {
                    let rq = q.as_str().and_then(quantity::parse_milli);
                    let lm = lim
                        .get(r)
                        .and_then(Value::as_str)
                        .and_then(quantity::parse_milli);
                    if let (Some(a), Some(b)) = (rq, lm)
                        && a > b
                    {
                        errs.push(FieldError::invalid(
                            format!("{path}.resources.requests"),
                            q,
                            format!("must be less than or equal to {r} limit of {}", lim[r]),
                        ));
                    }
                }
            }
        }
    }
    if let Some(p) = spec.get("restartPolicy") {
        let ok = ["Always", "OnFailure", "Never"];
        if !p.as_str().is_some_and(|s| ok.contains(&s)) {
            errs.push(FieldError::not_supported("spec.restartPolicy", p, &ok));
        }
    }
    if let Some(p) = spec.get("dnsPolicy") {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !p.as_str().is_some_and(|s| ok.contains(&s)) {
            errs.push(FieldError::not_supported("spec.dnsPolicy", p, &ok));
        }
    }
    if let Some(g) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && g < 0
    {
        errs.push(FieldError::invalid(
            "spec.terminationGracePeriodSeconds",
            &json!(g),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// What a pod update may change (ValidatePodUpdate): images, activeDeadlineSeconds and
/// tolerations additions; everything else in the spec is fixed once created.
pub fn validate_pod_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut a = old.get("spec").cloned().unwrap_or(Value::Null);
    let mut b = new.get("spec").cloned().unwrap_or(Value::Null);
    for spec in [&mut a, &mut b] {
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = spec.get_mut(list) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        if let Some(m) = spec.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
        }
    }
    if a == b {
        Vec::new()
    } else {
        vec![FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)",
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_like_kubernetes() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "reg:5000/x/busybox:1.36", "resources": {"limits": {"memory": "64Mi"}}},
            {"name": "c", "image": "busybox@sha256:abc"}
        ]}});
        default_pod(&mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            p["spec"]["containers"][2]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            p["spec"]["containers"][1]["resources"]["requests"]["memory"],
            "64Mi"
        );
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn pod_validation_names_fields() {
        let p = json!({"spec": {"restartPolicy": "Sometimes", "containers": [
            {"name": "a", "image": "x"},
            {"name": "a"},
            {"name": "Bad_Name", "image": "y", "resources": {"limits": {"cpu": "lots"}}}
        ]}});
        let fields: Vec<String> = validate_pod(&p).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.containers[2].name",
                "spec.containers[2].resources.limits[cpu]",
                "spec.restartPolicy"
            ]
        );
        assert_eq!(
            validate_pod(&json!({"spec": {}}))[0].field,
            "spec.containers"
        );
    }

    #[test]
    fn pod_update_only_changes_images() {
        let a = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        let c = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}]}});
        assert!(validate_pod_update(&a, &b).is_empty());
        assert_eq!(validate_pod_update(&a, &c)[0].field, "spec");
    }

    #[test]
    fn wrong_types_name_the_path() {
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let e = check_types(super::super::resources::pods(), &p).unwrap_err();
        assert!(e.to_string().contains("spec.containers"), "{e}");
    }
}
