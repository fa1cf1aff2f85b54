//! The API through the router, as a client sees it: status codes, Status bodies, watches.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::store::{Store, StoreConfig, transport::LocalOnly};

async fn app() -> (Router, Objects) {
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
        if objects.ensure_system_namespaces().await.is_ok() {
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
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body.to_string()))
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
        "nodes",
        "namespaces",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let (_, v) = call(&app, "GET", "/apis", "", "").await;
    assert_eq!(v["groups"][0]["name"], "coordination.k8s.io");
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
    // binding (spec) → ADDED into the selector; PodScheduled status → MODIFIED; delete → DELETED
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{events:?}");

    let req = Request::get("/api/v1/pods?watch=true&resourceVersion=0&timeoutSeconds=1")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "no pods left to report");
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
