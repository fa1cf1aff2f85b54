//! `skiff down`: a stopped `skiff up` says what it left running; `skiff down` on a running one
//! stops it, then leaves no container process, monitor, mount, bridge, nftables table or
//! cluster DNS address of that data dir behind; `--purge` deletes the data dir.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: IMAGE
    command: [sleep, '3600']
";

/// The ids of the runtime's sandboxes and containers.
fn container_ids(c: &Cluster) -> Vec<String> {
    ["sandboxes", "containers"]
        .iter()
        .flat_map(|d| std::fs::read_dir(c.data.join("runtime").join(d)).into_iter())
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Processes whose command line or cgroup names the data dir or one of the containers.
fn leftovers(c: &Cluster, ids: &[String]) -> Vec<String> {
    let data = c.data.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_err() || pid == me {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            let ours = cmdline.contains(&data)
                || ids
                    .iter()
                    .any(|id| cmdline.contains(id.as_str()) || cgroup.contains(id.as_str()));
            ours.then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

fn down(c: &Cluster, extra: &[&str]) -> Result<String> {
    run(Command::new(&c.bin)
        .args(["down", "--data-dir"])
        .arg(&c.data)
        .args(extra))
}

#[test]
fn down_stops_a_running_node_and_leaves_nothing_of_it() -> Result<()> {
    with_cluster(|c, work, reg| {
        c.start()?;
        c.apply_yaml(work, "pod", &POD.replace("IMAGE", &busybox(reg)))?;
        wait_for("pod sleeper to run", Duration::from_secs(60), || {
            Ok((c.pod("sleeper")?["status"]["phase"] == "Running").then_some(()))
        })?;
        let ids = container_ids(c);
        ensure!(ids.len() == 2, "a sandbox and a container: {ids:?}");

        // SIGTERM: the node stops, its pod keeps running, and it says so.
        c.stop()?;
        let log = std::fs::read_to_string(&c.log)?;
        ensure!(
            log.contains("keeps running") && log.contains("skiff down --data-dir"),
            "skiff up did not say what keeps running: {}",
            tail(&c.log)
        );
        ensure!(
            !leftovers(c, &ids).is_empty(),
            "the pod's processes should outlive skiff up"
        );

        // `down` while the node runs again: it is stopped first.
        c.start()?;
        let pid = c.proc.as_ref().map(|p| p.child.id()).context("running")?;
        let out = down(c, &[])?;
        ensure!(
            out.contains(&format!("stopped skiff (pid {pid})")),
            "down said: {out}"
        );
        ensure!(
            out.contains("removed 1 pod and 1 container"),
            "down said: {out}"
        );
        ensure!(out.contains("bridge skiff0a5800"), "down said: {out}");
        ensure!(
            out.contains("nftables table ip skiff-proxy"),
            "down said: {out}"
        );
        ensure!(
            out.contains("cluster DNS address 10.96.0.10"),
            "down said: {out}"
        );
        let status = c
            .proc
            .as_mut()
            .context("running")?
            .child
            .try_wait()?
            .context("skiff up should have exited")?;
        ensure!(status.success(), "skiff up exited with {status}");
        c.proc = None;

        let left = leftovers(c, &ids);
        ensure!(left.is_empty(), "processes left behind: {left:?}");
        let data = c.data.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let under: Vec<&str> = mounts.lines().filter(|l| l.contains(&data)).collect();
        ensure!(under.is_empty(), "mounts left behind: {under:?}");
        let links = ip(&["-o", "link", "show"])?;
        ensure!(
            !links.contains("skiff0a5800"),
            "the pod bridge is left: {links}"
        );
        let lo = ip(&["-o", "addr", "show", "dev", "lo"])?;
        ensure!(!lo.contains("10.96.0.10"), "the DNS address is left: {lo}");
        let tables = run(Command::new("nft").args(["list", "tables"]))?;
        ensure!(
            !tables
                .lines()
                .any(|t| t.trim() == "table ip skiff-proxy" || t.trim() == "table ip skiff"),
            "nftables tables left: {tables}"
        );
        ensure!(
            c.data.join("controller").exists(),
            "the data dir is kept without --purge"
        );

        // Again with --purge: nothing left to stop, and the data dir goes.
        let out = down(c, &["--purge"])?;
        ensure!(
            out.contains("removed 0 pods and 0 containers"),
            "down said: {out}"
        );
        ensure!(!c.data.exists(), "--purge left {}", c.data.display());
        let err = Command::new(&c.bin)
            .args(["down", "--data-dir"])
            .arg(&c.data)
            .output()?;
        ensure!(
            !err.status.success(),
            "down of a missing data dir should fail"
        );
        let msg = String::from_utf8_lossy(&err.stderr);
        ensure!(
            msg.contains("is not a skiff data dir") && msg.lines().count() == 1,
            "{msg}"
        );
        Ok(())
    })
}
