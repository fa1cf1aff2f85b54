//! The workload controllers and the garbage collector against an in-memory store, driven pass by
//! pass (no timers), with pods made Ready by hand where a node agent would.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::{DeleteOptions, Objects, Part, Propagation, resources};
use crate::store::{Store, StoreConfig, transport::LocalOnly};

/// An in-memory single-member store with the system objects in place.
pub(crate) async fn objects() -> Objects {
    let store = Store::start(
        StoreConfig::single(None),
        Arc::new(LocalOnly),
        CancellationToken::new(),
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
    objects
}

async fn passes(objects: &Objects, n: usize) {
    for _ in 0..n {
        gc::reconcile(objects).await.unwrap();
        deployment::reconcile(objects).await.unwrap();
        replicaset::reconcile(objects).await.unwrap();
        daemonset::reconcile(objects).await.unwrap();
        job::reconcile(objects).await.unwrap();
        statefulset::reconcile(objects).await.unwrap();
        storage::reconcile(objects).await.unwrap();
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

async fn finished_long_ago(objects: &Objects, pod: &Value) {
    objects
        .modify(
            resources::pods(),
            Some("default"),
            name(pod),
            Part::Status,
            |p| {
                p["status"]["containerStatuses"] = json!([{
                    "name": "c",
                    "state": {"terminated": {"exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}},
                }]);
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

async fn patch_deploy(objects: &Objects, patch: Value) {
    objects
        .patch(
            resources::deployments(),
            Some("default"),
            "web",
            crate::api::patch::PatchType::Merge,
            &patch,
            Part::Main,
            false,
        )
        .await
        .unwrap();
}

/// Passes with every pod made Ready, until nothing changes.
async fn settle(objects: &Objects) {
    for _ in 0..20 {
        passes(objects, 1).await;
        all_ready(objects).await;
    }
}

fn set_of_revision(objects: &Objects, rev: &str) -> Value {
    objects
        .list(resources::replica_sets(), None)
        .unwrap()
        .0
        .into_iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == rev)
        .unwrap_or_else(|| panic!("no set of revision {rev}"))
}

#[tokio::test]
async fn deployment_revisions_rollback_pause_and_progress_deadline() {
    let objects = objects().await;
    let d = resources::deployments();
    let mut dep = deploy("busybox:1", 2);
    dep["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "first"});
    objects
        .create(d, Some("default"), dep, false)
        .await
        .unwrap();
    settle(&objects).await;
    let cur = objects.get(d, Some("default"), "web").unwrap();
    assert_eq!(
        cur["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let rs1 = set_of_revision(&objects, "1");
    assert_eq!(
        rs1["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first"
    );
    assert_eq!(
        rs1["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"],
        "3"
    );

    patch_deploy(
        &objects,
        json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "second"}},
               "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}),
    )
    .await;
    settle(&objects).await;
    let rs2 = set_of_revision(&objects, "2");
    assert_eq!(
        rs2["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "second"
    );
    // Rolling back to the first template makes its set revision 3, remembering 1.
    patch_deploy(
        &objects,
        json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "back"}},
               "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    )
    .await;
    settle(&objects).await;
    let rs3 = set_of_revision(&objects, "3");
    assert_eq!(name(&rs3), name(&rs1));
    assert_eq!(
        rs3["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(
        rs3["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "back"
    );
    let cur = objects.get(d, Some("default"), "web").unwrap();
    assert_eq!(
        cur["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    // Paused: a new template makes no new set, but scaling still works.
    patch_deploy(
        &objects,
        json!({"spec": {"paused": true, "replicas": 3,
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:3"}]}}}}),
    )
    .await;
    settle(&objects).await;
    assert_eq!(
        objects
            .list(resources::replica_sets(), None)
            .unwrap()
            .0
            .len(),
        2
    );
    let live = pods(&objects).into_iter().filter(|p| !deleting(p)).count();
    assert_eq!(live, 3);
    let cur = objects.get(d, Some("default"), "web").unwrap();
    let progressing = cur["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["reason"], "DeploymentPaused");
    assert_eq!(progressing["status"], "Unknown");

    // Resumed, the rollout starts; with its pods never Ready and a deadline long passed, it
    // is reported as timed out.
    patch_deploy(
        &objects,
        json!({"spec": {"paused": false, "progressDeadlineSeconds": 1}}),
    )
    .await;
    passes(&objects, 3).await;
    objects
        .modify(d, Some("default"), "web", Part::Status, |o| {
            for c in o["status"]["conditions"].as_array_mut().unwrap() {
                if c["type"] == "Progressing" {
                    c["lastUpdateTime"] = json!("2020-01-01T00:00:00Z");
                }
            }
            Ok(())
        })
        .await
        .unwrap();
    passes(&objects, 1).await;
    let cur = objects.get(d, Some("default"), "web").unwrap();
    let progressing = cur["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded", "{cur}");
    assert_eq!(progressing["status"], "False");
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
    // A failed pod is replaced only after the back-off (10 s after it failed).
    passes(&objects, 1).await;
    let first = pods(&objects)
        .into_iter()
        .find(|p| p["status"]["phase"] == "Pending")
        .unwrap();
    set_phase(&objects, &first, "Failed").await;
    passes(&objects, 2).await;
    assert!(
        !pods(&objects)
            .iter()
            .any(|p| p["status"]["phase"] == "Pending"),
        "a replacement came before the back-off"
    );
    for _ in 0..5 {
        for p in pods(&objects) {
            if p["status"]["phase"] == "Pending" {
                set_phase(&objects, &p, "Failed").await;
            }
        }
        // Failures long ago: the back-off is over.
        for p in pods(&objects) {
            if p["status"]["phase"] == "Failed" {
                finished_long_ago(&objects, &p).await;
            }
        }
        passes(&objects, 1).await;
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

fn stateful_set(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
      "spec": {"replicas": replicas, "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
          "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

async fn add_node(objects: &Objects, name: &str) {
    objects
        .create(
            resources::nodes(),
            None,
            json!({"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                "annotations": {storage::ROOT_ANNOTATION: format!("/var/lib/skiff/{name}/storage")}},
              "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            false,
        )
        .await
        .unwrap();
}

/// What the scheduler does for a pod with a WaitForFirstConsumer claim: names the node on the
/// claim, then binds the pod once the claim is bound.
async fn select_node(objects: &Objects, claim: &str, node: &str) {
    objects
        .modify(
            resources::persistent_volume_claims(),
            Some("default"),
            claim,
            Part::Main,
            |c| {
                c["metadata"]["annotations"][storage::SELECTED_NODE] = json!(node);
                Ok(())
            },
        )
        .await
        .unwrap();
}

fn claim(objects: &Objects, name: &str) -> Value {
    objects
        .get(resources::persistent_volume_claims(), Some("default"), name)
        .unwrap()
}

#[tokio::test]
async fn stateful_set_starts_in_order_with_claims_and_scales_down_from_the_top() {
    let objects = objects().await;
    add_node(&objects, "n1").await;
    let sts = resources::stateful_sets();
    objects
        .create(sts, Some("default"), stateful_set(3, "busybox:1"), false)
        .await
        .unwrap();
    passes(&objects, 2).await;
    // OrderedReady: db-1 waits for db-0 to be Running and Ready.
    let ps = pods(&objects);
    assert_eq!(ps.len(), 1, "{ps:?}");
    let p0 = &ps[0];
    assert_eq!(name(p0), "db-0");
    assert_eq!(p0["spec"]["hostname"], "db-0");
    assert_eq!(p0["spec"]["subdomain"], "db");
    assert_eq!(
        p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-0"
    );
    assert_eq!(
        p0["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-db-0"
    );
    // The claim got the default class, and waits for the scheduler to pick a node.
    let c0 = claim(&objects, "data-db-0");
    assert_eq!(c0["spec"]["storageClassName"], "local-path");
    assert_eq!(c0["status"]["phase"], "Pending");
    select_node(&objects, "data-db-0", "n1").await;
    passes(&objects, 1).await;
    let c0 = claim(&objects, "data-db-0");
    assert_eq!(c0["status"]["phase"], "Bound", "{c0}");
    let pv_name = c0["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = objects
        .get(resources::persistent_volumes(), None, &pv_name)
        .unwrap();
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert!(
        pv["spec"]["hostPath"]["path"]
            .as_str()
            .unwrap()
            .starts_with("/var/lib/skiff/n1/storage/pvc-"),
        "{pv}"
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
            [0],
        "n1"
    );

    for _ in 0..3 {
        all_ready(&objects).await;
        passes(&objects, 1).await;
    }
    let names: Vec<String> = pods(&objects).iter().map(|p| name(p).to_string()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let cur = objects.get(sts, Some("default"), "db").unwrap();
    assert_eq!(cur["status"]["readyReplicas"], 3, "{cur}");
    assert!(
        cur["status"]["currentRevision"]
            .as_str()
            .unwrap()
            .starts_with("db-")
    );
    let revs = objects
        .list(resources::controller_revisions(), None)
        .unwrap()
        .0;
    assert_eq!(revs.len(), 1);

    // Scaling down removes the highest ordinal; its claim stays (whenScaled: Retain).
    objects
        .modify(sts, Some("default"), "db", Part::Main, |s| {
            s["spec"]["replicas"] = json!(2);
            Ok(())
        })
        .await
        .unwrap();
    passes(&objects, 2).await;
    let live: Vec<String> = pods(&objects)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| name(p).to_string())
        .collect();
    assert_eq!(live, ["db-0", "db-1"]);
    assert!(
        objects
            .get(
                resources::persistent_volume_claims(),
                Some("default"),
                "data-db-2"
            )
            .is_ok()
    );
}

#[tokio::test]
async fn a_released_claim_frees_its_volume_and_manual_volumes_bind_by_size() {
    let objects = objects().await;
    let pvs = resources::persistent_volumes();
    for (n, size) in [("small", "1Gi"), ("big", "10Gi")] {
        objects
            .create(
                pvs,
                None,
                json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": n},
                  "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": format!("/tmp/{n}")}}}),
                false,
            )
            .await
            .unwrap();
    }
    let pvcs = resources::persistent_volume_claims();
    objects
        .create(
            pvcs,
            Some("default"),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "want"},
              "spec": {"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "500Mi"}}}}),
            false,
        )
        .await
        .unwrap();
    passes(&objects, 2).await;
    let c = claim(&objects, "want");
    assert_eq!(c["spec"]["volumeName"], "small", "{c}");
    assert_eq!(c["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(
        objects.get(pvs, None, "small").unwrap()["status"]["phase"],
        "Bound"
    );
    assert_eq!(
        objects.get(pvs, None, "big").unwrap()["status"]["phase"],
        "Available"
    );
    // A pod using the claim keeps it (pvc-protection) until the pod is gone.
    objects
        .create(
            resources::pods(),
            Some("default"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"},
              "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "want"}}]}}),
            false,
        )
        .await
        .unwrap();
    objects
        .delete(pvcs, Some("default"), "want", &DeleteOptions::default())
        .await
        .unwrap();
    passes(&objects, 2).await;
    assert!(claim(&objects, "want")["metadata"]["deletionTimestamp"].is_string());
    objects
        .delete(
            resources::pods(),
            Some("default"),
            "user",
            &DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    passes(&objects, 2).await;
    assert!(objects.get(pvcs, Some("default"), "want").is_err());
    // Retain: the volume stays, Released.
    assert_eq!(
        objects.get(pvs, None, "small").unwrap()["status"]["phase"],
        "Released"
    );
}

#[tokio::test]
async fn cron_job_runs_on_schedule_one_at_a_time_and_keeps_its_history() {
    let objects = objects().await;
    let cjs = resources::cron_jobs();
    let cj = objects
        .create(
            cjs,
            Some("default"),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
              "spec": {"schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 1,
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                  "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
            false,
        )
        .await
        .unwrap();
    let created: jiff::Timestamp = cj["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let minute = |n: i64| created + jiff::SignedDuration::from_secs(60 * n + 1);
    let run = |at: jiff::Timestamp| {
        let objects = objects.clone();
        async move {
            let cj = objects.get(cjs, Some("default"), "tick").unwrap();
            let jobs = objects.list(resources::jobs(), None).unwrap().0;
            cronjob::sync(&objects, &cj, &jobs, at).await.unwrap();
            objects.list(resources::jobs(), None).unwrap().0
        }
    };
    let jobs = run(minute(1)).await;
    assert_eq!(jobs.len(), 1);
    let first = name(&jobs[0]).to_string();
    // The job is named after its scheduled minute.
    let scheduled: i64 = first.strip_prefix("tick-").unwrap().parse().unwrap();
    assert_eq!(scheduled * 60, minute(1).as_second() / 60 * 60);
    let cur = objects.get(cjs, Some("default"), "tick").unwrap();
    assert_eq!(cur["status"]["active"][0]["name"], first.as_str());
    // Forbid: the next run waits while the first is active.
    assert_eq!(run(minute(2)).await.len(), 1);
    for j in objects.list(resources::jobs(), None).unwrap().0 {
        objects
            .modify(
                resources::jobs(),
                Some("default"),
                name(&j),
                Part::Status,
                |j| {
                    j["status"]["conditions"] = json!([{"type": "Complete", "status": "True",
                    "lastTransitionTime": minute(2).to_string()}]);
                    j["status"]["completionTime"] = json!(minute(2).to_string());
                    Ok(())
                },
            )
            .await
            .unwrap();
    }
    let jobs = run(minute(3)).await;
    // The finished one left the active list; a new one ran; history keeps one success.
    let cur = objects.get(cjs, Some("default"), "tick").unwrap();
    let active = cur["status"]["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{cur}");
    assert_ne!(active[0]["name"], first.as_str());
    assert!(cur["status"]["lastSuccessfulTime"].is_string(), "{cur}");
    assert!(
        jobs.iter().any(|j| name(j) == first),
        "history of 1 keeps the success"
    );
    assert_eq!(jobs.len(), 2);
}

/// Local APIServices turn Available; one deleted by hand comes back; one whose Service does not
/// exist says so.
#[tokio::test]
async fn api_services_are_available_restored_and_explained() {
    let objects = objects().await;
    let res = resources::api_services();
    let condition = |o: &Value| o["status"]["conditions"][0].clone();
    apiservice::reconcile(&objects).await.unwrap();
    let apps = objects.get(res, None, "v1.apps").unwrap();
    assert_eq!(condition(&apps)["status"], "True");
    assert_eq!(condition(&apps)["reason"], "Local");

    objects
        .delete(res, None, "v1.apps", &DeleteOptions::default())
        .await
        .unwrap();
    apiservice::reconcile(&objects).await.unwrap();
    assert!(
        objects.get(res, None, "v1.apps").is_ok(),
        "v1.apps was not made again"
    );

    let wardle = json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1alpha1.wardle.example.com"},
        "spec": {"group": "wardle.example.com", "version": "v1alpha1", "groupPriorityMinimum": 1000,
                 "versionPriority": 15, "insecureSkipTLSVerify": true,
                 "service": {"namespace": "wardle", "name": "api"}},
    });
    objects.create(res, None, wardle, false).await.unwrap();
    apiservice::reconcile(&objects).await.unwrap();
    let w = objects
        .get(res, None, "v1alpha1.wardle.example.com")
        .unwrap();
    assert_eq!(condition(&w)["status"], "False");
    assert_eq!(condition(&w)["reason"], "ServiceNotFound");
    assert_eq!(
        condition(&w)["message"],
        "service/api in \"wardle\" is not present"
    );
}

#[tokio::test]
async fn a_silent_node_goes_unknown_and_tainted_and_comes_back_clean() {
    use std::time::Instant;
    let objects = objects().await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True",
            "lastHeartbeatTime": "2026-12-07T10:00:00Z"}]}});
    objects
        .create(resources::nodes(), None, node, false)
        .await
        .unwrap();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "n1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "n1", "renewTime": "2026-12-07T10:00:00.000000Z"}});
    objects
        .create(resources::leases(), Some("kube-node-lease"), lease, false)
        .await
        .unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
    let pod = objects
        .create(resources::pods(), Some("default"), pod, false)
        .await
        .unwrap();
    set_phase(&objects, &pod, "Running").await;

    let mut monitor = nodelifecycle::Monitor::default();
    let grace = Duration::from_secs(40);
    let t0 = Instant::now();
    monitor.pass(&objects, grace, t0).await.unwrap();
    let n = objects.get(resources::nodes(), None, "n1").unwrap();
    assert!(n.pointer("/spec/taints").is_none(), "a fresh node: {n}");

    // No heartbeat for longer than the grace period.
    monitor
        .pass(&objects, grace, t0 + Duration::from_secs(41))
        .await
        .unwrap();
    let n = objects.get(resources::nodes(), None, "n1").unwrap();
    assert_eq!(n["status"]["conditions"][0]["status"], "Unknown");
    let keys: Vec<(&str, &str)> = n["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            (nodelifecycle::UNREACHABLE, "NoSchedule"),
            (nodelifecycle::UNREACHABLE, "NoExecute")
        ]
    );
    let p = objects
        .get(resources::pods(), Some("default"), "p")
        .unwrap();
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False", "{p}");

    // The agent comes back: renews its lease and posts Ready.
    objects
        .modify(
            resources::leases(),
            Some("kube-node-lease"),
            "n1",
            Part::Main,
            |l| {
                l["spec"]["renewTime"] = json!("2026-12-07T10:01:00.000000Z");
                Ok(())
            },
        )
        .await
        .unwrap();
    objects
        .modify(resources::nodes(), None, "n1", Part::Status, |n| {
            n["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                "lastHeartbeatTime": "2026-12-07T10:01:00Z"}]);
            Ok(())
        })
        .await
        .unwrap();
    monitor
        .pass(&objects, grace, t0 + Duration::from_secs(45))
        .await
        .unwrap();
    let n = objects.get(resources::nodes(), None, "n1").unwrap();
    assert_eq!(n["spec"]["taints"], json!([]), "{n}");

    // A pass skips the nodes that did not change since the last, not those that did: the
    // agent says it is not Ready, and the next pass taints the node for it.
    monitor
        .pass(&objects, grace, t0 + Duration::from_secs(46))
        .await
        .unwrap();
    objects
        .modify(resources::nodes(), None, "n1", Part::Status, |n| {
            n["status"]["conditions"] = json!([{"type": "Ready", "status": "False",
                "lastHeartbeatTime": "2026-12-07T10:01:10Z"}]);
            Ok(())
        })
        .await
        .unwrap();
    monitor
        .pass(&objects, grace, t0 + Duration::from_secs(47))
        .await
        .unwrap();
    let n = objects.get(resources::nodes(), None, "n1").unwrap();
    assert_eq!(
        n["spec"]["taints"][0]["key"],
        nodelifecycle::NOT_READY,
        "{n}"
    );
}
