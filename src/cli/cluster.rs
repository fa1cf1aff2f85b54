//! `skiff cluster`: multi-node test clusters on this machine (the `skiff-cluster` crate makes
//! them). This file parses the commands, waits for nodes to be Ready through the API, keeps
//! the `skiff-NAME` context in the user's kubeconfig and prints what happened.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Node;
use skiff_cluster::host::LinuxHost;
use skiff_cluster::{Clusters, kubeconfig};

/// Options of `skiff cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Where clusters keep their state (each in a directory of its name).
    #[arg(long, global = true, env = "SKIFF_CLUSTERS_DIR", default_value = skiff_cluster::DEFAULT_ROOT)]
    root: PathBuf,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Make a cluster whose nodes are network namespaces of this machine running skiff, wait
    /// until every node is Ready, and add its `skiff-NAME` context to your kubeconfig.
    Create {
        name: String,
        /// Worker nodes beside the control plane (0: the control-plane node runs the
        /// workloads, as kind's default cluster; with workers it is tainted NoSchedule).
        #[arg(long, default_value_t = 0)]
        nodes: usize,
        /// Control-plane members: 1, 3 or 5.
        #[arg(long, default_value_t = 1)]
        controllers: usize,
        /// Image archives (OCI layout or `docker save`) to load into every node once it is up.
        #[arg(long)]
        image_archive: Vec<PathBuf>,
        /// How long to wait for every node to be Ready before giving up (and removing the
        /// cluster).
        #[arg(long, default_value = "120s", value_parser = crate::cli::duration)]
        wait: Duration,
    },
    /// The clusters, with whether their processes run.
    List,
    /// Stop a cluster: its nodes' processes and pods' containers; objects and images stay.
    Stop { name: String },
    /// Start a stopped cluster (after a reboot too), and wait until its nodes are Ready.
    Start {
        name: String,
        #[arg(long, default_value = "120s", value_parser = crate::cli::duration)]
        wait: Duration,
    },
    /// Delete a cluster: every process, pod, mount, network namespace, interface and file of
    /// it, and its kubeconfig context.
    Delete { name: String },
    /// Load an image archive (OCI layout or `docker save`) into every node, as kind's
    /// `load image-archive`.
    LoadImage { name: String, archive: PathBuf },
    /// The API load balancer of a cluster with several control-plane members (started by
    /// `create` and `start` in its own namespace).
    #[command(hide = true)]
    Balance {
        /// The address to serve on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Its data dir, whose lock it holds while it runs.
        #[arg(long)]
        data_dir: PathBuf,
        /// A control-plane member's API address; repeatable.
        #[arg(long = "member", required = true)]
        members: Vec<std::net::SocketAddr>,
    },
}

/// Runs the API load balancer until SIGTERM.
async fn balance(
    listen: std::net::SocketAddr,
    data_dir: &Path,
    members: Vec<std::net::SocketAddr>,
) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let _lock = crate::cli::lock::hold(data_dir)?;
    let cancel = tokio_util::sync::CancellationToken::new();
    super::up::spawn_signal_handler(cancel.clone());
    skiff_cluster::balancer::run(listen, members, cancel).await?;
    Ok(())
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "skiff cluster needs root: it makes network namespaces, a bridge and mounts (run it with sudo)"
        );
    }
    let exe = std::env::current_exe().context("cannot find the skiff binary")?;
    let clusters = Clusters::new(&args.root, LinuxHost { exe });
    match args.command {
        ClusterCommand::Create {
            name,
            nodes,
            controllers,
            image_archive,
            wait,
        } => {
            for a in &image_archive {
                if !a.is_file() {
                    bail!("image archive {} is not a file", a.display());
                }
            }
            let started = Instant::now();
            let spec = clusters.create(&name, controllers, nodes).await?;
            let ready = wait_ready(&clusters, &spec, wait).await;
            if let Err(e) = ready {
                let _ = clusters.delete(&name).await;
                return Err(e.context(format!("cluster {name} was not created")));
            }
            let took = started.elapsed();
            for a in &image_archive {
                clusters.load_image(&name, a).await?;
            }
            let user = add_context(&spec)?;
            println!(
                "cluster {name}: {} nodes Ready in {:.1} s, API at {}",
                spec.nodes.len(),
                took.as_secs_f64(),
                spec.server()
            );
            println!(
                "kubectl context {} (in {}); the cluster's own kubeconfig: {}",
                spec.context(),
                user.display(),
                spec.kubeconfig(&clusters.root).display()
            );
            println!("  kubectl get nodes");
            Ok(())
        }
        ClusterCommand::List => {
            let all = clusters.list()?;
            print!("{}", list_table(&all));
            Ok(())
        }
        ClusterCommand::Stop { name } => {
            clusters.stop(&name).await?;
            println!("cluster {name} stopped (`skiff cluster start {name}` starts it again)");
            Ok(())
        }
        ClusterCommand::Start { name, wait } => {
            let started = Instant::now();
            let spec = clusters.start(&name).await?;
            wait_ready(&clusters, &spec, wait).await?;
            println!(
                "cluster {name}: {} nodes Ready in {:.1} s",
                spec.nodes.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        ClusterCommand::Delete { name } => {
            let spec = clusters.load(&name).ok();
            let removed = clusters.delete(&name).await?;
            if let Some(spec) = spec {
                remove_context(&spec.context())?;
            }
            println!("cluster {name} deleted");
            if !removed.is_empty() {
                println!("removed {}", removed.join(", "));
            }
            Ok(())
        }
        ClusterCommand::Balance {
            listen,
            data_dir,
            members,
        } => balance(listen, &data_dir, members).await,
        ClusterCommand::LoadImage { name, archive } => {
            for (node, out) in clusters.load_image(&name, &archive).await? {
                for line in out.lines() {
                    println!("{node}: {line}");
                }
            }
            Ok(())
        }
    }
}

/// `skiff cluster list`'s table.
fn list_table(all: &[skiff_cluster::Status]) -> String {
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "STATUS".to_owned(),
        "NODES".to_owned(),
        "API".to_owned(),
    ]];
    rows.extend(all.iter().map(|s| {
        vec![
            s.spec.name.clone(),
            s.state().to_string(),
            s.spec.nodes.len().to_string(),
            s.spec.server(),
        ]
    }));
    super::client::aligned(&rows)
}

fn user_kubeconfig() -> PathBuf {
    kubeconfig::user_path(
        std::env::var("KUBECONFIG").ok().as_deref(),
        std::env::var_os("HOME").as_deref().map(Path::new),
    )
}

/// Adds the cluster's context to the user's kubeconfig; the file's path.
fn add_context(spec: &skiff_cluster::spec::ClusterSpec) -> Result<PathBuf> {
    let path = user_kubeconfig();
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = kubeconfig::merge(existing.as_deref(), &spec.context(), &spec.server(), &path)?;
    skiff_cluster::write_private(&path, text.as_bytes())?;
    Ok(path)
}

fn remove_context(context: &str) -> Result<()> {
    let path = user_kubeconfig();
    let Ok(existing) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    if let Some(text) = kubeconfig::remove(&existing, context, &path)? {
        skiff_cluster::write_private(&path, text.as_bytes())?;
    }
    Ok(())
}

/// Waits until every node of the cluster is Ready; on timeout, names the nodes that are not
/// and the last line of their agent's log.
async fn wait_ready(
    clusters: &Clusters<LinuxHost>,
    spec: &skiff_cluster::spec::ClusterSpec,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    // A stopped cluster's Nodes still say Ready: only a heartbeat since now counts.
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    let kubeconfig = spec.kubeconfig(&clusters.root);
    let mut not_ready: Vec<String> = spec.nodes.iter().map(|n| n.name.clone()).collect();
    while Instant::now() < deadline {
        if let Ok((client, _)) = super::client::connect(Some(kubeconfig.clone())).await {
            let api: kube::Api<Node> = kube::Api::all(client);
            loop {
                if let Ok(list) = api.list(&Default::default()).await {
                    not_ready.retain(|name| !list.items.iter().any(|n| is_ready(n, name, since)));
                    if not_ready.is_empty() {
                        return Ok(());
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let why: Vec<String> = not_ready
        .iter()
        .map(|n| {
            let log = spec.node_dir(&clusters.root, n).join("agent.log");
            let last = std::fs::read_to_string(&log)
                .ok()
                .and_then(|t| t.lines().last().map(str::to_owned))
                .unwrap_or_default();
            format!("{n} (log {}: {last})", log.display())
        })
        .collect();
    bail!(
        "nodes not Ready within {}s: {}",
        limit.as_secs(),
        why.join("; ")
    )
}

/// Whether `node` is the node `name`, Ready by a heartbeat at or after `since`.
fn is_ready(node: &Node, name: &str, since: jiff::Timestamp) -> bool {
    node.metadata.name.as_deref() == Some(name)
        && node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "True"
                        && c.last_heartbeat_time.as_ref().is_some_and(|t| t.0 >= since)
                })
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn parse(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("cluster").chain(args.iter().copied()))
            .map(|c| c.cluster)
    }

    #[test]
    fn create_takes_workers_members_archives_and_a_wait() {
        let a = parse(&[
            "create",
            "dev",
            "--nodes",
            "3",
            "--image-archive",
            "/a.tar",
            "--image-archive",
            "/b.tar",
            "--wait",
            "30s",
            "--root",
            "/r",
        ])
        .expect("parse");
        assert_eq!(a.root, PathBuf::from("/r"));
        match a.command {
            ClusterCommand::Create {
                name,
                nodes,
                controllers,
                image_archive,
                wait,
            } => {
                assert_eq!((name.as_str(), nodes, controllers), ("dev", 3, 1));
                assert_eq!(image_archive.len(), 2);
                assert_eq!(wait, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["create"]).is_err(), "a name is needed");
        let err = parse(&["create", "dev", "--wait", "soon"]).expect_err("bad wait");
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn the_other_commands_name_a_cluster() {
        assert!(matches!(
            parse(&["load-image", "dev", "/i.tar"])
                .expect("parse")
                .command,
            ClusterCommand::LoadImage { .. }
        ));
        for cmd in ["stop", "start", "delete"] {
            assert!(parse(&[cmd]).is_err(), "{cmd} without a name");
            parse(&[cmd, "dev"]).expect(cmd);
        }
        assert!(matches!(
            parse(&["list"]).expect("parse").command,
            ClusterCommand::List
        ));
    }

    #[test]
    fn the_balancer_takes_an_address_a_data_dir_and_members() {
        let a = parse(&[
            "balance",
            "--listen",
            "172.30.1.254:6443",
            "--data-dir",
            "/d",
            "--member",
            "172.30.1.2:6443",
            "--member",
            "172.30.1.3:6443",
        ])
        .expect("parse");
        let ClusterCommand::Balance { members, .. } = a.command else {
            panic!("not balance")
        };
        assert_eq!(members.len(), 2);
        let err = parse(&[
            "balance",
            "--listen",
            "x",
            "--data-dir",
            "/d",
            "--member",
            "a:1",
        ])
        .expect_err("not an address");
        assert!(err.to_string().contains("--listen"), "{err}");
        assert!(parse(&["balance", "--listen", "1.2.3.4:5", "--data-dir", "/d"]).is_err());
    }

    #[test]
    fn only_a_fresh_ready_heartbeat_counts() {
        use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let now = jiff::Timestamp::now();
        let node = |status: &str, at: jiff::Timestamp| Node {
            metadata: kube::api::ObjectMeta {
                name: Some("dev-worker".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: Some(Time(at)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = now - jiff::SignedDuration::from_secs(30);
        assert!(is_ready(&node("True", now), "dev-worker", before));
        assert!(!is_ready(&node("True", before), "dev-worker", now));
        assert!(!is_ready(&node("False", now), "dev-worker", before));
        assert!(!is_ready(&node("True", now), "dev-worker2", before));
    }

    #[test]
    fn the_list_is_a_table() {
        let spec = skiff_cluster::spec::ClusterSpec::new("dev", 1, 2, 4).expect("spec");
        let s = skiff_cluster::Status {
            spec,
            running: 2,
            processes: 4,
        };
        let t = list_table(&[s]);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["NAME", "STATUS", "NODES", "API"]);
        assert_eq!(lines[1], ["dev", "Degraded", "3", "http://172.30.4.2:6443"]);
    }
}
