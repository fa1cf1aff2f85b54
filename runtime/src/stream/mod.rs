//! The runtime's streaming server, the role of the kubelet's / containerd's CRI streaming
//! server: Exec, Attach and PortForward over CRI only register a request and answer with a
//! one-time URL (`http://127.0.0.1:<port>/exec/<token>`); the node agent then proxies the
//! client's upgraded connection there. Exec and attach speak Kubernetes' remote command
//! protocol over WebSocket ([`protocol`], kubectl 1.30+) or over SPDY/3.1 ([`channels`], older
//! clients); port-forward speaks `portforward.k8s.io` over SPDY ([`portforward`]), upgraded to
//! directly or tunnelled through WebSocket. Tokens are random, single-use and expire after a
//! minute, as the kubelet's are; the server listens on loopback only.

pub mod channels;
pub mod exec;
pub mod portforward;
pub mod protocol;
pub mod spdy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncSeekExt;
use tokio_util::sync::CancellationToken;

use self::exec::{ExecSpawner, ExecSpec, Wanted};
use self::portforward::PortDialer;
use self::protocol::{Framing, Version};
use crate::error::{Result, RuntimeError};

/// How long a URL handed out by Exec, Attach or PortForward stays valid.
const TOKEN_TTL: Duration = Duration::from_secs(60);

/// A request waiting for its client to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec {
        spec: ExecSpec,
        stdout: bool,
        stderr: bool,
    },
    /// Attach to a container's output (read from its CRI log, which its monitor owns).
    Attach {
        log_path: PathBuf,
        container_id: String,
        stdout: bool,
        stderr: bool,
        tty: bool,
    },
    /// Forward connections to ports of a sandbox.
    PortForward {
        sandbox_id: String,
        /// The sandbox's network namespace; `None` for hostNetwork.
        netns: Option<PathBuf>,
        /// The ports the request named: what the WebSocket protocol forwards (over SPDY, each
        /// stream names its own).
        ports: Vec<u16>,
    },
}

impl StreamRequest {
    fn path(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

/// Whether a container is still running, for attach streams to know when to end.
pub type RunningCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Pending requests by token, and the base URL they are served under.
pub struct Streams {
    base: String,
    pending: Mutex<HashMap<String, (StreamRequest, Instant)>>,
}

impl Streams {
    /// `base` is the server's root URL, e.g. `http://127.0.0.1:40123`.
    pub fn new(base: String) -> Self {
        Streams {
            base,
            pending: Mutex::default(),
        }
    }

    /// Registers `req` and returns the URL its client must connect to.
    pub fn register(&self, req: StreamRequest) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("{}/{}/{token}", self.base, req.path());
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        pending.insert(token, (req, now));
        url
    }

    /// Takes the request for `token` if it is known, fresh and of `kind`.
    fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (req, at) = pending.remove(token)?;
        (at.elapsed() < TOKEN_TTL && req.path() == kind).then_some(req)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct StreamState {
    pub streams: Arc<Streams>,
    pub spawner: Arc<dyn ExecSpawner>,
    pub running: RunningCheck,
    pub dialer: Arc<dyn PortDialer>,
}

/// The streaming routes.
pub fn router(state: StreamState) -> Router {
    Router::new()
        .route("/{kind}/{token}", any(stream))
        .with_state(state)
}

/// Serves `router` on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: StreamState,
    cancel: CancellationToken,
) -> Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(|e| RuntimeError::Serve {
            path: PathBuf::from(addr.map(|a| a.to_string()).unwrap_or_default()),
            message: e.to_string(),
        })
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// The answer to a request that is neither a WebSocket nor a SPDY/3.1 upgrade.
pub const NOT_AN_UPGRADE: &str = "skiff's streaming server needs an upgrade to WebSocket \
     (v5.channel.k8s.io, v4.channel.k8s.io or SPDY/3.1+portforward.k8s.io) or to SPDY/3.1 \
     (v4.channel.k8s.io, portforward.k8s.io)";

async fn stream(
    State(st): State<StreamState>,
    Path((kind, token)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade.starts_with("spdy/3.1") {
        return spdy_upgrade(st, &kind, &token, req);
    }
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(_) => return text(StatusCode::BAD_REQUEST, NOT_AN_UPGRADE),
    };
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    drop(parts);
    let Some(request) = st.streams.take(&kind, &token) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown or expired {kind} token"),
        );
    };
    if let StreamRequest::PortForward {
        sandbox_id,
        netns,
        ports,
    } = request
    {
        let ws = ws.protocols(portforward::websocket_protocols());
        let selected = ws
            .selected_protocol()
            .and_then(|p| p.to_str().ok())
            .map(str::to_owned);
        let (tunnelled, framing) = match selected.as_deref() {
            Some(portforward::TUNNEL_PROTOCOL) => (true, Framing::Binary),
            None if !offered.is_empty() => return unsupported(&offered, "portforward"),
            p => {
                let Some((_, framing)) = protocol::negotiate(p.unwrap_or_default()) else {
                    return unsupported(&offered, "portforward");
                };
                if ports.is_empty() {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "port-forward over WebSocket needs the ports in the query (ports=80,8080)",
                    );
                }
                (false, framing)
            }
        };
        let target = portforward::Target {
            sandbox_id,
            netns,
            dialer: st.dialer.clone(),
        };
        return ws.on_upgrade(move |socket| async move {
            if tunnelled {
                let (streams, out) = spdy::serve(tunnel(socket));
                portforward::serve(streams, out, target).await;
            } else {
                let (incoming, mut outgoing) = split(socket, framing);
                portforward::serve_websocket(incoming, &mut outgoing, &ports, target).await;
                close(&mut outgoing).await;
            }
        });
    }
    let ws = ws.protocols(protocol::PROTOCOLS.iter().copied());
    let selected = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_owned);
    if selected.is_none() && !offered.is_empty() {
        return unsupported(&offered, &kind);
    }
    // None asked for: the first version, in binary, as the kubelet serves it.
    let Some((version, framing)) = protocol::negotiate(selected.as_deref().unwrap_or_default())
    else {
        return unsupported(&offered, &kind);
    };
    ws.on_upgrade(move |socket| async move {
        let (mut incoming, mut outgoing) = split(socket, framing);
        session(st, request, version, &mut incoming, &mut outgoing).await;
        close(&mut outgoing).await;
        drain(incoming).await;
    })
}

/// The answer to a WebSocket upgrade that offers no subprotocol this server speaks: 403, as the
/// kubelet's WebSocket handshake refuses it, naming what is served.
fn unsupported(offered: &[String], kind: &str) -> Response {
    let served: Vec<&str> = if kind == "portforward" {
        portforward::websocket_protocols().collect()
    } else {
        protocol::PROTOCOLS.to_vec()
    };
    text(
        StatusCode::FORBIDDEN,
        format!("requested protocol(s) are not supported: {offered:?}; supports {served:?}"),
    )
}

/// How long a finished session keeps reading what its client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Reads and drops what the client still sends after the session ended, for a while: a client
/// in the middle of sending stdin to a command that failed at once then reads the status,
/// instead of having its connection reset under it.
async fn drain(mut incoming: impl futures::Stream<Item = Vec<u8>> + Unpin) {
    let _ = tokio::time::timeout(LINGER, async { while incoming.next().await.is_some() {} }).await;
}

/// Answers a SPDY/3.1 upgrade (kubectl before 1.30, and port-forward before 1.31): negotiates
/// the stream protocol from `X-Stream-Protocol-Version` as the kubelet does, switches protocols
/// and serves the connection.
fn spdy_upgrade(
    st: StreamState,
    kind: &str,
    token: &str,
    mut req: axum::extract::Request,
) -> Response {
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let served = if kind == "portforward" {
        portforward::PROTOCOL
    } else {
        channels::PROTOCOL
    };
    if !offered.iter().any(|p| p == served) {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server supports [{served:?}]"
            ),
        );
    }
    let Some(request) = st.streams.take(kind, token) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown or expired {kind} token"),
        );
    };
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgraded.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "spdy upgrade failed");
                return;
            }
        };
        let (streams, out) = spdy::serve(io);
        let expected = match &request {
            StreamRequest::PortForward {
                sandbox_id, netns, ..
            } => {
                let target = portforward::Target {
                    sandbox_id: sandbox_id.clone(),
                    netns: netns.clone(),
                    dialer: st.dialer.clone(),
                };
                portforward::serve(streams, out, target).await;
                return;
            }
            StreamRequest::Exec {
                spec,
                stdout,
                stderr,
            } => channels::Expected {
                stdin: spec.stdin,
                stdout: *stdout,
                stderr: *stderr,
                tty: spec.tty,
            },
            StreamRequest::Attach {
                stdout,
                stderr,
                tty,
                ..
            } => channels::Expected {
                stdin: false,
                stdout: *stdout,
                stderr: *stderr,
                tty: *tty,
            },
        };
        match channels::open(streams, out.clone(), expected).await {
            Ok(channels::Channels {
                incoming,
                mut outgoing,
                done,
            }) => {
                session(st, request, Version::V5, incoming, &mut outgoing).await;
                drop(outgoing);
                let _ = done.await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "spdy remote command");
                out.go_away(0).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", served)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Runs an exec or attach over client messages in `incoming` and server messages to `outgoing`,
/// whatever carries them.
async fn session<I, O>(
    st: StreamState,
    request: StreamRequest,
    version: Version,
    incoming: I,
    outgoing: &mut O,
) where
    I: futures::Stream<Item = Vec<u8>> + Unpin,
    O: futures::Sink<Vec<u8>> + Unpin,
{
    match request {
        StreamRequest::Exec {
            spec,
            stdout,
            stderr,
        } => {
            let cmd = spec.cmd.clone();
            match st.spawner.spawn(spec).await {
                Ok(p) => {
                    exec::run_session(
                        version,
                        incoming,
                        outgoing,
                        p,
                        &cmd,
                        Wanted { stdout, stderr },
                    )
                    .await
                }
                Err(e) => {
                    let _ = outgoing
                        .send(protocol::failure_status(version, &e.to_string()))
                        .await;
                }
            }
        }
        StreamRequest::Attach {
            log_path,
            container_id,
            stdout,
            stderr,
            ..
        } => {
            attach_stream(
                &st,
                incoming,
                outgoing,
                &log_path,
                &container_id,
                Wanted { stdout, stderr },
            )
            .await
        }
        // Port-forward is not a remote command; its callers never get here.
        StreamRequest::PortForward { .. } => {}
    }
}

/// A WebSocket as a byte stream (SPDY tunnelled by kubectl: each binary message carries the
/// next bytes of the SPDY connection, with no boundaries of its own).
fn tunnel(socket: WebSocket) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut source) = socket.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let mut buf = vec![0u8; 32 * 1024];
        let mut client_open = true;
        loop {
            tokio::select! {
                m = source.next(), if client_open => match m {
                    Some(Ok(Message::Binary(b))) => {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        client_open = false;
                        let _ = wr.shutdown().await;
                    }
                    Some(Ok(_)) => {}
                },
                n = rd.read(&mut buf) => match n {
                    Ok(n) if n > 0 => {
                        if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                            break;
                        }
                    }
                    _ => {
                        let frame = CloseFrame { code: close_code::NORMAL, reason: "".into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        break;
                    }
                },
            }
        }
    });
    ours
}

/// Splits a WebSocket into the client's messages (channel byte, data) and a sink of such
/// frames, in the agreed framing.
fn split(
    socket: WebSocket,
    framing: Framing,
) -> (impl futures::Stream<Item = Vec<u8>> + Unpin, FrameSink) {
    let (sink, source) = socket.split();
    let incoming = source
        .take_while(|m| {
            futures::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_))))
        })
        .filter_map(move |m| {
            let msg = match m {
                Ok(Message::Binary(b)) => protocol::from_client(framing, false, &b),
                Ok(Message::Text(t)) => protocol::from_client(framing, true, t.as_bytes()),
                _ => return futures::future::ready(None),
            };
            futures::future::ready(match msg {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!(error = %e, "dropping a malformed client message");
                    None
                }
            })
        });
    let outgoing: FrameSink = sink.with(match framing {
        Framing::Binary => binary,
        Framing::Base64 => base64_text,
    });
    (Box::pin(incoming), outgoing)
}

fn binary(f: Vec<u8>) -> futures::future::Ready<Result<Message, axum::Error>> {
    futures::future::ready(Ok(Message::Binary(f.into())))
}

fn base64_text(f: Vec<u8>) -> futures::future::Ready<Result<Message, axum::Error>> {
    futures::future::ready(Ok(Message::Text(protocol::to_base64(&f).into())))
}

type FrameSink = futures::sink::With<
    futures::stream::SplitSink<WebSocket, Message>,
    Message,
    Vec<u8>,
    futures::future::Ready<Result<Message, axum::Error>>,
    fn(Vec<u8>) -> futures::future::Ready<Result<Message, axum::Error>>,
>;

/// Ends the stream with a normal closure (1000): client-go takes a close without a code (1005)
/// for an error, even after the final status.
async fn close(outgoing: &mut FrameSink) {
    let frame = CloseFrame {
        code: close_code::NORMAL,
        reason: "".into(),
    };
    let _ = outgoing.get_mut().send(Message::Close(Some(frame))).await;
    let _ = outgoing.get_mut().close().await;
}

/// Streams the container's output from its CRI log (which its monitor writes) as it grows, until
/// the container stops or the client leaves. Input is not carried: skiff's containers run with
/// stdin from /dev/null.
async fn attach_stream<I, O>(
    st: &StreamState,
    mut incoming: I,
    outgoing: &mut O,
    log_path: &std::path::Path,
    container_id: &str,
    wanted: Wanted,
) where
    I: futures::Stream<Item = Vec<u8>> + Unpin,
    O: futures::Sink<Vec<u8>> + Unpin,
{
    let mut offset = match tokio::fs::metadata(log_path).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    let mut carry = Vec::new();
    loop {
        let running = (st.running)(container_id);
        let chunk = read_from(log_path, offset).await.unwrap_or_default();
        offset += chunk.len() as u64;
        carry.extend_from_slice(&chunk);
        let complete = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let lines: Vec<u8> = carry.drain(..complete).collect();
        for (channel, data) in cri_log_frames(&lines) {
            let want = if channel == protocol::STDOUT {
                wanted.stdout
            } else {
                wanted.stderr
            };
            if want
                && outgoing
                    .send(protocol::frame(channel, &data))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if !running {
            break;
        }
        tokio::select! {
            msg = incoming.next() => if msg.is_none() { return },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let _ = outgoing
        .send(protocol::frame(
            protocol::ERROR,
            br#"{"metadata":{},"status":"Success"}"#,
        ))
        .await;
}

async fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).await?;
    Ok(out)
}

/// CRI log lines (`<time> <stream> <P|F> <content>`) as (channel, bytes) frames; a full line
/// (`F`) gets its newline back.
pub fn cri_log_frames(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(4, |b| *b == b' ');
        let (_, Some(stream), Some(tag)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let channel = match stream {
            b"stdout" => protocol::STDOUT,
            b"stderr" => protocol::STDERR,
            _ => continue,
        };
        let mut content = fields.next().unwrap_or_default().to_vec();
        if tag == b"F" {
            content.push(b'\n');
        }
        out.push((channel, content));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_request() -> StreamRequest {
        StreamRequest::Exec {
            spec: ExecSpec {
                container_id: "c1".into(),
                cmd: vec!["true".into()],
                tty: false,
                stdin: false,
            },
            stdout: true,
            stderr: true,
        }
    }

    #[test]
    fn tokens_are_single_use_and_typed() {
        let streams = Streams::new("http://127.0.0.1:1".into());
        let url = streams.register(exec_request());
        let token = url.rsplit('/').next().expect("token");
        assert!(url.starts_with("http://127.0.0.1:1/exec/"), "{url}");
        assert_eq!(streams.take("attach", token), None, "wrong kind");
        let url = streams.register(exec_request());
        let token = url.rsplit('/').next().expect("token");
        assert_eq!(streams.take("exec", token), Some(exec_request()));
        assert_eq!(streams.take("exec", token), None, "used once");
    }

    #[test]
    fn log_lines_become_frames() {
        let frames = cri_log_frames(
            b"2024-01-01T00:00:00Z stdout P par\n2024-01-01T00:00:00Z stdout F tial\n\
              2024-01-01T00:00:01Z stderr F oops\nbogus\n",
        );
        assert_eq!(
            frames,
            vec![
                (protocol::STDOUT, b"par".to_vec()),
                (protocol::STDOUT, b"tial\n".to_vec()),
                (protocol::STDERR, b"oops\n".to_vec()),
            ]
        );
    }
}
