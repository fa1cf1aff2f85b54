//! The API load balancer of a cluster with several control-plane members, as kind's
//! `NAME-external-load-balancer` (an haproxy) is: a TCP forwarder on its own address on the
//! cluster's bridge, which the cluster's kubeconfig and every node agent name, so that losing
//! one member loses neither kubectl nor the nodes. Each connection goes to the next member in
//! turn that is up; a member that refuses a connection, or fails the check made every
//! [`CHECK_EVERY`], is passed over until it answers again. Bytes are copied as they are: TLS,
//! once the API has it, ends at the members.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::ClusterError;

/// How often every member is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a connection to a member may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a member that failed is passed over, unless a check finds it up sooner.
const DOWN_FOR: Duration = Duration::from_secs(10);

/// The members, with when each may be tried again after failing.
struct Members {
    addrs: Vec<SocketAddr>,
    down_until: std::sync::Mutex<Vec<Option<Instant>>>,
    next: AtomicUsize,
}

impl Members {
    fn new(addrs: Vec<SocketAddr>) -> Self {
        let n = addrs.len();
        Members {
            addrs,
            down_until: std::sync::Mutex::new(vec![None; n]),
            next: AtomicUsize::new(0),
        }
    }

    fn mark(&self, i: usize, up: bool) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i] = (!up).then(|| Instant::now() + DOWN_FOR);
    }

    /// The members to try for a new connection: those up, starting with the next in turn,
    /// then those down (a member may be back before its check says so).
    fn order(&self) -> Vec<usize> {
        let n = self.addrs.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        let (mut up, mut rest): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|k| (start + k) % n.max(1))
            .partition(|&i| down[i].is_none_or(|t| t <= now));
        up.append(&mut rest);
        up
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{addr} did not answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Forwards one client connection to the first member that takes it.
async fn forward(members: &Members, mut client: TcpStream, from: SocketAddr) {
    for i in members.order() {
        let addr = members.addrs[i];
        match connect(addr).await {
            Ok(mut upstream) => {
                members.mark(i, true);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(client = %from, member = %addr, error = %e, "connection ended");
                }
                return;
            }
            Err(e) => {
                tracing::info!(member = %addr, error = %e, "member unreachable; trying the next");
                members.mark(i, false);
            }
        }
    }
    tracing::warn!(client = %from, "no control-plane member answers");
}

/// Serves on `listener` until `cancel`, forwarding to `members`.
pub async fn serve(
    listener: TcpListener,
    members: Vec<SocketAddr>,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let members = Arc::new(Members::new(members));
    let checker = {
        let (members, cancel) = (members.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                for (i, addr) in members.addrs.iter().enumerate() {
                    members.mark(i, connect(*addr).await.is_ok());
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
            }
        })
    };
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, members = ?members.addrs, "API load balancer serving");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((client, from)) => {
                    let members = members.clone();
                    tokio::spawn(async move { forward(&members, client, from).await });
                }
                Err(e) => {
                    // Out of descriptors, say: a pause, not the end.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    checker.abort();
    Ok(())
}

/// Binds `listen` and serves until `cancel`.
pub async fn run(
    listen: SocketAddr,
    members: Vec<SocketAddr>,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ClusterError::Listen {
            addr: listen,
            source,
        })?;
    serve(listener, members, cancel).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A member that answers every connection with its name.
    async fn member(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        (addr, task)
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn connections_take_turns_and_pass_over_a_member_that_is_gone() {
        let (a, _ta) = member("a").await;
        let (b, tb) = member("b").await;
        // A member that was never there: its port is closed.
        let gone = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let lb = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, vec![a, gone, b], cancel.clone()));
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(ask(lb).await);
        }
        seen.sort();
        assert_eq!(
            seen,
            ["a", "a", "b", "b"],
            "every answer from a live member"
        );
        // b stops: everything goes to a.
        tb.abort();
        let _ = tb.await;
        for _ in 0..3 {
            assert_eq!(ask(lb).await, "a");
        }
        cancel.cancel();
        server.await.expect("join").expect("serve");
    }

    #[test]
    fn order_puts_members_that_are_down_last() {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let m = Members::new(addrs);
        assert_eq!(m.order(), [0, 1, 2]);
        assert_eq!(m.order(), [1, 2, 0]);
        m.mark(2, false);
        assert_eq!(m.order(), [0, 1, 2]);
        assert_eq!(m.order(), [0, 1, 2], "2 is down: last whatever the turn");
        m.mark(2, true);
        assert_eq!(m.order(), [1, 2, 0]);
    }
}
