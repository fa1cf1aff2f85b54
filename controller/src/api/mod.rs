//! The Kubernetes REST API over axum: path parsing, verbs, content negotiation (JSON, YAML and
//! Kubernetes protobuf for bodies; JSON or a Table for kubectl in answers), watches, and the pod
//! subresources (status, binding, log, and the streaming exec, attach and portforward).

pub mod admission;
pub mod aggregator;
pub mod apply;
pub mod discovery;
pub mod encode;
pub mod error;
pub mod kinds;
pub mod list;
mod logs;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod shape;
pub mod strategy;
mod stream;
pub mod subresources;
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
pub use objects::{DeleteOptions, Objects, Part, Propagation};

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
        .route("/apis", get(apis))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_discovery))
        .route("/openapi/v3/{*gv}", get(openapi_v3_document))
        .route("/api/v1", get(|| async { group_version("", "v1") }))
        // Streaming subresources take the raw request: its upgrade is proxied to the node.
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            any(|s, p, r| stream::handle(stream::Kind::Exec, s, p, r)),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/attach",
            any(|s, p, r| stream::handle(stream::Kind::Attach, s, p, r)),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            any(|s, p, r| stream::handle(stream::Kind::PortForward, s, p, r)),
        )
        .route("/api/v1/{*rest}", any(core_handler))
        .route("/apis/{group}/{version}", any(group_version_handler))
        .route("/apis/{group}/{version}/{*rest}", any(group_handler))
        .fallback(|uri: axum::http::Uri| async move {
            // Under the API's roots a Status (go-restful's 404); anywhere else Go's plain text.
            let path = uri.path();
            if path.starts_with("/api/") || path.starts_with("/apis/") {
                ApiError::NoSuchPath.into_response()
            } else {
                not_found_text()
            }
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The largest request body, as the kube-apiserver's (3 MiB).
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A request body, or why it could not be read.
fn read_body(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "Request entity too large: limit is {MAX_BODY_BYTES}"
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

fn json_ok(v: &Value) -> Response {
    json_status(StatusCode::OK, v)
}

/// A JSON answer written as the kube-apiserver writes it (`encode`).
fn json_status(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        encode::to_vec(v),
    )
        .into_response()
}

fn group_version(group: &str, version: &str) -> Response {
    match discovery::resource_list(group, version) {
        Some(v) => json_ok(&v),
        None => ApiError::NoSuchPath.into_response(),
    }
}

/// Whether `Accept` allows JSON (no `Accept` does): the OpenAPI documents are served as JSON
/// only (Kubernetes also has protobuf, which clients ask for alongside JSON).
fn accepts_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = accept(headers).split(',').any(|m| {
        let base = m.split(';').next().unwrap_or("").trim();
        matches!(base, "application/json" | "application/*" | "*/*" | "")
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable("application/json".into()))
    }
}

/// The protobuf form of OpenAPI v2 (gnostic's), which kubectl asks for.
const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2";

/// `GET /openapi/v2`: Swagger 2.0 in JSON. Asked for in protobuf (kubectl's discovery client),
/// it answers an empty document, which kubectl accepts: kubectl reads schemas from v3.
async fn openapi_v2(headers: HeaderMap) -> Result<Response, ApiError> {
    if accept(&headers).contains(OPENAPI_V2_PROTOBUF) {
        return Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Bytes::new(),
        )
            .into_response());
    }
    accepts_json(&headers)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        openapi::swagger(),
    )
        .into_response())
}

async fn openapi_v3_discovery(headers: HeaderMap) -> Result<Response, ApiError> {
    accepts_json(&headers)?;
    Ok(json_ok(&openapi::discovery()))
}

async fn openapi_v3_document(
    Path(gv): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let doc = openapi::documents()
        .get(gv.trim_end_matches('/'))
        .ok_or(ApiError::NoSuchPath)?;
    accepts_json(&headers)?;
    // A URL with the current hash always names this text, so clients may keep it for good.
    let cache = if q.get("hash") == Some(&doc.hash) {
        "public, immutable, max-age=31536000"
    } else {
        "no-cache, private"
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CACHE_CONTROL, cache.to_string()),
            (header::ETAG, format!("\"{}\"", doc.hash)),
        ],
        doc.json.as_str(),
    )
        .into_response())
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
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    handle(state, "", "v1", &rest, method, q, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[allow(clippy::too_many_arguments)] // axum extractors, one per part of the request
async fn group_handler(
    State(state): State<ApiState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if !aggregator::is_local(&group, &version) {
        return aggregated(&state, &group, &version, method, &uri, &headers, body).await;
    }
    handle(state, &group, &version, &rest, method, q, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/apis/{group}/{version}`: the resource list, the aggregated server's, or 404.
async fn group_version_handler(
    State(state): State<ApiState>,
    Path((group, version)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if !aggregator::is_local(&group, &version) {
        return aggregated(&state, &group, &version, method, &uri, &headers, body).await;
    }
    if method != Method::GET {
        return ApiError::MethodNotAllowed.into_response();
    }
    group_version(&group, &version)
}

/// A request for a group-version the table does not serve: passed to the Service an APIService
/// names, else 404.
async fn aggregated(
    state: &ApiState,
    group: &str,
    version: &str,
    method: Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match aggregator::serve(&state.objects, group, version, method, path, headers, body).await {
        Some(Ok(resp)) => resp,
        Some(Err(e)) => e.into_response(),
        None => not_found_text(),
    }
}

/// What the kube-apiserver answers for a path outside the API it serves (an unknown group, or
/// no API path at all): Go's plain `404 page not found`, not a Status.
fn not_found_text() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// GET and LIST of a kind computed on read (ComponentStatus); any other verb is refused.
fn computed(
    res: &'static Resource,
    items: Vec<Value>,
    method: &Method,
    name: Option<&str>,
    q: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    if q_bool(q, "watch") {
        return Err(ApiError::VerbNotSupported {
            verb: "watch".into(),
            resource: res.qualified(),
        });
    }
    let warnings: Vec<String> = res
        .strategy
        .read_warning()
        .into_iter()
        .map(String::from)
        .collect();
    let items = match name {
        Some(n) => vec![
            items
                .into_iter()
                .find(|o| o["metadata"]["name"] == n)
                .ok_or_else(|| ApiError::not_found(&res.qualified(), n))?,
        ],
        None => items,
    };
    let incl = q.get("includeObject").map(String::as_str) == Some("Object");
    let body = match (as_table, name) {
        (true, _) => table::table(res, &items, "", incl),
        (false, Some(_)) => items.into_iter().next().unwrap_or_default(),
        (false, None) => json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": {},
            "items": items,
        }),
    };
    Ok(with_warnings(json_ok(&body), &warnings))
}

/// `/apis`: the served groups, then those of available service-backed APIServices.
async fn apis(State(state): State<ApiState>) -> Response {
    let (services, _) = state
        .objects
        .list(resources::api_services(), None)
        .unwrap_or_default();
    let extra: Vec<(String, String)> = services
        .iter()
        .filter(|s| s.pointer("/spec/service").is_some_and(|v| !v.is_null()))
        .filter(|s| {
            kinds::apiservice::available_condition(s).is_some_and(|c| c["status"] == "True")
        })
        .map(|s| {
            (
                s["spec"]["group"].as_str().unwrap_or_default().to_owned(),
                s["spec"]["version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(g, v)| !aggregator::is_local(g, v))
        .collect();
    json_ok(&discovery::group_list_with(&extra))
}

/// Parses a request body: JSON, Kubernetes protobuf (decoded into the JSON a JSON client would
/// send, so both take the same path), or YAML when the client says so (or when it is not JSON).
/// `expected` is what the URL takes, which a protobuf envelope's kind must name.
fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    expected: protobuf::Expected<'_>,
) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("protobuf") {
        return Ok(protobuf::decode(body, expected)?);
    }
    // CBOR bodies are answered 415, on which clients that try it fall back to JSON.
    if ct.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(ACCEPTED_BODIES.into()));
    }
    let base = ct.split(';').next().unwrap_or_default().trim();
    let known = base.is_empty()
        || base.ends_with("/json")
        || base.ends_with("+json")
        || base.ends_with("yaml");
    if !known {
        // `text/plain` and form bodies need no CORS preflight from a browser page: refused, as
        // Kubernetes refuses every type it has no decoder for.
        return Err(ApiError::UnsupportedMediaType(ACCEPTED_BODIES.into()));
    }
    let is_yaml = ct.contains("yaml") && !ct.contains("apply-patch+json");
    if !is_yaml && json_depth(body) > MAX_DEPTH {
        return Err(ApiError::BadRequest(format!(
            "the JSON body is nested more than {MAX_DEPTH} levels deep"
        )));
    }
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

/// The body media types, as a 415 lists them.
const ACCEPTED_BODIES: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// How deep a body may nest. Kubernetes objects need a few dozen levels at most; the limit stops
/// hostile bodies before any recursive decoder or patch walks them (YAML is bounded by the
/// decoder's own budget of 64).
pub const MAX_DEPTH: usize = 100;

/// The deepest nesting of arrays and objects in a JSON text, ignoring brackets inside strings.
/// Malformed text gets some number; the decoder reports what is wrong with it.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in body {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A boolean query parameter as Kubernetes reads one (`Convert_Slice_string_To_bool`): present
/// and not `0`, `f` or `false` in any case is true, so `watch=True` (the Python client's
/// spelling) and a bare `?watch` both watch.
pub(super) fn q_bool(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| query_bool(v))
}

/// The value of a present boolean query parameter; see [`q_bool`].
pub(super) fn query_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("f") || v.eq_ignore_ascii_case("false"))
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

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (the default).
    Warn,
    /// Reject the request with 400, naming each field.
    Strict,
}

fn field_validation(q: &HashMap<String, String>) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some(other) => Err(ApiError::BadRequest(format!(
            "fieldValidation: unsupported value {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

/// Checks `obj` for unknown fields: an error under Strict, warnings under Warn. (Unknown fields
/// are pruned before storing whatever the mode.)
fn check_fields(
    mode: FieldValidation,
    res: &Resource,
    obj: &Value,
) -> Result<Vec<String>, ApiError> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown = admission::unknown_fields(res, obj)?;
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == FieldValidation::Strict && !msgs.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        )));
    }
    Ok(msgs)
}

/// A response with `Warning` headers (RFC 7234 code 299), as kubectl prints them.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn part_of(sub: Option<&str>) -> Part {
    if sub.is_some() {
        Part::Status
    } else {
        Part::Main
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    PatchType::from_content_type(content_type(headers)).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml".into(),
        )
    })
}

/// DeleteOptions from the query and the body (the body wins, as in Kubernetes).
fn delete_options(
    res: &Resource,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: dry_run(q)?,
        ..Default::default()
    };
    if let Some(g) = q.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(Propagation::parse(p)?);
    }
    if q_bool(q, "orphanDependents") {
        opts.propagation = Some(Propagation::Orphan);
    }
    if !body.is_empty() {
        let b = parse_body(headers, body, protobuf::Expected::DeleteOptions(res))?;
        apply_delete_body(&mut opts, &b)?;
    }
    Ok(opts)
}

fn apply_delete_body(opts: &mut DeleteOptions, b: &Value) -> Result<(), ApiError> {
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
    if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation = Some(Propagation::parse(p)?);
    }
    if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        opts.propagation = Some(Propagation::Orphan);
    }
    Ok(())
}

fn list_options(
    q: &HashMap<String, String>,
    res: &Resource,
) -> Result<list::ListOptions, ApiError> {
    Ok(list::ListOptions {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), res)?,
        limit: match q.get("limit").filter(|l| !l.is_empty()) {
            Some(l) => Some(
                l.parse()
                    .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?,
            ),
            None => None,
        },
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    })
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
    if let Some(compute) = res.strategy.computed() {
        return computed(
            res,
            compute(objects),
            &method,
            t.name.as_deref(),
            &q,
            as_table,
        );
    }
    match (&method, t.name.as_deref(), t.sub.as_deref()) {
        (&Method::GET, None, None) => {
            let opts = list_options(&q, res)?;
            if q_bool(&q, "watch") {
                return watch_response(&state, res, ns, opts.labels, opts.fields, &q, as_table);
            }
            let page = list::list(objects, res, ns, &opts)?;
            let rev = page.revision.to_string();
            let mut meta = json!({"resourceVersion": rev});
            if let Some(c) = &page.continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(n) = page.remaining {
                meta["remainingItemCount"] = json!(n);
            }
            if as_table {
                let incl = q.get("includeObject").map(String::as_str) == Some("Object");
                let mut t = table::table(res, &page.items, &rev, incl);
                t["metadata"] = meta;
                return Ok(json_ok(&t));
            }
            Ok(json_ok(&json!({
                "kind": format!("{}List", res.kind),
                "apiVersion": res.api_version(),
                "metadata": meta,
                "items": page.items,
            })))
        }
        (&Method::DELETE, None, None) => {
            let opts = list_options(&q, res)?;
            let del = delete_options(res, &q, &headers, &body)?;
            let out = delete_collection(objects, res, ns, &opts, &del).await?;
            Ok(json_ok(&out))
        }
        (&Method::POST, None, None) => {
            let mode = field_validation(&q)?;
            let obj = parse_body(&headers, &body, protobuf::Expected::Object(res))?;
            let mut warnings = check_fields(mode, res, &obj)?;
            let created = objects.create(res, ns, obj, dry_run(&q)?).await?;
            warnings.extend(res.strategy.warnings(&created));
            Ok(with_warnings(
                json_status(StatusCode::CREATED, &created),
                &warnings,
            ))
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = objects.get(res, ns, name)?;
            if as_table {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let incl = q.get("includeObject").map(String::as_str) == Some("Object");
                return Ok(json_ok(&table::table(res, &[obj], &rv, incl)));
            }
            Ok(json_ok(&obj))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let mode = field_validation(&q)?;
            let obj = parse_body(&headers, &body, protobuf::Expected::Object(res))?;
            let mut warnings = check_fields(mode, res, &obj)?;
            let out = objects
                .update(res, ns, name, obj, part_of(sub), dry_run(&q)?)
                .await?;
            warnings.extend(res.strategy.warnings(&out));
            Ok(with_warnings(json_ok(&out), &warnings))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let kind = patch_type(&headers)?;
            let mode = field_validation(&q)?;
            let patch = parse_body(&headers, &body, protobuf::Expected::Patch)?;
            if kind == PatchType::Apply {
                let manager = q
                    .get("fieldManager")
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| {
                        ApiError::BadRequest(
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                        )
                    })?;
                let mut warnings = check_fields(mode, res, &patch)?;
                let (out, created) = apply::apply(
                    objects,
                    res,
                    ns,
                    name,
                    &patch,
                    manager,
                    q_bool(&q, "force"),
                    part_of(sub),
                    dry_run(&q)?,
                )
                .await?;
                warnings.extend(res.strategy.warnings(&out));
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                return Ok(with_warnings(json_status(code, &out), &warnings));
            }
            let mut warnings = if mode == FieldValidation::Ignore {
                Vec::new()
            } else {
                // Stored objects hold no unknown fields, so any in the result came from the patch.
                let mut preview = objects.get(res, ns, name)?;
                patch::apply_patch(kind, &mut preview, &patch)?;
                check_fields(mode, res, &preview)?
            };
            let out = objects
                .patch(res, ns, name, kind, &patch, part_of(sub), dry_run(&q)?)
                .await?;
            warnings.extend(res.strategy.warnings(&out));
            Ok(with_warnings(json_ok(&out), &warnings))
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_options(res, &q, &headers, &body)?;
            let warn = res
                .strategy
                .delete_warning()
                .filter(|_| opts.propagation.is_none())
                .map(str::to_string);
            let out = objects.delete(res, ns, name, &opts).await?;
            Ok(with_warnings(json_ok(&out), warn.as_slice()))
        }
        (&Method::POST, Some(name), Some("binding")) => {
            let b = parse_body(&headers, &body, protobuf::Expected::Binding)?;
            bind_pod(objects, ns, name, &b).await?;
            Ok(json_status(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::POST, Some(name), Some("eviction")) => {
            let b = if body.is_empty() {
                json!({})
            } else {
                parse_body(&headers, &body, protobuf::Expected::Eviction)?
            };
            subresources::evict(objects, ns, name, &b, dry_run(&q)?).await?;
            Ok(json_status(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (&Method::GET, Some(name), Some("scale")) => {
            Ok(json_ok(&subresources::get_scale(objects, res, ns, name)?))
        }
        (&Method::PUT, Some(name), Some("scale")) => {
            let b = parse_body(&headers, &body, protobuf::Expected::Scale)?;
            let out = subresources::put_scale(objects, res, ns, name, &b, dry_run(&q)?).await?;
            Ok(json_ok(&out))
        }
        (&Method::PATCH, Some(name), Some("scale")) => {
            let kind = patch_type(&headers)?;
            let p = parse_body(&headers, &body, protobuf::Expected::Patch)?;
            let out =
                subresources::patch_scale(objects, res, ns, name, kind, &p, dry_run(&q)?).await?;
            Ok(json_ok(&out))
        }
        (&Method::GET, Some(name), Some("log")) => {
            let pod = objects.get(res, ns, name)?;
            logs::proxy(objects, &pod, &q).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// DELETE on a collection: deletes every selected object as a DELETE of each would, and answers
/// with the list of what was deleted (or is now being deleted).
async fn delete_collection(
    objects: &Objects,
    res: &'static Resource,
    ns: Option<&str>,
    opts: &list::ListOptions,
    del: &DeleteOptions,
) -> Result<Value, ApiError> {
    if !res.strategy.delete_collection() {
        return Err(ApiError::MethodNotAllowed);
    }
    let page = list::list(objects, res, ns, opts)?;
    let mut out = Vec::new();
    for item in page.items {
        let name = item["metadata"]["name"].as_str().unwrap_or("");
        let item_ns = item["metadata"]["namespace"].as_str();
        match objects.delete(res, item_ns, name, del).await {
            Ok(v) => out.push(v),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": objects.store.revision().to_string()},
        "items": out,
    }))
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
        send_initial_events: q_bool(q, "sendInitialEvents"),
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

/// `pods/binding`: sets `spec.nodeName` once, and the PodScheduled condition with it, in one
/// write (the scheduler's).
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
    objects
        .modify(resources::pods(), ns, name, Part::Binding, |pod| {
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
            if !pod.get("status").is_some_and(Value::is_object) {
                pod["status"] = json!({});
            }
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
mod fuzz_tests;
#[cfg(test)]
mod tests;
