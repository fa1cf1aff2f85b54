//! kube-rs, unchanged, against a running `skiff up`: typed CRUD on ConfigMaps, Pods and
//! Deployments, label and field selectors, every patch type (server-side apply with conflicts
//! and `force`, merge, JSON and strategic merge), and kube-runtime's watcher and reflector,
//! including their recovery when a restart has emptied the server's watch history.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::*;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const NS: &str = "default";
const SHORT: Duration = Duration::from_secs(30);

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Polls `f` until it returns `Some`, or fails after `timeout` saying what it waited for and
/// what it saw last (the async twin of `e2e::wait_for`).
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("gave up after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The API status of a failed call, or a failure saying the call should have failed.
fn api_status<T: std::fmt::Debug>(r: kube::Result<T>, what: &str) -> Result<kube::core::Status> {
    match r {
        Ok(v) => bail!("{what} should have failed, got {v:?}"),
        Err(kube::Error::Api(s)) => Ok(*s),
        Err(e) => bail!("{what} failed without an API status: {e}"),
    }
}

fn configmap(name: &str, labels: Value, data: Value) -> Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": data,
    }))?)
}

fn names<K: kube::Resource>(items: impl IntoIterator<Item = K>) -> BTreeSet<String> {
    items.into_iter().map(|o| o.name_any()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn configmaps_crud(client: &Client) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    let created = cms
        .create(
            &pp,
            &configmap("crud", json!({"suite": "crud"}), json!({"a": "1"}))?,
        )
        .await?;
    ensure!(
        created.metadata.uid.is_some() && created.metadata.resource_version.is_some(),
        "create returned no uid or resourceVersion: {created:?}"
    );
    let st = api_status(
        cms.create(&pp, &configmap("crud", json!({}), json!({}))?)
            .await,
        "creating crud twice",
    )?;
    ensure!(
        st.code == 409 && st.reason == "AlreadyExists",
        "second create: {st:?}"
    );

    let mut got = cms.get("crud").await?;
    ensure!(
        got.data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str)
            == Some("1"),
        "get: {got:?}"
    );
    let listed = cms.list(&ListParams::default()).await?;
    ensure!(
        names(listed.items).contains("crud"),
        "list does not show crud"
    );

    let stale = got.clone();
    got.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = cms.replace("crud", &pp, &got).await?;
    ensure!(
        replaced.data == got.data
            && replaced.metadata.resource_version != stale.metadata.resource_version,
        "replace: {replaced:?}"
    );
    let st = api_status(
        cms.replace("crud", &pp, &stale).await,
        "replace with a stale resourceVersion",
    )?;
    ensure!(st.code == 409, "stale replace: {st:?}");
    ensure!(
        cms.get("crud").await?.data == got.data,
        "a stale replace changed the object"
    );

    cms.delete("crud", &DeleteParams::default()).await?;
    let st = api_status(cms.get("crud").await, "get after delete")?;
    ensure!(
        st.code == 404 && st.is_not_found(),
        "get after delete: {st:?}"
    );
    let st = api_status(
        cms.delete("crud", &DeleteParams::default()).await,
        "deleting twice",
    )?;
    ensure!(st.code == 404, "second delete: {st:?}");
    Ok(())
}

async fn selectors(client: &Client) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    for (name, labels) in [
        ("sel-a", json!({"suite": "sel", "env": "a", "tier": "web"})),
        ("sel-b", json!({"suite": "sel", "env": "b"})),
        ("sel-c", json!({"suite": "sel", "env": "c", "tier": "db"})),
    ] {
        cms.create(&pp, &configmap(name, labels, json!({}))?)
            .await?;
    }
    let cases: &[(&str, &[&str])] = &[
        ("suite=sel,env=a", &["sel-a"]),
        ("suite=sel,env!=a", &["sel-b", "sel-c"]),
        ("suite=sel,env in (a,b)", &["sel-a", "sel-b"]),
        ("suite=sel,env notin (a,b)", &["sel-c"]),
        ("suite=sel,tier", &["sel-a", "sel-c"]),
        ("suite=sel,!tier", &["sel-b"]),
        ("suite=nothing", &[]),
    ];
    for (selector, want) in cases {
        let got = names(
            cms.list(&ListParams::default().labels(selector))
                .await?
                .items,
        );
        ensure!(got == set(want), "labelSelector {selector}: {got:?}");
    }
    let got = names(
        cms.list(&ListParams::default().fields("metadata.name=sel-b"))
            .await?
            .items,
    );
    ensure!(
        got == set(&["sel-b"]),
        "fieldSelector metadata.name: {got:?}"
    );
    let got = names(
        cms.list(
            &ListParams::default()
                .labels("suite=sel")
                .fields("metadata.name!=sel-b"),
        )
        .await?
        .items,
    );
    ensure!(
        got == set(&["sel-a", "sel-c"]),
        "fieldSelector metadata.name!=: {got:?}"
    );
    let got = names(
        cms.list(
            &ListParams::default()
                .labels("suite=sel")
                .fields(&format!("metadata.namespace={NS}")),
        )
        .await?
        .items,
    );
    ensure!(got.len() == 3, "fieldSelector metadata.namespace: {got:?}");
    let st = api_status(
        cms.list(&ListParams::default().fields("data.a=1")).await,
        "a field selector on an unsupported field",
    )?;
    ensure!(st.code == 400, "unsupported field selector: {st:?}");

    // Pages of one: every object once, and a continue token between pages.
    let mut seen = BTreeSet::new();
    let mut lp = ListParams::default().labels("suite=sel").limit(1);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await?;
        pages += 1;
        ensure!(page.items.len() <= 1, "limit 1 gave {}", page.items.len());
        seen.extend(names(page.items));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
        ensure!(pages < 10, "pagination does not end");
    }
    ensure!(
        seen == set(&["sel-a", "sel-b", "sel-c"]) && pages == 3,
        "pages: {pages}, seen {seen:?}"
    );

    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("suite=sel"),
    )
    .await?;
    let left = cms
        .list(&ListParams::default().labels("suite=sel"))
        .await?
        .items;
    ensure!(left.is_empty(), "delete_collection left {:?}", names(left));
    Ok(())
}

async fn pods(client: &Client, image: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-rs-pod", "labels": {"suite": "kube-rs"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}],
        },
    }))?;
    let created = pods.create(&PostParams::default(), &pod).await?;
    // Defaulting happened on the server, as Kubernetes does it.
    let spec = created.spec.as_ref().context("no spec")?;
    ensure!(
        spec.restart_policy.as_deref() == Some("Always")
            && spec.containers[0].termination_message_path.is_some(),
        "the created pod was not defaulted: {spec:?}"
    );

    let running = eventually("kube-rs-pod to run", Duration::from_secs(120), || async {
        let p = pods.get("kube-rs-pod").await?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        Ok((phase.as_deref() == Some("Running")).then_some(p))
    })
    .await?;
    ensure!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("e2e-node"),
        "the pod is not bound to e2e-node"
    );

    for (fields, want) in [
        ("spec.nodeName=e2e-node", true),
        ("status.phase=Running", true),
        ("status.phase=Pending", false),
        ("spec.nodeName=elsewhere", false),
    ] {
        let got = names(
            pods.list(&ListParams::default().labels("suite=kube-rs").fields(fields))
                .await?
                .items,
        );
        ensure!(
            got.contains("kube-rs-pod") == want,
            "pods with {fields}: {got:?}"
        );
    }

    // Replace: labels may change; the status the agent wrote survives a PUT of the main
    // resource.
    let mut p = running.clone();
    p.labels_mut().insert("replaced".into(), "yes".into());
    let replaced = pods
        .replace("kube-rs-pod", &PostParams::default(), &p)
        .await?;
    ensure!(
        replaced.labels().get("replaced").map(String::as_str) == Some("yes")
            && replaced.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        "replace pod: {replaced:?}"
    );
    // The main resource ignores status, as Kubernetes does.
    let mut p = replaced.clone();
    if let Some(s) = p.status.as_mut() {
        s.phase = Some("Failed".into());
    }
    let out = pods
        .replace("kube-rs-pod", &PostParams::default(), &p)
        .await?;
    ensure!(
        out.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        "a PUT of the pod changed its status"
    );

    pods.delete("kube-rs-pod", &DeleteParams::default().grace_period(1))
        .await?;
    eventually(
        "kube-rs-pod to be gone",
        Duration::from_secs(60),
        || async {
            Ok(match pods.get_opt("kube-rs-pod").await? {
                None => Some(()),
                Some(_) => None,
            })
        },
    )
    .await
}

fn deployment(name: &str, image: &str) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "web", "image": image, "command": ["sleep", "3600"]},
                        {"name": "sidecar", "image": image, "command": ["sleep", "3601"]},
                    ],
                },
            },
        },
    }))?)
}

fn containers(d: &Deployment) -> Vec<(String, Vec<String>)> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.command.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

async fn deployments(client: &Client, image: &str) -> Result<()> {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let name = "kube-rs-web";
    let created = deploys
        .create(&PostParams::default(), &deployment(name, image)?)
        .await?;
    ensure!(
        created.metadata.generation == Some(1),
        "generation: {:?}",
        created.metadata.generation
    );
    ensure!(
        names(deploys.list(&ListParams::default()).await?.items).contains(name),
        "the deployment is not listed"
    );
    eventually(
        "the deployment's pod to be ready",
        Duration::from_secs(120),
        || async {
            let d = deploys.get(name).await?;
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok((ready == 1).then_some(()))
        },
    )
    .await?;

    // Replace: a spec change bumps the generation.
    let mut d = deploys.get(name).await?;
    if let Some(s) = d.spec.as_mut() {
        s.replicas = Some(2);
    }
    let replaced = deploys.replace(name, &PostParams::default(), &d).await?;
    ensure!(
        replaced.metadata.generation == Some(2)
            && replaced.spec.as_ref().and_then(|s| s.replicas) == Some(2),
        "replace deployment: {:?}",
        replaced.metadata
    );

    // Strategic merge: containers merge by name, so patching the sidecar keeps web.
    let patched = deploys
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "command": ["sleep", "3602"]},
            ]}}}})),
        )
        .await?;
    let want = vec![
        ("web".to_string(), vec!["sleep".to_string(), "3600".into()]),
        (
            "sidecar".to_string(),
            vec!["sleep".to_string(), "3602".into()],
        ),
    ];
    ensure!(
        containers(&patched) == want,
        "strategic merge: {:?}",
        containers(&patched)
    );
    // `$patch: delete` removes one container by its key.
    let patched = deploys
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"},
            ]}}}})),
        )
        .await?;
    ensure!(
        containers(&patched) == want[..1],
        "strategic $patch: delete: {:?}",
        containers(&patched)
    );
    // A JSON merge patch replaces the list whole, unlike the strategic one.
    let patched = deploys
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "only", "image": image, "command": ["sleep", "3603"]},
            ]}}}})),
        )
        .await?;
    ensure!(
        containers(&patched) == [("only".to_string(), vec!["sleep".to_string(), "3603".into()])],
        "merge patch of containers: {:?}",
        containers(&patched)
    );

    let status = deploys.get_status(name).await?;
    ensure!(status.status.is_some(), "deployments/status has no status");

    deploys.delete(name, &DeleteParams::background()).await?;
    eventually(
        "the deployment and its pods to be gone",
        Duration::from_secs(90),
        || async {
            let left = pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await?
                .items;
            let gone = deploys.get_opt(name).await?.is_none();
            Ok((gone && left.is_empty()).then_some(()))
        },
    )
    .await
}

fn managers(cm: &ConfigMap) -> BTreeSet<String> {
    cm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn data(cm: &ConfigMap) -> Value {
    json!(cm.data.clone().unwrap_or_default())
}

async fn patches(client: &Client) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let name = "patched";
    let alice = PatchParams::apply("alice");
    let bob = PatchParams::apply("bob");
    let applied = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});

    // Server-side apply creates the object and records alice's fields.
    let cm = cms
        .patch(
            name,
            &alice,
            &Patch::Apply(applied(json!({"owner": "alice", "shared": "1"}))),
        )
        .await?;
    ensure!(
        data(&cm) == json!({"owner": "alice", "shared": "1"}),
        "apply create: {}",
        data(&cm)
    );
    ensure!(
        managers(&cm) == set(&["alice"]),
        "managedFields after alice's apply: {:?}",
        cm.metadata.managed_fields
    );
    let entry = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("alice"))
        .context("no entry for alice")?;
    ensure!(
        entry.operation.as_deref() == Some("Apply")
            && entry.fields_type.as_deref() == Some("FieldsV1"),
        "alice's managedFields entry: {entry:?}"
    );
    let owned = serde_json::to_string(&entry.fields_v1)?;
    ensure!(
        owned.contains("f:owner") && owned.contains("f:shared"),
        "alice's fieldsV1: {owned}"
    );

    // bob applying a different value of alice's field conflicts, naming the field and alice.
    let st = api_status(
        cms.patch(name, &bob, &Patch::Apply(applied(json!({"shared": "2"}))))
            .await,
        "bob's conflicting apply",
    )?;
    ensure!(
        st.code == 409 && st.reason == "Conflict",
        "conflict status: {st:?}"
    );
    ensure!(
        st.message.contains("alice") && st.message.contains(".data.shared"),
        "the conflict does not name the field and its manager: {}",
        st.message
    );
    ensure!(
        data(&cms.get(name).await?)["shared"] == "1",
        "a conflicting apply changed the object"
    );
    // Applying the same value is no conflict: both then own it.
    cms.patch(name, &bob, &Patch::Apply(applied(json!({"shared": "1"}))))
        .await?;

    // With force, bob takes the field over.
    let cm = cms
        .patch(
            name,
            &bob.clone().force(),
            &Patch::Apply(applied(json!({"shared": "2", "bobs": "x"}))),
        )
        .await?;
    ensure!(
        data(&cm) == json!({"owner": "alice", "shared": "2", "bobs": "x"}),
        "forced apply: {}",
        data(&cm)
    );
    let alice_fields = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("alice"))
        .map(|m| serde_json::to_string(&m.fields_v1))
        .transpose()?
        .unwrap_or_default();
    ensure!(
        !alice_fields.contains("f:shared") && alice_fields.contains("f:owner"),
        "alice still owns shared after bob forced it: {alice_fields}"
    );
    // A field its only applier stops applying is removed.
    let cm = cms
        .patch(name, &bob, &Patch::Apply(applied(json!({"shared": "2"}))))
        .await?;
    ensure!(
        data(&cm) == json!({"owner": "alice", "shared": "2"}),
        "bob dropped bobs: {}",
        data(&cm)
    );
    // Dry run changes nothing.
    let dry = cms
        .patch(
            name,
            &PatchParams::apply("carol").force().dry_run(),
            &Patch::Apply(applied(json!({"shared": "dry"}))),
        )
        .await?;
    ensure!(
        data(&dry)["shared"] == "dry",
        "dry-run answer: {}",
        data(&dry)
    );
    ensure!(
        data(&cms.get(name).await?)["shared"] == "2",
        "a dry-run apply was stored"
    );

    // JSON merge patch: null removes a key.
    let cm = cms
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"owner": null, "merged": "m"}})),
        )
        .await?;
    ensure!(
        data(&cm) == json!({"shared": "2", "merged": "m"}),
        "merge patch: {}",
        data(&cm)
    );

    // JSON patch: ops apply in order, and a failed `test` applies none of them.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/merged", "value": "m"},
        {"op": "add", "path": "/data/added", "value": "a"},
        {"op": "replace", "path": "/data/shared", "value": "3"},
        {"op": "remove", "path": "/data/merged"},
    ]))?;
    let cm = cms
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(ops))
        .await?;
    ensure!(
        data(&cm) == json!({"shared": "3", "added": "a"}),
        "json patch: {}",
        data(&cm)
    );
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/shared", "value": "4"},
        {"op": "test", "path": "/data/added", "value": "not a"},
    ]))?;
    let st = api_status(
        cms.patch(name, &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
        "a json patch whose test fails",
    )?;
    ensure!((400..500).contains(&st.code), "failed test op: {st:?}");
    ensure!(
        data(&cms.get(name).await?)["shared"] == "3",
        "a failed json patch was partly applied"
    );
    // Strategic merge on a ConfigMap (no merge keys involved) behaves as a merge patch.
    let cm = cms
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"added": null, "s": "1"}})),
        )
        .await?;
    ensure!(
        data(&cm) == json!({"shared": "3", "s": "1"}),
        "strategic patch on a configmap: {}",
        data(&cm)
    );

    // Patching a missing object is a 404, not a create (only apply creates).
    let st = api_status(
        cms.patch(
            "missing",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "1"}})),
        )
        .await,
        "a merge patch of a missing object",
    )?;
    ensure!(st.code == 404, "patch of a missing object: {st:?}");
    cms.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// The events of one watcher, forwarded from a task that polls the stream.
fn spawn_watcher(
    api: Api<ConfigMap>,
    config: watcher::Config,
) -> mpsc::UnboundedReceiver<watcher::Event<ConfigMap>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = watcher(api, config).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            // Errors are retried by the backoff; the test judges by the events it sees.
            if let Ok(ev) = ev
                && tx.send(ev).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// A readable line per event, for assertions and failure messages.
fn describe(ev: &watcher::Event<ConfigMap>) -> String {
    let one = |kind: &str, cm: &ConfigMap| format!("{kind} {} {}", cm.name_any(), data(cm));
    match ev {
        watcher::Event::Apply(cm) => one("Apply", cm),
        watcher::Event::Delete(cm) => one("Delete", cm),
        watcher::Event::Init => "Init".into(),
        watcher::Event::InitApply(cm) => one("InitApply", cm),
        watcher::Event::InitDone => "InitDone".into(),
    }
}

/// Reads events until one satisfies `want`, returning everything read (for messages).
async fn until_event(
    rx: &mut mpsc::UnboundedReceiver<watcher::Event<ConfigMap>>,
    seen: &mut Vec<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("no {what} within 30s; events: {seen:#?}"))?
            .context("the watcher stopped")?;
        let line = describe(&ev);
        seen.push(line.clone());
        if want(&line) {
            return Ok(());
        }
    }
}

/// The watcher's events for objects created, patched, deleted and relabelled while it watches,
/// with the initial state from a paged list (`ListWatch`) or from the watch itself
/// (`streaming_lists`: `sendInitialEvents=true`, ended by a bookmark).
async fn watch_events(client: &Client, config: watcher::Config) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    cms.create(
        &pp,
        &configmap("w-before", json!({"suite": "watch"}), json!({"v": "0"}))?,
    )
    .await?;
    // Not matching the selector: must never show up.
    cms.create(
        &pp,
        &configmap("w-other", json!({"suite": "other"}), json!({}))?,
    )
    .await?;

    let mut rx = spawn_watcher(cms.clone(), config.labels("suite=watch"));
    let mut seen = Vec::new();
    until_event(&mut rx, &mut seen, "InitDone", |l| l == "InitDone").await?;
    ensure!(
        seen.iter().any(|l| l.starts_with("InitApply w-before")),
        "the initial list did not include w-before: {seen:?}"
    );

    cms.create(
        &pp,
        &configmap("w-new", json!({"suite": "watch"}), json!({"v": "1"}))?,
    )
    .await?;
    until_event(&mut rx, &mut seen, "Apply of w-new", |l| {
        l == r#"Apply w-new {"v":"1"}"#
    })
    .await?;
    cms.patch(
        "w-new",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await?;
    until_event(&mut rx, &mut seen, "the patched w-new", |l| {
        l == r#"Apply w-new {"v":"2"}"#
    })
    .await?;
    cms.delete("w-new", &DeleteParams::default()).await?;
    until_event(&mut rx, &mut seen, "Delete of w-new", |l| {
        l.starts_with("Delete w-new")
    })
    .await?;
    // A label change that takes an object out of the selection is a deletion for the watcher.
    cms.patch(
        "w-before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"suite": "gone"}}})),
    )
    .await?;
    until_event(&mut rx, &mut seen, "w-before leaving the selection", |l| {
        l.starts_with("Delete w-before")
    })
    .await?;
    ensure!(
        !seen.iter().any(|l| l.contains("w-other")),
        "the watcher saw an object outside its selector: {seen:?}"
    );
    drop(rx);
    for n in ["w-before", "w-other"] {
        cms.delete(n, &DeleteParams::default()).await?;
    }
    Ok(())
}

fn store_names(store: &Store<ConfigMap>) -> BTreeSet<String> {
    store.state().iter().map(|o| o.name_any()).collect()
}

async fn converges(
    store: &Store<ConfigMap>,
    want: &[&str],
    what: &str,
    timeout: Duration,
) -> Result<()> {
    let want = set(want);
    eventually(what, timeout, || async {
        let got = store_names(store);
        if got == want {
            Ok(Some(()))
        } else {
            bail!("store holds {got:?}, want {want:?}")
        }
    })
    .await
}

/// A reflector over ConfigMaps with `suite=reflect`, polled by a task of its own.
fn spawn_reflector(api: Api<ConfigMap>) -> Store<ConfigMap> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().labels("suite=reflect")).default_backoff(),
    )
    .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    reader
}

async fn reflect(client: &Client) -> Result<Store<ConfigMap>> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    for n in ["r-1", "r-2", "r-3"] {
        cms.create(&pp, &configmap(n, json!({"suite": "reflect"}), json!({}))?)
            .await?;
    }
    let store = spawn_reflector(cms.clone());
    tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready())
        .await
        .context("the reflector's store did not become ready")??;
    converges(&store, &["r-1", "r-2", "r-3"], "the initial list", SHORT).await?;

    cms.create(
        &pp,
        &configmap("r-4", json!({"suite": "reflect"}), json!({}))?,
    )
    .await?;
    cms.delete("r-2", &DeleteParams::default()).await?;
    cms.create(
        &pp,
        &configmap("r-5", json!({"suite": "reflect"}), json!({}))?,
    )
    .await?;
    converges(
        &store,
        &["r-1", "r-3", "r-4", "r-5"],
        "creates and a delete",
        SHORT,
    )
    .await?;
    cms.patch(
        "r-3",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await?;
    eventually(
        "the store to see r-3's data",
        Duration::from_secs(30),
        || async {
            let r3 = store
                .state()
                .into_iter()
                .find(|o| o.name_any() == "r-3")
                .map(|o| data(&o));
            Ok((r3 == Some(json!({"k": "v"}))).then_some(()))
        },
    )
    .await?;
    Ok(store)
}

#[test]
fn kube_rs_client() -> Result<()> {
    with_cluster(|c, _, reg| {
        let image = busybox(reg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        c.start()?;
        let kubeconfig = c.kubeconfig();
        let store = rt.block_on(async {
            let client = client(&kubeconfig).await?;
            configmaps_crud(&client).await.context("configmaps crud")?;
            selectors(&client).await.context("selectors")?;
            patches(&client).await.context("patches")?;
            watch_events(&client, watcher::Config::default())
                .await
                .context("watcher (list, then watch)")?;
            watch_events(&client, watcher::Config::default().streaming_lists())
                .await
                .context("watcher (streaming list)")?;
            pods(&client, &image).await.context("pods")?;
            deployments(&client, &image).await.context("deployments")?;
            reflect(&client).await.context("reflector")
        })?;
        // A restart empties the server's watch history: the reflector's watch resumes from a
        // resourceVersion the server no longer has (410 Expired), re-lists, and converges on
        // what changed while it was away.
        c.stop()?;
        c.start()?;
        rt.block_on(async {
            let client = client(&kubeconfig).await?;
            let cms: Api<ConfigMap> = Api::namespaced(client, NS);
            cms.create(
                &PostParams::default(),
                &configmap("r-6", json!({"suite": "reflect"}), json!({}))?,
            )
            .await?;
            cms.delete("r-1", &DeleteParams::default()).await?;
            converges(
                &store,
                &["r-3", "r-4", "r-5", "r-6"],
                "the reflector after a restart",
                // The watcher's backoff grew while the server was down.
                Duration::from_secs(90),
            )
            .await
        })
        .context("reflector after a restart")
    })
}
