//! skiff's node agent (the kubelet's role, and kube-proxy's): registers the Node, renews its
//! Lease, watches the pods bound to it and drives a CRI runtime to run them, reports their
//! status, serves container logs over HTTP, keeps the node's Service rules (`proxy`), answers
//! cluster DNS (`dns`) and routes other nodes' pod subnets (`routes`).
//!
//! The binary calls [`run`]; [`run_with`] takes any [`cri::Cri`] implementation.

mod backoff;
pub mod cri;
pub mod dns;
mod env;
mod error;
mod fieldref;
mod hooks;
mod images;
mod lease;
pub mod logs;
mod node;
pub mod objects;
mod pod_files;
mod pods;
mod prepare;
pub mod probe;
pub mod proxy;
pub mod pull;
pub mod quantity;
pub mod recorder;
mod registry;
pub mod routes;
mod server;
mod services;
mod slot;
mod spec;
mod status;
pub mod stream;
pub mod volumes;
mod worker;

pub use error::AgentError;
pub use node::KUBELET_VERSION;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How the agent is set up; the `skiff` binary fills it from flags.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (and the Lease's).
    pub node_name: String,
    /// The CRI runtime's unix socket (skiff's runtime, or containerd's).
    pub cri_socket: PathBuf,
    /// Root of the pod log directories, like `/var/log/pods`.
    pub pod_log_dir: PathBuf,
    /// The agent's HTTP server (the kubelet's port 10250 role).
    pub listen: SocketAddr,
    /// InternalIP; default: the host's primary IPv4 (or 127.0.0.1).
    pub node_ip: Option<IpAddr>,
    /// Where the agent keeps state across restarts (which credentials pulled each image);
    /// `None` keeps it in memory.
    pub state_dir: Option<PathBuf>,
    /// The cluster DNS address (the kubelet's `--cluster-dns`): pods' nameserver under
    /// `dnsPolicy: ClusterFirst`, answered by this node's own DNS server. `None`: no cluster
    /// DNS, pods get the node's resolvers.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster's domain (the kubelet's `--cluster-domain`, `cluster.local`).
    pub cluster_domain: String,
    /// The resolv.conf pods with `dnsPolicy: Default` get, whose nameservers the DNS server
    /// forwards other names to (the kubelet's `--resolv-conf`).
    pub resolv_conf: PathBuf,
    /// Keep the node's Service rules in nftables (kube-proxy's job).
    pub service_proxy: bool,
    /// Route other nodes' pod subnets through them (flannel host-gw's job).
    pub pod_routes: bool,
    /// Labels the Node gets besides the well-known ones (the kubelet's `--node-labels`).
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Taints the Node is created with (the kubelet's `--register-with-taints`).
    pub register_taints: Vec<k8s_openapi::api::core::v1::Taint>,
}

/// How long tasks get to finish after `cancel` before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent against the CRI runtime at `config.cri_socket` until `cancel`.
pub async fn run(
    config: AgentConfig,
    client: kube::Client,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let cri = Arc::new(cri::GrpcCri::connect_lazy(&config.cri_socket)?);
    run_with(config, client, cri, cancel).await
}

/// Removes what node agents leave in the node's network namespace by design (the service
/// rules, the pod routes and their marks, the cluster DNS address), for `skiff down`; what it
/// removed. Shared by every agent in the namespace: the caller makes sure none runs.
pub async fn remove_node_network(
    cluster_dns: Option<std::net::Ipv4Addr>,
) -> Result<Vec<String>, AgentError> {
    let mut removed = Vec::new();
    if proxy::remove_table().await? {
        removed.push(format!("nftables table ip {}", proxy::rules::TABLE));
    }
    removed.extend(routes::remove().await?);
    if let Some(ip) = cluster_dns
        && dns::Loopback::remove(ip).await?
    {
        removed.push(format!("cluster DNS address {ip} on {}", dns::LINK));
    }
    Ok(removed)
}

/// Retries `f` with back-off (1 s doubling to 30 s) until it succeeds; `None` if cancelled.
async fn retry<T, F, Fut>(what: &str, cancel: &CancellationToken, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AgentError>>,
{
    let mut delay = Duration::from_secs(1);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "{what} failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// [`run`] with any CRI implementation.
pub async fn run_with<C: cri::Cri>(
    config: AgentConfig,
    client: kube::Client,
    cri: Arc<C>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let machine = node::Machine::read()?;
    let node_ip = config.node_ip.unwrap_or_else(node::primary_ip);
    let node_name = config.node_name.clone();
    tracing::info!(node = %node_name, %node_ip, socket = %config.cri_socket.display(), "node agent starting");

    // In `skiff up` the runtime and the API server start alongside the agent: wait for both.
    let Some(version) = retry("cri version", &cancel, || cri.version()).await else {
        return Ok(());
    };
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version, "cri runtime answered");
    let local = volumes::local_path::LocalPath {
        root: config.state_dir.as_ref().map_or_else(
            || std::env::temp_dir().join("skiff-agent-storage"),
            |d| d.join("storage"),
        ),
        node: node_name.clone(),
    };
    local.create_root()?;
    let annotations = std::collections::BTreeMap::from([(
        volumes::local_path::ROOT_ANNOTATION.to_owned(),
        local.root.display().to_string(),
    )]);
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(registered) = retry("register node", &cancel, || {
        node::register(
            &nodes,
            &node_name,
            &annotations,
            &config.node_labels,
            &config.register_taints,
        )
    })
    .await
    else {
        return Ok(());
    };
    tracing::info!(node = %node_name, "node registered");

    let registry = registry::PodRegistry::default();
    let pull_records = match &config.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| AgentError::StateDir {
                path: dir.clone(),
                source,
            })?;
            Some(dir.join("pulled-images.json"))
        }
        None => None,
    };
    // A task failing stops the others through this token without cancelling the caller's.
    let inner = cancel.child_token();
    let pods_dir = config.state_dir.as_ref().map_or_else(
        || std::env::temp_dir().join("skiff-agent-pods"),
        |d| d.join("pods"),
    );
    std::fs::create_dir_all(&pods_dir)
        .and_then(|()| {
            std::fs::set_permissions(
                &pods_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o750),
            )
        })
        .map_err(|source| AgentError::StateDir {
            path: pods_dir.clone(),
            source,
        })?;
    // Pods whose ConfigMaps or Secrets changed, or whose probe results did, are re-synced at
    // once.
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel();
    let view = services::ServiceView::start(&client, &inner);
    let host_resolv =
        std::fs::read_to_string(&config.resolv_conf).map_err(|source| AgentError::ResolvConf {
            path: config.resolv_conf.clone(),
            source,
        })?;
    let node_dns = dns::resolv::NodeDns {
        cluster_dns: config.cluster_dns,
        domain: config.cluster_domain.clone(),
        host: dns::resolv::ResolvConf::parse(&host_resolv),
    };
    let node_ctx = Arc::new(worker::NodeContext {
        node_name: node_name.clone(),
        node_ip,
        pod_log_dir: config.pod_log_dir.clone(),
        pods_dir: pods_dir.clone(),
        runtime_name: version.runtime_name.clone(),
        pulls: Arc::new(worker::Pulls {
            secrets: Arc::new(pull::KubeSecrets(client.clone())),
            records: pull::PullRecords::open(pull_records),
        }),
        objects: Arc::new(objects::WatchedObjects::new(
            client.clone(),
            view.clone(),
            wake_tx.clone(),
        )),
        claims: Arc::new(volumes::claims::ApiClaims {
            client: client.clone(),
            local: local.clone(),
        }),
        volumes: volumes::VolumeManager::new(pods_dir, Arc::new(volumes::mounter::HostMounter)),
        events: Arc::new(recorder::spawn(
            client.clone(),
            "kubelet",
            &node_name,
            inner.clone(),
        )),
        allocatable: fieldref::Allocatable {
            cpu_milli: i64::try_from(machine.cpus).unwrap_or(1) * 1000,
            memory: i64::try_from(machine.memory_kib).unwrap_or(0) * 1024,
        },
        actions: Arc::new(probe::action::NetActions::new(cri.clone())),
        wake: wake_tx,
        dns: node_dns.clone(),
    });
    let mut tasks: JoinSet<(&'static str, Result<(), AgentError>)> = JoinSet::new();
    let kick = Arc::new(tokio::sync::Notify::new());
    tasks.spawn(node::run_pod_cidr(
        nodes.clone(),
        cri.clone(),
        node_name.clone(),
        kick.clone(),
        inner.clone(),
    ));
    tasks.spawn(node::run_status_loop(
        nodes,
        cri.clone(),
        node_name.clone(),
        machine,
        node_ip,
        config.listen.port(),
        kick,
        inner.clone(),
    ));
    let reclaimer = local.run_reclaimer(client.clone(), inner.clone());
    tasks.spawn(async move {
        reclaimer.await;
        ("local-path reclaimer", Ok(()))
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), lease::NAMESPACE);
    let lease_task = lease::run(leases, node_name.clone(), Some(registered), inner.clone());
    tasks.spawn(async move {
        lease_task.await;
        ("lease", Ok(()))
    });
    if config.service_proxy {
        let proxy_task = proxy::run(
            view.clone(),
            node_name.clone(),
            (
                Arc::new(proxy::NftDataplane::default()),
                Arc::new(proxy::conntrack::NetlinkConntrack::default()),
            ),
            proxy::host_options(),
            config.cluster_dns,
            inner.clone(),
        );
        tasks.spawn(async move { ("service proxy", proxy_task.await) });
    }
    if config.pod_routes {
        let routes_task = routes::run(
            client.clone(),
            node_name.clone(),
            Arc::new(routes::NetlinkRoutes::default()),
            inner.clone(),
        );
        tasks.spawn(async move { ("pod routes", routes_task.await) });
    }
    if let Some(address) = config.cluster_dns {
        let dns_task = dns::run(
            view.clone(),
            dns::DnsServe {
                address,
                domain: config.cluster_domain.clone(),
                upstreams: dns::upstreams(&node_dns.host),
            },
            Arc::new(dns::Loopback),
            inner.clone(),
        );
        tasks.spawn(async move { ("cluster dns", dns_task.await) });
    }
    let streams = Arc::new(stream::CriStreams(cri.clone()));
    let pods_task = pods::run(
        client,
        cri,
        node_ctx,
        registry.clone(),
        wake_rx,
        inner.clone(),
    );
    tasks.spawn(async move { ("pods", pods_task.await) });
    let server_task = server::serve(
        config.listen,
        server::ServerState {
            pod_log_dir: config.pod_log_dir,
            registry,
            cancel: inner.clone(),
            streams,
        },
    );
    tasks.spawn(async move { ("http", server_task.await) });

    let mut result = Ok(());
    tokio::select! {
        _ = inner.cancelled() => {}
        Some(done) = tasks.join_next() => {
            result = match done {
                Ok((task, Ok(()))) if !inner.is_cancelled() => Err(AgentError::Task {
                    task,
                    message: "stopped unexpectedly".to_owned(),
                }),
                Ok((_, r)) => r,
                Err(e) => Err(AgentError::Task { task: "agent", message: e.to_string() }),
            };
            inner.cancel();
        }
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok((task, Err(e))) = done {
                tracing::warn!(task, error = %e, "task failed during shutdown");
            }
        }
    })
    .await
    .is_err()
    {
        tasks.abort_all();
    }
    if let Err(e) = &result {
        tracing::error!(node = %node_name, error = %e, "node agent stopped");
    } else {
        tracing::info!(node = %node_name, "node agent stopped");
    }
    result
}
