//! The API objects a pod refers to besides itself: the ConfigMaps and Secrets of its volumes and
//! environment, and the Services whose variables its containers get. [`ObjectSource`] is the
//! boundary; [`WatchedObjects`] keeps each referenced ConfigMap and Secret current with a watch
//! of its own (the kubelet's `Watch` change-detection strategy) and wakes the pods that use it
//! when it changes, so an update reaches their mounted files within a pass; Services come from
//! the node's one watch of them ([`ServiceView`]). [`FakeObjects`] serves unit tests from maps.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use kube::runtime::reflector::Store;

use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::AgentError;
use crate::services::ServiceView;

/// How long a first read of an object may wait for its watch to list it.
const FIRST_READ: Duration = Duration::from_secs(10);

/// Where a pod worker reads the objects its pod refers to. Reading an object subscribes the
/// pod (by UID) to its changes until [`ObjectSource::release`].
pub trait ObjectSource: Send + Sync + 'static {
    /// The ConfigMap `namespace/name`, or `None` if it does not exist.
    fn config_map<'a>(
        &'a self,
        pod_uid: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ConfigMap>>, AgentError>>;
    /// The Secret `namespace/name`, or `None` if it does not exist.
    fn secret<'a>(
        &'a self,
        pod_uid: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Secret>>, AgentError>>;
    /// Every Service in `namespace` (and, for the `kubernetes` Service, `default`).
    fn services<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Arc<Service>>, AgentError>>;
    /// The pod is gone from this node: it no longer needs what it read.
    fn release(&self, pod_uid: &str);
}

/// What a watch of one object has seen.
#[derive(Debug, Clone)]
enum Seen<K> {
    /// The watch has not listed yet.
    Unknown,
    Absent,
    Present(Arc<K>),
}

/// One watched object and the pods that read it.
struct Entry<K> {
    seen: watch::Receiver<Seen<K>>,
    pods: HashSet<String>,
    task: tokio::task::JoinHandle<()>,
}

type Key = (String, String);

/// The watched objects of one kind.
struct Watched<K> {
    entries: HashMap<Key, Entry<K>>,
}

impl<K> Default for Watched<K> {
    fn default() -> Self {
        Watched {
            entries: HashMap::new(),
        }
    }
}

/// ConfigMaps and Secrets watched one by one for the pods that use them; Services from one
/// cluster-wide reflector started on first use.
pub struct WatchedObjects {
    client: kube::Client,
    /// Pod UIDs to re-sync because something they read changed.
    wake: mpsc::UnboundedSender<String>,
    config_maps: Arc<Mutex<Watched<ConfigMap>>>,
    secrets: Arc<Mutex<Watched<Secret>>>,
    /// The node's one watch of Services (shared with the proxy and DNS).
    services: ServiceView,
}

impl Debug for WatchedObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedObjects").finish_non_exhaustive()
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchedObjects {
    /// Objects read through `client`, Services from `services`; the UIDs of pods whose
    /// objects changed go to `wake`.
    pub fn new(
        client: kube::Client,
        services: ServiceView,
        wake: mpsc::UnboundedSender<String>,
    ) -> Self {
        WatchedObjects {
            client,
            wake,
            config_maps: Arc::default(),
            secrets: Arc::default(),
            services,
        }
    }

    async fn get<K>(
        &self,
        table: &Arc<Mutex<Watched<K>>>,
        kind: &'static str,
        pod_uid: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<K>>, AgentError>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        let key = (namespace.to_owned(), name.to_owned());
        let mut seen = {
            let mut t = locked(table);
            let entry = t.entries.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = watch::channel(Seen::Unknown);
                let task = tokio::spawn(watch_one::<K>(
                    Api::namespaced(self.client.clone(), namespace),
                    name.to_owned(),
                    tx,
                    table.clone(),
                    key.clone(),
                    self.wake.clone(),
                ));
                Entry {
                    seen: rx,
                    pods: HashSet::new(),
                    task,
                }
            });
            entry.pods.insert(pod_uid.to_owned());
            entry.seen.clone()
        };
        let first =
            tokio::time::timeout(FIRST_READ, seen.wait_for(|s| !matches!(s, Seen::Unknown))).await;
        match first {
            Ok(Ok(s)) => Ok(match &*s {
                Seen::Present(obj) => Some(obj.clone()),
                _ => None,
            }),
            _ => Err(AgentError::ObjectUnavailable {
                kind,
                name: format!("{namespace}/{name}"),
            }),
        }
    }

    async fn service_store(&self) -> Result<&Store<Service>, AgentError> {
        if self.services.wait_services_listed(FIRST_READ).await {
            Ok(&self.services.services)
        } else {
            Err(AgentError::ObjectUnavailable {
                kind: "services",
                name: String::new(),
            })
        }
    }
}

/// Watches one object by name until no pod reads it any more (its entry is removed and this
/// task aborted), publishing what it sees and waking the pods that read it on every change.
async fn watch_one<K>(
    api: Api<K>,
    name: String,
    tx: watch::Sender<Seen<K>>,
    table: Arc<Mutex<Watched<K>>>,
    key: Key,
    wake: mpsc::UnboundedSender<String>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<Option<Arc<K>>> = None;
    while let Some(ev) = stream.next().await {
        let next = match ev {
            Ok(watcher::Event::Init) => {
                listing = Some(None);
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                listing = Some(Some(Arc::new(obj)));
                continue;
            }
            Ok(watcher::Event::InitDone) => match listing.take().flatten() {
                Some(obj) => Seen::Present(obj),
                None => Seen::Absent,
            },
            Ok(watcher::Event::Apply(obj)) => Seen::Present(Arc::new(obj)),
            Ok(watcher::Event::Delete(_)) => Seen::Absent,
            Err(e) => {
                tracing::debug!(object = %name, error = %e, "object watch error");
                continue;
            }
        };
        let changed = match (&*tx.borrow(), &next) {
            (Seen::Present(a), Seen::Present(b)) => {
                a.meta().resource_version != b.meta().resource_version
            }
            (Seen::Absent, Seen::Absent) => false,
            _ => true,
        };
        let first = matches!(&*tx.borrow(), Seen::Unknown);
        tx.send_replace(next);
        if changed && !first {
            let pods: Vec<String> = locked(&table)
                .entries
                .get(&key)
                .map(|e| e.pods.iter().cloned().collect())
                .unwrap_or_default();
            for uid in pods {
                let _ = wake.send(uid);
            }
        }
    }
}

fn release_from<K>(table: &Mutex<Watched<K>>, pod_uid: &str) {
    let mut t = locked(table);
    t.entries.retain(|_, e| {
        e.pods.remove(pod_uid);
        if e.pods.is_empty() {
            e.task.abort();
            false
        } else {
            true
        }
    });
}

impl ObjectSource for WatchedObjects {
    fn config_map<'a>(
        &'a self,
        pod_uid: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ConfigMap>>, AgentError>> {
        Box::pin(self.get(&self.config_maps, "configmap", pod_uid, namespace, name))
    }

    fn secret<'a>(
        &'a self,
        pod_uid: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Secret>>, AgentError>> {
        Box::pin(self.get(&self.secrets, "secret", pod_uid, namespace, name))
    }

    fn services<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Arc<Service>>, AgentError>> {
        Box::pin(async move {
            let store = self.service_store().await?;
            Ok(store.state_filter(|s| {
                let ns = s.metadata.namespace.as_deref();
                ns == Some(namespace)
                    || (ns == Some("default") && s.metadata.name.as_deref() == Some("kubernetes"))
            }))
        })
    }

    fn release(&self, pod_uid: &str) {
        release_from(&self.config_maps, pod_uid);
        release_from(&self.secrets, pod_uid);
    }
}

/// Objects from maps, for unit tests; a test changes them through [`FakeObjects::state`].
#[derive(Debug, Default)]
pub struct FakeObjects {
    state: Mutex<FakeObjectsState>,
}

/// What [`FakeObjects`] serves, by `(namespace, name)`.
#[derive(Debug, Default)]
pub struct FakeObjectsState {
    pub config_maps: HashMap<Key, Arc<ConfigMap>>,
    pub secrets: HashMap<Key, Arc<Secret>>,
    pub services: Vec<Arc<Service>>,
    /// Pods that read something and were not released.
    pub readers: HashSet<String>,
}

impl FakeObjects {
    pub fn state(&self) -> MutexGuard<'_, FakeObjectsState> {
        locked(&self.state)
    }

    pub fn add_config_map(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.to_owned());
        cm.metadata.namespace = Some(namespace.to_owned());
        cm.metadata.resource_version = Some(format!("{}", self.state().config_maps.len() + 1));
        cm.data = Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self.state()
            .config_maps
            .insert((namespace.to_owned(), name.to_owned()), Arc::new(cm));
    }

    pub fn add_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) {
        let mut s = Secret::default();
        s.metadata.name = Some(name.to_owned());
        s.metadata.namespace = Some(namespace.to_owned());
        s.metadata.resource_version = Some(format!("{}", self.state().secrets.len() + 1));
        s.data = Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        );
        self.state()
            .secrets
            .insert((namespace.to_owned(), name.to_owned()), Arc::new(s));
    }
}

impl ObjectSource for FakeObjects {
    fn config_map<'a>(
        &'a self,
        pod_uid: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<ConfigMap>>, AgentError>> {
        let mut st = self.state();
        st.readers.insert(pod_uid.to_owned());
        let out = st
            .config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned();
        Box::pin(async move { Ok(out) })
    }

    fn secret<'a>(
        &'a self,
        pod_uid: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Secret>>, AgentError>> {
        let mut st = self.state();
        st.readers.insert(pod_uid.to_owned());
        let out = st
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned();
        Box::pin(async move { Ok(out) })
    }

    fn services<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Arc<Service>>, AgentError>> {
        let out = self
            .state()
            .services
            .iter()
            .filter(|s| {
                let ns = s.metadata.namespace.as_deref();
                ns == Some(namespace)
                    || (ns == Some("default") && s.metadata.name.as_deref() == Some("kubernetes"))
            })
            .cloned()
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn release(&self, pod_uid: &str) {
        self.state().readers.remove(pod_uid);
    }
}
