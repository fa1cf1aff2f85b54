//! The workload controllers and the garbage collector against an in-memory store, driven pass by
//! pass (no timers), with pods made Ready by hand where a node agent would.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::{DeleteOptions, Objects, Part, Propagation, resources};
use crate::store::{Store, StoreConfig, transport::LocalOnly};

async fn objects() -> Objects {
    let store = Store::start(
        StoreConfig::single(None),
        Arc::new(LocalOnly),
        CancellationToken::new(),
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
    objects
}

async fn passes(objects: &Objects, n: usize) {
    for _ in 0..n {
        gc::reconcile(objects).await.unwrap();
        deployment::reconcile(objects).await.unwrap();
        replicaset::reconcile(objects).await.unwrap();
        daemonset::reconcile(objects).await.unwrap();
        job::reconcile(objects).await.unwrap();
        endpoints::reconcile(objects).await.unwrap();
    }
}

fn pods(objects: &Objects) -> Vec<Value> {
    objects.list(resources::pods(), None).unwrap().0
}

/// What a node agent would do: the pod runs and is Ready (or ends with `phase`).
async fn set_phase(objects: &Objects, pod: &Value, phase: &str) {
    let ip = format!(
        "10.244.0.{}",
        pod["metadata"]["name"].as_str().unwrap().len()
    );
    let ready = phase == "Running";
    objects
        .modify(
            resources::pods(),
            Some("default"),
            name(pod),
            Part::Status,
            |p| {
                p["status"]["phase"] = json!(phase);
                p["status"]["podIP"] = json!(ip);
                p["status"]["conditions"] =
                    json!([{"type": "Ready", "status": if ready { "True" } else { "False" }}]);
                Ok(())
            },
        )
        .await
        .unwrap();
}

async fn all_ready(objects: &Objects) {
    for p in pods(objects) {
        if !pod_ready(&p) && !deleting(&p) {
            set_phase(objects, &p, "Running").await;
        }
    }
}

fn deploy(image: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

#[tokio::test]
async fn deployment_rolls_out_scales_and_rolls_over() {
    let objects = objects().await;
    let d = resources::deployments();
    objects
        .create(d, Some("default"), deploy("busybox:1", 3), false)
        .await
        .unwrap();
    passes(&objects, 2).await;
    let ps = pods(&objects);
    assert_eq!(ps.len(), 3);
    let rs_list = objects.list(resources::replica_sets(), None).unwrap().0;
    assert_eq!(rs_list.len(), 1);
    let rs = &rs_list[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(name(rs), format!("web-{hash}"));
    let owner = &ps[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert_eq!(ps[0]["metadata"]["labels"]["pod-template-hash"], hash);
    all_ready(&objects).await;
    passes(&objects, 2).await;
    let cur = objects.get(d, Some("default"), "web").unwrap();
    assert_eq!(cur["status"]["availableReplicas"], 3, "{cur}");
    assert_eq!(cur["status"]["updatedReplicas"], 3);
    assert_eq!(cur["status"]["observedGeneration"], 1);
    let conds = cur["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c["reason"] == "NewReplicaSetAvailable")
    );

    // A new image rolls over, never below 3 - 0 (25% of 3 rounds down to 0) available pods.
    objects
        .patch(
            d,
            Some("default"),
            "web",
            crate::api::patch::PatchType::Merge,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}),
            Part::Main,
            false,
        )
        .await
        .unwrap();
    for _ in 0..30 {
        passes(&objects, 1).await;
        let ready = pods(&objects)
            .iter()
            .filter(|p| pod_ready(p) && !deleting(p))
            .count();
        assert!(ready >= 3, "availability kept: {ready}");
        all_ready(&objects).await;
    }
    passes(&objects, 2).await;
    let sets = objects.list(resources::replica_sets(), None).unwrap().0;
    assert_eq!(sets.len(), 2);
    let live: Vec<Value> = pods(&objects)
        .into_iter()
        .filter(|p| !deleting(p))
        .collect();
    assert_eq!(live.len(), 3);
    assert!(
        live.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2")
    );
    let cur = objects.get(d, Some("default"), "web").unwrap();
    assert_eq!(cur["status"]["updatedReplicas"], 3, "{cur}");
    assert_eq!(cur["metadata"]["generation"], 2);
    let events = objects.list(resources::events(), None).unwrap().0;
    assert!(events.iter().any(|e| e["reason"] == "ScalingReplicaSet"));
    assert!(events.iter().any(|e| e["reason"] == "SuccessfulCreate"));
}

#[tokio::test]
async fn garbage_collector_background_foreground_and_orphan() {
    let objects = objects().await;
    let d = resources::deployments();
    let rs = resources::replica_sets();
    objects
        .create(d, Some("default"), deploy("busybox:1", 2), false)
        .await
        .unwrap();
    passes(&objects, 2).await;
    assert_eq!(pods(&objects).len(), 2);

    // Background: the deployment goes at once, the collector takes the rest.
    objects
        .delete(d, Some("default"), "web", &DeleteOptions::default())
        .await
        .unwrap();
    passes(&objects, 3).await;
    assert!(objects.list(rs, None).unwrap().0.is_empty());
    assert!(pods(&objects).is_empty());

    // Foreground: the deployment stays, with the finalizer, until its dependents are gone.
    objects
        .create(d, Some("default"), deploy("busybox:1", 2), false)
        .await
        .unwrap();
    passes(&objects, 2).await;
    let opts = DeleteOptions {
        propagation: Some(Propagation::Foreground),
        ..Default::default()
    };
    let out = objects
        .delete(d, Some("default"), "web", &opts)
        .await
        .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(objects.get(d, Some("default"), "web").is_ok());
    passes(&objects, 5).await;
    assert!(pods(&objects).is_empty());
    assert!(objects.list(rs, None).unwrap().0.is_empty());
    assert!(
        objects.get(d, Some("default"), "web").is_err(),
        "owner goes last"
    );

    // Orphan: the replicaset stays, without its ownerReference.
    objects
        .create(d, Some("default"), deploy("busybox:1", 1), false)
        .await
        .unwrap();
    passes(&objects, 2).await;
    let opts = DeleteOptions {
        propagation: Some(Propagation::Orphan),
        ..Default::default()
    };
    objects
        .delete(d, Some("default"), "web", &opts)
        .await
        .unwrap();
    passes(&objects, 2).await;
    let left = objects.list(rs, None).unwrap().0;
    assert_eq!(left.len(), 1);
    assert!(
        left[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
    );
    assert_eq!(pods(&objects).len(), 1);
}

#[tokio::test]
async fn job_runs_to_completion_and_fails_past_backoff() {
    let objects = objects().await;
    let j = resources::jobs();
    let job = |n: &str, c: i64, backoff: i64| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": n}, "spec": {
        "completions": c, "parallelism": 2, "backoffLimit": backoff,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    };
    objects
        .create(j, Some("default"), job("ok", 3, 6), false)
        .await
        .unwrap();
    passes(&objects, 1).await;
    assert_eq!(pods(&objects).len(), 2, "parallelism 2");
    let p0 = &pods(&objects)[0];
    assert_eq!(
        p0["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "ok"
    );
    for _ in 0..5 {
        for p in pods(&objects) {
            if p["status"]["phase"] == "Pending" {
                set_phase(&objects, &p, "Succeeded").await;
            }
        }
        passes(&objects, 1).await;
    }
    let cur = objects.get(j, Some("default"), "ok").unwrap();
    assert_eq!(cur["status"]["succeeded"], 3, "{cur}");
    assert!(cur["status"]["completionTime"].is_string());
    assert!(
        cur["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    );

    objects
        .create(j, Some("default"), job("bad", 1, 1), false)
        .await
        .unwrap();
    for _ in 0..5 {
        passes(&objects, 1).await;
        for p in pods(&objects) {
            if p["status"]["phase"] == "Pending" {
                set_phase(&objects, &p, "Failed").await;
            }
        }
    }
    let cur = objects.get(j, Some("default"), "bad").unwrap();
    assert_eq!(cur["status"]["failed"], 2, "{cur}");
    assert!(
        cur["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Failed" && c["reason"] == "BackoffLimitExceeded")
    );
}

#[tokio::test]
async fn daemonset_puts_one_pod_on_each_ready_node() {
    let objects = objects().await;
    for (n, ready) in [("n1", "True"), ("n2", "True"), ("n3", "False")] {
        objects
            .create(resources::nodes(), None, json!({"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}), false)
            .await
            .unwrap();
    }
    let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    objects
        .create(resources::daemon_sets(), Some("default"), ds, false)
        .await
        .unwrap();
    passes(&objects, 2).await;
    let mut nodes: Vec<String> = pods(&objects)
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
    all_ready(&objects).await;
    passes(&objects, 1).await;
    let cur = objects
        .get(resources::daemon_sets(), Some("default"), "agent")
        .unwrap();
    assert_eq!(cur["status"]["desiredNumberScheduled"], 2);
    assert_eq!(cur["status"]["numberReady"], 2);
}

#[tokio::test]
async fn services_get_endpoints_and_slices_from_ready_pods() {
    let objects = objects().await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    objects
        .create(resources::services(), Some("default"), svc, false)
        .await
        .unwrap();
    for n in ["a", "bb"] {
        let pod = json!({"metadata": {"name": n, "labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}});
        objects
            .create(resources::pods(), Some("default"), pod, false)
            .await
            .unwrap();
    }
    let ps = pods(&objects);
    set_phase(&objects, &ps[0], "Running").await;
    set_phase(&objects, &ps[1], "Pending").await;
    passes(&objects, 1).await;
    let ep = objects
        .get(resources::endpoints(), Some("default"), "web")
        .unwrap();
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.244.0.1");
    assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.244.0.2");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    let slices = objects.list(resources::endpoint_slices(), None).unwrap().0;
    assert_eq!(slices.len(), 1);
    assert_eq!(
        slices[0]["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(slices[0]["endpoints"].as_array().unwrap().len(), 2);
    // Nothing changes, nothing is written.
    let rev = objects.store.revision();
    passes(&objects, 2).await;
    assert_eq!(
        objects.store.revision(),
        rev,
        "a settled pass writes nothing"
    );
    objects
        .delete(
            resources::services(),
            Some("default"),
            "web",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    passes(&objects, 1).await;
    assert!(
        objects
            .get(resources::endpoints(), Some("default"), "web")
            .is_err()
    );
    assert!(
        objects
            .list(resources::endpoint_slices(), None)
            .unwrap()
            .0
            .is_empty()
    );
}

#[tokio::test]
async fn events_expire_after_their_ttl() {
    let objects = objects().await;
    let ev = |name: &str, last: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Started", "message": "x", "type": "Normal",
            "lastTimestamp": last, "firstTimestamp": last})
    };
    let old = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(7200))
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (name, t) in [("old", old.as_str()), ("new", &crate::api::objects::now())] {
        objects
            .create(resources::events(), Some("default"), ev(name, t), false)
            .await
            .unwrap();
    }
    let n = super::event_ttl::reconcile(&objects, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (left, _) = objects.list(resources::events(), Some("default")).unwrap();
    let names: Vec<&str> = left
        .iter()
        .filter_map(|e| e["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["new"]);
}
