//! skiff's control plane: the raft-replicated store, the Kubernetes API server, the scheduler
//! and the controllers. `run` starts them all for one member.

pub mod api;
pub mod controllers;
pub mod quantity;
pub mod scheduler;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use api::{ApiState, Objects};
use store::{Store, StoreConfig, StoreError};

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
}

/// How to run one control-plane member.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

/// Starts the store, bootstraps the cluster's namespaces, and serves the API until cancelled.
/// `ready` is told the bound address once the API is being served.
pub async fn run(
    config: ControllerConfig,
    cancel: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ControllerError> {
    let started = Store::start(
        StoreConfig::single(Some(config.data_dir.join("store"))),
        Arc::new(store::transport::LocalOnly),
        cancel.clone(),
    )?;
    let objects = Objects::new(started.store.clone());
    // The lone member leads within a tick or two; writes before then answer NoLeader.
    let mut tries = 0;
    loop {
        match objects.ensure_system_namespaces().await {
            Ok(()) => break,
            Err(e) if tries < 100 => {
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
    let sched = tokio::spawn(scheduler::run(objects.clone(), cancel.clone()));
    let namespaces = tokio::spawn(controllers::namespace::run(objects.clone(), cancel.clone()));
    let workloads = tokio::spawn(controllers::run(objects.clone(), cancel.clone()));
    let app = api::router(ApiState {
        objects,
        cancel: cancel.clone(),
    });
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let shutdown = cancel.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    cancel.cancel();
    let _ = sched.await;
    let _ = namespaces.await;
    let _ = workloads.await;
    let _ = started.task.await;
    served.map_err(ControllerError::Serve)
}
