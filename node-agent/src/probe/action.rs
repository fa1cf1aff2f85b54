//! What a probe or lifecycle hook does, resolved from its handler: a command run in the
//! container through CRI ExecSync, an HTTP GET, a TCP connect, a gRPC health check or a sleep.
//! [`Actions`] is the boundary that runs them; [`NetActions`] does it for real against the
//! pod's IP (network probes come from the node, as the kubelet's do), and unit tests script it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use crate::cri::Cri;

/// How an action went, as the kubelet's probers classify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(String),
    /// Counts as success, with a `ProbeWarning` event (an HTTP redirect to another host).
    Warning(String),
    Failure(String),
    /// The action could not be run (a runtime error): retried, then not counted at all.
    Error(String),
}

/// An HTTP GET to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// One resolved action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Http(HttpTarget),
    Tcp(SocketAddr),
    Grpc { addr: SocketAddr, service: String },
    Sleep(Duration),
}

/// Runs actions.
pub trait Actions: Send + Sync + 'static {
    /// Runs `action` for the container `container_id`; `timeout` bounds it (`None`: no bound,
    /// as for postStart hooks). `purpose` names the caller in the HTTP User-Agent (`probe`,
    /// `lifecycle`).
    fn run<'a>(
        &'a self,
        container_id: &'a str,
        action: &'a Action,
        timeout: Option<Duration>,
        purpose: &'static str,
    ) -> BoxFuture<'a, Outcome>;
}

/// The port of a probe or hook: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port);
            match named {
                Some(p) => p,
                None => s
                    .parse::<i32>()
                    .map_err(|_| format!("port {s} not found"))?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn host_or(host: Option<&str>, pod_ip: &str) -> String {
    host.filter(|h| !h.is_empty()).unwrap_or(pod_ip).to_owned()
}

fn addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("{host:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The HTTP GET of an `httpGet` handler against the pod's IP unless it names a host.
pub fn http_target(g: &HTTPGetAction, c: &Container, pod_ip: &str) -> Result<HttpTarget, String> {
    let mut path = g.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    Ok(HttpTarget {
        https: g.scheme.as_deref() == Some("HTTPS"),
        host: host_or(g.host.as_deref(), pod_ip),
        port: resolve_port(&g.port, c)?,
        path,
        headers: g
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
    })
}

/// The action of a probe's handler. `env` expands `$(VAR)` in exec commands (the container's
/// static `env` values only, as the kubelet expands probe commands).
pub fn probe_action(
    p: &k8s_openapi::api::core::v1::Probe,
    c: &Container,
    pod_ip: &str,
) -> Result<Action, String> {
    if let Some(e) = &p.exec {
        return Ok(Action::Exec(static_expand(
            e.command.as_deref().unwrap_or_default(),
            c,
        )));
    }
    if let Some(g) = &p.http_get {
        return Ok(Action::Http(http_target(g, c, pod_ip)?));
    }
    if let Some(t) = &p.tcp_socket {
        let host = host_or(t.host.as_deref(), pod_ip);
        return Ok(Action::Tcp(addr(&host, resolve_port(&t.port, c)?)?));
    }
    if let Some(g) = &p.grpc {
        let port = u16::try_from(g.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {}", g.port))?;
        return Ok(Action::Grpc {
            addr: addr(pod_ip, port)?,
            service: g.service.clone().unwrap_or_default(),
        });
    }
    Err("missing probe handler".to_owned())
}

/// The action of a lifecycle hook's handler (exec commands are not expanded).
pub fn hook_action(
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
    c: &Container,
    pod_ip: &str,
) -> Result<Action, String> {
    if let Some(e) = &h.exec {
        return Ok(Action::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(g) = &h.http_get {
        return Ok(Action::Http(http_target(g, c, pod_ip)?));
    }
    if let Some(s) = &h.sleep {
        return Ok(Action::Sleep(Duration::from_secs(
            u64::try_from(s.seconds).unwrap_or(0),
        )));
    }
    Err("invalid handler".to_owned())
}

/// `$(VAR)` expanded with the container's literal `env` values only.
fn static_expand(words: &[String], c: &Container) -> Vec<String> {
    let vars: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    words
        .iter()
        .map(|w| {
            crate::env::expand(w, |n| {
                vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        })
        .collect()
}

/// Most output a probe keeps (the kubelet's 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

/// Runs actions for real: exec through the CRI runtime, network actions from the node.
pub struct NetActions<C> {
    cri: Arc<C>,
    tls: Arc<rustls::ClientConfig>,
}

impl<C> std::fmt::Debug for NetActions<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetActions")
    }
}

impl<C: Cri> NetActions<C> {
    pub fn new(cri: Arc<C>) -> Self {
        // Probes and hooks do not verify certificates, as the kubelet's do not: a pod's
        // serving certificate is rarely issued for its IP.
        let tls = skiff_tls::client_without_verification().unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        NetActions {
            cri,
            tls: Arc::new(tls),
        }
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Option<Duration>) -> Outcome {
        let limit = timeout.unwrap_or_default();
        match self.cri.exec_sync(id, cmd.to_vec(), limit).await {
            Ok(r) => {
                let mut out = r.stdout;
                out.extend_from_slice(&r.stderr);
                out.truncate(MAX_OUTPUT);
                let text = String::from_utf8_lossy(&out).into_owned();
                if r.exit_code == 0 {
                    Outcome::Success(text)
                } else {
                    Outcome::Failure(text)
                }
            }
            Err(crate::AgentError::Cri {
                code: tonic::Code::DeadlineExceeded,
                ..
            }) => Outcome::Failure(format!(
                "command timed out: {:?} timed out after {limit:?}",
                cmd.join(" ")
            )),
            Err(e) => Outcome::Error(e.to_string()),
        }
    }

    async fn http(&self, t: &HttpTarget, purpose: &'static str) -> Outcome {
        let mut target = t.clone();
        // Redirects to the same host are followed (at most 10); one to another host ends the
        // probe with the redirect itself, a warning.
        for _ in 0..=10 {
            let (status, location, body) = match self.http_once(&target, purpose).await {
                Ok(r) => r,
                Err(e) => return Outcome::Failure(e),
            };
            if (200..300).contains(&status) {
                return Outcome::Success(body);
            }
            if (300..400).contains(&status) {
                if let Some(next) = location.and_then(|l| redirect(&target, &l)) {
                    target = next;
                    continue;
                }
                return Outcome::Warning(format!(
                    "Probe terminated redirects, Response body: {body}"
                ));
            }
            return Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"));
        }
        Outcome::Failure(format!(
            "Get \"{}\": stopped after 10 redirects",
            url(&target)
        ))
    }

    async fn http_once(
        &self,
        t: &HttpTarget,
        purpose: &'static str,
    ) -> Result<(u16, Option<String>, String), String> {
        let u = url(t);
        let fail = |e: &dyn std::fmt::Display| format!("Get \"{u}\": {e}");
        let stream = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| fail(&e))?;
        let _ = stream.set_nodelay(true);
        let version = crate::KUBELET_VERSION
            .trim_start_matches('v')
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".");
        let mut req = http::Request::get(&t.path)
            .header(http::header::HOST, host_port(&t.host, t.port))
            .header(
                http::header::USER_AGENT,
                format!("kube-{purpose}/{version}"),
            )
            .header(http::header::ACCEPT, "*/*")
            // One request per connection, as the kubelet's prober (keep-alives disabled): the
            // server closes as soon as it has answered.
            .header(http::header::CONNECTION, "close");
        for (k, v) in &t.headers {
            if let Some(h) = req.headers_mut() {
                match (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    (Ok(k), Ok(v)) => {
                        h.insert(k, v);
                    }
                    _ => return Err(format!("invalid header {k:?}")),
                }
            }
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| fail(&e))?;
        let resp = if t.https {
            let name =
                rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(|e| fail(&e))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| fail(&e))?;
            send(hyper_util::rt::TokioIo::new(tls), req).await
        } else {
            send(hyper_util::rt::TokioIo::new(stream), req).await
        }
        .map_err(|e| fail(&e))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        let mut b = resp.into_body();
        while body.len() < MAX_OUTPUT {
            match b.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        body.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Err(fail(&e)),
                None => break,
            }
        }
        body.truncate(MAX_OUTPUT);
        Ok((
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    async fn grpc(&self, addr: SocketAddr, service: &str, timeout: Duration) -> Outcome {
        let uri = format!("http://{addr}");
        let endpoint = match tonic::transport::Endpoint::from_shared(uri.clone()) {
            Ok(e) => e.connect_timeout(timeout).timeout(timeout),
            Err(e) => {
                return Outcome::Failure(format!(
                    "error: failed to connect service at {uri:?}: {e}"
                ));
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Failure(format!(
                    "error: failed to connect service at {:?}: {e}",
                    addr.to_string()
                ));
            }
        };
        let mut client = tonic::client::Grpc::new(channel);
        if let Err(e) = client.ready().await {
            return Outcome::Failure(format!("error: health rpc probe failed: {e}"));
        }
        let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let req = tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        match client.unary(req, path, codec).await {
            Ok(r) => match r.into_inner().status {
                1 => Outcome::Success("service healthy".to_owned()),
                s => Outcome::Failure(format!(
                    "service unhealthy (responded with {:?})",
                    serving_status(s)
                )),
            },
            Err(s) if s.code() == tonic::Code::Unimplemented => Outcome::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            )),
            Err(s)
                if s.code() == tonic::Code::DeadlineExceeded
                    || s.code() == tonic::Code::Cancelled =>
            {
                Outcome::Failure(format!(
                    "timeout: health rpc did not complete within {timeout:?}"
                ))
            }
            Err(s) => Outcome::Failure(format!("error: health rpc probe failed: {s}")),
        }
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

fn serving_status(s: i32) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

async fn send<T>(
    io: hyper_util::rt::TokioIo<T>,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn url(t: &HttpTarget) -> String {
    let scheme = if t.https { "https" } else { "http" };
    format!("{scheme}://{}{}", host_port(&t.host, t.port), t.path)
}

/// The target of a redirect to `location` if it stays on the same host.
fn redirect(t: &HttpTarget, location: &str) -> Option<HttpTarget> {
    if location.starts_with('/') {
        return Some(HttpTarget {
            path: location.to_owned(),
            ..t.clone()
        });
    }
    let uri: http::Uri = location.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    if host != t.host {
        return None;
    }
    let https = uri.scheme_str() == Some("https");
    Some(HttpTarget {
        https,
        host: t.host.clone(),
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers: t.headers.clone(),
    })
}

impl<C: Cri> Actions for NetActions<C> {
    fn run<'a>(
        &'a self,
        container_id: &'a str,
        action: &'a Action,
        timeout: Option<Duration>,
        purpose: &'static str,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let bounded = |f: BoxFuture<'a, Outcome>, what: String| async move {
                match timeout {
                    Some(t) => tokio::time::timeout(t, f)
                        .await
                        .unwrap_or(Outcome::Failure(what)),
                    None => f.await,
                }
            };
            match action {
                Action::Exec(cmd) => self.exec(container_id, cmd, timeout).await,
                Action::Http(t) => {
                    let what = format!(
                        "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                        url(t)
                    );
                    bounded(Box::pin(self.http(t, purpose)), what).await
                }
                Action::Tcp(addr) => {
                    let what = format!("dial tcp {addr}: i/o timeout");
                    bounded(
                        Box::pin(async move {
                            match TcpStream::connect(addr).await {
                                Ok(_) => Outcome::Success(String::new()),
                                Err(e) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
                            }
                        }),
                        what,
                    )
                    .await
                }
                Action::Grpc { addr, service } => {
                    let t = timeout.unwrap_or(Duration::from_secs(1));
                    let what = format!("timeout: health rpc did not complete within {t:?}");
                    bounded(Box::pin(self.grpc(*addr, service, t)), what).await
                }
                Action::Sleep(d) => {
                    tokio::time::sleep(*d).await;
                    Outcome::Success(String::new())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, ExecAction, HTTPHeader, Probe};

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            env: Some(vec![EnvVar {
                name: "FILE".into(),
                value: Some("/tmp/healthy".into()),
                value_from: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn handlers_resolve_ports_hosts_and_commands() {
        let c = container();
        let p = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("healthz?full=1".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Probe".into(),
                    value: "1".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            probe_action(&p, &c, "10.88.0.9").unwrap(),
            Action::Http(HttpTarget {
                https: false,
                host: "10.88.0.9".into(),
                port: 8080,
                path: "/healthz?full=1".into(),
                headers: vec![("X-Probe".into(), "1".into())],
            })
        );
        let p = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "$(FILE)".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            probe_action(&p, &c, "10.88.0.9").unwrap(),
            Action::Exec(vec!["cat".into(), "/tmp/healthy".into()])
        );
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &c).unwrap_err(),
            "port nope not found"
        );
        assert!(probe_action(&Probe::default(), &c, "10.88.0.9").is_err());
    }

    #[test]
    fn same_host_redirects_are_followed_others_are_not() {
        let t = HttpTarget {
            https: false,
            host: "10.0.0.1".into(),
            port: 80,
            path: "/a".into(),
            headers: vec![],
        };
        assert_eq!(redirect(&t, "/b").unwrap().path, "/b");
        assert_eq!(redirect(&t, "http://10.0.0.1:81/c").unwrap().port, 81);
        assert!(redirect(&t, "http://example.com/c").is_none());
    }

    #[tokio::test]
    async fn http_and_tcp_against_a_real_listener() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable", "302 Found"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let lower = req.to_ascii_lowercase();
                assert!(
                    lower.contains("user-agent: kube-probe/1.35")
                        && lower.contains("connection: close"),
                    "{req}"
                );
                let extra = if status.starts_with("302") {
                    "Location: http://elsewhere.invalid/\r\n"
                } else {
                    ""
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let a = NetActions::new(Arc::new(crate::cri::fake::FakeCri::new()));
        let target = Action::Http(HttpTarget {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            headers: vec![],
        });
        let t = Some(Duration::from_secs(2));
        assert_eq!(
            a.run("c", &target, t, "probe").await,
            Outcome::Success("ok".into())
        );
        assert_eq!(
            a.run("c", &target, t, "probe").await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        assert!(matches!(
            a.run("c", &target, t, "probe").await,
            Outcome::Warning(_)
        ));
        // Nothing listens any more.
        let closed = Action::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(matches!(
            a.run("c", &closed, t, "probe").await,
            Outcome::Failure(m) if m.contains("dial tcp")
        ));
    }

    /// grpc.health.v1 served by tonic: the status for the service named "web", NotFound for
    /// others, as grpc-go's health server answers.
    #[derive(Clone)]
    struct Health(i32);

    impl tonic::server::NamedService for Health {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    struct Check(i32);

    impl tonic::server::UnaryService<HealthCheckRequest> for Check {
        type Response = HealthCheckResponse;
        type Future =
            BoxFuture<'static, Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;
        fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
            let status = self.0;
            Box::pin(async move {
                if req.into_inner().service != "web" {
                    return Err(tonic::Status::not_found("unknown service"));
                }
                Ok(tonic::Response::new(HealthCheckResponse { status }))
            })
        }
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Health {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            let status = self.0;
            Box::pin(async move {
                let codec =
                    tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
                Ok(tonic::server::Grpc::new(codec)
                    .unary(Check(status), req)
                    .await)
            })
        }
    }

    async fn health_server(status: i32) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let incoming = futures::stream::unfold(l, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Health(status))
                .serve_with_incoming(incoming),
        );
        addr
    }

    #[tokio::test]
    async fn grpc_against_a_real_health_server() {
        let a = NetActions::new(Arc::new(crate::cri::fake::FakeCri::new()));
        let t = Some(Duration::from_secs(2));
        let serving = health_server(1).await;
        let probe = |addr, service: &str| Action::Grpc {
            addr,
            service: service.into(),
        };
        assert_eq!(
            a.run("c", &probe(serving, "web"), t, "probe").await,
            Outcome::Success("service healthy".into())
        );
        assert!(matches!(
            a.run("c", &probe(serving, "other"), t, "probe").await,
            Outcome::Failure(m) if m.starts_with("error: health rpc probe failed")
        ));
        let down = health_server(2).await;
        assert_eq!(
            a.run("c", &probe(down, "web"), t, "probe").await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
    }
}
