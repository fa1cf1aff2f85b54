//! Cluster DNS (issue 13, CoreDNS's part): on a `skiff up` node every pod's resolv.conf
//! names the cluster DNS address with the Kubernetes search path and `ndots:5`, and the node
//! agent answers there: a Service's name (full, and short through the search path), a
//! headless Service's pods, SRV for a named port, an ExternalName's CNAME, a pod's
//! `a-b-c-d.<ns>.pod` name; every other name goes to the node's resolvers (here a fake
//! upstream the test runs, named by `--resolv-conf`), once, then from the cache.
//! `dnsPolicy: None` with `dnsConfig`, and `Default`, get what they ask for. The node itself
//! asks the same address. `kube-system/kube-dns` holds the address, as in kubeadm clusters.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use serde_json::Value;

/// The fake upstream's address: on loopback, which the node agent (on the host) reaches.
const UPSTREAM: &str = "127.1.53.1";
/// What the upstream answers every A query with.
const OUTSIDE_IP: &str = "192.0.2.123";

/// A resolver that answers every A question with [`OUTSIDE_IP`] (TTL 60) and every other with
/// no records, counting the questions.
fn fake_upstream(asked: Arc<AtomicUsize>) -> Result<()> {
    let socket = UdpSocket::bind((UPSTREAM, 53)).context("bind the fake upstream on port 53")?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            if n < 17 {
                continue;
            }
            asked.fetch_add(1, Ordering::SeqCst);
            // The question ends after the name's zero label and 4 bytes of type and class.
            let Some(end) = q[12..].iter().position(|b| *b == 0).map(|p| 12 + p + 5) else {
                continue;
            };
            let is_a = q.get(end - 4..end - 2) == Some(&[0, 1]);
            let mut r = Vec::from(&q[..2]);
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            if is_a {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 123]);
            }
            let _ = socket.send_to(&r, from);
        }
    });
    Ok(())
}

fn running(c: &Cluster, name: &str) -> Result<Value> {
    wait_for(
        &format!("pod {name} running"),
        Duration::from_secs(120),
        || {
            let p = c.pod(name)?;
            Ok((p["status"]["phase"] == "Running" && condition_true(&p, "Ready")).then_some(p))
        },
    )
}

#[test]
fn dns() -> Result<()> {
    with_cluster(|c, work, reg| {
        let had_address = ip(&["-4", "addr", "show", "dev", "lo"])?.contains("10.96.0.10/32");
        let result = scenario(c, work, reg);
        if !had_address {
            let _ = ip(&["addr", "del", "10.96.0.10/32", "dev", "lo"]);
        }
        let _ = ip(&["addr", "del", &format!("{UPSTREAM}/32"), "dev", "lo"]);
        result
    })
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    let asked = Arc::new(AtomicUsize::new(0));
    ip(&["addr", "add", &format!("{UPSTREAM}/32"), "dev", "lo"]).ok();
    fake_upstream(asked.clone())?;
    let resolv = work.join("node-resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {UPSTREAM}\nsearch corp.example\n"),
    )?;
    c.extra_args = vec!["--resolv-conf".into(), resolv.display().to_string()];
    c.start()?;

    let kube_dns: Value = serde_json::from_str(&c.skiff(&[
        "get",
        "service",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "json",
    ])?)?;
    ensure!(
        kube_dns["spec"]["clusterIP"] == "10.96.0.10",
        "kube-dns: {kube_dns}"
    );

    let busybox = format!("{reg}/busybox:1.36");
    c.apply_yaml(
        work,
        "apps",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers:
  - name: httpd
    image: {busybox}
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec busybox httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-pods}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: outside}}
spec:
  type: ExternalName
  externalName: www.outside.example
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: c
    image: {busybox}
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: custom}}
spec:
  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["192.0.2.1"]
    searches: ["mine.example"]
    options: [{{name: ndots, value: "2"}}]
  containers:
  - name: c
    image: {busybox}
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: plain}}
spec:
  dnsPolicy: Default
  containers:
  - name: c
    image: {busybox}
    command: ["sleep", "3600"]
"#
        ),
    )?;
    let web = running(c, "web")?;
    let web_ip = web["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for p in ["client", "custom", "plain"] {
        running(c, p)?;
    }
    let cluster_ip =
        serde_json::from_str::<Value>(&c.skiff(&["get", "service", "web", "-o", "json"])?)?["spec"]
            ["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    let kubectl = c.kubectl("1.33");
    let in_pod =
        |pod: &str, script: &str| kubectl.ok(&["exec", pod, "--", "sh", "-c", script], None);

    let conf = in_pod("client", "cat /etc/resolv.conf")?;
    ensure!(
        conf.contains("nameserver 10.96.0.10")
            && conf.contains(
                "search default.svc.cluster.local svc.cluster.local cluster.local corp.example"
            )
            && conf.contains("options ndots:5"),
        "client's resolv.conf: {conf}"
    );
    let custom = in_pod("custom", "cat /etc/resolv.conf")?;
    ensure!(
        custom.contains("nameserver 192.0.2.1")
            && custom.contains("search mine.example")
            && custom.contains("ndots:2")
            && !custom.contains("10.96.0.10"),
        "dnsPolicy None: {custom}"
    );
    let plain = in_pod("plain", "cat /etc/resolv.conf")?;
    ensure!(
        plain.contains(&format!("nameserver {UPSTREAM}")) && plain.contains("search corp.example"),
        "dnsPolicy Default: {plain}"
    );

    // Retried: the first query may come before the Service is in the zone.
    let lookup = |what: &str| -> Result<String> {
        wait_for(&format!("nslookup {what}"), Duration::from_secs(20), || {
            Ok(in_pod("client", &format!("nslookup {what}")).ok())
        })
    };
    let full = lookup("web.default.svc.cluster.local")?;
    ensure!(full.contains(&cluster_ip), "web's full name: {full}");
    // A short name through the search path, by glibc's resolver (busybox's nslookup does not
    // search): the node's getent, in a mount namespace whose /etc/resolv.conf is the pod's.
    let pod_resolv = work.join("pod-resolv.conf");
    std::fs::write(&pod_resolv, &conf)?;
    let short = wait_for("getent hosts web", Duration::from_secs(20), || {
        Ok(run(Command::new("unshare").args([
            "--mount",
            "sh",
            "-c",
            &format!(
                "mount --bind {} /etc/resolv.conf && getent ahostsv4 web",
                pod_resolv.display()
            ),
        ]))
        .ok())
    })?;
    ensure!(
        short.contains(&cluster_ip),
        "web through the search path: {short}"
    );
    let headless = lookup("web-pods.default.svc.cluster.local")?;
    ensure!(headless.contains(&web_ip), "headless: {headless}");
    let srv = lookup("-type=srv _http._tcp.web.default.svc.cluster.local")?;
    ensure!(
        srv.contains("80") && srv.contains("web.default.svc.cluster.local"),
        "SRV: {srv}"
    );
    let pod_name = format!("{}.default.pod.cluster.local", web_ip.replace('.', "-"));
    let pod = lookup(&pod_name)?;
    ensure!(pod.contains(&web_ip), "pod record: {pod}");
    let cname = lookup("outside.default.svc.cluster.local")?;
    ensure!(
        cname.contains("www.outside.example") && cname.contains(OUTSIDE_IP),
        "ExternalName: {cname}"
    );
    let missing = in_pod(
        "client",
        "nslookup nothing.default.svc.cluster.local 2>&1; true",
    )?;
    ensure!(
        !missing.contains("Address: 10.")
            && (missing.contains("NXDOMAIN") || missing.contains("can't find")),
        "a missing Service: {missing}"
    );

    // Outside names: forwarded once, then answered from the cache.
    let before = asked.load(Ordering::SeqCst);
    for _ in 0..3 {
        let out = lookup("api.partner.example.")?;
        ensure!(out.contains(OUTSIDE_IP), "forwarded: {out}");
    }
    let a_queries = asked.load(Ordering::SeqCst) - before;
    // busybox asks A and AAAA once each; the two repeats come from the cache.
    ensure!(
        a_queries <= 2,
        "the upstream was asked {a_queries} times for one name"
    );

    // The node itself asks the same address.
    let from_host = run(Command::new("busybox").args([
        "nslookup",
        "web.default.svc.cluster.local",
        "10.96.0.10",
    ]))?;
    ensure!(
        from_host.contains(&cluster_ip),
        "from the node: {from_host}"
    );
    Ok(())
}
