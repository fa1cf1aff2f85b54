//! Nodes that share no link: two network namespaces on two different host links (the host
//! routes between 192.168.201.0/24 and 192.168.202.0/24), a `skiff up` in one and a
//! `skiff agent` in the other. Each reaches the other's pod subnet through the VXLAN overlay
//! (`skiff.vxlan`), so a pod on one node reaches a pod on the other by pod IP and through a
//! Service, and only the cluster's nodes may send VXLAN packets.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use serde_json::Value;

const PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  nodeName: ov-b
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: docker.io/library/busybox:1.36
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /www && echo hello from b > /www/index.html && exec busybox httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: ov-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/library/busybox:1.36
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: 8080}]
";

/// `program` in the namespace's network only (`nsenter --net`): `ip netns exec` would also
/// give it a mount namespace with a sysfs of its own, without the host's cgroup mounts.
fn in_net(ns: &Netns, program: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", ns.name))
        .arg(program);
    cmd
}

/// A namespace on a link of its own: `host_ip` on the host's end, `ip` inside, routed out
/// through the host.
fn node_ns(suffix: &str, subnet: u8) -> Result<Netns> {
    let ns = Netns::for_test(suffix)?;
    let host_end = format!("ov{}{suffix}", std::process::id() % 10000);
    ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("192.168.{subnet}.1/24"),
        "dev",
        &host_end,
    ])?;
    ip(&["link", "set", &host_end, "up"])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("192.168.{subnet}.2/24"),
        "dev",
        "eth0",
    ])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &format!("192.168.{subnet}.1"),
    ])?;
    Ok(ns)
}

#[test]
fn nodes_on_different_links_reach_each_others_pods_through_vxlan() -> Result<()> {
    require_root()?;
    Netns::sweep_stale()?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    let tmp = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
    let work = tmp.path();
    let a = node_ns("a", 201)?;
    let b = node_ns("b", 202)?;
    let bin = skiff_bin()?;
    let (data_a, data_b) = (work.join("a"), work.join("b"));
    let mut up = Proc::spawn(
        "skiff up",
        in_net(&a, &bin)
            .args(["up", "--data-dir"])
            .arg(&data_a)
            .args([
                "--listen",
                "192.168.201.2:6443",
                "--node-ip",
                "192.168.201.2",
                "--node-name",
                "ov-a",
            ])
            .env("RUST_LOG", "info"),
        &work.join("a.log"),
    )?;
    let kubeconfig = data_a.join("kubeconfig");
    wait_for("the API", Duration::from_secs(30), || {
        Ok(kubeconfig.exists().then_some(()))
    })?;
    let mut agent = Proc::spawn(
        "skiff agent",
        in_net(&b, &bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["agent", "--data-dir"])
            .arg(&data_b)
            .args(["--node-name", "ov-b", "--node-ip", "192.168.202.2"])
            .env("RUST_LOG", "info"),
        &work.join("b.log"),
    )?;
    let result = scenario(work, &a, &b, &bin, &kubeconfig);
    if result.is_err() {
        eprintln!("--- a.log ---\n{}", tail(&work.join("a.log")));
        eprintln!("--- b.log ---\n{}", tail(&work.join("b.log")));
    }
    for (ns, data) in [(&b, &data_b), (&a, &data_a)] {
        let _ = in_net(ns, &bin)
            .args(["down", "--data-dir"])
            .arg(data)
            .output();
    }
    let _ = agent.terminate(Duration::from_secs(10));
    let _ = up.terminate(Duration::from_secs(10));
    cleanup_host(work);
    result
}

fn scenario(work: &Path, a: &Netns, b: &Netns, bin: &Path, kubeconfig: &Path) -> Result<()> {
    let k = Kubectl {
        bin: kubectl_path("1.33"),
        kubeconfig: kubeconfig.to_path_buf(),
    };
    for node in ["ov-a", "ov-b"] {
        wait_node_ready(&k, node, &work.join("b.log"))?;
    }
    let archive = work.join("busybox.tar");
    run(Command::new("sh")
        .arg(workspace().join("scripts/busybox-image.sh"))
        .arg(&archive))?;
    for data in ["a", "b"] {
        run(Command::new(bin)
            .args(["image", "--data-dir"])
            .arg(work.join(data))
            .arg("import")
            .arg(&archive))?;
    }
    // Each node routes the other's pod subnet through the overlay.
    let nodes: Value = serde_json::from_str(&k.ok(&["get", "nodes", "-o", "json"], None)?)?;
    let cidr_of = |name: &str| -> String {
        nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["metadata"]["name"] == name)
            .and_then(|n| n["spec"]["podCIDR"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let cidr_b = cidr_of("ov-b");
    wait_for(
        "a's overlay route to b's pods",
        Duration::from_secs(30),
        || {
            let routes = a.ip(&["route"])?;
            Ok(routes
                .lines()
                .any(|l| l.starts_with(&cidr_b) && l.contains("dev skiff.vxlan"))
                .then_some(()))
        },
    )?;
    let rules = run(Command::new("ip").args([
        "netns",
        "exec",
        &b.name,
        "nft",
        "list",
        "table",
        "ip",
        "skiff-routes",
    ]))?;
    ensure!(
        rules.contains("vxlan-guard") && rules.contains("192.168.201.2"),
        "b's VXLAN guard: {rules}"
    );

    let manifest = work.join("pods.yaml");
    std::fs::write(&manifest, PODS)?;
    k.ok(
        &["apply", "-f", manifest.to_str().unwrap_or_default()],
        None,
    )?;
    k.ok(
        &[
            "wait",
            "--for=condition=Ready",
            "pod/server",
            "pod/client",
            "--timeout=60s",
        ],
        None,
    )?;
    let server: Value =
        serde_json::from_str(&k.ok(&["get", "pod", "server", "-o", "json"], None)?)?;
    let pod_ip = server["status"]["podIP"].as_str().context("pod IP")?;
    let svc: Value =
        serde_json::from_str(&k.ok(&["get", "service", "server", "-o", "json"], None)?)?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().context("cluster IP")?;
    for (what, addr) in [
        ("pod IP", format!("{pod_ip} 8080")),
        ("ClusterIP", format!("{cluster_ip} 80")),
    ] {
        let out = k.ok(
            &[
                "exec",
                "client",
                "--",
                "sh",
                "-c",
                &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {addr} | tail -1"),
            ],
            None,
        )?;
        ensure!(
            out.trim() == "hello from b",
            "by {what} across the overlay: {out:?}"
        );
    }
    Ok(())
}
