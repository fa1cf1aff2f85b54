//! skiff's control plane: the raft-replicated store, the Kubernetes API server, the scheduler
//! and the controllers. `run` starts them all for one member: the store (with the peer service
//! when the member is one of several), the API server on every member, and the scheduler and
//! controllers only while this member leads.

pub mod api;
pub mod cluster;
pub mod controllers;
pub mod cron;
pub mod quantity;
pub mod reconcile;
pub mod scheduler;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use api::{ApiState, Objects};
use cluster::{ClusterConfig, ClusterError, GrpcTransport, PeerService};
use controllers::kubernetes_service;
use store::{RaftThread, Store, StoreConfig, StoreError, member_id};

/// Errors of starting or running the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("api server: {0}")]
    Serve(std::io::Error),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// How to run one control-plane member.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: a lone member with no peer service (`skiff up`).
    pub cluster: Option<ClusterConfig>,
    /// How long an Event lives after it was last seen (`--event-ttl`).
    pub event_ttl: Duration,
    /// The cluster DNS address: the `kube-system/kube-dns` Service gets it as its cluster IP
    /// (every node agent answers it). `None`: no such Service.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// Where node pod subnets come from (`--cluster-cidr`, `--node-cidr-mask-size`); `None`:
    /// nodes get none, and their runtimes need `--pod-cidr`.
    pub node_ipam: Option<controllers::nodeipam::NodeIpam>,
    /// How long a node may go without a heartbeat before it is Unknown and tainted
    /// unreachable (`--node-monitor-grace-period`).
    pub node_monitor_grace: Duration,
}

/// The cluster DNS address by default (kubeadm's, the tenth of the service range).
pub const DEFAULT_CLUSTER_DNS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 10);

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

impl ControllerConfig {
    /// A lone member, as `skiff up` runs it.
    pub fn single(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            cluster: None,
            event_ttl: DEFAULT_EVENT_TTL,
            cluster_dns: Some(DEFAULT_CLUSTER_DNS),
            node_ipam: Some(controllers::nodeipam::NodeIpam::DEFAULT),
            node_monitor_grace: controllers::nodelifecycle::DEFAULT_GRACE,
        }
    }
}

/// Starts the store, bootstraps the cluster's namespaces, and serves the API until cancelled.
/// `ready` is told the bound address once the API is being served.
pub async fn run(
    config: ControllerConfig,
    cancel: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ControllerError> {
    let store_dir = Some(config.data_dir.join("store"));
    let raft = RaftThread::start()?;
    let mut peer_task = None;
    let (started, name) = match &config.cluster {
        None => (
            Store::start_on(
                raft.handle(),
                StoreConfig::single(store_dir),
                Arc::new(store::transport::LocalOnly),
                cancel.clone(),
            )?,
            None,
        ),
        Some(cc) => {
            let members = cc.members();
            let id = member_id(&cc.name);
            if !cc.join && !members.iter().any(|m| m.id == id) {
                return Err(ClusterError::NotInMembers {
                    name: cc.name.clone(),
                }
                .into());
            }
            let transport = GrpcTransport::new(id, &members, raft.handle().clone(), cancel.clone());
            let mut scfg =
                StoreConfig::member(id, members.iter().map(|m| m.id).collect(), store_dir);
            scfg.join = cc.join;
            let started = Store::start_on(raft.handle(), scfg, transport.clone(), cancel.clone())?;
            let listener = tokio::net::TcpListener::bind(cc.peer_listen)
                .await
                .map_err(|source| ControllerError::Listen {
                    addr: cc.peer_listen,
                    source,
                })?;
            let svc = PeerService::new(
                started.store.clone(),
                started.inbox.clone(),
                members,
                cancel.clone(),
            );
            peer_task = Some(tokio::spawn(cluster::serve(
                svc,
                listener,
                transport.clone(),
                cancel.clone(),
            )));
            tracing::info!(member = %cc.name, id, join = cc.join, "control-plane member starting");
            (started, Some(cc.name.clone()))
        }
    };
    let store = started.store.clone();
    let objects = Objects::new(store.clone());
    // A lone member leads within a tick or two; a cluster needs an election first, and a
    // joining member already has the namespaces from the snapshot it is sent.
    let joining = config.cluster.as_ref().is_some_and(|c| c.join);
    let mut tries = 0;
    loop {
        if joining {
            break;
        }
        match objects.ensure_system_objects(config.cluster_dns).await {
            Ok(()) => break,
            Err(e) if tries < 100 || (config.cluster.is_some() && !cancel.is_cancelled()) => {
                tries += 1;
                tracing::debug!(error = %e, "waiting for the store to accept writes");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(ControllerError::Bootstrap(e.to_string())),
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ControllerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ControllerError::Serve)?;
    tracing::info!(%addr, "API server listening");
    // Members others can reach are the `kubernetes` Service's endpoints.
    let identity = kubernetes_service::advertised(addr).map(|a| {
        tokio::spawn(kubernetes_service::run_member(
            objects.clone(),
            name.clone().unwrap_or_else(|| "single".to_owned()),
            a,
            cancel.clone(),
        ))
    });
    let loops = tokio::spawn(leader_loops(
        objects.clone(),
        store.clone(),
        LeaderConfig {
            event_ttl: config.event_ttl,
            node_ipam: config.node_ipam,
            node_monitor_grace: config.node_monitor_grace,
            api_port: addr.port(),
        },
        cancel.clone(),
    ));
    let mut app = api::router(ApiState {
        objects,
        cancel: cancel.clone(),
    });
    if config.cluster.is_some() {
        // Reads are served from this member's state: make them linearizable (see `read_barrier`).
        app = app.layer(axum::middleware::from_fn_with_state(
            store.clone(),
            read_barrier_layer,
        ));
    }
    let app = app.merge(
        axum::Router::new()
            .route("/skiff/raft", axum::routing::get(raft_status))
            .with_state((store.clone(), name)),
    );
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let shutdown = cancel.clone();
    // Small answers go out at once rather than waiting on Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    cancel.cancel();
    let _ = loops.await;
    if let Some(t) = identity {
        let _ = t.await;
    }
    if let Some(t) = peer_task
        && let Ok(Err(e)) = t.await
    {
        tracing::warn!(error = %e, "peer service ended with an error");
    }
    let _ = started.task.await;
    raft.stop().await;
    served.map_err(ControllerError::Serve)
}

/// Runs the scheduler and the controllers while this member leads, and stops them (waiting for
/// them to finish) as soon as it does not: only one member's loops act on the cluster at a time.
/// What the leader's loops are set up with.
struct LeaderConfig {
    event_ttl: Duration,
    node_ipam: Option<controllers::nodeipam::NodeIpam>,
    node_monitor_grace: Duration,
    api_port: u16,
}

async fn leader_loops(objects: Objects, store: Store, lc: LeaderConfig, cancel: CancellationToken) {
    let LeaderConfig {
        event_ttl,
        node_ipam,
        node_monitor_grace,
        api_port,
    } = lc;
    let mut leading = store.leadership();
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = leading.changed() => if r.is_err() { return },
            }
        }
        tracing::info!("leading: starting the scheduler and controllers");
        let term = cancel.child_token();
        let sched = tokio::spawn(scheduler::run(objects.clone(), term.clone()));
        let namespaces = tokio::spawn(controllers::namespace::run(objects.clone(), term.clone()));
        let workloads = tokio::spawn(controllers::run(objects.clone(), term.clone()));
        let events = tokio::spawn(controllers::event_ttl::run(
            objects.clone(),
            event_ttl,
            term.clone(),
        ));
        let ipam = node_ipam.map(|ipam| {
            tokio::spawn(controllers::nodeipam::run(
                objects.clone(),
                ipam,
                term.clone(),
            ))
        });
        // Looked up first: a second create would fail on its address before its name.
        let services = api::resources::services();
        if objects
            .get(services, Some("default"), "kubernetes")
            .is_err()
        {
            let service = kubernetes_service::service(api_port);
            match objects
                .create(services, Some("default"), service, false)
                .await
            {
                Ok(_) | Err(api::ApiError::AlreadyExists { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "cannot create the kubernetes Service"),
            }
        }
        let apiserver_endpoints = tokio::spawn(kubernetes_service::run_leader(
            objects.clone(),
            term.clone(),
        ));
        let lifecycle = tokio::spawn(controllers::nodelifecycle::run(
            objects.clone(),
            node_monitor_grace,
            term.clone(),
        ));
        while *leading.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = leading.changed() => if r.is_err() { break },
            }
        }
        term.cancel();
        let _ = sched.await;
        let _ = namespaces.await;
        let _ = workloads.await;
        let _ = events.await;
        let _ = lifecycle.await;
        let _ = apiserver_endpoints.await;
        if let Some(ipam) = ipam {
            let _ = ipam.await;
        }
        if cancel.is_cancelled() {
            return;
        }
        tracing::info!("no longer leading: stopped the scheduler and controllers");
    }
}

/// Holds GETs of API objects until this member has applied what the leader had committed.
async fn read_barrier_layer(
    State(store): State<Store>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if req.method() == axum::http::Method::GET
        && (path.starts_with("/api/") || path.starts_with("/apis/"))
        && let Err(e) = store.read_barrier().await
    {
        return api::ApiError::from(e).into_response();
    }
    next.run(req).await
}

/// `GET /skiff/raft`: this member's raft view (who leads, term, applied index, members).
async fn raft_status(State((store, name)): State<(Store, Option<String>)>) -> Response {
    let st = store.status();
    let mut v = serde_json::to_value(&st).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("name".into(), serde_json::Value::from(name));
    }
    axum::Json(v).into_response()
}
