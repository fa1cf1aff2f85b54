//! The aggregation layer: a group-version that no resource of the table serves, and that an
//! APIService hands to a Service, is passed to that Service, as the kube-aggregator does. The
//! Service's port named by the APIService is resolved to a ready endpoint through its
//! EndpointSlices, the connection is TLS to `<service>.<namespace>.svc` verified with the
//! APIService's `caBundle` (or not verified when it says `insecureSkipTLSVerify`), and the
//! request goes on as it came, its answer streamed back.
//!
//! skiff has no authentication yet, so no user identity is passed on (the kube-aggregator
//! sends `X-Remote-User` and `X-Remote-Group` with its front-proxy client certificate).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use base64::Engine as _;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use super::error::ApiError;
use super::kinds::apiservice::name_of;
use super::objects::Objects;
use super::resources;
use super::strategy::str_at;

/// How long the TCP connection and the TLS handshake to an extension server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one aggregated group-version is served.
pub struct Backend {
    /// `<ip>:<port>` of a ready endpoint.
    pub addr: String,
    /// `<service>.<namespace>.svc`, what the server's certificate must name.
    pub server_name: String,
    tls: Arc<rustls::ClientConfig>,
}

/// Whether `group`/`version` is served by the resource table itself.
pub fn is_local(group: &str, version: &str) -> bool {
    resources::all()
        .iter()
        .any(|r| r.group == group && r.version == version)
}

/// The APIService of `group`/`version` that names a Service, if any.
pub fn api_service(objects: &Objects, group: &str, version: &str) -> Option<Value> {
    let svc = objects
        .get(resources::api_services(), None, &name_of(group, version))
        .ok()?;
    svc.pointer("/spec/service")
        .is_some_and(|s| !s.is_null())
        .then_some(svc)
}

/// Resolves an APIService to a ready endpoint of its Service: the error is the condition
/// reason and message the kube-aggregator would report.
pub fn backend(objects: &Objects, svc: &Value) -> Result<Backend, (&'static str, String)> {
    let spec = &svc["spec"];
    let ns = str_at(spec, "/service/namespace");
    let name = str_at(spec, "/service/name");
    let port = spec
        .pointer("/service/port")
        .and_then(Value::as_i64)
        .unwrap_or(443);
    let service = objects
        .get(resources::services(), Some(ns), name)
        .map_err(|_| {
            (
                "ServiceNotFound",
                format!("service/{name} in {ns:?} is not present"),
            )
        })?;
    let service_port = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(port))
        .ok_or_else(|| {
            (
                "ServicePortError",
                format!("service/{name} in {ns:?} is not listening on port {port}"),
            )
        })?;
    let port_name = str_at(service_port, "/name");
    let (slices, _) = objects
        .list(resources::endpoint_slices(), Some(ns))
        .map_err(|e| ("EndpointsNotFound", e.to_string()))?;
    let found = slices
        .iter()
        .filter(|s| s.pointer("/metadata/labels/kubernetes.io~1service-name") == Some(&Value::from(name)))
        .find_map(|slice| {
            let target = slice
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| str_at(p, "/name") == port_name)?
                .get("port")?
                .as_i64()?;
            let ip = slice
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| e.pointer("/conditions/ready") != Some(&Value::Bool(false)))
                .find_map(|e| e.pointer("/addresses/0").and_then(Value::as_str))?;
            Some(if ip.contains(':') {
                format!("[{ip}]:{target}")
            } else {
                format!("{ip}:{target}")
            })
        })
        .ok_or_else(|| {
            (
                "MissingEndpoints",
                format!(
                    "endpoints for service/{name} in {ns:?} have no addresses with port name {port_name:?}"
                ),
            )
        })?;
    let tls = tls_config(spec).map_err(|e| ("FailedDiscoveryCheck", e))?;
    Ok(Backend {
        addr: found,
        server_name: format!("{name}.{ns}.svc"),
        tls,
    })
}

/// The TLS client of an APIService: its `caBundle` as the only roots, or no verification.
fn tls_config(spec: &Value) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = if spec["insecureSkipTLSVerify"] == Value::Bool(true) {
        skiff_tls::client_without_verification()
    } else {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(str_at(spec, "/caBundle"))
            .map_err(|e| format!("spec.caBundle is not base64: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("spec.caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("spec.caBundle: {e}"))?;
        }
        skiff_tls::client_with_roots(roots)
    };
    config.map(Arc::new).map_err(|e| e.to_string())
}

/// Headers that belong to one connection and are not passed on.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "authorization",
];

/// Sends one request to the backend; the answer's body streams back to the client.
pub async fn forward(
    backend: &Backend,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, String> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(&backend.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", backend.addr))?;
        let name = ServerName::try_from(backend.server_name.clone()).map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(backend.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {} ({}): {e}", backend.server_name, backend.addr))
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            format!(
                "no connection to {} within {CONNECT_TIMEOUT:?}",
                backend.addr
            )
        })??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path_and_query);
    for (k, v) in headers {
        if !HOP.contains(&k.as_str()) {
            req = req.header(k, v);
        }
    }
    let req = req
        .header(header::HOST, &backend.server_name)
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (mut parts, body) = resp.into_parts();
    for h in HOP {
        parts.headers.remove(*h);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Answers a request for an aggregated group-version, or `None` when no APIService hands it
/// to a Service (the caller answers 404).
pub async fn serve(
    objects: &Objects,
    group: &str,
    version: &str,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Result<Response<Body>, ApiError>> {
    let svc = api_service(objects, group, version)?;
    let backend = match backend(objects, &svc) {
        Ok(b) => b,
        Err((_, message)) => return Some(Err(ApiError::ServiceUnavailable(message))),
    };
    Some(
        forward(&backend, method, path_and_query, headers, body)
            .await
            .map_err(|e| {
                ApiError::ServiceUnavailable(format!("error trying to reach service: {e}"))
            }),
    )
}

/// The discovery check of a service-backed APIService, as the kube-aggregator's availability
/// controller makes it: `GET /apis/<group>/<version>` must answer 200.
pub async fn check(objects: &Objects, svc: &Value) -> Result<(), (&'static str, String)> {
    let backend = backend(objects, svc)?;
    let group = str_at(svc, "/spec/group");
    let version = str_at(svc, "/spec/version");
    let path = format!("/apis/{group}/{version}");
    let resp = forward(
        &backend,
        Method::GET,
        &path,
        &HeaderMap::new(),
        Bytes::new(),
    )
    .await
    .map_err(|e| {
        (
            "FailedDiscoveryCheck",
            format!(
                "failing or missing response from https://{}{path}: {e}",
                backend.addr
            ),
        )
    })?;
    if resp.status() != StatusCode::OK {
        return Err((
            "FailedDiscoveryCheck",
            format!(
                "failing or missing response from https://{}{path}: bad status from https://{}{path}: {}",
                backend.addr,
                backend.addr,
                resp.status().as_u16()
            ),
        ));
    }
    Ok(())
}
