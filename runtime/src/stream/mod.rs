//! The runtime's streaming server, the role of the kubelet's / containerd's CRI streaming
//! server: Exec, Attach and PortForward over CRI only register a request and answer with a
//! one-time URL (`http://127.0.0.1:<port>/exec/<token>`); the node agent then proxies the
//! client's upgraded connection there, and this server speaks Kubernetes' remote command
//! protocol over WebSocket on it ([`protocol`]). Tokens are random, single-use and expire after
//! a minute, as the kubelet's are; the server listens on loopback only.

pub mod exec;
pub mod protocol;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncSeekExt;
use tokio_util::sync::CancellationToken;

use self::exec::{ExecSpawner, ExecSpec, Wanted};
use self::protocol::Version;
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
    },
    PortForward {
        sandbox_id: String,
        ports: Vec<i32>,
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

/// The message for clients that did not ask for WebSocket (kubectl before 1.30 speaks SPDY).
pub const WEBSOCKET_ONLY: &str = "skiff's streaming server speaks WebSocket only \
     (v5.channel.k8s.io / v4.channel.k8s.io, kubectl 1.30 and later); SPDY is not supported";

/// The answer to every port-forward stream.
pub const PORT_FORWARD_UNSUPPORTED: &str = "port-forward is not supported by skiff yet: it needs \
     SPDY/3.1 (tunnelled through WebSocket by kubectl 1.30+), which skiff's streaming server \
     does not speak";

async fn stream(
    State(st): State<StreamState>,
    Path((kind, token)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    if kind == "portforward" {
        // kubectl 1.30+ tunnels SPDY/3.1 through WebSocket for port-forward
        // (`SPDY/3.1+portforward.k8s.io`), then falls back to plain SPDY: neither is spoken
        // here yet, so both attempts get this answer.
        st.streams.take(&kind, &token);
        return text(StatusCode::NOT_IMPLEMENTED, PORT_FORWARD_UNSUPPORTED);
    }
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(_) => return text(StatusCode::BAD_REQUEST, WEBSOCKET_ONLY),
    };
    let Some(request) = st.streams.take(&kind, &token) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown or expired {kind} token"),
        );
    };
    let ws = ws.protocols(protocol::PROTOCOLS.iter().copied());
    let version = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Version::from_protocol);
    let Some(version) = version else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported subprotocol requested; this server speaks {}",
                protocol::PROTOCOLS.join(", ")
            ),
        );
    };
    drop(parts);
    match request {
        StreamRequest::Exec {
            spec,
            stdout,
            stderr,
        } => ws.on_upgrade(move |socket| exec_stream(st, socket, version, spec, stdout, stderr)),
        StreamRequest::Attach {
            log_path,
            container_id,
            stdout,
            stderr,
        } => ws.on_upgrade(move |socket| {
            attach_stream(
                st,
                socket,
                log_path,
                container_id,
                Wanted { stdout, stderr },
            )
        }),
        StreamRequest::PortForward { .. } => {
            text(StatusCode::NOT_IMPLEMENTED, PORT_FORWARD_UNSUPPORTED)
        }
    }
}

/// Splits a WebSocket into binary client messages and a sink of binary frames.
fn split(socket: WebSocket) -> (impl futures::Stream<Item = Vec<u8>> + Unpin, FrameSink) {
    let (sink, source) = socket.split();
    let incoming = source
        .take_while(|m| {
            futures::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_))))
        })
        .filter_map(|m| {
            futures::future::ready(match m {
                Ok(Message::Binary(b)) => Some(b.to_vec()),
                _ => None,
            })
        });
    let outgoing: FrameSink = sink.with(binary);
    (Box::pin(incoming), outgoing)
}

fn binary(f: Vec<u8>) -> futures::future::Ready<Result<Message, axum::Error>> {
    futures::future::ready(Ok(Message::Binary(f.into())))
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

async fn exec_stream(
    st: StreamState,
    socket: WebSocket,
    version: Version,
    spec: ExecSpec,
    stdout: bool,
    stderr: bool,
) {
    let cmd = spec.cmd.clone();
    let (incoming, mut outgoing) = split(socket);
    match st.spawner.spawn(spec).await {
        Ok(p) => {
            exec::run_session(
                version,
                incoming,
                &mut outgoing,
                p,
                &cmd,
                Wanted { stdout, stderr },
            )
            .await
        }
        Err(e) => {
            let _ = outgoing
                .send(protocol::failure_status(&e.to_string()))
                .await;
        }
    }
    close(&mut outgoing).await;
}

/// Streams the container's output from its CRI log (which its monitor writes) as it grows, until
/// the container stops or the client leaves. Input is not carried: skiff's containers run with
/// stdin from /dev/null.
async fn attach_stream(
    st: StreamState,
    socket: WebSocket,
    log_path: PathBuf,
    container_id: String,
    wanted: Wanted,
) {
    let (mut incoming, mut outgoing) = split(socket);
    let mut offset = match tokio::fs::metadata(&log_path).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    let mut carry = Vec::new();
    loop {
        let running = (st.running)(&container_id);
        let chunk = read_from(&log_path, offset).await.unwrap_or_default();
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
    close(&mut outgoing).await;
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
