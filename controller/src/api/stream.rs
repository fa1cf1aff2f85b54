//! `pods/exec`, `pods/attach` and `pods/portforward`: the API server checks the pod and
//! container, then proxies the client's upgrade request (WebSocket or SPDY/3.1) to the
//! node agent's `/exec/{ns}/{pod}/{container}`, `/attach/...` or `/portForward/{ns}/{pod}` and,
//! once the agent switches protocols, copies bytes both ways, as the kube-apiserver does with the
//! kubelet. The stream protocol itself is spoken by the runtime's streaming server.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::error::ApiError;
use super::logs::{container_name, node_agent_address};
use super::{ApiState, resources};

/// The three streaming subresources of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    fn verb(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "port-forward",
        }
    }
}

/// The handler for `/api/v1/namespaces/{ns}/pods/{name}/{exec,attach,portforward}`.
pub async fn handle(
    kind: Kind,
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    proxy(kind, &state, &ns, &name, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn proxy(
    kind: Kind,
    state: &ApiState,
    ns: &str,
    name: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let pod = state.objects.get(resources::pods(), Some(ns), name)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::BadRequest(format!(
            "cannot {} into a container in a completed pod; current phase is {phase}",
            kind.verb()
        )));
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    let q: std::collections::HashMap<String, String> = pairs.iter().cloned().collect();
    let path = match kind {
        Kind::Exec | Kind::Attach => {
            let container = container_name(&pod, &q)?;
            let sub = if kind == Kind::Exec { "exec" } else { "attach" };
            format!("/{sub}/{ns}/{name}/{container}")
        }
        Kind::PortForward => format!("/portForward/{ns}/{name}"),
    };
    let (host, port, node_name) = node_agent_address(&state.objects, &pod)?;
    let target = format!("{path}?{}", node_query(kind, &pairs)?);
    upgrade(req, &format!("{host}:{port}"), &target)
        .await
        .map_err(|e| {
            ApiError::ServiceUnavailable(format!(
                "cannot reach the node agent of {node_name} at {host}:{port}: {e}"
            ))
        })
}

/// The query the node agent gets, in the kubelet's terms as the kube-apiserver writes it
/// (`streamParams`): the options decoded as `PodExecOptions`, `PodAttachOptions` or
/// `PodPortForwardOptions` would be (any boolean spelling, `ports=80,81` or repeated `ports`),
/// then `command`, `input`/`output`/`error`/`tty` as `1` and one `port` per port.
fn node_query(kind: Kind, pairs: &[(String, String)]) -> Result<String, ApiError> {
    let mut out: Vec<(&str, String)> = Vec::new();
    let flag = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .is_some_and(|(_, v)| super::query_bool(v))
    };
    match kind {
        Kind::Exec | Kind::Attach => {
            if kind == Kind::Exec {
                out.extend(
                    pairs
                        .iter()
                        .filter(|(k, _)| k == "command")
                        .map(|(_, v)| ("command", v.clone())),
                );
            }
            for (param, node) in [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
                ("tty", "tty"),
            ] {
                if flag(param) {
                    out.push((node, "1".into()));
                }
            }
        }
        Kind::PortForward => {
            for v in pairs
                .iter()
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| v.split(','))
            {
                let port = v
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "invalid port {v:?}: a port must be a number between 1 and 65535"
                        ))
                    })?;
                out.push(("port", port.to_string()));
            }
        }
    }
    serde_urlencoded::to_string(&out).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Headers of one hop that are not passed on (the upgrade pair is).
const HOP: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "authorization",
];

/// Sends the upgrade request to `addr` + `target`; on 101 answers the client with it and
/// splices the two connections, otherwise passes the agent's answer back.
async fn upgrade(mut req: Request, addr: &str, target: &str) -> Result<Response, String> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut out = axum::http::Request::builder()
        .method(req.method())
        .uri(target);
    for (k, v) in req.headers() {
        if !HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    let out = out
        .header(header::HOST, addr)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn.with_upgrades());
    let mut resp = sender.send_request(out).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = super::logs::body_text(resp.into_body()).await;
        // kubectl prints the Status message: say what the agent or the runtime said.
        let err = if status == StatusCode::FORBIDDEN {
            // The streaming server refused the subprotocols offered, as the kubelet does.
            ApiError::Forbidden(body)
        } else if status.is_client_error() {
            ApiError::BadRequest(body)
        } else {
            ApiError::ServiceUnavailable(body)
        };
        return Ok(err.into_response());
    }
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        if let Ok((client, agent)) = tokio::try_join!(client_upgrade, agent_upgrade) {
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(agent))
                    .await;
        }
    });
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        answer = answer.header(k, v);
    }
    answer.body(Body::empty()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(q).unwrap()
    }

    #[test]
    fn exec_options_reach_the_node_in_the_kubelets_terms() {
        // The Python client writes booleans as `True`; kubectl as `true`; both mean the same.
        let q = node_query(
            Kind::Exec,
            &pairs("command=sh&command=-c&command=echo+a%26b&stdin=True&stdout=true&stderr=False&tty=0&container=c"),
        )
        .unwrap();
        assert_eq!(
            q,
            "command=sh&command=-c&command=echo+a%26b&input=1&output=1"
        );
        let q = node_query(Kind::Attach, &pairs("stdout=1&tty=t&command=x")).unwrap();
        assert_eq!(q, "output=1&tty=1");
    }

    #[test]
    fn port_forward_ports_become_one_port_each() {
        let q = node_query(Kind::PortForward, &pairs("ports=1234,1235&ports=80")).unwrap();
        assert_eq!(q, "port=1234&port=1235&port=80");
        let err = node_query(Kind::PortForward, &pairs("ports=80,http")).unwrap_err();
        assert!(err.to_string().contains("\"http\""), "{err}");
        assert!(node_query(Kind::PortForward, &pairs("ports=0")).is_err());
    }
}
