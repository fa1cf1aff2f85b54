//! The parts of a pod spec beyond its containers' names and images, validated and defaulted as
//! Kubernetes does (`ValidatePodSpec`, `SetDefaults_*`): volumes and volumeMounts (subPath,
//! mountPropagation), environment sources, probes, lifecycle hooks, sidecar init containers,
//! and the pod-level fields they interact with. Also the list of pod fields skiff accepts but
//! does not implement, which the API names in warnings.

use serde_json::{Map, Value, json};

use crate::api::admission::dns_label_problem;
use crate::api::error::FieldError;
use crate::api::strategy::set_default;

/// The volume sources skiff's node agent can mount.
const SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "configMap",
    "secret",
    "downwardAPI",
    "projected",
    "persistentVolumeClaim",
];

/// Volume sources Kubernetes knows that skiff cannot mount (in-tree cloud and network storage).
const OTHER_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "image",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// The fieldRef paths the downward API serves in environment variables.
const ENV_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The fieldRef paths downwardAPI volumes serve (no IPs: they are not known at mount time).
const VOLUME_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
];

const RESOURCES: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `path` relative, without `..` (a volume item's path, a subPath).
fn relative_path(errs: &mut Vec<FieldError>, field: String, p: &str) {
    if p.starts_with('/') {
        errs.push(FieldError::invalid(
            field,
            &json!(p),
            "must be a relative path",
        ));
    } else if p.split('/').any(|s| s == "..") {
        errs.push(FieldError::invalid(
            field,
            &json!(p),
            "must not contain '..'",
        ));
    }
}

fn key_to_paths(errs: &mut Vec<FieldError>, field: &str, items: &[Value]) {
    for (i, it) in items.iter().enumerate() {
        let f = format!("{field}.items[{i}]");
        if text(it, "key").is_empty() {
            errs.push(FieldError::required(format!("{f}.key")));
        }
        let p = text(it, "path");
        if p.is_empty() {
            errs.push(FieldError::required(format!("{f}.path")));
        } else {
            relative_path(errs, format!("{f}.path"), p);
            if p.starts_with("..") {
                errs.push(FieldError::invalid(
                    format!("{f}.path"),
                    &json!(p),
                    "must not start with '..'",
                ));
            }
        }
        mode(errs, &format!("{f}.mode"), it.get("mode"));
    }
}

fn mode(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>) {
    if let Some(v) = v.filter(|v| !v.is_null())
        && v.as_i64().is_none_or(|m| !(0..=0o777).contains(&m))
    {
        errs.push(FieldError::invalid(
            field,
            v,
            "must be a number between 0 and 0777 (octal), both inclusive",
        ));
    }
}

fn downward_items(errs: &mut Vec<FieldError>, field: &str, items: &[Value]) {
    for (i, it) in items.iter().enumerate() {
        let f = format!("{field}.items[{i}]");
        let p = text(it, "path");
        if p.is_empty() {
            errs.push(FieldError::required(format!("{f}.path")));
        } else {
            relative_path(errs, format!("{f}.path"), p);
        }
        mode(errs, &format!("{f}.mode"), it.get("mode"));
        match (it.get("fieldRef"), it.get("resourceFieldRef")) {
            (Some(fr), None) => field_ref(errs, &format!("{f}.fieldRef"), fr, VOLUME_FIELDS),
            (None, Some(rr)) => {
                if text(rr, "containerName").is_empty() {
                    errs.push(FieldError::required(format!(
                        "{f}.resourceFieldRef.containerName"
                    )));
                }
                resource_ref(errs, &format!("{f}.resourceFieldRef"), rr);
            }
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                f,
                &json!("resource"),
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (None, None) => errs.push(FieldError::required_because(
                f,
                "one of fieldRef and resourceFieldRef is required",
            )),
        }
    }
}

fn field_ref(errs: &mut Vec<FieldError>, field: &str, r: &Value, allowed: &[&str]) {
    let path = text(r, "fieldPath");
    if path.is_empty() {
        errs.push(FieldError::required(format!("{field}.fieldPath")));
        return;
    }
    let subscripted = ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|p| path.starts_with(p) && path.ends_with("']"));
    if !subscripted && !allowed.contains(&path) {
        errs.push(FieldError::not_supported(
            format!("{field}.fieldPath"),
            &json!(path),
            allowed,
        ));
    }
}

fn resource_ref(errs: &mut Vec<FieldError>, field: &str, r: &Value) {
    let res = text(r, "resource");
    if res.is_empty() {
        errs.push(FieldError::required(format!("{field}.resource")));
    } else if !RESOURCES.contains(&res) && !res.contains(".hugepages-") {
        errs.push(FieldError::not_supported(
            format!("{field}.resource"),
            &json!(res),
            RESOURCES,
        ));
    }
}

/// Validates `spec.volumes` and returns their names.
fn volumes(errs: &mut Vec<FieldError>, spec: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let f = format!("spec.volumes[{i}]");
        let name = text(v, "name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name")));
        } else if let Some(p) = dns_label_problem(name) {
            errs.push(FieldError::invalid(format!("{f}.name"), &json!(name), p));
        } else if names.iter().any(|n| n == name) {
            errs.push(FieldError::duplicate(format!("{f}.name"), &json!(name)));
        }
        names.push(name.to_owned());
        let given: Vec<&str> = SOURCES
            .iter()
            .chain(OTHER_SOURCES)
            .copied()
            .filter(|s| v.get(*s).is_some_and(|x| !x.is_null()))
            .collect();
        match given.as_slice() {
            [] => errs.push(FieldError::required_because(
                f.clone(),
                "must specify a volume type",
            )),
            [_] => {}
            [_, more @ ..] => {
                for m in more {
                    errs.push(FieldError::forbidden(
                        format!("{f}.{m}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
        if let Some(h) = v.get("hostPath").filter(|h| !h.is_null()) {
            let p = text(h, "path");
            if p.is_empty() {
                errs.push(FieldError::required(format!("{f}.hostPath.path")));
            } else if p.split('/').any(|s| s == "..") {
                errs.push(FieldError::invalid(
                    format!("{f}.hostPath.path"),
                    &json!(p),
                    "must not contain '..'",
                ));
            }
            if let Some(t) = h.get("type").and_then(Value::as_str)
                && !HOST_PATH_TYPES.contains(&t)
            {
                errs.push(FieldError::not_supported(
                    format!("{f}.hostPath.type"),
                    &json!(t),
                    HOST_PATH_TYPES,
                ));
            }
        }
        if let Some(e) = v.get("emptyDir").filter(|e| !e.is_null()) {
            let medium = text(e, "medium");
            if !medium.is_empty() && medium != "Memory" && !medium.starts_with("HugePages") {
                errs.push(FieldError::not_supported(
                    format!("{f}.emptyDir.medium"),
                    &json!(medium),
                    &["", "Memory", "HugePages"],
                ));
            }
        }
        if let Some(c) = v.get("configMap").filter(|c| !c.is_null()) {
            if text(c, "name").is_empty() {
                errs.push(FieldError::required(format!("{f}.configMap.name")));
            }
            key_to_paths(errs, &format!("{f}.configMap"), arr(c, "items"));
            mode(
                errs,
                &format!("{f}.configMap.defaultMode"),
                c.get("defaultMode"),
            );
        }
        if let Some(s) = v.get("secret").filter(|s| !s.is_null()) {
            if text(s, "secretName").is_empty() {
                errs.push(FieldError::required(format!("{f}.secret.secretName")));
            }
            key_to_paths(errs, &format!("{f}.secret"), arr(s, "items"));
            mode(
                errs,
                &format!("{f}.secret.defaultMode"),
                s.get("defaultMode"),
            );
        }
        if let Some(d) = v.get("downwardAPI").filter(|d| !d.is_null()) {
            downward_items(errs, &format!("{f}.downwardAPI"), arr(d, "items"));
            mode(
                errs,
                &format!("{f}.downwardAPI.defaultMode"),
                d.get("defaultMode"),
            );
        }
        if let Some(p) = v.get("projected").filter(|p| !p.is_null()) {
            for (j, src) in arr(p, "sources").iter().enumerate() {
                let sf = format!("{f}.projected.sources[{j}]");
                if let Some(c) = src.get("configMap").filter(|c| !c.is_null()) {
                    if text(c, "name").is_empty() {
                        errs.push(FieldError::required(format!("{sf}.configMap.name")));
                    }
                    key_to_paths(errs, &format!("{sf}.configMap"), arr(c, "items"));
                }
                if let Some(s) = src.get("secret").filter(|s| !s.is_null()) {
                    if text(s, "name").is_empty() {
                        errs.push(FieldError::required(format!("{sf}.secret.name")));
                    }
                    key_to_paths(errs, &format!("{sf}.secret"), arr(s, "items"));
                }
                if let Some(d) = src.get("downwardAPI").filter(|d| !d.is_null()) {
                    downward_items(errs, &format!("{sf}.downwardAPI"), arr(d, "items"));
                }
            }
            mode(
                errs,
                &format!("{f}.projected.defaultMode"),
                p.get("defaultMode"),
            );
        }
        if let Some(c) = v.get("persistentVolumeClaim").filter(|c| !c.is_null())
            && text(c, "claimName").is_empty()
        {
            errs.push(FieldError::required(format!(
                "{f}.persistentVolumeClaim.claimName"
            )));
        }
    }
    names
}

/// A probe's or hook's handler: exactly one of exec, httpGet, tcpSocket, grpc (probes) or
/// sleep (hooks).
fn handler(errs: &mut Vec<FieldError>, field: &str, h: &Value, kinds: &[&str]) {
    let given: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| h.get(*k).is_some_and(|x| !x.is_null()))
        .collect();
    match given.as_slice() {
        [] => errs.push(FieldError::required_because(
            field,
            "must specify a handler type",
        )),
        [_] => {}
        [_, more @ ..] => {
            for m in more {
                errs.push(FieldError::forbidden(
                    format!("{field}.{m}"),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    if let Some(e) = h.get("exec").filter(|e| !e.is_null())
        && arr(e, "command").is_empty()
    {
        errs.push(FieldError::required(format!("{field}.exec.command")));
    }
    for k in ["httpGet", "tcpSocket"] {
        if let Some(a) = h.get(k).filter(|a| !a.is_null()) {
            port(errs, &format!("{field}.{k}.port"), a.get("port"));
        }
    }
    if let Some(g) = h.get("httpGet").filter(|g| !g.is_null())
        && let Some(s) = g.get("scheme").and_then(Value::as_str)
        && s != "HTTP"
        && s != "HTTPS"
    {
        errs.push(FieldError::not_supported(
            format!("{field}.httpGet.scheme"),
            &json!(s),
            &["HTTP", "HTTPS"],
        ));
    }
    if let Some(g) = h.get("grpc").filter(|g| !g.is_null()) {
        let p = g.get("port").and_then(Value::as_i64);
        if !p.is_some_and(|p| (1..=65535).contains(&p)) {
            errs.push(FieldError::invalid(
                format!("{field}.grpc.port"),
                g.get("port").unwrap_or(&Value::Null),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    if let Some(s) = h.get("sleep").filter(|s| !s.is_null())
        && s.get("seconds")
            .and_then(Value::as_i64)
            .is_none_or(|n| n < 0)
    {
        errs.push(FieldError::invalid(
            format!("{field}.sleep.seconds"),
            s.get("seconds").unwrap_or(&Value::Null),
            "must be greater than or equal to 0",
        ));
    }
}

/// A port by number (1-65535) or by name (an IANA service name).
fn port(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>) {
    match v {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 15
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && s.chars().any(|c| c.is_ascii_lowercase()) => {}
        Some(Value::String(s)) if s.parse::<i64>().is_ok_and(|p| (1..=65535).contains(&p)) => {}
        None | Some(Value::Null) => errs.push(FieldError::required(field)),
        Some(other) => errs.push(FieldError::invalid(
            field,
            other,
            "must contain only alpha-numerics or be between 1 and 65535, inclusive",
        )),
    }
}

fn probe(errs: &mut Vec<FieldError>, field: &str, p: &Value, liveness_or_startup: bool) {
    handler(errs, field, p, &["exec", "httpGet", "tcpSocket", "grpc"]);
    for k in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(v) = p.get(k).filter(|v| !v.is_null())
            && v.as_i64().is_none_or(|n| n < 0)
        {
            errs.push(FieldError::invalid(
                format!("{field}.{k}"),
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    if liveness_or_startup
        && let Some(s) = p.get("successThreshold").and_then(Value::as_i64)
        && s != 1
    {
        errs.push(FieldError::invalid(
            format!("{field}.successThreshold"),
            &json!(s),
            "must be 1",
        ));
    }
    if let Some(t) = p
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && t <= 0
    {
        errs.push(FieldError::invalid(
            format!("{field}.terminationGracePeriodSeconds"),
            &json!(t),
            "must be greater than 0",
        ));
    }
}

fn env(errs: &mut Vec<FieldError>, path: &str, c: &Value) {
    for (i, e) in arr(c, "env").iter().enumerate() {
        let f = format!("{path}.env[{i}]");
        let name = text(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name")));
        } else if name.contains('=') || name.chars().any(|c| !c.is_ascii_graphic() && c != ' ') {
            errs.push(FieldError::invalid(
                format!("{f}.name"),
                &json!(name),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        let Some(from) = e.get("valueFrom").filter(|v| !v.is_null()) else {
            continue;
        };
        if !text(e, "value").is_empty() {
            errs.push(FieldError::invalid(
                format!("{f}.valueFrom"),
                &json!(""),
                "may not be specified when `value` is not empty",
            ));
        }
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
            "fileKeyRef",
        ]
        .into_iter()
        .filter(|k| from.get(*k).is_some_and(|x| !x.is_null()))
        .collect();
        match sources.as_slice() {
            [] => errs.push(FieldError::invalid(
                format!("{f}.valueFrom"),
                &json!(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )),
            [one] => {
                let sf = format!("{f}.valueFrom.{one}");
                let src = &from[*one];
                match *one {
                    "fieldRef" => field_ref(errs, &sf, src, ENV_FIELDS),
                    "resourceFieldRef" => resource_ref(errs, &sf, src),
                    "configMapKeyRef" | "secretKeyRef" => {
                        if text(src, "name").is_empty() {
                            errs.push(FieldError::required(format!("{sf}.name")));
                        }
                        if text(src, "key").is_empty() {
                            errs.push(FieldError::required(format!("{sf}.key")));
                        }
                    }
                    _ => {}
                }
            }
            _ => errs.push(FieldError::invalid(
                format!("{f}.valueFrom"),
                &json!(""),
                "may not have more than one field specified at a time",
            )),
        }
    }
    for (i, e) in arr(c, "envFrom").iter().enumerate() {
        let f = format!("{path}.envFrom[{i}]");
        let refs: Vec<&str> = ["configMapRef", "secretRef"]
            .into_iter()
            .filter(|k| e.get(*k).is_some_and(|x| !x.is_null()))
            .collect();
        match refs.as_slice() {
            [] => errs.push(FieldError::invalid(
                f,
                &json!(""),
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            [one] => {
                if text(&e[*one], "name").is_empty() {
                    errs.push(FieldError::required(format!("{f}.{one}.name")));
                }
            }
            _ => errs.push(FieldError::invalid(
                f,
                &json!(""),
                "may not have more than one field specified at a time",
            )),
        }
    }
}

fn mounts(errs: &mut Vec<FieldError>, path: &str, c: &Value, volumes: &[String]) {
    let privileged = c
        .pointer("/securityContext/privileged")
        .and_then(Value::as_bool)
        == Some(true);
    let mut seen: Vec<&str> = Vec::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let f = format!("{path}.volumeMounts[{i}]");
        let name = text(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name")));
        } else if !volumes.iter().any(|v| v == name) {
            errs.push(FieldError::not_found(format!("{f}.name"), &json!(name)));
        }
        let mp = text(m, "mountPath");
        if mp.is_empty() {
            errs.push(FieldError::required(format!("{f}.mountPath")));
        } else if seen.contains(&mp) {
            errs.push(FieldError::invalid(
                format!("{f}.mountPath"),
                &json!(mp),
                "must be unique",
            ));
        }
        seen.push(mp);
        let sub = text(m, "subPath");
        let expr = text(m, "subPathExpr");
        if !sub.is_empty() {
            relative_path(errs, format!("{f}.subPath"), sub);
        }
        if !expr.is_empty() {
            if !sub.is_empty() {
                errs.push(FieldError::invalid(
                    format!("{f}.subPathExpr"),
                    &json!(expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            relative_path(errs, format!("{f}.subPathExpr"), expr);
        }
        match m.get("mountPropagation").and_then(Value::as_str) {
            None | Some("None") | Some("HostToContainer") => {}
            Some("Bidirectional") if !privileged => errs.push(FieldError::forbidden(
                format!("{f}.mountPropagation"),
                "Bidirectional mount propagation is available only to privileged containers",
            )),
            Some("Bidirectional") => {}
            Some(other) => errs.push(FieldError::not_supported(
                format!("{f}.mountPropagation"),
                &json!(other),
                &["Bidirectional", "HostToContainer", "None"],
            )),
        }
    }
}

/// Validation of what a container holds besides name, image, ports and resources.
pub fn validate_container(
    errs: &mut Vec<FieldError>,
    path: &str,
    c: &Value,
    init: bool,
    volumes: &[String],
) {
    env(errs, path, c);
    mounts(errs, path, c, volumes);
    let sidecar = init && text(c, "restartPolicy") == "Always";
    match (init, c.get("restartPolicy").and_then(Value::as_str)) {
        (_, None) => {}
        (true, Some("Always")) => {}
        (true, Some(other)) => errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            &json!(other),
            &["Always"],
        )),
        (false, Some(_)) => errs.push(FieldError::forbidden(
            format!("{path}.restartPolicy"),
            "may not be set for non-init containers",
        )),
    }
    for (k, liveness_or_startup) in [
        ("livenessProbe", true),
        ("readinessProbe", false),
        ("startupProbe", true),
    ] {
        let Some(p) = c.get(k).filter(|p| !p.is_null()) else {
            continue;
        };
        if init && !sidecar {
            errs.push(FieldError::forbidden(
                format!("{path}.{k}"),
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        probe(errs, &format!("{path}.{k}"), p, liveness_or_startup);
    }
    if let Some(l) = c.get("lifecycle").filter(|l| !l.is_null()) {
        if init && !sidecar {
            errs.push(FieldError::forbidden(
                format!("{path}.lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
        }
        for k in ["postStart", "preStop"] {
            if let Some(h) = l.get(k).filter(|h| !h.is_null()) {
                handler(
                    errs,
                    &format!("{path}.lifecycle.{k}"),
                    h,
                    &["exec", "httpGet", "tcpSocket", "sleep"],
                );
                if h.get("tcpSocket").is_some_and(|t| !t.is_null()) {
                    errs.push(FieldError::forbidden(
                        format!("{path}.lifecycle.{k}.tcpSocket"),
                        "tcpSocket is deprecated and not supported as a lifecycle handler",
                    ));
                }
            }
        }
    }
    match c.get("terminationMessagePolicy").and_then(Value::as_str) {
        None | Some("File") | Some("FallbackToLogsOnError") => {}
        Some(other) => errs.push(FieldError::not_supported(
            format!("{path}.terminationMessagePolicy"),
            &json!(other),
            &["File", "FallbackToLogsOnError"],
        )),
    }
}

/// Validation of the pod-level fields beside the containers; returns the volume names the
/// containers' mounts may name.
pub fn validate_spec(errs: &mut Vec<FieldError>, spec: &Value) -> Vec<String> {
    let names = volumes(errs, spec);
    if let Some(d) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null())
        && d.as_i64().is_none_or(|n| n <= 0)
    {
        errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            d,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if spec.get("shareProcessNamespace").and_then(Value::as_bool) == Some(true)
        && spec.get("hostPID").and_then(Value::as_bool) == Some(true)
    {
        errs.push(FieldError::invalid(
            "spec.securityContext.shareProcessNamespace",
            &json!(true),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    if let Some(h) = spec.get("hostname").and_then(Value::as_str)
        && let Some(p) = dns_label_problem(h)
    {
        errs.push(FieldError::invalid("spec.hostname", &json!(h), p));
    }
    if let Some(s) = spec.get("subdomain").and_then(Value::as_str)
        && let Some(p) = dns_label_problem(s)
    {
        errs.push(FieldError::invalid("spec.subdomain", &json!(s), p));
    }
    names
}

fn default_probe(p: &mut Map<String, Value>) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    default_handler(p);
}

fn default_handler(h: &mut Map<String, Value>) {
    if let Some(Value::Object(g)) = h.get_mut("httpGet") {
        set_default(g, "path", json!("/"));
        set_default(g, "scheme", json!("HTTP"));
    }
    if let Some(Value::Object(g)) = h.get_mut("grpc") {
        set_default(g, "service", json!(""));
    }
}

/// Kubernetes' defaults inside a container (probes, hooks, env field references).
pub fn default_container(c: &mut Map<String, Value>) {
    for k in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(k) {
            default_probe(p);
        }
    }
    if let Some(Value::Object(l)) = c.get_mut("lifecycle") {
        for k in ["postStart", "preStop"] {
            if let Some(Value::Object(h)) = l.get_mut(k) {
                default_handler(h);
            }
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut() {
            if let Some(Value::Object(f)) = e.pointer_mut("/valueFrom/fieldRef") {
                set_default(f, "apiVersion", json!("v1"));
            }
        }
    }
}

/// Kubernetes' defaults of the pod's volumes (file modes 0644, `hostPath.type` "").
pub fn default_volumes(spec: &mut Map<String, Value>) {
    let Some(Value::Array(vols)) = spec.get_mut("volumes") else {
        return;
    };
    for v in vols.iter_mut().filter_map(Value::as_object_mut) {
        for k in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(Value::Object(src)) = v.get_mut(k) {
                set_default(src, "defaultMode", json!(0o644));
            }
        }
        if let Some(Value::Object(h)) = v.get_mut("hostPath") {
            set_default(h, "type", json!(""));
        }
        if let Some(Value::Object(items)) = v.get_mut("downwardAPI")
            && let Some(Value::Array(items)) = items.get_mut("items")
        {
            for it in items.iter_mut() {
                if let Some(Value::Object(f)) = it.get_mut("fieldRef") {
                    set_default(f, "apiVersion", json!("v1"));
                }
            }
        }
    }
}

/// What a pod spec asks for that skiff does not do, one sentence each, for `Warning` headers
/// and the pod's events. `path` prefixes the field paths (`spec` or `spec.template.spec`).
pub fn unsupported(spec: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |field: &str, what: &str| out.push(format!("{path}.{field}: {what}"));
    let set = |v: &Value, k: &str| v.get(k).is_some_and(|x| !x.is_null());
    let nonempty = |v: &Value, k: &str| match v.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        for s in OTHER_SOURCES {
            if set(v, s) {
                say(
                    &format!("volumes[{i}].{s}"),
                    "this volume type is not supported by skiff; the pod will not start",
                );
            }
        }
        for (j, src) in arr(v.get("projected").unwrap_or(&Value::Null), "sources")
            .iter()
            .enumerate()
        {
            for s in [
                "serviceAccountToken",
                "clusterTrustBundle",
                "podCertificate",
            ] {
                if set(src, s) {
                    say(
                        &format!("volumes[{i}].projected.sources[{j}].{s}"),
                        "not supported by skiff yet; the projection is left out",
                    );
                }
            }
        }
    }
    if nonempty(spec, "runtimeClassName") {
        say("runtimeClassName", "ignored: skiff has one runtime");
    }
    if nonempty(spec, "resourceClaims") {
        say(
            "resourceClaims",
            "dynamic resource allocation is not supported by skiff",
        );
    }
    if nonempty(spec, "ephemeralContainers") {
        say("ephemeralContainers", "not supported by skiff");
    }
    if spec.get("hostUsers").and_then(Value::as_bool) == Some(false) {
        say("hostUsers", "user namespaces are not supported by skiff");
    }
    if let Some(sc) = spec.get("securityContext") {
        for k in ["seLinuxOptions", "appArmorProfile", "windowsOptions"] {
            if nonempty(sc, k) {
                say(&format!("securityContext.{k}"), "ignored by skiff");
            }
        }
        if nonempty(sc, "fsGroupChangePolicy") {
            say(
                "securityContext.fsGroupChangePolicy",
                "ignored: skiff always applies fsGroup to the volumes it makes",
            );
        }
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            if c.pointer("/lifecycle/stopSignal")
                .is_some_and(|s| !s.is_null())
            {
                say(
                    &format!("{list}[{i}].lifecycle.stopSignal"),
                    "ignored: containers stop with their image's STOPSIGNAL",
                );
            }
            if nonempty(c, "volumeDevices") {
                say(
                    &format!("{list}[{i}].volumeDevices"),
                    "block volumes are not supported by skiff",
                );
            }
            if let Some(sc) = c.get("securityContext") {
                for k in ["seLinuxOptions", "appArmorProfile", "windowsOptions"] {
                    if nonempty(sc, k) {
                        say(
                            &format!("{list}[{i}].securityContext.{k}"),
                            "ignored by skiff",
                        );
                    }
                }
                if sc.get("procMount").and_then(Value::as_str) == Some("Unmasked") {
                    say(
                        &format!("{list}[{i}].securityContext.procMount"),
                        "ignored: /proc is always masked",
                    );
                }
            }
            for (j, m) in arr(c, "volumeMounts").iter().enumerate() {
                if m.get("recursiveReadOnly")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r != "Disabled")
                {
                    say(
                        &format!("{list}[{i}].volumeMounts[{j}].recursiveReadOnly"),
                        "ignored: read-only mounts are not made recursively read-only",
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        let vols = validate_spec(&mut errs, &spec);
        for list in ["initContainers", "containers"] {
            for (i, c) in arr(&spec, list).iter().enumerate() {
                validate_container(
                    &mut errs,
                    &format!("spec.{list}[{i}]"),
                    c,
                    list == "initContainers",
                    &vols,
                );
            }
        }
        errs.into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn bad_volumes_mounts_and_probes_name_their_fields() {
        let got = fields(json!({
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "both", "emptyDir": {}, "hostPath": {"path": "/x"}},
                {"name": "none"},
            ],
            "containers": [{
                "name": "c",
                "volumeMounts": [
                    {"name": "nope", "mountPath": "/a"},
                    {"name": "data", "mountPath": "/b", "subPath": "../etc"},
                ],
                "livenessProbe": {"periodSeconds": 5},
                "readinessProbe": {"httpGet": {"port": 0}},
            }],
        }));
        assert_eq!(
            got,
            [
                "spec.volumes[1].hostPath: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[2]: Required value: must specify a volume type",
                "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
                "spec.containers[0].volumeMounts[1].subPath: Invalid value: \"../etc\": must not contain '..'",
                "spec.containers[0].livenessProbe: Required value: must specify a handler type",
                "spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must contain only alpha-numerics or be between 1 and 65535, inclusive",
            ]
        );
    }

    #[test]
    fn env_sources_and_sidecars() {
        let got = fields(json!({
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["true"]}}},
                {"name": "init", "restartPolicy": "OnFailure", "livenessProbe": {"exec": {"command": ["true"]}}},
            ],
            "containers": [{
                "name": "c",
                "env": [
                    {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm"}}},
                    {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                ],
            }],
        }));
        assert_eq!(
            got,
            [
                "spec.initContainers[1].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
                "spec.initContainers[1].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
                "spec.containers[0].env[1].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"metadata.labels\", \"metadata.annotations\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"",
                "spec.containers[0].env[2].valueFrom.configMapKeyRef.key: Required value",
            ]
        );
    }

    #[test]
    fn defaults_and_warnings() {
        let mut c = json!({"livenessProbe": {"httpGet": {"port": 80}}})
            .as_object()
            .cloned()
            .unwrap();
        default_container(&mut c);
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/");
        assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTP");
        let w = unsupported(
            &json!({"runtimeClassName": "kata", "volumes": [{"name": "n", "nfs": {"server": "x"}}]}),
            "spec",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("spec.volumes[0].nfs:"));
    }
}
