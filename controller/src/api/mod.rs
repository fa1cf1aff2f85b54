//! The Kubernetes REST API over axum: path parsing, verbs, content negotiation (JSON, YAML for
//! bodies, Table for kubectl), watches, and the pod subresources (status, binding, log).

pub mod admission;
pub mod discovery;
pub mod error;
mod logs;
pub mod objects;
pub mod patch;
pub mod resources;
pub mod selectors;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, FieldError};
pub use objects::{DeleteOptions, Objects, Part};

use patch::PatchType;
use resources::Resource;
use selectors::{FieldSelector, LabelSelector};

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub objects: Objects,
    pub cancel: CancellationToken,
}

/// The whole API as a router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/version", get(|| async { json_ok(&discovery::version()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/api",
            get(|| async { json_ok(&discovery::core_versions()) }),
        )
        .route("/apis", get(|| async { json_ok(&discovery::group_list()) }))
        // kubectl validates against OpenAPI v2; an empty protobuf document is accepted.
        .route(
            "/openapi/v2",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    Bytes::new(),
                )
            }),
        )
        .route("/api/v1", get(|| async { group_version("", "v1") }))
        .route("/api/v1/{*rest}", any(core_handler))
        .route(
            "/apis/{group}/{version}",
            get(|(Path((g, v)),): (Path<(String, String)>,)| async move { group_version(&g, &v) }),
        )
        .route("/apis/{group}/{version}/{*rest}", any(group_handler))
        .fallback(|| async { ApiError::NoSuchPath })
        .with_state(state)
}

fn json_ok(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn json_status(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn group_version(group: &str, version: &str) -> Response {
    match discovery::resource_list(group, version) {
        Some(v) => json_ok(&v),
        None => ApiError::NoSuchPath.into_response(),
    }
}

/// A parsed resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    res: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(group: &str, version: &str, rest: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let find = |plural: &str| resources::find(group, version, plural).ok_or(ApiError::NoSuchPath);
    let namespaced_path = segs.len() >= 3
        && segs[0] == "namespaces"
        && resources::find(group, version, segs[2]).is_some_and(|r| r.namespaced);
    let (res, namespace, name, sub) = if namespaced_path {
        (find(segs[2])?, Some(segs[1]), segs.get(3), segs.get(4))
    } else {
        let Some(first) = segs.first() else {
            return Err(ApiError::NoSuchPath);
        };
        let r = find(first)?;
        if r.namespaced && segs.len() > 1 {
            return Err(ApiError::NoSuchPath);
        }
        (r, None, segs.get(1), segs.get(2))
    };
    if segs.len() > if namespaced_path { 5 } else { 3 } {
        return Err(ApiError::NoSuchPath);
    }
    if let Some(s) = sub
        && !res.subresources.contains(s)
    {
        return Err(ApiError::NoSuchPath);
    }
    Ok(Target {
        res,
        namespace: namespace.map(|s| s.to_string()),
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    })
}

async fn core_handler(
    State(state): State<ApiState>,
    Path(rest): Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, "", "v1", &rest, method, q, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn group_handler(
    State(state): State<ApiState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, &group, &version, &rest, method, q, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Parses a request body: JSON, or YAML when the client says so (or when it is not JSON).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    // Protobuf and CBOR bodies are answered 415, on which clients (kubectl 1.33 among them)
    // fall back to JSON.
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(
            "application/json, application/yaml".into(),
        ));
    }
    let is_yaml = ct.contains("yaml") && !ct.contains("apply-patch+json");
    if !is_yaml {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => return Ok(v),
            Err(e) if ct.contains("json") || body.trim_ascii_start().starts_with(b"{") => {
                return Err(ApiError::BadRequest(format!(
                    "error decoding the JSON body: {e}"
                )));
            }
            Err(_) => {}
        }
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the YAML body is not UTF-8".into()))?;
    // YAML bodies (`application/yaml`, `application/apply-patch+yaml`) become JSON values.
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::BadRequest(format!("error decoding the YAML body: {e}")))
}

fn q_bool(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn dry_run(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "dryRun: unsupported value {other:?}: supported values: \"All\""
        ))),
    }
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    state: ApiState,
    group: &str,
    version: &str,
    rest: &str,
    method: Method,
    q: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = parse_target(group, version, rest)?;
    let objects = &state.objects;
    let ns = t.namespace.as_deref();
    let res = t.res;
    let as_table = table::wants_table(&accept(&headers));
    match (&method, t.name.as_deref(), t.sub.as_deref()) {
        (&Method::GET, None, None) => {
            let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?;
            let fields =
                FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), res.kind)?;
            if q_bool(&q, "watch") {
                return watch_response(&state, res, ns, labels, fields, &q, as_table);
            }
            let (items, rev) = objects.list(res, ns)?;
            if let Some(rv) = q
                .get("resourceVersion")
                .filter(|v| !v.is_empty() && *v != "0")
            {
                let want: u64 = rv
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?;
                if want > rev {
                    return Err(ApiError::Timeout(format!(
                        "Too large resource version: {want}, current: {rev}"
                    )));
                }
            }
            let items: Vec<Value> = items
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(res.kind, o))
                .collect();
            if as_table {
                let incl = q.get("includeObject").map(String::as_str) == Some("Object");
                return Ok(json_ok(&table::table(res, &items, &rev.to_string(), incl)));
            }
            Ok(json_ok(&json!({
                "kind": format!("{}List", res.kind),
                "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": rev.to_string()},
                "items": items,
            })))
        }
        (&Method::POST, None, None) => {
            let obj = parse_body(&headers, &body)?;
            let created = objects.create(res, ns, obj, dry_run(&q)?).await?;
            Ok(json_status(StatusCode::CREATED, &created))
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = objects.get(res, ns, name)?;
            if as_table {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return Ok(json_ok(&table::table(res, &[obj], &rv, false)));
            }
            Ok(json_ok(&obj))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let obj = parse_body(&headers, &body)?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let out = objects
                .update(res, ns, name, obj, part, dry_run(&q)?)
                .await?;
            Ok(json_ok(&out))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::UnsupportedMediaType(
                    "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json".into(),
                )
            })?;
            let patch = parse_body(&headers, &body)?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let out = objects
                .patch(res, ns, name, kind, &patch, part, dry_run(&q)?)
                .await?;
            Ok(json_ok(&out))
        }
        (&Method::DELETE, Some(name), None) => {
            let mut opts = DeleteOptions {
                dry_run: dry_run(&q)?,
                ..Default::default()
            };
            if let Some(g) = q.get("gracePeriodSeconds") {
                opts.grace_period_seconds = Some(g.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid gracePeriodSeconds {g:?}"))
                })?);
            }
            if !body.is_empty() {
                let b = parse_body(&headers, &body)?;
                if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                    opts.grace_period_seconds = Some(g);
                }
                if let Some(u) = b.pointer("/preconditions/uid").and_then(Value::as_str) {
                    opts.uid = Some(u.to_string());
                }
                if let Some(r) = b
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                {
                    opts.resource_version = Some(r.to_string());
                }
                if b.get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| !d.is_empty())
                {
                    opts.dry_run = true;
                }
            }
            let out = objects.delete(res, ns, name, &opts).await?;
            Ok(json_ok(&out))
        }
        (&Method::POST, Some(name), Some("binding")) => {
            let b = parse_body(&headers, &body)?;
            bind_pod(objects, ns, name, &b).await?;
            Ok(json_status(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::GET, Some(name), Some("log")) => {
            let pod = objects.get(res, ns, name)?;
            logs::proxy(objects, &pod, &q).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn watch_response(
    state: &ApiState,
    res: &'static Resource,
    ns: Option<&str>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    let after = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let spec = watch::WatchSpec {
        res,
        namespace: ns.map(str::to_string),
        labels,
        fields,
        after,
        timeout: Duration::from_secs(timeout),
        bookmarks: q_bool(q, "allowWatchBookmarks"),
        as_table,
    };
    let rx = watch::start(&state.objects.store, spec, state.cancel.clone())?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `pods/binding`: sets `spec.nodeName` once, as the scheduler's write.
pub async fn bind_pod(
    objects: &Objects,
    ns: Option<&str>,
    name: &str,
    binding: &Value,
) -> Result<(), ApiError> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::Invalid {
            kind: "Binding".into(),
            name: name.to_string(),
            causes: vec![FieldError::required("target.name")],
        })?
        .to_string();
    let pods = resources::pods();
    objects
        .modify(pods, ns, name, Part::Binding, |pod| {
            let cur = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !cur.is_empty() {
                return Err(ApiError::Conflict {
                    resource: "pods".into(),
                    name: name.to_string(),
                    detail: format!("pod {name} is already assigned to node \"{cur}\""),
                });
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::Conflict {
                    resource: "pods".into(),
                    name: name.to_string(),
                    detail: "the pod is being deleted".into(),
                });
            }
            pod["spec"]["nodeName"] = json!(node);
            Ok(())
        })
        .await?;
    // PodScheduled goes into status, as the scheduler's binding does in Kubernetes.
    objects
        .modify(pods, ns, name, Part::Status, |pod| {
            let conds = pod["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(cs)) = conds {
                cs.retain(|c| c["type"] != "PodScheduled");
                cs.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now()}));
            }
            Ok(())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
