//! The agent's HTTP server (the kubelet's port 10250 role, plain HTTP for now):
//! `GET /healthz`, `GET /containerLogs/{namespace}/{pod}/{container}`, which the API server
//! proxies `pods/log` to, and the streaming endpoints `/exec/...`, `/attach/...` and
//! `/portForward/...` (see [`crate::stream`]).

use crate::AgentError;
use crate::logs::{self, Assembler, Follower, LogOptions, NotFound};
use crate::registry::PodRegistry;
use crate::stream::{self, StreamUrls};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub pod_log_dir: PathBuf,
    pub registry: PodRegistry,
    /// Ends `follow` streams at shutdown so graceful shutdown does not wait on them.
    pub cancel: CancellationToken,
    /// Streaming URLs from the runtime, for exec, attach and port-forward.
    pub streams: Arc<dyn StreamUrls>,
}

/// The agent's routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            any(|st, p, r| container_stream("exec", st, p, r)),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            any(|st, p, r| container_stream("attach", st, p, r)),
        )
        .route("/portForward/{namespace}/{pod}", any(port_forward))
        .with_state(state)
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, String> {
    q.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("invalid {key} {v:?}: not a non-negative number"))
        })
        .transpose()
}

fn options(q: &HashMap<String, String>) -> Result<LogOptions, String> {
    Ok(LogOptions {
        follow: flag(q, "follow"),
        previous: flag(q, "previous"),
        timestamps: flag(q, "timestamps"),
        tail_lines: number(q, "tailLines")?,
        limit_bytes: number(q, "limitBytes")?,
        since_seconds: number(q, "sinceSeconds")?,
    })
}

async fn container_stream(
    kind: &'static str,
    State(st): State<ServerState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    req: Request<Body>,
) -> Response {
    stream::handle(
        st.streams.as_ref(),
        &namespace,
        &pod,
        kind,
        Some(&container),
        req,
    )
    .await
}

async fn port_forward(
    State(st): State<ServerState>,
    UrlPath((namespace, pod)): UrlPath<(String, String)>,
    req: Request<Body>,
) -> Response {
    stream::handle(
        st.streams.as_ref(),
        &namespace,
        &pod,
        "portforward",
        None,
        req,
    )
    .await
}

async fn container_logs(
    State(st): State<ServerState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let opts = match options(&query) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let key = format!("{namespace}/{pod}");
    let path = match logs::pod_dir(&st.pod_log_dir, &st.registry, &namespace, &pod)
        .and_then(|dir| logs::log_file(&dir, &container, opts.previous, &key))
    {
        Ok(p) => p,
        Err(NotFound(msg)) => return text(StatusCode::NOT_FOUND, msg),
    };
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("read log of container {container:?} in pod {key}: {e}"),
            );
        }
    };
    // Only complete lines are rendered now; a follow picks up the incomplete tail later.
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut asm = Assembler::default();
    let recs = logs::records(&mut asm, &data[..complete]);
    let first = logs::render(&recs, &opts, jiff::Timestamp::now());
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !opts.follow || opts.previous {
        return (StatusCode::OK, plain, first).into_response();
    }
    let follower = Follower {
        path,
        offset: complete as u64,
        carry: Vec::new(),
        asm,
        timestamps: opts.timestamps,
        remaining: opts.limit_bytes,
        registry: st.registry.clone(),
        namespace,
        pod,
        container,
        cancel: st.cancel.clone(),
        first: Some(first),
        file_id: None,
    };
    // A dropped connection drops the body stream, which ends the follow.
    let stream = futures::stream::unfold(follower, |mut f| async move {
        f.next_chunk().await.map(|chunk| (chunk, f))
    });
    (StatusCode::OK, plain, Body::from_stream(stream)).into_response()
}

/// Serves until `cancel`, then drains connections.
pub async fn serve(addr: SocketAddr, state: ServerState) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Serve { addr, source })?;
    tracing::info!(%addr, "agent http server listening");
    let cancel = state.cancel.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(|source| AgentError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(state: &ServerState, uri: &str) -> (StatusCode, String) {
        let resp = router(state.clone())
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_logs_and_health() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("default_web_u1").join("app");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("0.log"),
            "2024-01-01T00:00:00Z stdout F first run\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("1.log"),
            "2024-01-01T00:00:00Z stdout F a\n2024-01-01T00:00:01Z stderr F b\n",
        )
        .expect("write");
        let state = ServerState {
            pod_log_dir: root.path().to_owned(),
            registry: PodRegistry::default(),
            cancel: CancellationToken::new(),
            streams: Arc::new(stream::CriStreams(Arc::new(
                crate::cri::fake::FakeCri::new(),
            ))),
        };
        assert_eq!(
            get(&state, "/healthz").await,
            (StatusCode::OK, "ok".to_owned())
        );
        assert_eq!(
            get(&state, "/containerLogs/default/web/app").await,
            (StatusCode::OK, "a\nb\n".to_owned())
        );
        assert_eq!(
            get(
                &state,
                "/containerLogs/default/web/app?tailLines=1&timestamps=true"
            )
            .await,
            (StatusCode::OK, "2024-01-01T00:00:01Z b\n".to_owned())
        );
        assert_eq!(
            get(&state, "/containerLogs/default/web/app?previous=true").await,
            (StatusCode::OK, "first run\n".to_owned())
        );
        // Follow of a container that is not running returns what there is and ends.
        assert_eq!(
            get(&state, "/containerLogs/default/web/app?follow=true").await,
            (StatusCode::OK, "a\nb\n".to_owned())
        );
        let (status, body) = get(&state, "/containerLogs/default/web/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"nope\""), "{body}");
        let (status, body) = get(&state, "/containerLogs/default/gone/app").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("default/gone"), "{body}");
        let (status, _) = get(&state, "/containerLogs/default/web/app?tailLines=x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
