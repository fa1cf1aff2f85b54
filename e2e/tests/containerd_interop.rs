//! The node agent speaks standard CRI: `skiff agent` drives Debian's containerd 1.6 (its CRI
//! plugin, started here with a config, socket and network of its own) as a second node of a
//! `skiff up` cluster. A pod bound to that node runs in containerd, its status, logs and exec
//! come back through the API like any pod's, and deleting it removes it from containerd.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::{Cluster, Proc, free_port, run, wait_for, wait_node_ready, with_cluster, workspace};

const NODE: &str = "ctrd-node";

fn kubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    run(Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(args))
}

/// Stops containerd and whatever it left: shims, mounts under `dir`, its bridge.
fn stop_containerd(dir: &Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("containerd.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let _ = Command::new("pkill")
        .args([
            "-f",
            &format!("containerd-shim-runc-v2 .*{}", dir.display()),
        ])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|t| t.starts_with(&*dir.to_string_lossy()))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = Command::new("umount").args(["-l", t]).status();
    }
    let _ = Command::new("ip")
        .args(["link", "del", "cnictrd0"])
        .status();
    let _ = std::fs::remove_dir_all("/var/lib/cni/networks/skiff-containerd");
}

#[test]
fn the_agent_drives_containerd() -> Result<()> {
    with_cluster(|c, work, reg| {
        let ctrd = work.join("containerd");
        let result = scenario(c, work, reg, &ctrd);
        stop_containerd(&ctrd);
        result
    })
}

fn scenario(c: &mut Cluster, work: &Path, reg: &str, ctrd: &Path) -> Result<()> {
    let socket = run(Command::new("sh")
        .arg(workspace().join("e2e/scripts/start-containerd.sh"))
        .arg(ctrd)
        .arg(reg))
    .context("start containerd")?;
    let socket = socket.trim().to_owned();
    c.start()?;
    let _agent = Proc::spawn(
        "skiff agent",
        Command::new(&c.bin)
            .arg("--kubeconfig")
            .arg(c.kubeconfig())
            .args(["agent", "--cri-socket", &socket, "--node-name", NODE])
            .args(["--agent-port", &free_port()?.to_string()])
            .arg("--data-dir")
            .arg(work.join("ctrd-agent"))
            .env("RUST_LOG", "info"),
        &work.join("agent.log"),
    )?;
    wait_node_ready(&c.kubectl("1.33"), NODE, &work.join("agent.log"))?;

    let pod = work.join("ctrd-pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: in-containerd\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"echo from-containerd; exec sleep 3600\"]\n"
        ),
    )?;
    kubectl(c, &["apply", "-f", pod.to_str().unwrap_or_default()])?;
    let p = wait_for(
        "the pod to run in containerd",
        Duration::from_secs(120),
        || {
            let p = c.pod("in-containerd")?;
            Ok((p["status"]["phase"] == "Running").then_some(p))
        },
    )
    .with_context(|| std::fs::read_to_string(work.join("agent.log")).unwrap_or_default())?;
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        id.starts_with("containerd://"),
        "the container is not containerd's: {id:?}"
    );
    ensure!(
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.199.")),
        "the pod IP is not from containerd's network: {}",
        p["status"]
    );
    let logs = wait_for("the pod's log", Duration::from_secs(30), || {
        let l = kubectl(c, &["logs", "in-containerd"])?;
        Ok(l.contains("from-containerd").then_some(l))
    })?;
    ensure!(logs == "from-containerd\n", "logs: {logs:?}");
    let out = kubectl(
        c,
        &[
            "exec",
            "in-containerd",
            "--",
            "sh",
            "-c",
            "echo exec-$((6*7))",
        ],
    )?;
    ensure!(out == "exec-42\n", "exec through containerd said {out:?}");
    // containerd lists it too, in the namespace the CRI plugin uses.
    let ctr_containers = || {
        run(Command::new("ctr").args([
            "--address",
            &socket,
            "-n",
            "k8s.io",
            "containers",
            "ls",
            "-q",
        ]))
    };
    let listed = ctr_containers()?;
    let short = id.trim_start_matches("containerd://");
    ensure!(
        listed.contains(short),
        "ctr does not list {short}: {listed}"
    );

    kubectl(c, &["delete", "pod", "in-containerd", "--wait=true"])?;
    wait_for(
        "containerd to remove the container",
        Duration::from_secs(60),
        || Ok((!ctr_containers()?.contains(short)).then_some(())),
    )?;
    Ok(())
}
