//! `skiff agent` without `--cri-socket` is a whole node: the agent and skiff's own runtime in
//! one process, joined to a control plane that runs elsewhere (here a `skiff up`, as a second
//! node beside its own). A pod bound to it runs in that runtime (its state under the agent's
//! data dir), its status, logs, exec and exec probe come back through the API, and deleting
//! it removes its container from that runtime.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::{Proc, condition_true, free_port, tail, wait_for, wait_node_ready, with_cluster};

const NODE: &str = "second-node";

#[test]
fn an_agent_with_its_own_runtime_is_a_node() -> Result<()> {
    with_cluster(|c, work, reg| {
        c.start()?;
        let data = work.join("node2");
        let _agent = Proc::spawn(
            "skiff agent",
            Command::new(&c.bin)
                .arg("--kubeconfig")
                .arg(c.kubeconfig())
                .args(["agent", "--node-name", NODE])
                .args(["--agent-port", &free_port()?.to_string()])
                .arg("--data-dir")
                .arg(&data)
                .env("RUST_LOG", "info"),
            &work.join("agent.log"),
        )?;
        let k = c.kubectl("1.33");
        let log = work.join("agent.log");
        wait_node_ready(&k, NODE, &log)?;
        ensure!(
            data.join("runtime/cri.sock").exists(),
            "the agent's runtime socket is not under its data dir"
        );

        let pod = work.join("node2-pod.yaml");
        std::fs::write(
            &pod,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-node2\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {reg}/busybox:1.36\n    command: [\"sh\", \"-c\", \"echo from-node2; touch /tmp/ok; exec sleep 3600\"]\n    readinessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/ok\"]\n      periodSeconds: 2\n"
            ),
        )?;
        k.ok(&["apply", "-f", pod.to_str().unwrap_or_default()], None)?;
        let p = wait_for(
            "the pod to be Ready on node2",
            Duration::from_secs(120),
            || {
                let p = c.pod("on-node2")?;
                Ok(condition_true(&p, "Ready").then_some(p))
            },
        )
        .with_context(|| tail(&log))?;
        let id = p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("skiff://")
            .to_owned();
        ensure!(
            !id.is_empty() && data.join("runtime/containers").join(&id).exists(),
            "container {id:?} is not in the agent's runtime: {}",
            p["status"]
        );
        // Each node has a pod subnet of its own from node IPAM, and its pods' addresses come
        // from it.
        let subnet = |node: &str| -> Result<String> {
            let n: serde_json::Value =
                serde_json::from_str(&c.skiff(&["get", "node", node, "-o", "json"])?)?;
            Ok(n["spec"]["podCIDR"]
                .as_str()
                .unwrap_or_default()
                .to_string())
        };
        let (first, second) = (subnet("e2e-node")?, subnet(NODE)?);
        ensure!(
            first.ends_with("/24") && second.ends_with("/24") && first != second,
            "node subnets {first:?} and {second:?}"
        );
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let prefix = second.trim_end_matches(".0/24");
        ensure!(
            ip.starts_with(&format!("{prefix}.")),
            "the pod's address {ip} is in its node's subnet {second}"
        );
        let logs = wait_for("the pod's log", Duration::from_secs(30), || {
            let l = k.ok(&["logs", "on-node2"], None)?;
            Ok(l.contains("from-node2").then_some(l))
        })?;
        ensure!(logs == "from-node2\n", "logs: {logs:?}");
        let out = k.ok(
            &["exec", "on-node2", "--", "sh", "-c", "echo exec-$((6*7))"],
            None,
        )?;
        ensure!(out == "exec-42\n", "exec on node2 said {out:?}");

        k.ok(&["delete", "pod", "on-node2", "--wait=true"], None)?;
        wait_for(
            "the agent's runtime to remove the container",
            Duration::from_secs(60),
            || Ok((!data.join("runtime/containers").join(&id).exists()).then_some(())),
        )?;
        Ok(())
    })
}
