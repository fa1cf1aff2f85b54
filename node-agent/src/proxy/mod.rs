//! The node's service proxy (kube-proxy's job, in every node agent): watches Services and
//! EndpointSlices and keeps the node's nftables table `ip skiff-proxy` so that connections to
//! a cluster IP, an external IP, a load balancer address or a node port reach a ready endpoint
//! in the kernel (`rules.rs` has the layout and plans the changes, `model.rs` says what is
//! programmed). Each sync is one atomic nftables transaction over netlink of only the service
//! ports that changed since the last (`Dataplane`; the real one is `NftDataplane`). The rules
//! stay when the agent stops, as kube-proxy's do, so connections keep working across a
//! restart; a new agent replaces the table in one transaction.

pub mod conntrack;
pub mod model;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::AgentError;
use crate::services::ServiceView;
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

/// nftables through netlink (NETLINK_NETFILTER), in the agent's network namespace. It keeps
/// what it last committed, so each sync sends only what changed ([`rules::plan`]).
#[derive(Default)]
pub struct NftDataplane {
    state: Mutex<NftState>,
}

#[derive(Default)]
struct NftState {
    conn: Option<nlink::Connection<nlink::Nftables>>,
    /// What the table holds; `None` until the first commit and after a failed one, when the
    /// next sync replaces the whole table.
    programmed: Option<rules::Programmed>,
}

/// Set elements per netlink message: the elements of one message are one attribute, which
/// cannot exceed 64 KiB (a cluster IP's element is about 70 bytes).
const ELEMENTS_PER_MESSAGE: usize = 256;

fn transaction(
    mut tx: nlink::netlink::nftables::Transaction,
    ops: Vec<rules::Op>,
) -> nlink::netlink::nftables::Transaction {
    use nlink::netlink::nftables::Family;
    use rules::{Op, TABLE};
    for op in ops {
        tx = match op {
            Op::DeleteTable => tx.del_table(TABLE, Family::Ip),
            Op::AddTable => tx.add_table(TABLE, Family::Ip),
            Op::AddChain(name, base) => tx.add_chain(rules::new_chain(&name, base.as_ref())),
            Op::DeleteChain(name) => tx.del_chain(TABLE, &name, Family::Ip),
            Op::FlushChain(name) => tx.flush_chain(TABLE, &name, Family::Ip),
            Op::AddRule(_, rule) => tx.add_rule(rule),
            Op::AddSet(set) => tx.add_set(set),
            Op::DeleteSet(name) => tx.del_set(TABLE, &name, Family::Ip),
            Op::AddElements(set, elements) => elements
                .chunks(ELEMENTS_PER_MESSAGE)
                .fold(tx, |tx, chunk| tx.add_set_elements(&set, chunk)),
            Op::DeleteElements(set, elements) => elements
                .chunks(ELEMENTS_PER_MESSAGE)
                .fold(tx, |tx, chunk| tx.del_set_elements(&set, chunk)),
        };
    }
    tx
}

impl Dataplane for NftDataplane {
    fn sync<'a>(
        &'a self,
        ports: &'a [ServicePort],
        opts: Options,
    ) -> BoxFuture<'a, Result<usize, AgentError>> {
        Box::pin(async move {
            let proxy = |source| AgentError::Proxy { source };
            let mut state = self.state.lock().await;
            if state.conn.is_none() {
                let c = nlink::Connection::<nlink::Nftables>::new().map_err(proxy)?;
                raise_send_buffer(&c);
                state.conn = Some(c);
            }
            let NftState { conn, programmed } = &mut *state;
            let Some(conn) = conn.as_ref() else {
                unreachable!("connected above")
            };
            let next = rules::Programmed::of(ports, opts);
            if programmed.as_ref() == Some(&next) {
                return Ok(0);
            }
            let table_exists = match programmed {
                Some(_) => true,
                None => conn
                    .list_tables_in(nlink::netlink::nftables::Family::Ip)
                    .await
                    .map_err(proxy)?
                    .iter()
                    .any(|t| t.name == rules::TABLE),
            };
            let ops = rules::plan(programmed.as_ref(), &next, table_exists);
            let count = ops.len();
            let committed = transaction(conn.transaction(), ops).commit(conn).await;
            match committed {
                Ok(()) => {
                    *programmed = Some(next);
                    Ok(count)
                }
                Err(source) => {
                    // The kernel's table is not known any more: replace it next time.
                    *programmed = None;
                    Err(proxy(source))
                }
            }
        })
    }
}

/// Removes the service rules' table from the node (`skiff down`); whether it was there.
pub async fn remove_table() -> Result<bool, AgentError> {
    let proxy = |source| AgentError::Proxy { source };
    let conn = nlink::Connection::<nlink::Nftables>::new().map_err(proxy)?;
    conn.del_table_if_exists(rules::TABLE, nlink::netlink::nftables::Family::Ip)
        .await
        .map_err(proxy)
}

/// A whole table is one batch in one netlink message, which the kernel refuses (EMSGSIZE) when
/// it is larger than the socket's send buffer: with a thousand services it is megabytes, so the
/// buffer is raised as `nft` raises its own (SO_SNDBUFFORCE, past `wmem_max`, needs
/// CAP_NET_ADMIN, which writing nftables needs anyway).
fn raise_send_buffer(conn: &nlink::Connection<nlink::Nftables>) {
    use nix::sys::socket::{setsockopt, sockopt};
    const SEND_BUFFER: usize = 64 << 20;
    if let Err(e) = setsockopt(conn.socket(), sockopt::SndBufForce, &SEND_BUFFER) {
        tracing::warn!(error = %e, "cannot raise the nftables socket's send buffer: large rule changes may be refused");
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
/// How often a sync runs with no change (it sends nothing when nothing changed).
const RESYNC: Duration = Duration::from_secs(60);

/// Keeps the node's service rules until `cancel`, and clears the UDP flows their changes left
/// stale (`conntrack`). Ports at `skip` (the cluster DNS address, which every node answers
/// itself) are left out.
pub async fn run<D: Dataplane, K: conntrack::Conntrack>(
    view: ServiceView,
    node: String,
    (dataplane, tracked): (Arc<D>, Arc<K>),
    opts: Options,
    skip: Option<std::net::Ipv4Addr>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let mut changes = view.changes();
    tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        listed = view.wait_listed() => if !listed { return Ok(()) },
    }
    let mut failures = 0u32;
    // The UDP ports whose stale flows were last cleared.
    let mut cleared = conntrack::UdpFrontends::default();
    loop {
        changes.mark_unchanged();
        let svcs = view.services.state();
        let eps = view.slices.state();
        let mut ports = model::service_ports(
            svcs.iter().map(AsRef::as_ref),
            eps.iter().map(AsRef::as_ref),
            &node,
        );
        ports.retain(|p| Some(p.cluster_ip) != skip);
        let started = std::time::Instant::now();
        let retry = match dataplane.sync(&ports, opts).await {
            Ok(ops) => {
                failures = 0;
                if ops > 0 {
                    tracing::debug!(ports = ports.len(), ops, took = ?started.elapsed(), "service rules synced");
                }
                let udp = conntrack::UdpFrontends::of(&ports);
                if udp != cleared {
                    let node_ips = conntrack::node_addresses();
                    match conntrack::clear_stale(&*tracked, &cleared, &udp, &node_ips).await {
                        Ok(n) => {
                            if n > 0 {
                                tracing::debug!(flows = n, "stale UDP flows cleared");
                            }
                            cleared = udp;
                        }
                        // Tried again on the next change or resync.
                        Err(e) => tracing::warn!(error = %e, "cannot clear stale UDP flows"),
                    }
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
            r = changes.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                tokio::time::sleep(SETTLE).await;
            }
            _ = tokio::time::sleep(retry.unwrap_or(RESYNC)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
