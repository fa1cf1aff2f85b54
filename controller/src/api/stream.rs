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
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let q: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(&raw_query)
            .map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?
            .into_iter()
            .collect();
    let path = match kind {
        Kind::Exec | Kind::Attach => {
            let container = container_name(&pod, &q)?;
            let sub = if kind == Kind::Exec { "exec" } else { "attach" };
            format!("/{sub}/{ns}/{name}/{container}")
        }
        Kind::PortForward => format!("/portForward/{ns}/{name}"),
    };
    let (host, port, node_name) = node_agent_address(&state.objects, &pod)?;
    let target = format!("{path}?{raw_query}");
    upgrade(req, &format!("{host}:{port}"), &target)
        .await
        .map_err(|e| {
            ApiError::ServiceUnavailable(format!(
                "cannot reach the node agent of {node_name} at {host}:{port}: {e}"
            ))
        })
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
        let err = if status.is_client_error() {
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
