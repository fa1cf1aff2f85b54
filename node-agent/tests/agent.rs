//! The whole agent (`run_with`) against an in-process fake API server (an axum router used as
//! the kube client's service, no socket) and the fake CRI: registration, lease, the kube-rs pod
//! watcher, status writes and the deletion handshake.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use node_agent::cri::fake::FakeCri;
use node_agent::{AgentConfig, run_with};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the fake API server saw, and the watch stream a test feeds.
#[derive(Clone)]
struct FakeApi {
    seen: Arc<Mutex<Vec<(String, String, Value)>>>,
    watch: Arc<Mutex<Option<mpsc::UnboundedReceiver<Value>>>>,
    pod: Value,
}

impl FakeApi {
    fn record(&self, method: &str, path: &str, body: &[u8]) {
        let value = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.seen
            .lock()
            .expect("lock")
            .push((method.to_owned(), path.to_owned(), value));
    }

    fn seen(&self) -> Vec<(String, String, Value)> {
        self.seen.lock().expect("lock").clone()
    }
}

fn not_found() -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found"});
    (StatusCode::NOT_FOUND, axum::Json(status)).into_response()
}

fn with_rv(mut v: Value, rv: &str) -> Value {
    v["metadata"]["resourceVersion"] = json!(rv);
    v["metadata"]["uid"] = v["metadata"]["uid"]
        .clone()
        .as_str()
        .map_or(json!("uid-x"), |u| json!(u));
    v
}

fn fake_api(api: FakeApi) -> Router {
    Router::new()
        .route("/api/v1/nodes/{name}", get(|| async { not_found() }))
        .route(
            "/api/v1/nodes",
            post(|State(api): State<FakeApi>, body: Bytes| async move {
                api.record("POST", "nodes", &body);
                let node: Value = serde_json::from_slice(&body).unwrap_or_default();
                axum::Json(with_rv(node, "1"))
            }),
        )
        .route(
            "/api/v1/nodes/{name}/status",
            axum::routing::patch(|State(api): State<FakeApi>, body: Bytes| async move {
                api.record("PATCH", "nodes/status", &body);
                axum::Json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
            }),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
            get(|| async { not_found() }).put(
                |State(api): State<FakeApi>, body: Bytes| async move {
                    api.record("PUT", "lease", &body);
                    axum::Json(with_rv(
                        serde_json::from_slice(&body).unwrap_or_default(),
                        "3",
                    ))
                },
            ),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            post(|State(api): State<FakeApi>, body: Bytes| async move {
                api.record("POST", "lease", &body);
                axum::Json(with_rv(
                    serde_json::from_slice(&body).unwrap_or_default(),
                    "2",
                ))
            }),
        )
        .route(
            "/api/v1/pods",
            get(
                |State(api): State<FakeApi>, Query(q): Query<HashMap<String, String>>| async move {
                    api.record(
                        "GET",
                        &format!(
                            "pods?{}",
                            q.get("fieldSelector").cloned().unwrap_or_default()
                        ),
                        b"",
                    );
                    if q.get("watch").map(String::as_str) != Some("true") {
                        let list = json!({"apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": "10"}, "items": [api.pod.clone()]});
                        return axum::Json(list).into_response();
                    }
                    let rx = api.watch.lock().expect("lock").take();
                    let stream = futures::stream::unfold(rx, |rx| async move {
                        let mut rx = rx?;
                        let obj = rx.recv().await?;
                        let line = format!("{}\n", json!({"type": "MODIFIED", "object": obj}));
                        Some((Ok::<_, std::io::Error>(Bytes::from(line)), Some(rx)))
                    });
                    Body::from_stream(stream).into_response()
                },
            ),
        )
        .route(
            // The agent lists Services for the pods' environment variables: there are none.
            "/api/v1/services",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                if q.get("watch").map(String::as_str) == Some("true") {
                    let quiet = futures::stream::pending::<Result<Bytes, std::io::Error>>();
                    return Body::from_stream(quiet).into_response();
                }
                axum::Json(json!({"apiVersion": "v1", "kind": "ServiceList",
                    "metadata": {"resourceVersion": "10"}, "items": []}))
                .into_response()
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/status",
            axum::routing::patch(|State(api): State<FakeApi>, body: Bytes| async move {
                api.record("PATCH", "pods/status", &body);
                axum::Json(api.pod.clone())
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            axum::routing::delete(
                |State(api): State<FakeApi>,
                 Path((_ns, _name)): Path<(String, String)>,
                 method: Method,
                 body: Bytes| async move {
                    api.record(method.as_str(), "pod", &body);
                    axum::Json(api.pod.clone())
                },
            ),
        )
        .with_state(api)
}

async fn wait_for(
    api: &FakeApi,
    what: &str,
    pred: impl Fn(&(String, String, Value)) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(hit) = api.seen().into_iter().find(|s| pred(s)) {
            return hit.2;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}; saw {:#?}",
            api.seen().iter().map(|s| (&s.0, &s.1)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn runs_a_pod_reports_status_and_finishes_its_deletion() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "pod-uid-1", "resourceVersion": "5"},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox:1.36"}]},
    });
    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let api = FakeApi {
        seen: Arc::default(),
        watch: Arc::new(Mutex::new(Some(watch_rx))),
        pod: pod.clone(),
    };
    let client = kube::Client::new(fake_api(api.clone()), "default");
    let cri = Arc::new(FakeCri::new());
    let logs = tempfile::tempdir().expect("tempdir");
    let config = AgentConfig {
        node_name: "n1".to_owned(),
        cri_socket: "/nonexistent".into(),
        pod_log_dir: logs.path().to_owned(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        node_ip: Some("10.1.2.3".parse().expect("ip")),
        state_dir: Some(logs.path().join("agent")),
        cluster_dns: None,
        cluster_domain: "cluster.local".into(),
        resolv_conf: {
            let f = logs.path().join("resolv.conf");
            std::fs::write(&f, "nameserver 192.0.2.53\n").expect("resolv.conf");
            f
        },
        // No kernel rules from a unit test.
        service_proxy: false,
        pod_routes: false,
        node_labels: Default::default(),
        register_taints: Vec::new(),
    };
    let cancel = CancellationToken::new();
    let agent = tokio::spawn(run_with(config, client, cri.clone(), cancel.clone()));

    let node = wait_for(&api, "node create", |s| s.1 == "nodes").await;
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
    let status = wait_for(&api, "node status", |s| s.1 == "nodes/status").await;
    assert_eq!(
        status["status"]["nodeInfo"]["containerRuntimeVersion"],
        "fake://1.0.0"
    );
    assert_eq!(
        status["status"]["nodeInfo"]["kubeletVersion"],
        "v1.35.0-skiff"
    );
    let ready = status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .expect("ready condition");
    assert_eq!(ready["status"], "True");
    let lease = wait_for(&api, "lease create", |s| s.1 == "lease").await;
    assert_eq!(lease["spec"]["holderIdentity"], "n1");
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-x");

    let list = api
        .seen()
        .into_iter()
        .find(|s| s.1.starts_with("pods?"))
        .expect("pod list");
    assert_eq!(list.1, "pods?spec.nodeName=n1");
    let running = wait_for(&api, "pod status Running", |s| {
        s.1 == "pods/status" && s.2["status"]["phase"] == "Running"
    })
    .await;
    assert_eq!(running["status"]["podIP"], "10.88.0.5");
    assert_eq!(running["status"]["hostIP"], "10.1.2.3");
    assert_eq!(
        running["status"]["containerStatuses"][0]["containerID"],
        "fake://c2"
    );

    // The API server marks the pod for deletion; the agent stops it and deletes with grace 0.
    let mut deleting = pod.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    deleting["metadata"]["deletionGracePeriodSeconds"] = json!(7);
    deleting["metadata"]["resourceVersion"] = json!("11");
    watch_tx.send(deleting).expect("send watch event");
    let delete = wait_for(&api, "pod delete", |s| s.0 == "DELETE").await;
    assert_eq!(delete["gracePeriodSeconds"], 0);
    assert_eq!(delete["preconditions"]["uid"], "pod-uid-1");
    assert!(
        cri.calls().contains(&"StopContainer c2 7".to_owned()),
        "{:?}",
        cri.calls()
    );
    assert!(cri.state().sandboxes.is_empty());

    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("agent stops after cancel")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}
