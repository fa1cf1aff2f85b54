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
