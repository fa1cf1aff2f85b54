//! Services carry traffic (issue 13, kube-proxy's part): on a `skiff up` node, a ClusterIP
//! Service with a named targetPort spreads connections from the host and from a pod over both
//! ready pods of a Deployment; a pod reaches itself through its own Service (hairpin); a
//! NodePort answers on the node's address; `sessionAffinity: ClientIP` keeps a client on one
//! pod; a Service with no endpoints refuses at once; a UDP Service without a selector reaches
//! the address its hand-written EndpointSlice names; a pod that stops being ready stops
//! receiving; deleting the Services removes their rules from the kernel. All of it is the
//! kernel's nftables table `ip skiff-proxy`, which the test reads too.

use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use serde_json::Value;

fn nft_table() -> String {
    run(Command::new("nft").args(["list", "table", "ip", "skiff-proxy"])).unwrap_or_default()
}

/// The first line of the body `GET /` answers at `addr`.
fn served_name(addr: &str) -> Result<String> {
    let out = http_get(addr)?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.lines().next().unwrap_or_default().to_string())
}

/// The host's first global IPv4 address outside the pod subnet.
fn node_address() -> Result<String> {
    let out = ip(&["-4", "-o", "addr", "show", "scope", "global"])?;
    out.lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|a| a.split('/').next())
        .find(|a| !a.starts_with("10.88."))
        .map(str::to_string)
        .context("this host has no global IPv4 address for node ports")
}

fn service(c: &Cluster, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(
        &c.skiff(&["get", "service", name, "-o", "json"])?,
    )?)
}

/// The names of the pods answering `addr` over `tries` new connections.
fn answers(addr: &str, tries: usize) -> Result<std::collections::BTreeSet<String>> {
    (0..tries).map(|_| served_name(addr)).collect()
}

#[test]
fn services() -> Result<()> {
    with_cluster(|c, work, reg| {
        let had_table = !nft_table().is_empty();
        let result = scenario(c, work, reg);
        if !had_table {
            let _ = run(Command::new("nft").args(["delete", "table", "ip", "skiff-proxy"]));
        }
        result
    })
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    // Each pod serves its own name; ready only while /www/ready exists.
    c.apply_yaml(
        work,
        "web",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: httpd
        image: {reg}/busybox:1.36
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /www/ready && exec busybox httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          exec: {{command: ["sh", "-c", "test -e /www/ready"]}}
          periodSeconds: 1
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
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-sticky}}
spec:
  selector: {{app: web}}
  sessionAffinity: ClientIP
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nobody}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"#
        ),
    )?;
    let ip_of = |name: &str| -> Result<String> {
        Ok(service(c, name)?["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let web = format!("{}:80", ip_of("web")?);
    let pods: Vec<String> = wait_for("both web pods ready", Duration::from_secs(120), || {
        let out = c.skiff(&["get", "pods", "-l", "app=web", "-o", "json"])?;
        let list: Value = serde_json::from_str(&out)?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ready: Vec<String> = items
            .iter()
            .filter(|p| condition_true(p, "Ready"))
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        Ok((ready.len() == 2).then_some(ready))
    })?;

    // From the host, through the cluster IP: both pods answer.
    let seen = wait_for(
        "both pods behind the cluster IP",
        Duration::from_secs(30),
        || {
            let seen = answers(&web, 30).unwrap_or_default();
            Ok((seen.len() == 2).then_some(seen))
        },
    )?;
    ensure!(
        seen.iter().all(|s| pods.contains(s)),
        "answers {seen:?}, pods {pods:?}"
    );

    // From a pod, and from a pod to itself (hairpin).
    let kubectl = c.kubectl("1.33");
    let through_pod = kubectl.ok(&[
        "exec", &pods[0], "--", "sh", "-c",
        &format!(
            "i=0; while [ $i -lt 30 ]; do i=$((i+1)); printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {} 80; done",
            web.trim_end_matches(":80")
        ),
    ], None)?;
    ensure!(
        pods.iter().all(|p| through_pod.contains(p.as_str())),
        "a pod reaches both pods through the Service, itself included: {through_pod}"
    );

    // A node port on the node's address.
    let np = service(c, "web-np")?["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("web-np has a node port")?;
    ensure!((30000..=32767).contains(&np), "node port {np}");
    let node = node_address()?;
    let got = served_name(&format!("{node}:{np}"))?;
    ensure!(pods.contains(&got), "node port answered {got:?}");

    // Session affinity: one client, one pod.
    let sticky = answers(&format!("{}:80", ip_of("web-sticky")?), 20)?;
    ensure!(
        sticky.len() == 1,
        "ClientIP affinity answered from {sticky:?}"
    );

    // No endpoints: refused at once (a TCP reset), not a timeout.
    let nobody = format!("{}:80", ip_of("nobody")?);
    let started = std::time::Instant::now();
    let err = TcpStream::connect_timeout(&nobody.parse()?, Duration::from_secs(3))
        .err()
        .context("a Service without endpoints refuses connections")?;
    ensure!(
        err.kind() == std::io::ErrorKind::ConnectionRefused
            && started.elapsed() < Duration::from_secs(2),
        "connect to {nobody}: {err} after {:?}",
        started.elapsed()
    );

    // UDP to what a hand-written EndpointSlice names (a Service without a selector).
    let echo = |label: &'static str| -> Result<u16> {
        let server = UdpSocket::bind("0.0.0.0:0")?;
        let port = server.local_addr()?.port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let mut reply = format!("{label}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = server.send_to(&reply, from);
            }
        });
        Ok(port)
    };
    let udp_slice = |port: u16| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: udp}}
spec:
  ports: [{{name: echo, port: 53, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: udp-1
  labels: {{kubernetes.io/service-name: udp}}
addressType: IPv4
ports: [{{name: echo, port: {port}, protocol: UDP}}]
endpoints: [{{addresses: ["{node}"]}}]
"#
        )
    };
    c.apply_yaml(work, "udp", &udp_slice(echo("udp-ok")?))?;
    let udp = format!("{}:53", ip_of("udp")?);
    let client = UdpSocket::bind("0.0.0.0:0")?;
    client.set_read_timeout(Some(Duration::from_millis(500)))?;
    let ask = |want: &str| -> Result<Option<(String, std::net::SocketAddr)>> {
        client.send_to(b"ping", &udp)?;
        let mut buf = [0u8; 64];
        Ok(client
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (String::from_utf8_lossy(&buf[..n]).into_owned(), from))
            .filter(|(r, _)| r.starts_with(want)))
    };
    let reply = wait_for(
        "a UDP answer through the Service",
        Duration::from_secs(15),
        || ask("udp-ok"),
    )?;
    ensure!(reply.0 == "udp-ok:ping", "UDP reply {reply:?}");
    ensure!(
        reply.1.to_string() == udp,
        "the reply comes from the Service address: {reply:?}"
    );
    // The endpoint changes while the client keeps sending from the same port: its flow, which
    // would stay on the old endpoint for as long as it sends, is cleared, and the next
    // datagram reaches the new one.
    c.apply_yaml(work, "udp", &udp_slice(echo("udp-new")?))?;
    wait_for(
        "the same client's datagrams to reach the new endpoint",
        Duration::from_secs(15),
        || ask("udp-new"),
    )?;

    // A pod that stops being ready takes no new connections.
    kubectl.ok(&["exec", &pods[1], "--", "sh", "-c", "rm /www/ready"], None)?;
    wait_for(
        "only the ready pod answers",
        Duration::from_secs(30),
        || Ok((answers(&web, 20)? == [pods[0].clone()].into()).then_some(())),
    )?;

    // Deleting the Services takes their rules out of the kernel.
    let table = nft_table();
    ensure!(
        table.contains("dnat to"),
        "the table has DNAT rules: {table}"
    );
    c.skiff(&[
        "delete",
        "service",
        "web",
        "web-np",
        "web-sticky",
        "nobody",
        "udp",
    ])?;
    wait_for("the rules to go", Duration::from_secs(15), || {
        let table = nft_table();
        Ok((!table.contains("dnat to") && !table.contains(&np.to_string())).then_some(()))
    })?;
    Ok(())
}
