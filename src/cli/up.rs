//! `skiff up`: the embedded single-node cluster. One process runs the control plane, the
//! embedded CRI runtime and the node agent, with one data dir and one cancellation token; the
//! first SIGTERM or Ctrl-C drains everything, a second one exits at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tokio_util::sync::CancellationToken;

/// Options of `skiff up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state (store, images, containers, logs, kubeconfig).
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Address of the Kubernetes API.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Name of this node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address, where the API server reaches the node agent.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Port of the node agent (the kubelet's 10250).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    #[command(flatten)]
    runtime: super::node::RuntimeArgs,
    #[command(flatten)]
    dns: super::node::DnsArgs,
    #[command(flatten)]
    ipam: super::controller::IpamArgs,
    /// How long an Event is kept after it was last seen (a Go duration: 1h, 30m, 90s).
    #[arg(long, default_value = "1h", value_parser = crate::cli::duration)]
    event_ttl: std::time::Duration,
    /// How long a node may go without a heartbeat (Lease renewal or status) before it is
    /// marked Unknown and tainted unreachable, and its pods' eviction clock starts.
    #[arg(long, default_value = "40s", value_parser = crate::cli::duration)]
    node_monitor_grace_period: std::time::Duration,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

/// The kubeconfig `skiff up` writes for kubectl and the client commands. The API is plain HTTP
/// until it has TLS; the JavaScript client refuses an `http://` server unless the cluster says
/// `insecure-skip-tls-verify`, which the other clients ignore for HTTP.
pub fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: skiff\n  user: {{}}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff\n    namespace: default\ncurrent-context: skiff\n"
    )
}

pub fn write_kubeconfig(path: &Path, addr: SocketAddr) -> Result<()> {
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let server = format!("http://{}", SocketAddr::new(host, addr.port()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, kubeconfig_text(&server))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down (signal again to force)");
        cancel.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
}

pub async fn run(args: UpArgs) -> Result<()> {
    // Node settings first: a mistake in them stops `up` before anything starts.
    let rcfg = args.runtime.config(args.data_dir.join("runtime"))?;
    let data = args.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create data dir {}", data.display()))?;
    let _lock = super::lock::hold(&data)?;
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let mut tasks = tokio::task::JoinSet::new();

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let ccfg = controller::ControllerConfig {
        event_ttl: args.event_ttl,
        cluster_dns: args.dns.cluster_dns.0,
        node_ipam: args.ipam.ipam()?,
        node_monitor_grace: args.node_monitor_grace_period,
        ..controller::ControllerConfig::single(data.join("controller"), args.listen)
    };
    let c = cancel.clone();
    tasks.spawn(async move {
        let r = controller::run(ccfg, c.clone(), Some(ready_tx)).await;
        c.cancel();
        r.context("control plane")
    });
    let addr = match ready_rx.await {
        Ok(a) => a,
        Err(_) => {
            // The controller ended before serving: its error says why.
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            anyhow::bail!("the control plane stopped before serving");
        }
    };
    let kubeconfig = data.join("kubeconfig");
    write_kubeconfig(&kubeconfig, addr)?;

    let socket = match super::node::start_runtime(rcfg, &mut tasks, &cancel).await {
        Ok(s) => s,
        // SIGTERM while starting: a clean stop, not a failure.
        Err(_) if cancel.is_cancelled() => return super::node::join_all(tasks, &cancel).await,
        Err(e) => return Err(e),
    };

    let (client, _) = super::client::connect(Some(kubeconfig.clone())).await?;
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    let acfg = node_agent::AgentConfig {
        node_name: node_name.clone(),
        cri_socket: socket,
        pod_log_dir: data.join("pods"),
        listen: SocketAddr::new(args.node_ip, args.agent_port),
        node_ip: Some(args.node_ip),
        state_dir: Some(data.join("agent")),
        cluster_dns: args.dns.cluster_dns.0,
        cluster_domain: args.dns.cluster_domain.clone(),
        resolv_conf: args.dns.resolv_conf.clone(),
        service_proxy: true,
        pod_routes: true,
        node_labels: Default::default(),
        register_taints: Vec::new(),
    };
    let c = cancel.clone();
    tasks.spawn(async move {
        let r = node_agent::run(acfg, client, c.clone()).await;
        c.cancel();
        r.context("node agent")
    });

    println!(
        "skiff is up: node {node_name}, API at http://{addr}\n\nUse it with kubectl or skiff:\n  export KUBECONFIG={}\n  kubectl get nodes\n  skiff apply -f manifests/pod.yaml\n  skiff get pods",
        kubeconfig.display()
    );

    let result = super::node::join_all(tasks, &cancel).await;
    if let Some(note) = super::node::still_running(&data) {
        eprintln!("{note}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_the_server_for_every_client() {
        let text = kubeconfig_text("http://127.0.0.1:6443");
        let cfg: kube::config::Kubeconfig = serde_saphyr::from_str(&text).expect("a kubeconfig");
        let cluster = cfg.clusters[0].cluster.as_ref().expect("a cluster");
        assert_eq!(cluster.server.as_deref(), Some("http://127.0.0.1:6443"));
        // The JavaScript client needs this to talk HTTP at all.
        assert_eq!(cluster.insecure_skip_tls_verify, Some(true));
        assert_eq!(cfg.current_context.as_deref(), Some("skiff"));
    }
}
