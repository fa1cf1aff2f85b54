//! End-to-end smoke test of the runtime against itself, as root: builds and pushes a busybox
//! image to a local registry (e2e/scripts/make-busybox-image.sh), serves CRI on a temp socket, then pulls, runs a
//! sandbox and a container, and checks the results through /proc and cgroupfs.
//!
//! Run: `cargo run -p runtime --example cri_smoke` (root). The binary doubles as the container
//! monitor: `cri_smoke __monitor <dir>` dispatches to `runtime::monitor_main`, as skiff does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cri_api::v1 as cri;
use cri_api::{ImageServiceClient, RuntimeServiceClient};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == runtime::MONITOR_ARG) {
        std::process::exit(runtime::monitor_main(args[2..].to_vec()));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libcontainer=warn".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new()?.block_on(smoke())
}

async fn poll<T>(
    what: &str,
    within: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn smoke() -> anyhow::Result<()> {
    let work = PathBuf::from(format!("/tmp/skiff-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let registry = "127.0.0.1:5055";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/scripts/make-busybox-image.sh");
    let st = std::process::Command::new("sh")
        .arg(&script)
        .arg(work.join("image"))
        .arg(registry)
        .arg("busybox:1")
        .status()
        .context("run make-busybox-image.sh")?;
    ensure!(st.success(), "make-busybox-image.sh failed: {st}");

    let root = work.join("runtime");
    let socket = root.join("cri.sock");
    let cancel = CancellationToken::new();
    let server = tokio::spawn(runtime::serve(
        runtime::RuntimeConfig {
            root_dir: root.clone(),
            run_dir: None,
            socket: socket.clone(),
            registries: runtime::image::hosts::Registries::default(),
            defaults: runtime::ContainerDefaults::default(),
            network: runtime::network::NetworkOptions::under(&root),
            image_cache: None,
        },
        cancel.clone(),
    ));
    poll("cri socket", Duration::from_secs(10), async || {
        Ok(socket.exists().then_some(()))
    })
    .await?;
    let sock = socket.clone();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut img = ImageServiceClient::new(channel);

    let v = rt
        .version(cri::VersionRequest::default())
        .await?
        .into_inner();
    println!(
        "version: {} {} api {}",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );

    let image = format!("{registry}/busybox:1");
    let spec = cri::ImageSpec {
        image: image.clone(),
        ..Default::default()
    };
    let absent = img
        .image_status(cri::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await?
        .into_inner();
    ensure!(absent.image.is_none(), "image present before pull");
    let t = Instant::now();
    let pulled = img
        .pull_image(cri::PullImageRequest {
            image: Some(spec.clone()),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "pulled {image} -> {} in {:?}",
        pulled.image_ref,
        t.elapsed()
    );
    let status = img
        .image_status(cri::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await?
        .into_inner()
        .image
        .context("image status after pull")?;
    println!(
        "image: tags {:?} digests {:?} size {}",
        status.repo_tags, status.repo_digests, status.size
    );

    let pod_uid = format!("smoke-pod-{}", std::process::id());
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "smoke".into(),
            uid: pod_uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "smoke-host".into(),
        log_directory: work.join("logs").display().to_string(),
        ..Default::default()
    };
    let sandbox_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let sb = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("sandbox status")?;
    println!(
        "sandbox {sandbox_id}: state {} ip {:?}",
        sb.state,
        sb.network.map(|n| n.ip)
    );

    let container_config = |name: &str, command: Vec<&str>| cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(spec.clone()),
        command: command.into_iter().map(String::from).collect(),
        log_path: format!("{name}/0.log"),
        envs: vec![cri::KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }],
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            security_context: None,
        }),
        ..Default::default()
    };
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(container_config(
                "main",
                vec![
                    "sh",
                    "-c",
                    "echo $GREETING; hostname; echo oops >&2; \
                     test -e /etc/removed-by-layer2 && echo WHITEOUT-BROKEN; ls /opq; grep SigIgn /proc/self/status; sleep 2",
                ],
            )),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    let t = Instant::now();
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    println!("started {id} in {:?}", t.elapsed());
    let st = container_status(&mut rt, &id).await?;
    ensure!(
        st.state == cri::ContainerState::ContainerRunning as i32,
        "not running: {st:?}"
    );

    let pid: i32 = std::fs::read_to_string(root.join("containers").join(&id).join("pid"))?
        .trim()
        .parse()?;
    let host_net = std::fs::read_link("/proc/self/ns/net")?;
    let ctr_net = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
    println!("netns host {host_net:?} container {ctr_net:?}");
    ensure!(
        host_net != ctr_net,
        "container shares the host network namespace"
    );
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(
        root.join("containers").join(&id).join("state.json"),
    )?)?;
    let monitor_pid = state["monitor_pid"].as_i64().context("monitor pid")?;
    let stat = std::fs::read_to_string(format!("/proc/{monitor_pid}/stat"))?;
    let session: i64 = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(3))
        .context("sid")?
        .parse()?;
    println!("monitor {monitor_pid} session {session}");
    ensure!(session == monitor_pid, "monitor is not a session leader");
    let limit_file = format!("/sys/fs/cgroup/memory/skiff/{pod_uid}/{id}/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&limit_file).with_context(|| limit_file.clone())?;
    println!("{limit_file} = {}", limit.trim());
    ensure!(limit.trim() == "67108864", "memory limit {limit}");

    let st = poll("container exit", Duration::from_secs(20), async || {
        let st = container_status(&mut rt, &id).await?;
        Ok((st.state == cri::ContainerState::ContainerExited as i32).then_some(st))
    })
    .await?;
    println!(
        "exited: code {} reason {} started {} finished {}",
        st.exit_code, st.reason, st.started_at, st.finished_at
    );
    ensure!(
        st.exit_code == 0 && st.reason == "Completed",
        "unexpected exit {st:?}"
    );
    let log = std::fs::read_to_string(&st.log_path).with_context(|| st.log_path.clone())?;
    print!("log {}:\n{log}", st.log_path);
    ensure!(
        log.lines().any(|l| l.ends_with(" stdout F hello")),
        "hello missing from log"
    );
    ensure!(
        log.lines().any(|l| l.ends_with(" stdout F smoke-host")),
        "hostname missing from log"
    );
    ensure!(
        log.lines().any(|l| l.ends_with(" stderr F oops")),
        "stderr missing from log"
    );
    // Standard signals (1..=31, SIGPIPE above all) must not arrive ignored; bits 31/32 are
    // glibc's internal real-time signals and are left out.
    let sig_ign = log
        .lines()
        .find_map(|l| l.split("SigIgn:\t").nth(1))
        .context("SigIgn line in log")?;
    let mask = u64::from_str_radix(sig_ign.trim(), 16)?;
    ensure!(
        mask & 0x7fff_ffff == 0,
        "container inherited ignored signals {mask:#x}"
    );
    ensure!(
        !log.contains("WHITEOUT-BROKEN"),
        "a whiteout from layer 2 did not hide the file"
    );
    ensure!(
        log.lines().any(|l| l.ends_with(" stdout F new")),
        "opaque dir content missing"
    );
    ensure!(
        !log.lines().any(|l| l.ends_with(" stdout F old")),
        "opaque dir did not hide layer 1"
    );

    // A missing executable fails StartContainer with a clear error.
    let bad = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(container_config("bad", vec!["/no/such/binary"])),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    match rt
        .start_container(cri::StartContainerRequest {
            container_id: bad.clone(),
        })
        .await
    {
        Ok(_) => bail!("starting a missing executable succeeded"),
        Err(e) => println!("bad start: {:?}: {}", e.code(), e.message()),
    }
    let st = container_status(&mut rt, &bad).await?;
    println!(
        "bad status: state {} reason {} message {}",
        st.state, st.reason, st.message
    );

    // A long runner is stopped with SIGTERM then SIGKILL (sh as pid 1 ignores SIGTERM).
    let long = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(container_config("long", vec!["sleep", "1000"])),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: long.clone(),
    })
    .await?;
    let t = Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: long.clone(),
        timeout: 1,
    })
    .await?;
    let st = container_status(&mut rt, &long).await?;
    println!(
        "long stopped in {:?}: code {} reason {}",
        t.elapsed(),
        st.exit_code,
        st.reason
    );
    ensure!(
        st.state == cri::ContainerState::ContainerExited as i32,
        "long still running"
    );

    // A hostNetwork pod: the host's network and UTS namespaces, and the node IP as pod IP.
    let mut host_config = sandbox_config.clone();
    host_config.metadata.as_mut().context("metadata")?.name = "hostnet".into();
    host_config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let host_sb = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(host_config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let hs = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: host_sb.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("status")?;
    let host_ip = hs.network.map(|n| n.ip).unwrap_or_default();
    println!("host network sandbox ip {host_ip:?}");
    ensure!(!host_ip.is_empty(), "host network sandbox has no ip");
    let hc = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: host_sb.clone(),
            config: Some(container_config("hostnet", vec!["sleep", "30"])),
            sandbox_config: Some(host_config),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: hc.clone(),
    })
    .await?;
    let hpid: i32 = std::fs::read_to_string(root.join("containers").join(&hc).join("pid"))?
        .trim()
        .parse()?;
    for ns in ["net", "uts"] {
        let a = std::fs::read_link(format!("/proc/self/ns/{ns}"))?;
        let b = std::fs::read_link(format!("/proc/{hpid}/ns/{ns}"))?;
        ensure!(a == b, "host network container has its own {ns} namespace");
    }
    println!("host network container shares net and uts with the host");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: host_sb,
    })
    .await?;

    let list = rt
        .list_containers(cri::ListContainersRequest::default())
        .await?
        .into_inner();
    println!("containers: {}", list.containers.len());

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sandbox_id.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sandbox_id.clone(),
    })
    .await?;
    for h in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let p = h.path().join("skiff").join(&pod_uid);
        ensure!(!p.exists(), "cgroup left behind: {}", p.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let root_str = root.display().to_string();
    let left: Vec<_> = mounts.lines().filter(|l| l.contains(&root_str)).collect();
    ensure!(left.is_empty(), "mounts left behind: {left:#?}");
    println!("sandbox removed; no cgroups or mounts left");

    img.remove_image(cri::RemoveImageRequest {
        image: Some(spec.clone()),
    })
    .await?;
    let after = img
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner();
    ensure!(after.images.is_empty(), "image still listed");

    cancel.cancel();
    server.await??;
    if let Ok(pid) = std::fs::read_to_string(work.join("image/registry.pid")) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("SMOKE OK");
    Ok(())
}

async fn container_status(
    rt: &mut RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> anyhow::Result<cri::ContainerStatus> {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await?
    .into_inner()
    .status
    .context("container status")
}
