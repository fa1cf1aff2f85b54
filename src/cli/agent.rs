//! `skiff agent`: a node of a cluster whose control plane runs elsewhere (`skiff up` or
//! `skiff controller` members). It runs skiff's own CRI runtime in the same process, as k3s'
//! agent runs containerd, or drives any standard one given `--cri-socket` (containerd's CRI
//! plugin). It registers the node, renews its lease and runs the pods bound to it until
//! SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio_util::sync::CancellationToken;

/// Options of `skiff agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Another CRI runtime's unix socket (e.g. containerd's
    /// `/run/containerd/containerd.sock`) instead of skiff's own runtime, whose options then
    /// do not apply.
    // Not the CNI binaries' directories: they may come from the environment.
    #[arg(long, conflicts_with_all = [
        "insecure_registries", "registries_config", "pids_limit", "container_log_max_size",
        "container_log_max_files", "pod_cidr", "cni_conf_dir", "image_cache",
    ])]
    cri_socket: Option<PathBuf>,
    /// Name of this node.
    #[arg(long)]
    node_name: String,
    /// The node's InternalIP, which the API server reaches the agent on.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Port of the agent's server (the kubelet's 10250).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// Where pod logs, the agent's state and skiff's runtime (`runtime/`, its socket
    /// `runtime/cri.sock`) go.
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
    /// Labels for the Node besides the well-known ones: key=value,... (the kubelet's flag).
    #[arg(long, value_delimiter = ',', value_parser = label)]
    node_labels: Vec<(String, String)>,
    /// Taints the Node is registered with: key[=value]:Effect,... (the kubelet's flag; on
    /// the Node's creation only).
    #[arg(long, value_delimiter = ',', value_parser = taint)]
    register_with_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    #[command(flatten)]
    runtime: super::node::RuntimeArgs,
    #[command(flatten)]
    dns: super::node::DnsArgs,
}

/// `key=value` of --node-labels (the value may be empty).
fn label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("node label {s:?}: expected key=value"))?;
    let name = k.rsplit('/').next().unwrap_or_default();
    let ok = |t: &str, max: usize| {
        t.len() <= max
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && t.starts_with(|c: char| c.is_ascii_alphanumeric())
            && t.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !ok(name, 63) || (k.contains('/') && k.split('/').count() != 2) {
        return Err(format!(
            "node label key {k:?}: a name of letters, digits, '-', '_' and '.' (63 at most), with an optional prefix/"
        ));
    }
    if !v.is_empty() && !ok(v, 63) {
        return Err(format!(
            "node label {k}={v}: a value is letters, digits, '-', '_' and '.', 63 at most"
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `key[=value]:Effect` of --register-with-taints.
fn taint(s: &str) -> Result<k8s_openapi::api::core::v1::Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {s:?}: expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "taint {s:?}: the effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    label(&format!("{key}={}", value.as_deref().unwrap_or_default()))
        .map_err(|e| format!("taint {s:?}: {e}"))?;
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.to_owned(),
        value,
        effect: effect.to_owned(),
        time_added: None,
    })
}

/// The node's CRI runtime.
enum Cri {
    /// skiff's own, in this process.
    Own(Box<runtime::RuntimeConfig>),
    /// Another one's socket.
    Socket(PathBuf),
}

pub async fn run(kubeconfig: Option<PathBuf>, args: AgentArgs) -> Result<()> {
    let cri = match args.cri_socket {
        Some(socket) => Cri::Socket(socket),
        None => Cri::Own(Box::new(
            args.runtime.config(args.data_dir.join("runtime"))?,
        )),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let _lock = super::lock::hold(&args.data_dir)?;
    let (client, _) = super::client::connect(kubeconfig).await?;
    let cancel = CancellationToken::new();
    super::up::spawn_signal_handler(cancel.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let own_runtime = matches!(cri, Cri::Own(_));
    let cri_socket = match cri {
        Cri::Socket(socket) => socket,
        Cri::Own(config) => match super::node::start_runtime(*config, &mut tasks, &cancel).await {
            Ok(s) => s,
            // SIGTERM while starting: a clean stop, not a failure.
            Err(_) if cancel.is_cancelled() => return super::node::join_all(tasks, &cancel).await,
            Err(e) => return Err(e),
        },
    };
    let config = node_agent::AgentConfig {
        node_name: args.node_name,
        cri_socket,
        pod_log_dir: args.data_dir.join("pods"),
        listen: SocketAddr::new(args.node_ip, args.agent_port),
        node_ip: Some(args.node_ip),
        state_dir: Some(args.data_dir.join("agent")),
        cluster_dns: args.dns.cluster_dns.0,
        cluster_domain: args.dns.cluster_domain,
        resolv_conf: args.dns.resolv_conf,
        service_proxy: true,
        pod_routes: true,
        node_labels: args.node_labels.into_iter().collect(),
        register_taints: args.register_with_taints,
    };
    let c = cancel.clone();
    tasks.spawn(async move {
        let r = node_agent::run(config, client, c.clone()).await;
        c.cancel();
        r.context("node agent")
    });
    let result = super::node::join_all(tasks, &cancel).await;
    if own_runtime && let Some(note) = super::node::still_running(&args.data_dir) {
        eprintln!("{note}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.agent)
    }

    #[test]
    fn without_a_socket_the_agent_runs_skiffs_runtime_under_its_data_dir() {
        let a =
            parse(&["--node-name", "n1", "--data-dir", "/d", "--pids-limit", "7"]).expect("parse");
        assert!(a.cri_socket.is_none());
        let config = a
            .runtime
            .config(a.data_dir.join("runtime"))
            .expect("config");
        assert_eq!(config.socket, PathBuf::from("/d/runtime/cri.sock"));
        assert_eq!(config.defaults.pids_limit, 7);
    }

    #[test]
    fn runtime_options_with_another_runtime_are_refused() {
        let err = parse(&[
            "--node-name",
            "n1",
            "--cri-socket",
            "/s",
            "--pod-cidr",
            "10.1.0.0/16",
        ])
        .expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let a = parse(&["--node-name", "n1", "--cri-socket", "/s"]).expect("parse");
        assert_eq!(a.cri_socket, Some(PathBuf::from("/s")));
    }

    #[test]
    fn labels_and_taints_parse_as_the_kubelets_flags() {
        let a = parse(&[
            "--node-name",
            "n1",
            "--node-labels",
            "node-role.kubernetes.io/control-plane=,tier=web",
            "--register-with-taints",
            "node-role.kubernetes.io/control-plane:NoSchedule,dedicated=gpu:NoExecute",
        ])
        .expect("parse");
        assert_eq!(
            a.node_labels,
            vec![
                (
                    "node-role.kubernetes.io/control-plane".to_owned(),
                    String::new()
                ),
                ("tier".to_owned(), "web".to_owned())
            ]
        );
        let t = &a.register_with_taints;
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].key, "node-role.kubernetes.io/control-plane");
        assert_eq!(t[0].value, None);
        assert_eq!(t[0].effect, "NoSchedule");
        assert_eq!(
            (t[1].key.as_str(), t[1].value.as_deref()),
            ("dedicated", Some("gpu"))
        );
        assert_eq!(t[1].effect, "NoExecute");
    }

    #[test]
    fn bad_labels_and_taints_are_named() {
        for (flag, value, says) in [
            ("--node-labels", "tier", "expected key=value"),
            ("--node-labels", "bad-=x", "node label key \"bad-\""),
            ("--node-labels", "a/b/c=x", "optional prefix"),
            (
                "--register-with-taints",
                "k=v",
                "expected key[=value]:Effect",
            ),
            (
                "--register-with-taints",
                "k:Never",
                "NoSchedule, PreferNoSchedule or NoExecute",
            ),
        ] {
            let err = parse(&["--node-name", "n1", flag, value]).expect_err(value);
            assert!(err.to_string().contains(says), "{value}: {err}");
        }
    }
}
