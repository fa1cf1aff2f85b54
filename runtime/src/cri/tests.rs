//! CRI service tests against fakes: no root, no kernel namespaces, no real processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cri_api::v1 as cri;
use cri_api::{ImageService, RuntimeService};
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use tonic::Request;

use super::*;
use crate::container::Host;
use crate::error::Result;
use crate::image::tests::{FakeRegistry, busybox_like_tar, store};
use crate::monitor::{EXIT_FILE, ExitRecord, Launcher, Started};
use crate::sandbox::{NamespaceHelper, NsPaths, NsRequest};

#[derive(Default)]
struct FakeNs {
    created: Mutex<Vec<NsRequest>>,
    released: Mutex<Vec<NsPaths>>,
}

impl NamespaceHelper for FakeNs {
    fn create(&self, dir: &Path, req: &NsRequest) -> Result<NsPaths> {
        self.created.lock().expect("lock").push(req.clone());
        Ok(NsPaths {
            net: req.private_net.then(|| dir.join("net")),
            ipc: req.private_ipc.then(|| dir.join("ipc")),
            uts: req.hostname.is_some().then(|| dir.join("uts")),
        })
    }
    fn release(&self, ns: &NsPaths) -> Result<()> {
        self.released.lock().expect("lock").push(ns.clone());
        Ok(())
    }
}

#[derive(Default)]
struct FakeHost {
    mounted: Mutex<Vec<(Vec<PathBuf>, PathBuf)>>,
    unmounted: Mutex<Vec<PathBuf>>,
    cgroups_removed: Mutex<Vec<String>>,
}

impl Host for FakeHost {
    fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<()> {
        for p in [upper, work, target] {
            std::fs::create_dir_all(p).expect("mkdir");
        }
        self.mounted
            .lock()
            .expect("lock")
            .push((lower.to_vec(), target.to_path_buf()));
        Ok(())
    }
    fn unmount(&self, target: &Path) -> Result<()> {
        self.unmounted
            .lock()
            .expect("lock")
            .push(target.to_path_buf());
        Ok(())
    }
    fn remove_cgroup(&self, path: &str) -> Result<()> {
        self.cgroups_removed
            .lock()
            .expect("lock")
            .push(path.to_string());
        Ok(())
    }
}

/// Pretends to run containers: pids are "alive" until killed; SIGKILL writes the exit record
/// as the monitor would. SIGTERM is ignored (like sh as pid 1).
struct FakeLauncher {
    root: PathBuf,
    next_pid: Mutex<i32>,
    alive: Mutex<HashSet<i32>>,
    by_pid: Mutex<std::collections::HashMap<i32, String>>,
    signals: Mutex<Vec<(i32, Signal)>>,
    fail_with: Mutex<Option<String>>,
}

impl FakeLauncher {
    fn new(root: &Path) -> Self {
        FakeLauncher {
            root: root.to_path_buf(),
            next_pid: Mutex::new(1000),
            alive: Mutex::default(),
            by_pid: Mutex::default(),
            signals: Mutex::default(),
            fail_with: Mutex::default(),
        }
    }

    fn exit(&self, id: &str, code: i32, oom: bool) {
        let rec = ExitRecord {
            exit_code: code,
            finished_at: 42,
            oom_killed: oom,
            message: String::new(),
        };
        crate::state::write_json(&self.root.join("containers").join(id).join(EXIT_FILE), &rec)
            .expect("write exit");
        let by_pid = self.by_pid.lock().expect("lock");
        let mut alive = self.alive.lock().expect("lock");
        for (pid, cid) in by_pid.iter() {
            if cid == id {
                alive.remove(pid);
            }
        }
    }
}

impl Launcher for FakeLauncher {
    fn start<'a>(&'a self, id: &'a str, dir: &'a Path) -> BoxFuture<'a, Result<Started>> {
        Box::pin(async move {
            assert!(
                dir.join("monitor.json").is_file(),
                "monitor config written before start"
            );
            if let Some(msg) = self.fail_with.lock().expect("lock").clone() {
                return Err(RuntimeError::Launch {
                    id: id.into(),
                    message: msg,
                });
            }
            let mut next = self.next_pid.lock().expect("lock");
            *next += 2;
            let pid = *next;
            self.alive.lock().expect("lock").extend([pid, pid + 1]);
            self.by_pid
                .lock()
                .expect("lock")
                .extend([(pid, id.to_string()), (pid + 1, id.to_string())]);
            Ok(Started {
                pid,
                monitor_pid: pid + 1,
            })
        })
    }
    fn signal(&self, pid: i32, signal: Signal) -> Result<()> {
        self.signals.lock().expect("lock").push((pid, signal));
        if signal == Signal::SIGKILL {
            let id = self.by_pid.lock().expect("lock").get(&pid).cloned();
            if let Some(id) = id {
                self.exit(&id, 137, false);
            }
        }
        Ok(())
    }
    fn alive(&self, pid: i32) -> bool {
        self.alive.lock().expect("lock").contains(&pid)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    svc: CriService,
    ns: Arc<FakeNs>,
    host: Arc<FakeHost>,
    launcher: Arc<FakeLauncher>,
    registry: Arc<FakeRegistry>,
}

const IMAGE: &str = "127.0.0.1:5055/busybox:1";

fn open(
    root: &Path,
    registry: Arc<FakeRegistry>,
    ns: Arc<FakeNs>,
    host: Arc<FakeHost>,
    launcher: Arc<FakeLauncher>,
) -> CriService {
    let images = store(root, registry);
    CriService::new(Arc::new(
        Runtime::open(root, images, ns, host, launcher).expect("open runtime"),
    ))
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let registry = Arc::new(FakeRegistry::default());
    registry.publish(
        IMAGE,
        busybox_like_tar(),
        serde_json::json!({"Entrypoint": ["/bin/entry"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"], "User": "nobody"}),
    );
    let ns = Arc::new(FakeNs::default());
    let host = Arc::new(FakeHost::default());
    let launcher = Arc::new(FakeLauncher::new(&root));
    let svc = open(
        &root,
        registry.clone(),
        ns.clone(),
        host.clone(),
        launcher.clone(),
    );
    Harness {
        _dir: dir,
        root,
        svc,
        ns,
        host,
        launcher,
        registry,
    }
}

fn image_spec(name: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

fn sandbox_config(host_network: bool) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "pod-uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-host".into(),
        log_directory: "/var/log/pods/x".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_network {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &[&str], args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: image_spec(IMAGE),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        envs: vec![cri::KeyValue {
            key: "A".into(),
            value: "cri".into(),
        }],
        log_path: format!("{name}/0.log"),
        labels: [("role".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            security_context: None,
        }),
        ..Default::default()
    }
}

impl Harness {
    async fn pull(&self) -> String {
        self.svc
            .pull_image(Request::new(cri::PullImageRequest {
                image: image_spec(IMAGE),
                ..Default::default()
            }))
            .await
            .expect("pull")
            .into_inner()
            .image_ref
    }

    async fn sandbox(&self, host_network: bool) -> String {
        self.svc
            .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
                config: Some(sandbox_config(host_network)),
                runtime_handler: String::new(),
            }))
            .await
            .expect("run sandbox")
            .into_inner()
            .pod_sandbox_id
    }

    async fn create(
        &self,
        sandbox: &str,
        cfg: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.svc
            .create_container(Request::new(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(cfg),
                sandbox_config: None,
            }))
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn start(&self, id: &str) -> Result<(), tonic::Status> {
        self.svc
            .start_container(Request::new(cri::StartContainerRequest {
                container_id: id.into(),
            }))
            .await
            .map(|_| ())
    }

    async fn status(&self, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
        self.svc
            .container_status(Request::new(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .await
            .map(|r| r.into_inner().status.expect("status"))
    }

    fn spec(&self, id: &str) -> serde_json::Value {
        let data = std::fs::read(
            self.root
                .join("containers")
                .join(id)
                .join("bundle/config.json"),
        )
        .expect("config.json");
        serde_json::from_slice(&data).expect("json")
    }
}

#[tokio::test]
async fn version_and_status_report_ready() {
    let h = harness();
    let v = h
        .svc
        .version(Request::new(cri::VersionRequest::default()))
        .await
        .expect("version")
        .into_inner();
    assert_eq!(v.runtime_name, "skiff");
    assert_eq!(v.runtime_api_version, "v1");
    let s = h
        .svc
        .status(Request::new(cri::StatusRequest::default()))
        .await
        .expect("status")
        .into_inner();
    let conds = s.status.expect("status").conditions;
    for t in ["RuntimeReady", "NetworkReady"] {
        assert!(conds.iter().any(|c| c.r#type == t && c.status), "{t}");
    }
}

#[tokio::test]
async fn image_status_of_absent_image_is_empty_not_an_error() {
    let h = harness();
    let r = h
        .svc
        .image_status(Request::new(cri::ImageStatusRequest {
            image: image_spec("busybox"),
            verbose: false,
        }))
        .await
        .expect("ok");
    assert!(r.into_inner().image.is_none());
    let id = h.pull().await;
    let img = h
        .svc
        .image_status(Request::new(cri::ImageStatusRequest {
            image: image_spec(IMAGE),
            verbose: false,
        }))
        .await
        .expect("ok")
        .into_inner()
        .image
        .expect("present");
    assert_eq!(img.id, id);
    assert_eq!(img.username, "nobody");
    assert_eq!(img.repo_tags, vec![IMAGE.to_string()]);
    let list = h
        .svc
        .list_images(Request::new(cri::ListImagesRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.images.len(), 1);
}

#[tokio::test]
async fn pull_of_unknown_image_is_unavailable_and_names_registry() {
    let h = harness();
    let err = h
        .svc
        .pull_image(Request::new(cri::PullImageRequest {
            image: image_spec("127.0.0.1:5055/nope:1"),
            ..Default::default()
        }))
        .await
        .expect_err("fail");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("127.0.0.1:5055"),
        "{}",
        err.message()
    );
    let _ = &h.registry;
}

#[tokio::test]
async fn container_lifecycle_through_cri() {
    let h = harness();
    let image_id = h.pull().await;
    let sb = h.sandbox(false).await;
    let req = h.ns.created.lock().expect("lock")[0].clone();
    assert!(req.private_net && req.private_ipc);
    assert_eq!(req.hostname.as_deref(), Some("web-host"));

    let id = h
        .create(&sb, container_config("app", &[], &["x", "y"]))
        .await
        .expect("create");
    let spec = h.spec(&id);
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["/bin/entry", "x", "y"])
    );
    assert!(
        spec["process"]["env"]
            .as_array()
            .expect("env")
            .contains(&serde_json::json!("A=cri"))
    );
    assert_eq!(
        spec["process"]["user"]["uid"], 65534,
        "image USER nobody resolved from /etc/passwd"
    );
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        format!("/skiff/pod-uid-1/{id}")
    );
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
    let ns = spec["linux"]["namespaces"].as_array().expect("ns");
    assert!(
        ns.iter().any(|n| n["type"] == "network"
            && n["path"].as_str().is_some_and(|p| p.ends_with("/ns/net")))
    );
    let (lower, target) = h.host.mounted.lock().expect("lock")[0].clone();
    assert_eq!(target, h.root.join("containers").join(&id).join("rootfs"));
    assert!(lower[0].join("etc/passwd").is_file());

    let st = h.status(&id).await.expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(st.log_path, "/var/log/pods/x/app/0.log");
    assert_eq!(st.image_id, image_id);

    h.start(&id).await.expect("start");
    let st = h.status(&id).await.expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert!(st.started_at > 0);
    assert_eq!(
        h.start(&id).await.expect_err("double start").code(),
        tonic::Code::FailedPrecondition
    );

    h.launcher.exit(&id, 0, false);
    let st = h.status(&id).await.expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(
        (st.exit_code, st.reason.as_str(), st.finished_at),
        (0, "Completed", 42)
    );

    // A second container that gets OOM-killed, and a third still running.
    let oom = h
        .create(&sb, container_config("oom", &["sh"], &[]))
        .await
        .expect("create");
    h.start(&oom).await.expect("start");
    h.launcher.exit(&oom, 137, true);
    assert_eq!(h.status(&oom).await.expect("status").reason, "OOMKilled");
    let run = h
        .create(&sb, container_config("run", &["sleep"], &["100"]))
        .await
        .expect("create");
    assert_eq!(
        h.spec(&run)["process"]["args"],
        serde_json::json!(["sleep", "100"])
    );
    h.start(&run).await.expect("start");

    let list = |filter: cri::ContainerFilter| {
        let svc = h.svc.clone();
        async move {
            svc.list_containers(Request::new(cri::ListContainersRequest {
                filter: Some(filter),
            }))
            .await
            .expect("list")
            .into_inner()
            .containers
        }
    };
    assert_eq!(list(cri::ContainerFilter::default()).await.len(), 3);
    let running = list(cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(
        running.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![run.clone()]
    );
    let labelled = list(cri::ContainerFilter {
        label_selector: [("role".to_string(), "oom".to_string())].into(),
        ..Default::default()
    })
    .await;
    assert_eq!(labelled.len(), 1);
    assert_eq!(labelled[0].id, oom);

    // Stopping the sandbox kills what runs; removal cleans mounts, cgroups and namespaces.
    h.svc
        .stop_pod_sandbox(Request::new(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        }))
        .await
        .expect("stop");
    assert!(
        h.launcher
            .signals
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, s)| *s == Signal::SIGKILL)
    );
    assert_eq!(h.status(&run).await.expect("status").exit_code, 137);
    let sbs = h
        .svc
        .pod_sandbox_status(Request::new(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        }))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        sbs.status.expect("status").state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    assert_eq!(sbs.containers_statuses.len(), 3);
    assert!(
        h.create(&sb, container_config("late", &["sh"], &[]))
            .await
            .is_err(),
        "no new containers in a stopped sandbox"
    );

    h.svc
        .remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        }))
        .await
        .expect("remove");
    assert_eq!(h.host.unmounted.lock().expect("lock").len(), 3);
    assert!(
        h.host
            .cgroups_removed
            .lock()
            .expect("lock")
            .contains(&format!("/skiff/pod-uid-1/{id}"))
    );
    assert_eq!(h.ns.released.lock().expect("lock").len(), 1);
    assert!(!h.root.join("containers").join(&id).exists());
    assert!(!h.root.join("sandboxes").join(&sb).exists());
    let err = h.status(&id).await.expect_err("gone");
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Removing again is fine.
    h.svc
        .remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb,
        }))
        .await
        .expect("idempotent");
}

#[tokio::test]
async fn stop_container_sends_sigterm_then_sigkill() {
    let h = harness();
    h.pull().await;
    let sb = h.sandbox(false).await;
    let id = h
        .create(&sb, container_config("app", &["sleep"], &["9"]))
        .await
        .expect("create");
    h.start(&id).await.expect("start");
    h.svc
        .stop_container(Request::new(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        }))
        .await
        .expect("stop");
    let sigs: Vec<Signal> = h
        .launcher
        .signals
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(sigs, vec![Signal::SIGTERM, Signal::SIGKILL]);
    let st = h.status(&id).await.expect("status");
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "Error"));
}

#[tokio::test]
async fn failed_start_is_reported_and_leaves_an_exited_container() {
    let h = harness();
    h.pull().await;
    let sb = h.sandbox(false).await;
    let id = h
        .create(&sb, container_config("bad", &["/nope"], &[]))
        .await
        .expect("create");
    *h.launcher.fail_with.lock().expect("lock") =
        Some("executable '/nope' not found in $PATH".into());
    let err = h.start(&id).await.expect_err("start fails");
    assert!(err.message().contains("/nope"), "{}", err.message());
    let st = h.status(&id).await.expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "StartError");
}

#[tokio::test]
async fn host_network_sandbox_has_no_private_net_or_uts() {
    let h = harness();
    let sb = h.sandbox(true).await;
    let req = h.ns.created.lock().expect("lock")[0].clone();
    assert!(!req.private_net);
    assert!(
        req.hostname.is_none(),
        "host network pods must not set a hostname"
    );
    let st = h
        .svc
        .pod_sandbox_status(Request::new(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sb,
            verbose: false,
        }))
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    let nsopt = st
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .expect("ns options");
    assert_eq!(nsopt.network, cri::NamespaceMode::Node as i32);
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_and_unknown_ids_not_found() {
    let h = harness();
    let err = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest::default()))
        .await
        .expect_err("no config");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = h
        .create("nope", container_config("x", &[], &[]))
        .await
        .expect_err("no sandbox");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let sb = h.sandbox(false).await;
    let err = h
        .create(&sb, container_config("x", &[], &[]))
        .await
        .expect_err("image not pulled");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains(IMAGE));
    let err = h.start("nope").await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn state_survives_a_runtime_restart() {
    let h = harness();
    h.pull().await;
    let sb = h.sandbox(false).await;
    let id = h
        .create(&sb, container_config("app", &["sh"], &[]))
        .await
        .expect("create");
    h.start(&id).await.expect("start");
    let svc2 = open(
        &h.root,
        h.registry.clone(),
        h.ns.clone(),
        h.host.clone(),
        h.launcher.clone(),
    );
    let st = svc2
        .container_status(Request::new(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        }))
        .await
        .expect("status after restart")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let sbs = svc2
        .list_pod_sandbox(Request::new(cri::ListPodSandboxRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(sbs.items.len(), 1);
    assert!(svc2.rt.images.get(IMAGE).is_some());
}

#[tokio::test]
async fn exec_needs_a_running_container_and_answers_with_a_url() {
    let h = harness();
    let svc = h.svc.clone().with_streaming(
        Arc::new(Streams::new("http://127.0.0.1:1".into())),
        Arc::new(crate::stream::exec::tests::EchoSpawner {
            exit_code: 0,
            resizes: Arc::default(),
        }),
    );
    h.pull().await;
    let sb = h.sandbox(false).await;
    let id = h
        .create(&sb, container_config("app", &["sleep"], &["9"]))
        .await
        .expect("create");
    let exec = |stdout: bool| cri::ExecRequest {
        container_id: id.clone(),
        cmd: vec!["echo".into(), "hi".into()],
        stdout,
        ..Default::default()
    };
    let err = svc
        .exec(Request::new(exec(true)))
        .await
        .expect_err("not started");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("created"), "{}", err.message());

    h.start(&id).await.expect("start");
    let url = svc
        .exec(Request::new(exec(true)))
        .await
        .expect("exec")
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:1/exec/"), "{url}");
    let err = svc
        .exec(Request::new(exec(false)))
        .await
        .expect_err("no streams");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let out = svc
        .exec_sync(Request::new(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "hi".into()],
            timeout: 5,
        }))
        .await
        .expect("exec sync")
        .into_inner();
    assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"echo hi"[..], 0));

    // Without a streaming server the calls say so.
    let err = h
        .svc
        .exec(Request::new(exec(true)))
        .await
        .expect_err("unconfigured");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}
