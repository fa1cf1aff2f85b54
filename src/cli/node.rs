//! The embedded CRI runtime's settings and start, shared by `skiff up` and `skiff agent`
//! (which runs it unless it is given another runtime's socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A node's DNS options, with the kubelet's names.
#[derive(Debug, clap::Args)]
pub struct DnsArgs {
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The cluster DNS address, pods' nameserver under dnsPolicy ClusterFirst (in the service
    /// range 10.96.0.0/12; every node answers it itself). `none`: no cluster DNS.
    #[arg(long, default_value = "10.96.0.10", value_parser = cluster_dns)]
    pub cluster_dns: ClusterDns,
    /// The resolv.conf that pods with dnsPolicy Default get and whose nameservers the
    /// cluster DNS forwards other names to.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

/// `--cluster-dns`: an address, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterDns(pub Option<std::net::Ipv4Addr>);

/// Parses `--cluster-dns`: an IPv4 address in the service range, or `none`.
pub fn cluster_dns(s: &str) -> Result<ClusterDns, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(ClusterDns(None));
    }
    let ip: std::net::Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address (or `none`)"))?;
    let o = ip.octets();
    if o[0] != 10 || !(96..112).contains(&o[1]) {
        return Err(format!(
            "{ip} is outside the service range 10.96.0.0/12, where the kube-dns Service's address must be"
        ));
    }
    Ok(ClusterDns(Some(ip)))
}

/// Options of skiff's own runtime.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// A registry (host[:port], or a network such as 172.30.0.0/16 holding its address) that
    /// may be reached over plain HTTP; repeatable. Loopback registries always may.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// The node's registries file (k3s's registries.yaml format): mirrors tried before a
    /// registry, and per-host credentials and TLS settings.
    #[arg(long)]
    registries_config: Option<PathBuf>,
    /// Most processes a container may have unless its pod sets a limit (0: unlimited).
    #[arg(long, default_value_t = runtime::DEFAULT_PIDS_LIMIT)]
    pids_limit: i64,
    /// A container log file is rotated once it is larger than this many bytes (the kubelet's
    /// containerLogMaxSize; 0: never).
    #[arg(long, default_value_t = 10 << 20)]
    container_log_max_size: u64,
    /// Log files kept per container, the live one included (containerLogMaxFiles).
    #[arg(long, default_value_t = 5)]
    container_log_max_files: u32,
    /// The pod subnet of skiff's default CNI network (a bridge per subnet, host-local addresses)
    /// [default: the node's own, which the control plane's node IPAM gives it from
    /// --cluster-cidr].
    #[arg(long, value_parser = pod_cidr)]
    pod_cidr: Option<String>,
    /// Directory of CNI network configs (the first by name is used) [default:
    /// <data-dir>/runtime/cni, where skiff writes its own config when there is none].
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// A directory of image blobs shared with the other nodes on this machine (`skiff cluster`
    /// gives its nodes one): a layer one node fetched is not fetched again by another. Each
    /// node still asks the registry for the manifest with its own credentials.
    #[arg(long)]
    image_cache: Option<PathBuf>,
    /// Directories holding the CNI plugin binaries, searched in order.
    #[arg(
        long,
        env = "SKIFF_CNI_BIN_DIR",
        value_delimiter = ':',
        default_value = "/usr/lib/cni:/opt/cni/bin"
    )]
    cni_bin_dir: Vec<PathBuf>,
}

fn pod_cidr(s: &str) -> Result<String, String> {
    runtime::network::parse_pod_cidr(s).map(|_| s.to_string())
}

impl RuntimeArgs {
    /// The runtime's configuration with its state under `root` and its socket at
    /// `<root>/cri.sock`. Reads the registries file, so a mistake in it stops the command
    /// before anything starts.
    pub fn config(&self, root: PathBuf) -> Result<runtime::RuntimeConfig> {
        let registries = match &self.registries_config {
            Some(path) => {
                runtime::image::hosts::Registries::load(path, self.insecure_registries.clone())?
            }
            None => runtime::image::hosts::Registries::new(self.insecure_registries.clone()),
        };
        let mut network = runtime::network::NetworkOptions::under(&root);
        network.pod_cidr = self.pod_cidr.clone();
        network.bin_dirs = self.cni_bin_dir.clone();
        if let Some(dir) = &self.cni_conf_dir {
            network.conf_dir = dir.clone();
            network.write_default = false;
        }
        Ok(runtime::RuntimeConfig {
            socket: root.join("cri.sock"),
            root_dir: root,
            run_dir: None,
            registries,
            defaults: runtime::ContainerDefaults {
                pids_limit: self.pids_limit,
                log_max_size: self.container_log_max_size,
                log_max_files: self.container_log_max_files,
            },
            network,
            image_cache: self.image_cache.clone(),
        })
    }
}

/// Starts the runtime as one of `tasks` (its end cancels `cancel`) and waits until its socket
/// answers; the socket's path.
pub async fn start_runtime(
    config: runtime::RuntimeConfig,
    tasks: &mut JoinSet<Result<()>>,
    cancel: &CancellationToken,
) -> Result<PathBuf> {
    let socket = config.socket.clone();
    let c = cancel.clone();
    tasks.spawn(async move {
        let r = runtime::serve(config, c.clone()).await;
        c.cancel();
        r.context("runtime")
    });
    wait_for_socket(&socket, cancel).await?;
    Ok(socket)
}

async fn wait_for_socket(path: &Path, cancel: &CancellationToken) -> Result<()> {
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Ok(());
        }
        if cancel.is_cancelled() {
            anyhow::bail!("stopped before the runtime was ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the runtime did not open {} in 10 s", path.display())
}

/// What a stopping node says about the containers it leaves running by design (pods survive
/// a restart of their node), and how to stop them; `None` when none is left.
pub fn still_running(data_dir: &Path) -> Option<String> {
    let n = std::fs::read_dir(data_dir.join("runtime/containers"))
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0);
    (n > 0).then(|| {
        format!(
            "skiff stopped; {n} container{} keep{} running, as pods outlive their node's restarts: `skiff down --data-dir {}` stops {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            data_dir.display(),
            if n == 1 { "it" } else { "them" },
        )
    })
}

/// Waits for every task; the first error, after cancelling the others.
pub async fn join_all(mut tasks: JoinSet<Result<()>>, cancel: &CancellationToken) -> Result<()> {
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(anyhow::Error::from).and_then(|x| x);
        if let Err(e) = r {
            if first_err.is_none() {
                first_err = Some(e);
            } else {
                tracing::warn!(error = %format!("{e:#}"), "task ended with an error");
            }
            cancel.cancel();
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dns_is_an_address_in_the_service_range_or_none() {
        assert_eq!(
            cluster_dns("10.96.0.10"),
            Ok(ClusterDns(Some(std::net::Ipv4Addr::new(10, 96, 0, 10))))
        );
        assert_eq!(cluster_dns("None"), Ok(ClusterDns(None)));
        let outside = cluster_dns("192.0.2.1").expect_err("outside the range");
        assert!(outside.contains("10.96.0.0/12"), "{outside}");
        let garbage = cluster_dns("dns").expect_err("not an address");
        assert!(garbage.contains("\"dns\""), "{garbage}");
    }

    #[test]
    fn dns_flags_have_the_kubelets_defaults() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            dns: DnsArgs,
        }
        let c = Cmd::try_parse_from(["x"]).expect("defaults");
        assert_eq!(c.dns.cluster_domain, "cluster.local");
        assert_eq!(
            c.dns.cluster_dns.0,
            Some(std::net::Ipv4Addr::new(10, 96, 0, 10))
        );
        assert_eq!(c.dns.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        let c = Cmd::try_parse_from(["x", "--cluster-dns", "none", "--cluster-domain", "corp"])
            .expect("flags");
        assert_eq!(
            (c.dns.cluster_dns.0, c.dns.cluster_domain.as_str()),
            (None, "corp")
        );
    }
}
