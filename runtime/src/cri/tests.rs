//! CRI service tests against fakes: no root, no kernel namespaces, no real processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_api::v1 as cri;
use cri_api::{ImageService, RuntimeService};
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use tonic::Request;

use super::*;
use crate::container::Host;
use crate::container::cgroup::{CgroupStats, FakeCgroups};
use crate::error::Result;
use crate::image::tests::{FakeRegistry, busybox_like_tar, store};
use crate::monitor::{EXIT_FILE, Ended, ExitRecord, Launcher, Started};
use crate::network::{Attachment, Cni, NetworkList};
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
            pid: req.shared_pid.then(|| dir.join("pid")),
            pid_holder: req.shared_pid.then_some(4242),
        })
    }
    fn release(&self, ns: &NsPaths) -> Result<()> {
        self.released.lock().expect("lock").push(ns.clone());
        Ok(())
    }
}

/// Hands out 10.88.0.2, .3, ... and remembers every ADD and DEL. `released_at_del` records
/// how many namespace releases had happened when each DEL ran (DEL must come first).
struct FakeCni {
    ns: Arc<FakeNs>,
    not_ready: Mutex<Option<String>>,
    fail_add: Mutex<Option<String>>,
    adds: Mutex<Vec<Attachment>>,
    dels: Mutex<Vec<(Attachment, Option<serde_json::Value>)>>,
    released_at_del: Mutex<Vec<usize>>,
}

impl FakeCni {
    fn new(ns: Arc<FakeNs>) -> Self {
        FakeCni {
            ns,
            not_ready: Mutex::default(),
            fail_add: Mutex::default(),
            adds: Mutex::default(),
            dels: Mutex::default(),
            released_at_del: Mutex::default(),
        }
    }
}

impl Cni for FakeCni {
    fn network(&self) -> Result<NetworkList> {
        if let Some(p) = self.not_ready.lock().expect("lock").clone() {
            return Err(RuntimeError::NetworkNotReady {
                reason: "PluginNotFound",
                message: format!("plugin {p} not found in /usr/lib/cni"),
            });
        }
        Ok(NetworkList {
            name: "fake".into(),
            cni_version: "1.0.0".into(),
            disable_check: false,
            plugins: vec![serde_json::json!({"type": "bridge"})],
        })
    }
    fn set_pod_cidr(&self, _cidr: &str) -> Result<()> {
        Ok(())
    }
    fn add(&self, _net: &NetworkList, a: &Attachment) -> Result<serde_json::Value> {
        if let Some(m) = self.fail_add.lock().expect("lock").clone() {
            return Err(RuntimeError::Cni {
                command: "ADD",
                plugin: "bridge".into(),
                network: "fake".into(),
                message: m,
            });
        }
        let mut adds = self.adds.lock().expect("lock");
        adds.push(a.clone());
        Ok(serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": a.netns}],
            "ips": [{"interface": 0, "address": format!("10.88.0.{}/16", adds.len() + 1)}]
        }))
    }
    fn check(&self, _net: &NetworkList, _a: &Attachment, _r: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    fn del(
        &self,
        _net: &NetworkList,
        a: &Attachment,
        result: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.released_at_del
            .lock()
            .expect("lock")
            .push(self.ns.released.lock().expect("lock").len());
        self.dels
            .lock()
            .expect("lock")
            .push((a.clone(), result.cloned()));
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
    alive: Arc<Mutex<HashSet<i32>>>,
    by_pid: Mutex<std::collections::HashMap<i32, String>>,
    signals: Mutex<Vec<(i32, Signal)>>,
    fail_with: Mutex<Option<String>>,
}

impl FakeLauncher {
    fn new(root: &Path) -> Self {
        FakeLauncher {
            root: root.to_path_buf(),
            next_pid: Mutex::new(1000),
            alive: Arc::default(),
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
            let alive = Arc::clone(&self.alive);
            Ok(Started {
                pid,
                monitor_pid: pid + 1,
                ended: ended_when_gone(alive, pid + 1),
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
    fn ended(&self, monitor_pid: i32) -> Ended {
        ended_when_gone(self.alive.clone(), monitor_pid)
    }
}

/// The fake's monitors are done once their pid leaves the live set.
fn ended_when_gone(alive: Arc<Mutex<HashSet<i32>>>, monitor_pid: i32) -> Ended {
    Ended::new(async move {
        while alive.lock().expect("lock").contains(&monitor_pid) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    svc: CriService,
    ns: Arc<FakeNs>,
    host: Arc<FakeHost>,
    launcher: Arc<FakeLauncher>,
    registry: Arc<FakeRegistry>,
    cgroups: Arc<FakeCgroups>,
    cni: Arc<FakeCni>,
}

const IMAGE: &str = "127.0.0.1:5055/busybox:1";

fn open(
    root: &Path,
    registry: Arc<FakeRegistry>,
    ns: Arc<FakeNs>,
    host: Arc<FakeHost>,
    launcher: Arc<FakeLauncher>,
    cgroups: Arc<FakeCgroups>,
    cni: Arc<FakeCni>,
) -> CriService {
    let images = store(root, registry);
    CriService::new(Arc::new(
        Runtime::open(root, &root.join("run"), images, ns, host, launcher, cni)
            .expect("open runtime")
            .with_cgroups(cgroups),
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
    let launcher = Arc::new(FakeLauncher::new(&root.join("run")));
    let cgroups = Arc::new(FakeCgroups::default());
    let cni = Arc::new(FakeCni::new(ns.clone()));
    let svc = open(
        &root,
        registry.clone(),
        ns.clone(),
        host.clone(),
        launcher.clone(),
        cgroups.clone(),
        cni.clone(),
    );
    Harness {
        _dir: dir,
        root,
        svc,
        ns,
        host,
        launcher,
        registry,
        cgroups,
        cni,
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
    /// The runtime opened again on the same state and fakes, as after a restart.
    fn reopen(&self) -> CriService {
        open(
            &self.root,
            self.registry.clone(),
            self.ns.clone(),
            self.host.clone(),
            self.launcher.clone(),
            self.cgroups.clone(),
            self.cni.clone(),
        )
    }

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

    /// Pulls the image and runs container `app` (`sh`) in a new sandbox.
    async fn running_app(&self) -> (String, String) {
        self.pull().await;
        let sb = self.sandbox(false).await;
        let id = self
            .create(&sb, container_config("app", &["sh"], &[]))
            .await
            .expect("create");
        self.start(&id).await.expect("start");
        (sb, id)
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

    async fn sandbox_ip(&self, id: &str) -> String {
        self.svc
            .pod_sandbox_status(Request::new(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            }))
            .await
            .expect("sandbox status")
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    async fn runtime_conditions(&self) -> Vec<cri::RuntimeCondition> {
        self.svc
            .status(Request::new(cri::StatusRequest::default()))
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status")
            .conditions
    }

    fn spec(&self, id: &str) -> serde_json::Value {
        let data = std::fs::read(
            self.root
                .join("run/containers")
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
    assert!(!h.root.join("run/containers").join(&id).exists());
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
async fn container_events_stream_every_lifecycle_change_with_statuses() {
    use futures::StreamExt as _;
    let h = harness();
    h.pull().await;
    let mut events = h
        .svc
        .get_container_events(Request::new(cri::GetEventsRequest {}))
        .await
        .expect("events")
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5s")
            .expect("stream open")
            .expect("event")
    };
    use cri::ContainerEventType as T;
    let sb = h.sandbox(false).await;
    for kind in [T::ContainerCreatedEvent, T::ContainerStartedEvent] {
        let ev = next().await;
        assert_eq!(
            (ev.container_id.as_str(), ev.container_event_type),
            (sb.as_str(), kind as i32)
        );
    }
    let id = h
        .create(&sb, container_config("app", &["sleep"], &["9"]))
        .await
        .expect("create");
    let ev = next().await;
    assert_eq!(ev.container_event_type, T::ContainerCreatedEvent as i32);
    assert_eq!(ev.container_id, id);
    let pod = ev.pod_sandbox_status.expect("sandbox status");
    assert_eq!(pod.metadata.expect("metadata").uid, "pod-uid-1");
    assert_eq!(ev.containers_statuses.len(), 1);
    assert_eq!(
        ev.containers_statuses[0].state,
        cri::ContainerState::ContainerCreated as i32
    );

    h.start(&id).await.expect("start");
    let ev = next().await;
    assert_eq!(ev.container_event_type, T::ContainerStartedEvent as i32);
    assert_eq!(
        ev.containers_statuses[0].state,
        cri::ContainerState::ContainerRunning as i32
    );

    // The exit is reported without anyone asking for the container's status.
    h.launcher.exit(&id, 3, false);
    let ev = next().await;
    assert_eq!(ev.container_event_type, T::ContainerStoppedEvent as i32);
    assert_eq!(
        (
            ev.containers_statuses[0].state,
            ev.containers_statuses[0].exit_code
        ),
        (cri::ContainerState::ContainerExited as i32, 3)
    );

    h.svc
        .remove_container(Request::new(cri::RemoveContainerRequest {
            container_id: id.clone(),
        }))
        .await
        .expect("remove");
    let ev = next().await;
    assert_eq!(ev.container_event_type, T::ContainerDeletedEvent as i32);
    assert_eq!(ev.container_id, id);
    assert!(ev.containers_statuses.is_empty());
}

#[tokio::test]
async fn stop_returns_as_soon_as_the_container_exits() {
    let h = harness();
    let (_, id) = h.running_app().await;
    let launcher = h.launcher.clone();
    let exit_id = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        launcher.exit(&exit_id, 0, false);
    });
    let t = std::time::Instant::now();
    h.svc
        .stop_container(Request::new(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        }))
        .await
        .expect("stop");
    // Woken by the exit, not by the next poll (a tenth of a second) or the timeout.
    assert!(t.elapsed() < runtime::POLL, "stop took {:?}", t.elapsed());
    let sigs = h.launcher.signals.lock().expect("lock").clone();
    assert_eq!(sigs.len(), 1, "only SIGTERM was needed: {sigs:?}");
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

/// ContainerStatus of `id` through `svc`.
async fn container_status(svc: &CriService, id: &str) -> cri::ContainerStatus {
    svc.container_status(Request::new(cri::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    }))
    .await
    .expect("status")
    .into_inner()
    .status
    .expect("status")
}

#[tokio::test]
async fn state_survives_a_runtime_restart() {
    let h = harness();
    let (sb, id) = h.running_app().await;
    let ip = h.sandbox_ip(&sb).await;
    assert_eq!(ip, "10.88.0.2");
    let svc2 = h.reopen();
    let st = container_status(&svc2, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let sbs = svc2
        .list_pod_sandbox(Request::new(cri::ListPodSandboxRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(sbs.items.len(), 1);
    assert!(svc2.rt.images.get(IMAGE).is_some());
    let st = svc2
        .rt
        .pod_sandbox_status(&sb)
        .expect("status after restart");
    assert_eq!(st.network.expect("network").ip, ip, "the pod keeps its IP");
}

#[tokio::test]
async fn a_restarted_runtime_reports_exits_even_after_the_monitor_died_first() {
    let h = harness();
    let (_, id) = h.running_app().await;
    let svc2 = h.reopen();
    let mut events = svc2.rt.subscribe_events();
    svc2.rt.watch_running();
    let c = svc2.rt.container(&id).expect("container");
    // The monitor is gone without recording an exit; the container itself still runs.
    h.launcher
        .alive
        .lock()
        .expect("lock")
        .remove(&c.monitor_pid);
    let early = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    assert!(
        early.is_err(),
        "a stop was reported for a running container: {early:?}"
    );
    h.launcher.exit(&id, 9, false);
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a stop event once the container ended")
        .expect("event");
    assert_eq!(
        (ev.id.as_str(), ev.kind),
        (id.as_str(), cri::ContainerEventType::ContainerStoppedEvent)
    );
}

#[tokio::test]
async fn a_lost_task_state_reports_the_container_exited_and_open_sweeps_leftovers() {
    let h = harness();
    let (_, id) = h.running_app().await;
    // What a reboot leaves: the record on disk, the volatile state gone, and a pid that may
    // name another process by now (the fake still calls it alive).
    std::fs::remove_dir_all(h.root.join("run/containers").join(&id)).expect("remove");
    // And what a crash mid-removal leaves: a container in the trash, state nobody claims.
    std::fs::create_dir_all(h.root.join("trash/gone/upper")).expect("mkdir");
    std::fs::create_dir_all(h.root.join("run/libcontainer/gone")).expect("mkdir");
    let svc2 = h.reopen();
    let st = container_status(&svc2, &id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 255);
    assert!(st.message.contains("lost"), "{}", st.message);
    assert!(!h.root.join("trash").exists());
    assert!(!h.root.join("run/libcontainer/gone").exists());
}

fn with_host_ports(mut cfg: cri::PodSandboxConfig) -> cri::PodSandboxConfig {
    cfg.port_mappings = vec![
        cri::PortMapping {
            protocol: cri::Protocol::Udp as i32,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        },
        // No hostPort: informational only, nothing for portmap.
        cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 0,
            host_ip: String::new(),
        },
    ];
    cfg
}

#[tokio::test]
async fn a_pod_network_gets_its_ip_from_cni_and_gives_it_back_on_stop() {
    let h = harness();
    let sb = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(with_host_ports(sandbox_config(false))),
            runtime_handler: String::new(),
        }))
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
    let other = h.sandbox(false).await;
    assert_eq!(h.sandbox_ip(&sb).await, "10.88.0.2");
    assert_eq!(h.sandbox_ip(&other).await, "10.88.0.3");

    let a = h.cni.adds.lock().expect("lock")[0].clone();
    assert_eq!(a.container_id, sb);
    assert_eq!(a.ifname, "eth0");
    assert_eq!(a.netns, h.root.join("sandboxes").join(&sb).join("ns/net"));
    for kv in [
        ("K8S_POD_NAMESPACE", "default"),
        ("K8S_POD_NAME", "web"),
        ("K8S_POD_UID", "pod-uid-1"),
    ] {
        assert!(
            a.args.iter().any(|(k, v)| (k.as_str(), v.as_str()) == kv),
            "{kv:?} in {:?}",
            a.args
        );
    }
    assert_eq!(
        a.port_mappings,
        [crate::network::PortMapping {
            host_port: 5353,
            container_port: 53,
            protocol: "udp".into(),
            host_ip: "127.0.0.1".into(),
        }]
    );

    h.svc
        .stop_pod_sandbox(Request::new(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        }))
        .await
        .expect("stop");
    {
        let dels = h.cni.dels.lock().expect("lock");
        assert_eq!(dels.len(), 1);
        assert_eq!(dels[0].0, a, "DEL names what ADD did");
        assert!(dels[0].1.is_some(), "DEL gets ADD's result");
    }
    assert_eq!(h.sandbox_ip(&sb).await, "", "a stopped sandbox has no IP");
    // Stopping again or removing does not run DEL again: the network is gone.
    h.svc
        .stop_pod_sandbox(Request::new(cri::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        }))
        .await
        .expect("stop again");
    h.svc
        .remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        }))
        .await
        .expect("remove");
    assert_eq!(h.cni.dels.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn remove_without_stop_runs_del_before_the_netns_goes() {
    let h = harness();
    let sb = h.sandbox(false).await;
    h.svc
        .remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb,
        }))
        .await
        .expect("remove");
    assert_eq!(h.cni.dels.lock().expect("lock").len(), 1);
    assert_eq!(*h.cni.released_at_del.lock().expect("lock"), [0]);
    assert_eq!(h.ns.released.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn host_network_pods_have_no_cni_and_the_node_ip() {
    let h = harness();
    let sb = h.sandbox(true).await;
    assert!(h.cni.adds.lock().expect("lock").is_empty());
    assert_eq!(h.sandbox_ip(&sb).await, crate::sandbox::ns::primary_ipv4());
    h.svc
        .remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sb,
        }))
        .await
        .expect("remove");
    assert!(h.cni.dels.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_failed_cni_add_is_reported_and_leaves_nothing() {
    let h = harness();
    *h.cni.fail_add.lock().expect("lock") = Some("failed to allocate for range 0".into());
    let err = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(sandbox_config(false)),
            runtime_handler: String::new(),
        }))
        .await
        .expect_err("add fails");
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert!(
        err.message().contains("plugin bridge") && err.message().contains("allocate"),
        "{}",
        err.message()
    );
    assert_eq!(h.ns.created.lock().expect("lock").len(), 1);
    assert_eq!(
        h.ns.released.lock().expect("lock").len(),
        1,
        "namespaces released"
    );
    assert!(
        h.cni.dels.lock().expect("lock").is_empty(),
        "the failed ADD undid itself"
    );
    let listed = h
        .svc
        .list_pod_sandbox(Request::new(cri::ListPodSandboxRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
    let left: Vec<_> = std::fs::read_dir(h.root.join("sandboxes"))
        .expect("dir")
        .collect();
    assert!(left.is_empty(), "sandbox dirs left: {left:?}");
}

#[tokio::test]
async fn network_not_ready_is_reported_and_refuses_pod_networks_only() {
    let h = harness();
    *h.cni.not_ready.lock().expect("lock") = Some("portmap".into());
    let net = h
        .runtime_conditions()
        .await
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "PluginNotFound");
    assert!(net.message.contains("portmap"), "{}", net.message);
    let runtime_ready = h
        .runtime_conditions()
        .await
        .into_iter()
        .any(|c| c.r#type == "RuntimeReady" && c.status);
    assert!(runtime_ready);

    let err = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(sandbox_config(false)),
            runtime_handler: String::new(),
        }))
        .await
        .expect_err("not ready");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("plugin portmap"),
        "{}",
        err.message()
    );
    assert!(
        h.ns.created.lock().expect("lock").is_empty(),
        "nothing made before the network was known to be ready"
    );
    h.sandbox(true).await;
}

#[tokio::test]
async fn a_sandbox_whose_add_never_finished_is_not_ready_and_its_removal_runs_del() {
    let h = harness();
    let sb = h.sandbox(false).await;
    // What a runtime that died during ADD leaves: the record written before ADD ran.
    let path = h.root.join("sandboxes").join(&sb).join("state.json");
    let mut rec: crate::sandbox::SandboxRecord = crate::state::read_json(&path)
        .expect("read")
        .expect("record");
    rec.phase = crate::sandbox::SandboxPhase::NotReady;
    if let Some(n) = rec.network.as_mut() {
        n.result = None;
    }
    crate::state::write_json(&path, &rec).expect("write");
    let svc2 = open(
        &h.root,
        h.registry.clone(),
        h.ns.clone(),
        h.host.clone(),
        h.launcher.clone(),
        h.cgroups.clone(),
        h.cni.clone(),
    );
    let st = svc2.rt.pod_sandbox_status(&sb).expect("status");
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.expect("network").ip, "");
    svc2.remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sb,
    }))
    .await
    .expect("remove");
    let dels = h.cni.dels.lock().expect("lock");
    assert_eq!(dels.len(), 1);
    assert!(dels[0].1.is_none(), "no result to give DEL");
}

#[tokio::test]
async fn runtime_config_is_cgroupfs() {
    let h = harness();
    let rc = h
        .svc
        .runtime_config(Request::new(cri::RuntimeConfigRequest {}))
        .await
        .expect("runtime config")
        .into_inner();
    assert_eq!(
        rc.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

fn secured(
    mut cfg: cri::ContainerConfig,
    sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    if let Some(l) = cfg.linux.as_mut() {
        l.security_context = Some(sc);
    }
    cfg
}

#[tokio::test]
async fn security_context_reaches_the_spec() {
    let h = harness();
    h.pull().await;
    let sb = h.sandbox(false).await;
    let sc = cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["MKNOD".into()],
            ..Default::default()
        }),
        run_as_user: Some(cri::Int64Value { value: 1234 }),
        run_as_group: Some(cri::Int64Value { value: 5678 }),
        supplemental_groups: vec![42],
        readonly_rootfs: true,
        no_new_privs: true,
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let id = h
        .create(&sb, secured(container_config("app", &["sh"], &[]), sc))
        .await
        .expect("create");
    let spec = h.spec(&id);
    let caps: Vec<&str> = spec["process"]["capabilities"]["effective"]
        .as_array()
        .expect("caps")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(caps.contains(&"CAP_NET_ADMIN") && !caps.contains(&"CAP_MKNOD"));
    assert_eq!(spec["process"]["user"]["uid"], 1234);
    assert_eq!(spec["process"]["user"]["gid"], 5678);
    assert_eq!(
        spec["process"]["user"]["additionalGids"],
        serde_json::json!([42])
    );
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        spec["linux"]["resources"]["pids"]["limit"],
        super::runtime::DEFAULT_PIDS_LIMIT
    );
    // The pod's /etc files are mounted, read-only with a read-only rootfs.
    let mounts = spec["mounts"].as_array().expect("mounts");
    for target in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        if target == "/etc/resolv.conf" && !Path::new("/etc/resolv.conf").exists() {
            continue;
        }
        let m = mounts
            .iter()
            .find(|m| m["destination"] == target)
            .unwrap_or_else(|| panic!("{target} mounted"));
        assert!(
            m["options"]
                .as_array()
                .expect("opts")
                .contains(&serde_json::json!("ro"))
        );
    }
    let hostname_file = mounts
        .iter()
        .find(|m| m["destination"] == "/etc/hostname")
        .and_then(|m| m["source"].as_str())
        .expect("hostname source");
    assert_eq!(
        std::fs::read_to_string(hostname_file).expect("read"),
        "web-host\n"
    );
}

#[tokio::test]
async fn localhost_seccomp_profile_is_loaded_and_a_missing_one_fails_create() {
    let h = harness();
    h.pull().await;
    let sb = h.sandbox(false).await;
    let profile = h.root.join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#,
    )
    .expect("write");
    let local = |path: &Path| cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.display().to_string(),
        }),
        ..Default::default()
    };
    let id = h
        .create(
            &sb,
            secured(container_config("a", &["sh"], &[]), local(&profile)),
        )
        .await
        .expect("create");
    assert_eq!(
        h.spec(&id)["linux"]["seccomp"]["defaultAction"],
        "SCMP_ACT_ALLOW"
    );
    let err = h
        .create(
            &sb,
            secured(
                container_config("b", &["sh"], &[]),
                local(Path::new("/no/such/profile.json")),
            ),
        )
        .await
        .expect_err("missing profile");
    assert!(
        err.message().contains("/no/such/profile.json"),
        "{}",
        err.message()
    );
    let unconfined = cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let id = h
        .create(
            &sb,
            secured(container_config("c", &["sh"], &[]), unconfined),
        )
        .await
        .expect("create");
    assert!(h.spec(&id)["linux"].get("seccomp").is_none());
}

#[tokio::test]
async fn sandbox_sysctls_must_be_namespaced_and_reach_containers() {
    let h = harness();
    h.pull().await;
    let mut cfg = sandbox_config(false);
    if let Some(l) = cfg.linux.as_mut() {
        l.sysctls = [("kernel.panic".to_string(), "1".to_string())].into();
    }
    let err = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        }))
        .await
        .expect_err("host sysctl");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("kernel.panic"), "{}", err.message());
    assert!(
        h.ns.created.lock().expect("lock").is_empty(),
        "rejected before namespaces"
    );
    if let Some(l) = cfg.linux.as_mut() {
        l.sysctls = [("net.ipv4.ping_group_range".to_string(), "0 0".to_string())].into();
    }
    let sb = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        }))
        .await
        .expect("namespaced sysctl")
        .into_inner()
        .pod_sandbox_id;
    let id = h
        .create(&sb, container_config("app", &["sh"], &[]))
        .await
        .expect("create");
    assert_eq!(
        h.spec(&id)["linux"]["sysctl"]["net.ipv4.ping_group_range"],
        "0 0"
    );
}

#[tokio::test]
async fn stats_come_from_the_cgroups_and_update_writes_them() {
    let h = harness();
    let (sb, id) = h.running_app().await;
    let cg = format!("/skiff/pod-uid-1/{id}");
    let sample = |cpu: u64| CgroupStats {
        cpu_usage_ns: Some(cpu),
        memory_usage: Some(10 << 20),
        memory_working_set: Some(8 << 20),
        memory_rss: Some(4 << 20),
        page_faults: Some(5),
        major_page_faults: Some(0),
        pids: Some(2),
    };
    h.cgroups
        .stats
        .lock()
        .expect("lock")
        .insert(cg.clone(), sample(1_000_000));
    h.cgroups
        .stats
        .lock()
        .expect("lock")
        .insert("/skiff/pod-uid-1".into(), sample(1_000_000));
    let stats = h
        .svc
        .container_stats(Request::new(cri::ContainerStatsRequest {
            container_id: id.clone(),
        }))
        .await
        .expect("stats")
        .into_inner()
        .stats
        .expect("stats");
    let cpu = stats.cpu.expect("cpu");
    assert_eq!(cpu.usage_core_nano_seconds.expect("usage").value, 1_000_000);
    assert!(cpu.usage_nano_cores.is_none(), "no rate from one sample");
    let mem = stats.memory.expect("memory");
    assert_eq!(mem.working_set_bytes.expect("ws").value, 8 << 20);
    assert_eq!(mem.rss_bytes.expect("rss").value, 4 << 20);
    assert!(stats.writable_layer.is_some());
    assert_eq!(stats.attributes.expect("attrs").id, id);

    std::thread::sleep(std::time::Duration::from_millis(5));
    h.cgroups
        .stats
        .lock()
        .expect("lock")
        .insert(cg.clone(), sample(6_000_000));
    let listed = h
        .svc
        .list_container_stats(Request::new(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: sb.clone(),
                ..Default::default()
            }),
        }))
        .await
        .expect("list")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let rate = listed[0]
        .cpu
        .as_ref()
        .and_then(|c| c.usage_nano_cores)
        .expect("rate");
    assert!(rate.value > 0, "5ms of cpu over a few ms of wall time");

    let pod = h
        .svc
        .list_pod_sandbox_stats(Request::new(cri::ListPodSandboxStatsRequest {
            filter: None,
        }))
        .await
        .expect("pod stats")
        .into_inner()
        .stats;
    assert_eq!(pod.len(), 1);
    let linux = pod[0].linux.clone().expect("linux");
    assert_eq!(
        linux
            .process
            .expect("process")
            .process_count
            .expect("count")
            .value,
        2
    );
    assert_eq!(linux.containers.len(), 1);

    h.svc
        .update_container_resources(Request::new(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_quota: 20_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            annotations: Default::default(),
        }))
        .await
        .expect("update");
    let updates = h.cgroups.updates.lock().expect("lock").clone();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0, cg);
    assert_eq!(updates[0].1.memory_limit, 128 << 20);
    assert_eq!(
        h.spec(&id)["linux"]["resources"]["memory"]["limit"],
        128 << 20
    );
    let rec: crate::container::ContainerRecord =
        crate::state::read_json(&h.root.join("containers").join(&id).join("started.json"))
            .expect("read")
            .expect("record");
    assert_eq!(rec.resources.cpu_quota, 20_000);
    assert_eq!(rec.resources.memory_limit, 128 << 20);

    let fs = h
        .svc
        .image_fs_info(Request::new(cri::ImageFsInfoRequest {}))
        .await
        .expect("fs info")
        .into_inner();
    let image_fs = &fs.image_filesystems[0];
    assert!(image_fs.used_bytes.as_ref().expect("bytes").value > 0);
    assert!(image_fs.inodes_used.as_ref().expect("inodes").value > 3);
}

#[tokio::test]
async fn reopen_log_of_a_stopped_container_fails() {
    let h = harness();
    h.pull().await;
    let sb = h.sandbox(false).await;
    let id = h
        .create(&sb, container_config("app", &["sh"], &[]))
        .await
        .expect("create");
    let err = h
        .svc
        .reopen_container_log(Request::new(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        }))
        .await
        .expect_err("not running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    h.start(&id).await.expect("start");
    // The fake monitor never answers: the flag is cleaned up and the call says so.
    let svc = h.svc.clone();
    let id2 = id.clone();
    let waiter = tokio::spawn(async move {
        svc.reopen_container_log(Request::new(cri::ReopenContainerLogRequest {
            container_id: id2,
        }))
        .await
    });
    // Play the monitor: consume the flag.
    let flag = h
        .root
        .join("run/containers")
        .join(&id)
        .join(crate::monitor::REOPEN_LOG);
    for _ in 0..200 {
        if flag.exists() {
            std::fs::remove_file(&flag).expect("consume");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    waiter.await.expect("join").expect("reopened");
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

#[tokio::test]
async fn shared_and_host_pid_namespaces() {
    let h = harness();
    h.pull().await;
    let mut config = sandbox_config(false);
    let pid_mode = |c: &mut cri::PodSandboxConfig, mode: cri::NamespaceMode| {
        if let Some(ns) = c
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.pid = mode as i32;
        }
    };
    pid_mode(&mut config, cri::NamespaceMode::Pod);
    let sb = h
        .svc
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        }))
        .await
        .expect("run sandbox")
        .into_inner()
        .pod_sandbox_id;
    assert!(h.ns.created.lock().expect("lock")[0].shared_pid);
    let with_pid = |name: &str, mode: cri::NamespaceMode| {
        let mut c = container_config(name, &["sh"], &[]);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let shared = h
        .create(&sb, with_pid("a", cri::NamespaceMode::Pod))
        .await
        .expect("create");
    let pid_ns = |id: &str| {
        h.spec(id)["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .find(|n| n["type"] == "pid")
            .cloned()
    };
    let ns = pid_ns(&shared).expect("a pid namespace");
    assert!(
        ns["path"].as_str().is_some_and(|p| p.ends_with("/ns/pid")),
        "{ns}"
    );
    let host = h
        .create(&sb, with_pid("b", cri::NamespaceMode::Node))
        .await
        .expect("create");
    assert_eq!(pid_ns(&host), None, "hostPID joins the node's namespace");
    let own = h
        .create(&sb, with_pid("c", cri::NamespaceMode::Container))
        .await
        .expect("create");
    assert!(pid_ns(&own).is_some_and(|n| n.get("path").is_none()));
}
