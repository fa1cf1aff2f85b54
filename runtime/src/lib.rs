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
//! - `containers/<id>/{state.json,started.json,rootfs,upper,work}`: the container's record (the
//!   newer file wins) and its writable layer
//! - `trash/<id>`: removed containers' directories until they are deleted, after the answer
//!
//! Volatile task state, under `run_dir` (by default `/run/skiff/<hash of root_dir>`, on a
//! tmpfs that the runtime mounts at `/run/skiff` when `/run` is not one, as `/run/runc` and
//! `/run/containerd` are on a usual host):
//! - `containers/<id>/{monitor.json,bundle/config.json,pid,exit.json,monitor.log,reopen-log,reopen-log.wake,exec-*}`
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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use crate::cri::runtime::{ContainerDefaults, DEFAULT_PIDS_LIMIT};
pub use crate::error::RuntimeError;
pub use crate::monitor::{EXEC_ARG, MONITOR_ARG, ZYGOTE_ARG, exec_main, monitor_main, zygote_main};
pub use crate::sandbox::pause::{PAUSE_ARG, pause_main};

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// State root, e.g. `<data-dir>/runtime`.
    pub root_dir: PathBuf,
    /// Volatile task state; `None` for [`default_run_dir`] on the tmpfs at [`RUN_BASE`].
    pub run_dir: Option<PathBuf>,
    /// CRI unix socket to serve, e.g. `<data-dir>/runtime/cri.sock`.
    pub socket: PathBuf,
    /// Where images come from: mirrors, plain-HTTP hosts, node-wide credentials.
    pub registries: image::hosts::Registries,
    /// Node-wide container defaults: pids limit, log rotation.
    pub defaults: ContainerDefaults,
    /// The pod network (CNI config, plugin directories, pod subnet).
    pub network: network::NetworkOptions,
    /// A blob cache shared with other nodes on this machine (`skiff cluster`), so a layer is
    /// fetched from its registry once.
    pub image_cache: Option<PathBuf>,
}

/// Where default run dirs live: a tmpfs, mounted by the runtime if it is not one already.
pub const RUN_BASE: &str = "/run/skiff";

/// The default volatile state directory of the runtime rooted at `root_dir`:
/// `/run/skiff/<16 hex digits of the SHA-256 of its absolute path>`, so that several nodes on
/// one machine keep apart, and a restarted runtime finds its running containers again.
pub fn default_run_dir(root_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let abs = std::fs::canonicalize(root_dir).unwrap_or_else(|_| root_dir.to_path_buf());
    let digest = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes());
    Path::new(RUN_BASE).join(&hex::encode(digest)[..16])
}

/// The run dir for `config`, created; for the default one, [`RUN_BASE`] is made a tmpfs first
/// when it is not one (an empty mount: what a tmpfs holds ends with the machine anyway). When
/// that mount is not permitted, the state stays on the disk under it, with a warning.
pub fn prepare_run_dir(config: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    let dir = match &config.run_dir {
        Some(d) => d.clone(),
        None => {
            ensure_tmpfs(Path::new(RUN_BASE))?;
            default_run_dir(&config.root_dir)
        }
    };
    std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create dir", &dir))?;
    Ok(dir)
}

fn is_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn ensure_tmpfs(dir: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(dir).map_err(RuntimeError::io("create dir", dir))?;
    if is_tmpfs(dir) {
        return Ok(());
    }
    // Two runtimes starting at once must not stack two mounts (the second would hide the
    // first one's state): the check and the mount happen under a lock next to the directory.
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(RuntimeError::io("create", &lock_path))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| RuntimeError::sys(format!("lock {}", lock_path.display()))(e))?;
    if is_tmpfs(dir) {
        return Ok(());
    }
    use nix::mount::MsFlags;
    match nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0711,size=256m"),
    ) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "mounted a tmpfs for the runtime's task state")
        }
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "cannot mount a tmpfs: task state stays on disk, and container starts are slower"
        ),
    }
    Ok(())
}

/// Builds the runtime with the real OS implementations. The monitor executable is the current
/// one (the `skiff` binary, which dispatches `__monitor` to [`monitor_main`]).
pub fn build_runtime(
    config: &RuntimeConfig,
    zygote: Arc<monitor::Zygote>,
) -> Result<Arc<cri::Runtime>, RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("current exe", "/proc/self/exe"))?;
    let run_dir = prepare_run_dir(config)?;
    let mut registry: Arc<dyn image::registry::Registry> =
        Arc::new(image::registry::OciRegistry::new(config.registries.clone()));
    if let Some(dir) = &config.image_cache {
        registry = Arc::new(image::shared::SharedBlobs::new(dir, registry));
    }
    let images = image::ImageStore::open(
        &config.root_dir,
        registry,
        Arc::new(image::unpack::OverlayWhiteouts),
    )?;
    Ok(Arc::new(
        cri::Runtime::open(
            &config.root_dir,
            &run_dir,
            images,
            Arc::new(sandbox::LinuxNamespaces { exe: exe.clone() }),
            Arc::new(container::LinuxHost),
            Arc::new(monitor::ProcessLauncher::new(exe, zygote)),
            Arc::new(network::CniPlugins::new(
                &config.network,
                Arc::new(network::ProcessExec::default()),
                Arc::new(network::Nft::default()),
            )?),
        )?
        .with_defaults(config.defaults.clone()),
    ))
}

/// Serves the CRI RuntimeService and ImageService on `config.socket` until `cancel` fires.
pub async fn serve(config: RuntimeConfig, cancel: CancellationToken) -> Result<(), RuntimeError> {
    let exe = std::env::current_exe().map_err(RuntimeError::io("current exe", "/proc/self/exe"))?;
    // One zygote forks both monitors and exec helpers; started now so no start pays for it.
    let zygote = Arc::new(monitor::Zygote::new(exe.clone()).start());
    let rt = build_runtime(&config, zygote.clone())?;
    rt.watch_running();
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
    tracing::info!(
        socket = %sock.display(),
        root = %config.root_dir.display(),
        run = %rt.run_dir().display(),
        "cri server listening"
    );
    // The streaming server: loopback only, on a port the kernel picks; its URLs reach clients
    // only through the node agent's proxy.
    let stream_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(RuntimeError::io("bind streaming server", "127.0.0.1:0"))?;
    let stream_addr = stream_listener
        .local_addr()
        .map_err(RuntimeError::io("streaming server address", "127.0.0.1:0"))?;
    let streams = Arc::new(stream::Streams::new(format!("http://{stream_addr}")));
    let spawner: Arc<dyn stream::exec::ExecSpawner> = Arc::new(
        stream::exec::HelperSpawner::new(exe, rt.run_dir().to_path_buf())
            .with_zygote(zygote)
            .with_shim(monitor::process::shim_path()),
    );
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
    let svc = cri::CriService::new(rt)
        .with_streaming(streams, spawner)
        .with_shutdown(cancel.clone());
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
