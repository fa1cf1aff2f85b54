//! The workload kinds and storage with real containers and kubectl: a StatefulSet whose pods
//! keep their local-path volumes across a pod deletion and a restart of skiff, scaled down and
//! deleted (its volumes reclaimed); an Indexed Job; a CronJob that fires on its schedule; a
//! claim naming an unknown StorageClass that stays Pending with an event; the scheduler's
//! nodeSelector and taints; a higher-priority pod preempting a running one; `kubectl cordon|drain|uncordon` held back by a
//! PodDisruptionBudget; and `kubectl rollout history|undo|pause|resume|restart|status` on
//! Deployments and StatefulSets, with a progress deadline that passes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::Value;

#[test]
fn stateful_sets_jobs_and_cron_jobs() -> Result<()> {
    with_cluster(scenario)
}

fn json(k: &Kubectl, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    Ok(serde_json::from_str(&k.ok(&a, None)?)?)
}

fn scenario(c: &mut Cluster, _work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    let k = c.kubectl("1.33");
    scheduling(&k, reg)?;
    preemption(&k, reg)?;
    stateful_set(c, &k, reg)?;
    indexed_job(&k, reg)?;
    unknown_class(&k)?;
    cron_job(&k, reg)?;
    drain(&k, reg)?;
    rollouts(&k, reg)?;
    Ok(())
}

fn stateful_set(c: &mut Cluster, k: &Kubectl, reg: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: {reg}/busybox:1.36
        command: ["sh", "-c", "echo boot-$(hostname) >> /data/boots; exec sleep 3600"]
        readinessProbe:
          exec: {{command: ["cat", "/data/boots"]}}
          periodSeconds: 1
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 100Mi}}}}
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    let out = k.ok(
        &["rollout", "status", "statefulset/db", "--timeout=120s"],
        None,
    )?;
    ensure!(
        out.contains("partitioned roll out complete") || out.contains("complete"),
        "{out}"
    );
    // The default class is skiff's local-path; each ordinal has its own claim, bound.
    let classes = k.ok(&["get", "storageclass"], None)?;
    ensure!(
        classes.contains("local-path (default)") && classes.contains("skiff.io/local-path"),
        "{classes}"
    );
    let pvc = json(k, &["get", "pvc", "data-db-0"])?;
    ensure!(pvc["status"]["phase"] == "Bound", "{pvc}");
    ensure!(pvc["spec"]["storageClassName"] == "local-path", "{pvc}");
    let pv = json(
        k,
        &[
            "get",
            "pv",
            pvc["spec"]["volumeName"].as_str().unwrap_or(""),
        ],
    )?;
    let dir = pv["spec"]["hostPath"]["path"]
        .as_str()
        .unwrap_or("")
        .to_string();
    ensure!(
        dir.starts_with(&c.data.join("agent/storage").display().to_string()),
        "the volume lives under the data dir: {pv}"
    );
    ensure!(Path::new(&dir).is_dir(), "{dir} was made on the node");
    let p0 = c.pod("db-0")?;
    ensure!(
        p0["spec"]["hostname"] == "db-0" && p0["spec"]["subdomain"] == "db",
        "{p0}"
    );
    ensure!(
        k.ok(&["exec", "db-0", "--", "hostname"], None)?.trim() == "db-0",
        "the pod's hostname is its name"
    );

    // The data outlives the pod: the replacement db-0 sees the first boot's line.
    k.ok(
        &["exec", "db-0", "--", "sh", "-c", "echo kept > /data/mark"],
        None,
    )?;
    let uid = p0["metadata"]["uid"].as_str().unwrap_or("").to_string();
    k.ok(&["delete", "pod", "db-0", "--wait=false"], None)?;
    wait_for("a new db-0, ready", Duration::from_secs(90), || {
        let p = c.pod("db-0")?;
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok((p["metadata"]["uid"] != uid.as_str() && ready).then_some(()))
    })?;
    let seen = k.ok(
        &["exec", "db-0", "--", "cat", "/data/mark", "/data/boots"],
        None,
    )?;
    ensure!(
        seen.starts_with("kept") && seen.matches("boot-db-0").count() == 2,
        "{seen}"
    );

    // And a restart of skiff.
    c.stop()?;
    c.start()?;
    wait_for("db-0 after the restart", Duration::from_secs(90), || {
        let out = k.ok(&["exec", "db-0", "--", "cat", "/data/mark"], None)?;
        Ok(out.starts_with("kept").then_some(()))
    })?;

    // Scaling down removes db-1 and keeps its claim; deleting the set and the claims
    // reclaims the volumes (policy Delete): the PersistentVolumes and their directories go.
    k.ok(&["scale", "statefulset/db", "--replicas=1"], None)?;
    wait_for("db-1 gone", Duration::from_secs(60), || {
        let out = k.ok(&["get", "pods", "-l", "app=db", "-o", "name"], None)?;
        Ok((!out.contains("db-1")).then_some(()))
    })?;
    ensure!(json(k, &["get", "pvc", "data-db-1"])?["status"]["phase"] == "Bound");
    k.ok(&["delete", "statefulset", "db"], None)?;
    k.ok(
        &["delete", "pvc", "data-db-0", "data-db-1", "--timeout=60s"],
        None,
    )?;
    wait_for("the volumes reclaimed", Duration::from_secs(60), || {
        let pvs = json(k, &["get", "pv"])?;
        let left = pvs["items"].as_array().map_or(0, Vec::len);
        Ok((left == 0 && !Path::new(&dir).exists()).then_some(()))
    })?;
    Ok(())
}

/// nodeSelector, taints and tolerations as the scheduler reads them.
fn scheduling(k: &Kubectl, reg: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: picky}}
spec:
  nodeSelector: {{disk: ssd}}
  tolerations: [{{key: dedicated, operator: Equal, value: db, effect: NoSchedule}}]
  containers:
  - name: c
    image: {reg}/busybox:1.36
    command: [sleep, "3600"]
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    wait_for("picky to be unschedulable", Duration::from_secs(30), || {
        let p = json(k, &["get", "pod", "picky"])?;
        let cond = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled")
            .cloned();
        Ok(cond.filter(|c| {
            c["reason"] == "Unschedulable"
                && c["message"]
                    == "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                        preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        }))
    })?;
    // A taint the pod tolerates does not keep it off; the label lets it on.
    k.ok(
        &["taint", "node", "e2e-node", "dedicated=db:NoSchedule"],
        None,
    )?;
    k.ok(&["label", "node", "e2e-node", "disk=ssd"], None)?;
    wait_for("picky to be scheduled", Duration::from_secs(30), || {
        let p = json(k, &["get", "pod", "picky"])?;
        Ok((p["spec"]["nodeName"] == "e2e-node").then_some(()))
    })?;
    // An untolerated taint keeps a pod off and says which taint.
    let plain = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: plain}}\nspec:\n  containers:\n  - {{name: c, image: {reg}/busybox:1.36}}\n"
    );
    k.ok(&["apply", "-f", "-"], Some(&plain))?;
    wait_for("plain to be unschedulable", Duration::from_secs(30), || {
        let out = k.ok(&["describe", "pod", "plain"], None)?;
        Ok(out
            .contains("1 node(s) had untolerated taint {dedicated: db}")
            .then_some(()))
    })?;
    k.ok(&["taint", "node", "e2e-node", "dedicated-"], None)?;
    wait_for("plain to be scheduled", Duration::from_secs(30), || {
        let p = json(k, &["get", "pod", "plain"])?;
        Ok((p["spec"]["nodeName"] == "e2e-node").then_some(()))
    })?;
    k.ok(
        &["delete", "pod", "picky", "plain", "--grace-period=1"],
        None,
    )?;
    Ok(())
}

/// A pod of a higher PriorityClass that fits nowhere preempts a running lower-priority pod:
/// the victim is marked, stopped and deleted, and the preemptor nominated and run there.
fn preemption(k: &Kubectl, reg: &str) -> Result<()> {
    let node = json(k, &["get", "node", "e2e-node"])?;
    let cpu = node["status"]["allocatable"]["cpu"]
        .as_str()
        .context("no allocatable cpu")?;
    let milli: u64 = match cpu.strip_suffix('m') {
        Some(m) => m.parse()?,
        None => cpu.parse::<u64>()? * 1000,
    };
    let most = milli * 3 / 4;
    let pod = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  priorityClassName: {class}\n  \
             terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    \
             command: [sleep, \"3600\"]\n    resources: {{requests: {{cpu: {most}m}}}}\n"
        )
    };
    let classes = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: batch}\nvalue: 10\n---\n\
                   apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: urgent}\nvalue: 1000\n";
    k.ok(&["apply", "-f", "-"], Some(classes))?;
    k.ok(&["apply", "-f", "-"], Some(&pod("filler", "batch")))?;
    wait_for("filler running", Duration::from_secs(60), || {
        let p = json(k, &["get", "pod", "filler"])?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })?;
    k.ok(&["apply", "-f", "-"], Some(&pod("rush", "urgent")))?;
    let rush = wait_for(
        "rush running in filler's place",
        Duration::from_secs(90),
        || {
            let p = json(k, &["get", "pod", "rush"])?;
            Ok((p["status"]["phase"] == "Running").then_some(p))
        },
    )?;
    ensure!(
        rush["status"]["nominatedNodeName"] == "e2e-node" && rush["spec"]["priority"] == 1000,
        "{rush}"
    );
    let gone = k.output(&["get", "pod", "filler"], None)?;
    ensure!(!gone.status.success(), "filler is still there");
    let uid = rush["metadata"]["uid"].as_str().unwrap_or("");
    let events = k.ok(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=filler",
            "-o",
            "json",
        ],
        None,
    )?;
    ensure!(
        events.contains(&format!("Preempted by pod {uid} on node e2e-node")),
        "no Preempted event: {events}"
    );
    // The node reports the image it pulled (the scheduler's ImageLocality reads it).
    wait_for(
        "the node to list its images",
        Duration::from_secs(30),
        || {
            let node = json(k, &["get", "node", "e2e-node"])?;
            let listed = node["status"]["images"].as_array().is_some_and(|imgs| {
                imgs.iter().any(|i| {
                    i["sizeBytes"].as_i64().unwrap_or(0) > 0
                        && i["names"].as_array().is_some_and(|ns| {
                            ns.iter()
                                .any(|n| n.as_str() == Some(&format!("{reg}/busybox:1.36")))
                        })
                })
            });
            Ok(listed.then_some(()))
        },
    )?;
    k.ok(&["delete", "pod", "rush", "--grace-period=1"], None)?;
    k.ok(&["delete", "priorityclass", "batch", "urgent"], None)?;
    Ok(())
}

fn indexed_job(k: &Kubectl, reg: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: idx}}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: w
        image: {reg}/busybox:1.36
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=$(hostname)"]
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    k.ok(
        &[
            "wait",
            "--for=condition=complete",
            "job/idx",
            "--timeout=90s",
        ],
        None,
    )?;
    let job = json(k, &["get", "job", "idx"])?;
    ensure!(job["status"]["completedIndexes"] == "0-2", "{job}");
    ensure!(job["status"]["succeeded"] == 3, "{job}");
    for i in 0..3 {
        let pods = json(
            k,
            &[
                "get",
                "pods",
                "-l",
                &format!("batch.kubernetes.io/job-completion-index={i},job-name=idx"),
            ],
        )?;
        let pod = &pods["items"][0];
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let log = k.ok(&["logs", name], None)?;
        ensure!(
            log.trim() == format!("index={i} host=idx-{i}"),
            "pod {name} logged {log:?}"
        );
    }
    k.ok(&["delete", "job", "idx"], None)?;
    Ok(())
}

fn unknown_class(k: &Kubectl) -> Result<()> {
    let manifest = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: lost}
spec:
  storageClassName: no-such-class
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
"#;
    k.ok(&["apply", "-f", "-"], Some(manifest))?;
    wait_for(
        "a ProvisioningFailed event",
        Duration::from_secs(30),
        || {
            let out = k.ok(&["describe", "pvc", "lost"], None)?;
            Ok(out
                .contains("storageclass.storage.k8s.io \"no-such-class\" not found")
                .then_some(()))
        },
    )?;
    ensure!(json(k, &["get", "pvc", "lost"])?["status"]["phase"] == "Pending");
    k.ok(&["delete", "pvc", "lost"], None)?;
    Ok(())
}

fn cron_job(k: &Kubectl, reg: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: t
            image: {reg}/busybox:1.36
            command: ["echo", "tick"]
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    let bad = k.output(
        &[
            "create",
            "cronjob",
            "bad",
            "--image=x",
            "--schedule=61 * * * *",
        ],
        None,
    )?;
    let err = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && err.contains("spec.schedule"),
        "an invalid schedule is refused with its field: {err}"
    );
    // A job made by hand from the template runs at once.
    k.ok(&["create", "job", "now", "--from=cronjob/tick"], None)?;
    k.ok(
        &[
            "wait",
            "--for=condition=complete",
            "job/now",
            "--timeout=60s",
        ],
        None,
    )?;
    // The schedule fires within the next minute.
    wait_for("the cron job to fire", Duration::from_secs(75), || {
        let cj = json(k, &["get", "cronjob", "tick"])?;
        Ok(cj["status"]["lastScheduleTime"].is_string().then_some(()))
    })?;
    wait_for("its job to complete", Duration::from_secs(60), || {
        let cj = json(k, &["get", "cronjob", "tick"])?;
        Ok(cj["status"]["lastSuccessfulTime"].is_string().then_some(()))
    })?;
    let jobs = k.ok(&["get", "jobs"], None)?;
    ensure!(jobs.contains("tick-"), "{jobs}");
    k.ok(&["delete", "cronjob", "tick"], None)?;
    Ok(())
}

fn running(k: &Kubectl, selector: &str) -> Result<Vec<String>> {
    let pods = json(k, &["get", "pods", "-l", selector])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

fn drain(k: &Kubectl, reg: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: drained}}}}
  template:
    metadata: {{labels: {{app: drained}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {reg}/busybox:1.36, command: [sleep, "3600"]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web}}
spec:
  minAvailable: 1
  selector: {{matchLabels: {{app: drained}}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {reg}/busybox:1.36, command: [sleep, "3600"]}}
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    k.ok(
        &["rollout", "status", "deployment/web", "--timeout=60s"],
        None,
    )?;
    k.ok(
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
        None,
    )?;
    wait_for(
        "the budget to allow one disruption",
        Duration::from_secs(30),
        || {
            let out = k.ok(&["get", "pdb", "web"], None)?;
            Ok(out
                .lines()
                .nth(1)
                .is_some_and(|l| {
                    l.split_whitespace().collect::<Vec<_>>()[1..4] == ["1", "N/A", "1"]
                })
                .then_some(()))
        },
    )?;
    // One node: the evicted pod's replacement cannot be scheduled, so the budget stops the
    // second eviction and drain gives up with the budget's reason.
    let out = k.output(
        &["drain", "e2e-node", "--ignore-daemonsets", "--timeout=20s"],
        None,
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "drain should have been held back");
    ensure!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    let nodes = k.ok(&["get", "nodes"], None)?;
    ensure!(nodes.contains("SchedulingDisabled"), "{nodes}");
    ensure!(running(k, "app=drained")?.len() == 1, "one web pod stays");
    ensure!(running(k, "app=agent")?.len() == 1, "the daemon pod stays");
    let pending = json(
        k,
        &[
            "get",
            "pods",
            "-l",
            "app=drained",
            "--field-selector=status.phase=Pending",
        ],
    )?;
    ensure!(
        pending["items"][0]["status"]["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("node(s) were unschedulable")),
        "{pending}"
    );
    // Uncordoned, the replacement runs; without the budget, drain evicts everything.
    k.ok(&["uncordon", "e2e-node"], None)?;
    wait_for("two web pods again", Duration::from_secs(60), || {
        Ok((running(k, "app=drained")?.len() == 2).then_some(()))
    })?;
    k.ok(&["delete", "pdb", "web"], None)?;
    k.ok(
        &["drain", "e2e-node", "--ignore-daemonsets", "--timeout=60s"],
        None,
    )?;
    ensure!(running(k, "app=drained")?.is_empty());
    ensure!(
        running(k, "app=agent")?.len() == 1,
        "drain leaves daemon pods"
    );
    k.ok(&["uncordon", "e2e-node"], None)?;
    k.ok(&["delete", "deployment", "web"], None)?;
    k.ok(&["delete", "daemonset", "agent"], None)?;
    Ok(())
}

/// The environment variable V of the pods of `selector` (empty if unset), one line each.
fn env_v(k: &Kubectl, selector: &str) -> Result<Vec<String>> {
    let pods = json(k, &["get", "pods", "-l", selector])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["containers"][0]["env"]
                .as_array()
                .and_then(|e| e.iter().find(|v| v["name"] == "V"))
                .and_then(|v| v["value"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect())
}

fn rollouts(k: &Kubectl, reg: &str) -> Result<()> {
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
  annotations: {{kubernetes.io/change-cause: first}}
spec:
  replicas: 2
  minReadySeconds: 1
  selector: {{matchLabels: {{app: roll}}}}
  template:
    metadata: {{labels: {{app: roll}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {reg}/busybox:1.36, command: [sleep, "3600"]}}
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&manifest))?;
    let status = |what: &str| k.ok(&["rollout", "status", what, "--timeout=90s"], None);
    status("deployment/roll")?;
    k.ok(&["set", "env", "deployment/roll", "V=2"], None)?;
    k.ok(
        &[
            "annotate",
            "deployment/roll",
            "kubernetes.io/change-cause=second",
            "--overwrite",
        ],
        None,
    )?;
    status("deployment/roll")?;
    wait_for(
        "the change cause on revision 2",
        Duration::from_secs(30),
        || {
            let h = k.ok(&["rollout", "history", "deployment/roll"], None)?;
            Ok((h.contains("1         first") && h.contains("2         second")).then_some(h))
        },
    )?;
    let rev1 = k.ok(
        &["rollout", "history", "deployment/roll", "--revision=1"],
        None,
    )?;
    ensure!(
        rev1.contains("Pod Template:") && !rev1.contains("V:"),
        "{rev1}"
    );

    // Undo goes back to revision 1's template, which becomes revision 3.
    k.ok(&["rollout", "undo", "deployment/roll"], None)?;
    status("deployment/roll")?;
    wait_for("the old pods gone", Duration::from_secs(60), || {
        Ok((env_v(k, "app=roll")? == ["", ""]).then_some(()))
    })?;
    let h = k.ok(&["rollout", "history", "deployment/roll"], None)?;
    ensure!(
        h.contains("2 ") && h.contains("3 ") && !h.contains("1         first"),
        "{h}"
    );
    let d = json(k, &["get", "deployment", "roll"])?;
    ensure!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3",
        "{d}"
    );

    // Paused: a change makes no new ReplicaSet until resumed.
    k.ok(&["rollout", "pause", "deployment/roll"], None)?;
    k.ok(&["set", "env", "deployment/roll", "V=4"], None)?;
    std::thread::sleep(Duration::from_secs(2));
    let sets = json(k, &["get", "rs", "-l", "app=roll"])?;
    ensure!(sets["items"].as_array().map_or(0, Vec::len) == 2, "{sets}");
    ensure!(env_v(k, "app=roll")? == ["", ""]);
    k.ok(&["rollout", "resume", "deployment/roll"], None)?;
    status("deployment/roll")?;
    wait_for("the resumed rollout", Duration::from_secs(60), || {
        Ok((env_v(k, "app=roll")? == ["4", "4"]).then_some(()))
    })?;
    // restart rolls the pods without a change of spec.
    let before = json(k, &["get", "pods", "-l", "app=roll"])?;
    k.ok(&["rollout", "restart", "deployment/roll"], None)?;
    status("deployment/roll")?;
    wait_for(
        "new pods after the restart",
        Duration::from_secs(60),
        || {
            let now = json(k, &["get", "pods", "-l", "app=roll"])?;
            let old_names: Vec<&Value> = before["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| &p["metadata"]["name"])
                .collect();
            let fresh = now["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .all(|p| !old_names.contains(&&p["metadata"]["name"]));
            Ok(fresh.then_some(()))
        },
    )?;
    k.ok(&["delete", "deployment", "roll"], None)?;

    // A rollout whose pods never become Ready passes its progress deadline.
    let stuck = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: stuck}}
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector: {{matchLabels: {{app: stuck}}}}
  template:
    metadata: {{labels: {{app: stuck}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {reg}/busybox:1.36
        command: [sleep, "3600"]
        readinessProbe: {{exec: {{command: ["false"]}}, periodSeconds: 1}}
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&stuck))?;
    let out = k.output(
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
        None,
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("exceeded its progress deadline"),
        "{err}"
    );
    k.ok(&["delete", "deployment", "stuck"], None)?;

    // StatefulSets roll back through their ControllerRevisions.
    let sts = format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: ordered}}
spec:
  serviceName: ordered
  replicas: 2
  selector: {{matchLabels: {{app: ordered}}}}
  template:
    metadata: {{labels: {{app: ordered}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {reg}/busybox:1.36, command: [sleep, "3600"]}}
"#
    );
    k.ok(&["apply", "-f", "-"], Some(&sts))?;
    status("statefulset/ordered")?;
    k.ok(&["set", "env", "statefulset/ordered", "V=2"], None)?;
    status("statefulset/ordered")?;
    wait_for("the updated set", Duration::from_secs(60), || {
        Ok((env_v(k, "app=ordered")? == ["2", "2"]).then_some(()))
    })?;
    let h = k.ok(&["rollout", "history", "statefulset/ordered"], None)?;
    ensure!(h.contains("1 ") && h.contains("2 "), "{h}");
    k.ok(&["rollout", "undo", "statefulset/ordered"], None)?;
    status("statefulset/ordered")?;
    wait_for("the set rolled back", Duration::from_secs(60), || {
        Ok((env_v(k, "app=ordered")? == ["", ""]).then_some(()))
    })?;
    k.ok(&["delete", "statefulset", "ordered"], None)?;
    Ok(())
}
