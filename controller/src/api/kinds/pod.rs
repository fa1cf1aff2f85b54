//! Pods (core/v1): Kubernetes' defaulting and validation of a pod spec (also used for workload
//! templates), the Priority admission (`priorityclass`), the QoS class, graceful deletion of scheduled pods, the selectable fields and
//! the columns `kubectl get pods` prints.

use serde_json::{Map, Value, json};

use super::podspec;
use crate::api::admission::dns_label_problem;
use crate::api::error::{ApiError, FieldError};
use crate::api::objects::{DeleteOptions, Objects, Part, after};
use crate::api::strategy::{
    AGE, Allocation, Column, Deletion, Hook, NAME, Strategy, TypeOps, being_deleted,
    has_finalizers, mark_deleted, obj_mut, set_default, str_at,
};
use crate::api::table::age;
use crate::quantity;

#[derive(Debug)]
pub struct PodStrategy;

impl Strategy for PodStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Pod>()
    }

    fn default(&self, obj: &mut Value) {
        default_pod_spec(obj_mut(obj, "spec"));
    }

    fn prepare_create(&self, obj: &mut Value) {
        default_toleration_seconds(obj_mut(obj, "spec"));
        let qos = qos_class(obj);
        let status = obj_mut(obj, "status");
        set_default(status, "phase", json!("Pending"));
        status.insert("qosClass".into(), json!(qos));
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, part: Part) -> Vec<FieldError> {
        let mut errs = validate_pod(obj);
        if let Some(old) = old {
            let mut old = old.clone();
            if part == Part::Binding {
                old["spec"]["nodeName"] = obj["spec"]["nodeName"].clone();
            }
            errs.extend(validate_pod_update(&old, obj));
        }
        errs
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        podspec::unsupported(obj.get("spec").unwrap_or(&Value::Null), "spec")
    }

    /// The Priority admission: a new pod's `priority` and `preemptionPolicy` come from its
    /// PriorityClass.
    fn admit<'a>(
        &'a self,
        objects: &'a Objects,
        obj: &'a mut Value,
        old: Option<&'a Value>,
        _key: &'a str,
    ) -> Hook<'a, Allocation> {
        Box::pin(async move {
            if old.is_none() {
                super::priorityclass::admit_pod(objects, obj).await?;
            }
            Ok(Vec::new())
        })
    }

    fn owns_deletion(&self) -> bool {
        true
    }

    /// A pod bound to a node is deleted in two steps: the DELETE sets its deletionTimestamp
    /// (now + grace period) and the node agent removes it once its containers stopped. An
    /// unscheduled pod, or a grace period of 0, goes at once (unless finalizers remain).
    fn delete(
        &self,
        _name: &str,
        obj: &mut Value,
        opts: &DeleteOptions,
    ) -> Result<Deletion, ApiError> {
        let scheduled = !str_at(obj, "/spec/nodeName").is_empty();
        let grace = opts.grace_period_seconds.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        let current = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if !scheduled || grace <= 0 {
            if !has_finalizers(obj) {
                return Ok(Deletion::Remove);
            }
            if !being_deleted(obj) {
                mark_deleted(obj, &crate::api::objects::now(), 0);
            }
            return Ok(Deletion::Mark);
        }
        if being_deleted(obj) && current.is_some_and(|c| c <= grace) {
            return Ok(Deletion::Unchanged);
        }
        mark_deleted(obj, &after(grace), grace);
        Ok(Deletion::Mark)
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        Some(match field {
            "spec.nodeName" => "/spec/nodeName",
            "spec.restartPolicy" => "/spec/restartPolicy",
            "spec.schedulerName" => "/spec/schedulerName",
            "spec.serviceAccountName" => "/spec/serviceAccountName",
            "status.phase" => "/status/phase",
            "status.podIP" => "/status/podIP",
            _ => return None,
        })
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            Column::new(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            Column::new(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            AGE,
            Column::new("IP", "string", 1, "IP address allocated to the pod."),
            Column::new(
                "Node",
                "string",
                1,
                "Name of the node the pod is assigned to.",
            ),
            Column::new(
                "Nominated Node",
                "string",
                1,
                "Name of the node the pod is nominated to.",
            ),
            Column::new("Readiness Gates", "string", 1, "Pod readiness gates."),
        ];
        C
    }

    fn cells(&self, pod: &Value) -> Vec<Value> {
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
        let or_none = |s: &str| {
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s.to_string()
            }
        };
        vec![
            json!(str_at(pod, "/metadata/name")),
            json!(format!("{ready}/{total}")),
            json!(pod_status(pod)),
            json!(restarts),
            json!(age(str_at(pod, "/metadata/creationTimestamp"))),
            json!(or_none(str_at(pod, "/status/podIP"))),
            json!(or_none(str_at(pod, "/spec/nodeName"))),
            json!("<none>"),
            json!("<none>"),
        ]
    }
}

/// The pod STATUS column, following kubectl's printPod.
/// Sets the pod's DisruptionTarget condition before it is deleted for a disruption (an
/// eviction, a NoExecute taint), so its owner and users see why it went. A pod already gone
/// is no error.
pub async fn mark_disruption_target(
    objects: &crate::api::Objects,
    ns: Option<&str>,
    name: &str,
    reason: &str,
    message: &str,
) -> Result<(), ApiError> {
    let r = objects
        .modify(crate::api::resources::pods(), ns, name, Part::Status, |p| {
            let conds = p["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(cs)) = conds {
                cs.retain(|c| c["type"] != "DisruptionTarget");
                cs.push(json!({"type": "DisruptionTarget", "status": "True",
                    "reason": reason, "message": message,
                    "lastProbeTime": null, "lastTransitionTime": crate::api::objects::now()}));
            }
            Ok(())
        })
        .await;
    match r {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long a pod stays on a node that is not ready or unreachable unless it says otherwise
/// (kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission: a new pod that tolerates neither the not-ready nor
/// the unreachable NoExecute taint gets a toleration of each for
/// [`DEFAULT_TOLERATION_SECONDS`], so it is evicted from a failed node after that long.
pub fn default_toleration_seconds(spec: &mut Map<String, Value>) {
    use crate::controllers::nodelifecycle::{NOT_READY, UNREACHABLE};
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Value::Array(tols) = tols else {
        return;
    };
    for key in [NOT_READY, UNREACHABLE] {
        let covered = tols.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or_default();
            let e = t["effect"].as_str().unwrap_or_default();
            (k.is_empty() || k == key) && (e.is_empty() || e == "NoExecute")
        });
        if !covered {
            tols.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}),
            );
        }
    }
}

pub fn pod_status(pod: &Value) -> String {
    let mut reason = str_at(pod, "/status/phase").to_string();
    if !str_at(pod, "/status/reason").is_empty() {
        reason = str_at(pod, "/status/reason").to_string();
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

/// Defaults of a pod spec, in a pod or in a workload's pod template.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
                podspec::default_container(c);
            }
        }
    }
    podspec::default_volumes(spec);
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
    let volumes = podspec::validate_spec(&mut errs, &spec);
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
            podspec::validate_container(&mut errs, &path, c, list == "initContainers", &volumes);
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

    fn default_pod(p: &mut Value) {
        PodStrategy.default(p);
        PodStrategy.prepare_create(p);
    }

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
}

#[cfg(test)]
mod toleration_tests {
    use super::*;

    fn keys(spec: &Map<String, Value>) -> Vec<(String, Option<i64>)> {
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap_or_default().to_owned(),
                    t["tolerationSeconds"].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn new_pods_tolerate_a_failed_node_for_five_minutes_unless_they_say_otherwise() {
        let mut spec = Map::new();
        default_toleration_seconds(&mut spec);
        assert_eq!(
            keys(&spec),
            [
                ("node.kubernetes.io/not-ready".to_owned(), Some(300)),
                ("node.kubernetes.io/unreachable".to_owned(), Some(300))
            ]
        );
        let mut own = json!({"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 5}]});
        let own = own.as_object_mut().unwrap();
        default_toleration_seconds(own);
        assert_eq!(
            keys(own),
            [
                ("node.kubernetes.io/unreachable".to_owned(), Some(5)),
                ("node.kubernetes.io/not-ready".to_owned(), Some(300))
            ]
        );
        // A toleration of every taint (as DaemonSets' can be) covers both.
        let mut all = json!({"tolerations": [{"operator": "Exists"}]});
        let all = all.as_object_mut().unwrap();
        default_toleration_seconds(all);
        assert_eq!(all["tolerations"].as_array().map(Vec::len), Some(1));
    }
}
