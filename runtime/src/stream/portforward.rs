//! Port-forward, the kubelet's `portforward.k8s.io` protocol over SPDY (reached directly by
//! kubectl before 1.31, or tunnelled through WebSocket as `SPDY/3.1+portforward.k8s.io`). For
//! each local connection the client opens two streams with the same `requestID` and `port`
//! headers: `error` and `data`. Once both are there the server connects to that port on
//! localhost inside the pod's network namespace and copies bytes between the connection and the
//! data stream; a failure is written to the error stream as text. When one direction ends the
//! other gets a second to finish (containerd's rule), then both streams are closed.
//!
//! The kubelet's older WebSocket protocol (`v4.channel.k8s.io`, what the Python client and
//! kube-rs speak) is served too: the ports come from the query, port `i` gets data channel `2i`
//! and error channel `2i+1`, each opened by the server with the port number (two bytes,
//! little-endian), and one connection is forwarded per port.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{Incoming, Outgoing};

/// The stream protocol named in `X-Stream-Protocol-Version`.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol under which kubectl 1.31+ tunnels it.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// Every WebSocket subprotocol port-forward is served in, most preferred first.
pub fn websocket_protocols() -> impl Iterator<Item = &'static str> {
    std::iter::once(TUNNEL_PROTOCOL).chain(WEBSOCKET_PROTOCOLS.iter().copied())
}

/// The WebSocket subprotocols of the kubelet's channel-based port-forward (no subprotocol at
/// all is served as the first binary one).
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// How long a connection to the pod's port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// After one direction ended, how long the other may still run.
const LINGER: Duration = Duration::from_secs(1);
/// Half-open pairs (one of the two streams) one client may leave waiting.
const MAX_PENDING: usize = 1024;

/// Opens TCP connections to a port on localhost inside a network namespace.
pub trait PortDialer: Send + Sync {
    /// `netns` is the sandbox's network namespace file; `None` is the host's (hostNetwork pods).
    fn dial(
        &self,
        netns: Option<PathBuf>,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>;
}

/// The real dialer: a short-lived thread enters the namespace (setns only changes the calling
/// thread, and that thread ends with the call) and connects; the socket stays in the
/// namespace it was made in.
#[derive(Debug, Default)]
pub struct NetnsDialer;

impl PortDialer for NetnsDialer {
    fn dial(
        &self,
        netns: Option<PathBuf>,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("port-forward-dial".into())
                .spawn(move || {
                    let _ = tx.send(connect_in(netns, port));
                })?;
            let stream = rx.await.map_err(std::io::Error::other)??;
            stream.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(stream)
        })
    }
}

fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(&ns)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("enter {}: {e}", ns.display())))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT).or_else(|e4| {
        std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT)
            .map_err(|e6| std::io::Error::new(e4.kind(), format!("IPv4: {e4}; IPv6: {e6}")))
    })
}

/// Where forwarded connections go.
#[derive(Clone)]
pub struct Target {
    /// For messages: the pod sandbox's id.
    pub sandbox_id: String,
    pub netns: Option<PathBuf>,
    pub dialer: Arc<dyn PortDialer>,
}

#[derive(Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
}

/// Serves one port-forward connection until the client closes it.
pub async fn serve(mut streams: mpsc::Receiver<Incoming>, out: Outgoing, target: Target) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    while let Some(s) = streams.recv().await {
        let Some(request) = s.header("requestid").map(str::to_owned) else {
            tracing::debug!(id = s.id, "port-forward stream without a requestID");
            out.reset(s.id).await;
            continue;
        };
        if !pending.contains_key(&request) && pending.len() >= MAX_PENDING {
            out.reset(s.id).await;
            continue;
        }
        let pair = pending.entry(request.clone()).or_default();
        match s.header("streamtype") {
            Some("error") if pair.error.is_none() => pair.error = Some(s),
            Some("data") if pair.data.is_none() => pair.data = Some(s),
            other => {
                tracing::debug!(id = s.id, kind = ?other, "unexpected port-forward stream");
                out.reset(s.id).await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pending.remove(&request)
            else {
                continue;
            };
            tokio::spawn(forward(out.clone(), error, data, target.clone()));
        }
    }
}

async fn forward(out: Outgoing, error: Incoming, mut data: Incoming, target: Target) {
    let port = data.header("port").unwrap_or_default().to_owned();
    let failure = match port.parse::<u16>() {
        Ok(p) if p > 0 => match target.dialer.dial(target.netns.clone(), p).await {
            Ok(tcp) => {
                copy(&out, &mut data, tcp).await;
                None
            }
            Err(e) => Some(format!(
                "error forwarding port {p} to pod sandbox {}: failed to connect to localhost:{p} \
                 inside the pod's network namespace: {e}",
                target.sandbox_id
            )),
        },
        _ => Some(format!(
            "invalid port {port:?}: want a number from 1 to 65535"
        )),
    };
    if let Some(msg) = failure {
        tracing::debug!(error = %msg, "port-forward failed");
        out.data(error.id, msg.as_bytes()).await;
    }
    out.finish(data.id).await;
    out.finish(error.id).await;
}

async fn copy(out: &Outgoing, data: &mut Incoming, tcp: tokio::net::TcpStream) {
    let (mut rd, mut wr) = tcp.into_split();
    let id = data.id;
    let up = async {
        while let Some(chunk) = data.data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || !out.data(id, &buf[..n]).await {
                break;
            }
        }
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(LINGER, &mut down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(LINGER, &mut up).await; }
    }
}

/// Serves the channel-based WebSocket protocol for `ports` until the client leaves or every
/// forwarded connection has ended.
pub async fn serve_websocket<I, O>(mut incoming: I, outgoing: &mut O, ports: &[u16], target: Target)
where
    I: futures::Stream<Item = Vec<u8>> + Unpin,
    O: futures::Sink<Vec<u8>> + Unpin,
{
    use futures::{SinkExt, StreamExt};
    let channel = |i: usize, error: bool| (2 * i + usize::from(error)) as u8;
    for (i, port) in ports.iter().enumerate() {
        for error in [false, true] {
            let mut first = vec![channel(i, error)];
            first.extend_from_slice(&port.to_le_bytes());
            if outgoing.send(first).await.is_err() {
                return;
            }
        }
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let mut writers = HashMap::new();
    for (i, &port) in ports.iter().enumerate() {
        match target.dialer.dial(target.netns.clone(), port).await {
            Ok(tcp) => {
                let (mut rd, wr) = tcp.into_split();
                writers.insert(channel(i, false), wr);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = rd.read(&mut buf[1..]).await {
                        if n == 0 {
                            break;
                        }
                        buf[0] = channel(i, false);
                        if tx.send(buf[..=n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => {
                let mut msg = vec![channel(i, true)];
                msg.extend_from_slice(
                    format!(
                        "error forwarding port {port} to pod sandbox {}: failed to connect to \
                         localhost:{port} inside the pod's network namespace: {e}",
                        target.sandbox_id
                    )
                    .as_bytes(),
                );
                let _ = tx.send(msg).await;
            }
        }
    }
    drop(tx);
    loop {
        tokio::select! {
            msg = incoming.next() => match msg {
                Some(msg) => {
                    let Some((&ch, data)) = msg.split_first() else {
                        continue;
                    };
                    if let Some(w) = writers.get_mut(&ch) {
                        if w.write_all(data).await.is_err() {
                            writers.remove(&ch);
                        }
                    } else if ch % 2 == 1 && usize::from(ch / 2) < ports.len() {
                        // Error channels are the server's to write: a client that writes on
                        // one loses that port's connection, with the reason, and nothing else.
                        let port = ports[usize::from(ch / 2)];
                        writers.remove(&(ch - 1));
                        let mut err = vec![ch];
                        err.extend_from_slice(
                            format!("port {port}: the client wrote on the error channel {ch}; the connection to the port is closed").as_bytes(),
                        );
                        if outgoing.send(err).await.is_err() {
                            return;
                        }
                    } else {
                        tracing::debug!(channel = ch, "port-forward data on a channel of no port");
                    }
                }
                None => return,
            },
            out = rx.recv() => match out {
                Some(msg) => {
                    if outgoing.send(msg).await.is_err() {
                        return;
                    }
                }
                // Every connection to the pod ended: so does the session.
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::spdy::{Decoder, Encoder, Frame, serve as spdy_serve};
    use super::*;

    /// Dials a fixed local address, whatever namespace and port are asked for; records the port.
    struct LocalDialer {
        addr: SocketAddr,
        asked: std::sync::Mutex<Vec<u16>>,
    }

    impl PortDialer for LocalDialer {
        fn dial(
            &self,
            _: Option<PathBuf>,
            port: u16,
        ) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
            self.asked.lock().expect("lock").push(port);
            let addr = self.addr;
            Box::pin(async move {
                if port == 1 {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                }
                tokio::net::TcpStream::connect(addr).await
            })
        }
    }

    fn syn(id: u32, kind: &str, port: &str, request: &str) -> Frame {
        Frame::SynStream {
            id,
            fin: false,
            headers: vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.into()),
                ("requestid".into(), request.into()),
            ],
        }
    }

    /// A dialer to a local server that answers every read with `echo:` and what it read.
    async fn echo_dialer() -> Arc<LocalDialer> {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    while let Ok(n) = c.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let mut answer = b"echo:".to_vec();
                        answer.extend_from_slice(&buf[..n]);
                        if c.write_all(&answer).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Arc::new(LocalDialer {
            addr,
            asked: Default::default(),
        })
    }

    /// Runs a port-forward server over an in-memory pipe; sends `frames`, returns every frame
    /// the server sent until it had nothing more for a while.
    async fn exchange(frames: Vec<Frame>) -> (Vec<Frame>, Vec<u16>) {
        let dialer = echo_dialer().await;
        let (client, server) = tokio::io::duplex(1 << 16);
        let (streams, out) = spdy_serve(server);
        let target = Target {
            sandbox_id: "sb1".into(),
            netns: None,
            dialer: dialer.clone(),
        };
        tokio::spawn(serve(streams, out, target));
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = Encoder::default();
        let mut wire = Vec::new();
        for f in &frames {
            enc.encode(f, &mut wire);
        }
        cw.write_all(&wire).await.expect("write");
        let mut dec = Decoder::default();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1500), cr.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            dec.push(&buf[..n]);
            while let Some(f) = dec.next_frame().expect("decode") {
                got.push(f);
            }
        }
        let asked = dialer.asked.lock().expect("lock").clone();
        (got, asked)
    }

    fn data_on(frames: &[Frame], stream: u32) -> (Vec<u8>, bool) {
        let mut bytes = Vec::new();
        let mut fin = false;
        for f in frames {
            if let Frame::Data { id, fin: f, data } = f
                && *id == stream
            {
                bytes.extend_from_slice(data);
                fin |= *f;
            }
        }
        (bytes, fin)
    }

    #[tokio::test]
    async fn a_pair_of_streams_is_forwarded_to_the_port() {
        let (got, asked) = exchange(vec![
            syn(1, "error", "8080", "0"),
            syn(3, "data", "8080", "0"),
            Frame::Data {
                id: 3,
                fin: true,
                data: b"ping".to_vec(),
            },
        ])
        .await;
        assert_eq!(asked, vec![8080]);
        assert_eq!(data_on(&got, 3), (b"echo:ping".to_vec(), true));
        assert_eq!(data_on(&got, 1), (Vec::new(), true), "no error, then FIN");
    }

    #[tokio::test]
    async fn failures_are_written_to_the_error_stream() {
        let (got, _) = exchange(vec![
            syn(1, "error", "1", "0"),
            syn(3, "data", "1", "0"),
            syn(5, "error", "http", "1"),
            syn(7, "data", "http", "1"),
        ])
        .await;
        let (refused, fin) = data_on(&got, 1);
        let refused = String::from_utf8_lossy(&refused);
        assert!(fin && refused.contains("localhost:1"), "{refused}");
        let (bad, _) = data_on(&got, 5);
        assert!(
            String::from_utf8_lossy(&bad).contains("invalid port \"http\""),
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }

    #[tokio::test]
    async fn streams_without_a_request_id_or_of_an_unknown_type_are_reset() {
        let (got, asked) = exchange(vec![
            Frame::SynStream {
                id: 1,
                fin: false,
                headers: vec![("streamtype".into(), "data".into())],
            },
            syn(3, "stdin", "80", "0"),
        ])
        .await;
        assert!(asked.is_empty());
        for id in [1, 3] {
            assert!(
                got.contains(&Frame::RstStream { id, status: 1 }),
                "{id}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_websocket_protocol_numbers_channels_by_port() {
        use futures::{SinkExt, StreamExt};
        let dialer = echo_dialer().await;
        let target = Target {
            sandbox_id: "sb1".into(),
            netns: None,
            dialer: dialer.clone(),
        };
        let (mut client_tx, client_rx) = futures::channel::mpsc::channel::<Vec<u8>>(8);
        let (mut server_tx, mut server_rx) = futures::channel::mpsc::channel::<Vec<u8>>(8);
        let session = tokio::spawn(async move {
            serve_websocket(client_rx, &mut server_tx, &[8080, 1], target).await;
        });
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(server_rx.next().await.expect("a message"));
        }
        // Each channel opens with its port, little-endian; port 1 is refused on channel 3.
        assert_eq!(
            &got[..4],
            &[
                vec![0, 0x90, 0x1f],
                vec![1, 0x90, 0x1f],
                vec![2, 1, 0],
                vec![3, 1, 0]
            ]
        );
        assert_eq!(got[4][0], 3);
        assert!(String::from_utf8_lossy(&got[4]).contains("localhost:1"));
        client_tx.send(b"\x00hello".to_vec()).await.expect("send");
        assert_eq!(
            server_rx.next().await.expect("the echo"),
            b"\x00echo:hello".to_vec()
        );
        assert_eq!(*dialer.asked.lock().expect("lock"), vec![8080, 1]);
        // A frame on port 8080's error channel closes that port's connection with the reason;
        // data sent to it afterwards goes nowhere (and with no connection left, the session
        // ends).
        client_tx.send(b"\x01bad".to_vec()).await.expect("send");
        let err = server_rx.next().await.expect("the error");
        assert_eq!(err[0], 1);
        assert!(
            String::from_utf8_lossy(&err).contains("error channel"),
            "{err:?}"
        );
        client_tx.send(b"\x00more".to_vec()).await.expect("send");
        client_tx.send(b"\x09nowhere".to_vec()).await.expect("send");
        let quiet = tokio::time::timeout(Duration::from_millis(200), server_rx.next()).await;
        assert!(
            !matches!(quiet, Ok(Some(_))),
            "the closed port still answered: {quiet:?}"
        );
        drop(client_tx);
        session.await.expect("the session ends with its client");
    }
}
