//! Property tests of the decoding and patch paths through the router: arbitrary JSON, YAML,
//! protobuf and bytes as bodies, and random patches of every type, never answer 500, never panic
//! and never hang; deep nesting is a 400. Objects encoded as protobuf decode to their JSON.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

use super::protobuf::tests::{body, object_body};
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

    #[test]
    fn protobuf_bodies_never_fail_the_server(
        mutation in prop::sample::select(&["raw", "magic", "truncate", "flip", "envelope"][..]),
        bytes in prop::collection::vec(prop::arbitrary::any::<u8>(), 0..256),
        at in prop::arbitrary::any::<prop::sample::Index>(),
        kind in prop::sample::select(&[("v1", "ConfigMap"), ("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Binding"), ("policy/v1", "Eviction"), ("autoscaling/v1", "Scale"), ("meta.k8s.io/v1", "DeleteOptions"), ("v1", "Nope")][..]),
    ) {
        let good = object_body(resources::pods(), &serde_json::json!({"metadata": {"name": "q", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}), true);
        let pb = match mutation {
            "raw" => bytes,
            "magic" => [b"k8s\0".as_slice(), &bytes].concat(),
            "truncate" => good[..at.index(good.len())].to_vec(),
            "flip" => {
                let mut g = good.clone();
                let i = at.index(g.len());
                g[i] ^= bytes.first().copied().unwrap_or(0xff);
                g
            }
            _ => body(kind.0, kind.1, bytes),
        };
        let rt = runtime();
        rt.block_on(async {
            let app = app().await;
            let ct = protobuf::CONTENT_TYPE;
            for (method, uri) in [
                ("POST", "/api/v1/namespaces/default/pods"),
                ("PUT", "/api/v1/namespaces/default/pods/p"),
                ("PUT", "/api/v1/namespaces/default/pods/p/status"),
                ("POST", "/api/v1/namespaces/default/pods/p/binding"),
                ("POST", "/api/v1/namespaces/default/pods/p/eviction"),
                ("PUT", "/apis/apps/v1/namespaces/default/deployments/p/scale"),
                ("DELETE", "/api/v1/namespaces/default/configmaps/p"),
            ] {
                send(&app, method, uri, ct, pb.clone()).await;
            }
        });
    }
}

/// Removes empty maps and lists, which protobuf cannot tell from absent ones (nor Go's JSON,
/// which omits them), keeping the two-level `metadata` and `spec` objects.
fn drop_empty(v: &mut Value) {
    for part in ["metadata", "spec"] {
        if let Some(Value::Object(m)) = v.get_mut(part) {
            m.retain(|_, x| {
                !matches!(x, Value::Object(o) if o.is_empty())
                    && !matches!(x, Value::Array(a) if a.is_empty())
            });
        }
    }
    if let Value::Object(m) = v {
        m.retain(|_, x| !matches!(x, Value::Object(o) if o.is_empty()));
    }
}

/// Kubernetes objects with the scalars, maps, lists, bytes, IntOrStrings, Quantities, inlined
/// fields and zero pointers the protobuf decoder must get right.
fn k8s_object() -> impl Strategy<Value = (&'static str, Value)> {
    let name = "[a-z][a-z0-9-]{0,10}";
    let labels = prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..4);
    let configmap = (
        name,
        labels.clone(),
        prop::collection::btree_map("[a-zA-Z0-9._-]{1,10}", "\\PC{0,20}", 0..4),
        prop::collection::btree_map("[a-z]{1,10}", prop::collection::vec(prop::arbitrary::any::<u8>(), 0..16), 0..3),
    )
        .prop_map(|(name, labels, data, bin)| {
            use base64::Engine as _;
            let bin: serde_json::Map<String, Value> = bin
                .into_iter()
                .map(|(k, v)| (k, Value::String(base64::engine::general_purpose::STANDARD.encode(v))))
                .collect();
            let mut v = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name, "labels": labels}, "data": data, "binaryData": bin});
            drop_empty(&mut v);
            ("ConfigMap", v)
        });
    let port = (1i64..65536, prop_oneof![(1i64..65536).prop_map(Value::from), "[a-z]{1,8}".prop_map(Value::from)], prop::sample::select(&["TCP", "UDP"][..]))
        .prop_map(|(port, target, proto)| serde_json::json!({"port": port, "targetPort": target, "protocol": proto}));
    let service = (name, prop::collection::vec(port, 1..4), labels.clone(), prop::sample::select(&["ClusterIP", "NodePort"][..]))
        .prop_map(|(name, ports, selector, ty)| {
            let mut v = serde_json::json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": name}, "spec": {"ports": ports, "selector": selector, "type": ty}});
            drop_empty(&mut v);
            ("Service", v)
        });
    let container = (name, "[a-z:.0-9/]{1,20}", prop::collection::vec("\\PC{0,8}", 0..3), prop::option::of(0i64..3), prop::option::of("[1-9][0-9]{0,2}m"))
        .prop_map(|(name, image, args, run_as, cpu)| {
            let mut c = serde_json::json!({"name": name, "image": image});
            if !args.is_empty() {
                c["args"] = serde_json::json!(args);
            }
            if let Some(u) = run_as {
                c["securityContext"] = serde_json::json!({"runAsUser": u, "privileged": u == 1});
            }
            if let Some(cpu) = cpu {
                c["resources"] = serde_json::json!({"requests": {"cpu": cpu}});
                c["env"] = serde_json::json!([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
            }
            c
        });
    let deployment = (name, 0i64..4, prop::collection::vec(container, 1..3), prop::option::of(0i64..60), prop::option::of(name))
        .prop_map(|(name, replicas, containers, grace, volume)| {
            let mut spec = serde_json::json!({"containers": containers});
            if let Some(g) = grace {
                spec["terminationGracePeriodSeconds"] = serde_json::json!(g);
            }
            if let Some(v) = volume {
                spec["volumes"] = serde_json::json!([{"name": v, "configMap": {"name": v, "defaultMode": 420}}]);
            }
            ("Deployment", serde_json::json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}))
        });
    prop_oneof![configmap, service, deployment]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn protobuf_objects_decode_to_their_json((kind, obj) in k8s_object(), go_zeros in prop::arbitrary::any::<bool>()) {
        let res = resources::RESOURCES.iter().find(|r| r.kind == kind).unwrap();
        let pb = object_body(res, &obj, go_zeros);
        let got = protobuf::decode(&pb, protobuf::Expected::Object(res)).unwrap();
        prop_assert_eq!(got, obj);
        // The same bytes under another kind's URL are refused, not misread.
        let other = if kind == "ConfigMap" { resources::services() } else { resources::pods() };
        prop_assert!(protobuf::decode(&pb, protobuf::Expected::Object(other)).is_err());
    }
}
