//! Exec, attach and port-forward, the kubelet's way: the agent serves
//! `/exec/{ns}/{pod}/{container}`, `/attach/{ns}/{pod}/{container}` and `/portForward/{ns}/{pod}`
//! (which the API server proxies `pods/exec`, `pods/attach` and `pods/portforward` to), finds
//! the container or sandbox over CRI, asks the runtime for a streaming URL (Exec, Attach,
//! PortForward) and proxies the client's upgraded connection to it byte for byte. The protocols
//! (WebSocket or SPDY/3.1) are spoken by the runtime's streaming server, not here.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

use crate::AgentError;
use crate::cri::{self, Cri, v1};

/// What a client asked to stream, from the kubelet-style URL and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCall {
    Exec {
        container: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Attach {
        container: String,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    PortForward {
        ports: Vec<i32>,
    },
}

/// Why no stream URL could be had, as the client should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The request itself is wrong (no command, a bad port).
    BadRequest(String),
    /// The pod or container is not there, or not running.
    NotFound(String),
    /// The runtime failed.
    Runtime(String),
}

/// Turns a [`StreamCall`] for a pod into the runtime's streaming URL. Object-safe, so the HTTP
/// server does not need to be generic over the CRI implementation.
pub trait StreamUrls: Send + Sync {
    fn url<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        call: StreamCall,
    ) -> BoxFuture<'a, Result<String, StreamRefusal>>;
}

/// [`StreamUrls`] over any [`Cri`].
pub struct CriStreams<C>(pub Arc<C>);

fn pod_labels(namespace: &str, pod: &str) -> std::collections::HashMap<String, String> {
    [
        (cri::LABEL_POD_NAMESPACE.to_owned(), namespace.to_owned()),
        (cri::LABEL_POD_NAME.to_owned(), pod.to_owned()),
    ]
    .into()
}

fn runtime(e: AgentError) -> StreamRefusal {
    match e {
        AgentError::Cri {
            code: tonic::Code::NotFound | tonic::Code::FailedPrecondition,
            message,
            ..
        } => StreamRefusal::NotFound(message),
        AgentError::Cri {
            code: tonic::Code::InvalidArgument,
            message,
            ..
        } => StreamRefusal::BadRequest(message),
        other => StreamRefusal::Runtime(other.to_string()),
    }
}

impl<C: Cri> CriStreams<C> {
    /// The running container `name` of the pod.
    async fn container(&self, ns: &str, pod: &str, name: &str) -> Result<String, StreamRefusal> {
        let mut labels = pod_labels(ns, pod);
        labels.insert(cri::LABEL_CONTAINER_NAME.to_owned(), name.to_owned());
        let all = self
            .0
            .list_containers(v1::ContainerFilter {
                label_selector: labels,
                ..Default::default()
            })
            .await
            .map_err(runtime)?;
        if all.is_empty() {
            return Err(StreamRefusal::NotFound(format!(
                "container {name:?} in pod {ns}/{pod} not found on this node"
            )));
        }
        all.iter()
            .find(|c| c.state == v1::ContainerState::ContainerRunning as i32)
            .map(|c| c.id.clone())
            .ok_or_else(|| {
                StreamRefusal::NotFound(format!(
                    "container {name:?} in pod {ns}/{pod} is not running"
                ))
            })
    }

    async fn sandbox(&self, ns: &str, pod: &str) -> Result<String, StreamRefusal> {
        let all = self
            .0
            .list_pod_sandbox(v1::PodSandboxFilter {
                label_selector: pod_labels(ns, pod),
                ..Default::default()
            })
            .await
            .map_err(runtime)?;
        all.iter()
            .find(|s| s.state == v1::PodSandboxState::SandboxReady as i32)
            .map(|s| s.id.clone())
            .ok_or_else(|| StreamRefusal::NotFound(format!("pod {ns}/{pod} has no ready sandbox")))
    }
}

impl<C: Cri> StreamUrls for CriStreams<C> {
    fn url<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        call: StreamCall,
    ) -> BoxFuture<'a, Result<String, StreamRefusal>> {
        Box::pin(async move {
            match call {
                StreamCall::Exec {
                    container,
                    cmd,
                    tty,
                    stdin,
                    stdout,
                    stderr,
                } => {
                    let id = self.container(ns, pod, &container).await?;
                    let req = v1::ExecRequest {
                        container_id: id,
                        cmd,
                        tty,
                        stdin,
                        stdout,
                        stderr,
                    };
                    self.0.exec(req).await.map_err(runtime)
                }
                StreamCall::Attach {
                    container,
                    tty,
                    stdin,
                    stdout,
                    stderr,
                } => {
                    let id = self.container(ns, pod, &container).await?;
                    let req = v1::AttachRequest {
                        container_id: id,
                        stdin,
                        tty,
                        stdout,
                        stderr,
                    };
                    self.0.attach(req).await.map_err(runtime)
                }
                StreamCall::PortForward { ports } => {
                    let id = self.sandbox(ns, pod).await?;
                    let req = v1::PortForwardRequest {
                        pod_sandbox_id: id,
                        port: ports,
                    };
                    self.0.port_forward(req).await.map_err(runtime)
                }
            }
        })
    }
}

fn flag(q: &[(String, String)], key: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == key && (v.is_empty() || v == "true" || v == "1"))
}

/// Parses the kubelet-style query of an exec or attach (`command=a&command=b&stdin=true&...`).
/// `container` is from the path; `exec` says which of the two it is.
pub fn parse_call(
    kind: &str,
    container: Option<&str>,
    query: &str,
) -> Result<StreamCall, StreamRefusal> {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| StreamRefusal::BadRequest(format!("bad query: {e}")))?;
    let container = container.unwrap_or_default().to_owned();
    let (tty, stdin, stdout, stderr) = (
        flag(&q, "tty"),
        flag(&q, "stdin") || flag(&q, "input"),
        flag(&q, "stdout") || flag(&q, "output"),
        flag(&q, "stderr") || flag(&q, "error"),
    );
    match kind {
        "exec" => {
            let cmd: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            if cmd.is_empty() {
                return Err(StreamRefusal::BadRequest(
                    "you must specify a command".into(),
                ));
            }
            Ok(StreamCall::Exec {
                container,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            })
        }
        "attach" => Ok(StreamCall::Attach {
            container,
            tty,
            stdin,
            stdout,
            stderr,
        }),
        _ => {
            // Port-forward over SPDY names its ports per stream; the WebSocket protocol names
            // them in the query: `port=80&port=81` as the API server passes them to the
            // kubelet, or `ports=80,81` as clients send them to `pods/portforward`.
            let ports = q
                .iter()
                .filter(|(k, _)| k == "port" || k == "ports")
                .flat_map(|(_, v)| v.split(','))
                .map(|v| {
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .map(i32::from)
                        .ok_or_else(|| StreamRefusal::BadRequest(format!("invalid port {v:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StreamCall::PortForward { ports })
        }
    }
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Answers a stream request: gets the URL, then proxies the upgrade to it.
pub async fn handle(
    urls: &dyn StreamUrls,
    namespace: &str,
    pod: &str,
    kind: &str,
    container: Option<&str>,
    req: Request<Body>,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let call = match parse_call(kind, container, &query) {
        Ok(c) => c,
        Err(r) => return refusal(r),
    };
    match urls.url(namespace, pod, call).await {
        Ok(url) => proxy_upgrade(req, &url).await,
        Err(r) => refusal(r),
    }
}

fn refusal(r: StreamRefusal) -> Response {
    match r {
        StreamRefusal::BadRequest(m) => text(StatusCode::BAD_REQUEST, m),
        StreamRefusal::NotFound(m) => text(StatusCode::NOT_FOUND, m),
        StreamRefusal::Runtime(m) => text(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// Headers that describe one hop, not the request: never copied onto the next hop, except the
/// upgrade pair, which is what is being proxied.
const HOP: &[&str] = &["host", "content-length", "transfer-encoding", "keep-alive"];

/// Sends `req` (an upgrade request) to `url` and, if the target switches protocols, answers the
/// client with the same 101 and copies bytes both ways until either side closes. Any other
/// answer is passed back as it came.
pub async fn proxy_upgrade(mut req: Request<Body>, url: &str) -> Response {
    let bad_gateway = |m: String| text(StatusCode::BAD_GATEWAY, m);
    let uri: axum::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return bad_gateway(format!("bad streaming url {url:?}: {e}")),
    };
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return bad_gateway(format!("streaming url {url:?} has no host and port"));
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut out = Request::builder()
        .method(req.method())
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (k, v) in req.headers() {
        if !HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    let out = match out
        .header(header::HOST, format!("{host}:{port}"))
        .body(Body::empty())
    {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let tcp = match tokio::net::TcpStream::connect((host, port)).await {
        Ok(t) => t,
        Err(e) => return bad_gateway(format!("connect to streaming server {host}:{port}: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => return bad_gateway(format!("streaming server {host}:{port}: {e}")),
    };
    tokio::spawn(conn.with_upgrades());
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("streaming server {host}:{port}: {e}")),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Response::from_parts(parts, Body::from(body));
    }
    let server_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, server_upgrade) {
            Ok((client, server)) => {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(server),
                )
                .await;
            }
            Err(e) => tracing::debug!(error = %e, "stream upgrade failed"),
        }
    });
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        answer = answer.header(k, v);
    }
    answer
        .body(Body::empty())
        .unwrap_or_else(|e| bad_gateway(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeCri;

    #[test]
    fn parses_kubelet_queries() {
        assert_eq!(
            parse_call(
                "exec",
                Some("app"),
                "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=1"
            ),
            Ok(StreamCall::Exec {
                container: "app".into(),
                cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
                tty: true,
                stdin: true,
                stdout: true,
                stderr: false,
            })
        );
        assert!(matches!(
            parse_call("exec", Some("app"), "stdout=true"),
            Err(StreamRefusal::BadRequest(_))
        ));
        assert_eq!(
            parse_call("portforward", None, "port=80&port=8080"),
            Ok(StreamCall::PortForward {
                ports: vec![80, 8080]
            })
        );
        assert_eq!(
            parse_call("portforward", None, "ports=80,8080"),
            Ok(StreamCall::PortForward {
                ports: vec![80, 8080]
            })
        );
        assert!(parse_call("portforward", None, "port=0").is_err());
        assert!(parse_call("portforward", None, "ports=80,x").is_err());
    }

    #[tokio::test]
    async fn finds_the_running_container() {
        let fake = Arc::new(FakeCri::default());
        let streams = CriStreams(fake.clone());
        let call = || StreamCall::Exec {
            container: "app".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        };
        let err = streams.url("default", "web", call()).await;
        assert!(
            matches!(&err, Err(StreamRefusal::NotFound(m)) if m.contains("default/web")),
            "{err:?}"
        );
        let id = fake.add_running_container("default", "web", "app");
        assert_eq!(
            streams.url("default", "web", call()).await,
            Ok(format!("http://streaming.invalid/exec/{id}"))
        );
    }

    /// Always answers with one URL.
    struct FixedUrl(String);

    impl StreamUrls for FixedUrl {
        fn url<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: StreamCall,
        ) -> BoxFuture<'a, Result<String, StreamRefusal>> {
            Box::pin(async move { Ok(self.0.clone()) })
        }
    }

    /// A streaming server that switches protocols on any request and echoes what it gets.
    async fn echo_server() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).await.expect("read head");
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            assert!(head.starts_with("get /exec/token "), "{head}");
            assert!(head.contains("upgrade: websocket"), "{head}");
            conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
            )
            .await
            .expect("write");
            let (mut r, mut w) = conn.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        format!("http://{addr}/exec/token")
    }

    #[tokio::test]
    async fn proxies_an_upgraded_connection_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = echo_server().await;
        let app = axum::Router::new().route(
            "/exec/{ns}/{pod}/{container}",
            axum::routing::any(move |req: Request<Body>| {
                let urls = FixedUrl(url.clone());
                async move { handle(&urls, "default", "web", "exec", Some("app"), req).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn.with_upgrades());
        let req = Request::get("/exec/default/web/app?command=cat&stdin=true")
            .header(header::HOST, addr.to_string())
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .expect("request");
        let mut resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "v5.channel.k8s.io"
        );
        let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.expect("upgrade"));
        io.write_all(b"through two hops").await.expect("write");
        let mut buf = [0u8; 16];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"through two hops");
    }

    #[tokio::test]
    async fn refusals_are_answered_before_any_upgrade() {
        let fake = Arc::new(FakeCri::default());
        let streams = CriStreams(fake);
        let req = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
        let resp = handle(
            &streams,
            "default",
            "web",
            "exec",
            Some("app"),
            req("/exec/default/web/app?stdout=true"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let resp = handle(
            &streams,
            "default",
            "web",
            "exec",
            Some("app"),
            req("/exec/default/web/app?command=true"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
