//! Pod worker passes against the fake CRI runtime, under a paused clock.

use super::*;
use crate::cri::fake::FakeCri;
use crate::pull::RegistryKey;
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

fn node_with(secrets: FakeSecrets) -> Arc<NodeContext> {
    Arc::new(NodeContext {
        node_name: "n1".to_owned(),
        node_ip: "192.168.1.10".parse().expect("ip"),
        pod_log_dir: std::env::temp_dir().join("skiff-node-agent-tests"),
        pods_dir: std::env::temp_dir().join("skiff-node-agent-tests-pods"),
        runtime_name: "fake".to_owned(),
        pulls: Arc::new(Pulls {
            secrets: Arc::new(secrets),
            records: PullRecords::open(None),
        }),
    })
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
