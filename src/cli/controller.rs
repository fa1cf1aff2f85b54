//! `skiff controller`: one control-plane member of a replicated cluster (store with its peer
//! service, API server, and — while it leads — the scheduler and controllers), and
//! `skiff controller member add|remove|list`, which change or show the membership through any
//! member's peer service. The first SIGTERM or Ctrl-C drains, a second one exits at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio_util::sync::CancellationToken;

/// Options of `skiff controller`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    command: Option<ControllerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// This member's name (its raft id is derived from it).
    #[arg(long)]
    name: Option<String>,
    /// Where this member keeps its store and writes its kubeconfig.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Address of the Kubernetes API.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address of the peer service (raft traffic between members).
    #[arg(long, default_value = "127.0.0.1:7001")]
    peer_listen: SocketAddr,
    /// Every initial member, this one included: name1=host:port,name2=host:port (peer
    /// addresses). A member joining later lists the members it knows plus itself.
    #[arg(long)]
    initial_members: Option<String>,
    /// Join a running cluster (after `skiff controller member add`): start empty and be caught
    /// up by the leader.
    #[arg(long)]
    join: bool,
    /// How long an Event is kept after it was last seen (a Go duration: 1h, 30m, 90s).
    #[arg(long, default_value = "1h", value_parser = crate::cli::duration)]
    event_ttl: std::time::Duration,
    /// The cluster DNS address the `kube-system/kube-dns` Service gets (the nodes'
    /// `--cluster-dns`); `none`: no such Service.
    #[arg(long, default_value = "10.96.0.10", value_parser = super::node::cluster_dns)]
    cluster_dns: super::node::ClusterDns,
    /// How long a node may go without a heartbeat (Lease renewal or status) before it is
    /// marked Unknown and tainted unreachable, and its pods' eviction clock starts.
    #[arg(long, default_value = "40s", value_parser = crate::cli::duration)]
    node_monitor_grace_period: std::time::Duration,
    #[command(flatten)]
    ipam: IpamArgs,
}

/// Node IPAM's options, with kube-controller-manager's names.
#[derive(Debug, clap::Args)]
pub struct IpamArgs {
    /// The cluster's pod range: each node gets a subnet of it for its pods (`none`: nodes get
    /// none, and each node's runtime needs --pod-cidr).
    #[arg(long, default_value = "10.88.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
}

impl IpamArgs {
    /// The node IPAM the flags ask for; a clear error for a bad range.
    pub fn ipam(&self) -> Result<Option<controller::controllers::nodeipam::NodeIpam>> {
        use controller::controllers::nodeipam::{Cidr, NodeIpam};
        if self.cluster_cidr.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let cidr =
            Cidr::parse(&self.cluster_cidr).map_err(|e| anyhow::anyhow!("--cluster-cidr {e}"))?;
        let services = Cidr::parse("10.96.0.0/12").map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(
            !cidr.overlaps(services),
            "--cluster-cidr {cidr} overlaps the service range {services}"
        );
        Ok(Some(
            NodeIpam::new(cidr, self.node_cidr_mask_size).map_err(|e| anyhow::anyhow!(e))?,
        ))
    }
}

#[derive(Debug, clap::Subcommand)]
enum ControllerCommand {
    /// Show or change the members of the control plane.
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Debug, clap::Subcommand)]
enum MemberCommand {
    /// Add a member (then start it with --join).
    Add {
        name: String,
        /// The new member's peer address (host:port).
        peer_addr: String,
        /// Peer address of any current member.
        #[arg(long, default_value = "127.0.0.1:7001")]
        via: String,
    },
    /// Remove a member.
    Remove {
        name: String,
        #[arg(long, default_value = "127.0.0.1:7001")]
        via: String,
    },
    /// List the members and who leads.
    List {
        #[arg(long, default_value = "127.0.0.1:7001")]
        via: String,
    },
}

/// True when the command runs a member (and should log like a server).
pub fn is_server(args: &ControllerArgs) -> bool {
    args.command.is_none()
}

pub async fn run(args: ControllerArgs) -> Result<()> {
    match args.command {
        Some(ControllerCommand::Member(m)) => member(m).await,
        None => serve(args.run).await,
    }
}

async fn member(cmd: MemberCommand) -> Result<()> {
    match cmd {
        MemberCommand::Add {
            name,
            peer_addr,
            via,
        } => {
            let id = controller::cluster::member_add(&via, &name, &peer_addr).await?;
            println!("member {name} added (raft id {id:#x}); start it with --join");
        }
        MemberCommand::Remove { name, via } => {
            let id = controller::cluster::member_remove(&via, &name).await?;
            println!("member {name} removed (raft id {id:#x})");
        }
        MemberCommand::List { via } => {
            let mut members = controller::cluster::member_list(&via).await?;
            members.sort_by(|a, b| a.name.cmp(&b.name));
            println!("{:<20} {:<18} {:<24} ROLE", "NAME", "ID", "PEER ADDRESS");
            for m in members {
                let role = match (m.is_leader, m.voter) {
                    (true, _) => "leader",
                    (false, true) => "voter",
                    (false, false) => "learner",
                };
                println!(
                    "{:<20} {:<18} {:<24} {role}",
                    m.name,
                    format!("{:#x}", m.id),
                    m.peer_addr
                );
            }
        }
    }
    Ok(())
}

async fn serve(args: RunArgs) -> Result<()> {
    let data = args.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create data dir {}", data.display()))?;
    let _lock = super::lock::hold(&data)?;
    let name = args
        .name
        .clone()
        .context("--name is required to run a member")?;
    let members = match &args.initial_members {
        Some(list) => controller::cluster::parse_members(list)?,
        // A lone member of its own cluster, reachable for later additions.
        None => vec![(name.clone(), args.peer_listen.to_string())],
    };
    let cancel = CancellationToken::new();
    super::up::spawn_signal_handler(cancel.clone());
    let cfg = controller::ControllerConfig {
        data_dir: data.join("controller"),
        listen: args.listen,
        cluster: Some(controller::cluster::ClusterConfig {
            name: name.clone(),
            peer_listen: args.peer_listen,
            initial_members: members,
            join: args.join,
        }),
        event_ttl: args.event_ttl,
        cluster_dns: args.cluster_dns.0,
        node_ipam: args.ipam.ipam()?,
        node_monitor_grace: args.node_monitor_grace_period,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let c = cancel.clone();
    let task = tokio::spawn(async move {
        let r = controller::run(cfg, c.clone(), Some(ready_tx)).await;
        c.cancel();
        r
    });
    if let Ok(addr) = ready_rx.await {
        let kubeconfig = data.join("kubeconfig");
        super::up::write_kubeconfig(&kubeconfig, addr)?;
        println!(
            "skiff controller {name} is up: API at http://{addr}, peers at {}\n  export KUBECONFIG={}",
            args.peer_listen,
            kubeconfig.display()
        );
    }
    task.await
        .context("control plane task")?
        .context("control plane")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        ipam: IpamArgs,
    }

    fn ipam(args: &[&str]) -> Result<Option<controller::controllers::nodeipam::NodeIpam>> {
        let cmd = Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        cmd.ipam.ipam()
    }

    #[test]
    fn node_ipam_flags_default_to_slash_24s_of_the_pod_range() {
        let got = ipam(&[]).expect("defaults").expect("on");
        assert_eq!(got, controller::controllers::nodeipam::NodeIpam::DEFAULT);
        assert_eq!(ipam(&["--cluster-cidr", "none"]).expect("off"), None);
    }

    #[test]
    fn bad_ranges_name_the_flag_and_the_problem() {
        let e = ipam(&["--cluster-cidr", "10.96.0.0/16"]).expect_err("service range");
        assert!(
            e.to_string()
                .contains("overlaps the service range 10.96.0.0/12"),
            "{e}"
        );
        let e = ipam(&["--cluster-cidr", "10.0.0.0/8"]).expect_err("covers the services");
        assert!(e.to_string().contains("overlaps"), "{e}");
        let e = ipam(&["--cluster-cidr", "10.88.0.1/16"]).expect_err("host bits");
        assert!(e.to_string().starts_with("--cluster-cidr"), "{e}");
        let e = ipam(&["--node-cidr-mask-size", "31"]).expect_err("no room");
        assert!(e.to_string().contains("--node-cidr-mask-size 31"), "{e}");
    }
}
