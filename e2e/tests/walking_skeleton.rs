//! The walking skeleton, end to end and only with real parts: Debian's registry, a busybox
//! image pushed to it, `skiff up` as a child process, a pod applied with `skiff apply`, and the
//! container checked from outside skiff (/proc namespaces, the memory cgroup), its log read with
//! `skiff logs`, kubectl's view, deletion, bad input, and a restart that keeps every object.

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use serde_json::Value;

/// The processes whose cgroup path names this container.
fn pids_of(container_id: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cg
            .lines()
            .any(|l| l.contains(container_id) && l.contains("/skiff/"))
        {
            out.push(pid);
        }
    }
    out
}

fn ns_of(pid: &str, ns: &str) -> Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).with_context(|| format!("ns {ns} of {pid}"))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

#[test]
fn walking_skeleton() -> Result<()> {
    with_cluster(scenario)
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;

    // A second skiff on the same data dir is refused, naming the one that holds it.
    let pid = c.proc.as_ref().map(|p| p.child.id()).unwrap_or_default();
    let out = Command::new(&c.bin)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&c.data)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains(&format!(
                "data dir {} is in use by another skiff (pid {pid})",
                c.data.display()
            )),
        "a second skiff up on the same data dir said: {err}"
    );

    // A pod from a real registry, with a memory limit.
    let pod_yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\n  labels: {{app: hello}}\nspec:\n  containers:\n  - name: hello\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"echo hello from skiff; hostname; exec sleep 3600\"]\n    resources:\n      limits:\n        memory: 64Mi\n"
    );
    let pod_file = write(work, "pod.yaml", &pod_yaml)?;
    let out = c.skiff(&["apply", "-f", pod_file.to_str().unwrap_or_default()])?;
    ensure!(out.contains("pod/hello created"), "apply said: {out}");

    let pod = wait_for("pod hello to be Running", Duration::from_secs(120), || {
        let p = c.pod("hello")?;
        Ok((p["status"]["phase"] == "Running").then_some(p))
    })?;
    let cs = &pod["status"]["containerStatuses"][0];
    ensure!(cs["ready"] == true, "container not ready: {cs}");
    ensure!(
        cs["state"]["running"]["startedAt"].is_string(),
        "no startedAt: {cs}"
    );
    ensure!(
        cs["imageID"].as_str().is_some_and(|s| !s.is_empty()),
        "no imageID: {cs}"
    );
    let cid = cs["containerID"]
        .as_str()
        .and_then(|s| s.split_once("://"))
        .map(|(_, id)| id.to_string())
        .context("no containerID")?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for cond in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let ok = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["type"] == cond && x["status"] == "True");
        ensure!(ok, "condition {cond} is not True: {}", pod["status"]);
    }

    // From outside skiff: the process, its namespaces, its memory cgroup.
    let pids = wait_for(
        "the container's process in /proc",
        Duration::from_secs(10),
        || {
            let p = pids_of(&cid);
            Ok((!p.is_empty()).then_some(p))
        },
    )?;
    let pid = pids[0].to_string();
    for ns in ["pid", "mnt", "uts", "ipc", "net"] {
        ensure!(
            ns_of(&pid, ns)? != ns_of("self", ns)?,
            "the container shares the host's {ns} namespace"
        );
    }
    let limit_file = format!("/sys/fs/cgroup/memory/skiff/{uid}/{cid}/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&limit_file)
        .with_context(|| format!("cannot read {limit_file}"))?;
    ensure!(
        limit.trim() == "67108864",
        "memory limit is {limit}, want 64Mi"
    );

    // Its log, through the API and the node agent.
    let logs = wait_for("the pod's log", Duration::from_secs(20), || {
        let l = c.skiff(&["logs", "hello"])?;
        Ok(l.contains("hello from skiff").then_some(l))
    })?;
    ensure!(logs.contains("hello"), "hostname line missing: {logs}");

    // kubectl sees the same pod Running, with the Table skiff serves.
    let kubectl = run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["get", "pods"]))?;
    ensure!(
        kubectl.contains("hello") && kubectl.contains("Running") && kubectl.contains("1/1"),
        "kubectl get pods said: {kubectl}"
    );
    let table = c.skiff(&["get", "pods"])?;
    ensure!(table.contains("Running"), "skiff get pods said: {table}");

    // Bad input: malformed YAML and a missing field fail and store nothing.
    let bad = write(
        work,
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [oops\n",
    )?;
    let err = c.skiff_fails(&["apply", "-f", bad.to_str().unwrap_or_default()])?;
    ensure!(
        err.contains("bad.yaml") && err.contains("invalid YAML"),
        "error was: {err}"
    );
    let noimage = write(
        work,
        "noimage.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n  - name: c\n",
    )?;
    let err = c.skiff_fails(&["apply", "-f", noimage.to_str().unwrap_or_default()])?;
    ensure!(err.contains("spec.containers[0].image"), "error was: {err}");
    let unknown = write(
        work,
        "unknown.yaml",
        "apiVersion: v1\nkind: Gizmo\nmetadata:\n  name: g\n",
    )?;
    let err = c.skiff_fails(&["apply", "-f", unknown.to_str().unwrap_or_default()])?;
    ensure!(err.contains("Gizmo"), "error was: {err}");
    ensure!(c.skiff_fails(&["get", "pod", "noimage"]).is_ok());

    // An image that does not exist: ErrImagePull, then ImagePullBackOff.
    let missing = write(
        work,
        "missing.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: missing\nspec:\n  containers:\n  - name: c\n    image: {reg}/nope:1\n"
        ),
    )?;
    c.skiff(&["apply", "-f", missing.to_str().unwrap_or_default()])?;
    let mut seen = Vec::new();
    wait_for("ImagePullBackOff", Duration::from_secs(60), || {
        let p = c.pod("missing")?;
        let r = p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !r.is_empty() && seen.last() != Some(&r) {
            seen.push(r.clone());
        }
        Ok((r == "ImagePullBackOff").then_some(()))
    })?;
    ensure!(
        seen.first().map(String::as_str) == Some("ErrImagePull"),
        "reasons seen: {seen:?}"
    );
    c.skiff(&["delete", "pod", "missing"])?;

    // restartPolicy: Never leaves a failed container failed; OnFailure restarts it.
    let policies = write(
        work,
        "policies.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: once\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"exit 3\"]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: retry\nspec:\n  restartPolicy: OnFailure\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"exit 1\"]\n"
        ),
    )?;
    c.skiff(&["apply", "-f", policies.to_str().unwrap_or_default()])?;
    let once = wait_for("pod once to fail", Duration::from_secs(60), || {
        let p = c.pod("once")?;
        Ok((p["status"]["phase"] == "Failed").then_some(p))
    })?;
    let term = &once["status"]["containerStatuses"][0]["state"]["terminated"];
    ensure!(
        term["exitCode"] == 3 && term["reason"] == "Error",
        "once: {term}"
    );
    wait_for("pod retry to be restarted", Duration::from_secs(60), || {
        let p = c.pod("retry")?;
        let restarts = p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0);
        Ok((restarts >= 1 && p["status"]["phase"] != "Failed").then_some(()))
    })?;
    ensure!(c.pod("once")?["status"]["containerStatuses"][0]["restartCount"] == 0);
    c.skiff(&["delete", "-f", policies.to_str().unwrap_or_default()])?;
    // `--wait=false` returns while a pod is still terminating: `sleep` as pid 1 ignores SIGTERM,
    // so the pod takes its whole grace period (a pod whose container already exited, or waits
    // in back-off, has nothing to stop and goes at once, so it cannot show this).
    let linger = write(
        work,
        "linger.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: linger\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"
        ),
    )?;
    c.skiff(&["apply", "-f", linger.to_str().unwrap_or_default()])?;
    wait_for("pod linger to run", Duration::from_secs(60), || {
        Ok((c.pod("linger")?["status"]["phase"] == "Running").then_some(()))
    })?;
    c.skiff(&[
        "delete",
        "-f",
        linger.to_str().unwrap_or_default(),
        "--wait=false",
    ])?;
    let gone = c.pod("linger")?;
    ensure!(
        gone["metadata"]["deletionTimestamp"].is_string(),
        "delete --wait=false waited for pod linger to go, or did not delete it: {gone}"
    );
    c.skiff(&["delete", "pod", "linger", "--grace-period", "0", "--force"])?;
    // A timeout shorter than the grace period: an error naming the pod.
    let slow = write(
        work,
        "slow.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"
        ),
    )?;
    c.skiff(&["apply", "-f", slow.to_str().unwrap_or_default()])?;
    wait_for("pod slow to run", Duration::from_secs(60), || {
        Ok((c.pod("slow")?["status"]["phase"] == "Running").then_some(()))
    })?;
    let err = c.skiff_fails(&["delete", "pod", "slow", "--timeout", "1s"])?;
    ensure!(
        err.contains("timed out waiting for pod \"slow\" to be deleted"),
        "delete --timeout 1s said: {err}"
    );

    // Delete waits, as kubectl's does: when it returns, the pod is gone, and with it the process
    // and its cgroups.
    let out = c.skiff(&["delete", "-f", pod_file.to_str().unwrap_or_default()])?;
    ensure!(out.contains("deleted"), "delete said: {out}");
    ensure!(
        c.skiff_fails(&["get", "pod", "hello"])?
            .contains("not found"),
        "pod hello is still there after skiff delete returned"
    );
    wait_for(
        "the container's processes to end",
        Duration::from_secs(20),
        || Ok(pids_of(&cid).is_empty().then_some(())),
    )?;
    let pod_cg = format!("/sys/fs/cgroup/memory/skiff/{uid}");
    ensure!(!Path::new(&pod_cg).exists(), "{pod_cg} is still there");

    // Restart on the same data dir: everything stored is still there.
    let cm = write(
        work,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  a: b\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n",
    )?;
    c.skiff(&["apply", "-f", cm.to_str().unwrap_or_default()])?;
    let before = c.skiff(&["get", "configmap", "keep", "-o", "json"])?;
    c.stop()?;
    c.start()?;
    let after = c.skiff(&["get", "configmap", "keep", "-o", "json"])?;
    let (b, a): (Value, Value) = (
        serde_json::from_str(&before)?,
        serde_json::from_str(&after)?,
    );
    ensure!(
        b == a,
        "configmap changed across restart:\n{before}\n{after}"
    );
    let nss = c.skiff(&["get", "namespaces"])?;
    ensure!(
        nss.contains("team-a") && nss.contains("kube-node-lease"),
        "namespaces: {nss}"
    );
    Ok(())
}
