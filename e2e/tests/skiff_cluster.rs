//! `skiff cluster`: a control plane and three workers, each a network namespace running real
//! skiff processes, made by one command; a Deployment spread over the workers whose pods
//! reach each other across nodes by pod IP, by ClusterIP, by NodePort and by DNS name; stop
//! and start bring the same objects and workloads back; delete leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use serde_json::Value;

const NAME: &str = "e2e";

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: docker.io/library/busybox:1.36
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'mkdir -p /www && echo \"hello from $HOSTNAME\" > /www/index.html && exec busybox httpd -f -p 8080 -h /www']
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
";

/// Two pods on two different workers, which leave a failed node after 2 s (the API would give
/// them 300).
const API: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: api}}}
      containers:
      - name: api
        image: docker.io/library/busybox:1.36
        imagePullPolicy: IfNotPresent
        command: [sleep, '3600']
";

struct Env {
    bin: PathBuf,
    root: PathBuf,
    home: PathBuf,
}

impl Env {
    fn skiff(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("cluster")
            .args(args)
            .env("SKIFF_CLUSTERS_DIR", &self.root)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG");
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(Command::new(kubectl_path("1.33"))
            .args(["--context", "skiff-e2e"])
            .args(args)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG"))
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all)?)?)
    }

    /// The output of `sh -c script` in pod `pod`.
    fn exec(&self, pod: &str, script: &str) -> Result<String> {
        self.kubectl(&["exec", pod, "--", "sh", "-c", script])
    }
}

/// An HTTP GET of `/` through busybox nc, answered with the body's last line.
fn get(addr: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {addr} {port} | tail -1")
}

/// Processes (not yet reaped ones aside) whose command line names `root`.
fn processes_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            if stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'))
            {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&root).then_some(cmdline)
        })
        .collect()
}

fn wait_web(env: &Env) -> Result<Vec<Value>> {
    wait_for(
        "3 web pods Running and Ready",
        Duration::from_secs(90),
        || {
            let pods = env.json(&["get", "pods", "-l", "app=web"])?;
            let items: Vec<Value> = pods["items"].as_array().cloned().unwrap_or_default();
            let ready = items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| condition_true(p, "Ready"))
                .cloned()
                .collect::<Vec<_>>();
            Ok((ready.len() == 3).then_some(ready))
        },
    )
}

#[test]
fn a_three_worker_cluster_serves_a_deployment_across_its_nodes() -> Result<()> {
    require_root()?;
    let tmp = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
    let env = Env {
        bin: skiff_bin()?,
        root: tmp.path().join("clusters"),
        home: tmp.path().join("home"),
    };
    std::fs::create_dir_all(&env.home)?;
    let result = scenario(&env, tmp.path());
    if result.is_err() {
        for log in ["e2e-control-plane/controller.log", "e2e-worker/agent.log"] {
            let p = env.root.join(NAME).join("nodes").join(log);
            eprintln!("--- {log} (tail) ---\n{}", tail(&p));
        }
    }
    let _ = env.skiff(&["delete", NAME]).output();
    result
}

fn scenario(env: &Env, work: &Path) -> Result<()> {
    let archive = work.join("busybox.tar");
    run(Command::new("sh")
        .arg(workspace().join("scripts/busybox-image.sh"))
        .arg(&archive))?;

    // Bad input first: nothing may be left of it.
    let out = env.skiff(&["create", "Bad_Name"]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("invalid cluster name \"Bad_Name\""),
        "{err}"
    );

    let out = run(&mut env.skiff(&[
        "create",
        NAME,
        "--nodes",
        "3",
        "--image-archive",
        archive.to_str().unwrap_or_default(),
    ]))?;
    ensure!(
        out.contains("cluster e2e: 4 nodes Ready"),
        "create said: {out}"
    );
    let out = env.skiff(&["create", NAME]).output()?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("cluster \"e2e\" already exists"),
        "a second create: {out:?}"
    );
    let list = run(&mut env.skiff(&["list"]))?;
    ensure!(
        list.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("e2e") && l.contains("Running")),
        "{list}"
    );

    let nodes = env.json(&["get", "nodes"])?;
    let items = nodes["items"].as_array().context("nodes")?;
    let names: Vec<&str> = items
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    ensure!(
        names
            == [
                "e2e-control-plane",
                "e2e-worker",
                "e2e-worker2",
                "e2e-worker3"
            ],
        "{names:?}"
    );
    ensure!(
        items[0]["spec"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane",
        "the control plane is not tainted: {}",
        items[0]["spec"]
    );
    let node_ip = |i: usize| -> String {
        items[i]["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or_default()
            .to_owned()
    };

    let manifest = work.join("web.yaml");
    std::fs::write(&manifest, WEB)?;
    env.kubectl(&["apply", "-f", manifest.to_str().unwrap_or_default()])?;
    let pods = wait_web(env)?;
    let mut placed: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    placed.sort_unstable();
    ensure!(
        placed == ["e2e-worker", "e2e-worker2", "e2e-worker3"],
        "one pod per worker: {placed:?}"
    );
    let name = |i: usize| pods[i]["metadata"]["name"].as_str().unwrap_or_default();
    let pod_ip = |i: usize| pods[i]["status"]["podIP"].as_str().unwrap_or_default();
    let svc = env.json(&["get", "service", "web"])?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().context("cluster IP")?;

    // Pod IP across nodes.
    let out = env.exec(name(0), &get(pod_ip(1), 8080))?;
    ensure!(
        out.trim() == format!("hello from {}", name(1)),
        "by pod IP: {out}"
    );
    // ClusterIP: every pod answers, wherever it is.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(env.exec(name(0), &get(cluster_ip, 80))?.trim().to_owned());
        if seen.len() == 3 {
            break;
        }
    }
    ensure!(seen.len() == 3, "by ClusterIP only {seen:?} answered");
    // NodePort, on another node's address, from a pod and from the host.
    let out = env.exec(name(0), &get(&node_ip(2), 30080))?;
    ensure!(
        out.starts_with("hello from web-"),
        "by NodePort from a pod: {out}"
    );
    let out = http_get(&format!("{}:30080", node_ip(3)))?;
    ensure!(
        out.contains("hello from web-"),
        "by NodePort from the host: {out}"
    );
    // The `kubernetes` Service reaches the API server from any pod (plain HTTP until the API
    // has TLS).
    let version = env.exec(
        name(1),
        "printf 'GET /version HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 10.96.0.1 443",
    )?;
    ensure!(
        version.contains("gitVersion"),
        "the kubernetes Service: {version}"
    );
    let eps = env.json(&["get", "endpoints", "kubernetes"])?;
    ensure!(
        eps["subsets"][0]["addresses"][0]["ip"] == node_ip(0).as_str(),
        "the kubernetes Service's endpoints: {eps}"
    );

    // LoadBalancer: every Ready node's address, answered there.
    let lb = work.join("lb.yaml");
    std::fs::write(
        &lb,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-lb}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 8081, targetPort: 8080}]\n",
    )?;
    env.kubectl(&["apply", "-f", lb.to_str().unwrap_or_default()])?;
    let ingress = wait_for(
        "the load balancer's addresses",
        Duration::from_secs(30),
        || {
            let s = env.json(&["get", "service", "web-lb"])?;
            let ips: Vec<String> = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().map(str::to_owned))
                .collect();
            Ok((ips.len() == 4).then_some(ips))
        },
    )?;
    ensure!(ingress.contains(&node_ip(0)), "{ingress:?}");
    for ip in &ingress {
        let out = http_get(&format!("{ip}:8081"))?;
        ensure!(
            out.contains("hello from web-"),
            "by the load balancer at {ip}: {out}"
        );
    }

    // DNS: the Service's name resolves in the pod to its cluster IP, which answers.
    let out = env.exec(name(2), "busybox nslookup web.default.svc.cluster.local")?;
    ensure!(out.contains(cluster_ip), "nslookup said: {out}");
    let out = env.exec(
        name(2),
        &get(
            "$(busybox nslookup web | sed -n 's/^Address: //p' | tail -1)",
            80,
        ),
    )?;
    ensure!(out.starts_with("hello from web-"), "by DNS name: {out}");

    shared_pulls(env, work, &node_ip(0))?;

    node_failure(env, work)?;

    // Stop: nothing of the cluster runs; start: the same objects and workloads come back.
    let uid = pods[0]["metadata"]["uid"].clone();
    run(&mut env.skiff(&["stop", NAME]))?;
    let left = processes_under(&env.root);
    ensure!(left.is_empty(), "processes after stop: {left:?}");
    ensure!(
        run(&mut env.skiff(&["list"]))?.contains("Stopped"),
        "list after stop"
    );
    let out = run(&mut env.skiff(&["start", NAME]))?;
    ensure!(out.contains("4 nodes Ready"), "start said: {out}");
    let back = wait_web(env)?;
    ensure!(
        back.iter().any(|p| p["metadata"]["uid"] == uid),
        "the same pods come back"
    );
    // Its endpoints' Ready pods reach the rules moments after the pods are Ready.
    wait_for("the NodePort after start", Duration::from_secs(20), || {
        let out = http_get(&format!("{}:30080", node_ip(1))).unwrap_or_default();
        Ok(out.contains("hello from web-").then_some(()))
    })?;

    // Delete: nothing left.
    let out = run(&mut env.skiff(&["delete", NAME]))?;
    ensure!(out.contains("cluster e2e deleted"), "delete said: {out}");
    let left = processes_under(&env.root);
    ensure!(left.is_empty(), "processes after delete: {left:?}");
    ensure!(
        !env.root.join(NAME).exists(),
        "the cluster's directory is left"
    );
    let netns = ip(&["netns", "list"])?;
    ensure!(!netns.contains("skiff-e2e-"), "namespaces left: {netns}");
    let links = ip(&["-o", "link", "show"])?;
    ensure!(
        !links
            .lines()
            .any(|l| l.contains(": skc") || l.contains(": skv")),
        "interfaces left: {links}"
    );
    let tables = run(Command::new("nft").args(["list", "tables"]))?;
    ensure!(
        !tables.contains("skiff-cluster-e2e"),
        "nftables left: {tables}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mounts.contains(env.root.to_string_lossy().as_ref()),
        "mounts left"
    );
    let kubeconfig = std::fs::read_to_string(env.home.join(".kube/config"))?;
    ensure!(
        !kubeconfig.contains("skiff-e2e"),
        "context left: {kubeconfig}"
    );
    ensure!(
        run(&mut env.skiff(&["list"]))?.lines().count() == 1,
        "list after delete"
    );
    Ok(())
}

/// A registry on the host's end of the cluster's bridge serves the nodes over plain HTTP, and
/// the nodes' shared blob cache fetches each blob from it once while every node still asks it
/// for the manifest.
fn shared_pulls(env: &Env, work: &Path, control_plane_ip: &str) -> Result<()> {
    let (net, _) = control_plane_ip.rsplit_once('.').context("a node IP")?;
    let addr = format!("{net}.1:{}", free_port()?);
    let _registry = start_registry_at(work, "bridge-registry", &addr, "")?;
    push_busybox(&work.join("cached-image"), &addr, "cached:1")?;
    let manifest = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: puller}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: puller}}}}
  template:
    metadata: {{labels: {{app: puller}}}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: puller}}}}}}
      containers:
      - {{name: c, image: '{addr}/cached:1', command: [sleep, '3600']}}
"
    );
    let file = work.join("puller.yaml");
    std::fs::write(&file, manifest)?;
    env.kubectl(&["apply", "-f", file.to_str().unwrap_or_default()])?;
    wait_for("a puller on every worker", Duration::from_secs(120), || {
        let pods = env.json(&["get", "pods", "-l", "app=puller"])?;
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        Ok((running == 3).then_some(()))
    })?;
    // The access log: `<client> - - [time] "GET /v2/cached/blobs/sha256:... HTTP/1.1" 200 ...`.
    let log = std::fs::read_to_string(work.join("bridge-registry.log"))?;
    let from_nodes = |what: &str| -> Vec<String> {
        log.lines()
            .filter(|l| {
                l.starts_with(&format!("{net}."))
                    && l.contains(&format!("\"GET /v2/cached/{what}/"))
            })
            .filter_map(|l| l.split(&format!("/v2/cached/{what}/")).nth(1))
            .filter_map(|rest| rest.split(' ').next().map(str::to_owned))
            .collect()
    };
    let blobs = from_nodes("blobs");
    let mut distinct = blobs.clone();
    distinct.sort();
    distinct.dedup();
    ensure!(
        distinct.len() >= 2 && distinct.len() == blobs.len(),
        "each blob fetched once for three nodes: {blobs:?}"
    );
    let manifests = from_nodes("manifests");
    ensure!(
        manifests.len() >= 3,
        "every node asks for the manifest itself: {manifests:?}"
    );
    env.kubectl(&["delete", "deployment", "puller"])?;
    Ok(())
}

/// Pods (not being deleted) of `app`, by node.
fn placement(env: &Env, app: &str) -> Result<Vec<(String, String)>> {
    let pods = env.json(&["get", "pods", "-l", &format!("app={app}")])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_owned(),
                p["spec"]["nodeName"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// A worker's agent killed with SIGKILL: its node goes Unknown and tainted, its pods leave
/// Services at once and the node when their tolerations run out, and run elsewhere; started
/// again, the node is clean: untainted, and the replaced pod gone from it.
fn node_failure(env: &Env, work: &Path) -> Result<()> {
    let manifest = work.join("api.yaml");
    std::fs::write(&manifest, API)?;
    env.kubectl(&["apply", "-f", manifest.to_str().unwrap_or_default()])?;
    let before = wait_for("2 api pods Running", Duration::from_secs(60), || {
        let pods = env.json(&["get", "pods", "-l", "app=api"])?;
        let running: Vec<Value> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .cloned()
            .collect();
        Ok((running.len() == 2).then_some(running))
    })?;
    let victim_node = before[0]["spec"]["nodeName"]
        .as_str()
        .context("node")?
        .to_owned();
    let victim_pod = before[0]["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let lock = env
        .root
        .join(NAME)
        .join("nodes")
        .join(&victim_node)
        .join("agent/skiff.lock");
    let pid = std::fs::read_to_string(&lock)?.trim().to_owned();
    run(Command::new("kill").args(["-KILL", &pid]))?;

    // 40 s without a heartbeat: Unknown, and tainted.
    wait_for("the node to be Unknown", Duration::from_secs(70), || {
        let n = env.json(&["get", "node", &victim_node])?;
        let unknown = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
        let tainted = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute");
        Ok((unknown && tainted).then_some(()))
    })?;
    // Its web pod left the Service's endpoints: every request through the cluster IP answers.
    let svc = env.json(&["get", "service", "web"])?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().context("cluster IP")?;
    let client = placement(env, "web")?
        .into_iter()
        .find(|(_, node)| *node != victim_node)
        .context("a web pod on a live node")?
        .0;
    wait_for(
        "the dead node's endpoint to leave",
        Duration::from_secs(20),
        || {
            let slices = env.json(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ])?;
            let ready = slices["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] == true)
                .count();
            Ok((ready == 2).then_some(()))
        },
    )?;
    for _ in 0..6 {
        let out = env.exec(&client, &get(cluster_ip, 80))?;
        ensure!(
            out.starts_with("hello from web-"),
            "a request to a dead node: {out:?}"
        );
    }
    // The api pod is evicted after its 2 s and replaced on the free live worker.
    let after = wait_for(
        "the api pod to run elsewhere",
        Duration::from_secs(60),
        || {
            let p = placement(env, "api")?;
            let moved = p.len() == 2
                && p.iter()
                    .all(|(name, node)| *node != victim_node && *name != victim_pod);
            Ok(moved.then_some(p))
        },
    )?;
    wait_for("the replacement to run", Duration::from_secs(60), || {
        let pods = env.json(&["get", "pods", "-l", "app=api"])?;
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        Ok((running == 2).then_some(()))
    })?;
    let events = env.kubectl(&["get", "events", "-A"])?;
    ensure!(
        events.contains("TaintManagerEviction"),
        "no eviction event: {after:?}"
    );

    // Back: the node is untainted and Ready, and the evicted pod is gone for good.
    run(&mut env.skiff(&["start", NAME]))?;
    wait_for(
        "the node to come back clean",
        Duration::from_secs(60),
        || {
            let n = env.json(&["get", "node", &victim_node])?;
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let untainted = n["spec"]["taints"].as_array().is_none_or(Vec::is_empty);
            let gone = env
                .kubectl(&["get", "pod", &victim_pod, "--ignore-not-found"])?
                .trim()
                .is_empty();
            Ok((ready && untainted && gone).then_some(()))
        },
    )?;
    Ok(())
}

#[test]
fn three_control_plane_members_serve_one_cluster() -> Result<()> {
    require_root()?;
    let tmp = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
    let env = Env {
        bin: skiff_bin()?,
        root: tmp.path().join("clusters"),
        home: tmp.path().join("home"),
    };
    std::fs::create_dir_all(&env.home)?;
    let result = (|| {
        let out = run(&mut env.skiff(&["create", NAME, "--controllers", "3", "--nodes", "1"]))?;
        ensure!(
            out.contains("cluster e2e: 4 nodes Ready"),
            "create said: {out}"
        );
        let nodes = env.json(&["get", "nodes"])?;
        let names: Vec<&str> = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        ensure!(
            names
                == [
                    "e2e-control-plane",
                    "e2e-control-plane2",
                    "e2e-control-plane3",
                    "e2e-worker"
                ],
            "{names:?}"
        );
        // Every member is an endpoint of the `kubernetes` Service.
        let eps = wait_for("three API endpoints", Duration::from_secs(30), || {
            let eps = env.json(&["get", "endpoints", "kubernetes"])?;
            let n = eps["subsets"][0]["addresses"]
                .as_array()
                .map_or(0, Vec::len);
            Ok((n == 3).then_some(eps))
        })?;
        ensure!(eps["subsets"][0]["ports"][0]["port"] == 6443, "{eps}");
        // The kubeconfig names the load balancer in front of the members, so losing the
        // first member (SIGKILL) loses neither kubectl nor writes.
        let config = std::fs::read_to_string(env.home.join(".kube/config"))?;
        ensure!(
            config.contains(".254:6443"),
            "the kubeconfig does not name the load balancer: {config}"
        );
        let lock = env
            .root
            .join(NAME)
            .join("nodes/e2e-control-plane/controller/skiff.lock");
        let pid: u32 = std::fs::read_to_string(&lock)?.trim().parse()?;
        run(Command::new("kill").args(["-KILL", &pid.to_string()]))?;
        wait_for(
            "a write through the load balancer without the first member",
            Duration::from_secs(60),
            || {
                Ok(env
                    .kubectl(&["create", "configmap", "after-loss", "--from-literal=a=b"])
                    .ok())
            },
        )?;
        ensure!(
            env.json(&["get", "configmap", "after-loss"])?["data"]["a"] == "b",
            "the write is not there"
        );
        let out = run(&mut env.skiff(&["start", NAME]))?;
        ensure!(out.contains("4 nodes Ready"), "start said: {out}");
        run(&mut env.skiff(&["delete", NAME]))?;
        let left = processes_under(&env.root);
        ensure!(left.is_empty(), "processes after delete: {left:?}");
        let netns = ip(&["netns", "list"])?;
        ensure!(!netns.contains("skiff-e2e-"), "namespaces left: {netns}");
        Ok(())
    })();
    let _ = env.skiff(&["delete", NAME]).output();
    result
}
