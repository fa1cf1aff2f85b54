//! `skiff down`: takes down what the `skiff up` or `skiff agent` of a data dir started and left
//! running by design (k3s' `k3s-killall.sh`, with the data dir as the unit). It stops that
//! process if it still runs, then every pod sandbox and container through the data dir's own
//! runtime, started here for the purpose (their processes, monitors, mounts, cgroups and CNI
//! leases go as a pod's stop and removal take them); then the node's network (the pod bridge
//! and masquerade of its subnet; the service rules, pod routes and cluster DNS address unless
//! another skiff node runs in this network namespace), mounts left under the data dir and the
//! runtime's volatile state; with `--purge`, the data dir itself.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use node_agent::cri::{Cri as _, GrpcCri, v1};
use tokio_util::sync::CancellationToken;

/// Options of `skiff down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The data dir of the `skiff up` or `skiff agent` to take down.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// Also delete the data dir: the cluster's objects, images and volumes.
    #[arg(long)]
    pub purge: bool,
    /// How long a skiff still running on the data dir gets to stop after SIGTERM before it is
    /// killed (a Go duration: 30s, 1m).
    #[arg(long, default_value = "30s", value_parser = crate::cli::duration)]
    pub timeout: Duration,
    /// The cluster DNS address the node answered at, taken off the loopback link.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: Ipv4Addr,
}

/// What `down` did, for its report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub stopped: Option<u32>,
    pub pods: usize,
    pub containers: usize,
    pub network: Vec<String>,
    /// Why the node's shared network state was kept, if it was.
    pub kept_network: Option<String>,
    pub unmounted: usize,
    pub purged: bool,
}

impl Report {
    pub fn lines(&self, data_dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(pid) = self.stopped {
            out.push(format!("stopped skiff (pid {pid})"));
        }
        out.push(format!(
            "removed {} pod{} and {} container{}",
            self.pods,
            if self.pods == 1 { "" } else { "s" },
            self.containers,
            if self.containers == 1 { "" } else { "s" }
        ));
        if !self.network.is_empty() {
            out.push(format!("removed {}", self.network.join(", ")));
        }
        if let Some(why) = &self.kept_network {
            out.push(format!(
                "kept the service rules, pod routes and cluster DNS address: {why}"
            ));
        }
        if self.unmounted > 0 {
            out.push(format!("unmounted {} leftover mounts", self.unmounted));
        }
        if self.purged {
            out.push(format!("deleted {}", data_dir.display()));
        } else {
            out.push(format!(
                "kept {} (objects, images, volumes): `skiff down --purge` deletes it",
                data_dir.display()
            ));
        }
        out
    }
}

pub async fn run(args: DownArgs) -> Result<()> {
    let report = down(&args).await?;
    for line in report.lines(&args.data_dir) {
        println!("{line}");
    }
    Ok(())
}

/// Takes the data dir down; what it did.
pub async fn down(args: &DownArgs) -> Result<Report> {
    let data = &args.data_dir;
    if !data.join("skiff.lock").exists() {
        bail!(
            "{} is not a skiff data dir (no skiff.lock in it): nothing to take down",
            data.display()
        );
    }
    let mut report = Report {
        stopped: stop_holder(data, args.timeout).await?,
        ..Report::default()
    };
    let _lock = super::lock::hold(data)?;
    let other = other_nodes_here();
    let root = data.join("runtime");
    if root.join("cri.sock").exists() || root.join("sandboxes").exists() {
        let (pods, containers) = remove_pods(&root).await?;
        report.pods = pods;
        report.containers = containers;
        let opts = runtime::network::NetworkOptions::under(&root);
        report.network = runtime::network::remove_default_network(&opts, other.is_none())
            .map_err(|e| anyhow::anyhow!("cannot remove the pod network: {e}"))?;
    }
    match other {
        Some(pid) => {
            report.kept_network = Some(format!(
                "another skiff node (pid {pid}) runs in this network namespace"
            ));
        }
        None => report.network.extend(
            node_agent::remove_node_network(Some(args.cluster_dns))
                .await
                .context("cannot remove the node's network state")?,
        ),
    }
    report.unmounted = unmount_under(data)?;
    let run_dir = runtime::default_run_dir(&root);
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot remove {}", run_dir.display()))?;
    }
    if args.purge {
        std::fs::remove_dir_all(data)
            .with_context(|| format!("cannot delete {}", data.display()))?;
        report.purged = true;
    }
    Ok(report)
}

/// SIGTERM to the process holding the data dir, then SIGKILL after `timeout`; its pid.
async fn stop_holder(data: &Path, timeout: Duration) -> Result<Option<u32>> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Some(holder) = super::lock::holder(data) else {
        return Ok(None);
    };
    let Some(pid) = holder else {
        bail!(
            "data dir {} is locked by a process whose pid is not recorded: stop it first",
            data.display()
        );
    };
    let target = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
    kill(target, Signal::SIGTERM)
        .with_context(|| format!("cannot stop skiff (pid {pid}) on {}", data.display()))?;
    let started = Instant::now();
    let mut killed = false;
    while super::lock::holder(data).is_some() {
        if !killed && started.elapsed() >= timeout {
            eprintln!("skiff (pid {pid}) did not stop within {timeout:?} of SIGTERM: killing it");
            let _ = kill(target, Signal::SIGKILL);
            killed = true;
        }
        if started.elapsed() >= timeout + Duration::from_secs(10) {
            bail!(
                "skiff (pid {pid}) still holds {} after SIGKILL",
                data.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Some(pid))
}

/// Starts the data dir's runtime here and removes every sandbox and container through it;
/// how many of each.
async fn remove_pods(root: &Path) -> Result<(usize, usize)> {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        runtime: super::node::RuntimeArgs,
    }
    let config = <Defaults as clap::Parser>::parse_from(["skiff"])
        .runtime
        .config(root.to_path_buf())?;
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let socket = super::node::start_runtime(config, &mut tasks, &cancel).await?;
    let result = async {
        let cri = GrpcCri::connect_lazy(&socket)?;
        let sandboxes = cri
            .list_pod_sandbox(v1::PodSandboxFilter::default())
            .await?;
        let containers = cri.list_containers(v1::ContainerFilter::default()).await?;
        for s in &sandboxes {
            cri.stop_pod_sandbox(&s.id).await?;
            cri.remove_pod_sandbox(&s.id).await?;
        }
        // Containers of no sandbox (none, unless a removal was cut short before).
        for c in cri.list_containers(v1::ContainerFilter::default()).await? {
            cri.stop_container(&c.id, 0).await?;
            cri.remove_container(&c.id).await?;
        }
        Ok::<_, node_agent::AgentError>((sandboxes.len(), containers.len()))
    }
    .await;
    cancel.cancel();
    super::node::join_all(tasks, &cancel).await?;
    result.context("cannot remove the pods through the runtime")
}

/// A `skiff up` or `skiff agent` other than this process in this network namespace.
fn other_nodes_here() -> Option<u32> {
    let own_ns = std::fs::read_link("/proc/self/ns/net").ok()?;
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let ns = std::fs::read_link(e.path().join("ns/net")).ok()?;
        (ns == own_ns && is_node_command(&cmdline)).then_some(pid)
    })
}

/// Whether a `/proc/<pid>/cmdline` is a skiff node: `skiff up` or `skiff agent`.
pub fn is_node_command(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0);
    let program = args.next().unwrap_or_default();
    let name = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if name != b"skiff" {
        return false;
    }
    // The first word that is neither a flag nor the global `--kubeconfig`'s value.
    while let Some(a) = args.next() {
        if a == b"--kubeconfig" {
            args.next();
        } else if !a.starts_with(b"-") {
            return a == b"up" || a == b"agent";
        }
    }
    false
}

/// Lazily unmounts every mount at or under `dir`, deepest first; how many.
fn unmount_under(dir: &Path) -> Result<usize> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    let mut points = mounts_under(&info, &dir);
    points.reverse();
    let mut n = 0;
    for p in &points {
        match nix::mount::umount2(p.as_path(), nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => n += 1,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", p.display())),
        }
    }
    Ok(n)
}

/// The mount points in `mountinfo` text at or under `dir`, in mount order (octal escapes
/// decoded).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(runtime::monitor::mountinfo_unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_commands_are_up_and_agent_of_a_skiff_binary() {
        assert!(is_node_command(
            b"/usr/local/bin/skiff\0up\0--data-dir\0/d\0"
        ));
        assert!(is_node_command(b"skiff\0agent\0--node-name\0n\0"));
        assert!(is_node_command(b"./skiff\0--kubeconfig\0k\0agent\0"));
        assert!(!is_node_command(b"skiff\0down\0"));
        assert!(!is_node_command(b"skiff\0controller\0"));
        assert!(!is_node_command(b"/usr/bin/upskiff\0up\0"));
        assert!(!is_node_command(b""));
    }

    #[test]
    fn mounts_under_a_dir_are_found_with_escapes_decoded() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:40 / /var/lib/skiff/runtime/containers/a/rootfs rw - overlay overlay rw
41 22 0:41 / /var/lib/skiff-agent/x rw - tmpfs tmpfs rw
42 22 0:42 / /var/lib/skiff/pods/p\\040q/volumes rw - tmpfs tmpfs rw
";
        let got = mounts_under(info, Path::new("/var/lib/skiff"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/skiff/runtime/containers/a/rootfs"),
                PathBuf::from("/var/lib/skiff/pods/p q/volumes"),
            ]
        );
    }

    #[test]
    fn the_report_says_what_was_done_and_what_was_kept() {
        let r = Report {
            stopped: Some(42),
            pods: 1,
            containers: 2,
            network: vec!["bridge skiff0a5800".into()],
            kept_network: None,
            unmounted: 0,
            purged: false,
        };
        assert_eq!(
            r.lines(Path::new("/d")),
            vec![
                "stopped skiff (pid 42)",
                "removed 1 pod and 2 containers",
                "removed bridge skiff0a5800",
                "kept /d (objects, images, volumes): `skiff down --purge` deletes it",
            ]
        );
    }
}
