//! Crash safety, from outside: `kill -9` of `skiff up` (control plane, node agent and runtime in
//! one process) leaves the containers running in their monitors; a container that ends while
//! skiff is down has its exit recorded by its monitor, and the restarted runtime reattaches: the
//! running container keeps its id, process and restart count, the ended one is reported with
//! its exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::{busybox, wait_for, with_cluster};

fn kill_9(pid: u32) -> Result<()> {
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    ensure!(st.success(), "kill -9 {pid}: {st}");
    Ok(())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The container's task directory (bundle, pid, exit record): the directory its monitor or
/// shim was started on, found in their command lines.
fn task_dir(id: &str) -> Result<PathBuf> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let dir = match args.iter().position(|a| a == "__monitor") {
            Some(i) => args.get(i + 1),
            None if args[0].ends_with("skiff-shim") => args.get(1),
            None => None,
        };
        if let Some(dir) = dir.filter(|d| d.ends_with(id)) {
            return Ok(PathBuf::from(dir));
        }
    }
    anyhow::bail!("no monitor process for container {id}")
}

/// The container id and its process id (as its monitor recorded it) of a pod's only container.
fn container(c: &e2e::Cluster, pod: &str) -> Result<(String, u32)> {
    let p = c.pod(pod)?;
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|s| s.split_once("://").map(|(_, id)| id.to_string()))
        .with_context(|| format!("{pod} has no container id: {}", p["status"]))?;
    let pid_file = task_dir(&id)?.join("pid");
    let pid = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("pid in {}", pid_file.display()))?;
    Ok((id, pid))
}

/// Whether `path` lies on a tmpfs, from the longest matching mount point in /proc/mounts.
fn on_tmpfs(path: &Path) -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), f[2] == "tmpfs"))
        })
        .max_by_key(|(len, _)| *len);
    Ok(best.is_some_and(|(_, tmpfs)| tmpfs))
}

fn running(c: &e2e::Cluster, pod: &str) -> Result<bool> {
    let p = c.pod(pod)?;
    Ok(p["status"]["phase"] == "Running"
        && !p["status"]["containerStatuses"][0]["state"]["running"].is_null())
}

#[test]
fn kill_9_leaves_containers_running_and_reports_exits() -> Result<()> {
    with_cluster(|c, work, reg| {
        c.start()?;
        let image = busybox(reg);
        let manifest = work.join("pods.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: keep\nspec:\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: ender\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"sleep 8; exit 7\"]\n"
            ),
        )?;
        c.skiff(&["apply", "-f", manifest.to_str().unwrap_or_default()])?;
        wait_for("both pods to run", Duration::from_secs(60), || {
            Ok((running(c, "keep")? && running(c, "ender")?).then_some(()))
        })?;
        let (keep_id, keep_pid) = container(c, "keep")?;
        // Task state is volatile: on a tmpfs (the runtime mounts one when /run is not).
        let keep_task = task_dir(&keep_id)?;
        ensure!(
            on_tmpfs(&keep_task)?,
            "{} is not on a tmpfs",
            keep_task.display()
        );
        let (_, ender_pid) = container(c, "ender")?;
        ensure!(
            alive(keep_pid) && alive(ender_pid),
            "containers not running"
        );

        // With the shim installed next to skiff (e2e/run-tests.sh builds it), each monitor
        // has become the small static shim once its container runs. Its memory is a figure
        // (the benchmark's), not an assertion.
        let shim_installed = c.bin.with_file_name("skiff-shim").is_file();
        let mut monitor = None;
        for e in std::fs::read_dir("/proc")?.flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if (cmd.contains("__monitor ") || cmd.contains("skiff-shim ")) && cmd.contains(&keep_id)
            {
                let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                if let Some(rss) = status.lines().find(|l| l.starts_with("VmRSS")) {
                    println!("monitor of keep: {rss} ({cmd})");
                }
                monitor = Some(cmd);
            }
        }
        let monitor = monitor.context("no monitor process for keep")?;
        ensure!(
            !shim_installed || monitor.contains("skiff-shim "),
            "the monitor did not become the shim: {monitor}"
        );
        // kill -9: no shutdown path runs.
        let mut proc = c.proc.take().context("skiff up is not running")?;
        proc.child.kill()?;
        proc.child.wait()?;
        ensure!(alive(keep_pid), "keep's container died with skiff");
        wait_for("ender's container to exit", Duration::from_secs(30), || {
            Ok((!alive(ender_pid)).then_some(()))
        })?;
        ensure!(
            alive(keep_pid),
            "keep's container died while skiff was down"
        );

        c.start()?;
        let ended = wait_for(
            "ender's exit to be reported",
            Duration::from_secs(60),
            || {
                let p = c.pod("ender")?;
                let term = &p["status"]["containerStatuses"][0]["state"]["terminated"];
                Ok((!term.is_null()).then(|| p.clone()))
            },
        )?;
        let st = &ended["status"]["containerStatuses"][0];
        ensure!(
            st["state"]["terminated"]["exitCode"] == 7 && ended["status"]["phase"] == "Failed",
            "ender after restart: {}",
            ended["status"]
        );
        let keep = c.pod("keep")?;
        let ks = &keep["status"]["containerStatuses"][0];
        ensure!(
            keep["status"]["phase"] == "Running"
                && ks["containerID"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&keep_id))
                && ks["restartCount"] == 0
                && !ks["state"]["running"].is_null(),
            "keep after restart: {}",
            keep["status"]
        );
        ensure!(alive(keep_pid), "keep's container was restarted");
        let (_, pid_now) = container(c, "keep")?;
        ensure!(
            pid_now == keep_pid,
            "keep's pid changed: {keep_pid} -> {pid_now}"
        );

        // The restarted runtime watches the monitors it found: keep's end is an event.
        let socket = c.data.join("runtime/cri.sock");
        let rt = tokio::runtime::Runtime::new()?;
        let stopped = rt.block_on(async {
            let mut cri = e2e::cri::Cri::connect(socket).await?;
            let mut events = cri.events().await?.context("no GetContainerEvents")?;
            kill_9(keep_pid)?;
            e2e::cri::next_event(
                &mut events,
                &keep_id,
                cri_api::v1::ContainerEventType::ContainerStoppedEvent,
            )
            .await
        })?;
        let st = stopped
            .containers_statuses
            .iter()
            .find(|s| s.id == keep_id)
            .context("stop event without keep's status")?;
        ensure!(
            st.exit_code == 137,
            "keep's stop event says exit code {}",
            st.exit_code
        );
        Ok(())
    })
}
