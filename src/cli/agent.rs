//! `skiff agent`: a node agent alone, for a node whose control plane runs elsewhere (`skiff up`
//! or `skiff controller` members) and whose CRI runtime is any standard one: skiff's own, or
//! containerd's CRI plugin. It registers the node, renews its lease and runs the pods bound to
//! it until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio_util::sync::CancellationToken;

/// Options of `skiff agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The CRI runtime's unix socket (e.g. containerd's `/run/containerd/containerd.sock`).
    #[arg(long)]
    cri_socket: PathBuf,
    /// Name of this node.
    #[arg(long)]
    node_name: String,
    /// The node's InternalIP, which the API server reaches the agent on.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Port of the agent's server (the kubelet's 10250).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// Where pod logs and the agent's state go.
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
}

pub async fn run(kubeconfig: Option<PathBuf>, args: AgentArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let (client, _) = super::client::connect(kubeconfig).await?;
    let cancel = CancellationToken::new();
    super::up::spawn_signal_handler(cancel.clone());
    let config = node_agent::AgentConfig {
        node_name: args.node_name,
        cri_socket: args.cri_socket,
        pod_log_dir: args.data_dir.join("pods"),
        listen: SocketAddr::new(args.node_ip, args.agent_port),
        node_ip: Some(args.node_ip),
        state_dir: Some(args.data_dir.join("agent")),
    };
    node_agent::run(config, client, cancel)
        .await
        .context("node agent")
}
