//! The cluster's Services and EndpointSlices, watched once per node for the service proxy,
//! the cluster DNS server and pods' Service environment variables: two reflector stores, whether both have listed, and a counter
//! every change bumps, which each consumer waits on.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy and DNS read; cheap to clone.
#[derive(Clone)]
pub struct ServiceView {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    listed: [watch::Receiver<bool>; 2],
    changes: watch::Receiver<u64>,
}

impl ServiceView {
    /// Starts both watches; they run until `cancel`.
    pub fn start(client: &kube::Client, cancel: &CancellationToken) -> Self {
        let (tx, changes) = watch::channel(0u64);
        let tx = std::sync::Arc::new(tx);
        let (services, s_listed) = reflect(Api::all(client.clone()), tx.clone(), cancel.clone());
        let (slices, e_listed) = reflect(Api::all(client.clone()), tx, cancel.clone());
        Self {
            services,
            slices,
            listed: [s_listed, e_listed],
            changes,
        }
    }

    /// Waits until both have listed once (a half-read cluster must not be programmed: it
    /// would drop every other Service); `false` if the watches ended first.
    pub async fn wait_listed(&self) -> bool {
        for l in &self.listed {
            if l.clone().wait_for(|l| *l).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits until the Services have listed once (what Service environment variables need),
    /// at most `limit`; `false` if they did not.
    pub async fn wait_services_listed(&self, limit: std::time::Duration) -> bool {
        let mut listed = self.listed[0].clone();
        matches!(
            tokio::time::timeout(limit, listed.wait_for(|l| *l)).await,
            Ok(Ok(_))
        )
    }

    /// A receiver that sees every later change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// A reflector of every `K`, bumping `changed` at each change; the receiver turns true once
/// it has listed.
pub(crate) fn reflect<K>(
    api: Api<K>,
    changed: std::sync::Arc<watch::Sender<u64>>,
    cancel: CancellationToken,
) -> (Store<K>, watch::Receiver<bool>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let (listed_tx, listed_rx) = watch::channel(false);
    let stream = reflector::reflector(writer, watcher(api, Default::default()).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                // The reflector yields an event once its store holds it.
                Some(Ok(watcher::Event::InitDone)) => {
                    listed_tx.send_replace(true);
                    changed.send_modify(|n| *n += 1);
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => changed.send_modify(|n| *n += 1),
                Some(Err(e)) => tracing::debug!(error = %e, "service watch error"),
            }
        }
    });
    (reader, listed_rx)
}
