//! The API through the router, as a client sees it: status codes, Status bodies, watches.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::store::{Store, StoreConfig, transport::LocalOnly};

pub(super) async fn app() -> (Router, Objects) {
    let cancel = CancellationToken::new();
    let store = Store::start(
        StoreConfig::single(None),
        Arc::new(LocalOnly),
        cancel.clone(),
    )
    .unwrap()
    .store;
    let objects = Objects::new(store);
    for _ in 0..100 {
        if objects.ensure_system_objects(None).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (
        router(ApiState {
            objects: objects.clone(),
            cancel,
        }),
        objects,
    )
}

async fn call(app: &Router, method: &str, uri: &str, ct: &str, body: &str) -> (StatusCode, Value) {
    call_bytes(app, method, uri, ct, body.as_bytes().to_vec()).await
}

async fn call_bytes(
    app: &Router,
    method: &str,
    uri: &str,
    ct: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"busybox:1.36"}]}}"#;

#[tokio::test]
async fn pod_create_get_conflict_and_defaults() {
    let (app, _) = app().await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"]["restartPolicy"], "Always");
    assert_eq!(
        v["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert!(v["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert_eq!(v["metadata"]["generation"], 1);
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "AlreadyExists");

    let (s, v) = call(&app, "GET", "/api/v1/namespaces/default/pods/web", "", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metadata"]["resourceVersion"], rv.as_str());

    // A stale resourceVersion on update is a 409.
    let mut stale = v.clone();
    stale["metadata"]["labels"]["x"] = json!("y");
    stale["metadata"]["resourceVersion"] = json!("1");
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/namespaces/default/pods/web",
        "application/json",
        &stale.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["reason"], "Conflict");

    let (s, v) = call(&app, "GET", "/api/v1/namespaces/default/pods/nope", "", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "pods \"nope\" not found");
}

#[tokio::test]
async fn bad_pods_get_422_with_field_paths_and_nothing_is_stored() {
    let (app, objects) = app().await;
    let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"containers":[{"name":"c"}]}}"#;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        bad,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        v["message"],
        "Pod \"bad\" is invalid: spec.containers[0].image: Required value"
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/namespaces/nowhere/pods",
        "application/json",
        POD,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        r#"{"kind":"Pod","metadata":{"name":"t"},"spec":{"containers":"x"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("spec.containers"),
        "{v}"
    );
    assert_eq!(objects.list(resources::pods(), None).unwrap().0.len(), 0);
}

#[tokio::test]
async fn discovery_and_tables() {
    let (app, _) = app().await;
    let (s, v) = call(&app, "GET", "/api/v1", "", "").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "pods",
        "pods/status",
        "pods/binding",
        "pods/log",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "nodes",
        "namespaces",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let (_, v) = call(&app, "GET", "/apis", "", "").await;
    let groups: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for g in ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"] {
        assert!(groups.contains(&g), "{g} missing");
    }
    let (s, _) = call(&app, "GET", "/apis/coordination.k8s.io/v1", "", "").await;
    assert_eq!(s, StatusCode::OK);
    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    let req = Request::get("/api/v1/namespaces/default/pods")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["kind"], "Table");
    let cols: Vec<&str> = v["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(v["rows"][0]["cells"][0], "web");
    assert_eq!(v["rows"][0]["cells"][1], "0/1");
    assert_eq!(v["rows"][0]["cells"][2], "Pending");
}

#[tokio::test]
async fn binding_status_and_graceful_delete() {
    let (app, _) = app().await;
    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/binding",
        "application/json",
        r#"{"target":{"kind":"Node","name":"n1"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/binding",
        "application/json",
        r#"{"target":{"kind":"Node","name":"n2"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Status writes ignore spec; main writes ignore status.
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/pods/web/status",
        "application/merge-patch+json",
        r#"{"spec":{"nodeName":"evil"},"status":{"phase":"Running"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["nodeName"], "n1");
    assert_eq!(v["status"]["phase"], "Running");
    let (_, v) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/pods/web",
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":"1"}},"status":{"phase":"Failed"}}"#,
    )
    .await;
    assert_eq!(v["status"]["phase"], "Running");
    assert_eq!(v["metadata"]["labels"]["x"], "1");
    // A scheduled pod is deleted gracefully; its node finishes the deletion with grace 0.
    let (s, v) = call(
        &app,
        "DELETE",
        "/api/v1/namespaces/default/pods/web",
        "application/json",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 30);
    let (s, _) = call(&app, "GET", "/api/v1/namespaces/default/pods/web", "", "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &app,
        "DELETE",
        "/api/v1/namespaces/default/pods/web",
        "application/json",
        r#"{"gracePeriodSeconds":0}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "GET", "/api/v1/namespaces/default/pods/web", "", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn watch_streams_events_after_a_resource_version_with_selector_transitions() {
    let (app, _) = app().await;
    let (_, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    let rv = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let req = Request::get(format!("/api/v1/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dn1&timeoutSeconds=2"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/binding",
        "application/json",
        r#"{"target":{"name":"n1"}}"#,
    )
    .await;
    call(
        &app,
        "DELETE",
        "/api/v1/namespaces/default/pods/web",
        "application/json",
        r#"{"gracePeriodSeconds":0}"#,
    )
    .await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let events: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // binding (nodeName and PodScheduled in one write) → ADDED into the selector; delete → DELETED
    assert_eq!(types, ["ADDED", "DELETED"], "{events:?}");
    assert_eq!(
        events[0]["object"]["status"]["conditions"][0]["type"],
        "PodScheduled"
    );

    let req = Request::get("/api/v1/pods?watch=true&resourceVersion=0&timeoutSeconds=1")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "no pods left to report");
}

/// kube-rs's streaming-list watcher waited for the `initial-events-end` bookmark, which came
/// only with the first periodic bookmark a minute later.
#[tokio::test]
async fn streaming_list_ends_with_a_bookmark_at_once() {
    use futures::StreamExt as _;
    let (app, _) = app().await;
    let (_, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    let rv = v["metadata"]["resourceVersion"].as_str().unwrap();
    // Whatever the resourceVersion, the initial events are the current state.
    for from in ["0", rv] {
        let req = Request::get(format!("/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={from}&timeoutSeconds=60"))
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body().into_data_stream();
        let mut buf = Vec::new();
        let mut events: Vec<Value> = Vec::new();
        while events.len() < 2 {
            let chunk = tokio::time::timeout(Duration::from_secs(2), body.next())
                .await
                .expect("the initial events and their bookmark come at once")
                .unwrap()
                .unwrap();
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                events.push(serde_json::from_slice(&line).unwrap());
            }
        }
        assert_eq!(events[0]["type"], "ADDED", "{events:?}");
        assert_eq!(events[0]["object"]["metadata"]["name"], "web");
        assert_eq!(events[1]["type"], "BOOKMARK", "{events:?}");
        assert_eq!(
            events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (app, _) = app().await;
    let (s, v) = call(&app, "GET", "/api/v1/widgets", "", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["kind"], "Status");
    let (s, _) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/pods/x",
        "text/plain",
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _) = call(
        &app,
        "DELETE",
        "/api/v1/namespaces/default",
        "application/json",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// The raw answer: status, headers and body text.
async fn raw(
    app: &Router,
    method: &str,
    uri: &str,
    ct: &str,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Error bodies byte for byte as the kube-apiserver writes them: Go's field order, the
/// trailing newline, `"details":{}` where Kubernetes has an empty one, the group in Invalid.
#[tokio::test]
async fn errors_are_written_as_kubernetes_writes_them() {
    let (app, _) = app().await;
    let (s, h, text) = raw(&app, "GET", "/api/v1/widgets", "", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        text,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"
    );
    // Outside the API (no such path, a group nothing serves): Go's plain text.
    for path in ["/nope", "/apis/unknown.example.com/v1/things"] {
        let (s, h, text) = raw(&app, "GET", path, "", vec![]).await;
        assert_eq!(
            (s, text.as_str()),
            (StatusCode::NOT_FOUND, "404 page not found\n"),
            "{path}"
        );
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    }
    let (s, _, text) = raw(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"metadata":{"name":"dup"}}"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    let (_, _, text) = raw(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"metadata":{"name":"dup"}}"#.to_vec(),
    )
    .await;
    assert_eq!(
        text,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"dup\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"dup\",\"kind\":\"configmaps\"},\"code\":409}\n"
    );
    // Invalid names the group-kind, and each repeated message once.
    let bad = br#"{"metadata":{"name":"web"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c"}]}}}}"#;
    let (s, _, text) = raw(
        &app,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        bad.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text.contains("\"message\":\"Deployment.apps \\\"web\\\" is invalid: spec.template.spec.containers[0].image: Required value\"")
            && text.contains("\"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"Deployment\",\"causes\":["),
        "{text}"
    );
    // A body type no decoder takes, and a body over 3 MiB.
    let (s, _, _) = raw(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "text/plain",
        br#"{"metadata":{"name":"x"}}"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, text) = raw(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        vec![b' '; 3 * 1024 * 1024 + 1],
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        text.contains("\"message\":\"Request entity too large: limit is 3145728\""),
        "{text}"
    );
    // A list at a resourceVersion the store has not reached: the cause client-go looks for.
    let (s, h, text) = raw(
        &app,
        "GET",
        "/api/v1/configmaps?resourceVersion=999999999",
        "",
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(h["retry-after"], "1");
    assert!(text.contains("\"details\":{\"causes\":[{\"reason\":\"ResourceVersionTooLarge\",\"message\":\"Too large resource version\"}],\"retryAfterSeconds\":1}"), "{text}");
    // A failed JSON patch test.
    let (s, _, text) = raw(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/dup",
        "application/json-patch+json",
        br#"[{"op":"test","path":"/metadata/name","value":"other"}]"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text.contains("\"reason\":\"Invalid\",\"details\":{},\"code\":422"),
        "{text}"
    );
    // Watching a kind that cannot be watched.
    let (s, _, text) = raw(&app, "GET", "/api/v1/componentstatuses?watch=1", "", vec![]).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        text.contains(
            "\"message\":\"watch is not supported on resources of kind \\\"componentstatuses\\\"\""
        ),
        "{text}"
    );
}

const DEPLOY: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"busybox:1.36"}]}}}}"#;

#[tokio::test]
async fn workloads_default_validate_and_scale() {
    let (app, _) = app().await;
    let (s, v) = call(
        &app,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        DEPLOY,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(
        v["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(v["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    let bad = DEPLOY.replace(r#""labels":{"app":"web"}"#, r#""labels":{"app":"db"}"#);
    let (s, v) = call(
        &app,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        &bad.replace("\"web\"}", "\"web2\"}"),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
    let (s, v) = call(
        &app,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        "application/merge-patch+json",
        r#"{"spec":{"replicas":3}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["kind"], "Scale");
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(v["status"]["selector"], "app=web");
    let (_, v) = call(
        &app,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        "",
        "",
    )
    .await;
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(v["metadata"]["generation"], 2);
    // A status write does not bump the generation.
    let (_, v) = call(
        &app,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/status",
        "application/merge-patch+json",
        r#"{"status":{"replicas":3}}"#,
    )
    .await;
    assert_eq!(v["metadata"]["generation"], 2);
    let (_, v) = call(&app, "GET", "/apis/apps/v1", "", "").await;
    let deploy = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap()
        .clone();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["categories"], json!(["all"]));
}

#[tokio::test]
async fn services_get_cluster_ips_and_keep_them() {
    let (app, _) = app().await;
    let svc = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"selector":{"app":"web"},"ports":[{"port":80}]}}"#;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        svc,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ip = v["spec"]["clusterIP"].as_str().unwrap().to_string();
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert!(
        octets[0] == 10 && (96..112).contains(&octets[1]),
        "{ip} is in 10.96.0.0/12"
    );
    assert_eq!(v["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(v["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(v["spec"]["type"], "ClusterIP");
    // A replacement without the IP keeps it; changing it is refused.
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/namespaces/default/services/web",
        "application/json",
        svc,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["clusterIP"], ip.as_str());
    let (s, _) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/services/web",
        "application/merge-patch+json",
        r#"{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let headless = svc.replace(
        "\"web\"},\"spec\":{",
        "\"hl\"},\"spec\":{\"clusterIP\":\"None\",",
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        &headless,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"]["clusterIP"], "None");
    let taken = svc.replace(
        "\"web\"},\"spec\":{",
        &format!("\"dup\"}},\"spec\":{{\"clusterIP\":\"{ip}\","),
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        &taken,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn the_cluster_dns_service_is_made_once_and_kept_across_restarts() {
    let (app, objects) = app().await;
    let ip = std::net::Ipv4Addr::new(10, 96, 0, 10);
    objects
        .ensure_system_objects(Some(ip))
        .await
        .expect("first start");
    // A restart runs it again: the Service is there, its address held by it.
    objects
        .ensure_system_objects(Some(ip))
        .await
        .expect("second start");
    let (s, v) = call(
        &app,
        "GET",
        "/api/v1/namespaces/kube-system/services/kube-dns",
        "",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(v["spec"]["ports"][0]["name"], "dns");
    assert_eq!(v["spec"]["ports"][1]["protocol"], "TCP");
}

#[tokio::test]
async fn node_ports_are_allocated_kept_refused_and_given_back() {
    let (app, objects) = app().await;
    let post = |body: String| {
        let app = app.clone();
        async move {
            call(
                &app,
                "POST",
                "/api/v1/namespaces/default/services",
                "application/json",
                &body,
            )
            .await
        }
    };
    let svc = |name: &str, ty: &str, node_port: &str| {
        format!(
            r#"{{"metadata":{{"name":"{name}"}},"spec":{{"type":"{ty}","selector":{{"app":"w"}},"ports":[{{"name":"http","port":80{node_port}}},{{"name":"dns","port":53,"protocol":"UDP"}}]}}}}"#
        )
    };
    let (s, v) = post(svc("a", "NodePort", "")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let p0 = v["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let p1 = v["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&p0) && (30000..=32767).contains(&p1) && p0 != p1);
    assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
    // A port in use is a 422 naming the field, as Kubernetes answers.
    let (s, v) = post(svc("b", "NodePort", &format!(r#","nodePort":{p0}"#))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {p0}: provided port is already allocated"
        )),
        "{v}"
    );
    let (s, v) = post(svc("c", "NodePort", r#","nodePort":80"#)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("30000-32767"),
        "{v}"
    );
    // A failed create holds nothing: neither the cluster IP nor the other port it reserved.
    let before = objects.store.list("/registry/skiff/").0.len();
    let (s, _) = post(svc("d", "NodePort", &format!(r#","nodePort":{p1}"#))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(objects.store.list("/registry/skiff/").0.len(), before);
    // A ClusterIP service may not name one.
    let (s, _) = post(svc("e", "ClusterIP", r#","nodePort":31000"#)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // A replacement keeps the ports; a change to ClusterIP gives them back.
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/namespaces/default/services/a",
        "application/json",
        &svc("a", "NodePort", ""),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["ports"][0]["nodePort"], p0);
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/services/a",
        "application/merge-patch+json",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["spec"]["ports"][0].get("nodePort").is_none(), "{v}");
    assert!(v["spec"].get("externalTrafficPolicy").is_none(), "{v}");
    let (s, v) = post(svc("b", "NodePort", &format!(r#","nodePort":{p0}"#))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Deleting the service frees its ports.
    let (s, _) = call(
        &app,
        "DELETE",
        "/api/v1/namespaces/default/services/b",
        "",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = post(svc("f", "NodePort", &format!(r#","nodePort":{p0}"#))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A LoadBalancer keeping client addresses gets a health check port.
    let lb = r#"{"metadata":{"name":"lb"},"spec":{"type":"LoadBalancer","externalTrafficPolicy":"Local","selector":{"app":"w"},"ports":[{"port":80}]}}"#;
    let (s, v) = post(lb.to_string()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["spec"]["healthCheckNodePort"].as_u64().is_some(), "{v}");
    assert!(v["spec"]["ports"][0]["nodePort"].as_u64().is_some(), "{v}");
}

#[tokio::test]
async fn pagination_deletecollection_and_eviction() {
    let (app, objects) = app().await;
    for i in 0..5 {
        let body = format!(
            r#"{{"metadata":{{"name":"c{i}","labels":{{"n":"{}"}}}},"data":{{}}}}"#,
            i % 2
        );
        let (s, _) = call(
            &app,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &body,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut first_rv = None;
    loop {
        let uri = format!("/api/v1/namespaces/default/configmaps?limit=2&continue={cont}");
        let (s, v) = call(&app, "GET", &uri, "", "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        first_rv.get_or_insert(v["metadata"]["resourceVersion"].clone());
        assert_eq!(
            v["metadata"]["resourceVersion"],
            *first_rv.as_ref().unwrap()
        );
        names.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match v["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    let (s, _) = call(
        &app,
        "GET",
        "/api/v1/namespaces/default/configmaps?limit=2&continue=garbage",
        "",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call(
        &app,
        "DELETE",
        "/api/v1/namespaces/default/configmaps?labelSelector=n%3D0",
        "",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    let cm = resources::find("", "v1", "configmaps").unwrap();
    assert_eq!(objects.list(cm, None).unwrap().0.len(), 2);

    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/eviction",
        "application/json",
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = call(&app, "GET", "/api/v1/namespaces/default/pods/web", "", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an unscheduled pod goes at once");
}

#[tokio::test]
async fn eviction_honours_the_disruption_budget() {
    let (app, objects) = app().await;
    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    // Running and Ready on a node, as an agent would report it.
    objects
        .modify(
            resources::pods(),
            Some("default"),
            "web",
            Part::Status,
            |p| {
                p["status"] = json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]});
                Ok(())
            },
        )
        .await
        .unwrap();
    let pod = objects
        .get(resources::pods(), Some("default"), "web")
        .unwrap();
    let labels = pod["metadata"]["labels"].clone();
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}});
    let (s, v) = call(
        &app,
        "POST",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        "application/json",
        &pdb.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"]["disruptionsAllowed"], 0);
    let evict = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web"}}"#;
    // Not yet seen by the disruption controller: still being processed.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/eviction",
        "application/json",
        evict,
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["details"]["causes"][0]["reason"], "DisruptionBudget");
    crate::controllers::disruption::reconcile(&objects)
        .await
        .unwrap();
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/eviction",
        "application/json",
        evict,
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(
        v["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        v["details"]["causes"][0]["message"],
        "The disruption budget keep needs 1 healthy pods and has 1 currently"
    );
    // With room in the budget the eviction takes a disruption and marks the pod.
    objects
        .modify(
            resources::pod_disruption_budgets(),
            Some("default"),
            "keep",
            Part::Main,
            |b| {
                b["spec"]["minAvailable"] = json!(0);
                Ok(())
            },
        )
        .await
        .unwrap();
    crate::controllers::disruption::reconcile(&objects)
        .await
        .unwrap();
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/eviction",
        "application/json",
        evict,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let b = objects
        .get(resources::pod_disruption_budgets(), Some("default"), "keep")
        .unwrap();
    assert!(b["status"]["disruptedPods"]["web"].is_string(), "{b}");
    assert_eq!(b["status"]["disruptionsAllowed"], 0);
}

#[tokio::test]
async fn field_validation_strict_warn_and_prune() {
    let (app, _) = app().await;
    let body = r#"{"metadata":{"name":"c","bogus":1},"data":{"a":"b"},"extra":{"x":1}}"#;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        body,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("unknown field \"metadata.bogus\""), "{msg}");
    assert!(msg.contains("unknown field \"extra\""), "{msg}");
    let req = Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let warnings: Vec<_> = resp.headers().get_all("warning").iter().collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v.get("extra").is_none(), "unknown fields are dropped: {v}");
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c?fieldValidation=Strict",
        "application/merge-patch+json",
        r#"{"spec":{"x":1}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &deep,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn server_side_apply_creates_owns_and_conflicts() {
    let (app, _) = app().await;
    let cfg = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: "1"
  b: "2"
"#;
    let uri = "/api/v1/namespaces/default/configmaps/cfg?fieldManager=alice";
    let (s, v) = call(&app, "PATCH", uri, "application/apply-patch+yaml", cfg).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["managedFields"][0]["manager"], "alice");
    assert_eq!(v["metadata"]["managedFields"][0]["operation"], "Apply");
    assert!(v["metadata"]["managedFields"][0]["fieldsV1"]["f:data"]["f:a"].is_object());
    let (s, v) = call(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/cfg",
        "application/apply-patch+yaml",
        cfg,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "fieldManager is required: {v}");
    let bob = cfg.replace("a: \"1\"\n  b: \"2\"", "a: \"9\"");
    let bob_uri = "/api/v1/namespaces/default/configmaps/cfg?fieldManager=bob";
    let (s, v) = call(&app, "PATCH", bob_uri, "application/apply-patch+yaml", &bob).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], ".data.a");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"alice\"")
    );
    let forced = format!("{bob_uri}&force=true");
    let (s, v) = call(&app, "PATCH", &forced, "application/apply-patch+yaml", &bob).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["a"], "9");
    // Alice re-applies without `a`: she no longer owns it, so it stays; dropping `b` removes it.
    let alice2 = cfg.replace("  a: \"1\"\n  b: \"2\"\n", "  c: \"3\"\n");
    let (s, v) = call(&app, "PATCH", uri, "application/apply-patch+yaml", &alice2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"], json!({"a": "9", "c": "3"}));
}

fn kubectl_create_fixture(name: &str) -> Vec<u8> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/testdata/kubectl-create");
    std::fs::read(dir.join(format!("{name}.pb"))).unwrap()
}

#[tokio::test]
async fn protobuf_bodies_take_the_json_path() {
    use crate::api::protobuf::{
        self as pbuf,
        tests::{body, encode_object, object_body},
    };
    let (app, _) = app().await;
    let pb = pbuf::CONTENT_TYPE;
    // kubectl 1.33's own bodies, with the query it sends.
    for (name, uri) in [
        ("configmap", "/api/v1/namespaces/default/configmaps"),
        ("secret", "/api/v1/namespaces/default/secrets"),
        ("deployment", "/apis/apps/v1/namespaces/default/deployments"),
        ("service", "/api/v1/namespaces/default/services"),
        ("job", "/apis/batch/v1/namespaces/default/jobs"),
        ("namespace", "/api/v1/namespaces"),
        (
            "serviceaccount",
            "/api/v1/namespaces/default/serviceaccounts",
        ),
    ] {
        let uri = format!("{uri}?fieldManager=kubectl-create&fieldValidation=Strict");
        let (s, v) = call_bytes(&app, "POST", &uri, pb, kubectl_create_fixture(name)).await;
        assert_eq!(s, StatusCode::CREATED, "{name}: {v}");
    }
    let (_, v) = call(
        &app,
        "GET",
        "/api/v1/namespaces/default/configmaps/c",
        "",
        "",
    )
    .await;
    assert_eq!(v["data"], json!({"a": "b", "empty": ""}));
    let (_, v) = call(&app, "GET", "/api/v1/namespaces/default/secrets/s", "", "").await;
    assert_eq!(v["data"], json!({"k": "dg==", "bin": "Af8="}));
    let (_, v) = call(
        &app,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/d",
        "",
        "",
    )
    .await;
    assert_eq!(v["spec"]["replicas"], 0);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let (_, v) = call(&app, "GET", "/api/v1/namespaces/default/services/s", "", "").await;
    assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        v["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{v}"
    );

    // A ConfigMap posted to secrets, a broken magic, a compressed body.
    let cm = kubectl_create_fixture("configmap");
    let (s, v) = call_bytes(
        &app,
        "POST",
        "/api/v1/namespaces/default/secrets",
        pb,
        cm.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("holds a ConfigMap"),
        "{v}"
    );
    let (s, v) = call_bytes(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        pb,
        cm[1..].to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("magic"), "{v}");
    let (s, _) = call_bytes(
        &app,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        pb,
        cm[..cm.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call_bytes(
        &app,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c",
        pb,
        cm.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Subresources and DeleteOptions, each with what the URL takes.
    let pod: Value = serde_json::from_str(POD).unwrap();
    let raw = object_body(resources::pods(), &pod, true);
    let (s, v) = call_bytes(&app, "POST", "/api/v1/namespaces/default/pods", pb, raw).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(
        v["spec"].get("hostNetwork").is_none(),
        "Go's zeros are dropped: {v}"
    );
    let scale = ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale");
    let scale_uri = "/apis/apps/v1/namespaces/default/deployments/d/scale";
    let delete = (
        "meta.k8s.io/v1",
        "DeleteOptions",
        "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    );
    let steps = [
        (
            "PUT",
            scale_uri,
            scale,
            json!({"spec": {"replicas": 2}}),
            200,
        ),
        // Go leaves the omitempty zero out, so the decoded Scale has no replicas: 0.
        (
            "PUT",
            scale_uri,
            scale,
            json!({"spec": {"replicas": 0}}),
            200,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web/binding",
            ("v1", "Binding", "k8s.io.api.core.v1.Binding"),
            json!({"metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}}),
            201,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web/eviction",
            ("policy/v1", "Eviction", "k8s.io.api.policy.v1.Eviction"),
            json!({"metadata": {"name": "web"}, "deleteOptions": {"gracePeriodSeconds": 30}}),
            201,
        ),
        // The precondition comes through.
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps/c",
            delete,
            json!({"preconditions": {"uid": "not-the-uid"}}),
            409,
        ),
    ];
    for (method, uri, (api_version, kind, message), obj, want) in steps {
        let raw = body(api_version, kind, encode_object(message, &obj, true));
        let (s, v) = call_bytes(&app, method, uri, pb, raw).await;
        assert_eq!(s.as_u16(), want, "{method} {uri} {obj}: {v}");
        if uri == scale_uri {
            assert_eq!(v["spec"]["replicas"], obj["spec"]["replicas"], "{v}");
        }
    }
    let (_, v) = call(&app, "GET", "/api/v1/namespaces/default/pods/web", "", "").await;
    assert_eq!(v["spec"]["nodeName"], "n1");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
}

#[tokio::test]
async fn exec_is_refused_before_the_node_is_asked() {
    let (app, _) = app().await;
    let exec = "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true";
    let (s, v) = call(&app, "GET", exec, "", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        POD,
    )
    .await;
    // Not scheduled yet: no node to proxy to.
    let (s, v) = call(&app, "POST", exec, "", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("does not have a host"),
        "{v}"
    );
    // A container the pod does not have.
    call(
        &app,
        "POST",
        "/api/v1/namespaces/default/pods/web/binding",
        "application/json",
        r#"{"target":{"kind":"Node","name":"n1"}}"#,
    )
    .await;
    let (s, v) = call(
        &app,
        "GET",
        "/api/v1/namespaces/default/pods/web/attach?container=nope",
        "",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("nope"), "{v}");
}

#[tokio::test]
async fn priority_classes_give_pods_their_priority() {
    let (app, _) = app().await;
    let j = "application/json";
    let (s, list) = call(
        &app,
        "GET",
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        j,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["system-cluster-critical", "system-node-critical"]);
    let class = |name: &str, value: i64, default: bool| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "globalDefault": default})
        .to_string()
    };
    let url = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let (s, c) = call(&app, "POST", url, j, &class("high", 1000, false)).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["preemptionPolicy"], "PreemptLowerPriority");
    let (s, e) = call(&app, "POST", url, j, &class("huge", 2_000_000_000, false)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["message"].as_str().unwrap().contains("1000000000"), "{e}");
    let (s, e) = call(&app, "POST", url, j, &class("system-mine", 1, false)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, _) = call(&app, "POST", url, j, &class("low", -5, true)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = call(&app, "POST", url, j, &class("other", 1, true)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        e["message"],
        "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass low is already marked as default. Only one default can exist"
    );
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("{url}/high"),
        "application/merge-patch+json",
        r#"{"value": 5}"#,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, e) = call(
        &app,
        "DELETE",
        &format!("{url}/system-node-critical"),
        j,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");

    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, extra: Value| {
        let mut p: Value = serde_json::from_str(POD).unwrap();
        p["metadata"]["name"] = json!(name);
        for (k, v) in extra.as_object().unwrap() {
            p["spec"][k] = v.clone();
        }
        p.to_string()
    };
    let (s, p) = call(
        &app,
        "POST",
        pods,
        j,
        &pod("a", json!({"priorityClassName": "high"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(
        (
            p["spec"]["priority"].as_i64(),
            p["spec"]["preemptionPolicy"].as_str()
        ),
        (Some(1000), Some("PreemptLowerPriority"))
    );
    // No class: the global default's.
    let (_, p) = call(&app, "POST", pods, j, &pod("b", json!({}))).await;
    assert_eq!(
        (
            p["spec"]["priorityClassName"].as_str(),
            p["spec"]["priority"].as_i64()
        ),
        (Some("low"), Some(-5))
    );
    let (s, e) = call(
        &app,
        "POST",
        pods,
        j,
        &pod("c", json!({"priorityClassName": "nope"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        e["message"],
        "pods \"c\" is forbidden: no PriorityClass with name nope was found"
    );
    let (s, e) = call(
        &app,
        "POST",
        pods,
        j,
        &pod("d", json!({"priorityClassName": "high", "priority": 7})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("must not be provided in pod spec"),
        "{e}"
    );
}
