//! Property tests of the decoding and patch paths through the router: arbitrary JSON, YAML and
//! bytes as bodies, and random patches of every type, never answer 500, never panic and never
//! hang; deep nesting is a 400.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn app() -> Router {
    let (app, objects) = super::tests::app().await;
    let pod = serde_json::json!({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    objects
        .create(resources::pods(), Some("default"), pod, false)
        .await
        .unwrap();
    app
}

async fn send(app: &Router, method: &str, uri: &str, ct: &str, body: Vec<u8>) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(req))
        .await
        .expect("the request hung")
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    status
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        prop::arbitrary::any::<bool>().prop_map(Value::Bool),
        prop::arbitrary::any::<i64>().prop_map(Value::from),
        prop::arbitrary::any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z$/~0-9.-]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("spec".to_string()),
                    Just("status".to_string()),
                    Just("containers".to_string()),
                    Just("name".to_string()),
                    Just("labels".to_string()),
                    Just("$patch".to_string()),
                    Just("op".to_string()),
                    Just("path".to_string()),
                    Just("value".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values shaped like the resource, so decoding gets past the first field.
fn object_like() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), "[a-z]{1,8}").prop_map(|(spec, meta, name)| {
        let mut meta = if meta.is_object() {
            meta
        } else {
            serde_json::json!({})
        };
        meta["name"] = Value::String(name);
        serde_json::json!({"metadata": meta, "spec": spec, "data": {"k": "v"}})
    })
}

const TARGETS: &[&str] = &[
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/services",
    "/apis/apps/v1/namespaces/default/deployments",
    "/apis/batch/v1/namespaces/default/jobs",
];

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_fail_the_server(
        v in prop_oneof![json_value(), object_like()],
        target in prop::sample::select(TARGETS),
        strict in prop::arbitrary::any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let app = app().await;
            let q = if strict { "?fieldValidation=Strict" } else { "" };
            send(&app, "POST", &format!("{target}{q}"), "application/json", v.to_string().into_bytes()).await;
            send(&app, "PUT", &format!("{target}/p{q}"), "application/json", v.to_string().into_bytes()).await;
        });
    }

    #[test]
    fn arbitrary_bytes_and_yaml_never_fail_the_server(
        bytes in prop::collection::vec(prop::arbitrary::any::<u8>(), 0..256),
        text in "[-:{}\\[\\] a-z0-9\n&*!|>'\"]{0,200}",
    ) {
        let rt = runtime();
        rt.block_on(async {
            let app = app().await;
            send(&app, "POST", "/api/v1/namespaces/default/configmaps", "application/json", bytes.clone()).await;
            send(&app, "POST", "/api/v1/namespaces/default/configmaps", "application/yaml", text.clone().into_bytes()).await;
            send(&app, "POST", "/api/v1/namespaces/default/configmaps", "", bytes).await;
            send(&app, "PATCH", "/api/v1/namespaces/default/pods/p?fieldManager=f", "application/apply-patch+yaml", text.into_bytes()).await;
        });
    }

    #[test]
    fn random_patches_never_fail_the_server(
        patch in json_value(),
        ops in prop::collection::vec((prop::sample::select(&["add", "remove", "replace", "move", "copy", "test", "bogus"][..]), "(/[a-z0-9~-]{0,6}){0,4}", json_value()), 0..5),
        ct in prop::sample::select(PATCH_TYPES),
        sub in prop::sample::select(&["", "/status"][..]),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let app = app().await;
            let uri = format!("/api/v1/namespaces/default/pods/p{sub}?fieldManager=f");
            send(&app, "PATCH", &uri, ct, patch.to_string().into_bytes()).await;
            let ops: Vec<Value> = ops
                .into_iter()
                .map(|(op, path, value)| serde_json::json!({"op": op, "path": path, "from": "/metadata", "value": value}))
                .collect();
            send(&app, "PATCH", &uri, "application/json-patch+json", Value::Array(ops).to_string().into_bytes()).await;
        });
    }

    #[test]
    fn deep_nesting_is_a_bad_request(depth in 101usize..20_000, open in prop::sample::select(&["[", "{\"a\":"][..])) {
        let rt = runtime();
        rt.block_on(async {
            let app = app().await;
            let close = if open == "[" { "]" } else { "}" };
            let body = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let s = send(&app, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body.clone().into_bytes()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            let s = send(&app, "PATCH", "/api/v1/namespaces/default/pods/p", "application/merge-patch+json", body.into_bytes()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
        });
    }
}
