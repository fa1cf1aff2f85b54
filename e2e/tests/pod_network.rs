//! Pod networking end to end with Debian's CNI plugins (bridge, host-local, loopback,
//! portmap) and the default network `skiff up` writes: two busybox pods get distinct IPs in
//! the pod subnet, one reaches the other over the bridge, the host reaches a hostPort through
//! portmap (on 127.0.0.1 and on a non-loopback node address), traffic leaving the node is
//! masqueraded (a server in a network namespace with no route back to the pod subnet sees the
//! node's address), all of it survives a restart of
//! skiff, a hostNetwork pod keeps the host's network, and deleting the pods releases their
//! addresses, veths and iptables rules. Without the plugins the node is NotReady, naming the
//! missing one. What the test created on the host (the bridge, portmap's base chains, a dummy
//! address) is removed at the end.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::*;
use serde_json::Value;

/// The bridge of the default network for [`POD_CIDR`] (`skiff` and its first octets in hex).
const BRIDGE: &str = "skiff0a5800";
const NETWORK_DIR: &str = "/var/lib/cni/networks/skiff";
const POD_CIDR: &str = "10.88.0.0/16";
/// A benchmark-range address the test puts on a dummy link when the host has no
/// non-loopback IPv4 address of its own.
const DUMMY_LINK: &str = "skiff-e2e-dum0";
const DUMMY_IP: &str = "198.18.0.1";

/// A range for the test's "outside" link: the node end and the outside end of a /30.
const OUTSIDE_NODE_IP: &str = "198.19.0.1";
const OUTSIDE_IP: &str = "198.19.0.2";

/// What the host looked like before the test, so it removes only what it made.
struct HostBefore {
    bridge: bool,
    /// skiff's nftables table (the pod subnet's masquerade) was there.
    skiff_table: bool,
    hostport_chain: bool,
    network_dir: bool,
    ip_forward: String,
}

impl HostBefore {
    fn take() -> Self {
        HostBefore {
            bridge: Path::new("/sys/class/net").join(BRIDGE).exists(),
            skiff_table: skiff_table().is_ok(),
            hostport_chain: nat_rules().contains("CNI-HOSTPORT-DNAT"),
            network_dir: Path::new(NETWORK_DIR).exists(),
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default(),
        }
    }

    fn restore(&self) {
        if !self.bridge {
            let _ = ip(&["link", "del", BRIDGE]);
        }
        if !self.hostport_chain {
            let ipt = |args: &[&str]| {
                let _ = Command::new("iptables")
                    .args(["-w", "-t", "nat"])
                    .args(args)
                    .output();
            };
            for hook in ["PREROUTING", "OUTPUT"] {
                ipt(&[
                    "-D",
                    hook,
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    "-j",
                    "CNI-HOSTPORT-DNAT",
                ]);
            }
            ipt(&[
                "-D",
                "POSTROUTING",
                "-m",
                "comment",
                "--comment",
                "CNI portfwd requiring masquerade",
                "-j",
                "CNI-HOSTPORT-MASQ",
            ]);
            for chain in [
                "CNI-HOSTPORT-DNAT",
                "CNI-HOSTPORT-MASQ",
                "CNI-HOSTPORT-SETMARK",
            ] {
                ipt(&["-F", chain]);
                ipt(&["-X", chain]);
            }
        }
        if !self.skiff_table {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", "skiff"])
                .output();
        }
        if !self.network_dir {
            let _ = std::fs::remove_dir_all(NETWORK_DIR);
        }
        if !self.ip_forward.is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.ip_forward);
        }
        let _ = ip(&["link", "del", DUMMY_LINK]);
    }
}

/// `nft list table ip skiff`.
fn skiff_table() -> Result<String> {
    run(Command::new("nft").args(["list", "table", "ip", "skiff"]))
}

/// A server in a network namespace of its own, linked to the host by a veth and with no
/// route to the pod subnet, answers with the address it sees: a pod reaching it must come
/// out as the node's end of that link, or the answer has nowhere to go.
fn egress_is_masqueraded(c: &Cluster, pod: &str) -> Result<()> {
    let table = skiff_table()?;
    ensure!(
        table.contains(POD_CIDR) && table.contains("masquerade"),
        "skiff's nftables table: {table}"
    );
    let ns = Netns::for_test("out")?;
    let link = format!("sko{}", std::process::id());
    ip(&[
        "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    let result = (|| {
        ip(&[
            "addr",
            "add",
            &format!("{OUTSIDE_NODE_IP}/30"),
            "dev",
            &link,
        ])?;
        ip(&["link", "set", &link, "up"])?;
        ns.ip(&["addr", "add", &format!("{OUTSIDE_IP}/30"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        let server = "import socket\n\
            s = socket.socket()\n\
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind(('198.19.0.2', 8099))\n\
            s.listen(8)\n\
            while True:\n    \
                c, a = s.accept()\n    \
                c.sendall(('peer=' + a[0] + '\\n').encode())\n    \
                c.close()\n";
        let mut child = ns
            .command(Path::new("python3"))
            .args(["-c", server])
            .spawn()
            .context("start the outside server")?;
        let seen = wait_for(
            "the pod to reach the outside server",
            Duration::from_secs(30),
            || {
                let out = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(c.kubeconfig())
                    .args([
                        "exec", pod, "--", "busybox", "nc", "-w", "3", OUTSIDE_IP, "8099",
                    ])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                Ok(text.contains("peer=").then_some(text))
            },
        );
        let _ = child.kill();
        let _ = child.wait();
        let seen = seen?;
        ensure!(
            seen.trim() == format!("peer={OUTSIDE_NODE_IP}"),
            "the outside server saw {seen:?}, not the node's address {OUTSIDE_NODE_IP}"
        );
        Ok(())
    })();
    let _ = ip(&["link", "del", &link]);
    result
}

fn nat_rules() -> String {
    run(Command::new("iptables").args(["-w", "-t", "nat", "-S"])).unwrap_or_default()
}

/// The host's first global IPv4 address, or a dummy one the test adds.
fn node_address() -> Result<String> {
    let out = ip(&["-4", "-o", "addr", "show", "scope", "global"])?;
    for line in out.lines() {
        let mut words = line.split_whitespace();
        if let Some(addr) = words.by_ref().skip_while(|w| *w != "inet").nth(1)
            && let Some(a) = addr.split('/').next()
            && !a.starts_with("10.88.")
        {
            return Ok(a.to_string());
        }
    }
    ip(&["link", "add", DUMMY_LINK, "type", "dummy"])?;
    ip(&["addr", "add", &format!("{DUMMY_IP}/32"), "dev", DUMMY_LINK])?;
    ip(&["link", "set", DUMMY_LINK, "up"])?;
    Ok(DUMMY_IP.to_string())
}

fn in_pod_subnet(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|a| a.octets()[0] == 10 && a.octets()[1] == 88)
}

/// The sandboxes' persisted records.
fn sandbox_records(data: &Path) -> Vec<Value> {
    std::fs::read_dir(data.join("runtime/sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The host ends of the pods' veths, from the CNI results the runtime keeps.
fn host_veths(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| {
            r["network"]["result"]["interfaces"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|i| i["sandbox"].is_null() && i["name"] != BRIDGE)
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

/// Applies pod `name` from `yaml` and waits for it to run; its IP, checked to be in the pod
/// subnet and to be `podIPs[0]` too.
fn run_pod(c: &Cluster, work: &Path, name: &str, yaml: &str) -> Result<String> {
    let file = write(work, &format!("{name}.yaml"), yaml)?;
    c.skiff(&["apply", "-f", file.to_str().unwrap_or_default()])?;
    let (ip, status) = wait_for(
        &format!("pod {name} to run with an IP"),
        Duration::from_secs(120),
        || {
            let p = c.pod(name)?;
            let ip = p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let running = p["status"]["phase"] == "Running" && !ip.is_empty();
            Ok(running.then(|| (ip, p["status"].clone())))
        },
    )?;
    ensure!(in_pod_subnet(&ip), "{name}: IP {ip} not in {POD_CIDR}");
    ensure!(
        status["podIPs"][0]["ip"] == ip.as_str(),
        "{name}: podIPs in {status}"
    );
    Ok(ip)
}

#[test]
fn pod_network() -> Result<()> {
    require_root()?;
    if !Path::new("/usr/lib/cni/bridge").exists() && !Path::new("/opt/cni/bin/bridge").exists() {
        bail!("the CNI plugins are not installed (apt-get install containernetworking-plugins)");
    }
    let tmp = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
    let work = tmp.path();
    let (_registry, reg) = start_registry(work)?;
    push_busybox(&work.join("image"), &reg, "busybox:1.36")?;

    let before = HostBefore::take();
    let mut c = Cluster::new(work)?;
    c.extra_args = vec!["--pod-cidr".into(), POD_CIDR.into()];
    let result = scenario(&mut c, work, &reg);
    if result.is_err() {
        eprintln!("--- skiff up log (tail) ---\n{}", tail(&c.log));
        // Let the node agent tear the pods down (CNI DEL) before the cluster goes.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(c.kubeconfig())
            .args([
                "delete",
                "pods",
                "--all",
                "--grace-period=1",
                "--wait=false",
            ])
            .output();
        let _ = wait_for("sandboxes to go", Duration::from_secs(30), || {
            Ok(sandbox_records(&c.data).is_empty().then_some(()))
        });
    }
    let _ = c.stop();
    cleanup_host(work);
    before.restore();
    result
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str) -> Result<()> {
    c.start()?;
    let conflist = c.data.join("runtime/cni/10-skiff.conflist");
    let conf: Value = serde_json::from_slice(
        &std::fs::read(&conflist).with_context(|| format!("{}", conflist.display()))?,
    )?;
    ensure!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == POD_CIDR,
        "default config: {conf}"
    );

    // B serves HTTP on 8080, also published on a hostPort.
    let host_port = free_port()?;
    let server_ip = run_pod(
        c,
        work,
        "server",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\nspec:\n  containers:\n  - name: httpd\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo hello-from-server > /www/index.html && exec busybox httpd -f -p 8080 -h /www\"]\n    ports:\n    - containerPort: 8080\n      hostPort: {host_port}\n"
        ),
    )?;

    // A fetches from B by pod IP, then stays up.
    let client_ip = run_pod(
        c,
        work,
        "client",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"for i in 1 2 3 4 5; do printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | busybox nc -w 3 {server_ip} 8080 > /tmp/got; busybox grep -q hello-from-server /tmp/got && cat /tmp/got && echo fetched-ok && break; sleep 1; done; exec sleep 3600\"]\n"
        ),
    )?;
    ensure!(client_ip != server_ip, "both pods have IP {client_ip}");
    let logs = wait_for(
        "the client to fetch from the server",
        Duration::from_secs(30),
        || {
            let l = c.skiff(&["logs", "client"])?;
            Ok(l.contains("fetched-ok").then_some(l))
        },
    )?;
    ensure!(logs.contains("hello-from-server"), "client log: {logs}");
    egress_is_masqueraded(c, "client")?;

    // kubectl sees the pod IPs too.
    let kubectl = run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["get", "pods", "-o", "wide"]))?;
    ensure!(
        kubectl.contains(&server_ip) && kubectl.contains(&client_ip),
        "kubectl get pods -o wide: {kubectl}"
    );

    // Each pod holds a host-local lease and a veth on the bridge.
    for ip in [&server_ip, &client_ip] {
        let lease = Path::new(NETWORK_DIR).join(ip);
        ensure!(lease.exists(), "no lease {}", lease.display());
    }
    let records = sandbox_records(&c.data);
    let sandbox_ids: Vec<String> = records
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let veths = host_veths(&records);
    ensure!(veths.len() == 2, "veths from the CNI results: {veths:?}");
    let on_bridge = ip(&["-o", "link", "show", "master", BRIDGE])?;
    for v in &veths {
        ensure!(
            on_bridge.contains(v.as_str()),
            "{v} not on {BRIDGE}: {on_bridge}"
        );
    }

    // The host reaches the server by pod IP (the bridge is the pods' gateway), and its
    // hostPort through portmap on loopback and on a node address.
    let body = http_get(&format!("{server_ip}:8080"))?;
    ensure!(body.contains("hello-from-server"), "by pod IP: {body}");
    for host in ["127.0.0.1".to_string(), node_address()?] {
        let addr = format!("{host}:{host_port}");
        let body = wait_for(&format!("hostPort {addr}"), Duration::from_secs(10), || {
            Ok(Some(http_get(&addr)?))
        })?;
        ensure!(body.contains("hello-from-server"), "{addr}: {body}");
    }
    let rules = nat_rules();
    ensure!(
        sandbox_ids.iter().any(|id| rules.contains(id.as_str())),
        "no nat rules name the sandboxes: {rules}"
    );

    // A restart of skiff keeps the pods, their addresses and their reachability: the runtime
    // persisted each attachment, and DEL below runs from what it persisted.
    c.stop()?;
    c.start()?;
    for (name, want) in [("server", &server_ip), ("client", &client_ip)] {
        let got = wait_for(
            &format!("pod {name} to be Running after the restart"),
            Duration::from_secs(60),
            || {
                let p = c.pod(name)?;
                Ok((p["status"]["phase"] == "Running").then(|| p["status"]["podIP"].clone()))
            },
        )?;
        ensure!(
            got == want.as_str(),
            "{name}: IP {got} after restart, was {want}"
        );
    }
    let body = http_get(&format!("127.0.0.1:{host_port}"))?;
    ensure!(
        body.contains("hello-from-server"),
        "hostPort after restart: {body}"
    );

    // A hostNetwork pod keeps the host's network: the node's address, no lease, no veth. Leases
    // are host-wide, so count ours before and after (other runs' may be there too).
    let count_leases = || -> Result<usize> {
        Ok(std::fs::read_dir(NETWORK_DIR)?
            .flatten()
            .filter(|e| in_pod_subnet(&e.file_name().to_string_lossy()))
            .count())
    };
    let before = count_leases()?;
    let hostnet = write(
        work,
        "hostnet.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostnet\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sleep\", \"3600\"]\n"
        ),
    )?;
    c.skiff(&["apply", "-f", hostnet.to_str().unwrap_or_default()])?;
    let p = wait_for("pod hostnet to run", Duration::from_secs(60), || {
        let p = c.pod("hostnet")?;
        Ok((p["status"]["phase"] == "Running").then_some(p))
    })?;
    ensure!(
        p["status"]["podIP"] == p["status"]["hostIP"],
        "hostnet: {}",
        p["status"]
    );
    let leases = count_leases()?;
    ensure!(
        leases == before,
        "{leases} leases with a hostNetwork pod running, {before} before it"
    );

    // Deleting the pods releases their addresses, veths and rules.
    c.skiff(&[
        "delete",
        "pod",
        "server",
        "client",
        "hostnet",
        "--grace-period",
        "1",
    ])?;
    wait_for("the pods to be gone", Duration::from_secs(60), || {
        let left: Vec<String> = ["server", "client", "hostnet"]
            .iter()
            .filter_map(|p| c.pod(p).ok())
            .map(|p| {
                format!(
                    "{} {} {}",
                    p["metadata"]["name"], p["metadata"]["deletionTimestamp"], p["status"]["phase"]
                )
            })
            .collect();
        if left.is_empty() {
            return Ok(Some(()));
        }
        bail!("left: {left:?}")
    })?;
    wait_for(
        "leases, veths and rules to be released",
        Duration::from_secs(30),
        || {
            let leases: Vec<_> = [&server_ip, &client_ip]
                .into_iter()
                .filter(|ip| Path::new(NETWORK_DIR).join(ip).exists())
                .collect();
            let links: Vec<_> = veths
                .iter()
                .filter(|v| Path::new("/sys/class/net").join(v).exists())
                .collect();
            let rules = nat_rules();
            let named: Vec<_> = sandbox_ids
                .iter()
                .filter(|id| rules.contains(id.as_str()))
                .collect();
            if leases.is_empty() && links.is_empty() && named.is_empty() {
                return Ok(Some(()));
            }
            bail!("leases {leases:?}, veths {links:?}, rules for {named:?} remain")
        },
    )?;
    ensure!(
        http_get(&format!("127.0.0.1:{host_port}")).is_err(),
        "the hostPort still answers"
    );

    // Bad input: without the plugins the node is NotReady, saying which one is missing.
    c.stop()?;
    let empty = work.join("no-plugins");
    std::fs::create_dir_all(&empty)?;
    c.extra_args = vec!["--cni-bin-dir".into(), empty.display().to_string()];
    c.spawn()?;
    let message = wait_for(
        "the node to be NotReady for want of plugins",
        Duration::from_secs(30),
        || {
            let node: Value =
                serde_json::from_str(&c.skiff(&["get", "node", "e2e-node", "-o", "json"])?)?;
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap_or_default();
            Ok((ready["status"] == "False").then(|| ready["message"].to_string()))
        },
    )?;
    ensure!(
        message.contains("plugin bridge") && message.contains("no-plugins"),
        "Ready condition message: {message}"
    );
    Ok(())
}
