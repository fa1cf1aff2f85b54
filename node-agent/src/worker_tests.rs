//! Pod worker passes against the fake CRI runtime, under a paused clock.

use super::*;
use crate::cri::fake::FakeCri;
use crate::objects::FakeObjects;
use crate::probe::action::{Actions, Outcome};
use crate::pull::RegistryKey;
use crate::recorder::FakeSink;
use crate::volumes::mounter::FakeMounter;
use k8s_openapi::api::core::v1::ContainerStatus;
use k8s_openapi::api::core::v1::PodSpec;
use std::time::Duration;

/// Pull secrets by (namespace, name).
#[derive(Default)]
struct FakeSecrets(std::collections::BTreeMap<(String, String), Vec<RegistryKey>>);

impl PullSecrets for FakeSecrets {
    fn keys<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> futures::future::BoxFuture<'a, Vec<RegistryKey>> {
        Box::pin(async move {
            names
                .iter()
                .filter_map(|n| self.0.get(&(namespace.to_owned(), n.clone())))
                .flatten()
                .cloned()
                .collect()
        })
    }
}

/// Claims resolve to nothing in these tests.
struct NoClaims;

impl ClaimResolver for NoClaims {
    fn claim_path<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move { Err(format!("persistentvolumeclaim \"{name}\" not found")) })
    }
}

/// Probe and hook actions answered by command line (`exec` actions; anything else succeeds),
/// set by the test as it goes.
#[derive(Default)]
struct Scripted {
    answers: std::sync::Mutex<std::collections::HashMap<String, Outcome>>,
}

impl Scripted {
    fn set(&self, cmd: &str, outcome: Outcome) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cmd.to_owned(), outcome);
    }
}

impl Actions for Scripted {
    fn run<'a>(
        &'a self,
        _id: &'a str,
        action: &'a crate::probe::action::Action,
        _timeout: Option<Duration>,
        _purpose: &'static str,
    ) -> futures::future::BoxFuture<'a, Outcome> {
        let key = match action {
            crate::probe::action::Action::Exec(cmd) => cmd.join(" "),
            other => format!("{other:?}"),
        };
        let out = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or(Outcome::Success(String::new()));
        Box::pin(async move { out })
    }
}

/// What a test sees of the node besides the fake runtime.
struct Node {
    ctx: Arc<NodeContext>,
    objects: Arc<FakeObjects>,
    events: Arc<FakeSink>,
    actions: Arc<Scripted>,
}

fn test_node(secrets: FakeSecrets) -> Node {
    // Each test gets its own directory: pods' volumes are made (and removed) there.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let objects = Arc::new(FakeObjects::default());
    let events = Arc::new(FakeSink::default());
    let actions = Arc::new(Scripted::default());
    let ctx = Arc::new(NodeContext {
        node_name: "n1".to_owned(),
        node_ip: "192.168.1.10".parse().expect("ip"),
        pod_log_dir: dir.join("logs"),
        pods_dir: dir.join("pods"),
        runtime_name: "fake".to_owned(),
        pulls: Arc::new(Pulls {
            secrets: Arc::new(secrets),
            records: PullRecords::open(None),
        }),
        objects: objects.clone(),
        claims: Arc::new(NoClaims),
        volumes: VolumeManager::new(dir.join("pods"), Arc::new(FakeMounter::default())),
        events: events.clone(),
        allocatable: Allocatable {
            cpu_milli: 2000,
            memory: 1 << 30,
        },
        actions: actions.clone(),
        wake: tokio::sync::mpsc::unbounded_channel().0,
        dns: Default::default(),
    });
    Node {
        ctx,
        objects,
        events,
        actions,
    }
}

fn node_with(secrets: FakeSecrets) -> Arc<NodeContext> {
    test_node(secrets).ctx
}

fn node() -> Arc<NodeContext> {
    node_with(FakeSecrets::default())
}

fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ..Default::default()
    }
}

fn pod(policy: &str, containers: Vec<Container>) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some("web".to_owned());
    pod.metadata.namespace = Some("default".to_owned());
    pod.metadata.uid = Some("u1".to_owned());
    pod.spec = Some(PodSpec {
        containers,
        restart_policy: Some(policy.to_owned()),
        node_name: Some("n1".to_owned()),
        ..Default::default()
    });
    pod
}

fn desired(pod: &Pod) -> Desired {
    Desired::Pod(Arc::new(pod.clone()))
}

async fn sync(w: &mut PodWorker<FakeCri>, pod: &Pod) -> PodStatus {
    let out = w.sync(&desired(pod)).await.expect("sync");
    out.status.expect("status")
}

fn cstatus(st: &PodStatus, i: usize) -> &ContainerStatus {
    &st.container_statuses.as_ref().expect("container statuses")[i]
}

fn waiting_reason(st: &PodStatus, i: usize) -> Option<String> {
    cstatus(st, i)
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
}

fn condition(st: &PodStatus, t: &str) -> String {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn current_id(fake: &FakeCri, name: &str) -> String {
    fake.containers_named(name)
        .last()
        .cloned()
        .expect("container")
}

#[tokio::test(start_paused = true)]
async fn pulls_runs_sandbox_creates_and_starts() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Always", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    let st = sync(&mut w, &p).await;

    assert_eq!(
        fake.calls(),
        [
            "RunPodSandbox u1",
            "ImageStatus busybox:1.36",
            "PullImage busybox:1.36",
            "CreateContainer app",
            "StartContainer c2",
        ]
    );
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&st, "Ready"), "True");
    assert_eq!(condition(&st, "PodScheduled"), "True");
    assert_eq!(st.pod_ip.as_deref(), Some("10.88.0.5"));
    assert_eq!(st.host_ip.as_deref(), Some("192.168.1.10"));
    let cs = cstatus(&st, 0);
    assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    assert_eq!(cs.container_id.as_deref(), Some("fake://c2"));
    assert_eq!(cs.image_id, "sha256:busybox-1.36");
    assert!(cs.ready);

    // The sandbox config carries what the kubelet sends.
    {
        let state = fake.state();
        let sb = &state.sandboxes["sb1"].config;
        assert_eq!(sb.hostname, "web");
        assert!(
            sb.log_directory.ends_with("/default_web_u1"),
            "{}",
            sb.log_directory
        );
        assert_eq!(sb.labels[cri::LABEL_POD_UID], "u1");
        let c = &state.containers["c2"].config;
        assert_eq!(c.log_path, "app/0.log");
    }

    // A second pass with nothing changed does nothing and reports the same.
    let again = sync(&mut w, &p).await;
    assert_eq!(fake.calls().len(), 5);
    assert_eq!(again, st);
}

#[tokio::test(start_paused = true)]
async fn image_pull_failure_backs_off() {
    let fake = Arc::new(FakeCri::new());
    fake.state()
        .pull_errors
        .insert("nope:1".to_owned(), "manifest unknown".to_owned());
    let p = pod("Always", vec![container("app", "nope:1")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);

    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ErrImagePull"));
    let msg = cstatus(&st, 0)
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("manifest unknown"), "{msg}");
    assert_eq!(st.phase.as_deref(), Some("Pending"));

    // The failure stays visible as ErrImagePull for a moment, then it is a back-off.
    tokio::time::advance(Duration::from_secs(1)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ErrImagePull"));
    tokio::time::advance(Duration::from_secs(2)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ImagePullBackOff"));
    let pulls = |f: &FakeCri| {
        f.calls()
            .iter()
            .filter(|c| c.starts_with("PullImage"))
            .count()
    };
    assert_eq!(pulls(&fake), 1, "no pull while backing off");

    tokio::time::advance(Duration::from_secs(8)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(pulls(&fake), 2, "retried after 10s");
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ErrImagePull"));

    // The window doubled: 19 s later still backing off, after 20 s the pull succeeds.
    fake.state().pull_errors.clear();
    tokio::time::advance(Duration::from_secs(19)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ImagePullBackOff"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"));
}

#[tokio::test(start_paused = true)]
async fn never_pull_policy_reports_err_image_never_pull() {
    let fake = Arc::new(FakeCri::new());
    let mut c = container("app", "local:1");
    c.image_pull_policy = Some("Never".to_owned());
    let p = pod("Always", vec![c]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ErrImageNeverPull"));
    assert!(!fake.calls().iter().any(|c| c.starts_with("PullImage")));
}

#[tokio::test(start_paused = true)]
async fn crash_loop_restarts_with_back_off() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Always", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    sync(&mut w, &p).await;

    // First crash: restarted at once (the kubelet's first restart has no delay).
    fake.exit_container(&current_id(&fake, "app"), 1);
    let st = sync(&mut w, &p).await;
    let cs = cstatus(&st, 0);
    assert_eq!(cs.restart_count, 1);
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last");
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let id = current_id(&fake, "app");
    assert_eq!(fake.state().containers[&id].config.log_path, "app/1.log");

    // Second crash: CrashLoopBackOff for 10 s.
    fake.exit_container(&current_id(&fake, "app"), 2);
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&st, "Ready"), "False");
    let cs = cstatus(&st, 0);
    assert_eq!(cs.restart_count, 1);
    assert_eq!(
        cs.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(2)
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("CrashLoopBackOff"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(cstatus(&st, 0).restart_count, 2);
    assert_eq!(waiting_reason(&st, 0), None);
    // Only the previous attempt is kept for `previous` logs; the one before it is removed.
    assert_eq!(fake.containers_named("app").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn never_policy_failure_fails_the_pod_and_stops_the_sandbox() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Never", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    sync(&mut w, &p).await;
    fake.exit_container(&current_id(&fake, "app"), 3);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(condition(&st, "Ready"), "False");
    assert!(fake.calls().contains(&"StopPodSandbox sb1".to_owned()));
    let t = cstatus(&st, 0)
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.container_id.as_deref(), Some("fake://c2"));
    // Nothing restarts afterwards.
    tokio::time::advance(Duration::from_secs(600)).await;
    sync(&mut w, &p).await;
    assert_eq!(fake.containers_named("app").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn on_failure_success_completes_the_pod() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("OnFailure", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    sync(&mut w, &p).await;
    fake.exit_container(&current_id(&fake, "app"), 0);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Succeeded"));
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_first_in_order() {
    let fake = Arc::new(FakeCri::new());
    let mut p = pod("Always", vec![container("app", "busybox:1.36")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(vec![
            container("init-a", "busybox:1.36"),
            container("init-b", "busybox:1.36"),
        ]);
    }
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("PodInitializing"));
    assert_eq!(condition(&st, "Initialized"), "False");
    assert_eq!(fake.containers_named("init-b").len(), 0);

    fake.exit_container(&current_id(&fake, "init-a"), 0);
    sync(&mut w, &p).await;
    assert_eq!(fake.containers_named("init-b").len(), 1);
    assert_eq!(fake.containers_named("app").len(), 0);

    fake.exit_container(&current_id(&fake, "init-b"), 0);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&st, "Initialized"), "True");
    assert_eq!(fake.containers_named("app").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn deletion_stops_and_removes_in_order() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Always", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    sync(&mut w, &p).await;

    let mut deleting = p.clone();
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    let before = fake.calls().len();
    let out = w.sync(&desired(&deleting)).await.expect("sync");
    assert!(out.finish_deletion && out.done);
    assert_eq!(
        fake.calls()[before..],
        [
            "StopContainer c2 5",
            "RemoveContainer c2",
            "StopPodSandbox sb1",
            "RemovePodSandbox sb1",
        ]
    );
    assert!(fake.state().sandboxes.is_empty());
}

#[tokio::test(start_paused = true)]
async fn gone_pod_is_torn_down_without_finishing_deletion() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Always", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    sync(&mut w, &p).await;
    let out = w.sync(&Desired::Gone).await.expect("sync");
    assert!(!out.finish_deletion && out.done);
    assert!(fake.state().sandboxes.is_empty());
    assert!(fake.state().containers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_new_worker_adopts_the_running_sandbox() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Always", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    sync(&mut w, &p).await;
    let calls = fake.calls().len();

    // As after an agent restart: a fresh worker, same runtime.
    let mut w2 = PodWorker::new(fake.clone(), node(), &p);
    let st = sync(&mut w2, &p).await;
    assert_eq!(
        fake.calls().len(),
        calls,
        "nothing new run: {:?}",
        fake.calls()
    );
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(cstatus(&st, 0).container_id.as_deref(), Some("fake://c2"));
}

#[tokio::test(start_paused = true)]
async fn host_network_pod_reports_the_node_ip() {
    let fake = Arc::new(FakeCri::new());
    let mut p = pod("Always", vec![container("app", "busybox:1.36")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.host_network = Some(true);
    }
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.pod_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(fake.state().sandboxes["sb1"].config.hostname, "");
}

#[tokio::test(start_paused = true)]
async fn a_runtime_error_is_retried_from_the_same_step() {
    let fake = Arc::new(FakeCri::new());
    let p = pod("Always", vec![container("app", "busybox:1.36")]);
    let mut w = PodWorker::new(fake.clone(), node(), &p);
    fake.state().fail_once.insert("ListPodSandbox".to_owned());
    assert!(w.sync(&desired(&p)).await.is_err());
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"));

    fake.state().fail_once.insert("PodSandboxStatus".to_owned());
    assert!(w.sync(&desired(&p)).await.is_err());
    let again = sync(&mut w, &p).await;
    assert_eq!(again.phase.as_deref(), Some("Running"));
    assert_eq!(fake.state().sandboxes.len(), 1, "no second sandbox");
}

fn with_pull_secret(mut p: Pod, secret: &str) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        spec.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: secret.to_owned(),
        }]);
    }
    p
}

fn pulls(f: &FakeCri) -> Vec<String> {
    f.calls()
        .into_iter()
        .filter(|c| c.starts_with("PullImage"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pull_secrets_are_tried_in_turn_and_private_images_stay_private() {
    let image = "reg.example:5000/team/app:1";
    let mut secrets = FakeSecrets::default();
    for (secret, user) in [("wrong", "mallory"), ("right", "alice")] {
        secrets.0.insert(
            ("default".to_owned(), secret.to_owned()),
            vec![RegistryKey {
                key: "reg.example:5000".to_owned(),
                username: user.to_owned(),
                password: "pw".to_owned(),
            }],
        );
    }
    let node = node_with(secrets);
    let fake = Arc::new(FakeCri::new());
    fake.state()
        .pull_users
        .insert(image.to_owned(), vec!["alice".to_owned()]);

    // Both secrets' credentials are tried; alice's pulls.
    let mut p = with_pull_secret(pod("Always", vec![container("app", image)]), "wrong");
    if let Some(s) = p.spec.as_mut() {
        s.image_pull_secrets.get_or_insert_default().push(
            k8s_openapi::api::core::v1::LocalObjectReference {
                name: "right".to_owned(),
            },
        );
    }
    let mut w = PodWorker::new(fake.clone(), node.clone(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"), "{st:?}");
    assert_eq!(
        pulls(&fake),
        vec![
            format!("PullImage {image} as mallory"),
            format!("PullImage {image} as alice")
        ]
    );

    // Another pod without a secret: the cached image is not handed over (IfNotPresent), and
    // its own anonymous pull is refused.
    let mut other = pod("Always", vec![container("app", image)]);
    other.metadata.name = Some("thief".to_owned());
    other.metadata.uid = Some("u2".to_owned());
    let mut w2 = PodWorker::new(fake.clone(), node.clone(), &other);
    let st = sync(&mut w2, &other).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ErrImagePull"));
    assert_eq!(pulls(&fake).last(), Some(&format!("PullImage {image}")));

    // With pull policy Never it is not handed over either.
    let mut never = container("app", image);
    never.image_pull_policy = Some("Never".to_owned());
    let mut third = pod("Always", vec![never]);
    third.metadata.uid = Some("u3".to_owned());
    let mut w3 = PodWorker::new(fake.clone(), node.clone(), &third);
    let st = sync(&mut w3, &third).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ErrImageNeverPull"));

    // A pod with alice's secret uses the cached image without pulling again.
    let before = pulls(&fake).len();
    let mut fourth = with_pull_secret(pod("Always", vec![container("app", image)]), "right");
    fourth.metadata.uid = Some("u4".to_owned());
    let mut w4 = PodWorker::new(fake.clone(), node, &fourth);
    let st = sync(&mut w4, &fourth).await;
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(pulls(&fake).len(), before);
}

#[tokio::test(start_paused = true)]
async fn missing_config_is_a_config_error_until_it_appears() {
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EnvVar, EnvVarSource, SecretKeySelector, Volume, VolumeMount,
    };
    let fake = Arc::new(FakeCri::new());
    let n = test_node(FakeSecrets::default());
    let mut app = container("app", "busybox:1.36");
    app.env = Some(vec![EnvVar {
        name: "PASSWORD".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "db".into(),
                key: "password".into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }]);
    app.volume_mounts = Some(vec![VolumeMount {
        name: "config".into(),
        mount_path: "/etc/app".into(),
        ..Default::default()
    }]);
    let mut p = pod("Always", vec![app]);
    p.spec.as_mut().expect("spec").volumes = Some(vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "app".into(),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let mut w = PodWorker::new(fake.clone(), n.ctx.clone(), &p);

    // No ConfigMap: the volume cannot be made, so no sandbox either.
    let st = sync(&mut w, &p).await;
    assert_eq!(waiting_reason(&st, 0).as_deref(), Some("ContainerCreating"));
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert!(
        n.events
            .reasons()
            .contains(&"FailedMount: MountVolume.SetUp failed for volume \"config\" : configmap \"app\" not found".to_owned()),
        "{:?}",
        n.events.reasons()
    );

    // The ConfigMap appears; the Secret the environment needs is still missing.
    n.objects
        .add_config_map("default", "app", &[("app.conf", "x=1")]);
    let st = sync(&mut w, &p).await;
    assert_eq!(
        waiting_reason(&st, 0).as_deref(),
        Some("CreateContainerConfigError")
    );
    assert_eq!(
        cstatus(&st, 0)
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.message.as_deref()),
        Some("secret \"db\" not found")
    );
    assert!(
        n.events
            .reasons()
            .contains(&"Failed: Error: secret \"db\" not found".to_owned())
    );

    // The Secret appears: after the back-off the container starts with it.
    n.objects
        .add_secret("default", "db", &[("password", b"s3cret")]);
    tokio::time::advance(Duration::from_secs(11)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"), "{st:?}");
    let id = current_id(&fake, "app");
    let cfg = fake.state().containers[&id].config.clone();
    assert!(
        cfg.envs
            .iter()
            .any(|e| e.key == "PASSWORD" && e.value == "s3cret")
    );
    let m = cfg
        .mounts
        .iter()
        .find(|m| m.container_path == "/etc/app")
        .expect("config mount");
    assert!(m.readonly);
    assert!(std::path::Path::new(&m.host_path).join("app.conf").exists());
    // No terminationMessagePath in this spec: no message file either.
    assert_eq!(cfg.mounts.len(), 1, "{:?}", cfg.mounts);
    let reasons = n.events.reasons();
    for want in ["Created: Container created", "Started: Container started"] {
        assert!(reasons.contains(&want.to_owned()), "{reasons:?}");
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("Pulling: Pulling image")),
        "{reasons:?}"
    );

    // Deletion tears the volumes down with the pod.
    let mut deleting = p.clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    w.sync(&desired(&deleting)).await.expect("sync");
    assert!(!n.ctx.volumes.pod_dir("u1").exists());
    assert!(n.objects.state().readers.is_empty(), "objects released");
}

#[tokio::test(start_paused = true)]
async fn termination_message_is_read_when_the_container_exits() {
    let fake = Arc::new(FakeCri::new());
    let n = test_node(FakeSecrets::default());
    let mut c = container("app", "busybox:1.36");
    c.termination_message_path = Some("/dev/termination-log".into());
    let p = pod("Never", vec![c]);
    let mut w = PodWorker::new(fake.clone(), n.ctx.clone(), &p);
    sync(&mut w, &p).await;
    let id = current_id(&fake, "app");
    let file = {
        let state = fake.state();
        state.containers[&id]
            .config
            .mounts
            .iter()
            .find(|m| m.container_path == "/dev/termination-log")
            .map(|m| m.host_path.clone())
            .expect("message file mounted")
    };
    std::fs::write(&file, "disk full").expect("write message");
    fake.exit_container(&id, 1);
    let st = sync(&mut w, &p).await;
    let term = cstatus(&st, 0)
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(term.message.as_deref(), Some("disk full"));
}

fn exec_probe(cmd: &str, period: i32, failures: i32) -> k8s_openapi::api::core::v1::Probe {
    k8s_openapi::api::core::v1::Probe {
        exec: Some(k8s_openapi::api::core::v1::ExecAction {
            command: Some(cmd.split(' ').map(str::to_owned).collect()),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Lets probe tasks run, then syncs.
async fn sync_after(w: &mut PodWorker<FakeCri>, p: &Pod, d: Duration) -> PodStatus {
    tokio::time::sleep(d).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    sync(w, p).await
}

#[tokio::test(start_paused = true)]
async fn readiness_gates_ready_and_liveness_restarts() {
    let fake = Arc::new(FakeCri::new());
    let n = test_node(FakeSecrets::default());
    n.actions
        .set("cat /ready", Outcome::Failure("not yet".into()));
    let mut c = container("app", "busybox:1.36");
    c.readiness_probe = Some(exec_probe("cat /ready", 5, 1));
    c.liveness_probe = Some(exec_probe("cat /alive", 10, 2));
    let p = pod("Always", vec![c]);
    let mut w = PodWorker::new(fake.clone(), n.ctx.clone(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(
        !cstatus(&st, 0).ready,
        "not ready before the probe succeeds"
    );
    assert_eq!(condition(&st, "Ready"), "False");

    let st = sync_after(&mut w, &p, Duration::from_secs(6)).await;
    assert!(!cstatus(&st, 0).ready);
    assert!(
        n.events
            .reasons()
            .contains(&"Unhealthy: Readiness probe failed: not yet".to_owned())
    );
    n.actions.set("cat /ready", Outcome::Success(String::new()));
    let st = sync_after(&mut w, &p, Duration::from_secs(6)).await;
    assert!(cstatus(&st, 0).ready, "{st:?}");
    assert_eq!(condition(&st, "Ready"), "True");

    // Liveness fails twice: the container is killed and started again.
    let first = current_id(&fake, "app");
    n.actions.set("cat /alive", Outcome::Failure("dead".into()));
    let _ = sync_after(&mut w, &p, Duration::from_secs(21)).await;
    let st = sync(&mut w, &p).await;
    assert!(
        fake.calls()
            .iter()
            .any(|c| c == &format!("StopContainer {first} 30")),
        "{:?}",
        fake.calls()
    );
    assert!(
        n.events.reasons().contains(
            &"Killing: Container app failed liveness probe, will be restarted".to_owned()
        ),
        "{:?}",
        n.events.reasons()
    );
    assert_ne!(current_id(&fake, "app"), first, "restarted");
    assert_eq!(cstatus(&st, 0).restart_count, 1);
}

#[tokio::test(start_paused = true)]
async fn sidecars_start_first_keep_running_and_stop_when_the_job_is_done() {
    let fake = Arc::new(FakeCri::new());
    let n = test_node(FakeSecrets::default());
    let mut side = container("proxy", "busybox:1.36");
    side.restart_policy = Some("Always".into());
    let mut p = pod("Never", vec![container("main", "busybox:1.36")]);
    p.spec.as_mut().expect("spec").init_containers = Some(vec![side]);
    let mut w = PodWorker::new(fake.clone(), n.ctx.clone(), &p);
    let st = sync(&mut w, &p).await;
    // The sidecar started, and (without a startup probe) let the main container start.
    assert_eq!(fake.containers_named("proxy").len(), 1);
    assert_eq!(fake.containers_named("main").len(), 1);
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&st, "Initialized"), "True");

    // The sidecar crashes: it is restarted even under restartPolicy Never.
    fake.exit_container(&current_id(&fake, "proxy"), 1);
    sync(&mut w, &p).await;
    assert_eq!(fake.containers_named("proxy").len(), 2);

    // The main container finishes: the pod succeeds and the sidecar is stopped.
    fake.exit_container(&current_id(&fake, "main"), 0);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Succeeded"), "{st:?}");
    let proxy = current_id(&fake, "proxy");
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.starts_with(&format!("StopContainer {proxy}"))),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn active_deadline_fails_the_pod() {
    let fake = Arc::new(FakeCri::new());
    let n = test_node(FakeSecrets::default());
    let mut p = pod("Always", vec![container("app", "busybox:1.36")]);
    p.spec.as_mut().expect("spec").active_deadline_seconds = Some(30);
    let mut w = PodWorker::new(fake.clone(), n.ctx.clone(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Running"));
    tokio::time::advance(Duration::from_secs(31)).await;
    let st = sync(&mut w, &p).await;
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(
        n.events.reasons().contains(
            &"DeadlineExceeded: Pod was active on the node longer than the specified deadline"
                .to_owned()
        )
    );
    let id = current_id(&fake, "app");
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.starts_with(&format!("StopContainer {id}")))
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_post_start_hook_kills_the_container() {
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, LifecycleHandler};
    let fake = Arc::new(FakeCri::new());
    let n = test_node(FakeSecrets::default());
    n.actions.set("setup", Outcome::Failure("exit 1".into()));
    let mut c = container("app", "busybox:1.36");
    c.lifecycle = Some(Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["setup".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let p = pod("Always", vec![c]);
    let mut w = PodWorker::new(fake.clone(), n.ctx.clone(), &p);
    let st = sync(&mut w, &p).await;
    assert_eq!(
        waiting_reason(&st, 0).as_deref(),
        Some("PostStartHookError")
    );
    let reasons = n.events.reasons();
    for want in [
        "FailedPostStartHook: PostStartHook failed",
        "Killing: FailedPostStartHook",
    ] {
        assert!(reasons.contains(&want.to_owned()), "{reasons:?}");
    }
}
