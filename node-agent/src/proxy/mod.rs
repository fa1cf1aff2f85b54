//! The node's service proxy (kube-proxy's job, in every node agent): watches Services and
//! EndpointSlices and keeps the node's nftables table `ip skiff-proxy` so that connections to
//! a cluster IP, an external IP, a load balancer address or a node port reach a ready endpoint
//! in the kernel (`rules.rs` has the layout, `model.rs` what is programmed). Each change is
//! applied as one atomic nftables transaction of only what differs from the kernel's table,
//! through netlink (`Dataplane`; the real one is `NftDataplane`). The rules stay when the
//! agent stops, as kube-proxy's do, so connections keep working across a restart.

pub mod model;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use model::ServicePort;
pub use rules::Options;

/// Where the kernel's rules are written. The real one is nftables over netlink; unit tests
/// record what they are given.
pub trait Dataplane: Send + Sync + 'static {
    /// Makes the kernel's table match `ports`; returns how many changes it made.
    fn sync<'a>(
        &'a self,
        ports: &'a [ServicePort],
        opts: Options,
    ) -> BoxFuture<'a, Result<usize, AgentError>>;
}

/// nftables through netlink (NETLINK_NETFILTER), in the agent's network namespace.
#[derive(Default)]
pub struct NftDataplane {
    conn: Mutex<Option<nlink::Connection<nlink::Nftables>>>,
}

impl Dataplane for NftDataplane {
    fn sync<'a>(
        &'a self,
        ports: &'a [ServicePort],
        opts: Options,
    ) -> BoxFuture<'a, Result<usize, AgentError>> {
        Box::pin(async move {
            let mut conn = self.conn.lock().await;
            if conn.is_none() {
                *conn = Some(
                    nlink::Connection::<nlink::Nftables>::new()
                        .map_err(|source| AgentError::Proxy { source })?,
                );
            }
            let Some(conn) = conn.as_ref() else {
                unreachable!("connected above")
            };
            let config = rules::ruleset(ports, opts);
            let diff = config
                .diff(conn)
                .await
                .map_err(|source| AgentError::Proxy { source })?;
            let changes = diff.change_count();
            if changes > 0 {
                diff.apply(conn)
                    .await
                    .map_err(|source| AgentError::Proxy { source })?;
            }
            Ok(changes)
        })
    }
}

/// The options this node's network needs: without `br_netfilter` (bridged packets skip the IP
/// hooks), every service connection is masqueraded, or replies between pods on one bridge
/// would miss the reverse DNAT.
pub fn host_options() -> Options {
    let bridged = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|v| v.trim() == "1");
    if !bridged {
        tracing::warn!(
            "br_netfilter is not active (/proc/sys/net/bridge/bridge-nf-call-iptables is not 1): every connection to a Service is masqueraded, so pods see the node's address instead of their clients'; `modprobe br_netfilter` keeps client addresses"
        );
    }
    Options {
        masquerade_all: !bridged,
    }
}

/// How long changes are gathered before a sync: a rollout changes many slices at once.
const SETTLE: Duration = Duration::from_millis(10);
/// A full re-sync this often repairs what someone else changed in the table.
const RESYNC: Duration = Duration::from_secs(60);

/// Runs a reflector of `api` into a store, signalling `changed` on every event and `listed`
/// once the first list is in.
fn reflect<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    cancel: CancellationToken,
) -> (Store<K>, tokio::sync::watch::Receiver<bool>)
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
    let (listed_tx, listed_rx) = tokio::sync::watch::channel(false);
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
                Some(Ok(watcher::Event::InitDone)) => {
                    listed_tx.send_replace(true);
                    changed.notify_one();
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => changed.notify_one(),
                Some(Err(e)) => tracing::debug!(error = %e, "proxy watch error"),
            }
        }
    });
    (reader, listed_rx)
}

/// Keeps the node's service rules until `cancel`.
pub async fn run<D: Dataplane>(
    client: kube::Client,
    node: String,
    dataplane: Arc<D>,
    opts: Options,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let changed = Arc::new(Notify::new());
    let (services, mut services_listed) = reflect(
        Api::<Service>::all(client.clone()),
        changed.clone(),
        cancel.clone(),
    );
    let (slices, mut slices_listed) = reflect(
        Api::<EndpointSlice>::all(client),
        changed.clone(),
        cancel.clone(),
    );
    // Never program from a half-read cluster: that would drop every other service's rules.
    tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = async {
            services_listed.wait_for(|l| *l).await?;
            slices_listed.wait_for(|l| *l).await.map(|_| ())
        } => if r.is_err() { return Ok(()) },
    }
    let mut failures = 0u32;
    loop {
        let svcs = services.state();
        let eps = slices.state();
        let ports = model::service_ports(
            svcs.iter().map(AsRef::as_ref),
            eps.iter().map(AsRef::as_ref),
            &node,
        );
        let started = std::time::Instant::now();
        let retry = match dataplane.sync(&ports, opts).await {
            Ok(changes) => {
                failures = 0;
                if changes > 0 {
                    tracing::debug!(ports = ports.len(), changes, took = ?started.elapsed(), "service rules synced");
                }
                None
            }
            Err(e) => {
                failures += 1;
                let delay = Duration::from_secs(1 << failures.min(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot program service rules");
                Some(delay)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = changed.notified() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(retry.unwrap_or(RESYNC)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
