//! skiff's embedded container runtime: a CRI `runtime.v1` server (the role containerd plays for
//! a kubelet) with an image store, pod sandboxes and containers run by youki's libcontainer.
//!
//! Public API, called by the `skiff` binary:
//! - [`serve`]`(RuntimeConfig, CancellationToken)`: serve CRI on a unix socket until cancelled.
//! - [`monitor_main`]`(args) -> i32`: the per-container monitor; the binary calls it when started
//!   as `skiff __monitor <container-dir>` (pass the arguments after `__monitor`; a full argv is
//!   accepted too) and exits with the returned code.
//!
//! On-disk layout under `root_dir`:
//! - `content/sha256/<hex>`: blobs (manifests, configs, layers), verified before rename
//! - `images/<config hex>.json`: the image index
//! - `snapshots/<diff-id hex>/fs`: unpacked layers, shared by images, overlay lowerdirs
//! - `sandboxes/<id>/{state.json,resolv.conf,ns/{net,ipc,uts}}` (state.json holds the pod's CNI
//!   attachment and ADD result)
//! - `sandboxes/<id>/{hosts,hostname}`: the pod's /etc files
//! - `cni/10-skiff.conflist`: the default pod network, written when the node supplies none
//! - `containers/<id>/{state.json,monitor.json,bundle/config.json,rootfs,upper,work,pid,exit.json,monitor.log,reopen-log}`
//! - `libcontainer/<id>`: libcontainer's own state while a container runs

pub mod container;
pub mod cri;
pub mod error;
pub mod image;
pub mod monitor;
pub mod network;
pub mod sandbox;
pub mod state;
pub mod stream;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use crate::cri::runtime::{ContainerDefaults, DEFAULT_PIDS_LIMIT};
pub use crate::error::RuntimeError;
pub use crate::monitor::{
    EXEC_ARG, MONITOR_ARG, MONITOR_FINISH_ARG, exec_main, monitor_finish_main, monitor_main,
};

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// State root, e.g. `<data-dir>/runtime`.
    pub root_dir: PathBuf,
    /// CRI unix socket to serve, e.g. `<data-dir>/runtime/cri.sock`.
    pub socket: PathBuf,
    /// Where images come from: mirrors, plain-HTTP hosts, node-wide credentials.
    pub registries: image::hosts::Registries,
    /// Node-wide container defaults: pids limit, log rotation.
    pub defaults: ContainerDefaults,
    /// The pod network (CNI config, plugin directories, pod subnet).
    pub network: network::NetworkOptions,
}

/// Builds the runtime with the real OS implementations. The monitor executable is the current
/// one (the `skiff` binary, which dispatches `__monitor` to [`monitor_main`]).
pub fn build_runtime(config: &RuntimeConfig) -> Result<Arc<cri::Runtime>, RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("current exe", "/proc/self/exe"))?;
    let images = image::ImageStore::open(
        &config.root_dir,
        Arc::new(image::registry::OciRegistry::new(config.registries.clone())),
        Arc::new(image::unpack::OverlayWhiteouts),
    )?;
    Ok(Arc::new(
        cri::Runtime::open(
            &config.root_dir,
            images,
            Arc::new(sandbox::LinuxNamespaces),
            Arc::new(container::LinuxHost),
            Arc::new(monitor::ProcessLauncher::new(exe)),
            Arc::new(network::CniPlugins::new(
                &config.network,
                Arc::new(network::ProcessExec::default()),
            )?),
        )?
        .with_defaults(config.defaults.clone()),
    ))
}

/// Serves the CRI RuntimeService and ImageService on `config.socket` until `cancel` fires.
pub async fn serve(config: RuntimeConfig, cancel: CancellationToken) -> Result<(), RuntimeError> {
    let rt = build_runtime(&config)?;
    let sock = &config.socket;
    if let Some(parent) = sock.parent() {
        std::fs::create_dir_all(parent).map_err(RuntimeError::io("create dir", parent))?;
    }
    match std::fs::remove_file(sock) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(RuntimeError::io("remove stale socket", sock)(e));
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(sock).map_err(RuntimeError::io("bind", sock))?;
    tracing::info!(socket = %sock.display(), root = %config.root_dir.display(), "cri server listening");
    // The streaming server: loopback only, on a port the kernel picks; its URLs reach clients
    // only through the node agent's proxy.
    let stream_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(RuntimeError::io("bind streaming server", "127.0.0.1:0"))?;
    let stream_addr = stream_listener
        .local_addr()
        .map_err(RuntimeError::io("streaming server address", "127.0.0.1:0"))?;
    let streams = Arc::new(stream::Streams::new(format!("http://{stream_addr}")));
    let exe = std::env::current_exe().map_err(RuntimeError::io("current exe", "/proc/self/exe"))?;
    let spawner: Arc<dyn stream::exec::ExecSpawner> = Arc::new(stream::exec::HelperSpawner::new(
        exe,
        config.root_dir.clone(),
    ));
    let running_rt = rt.clone();
    let stream_state = stream::StreamState {
        streams: streams.clone(),
        spawner: spawner.clone(),
        running: Arc::new(move |id: &str| {
            running_rt
                .container(id)
                .is_ok_and(|c| running_rt.live(&c) == cri::Live::Running)
        }),
        dialer: Arc::new(stream::portforward::NetnsDialer),
    };
    tracing::info!(addr = %stream_addr, "streaming server listening");
    let stream_task = tokio::spawn(stream::serve(stream_listener, stream_state, cancel.clone()));
    let svc = cri::CriService::new(rt).with_streaming(streams, spawner);
    let result = tonic::transport::Server::builder()
        .add_service(cri_api::RuntimeServiceServer::new(svc.clone()))
        .add_service(cri_api::ImageServiceServer::new(svc.clone()))
        .add_service(cri_api::images::images_server::ImagesServer::new(svc))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            cancel.cancelled(),
        )
        .await
        .map_err(|e| RuntimeError::Serve {
            path: sock.clone(),
            message: e.to_string(),
        });
    let _ = std::fs::remove_file(sock);
    stream_task.abort();
    result
}
