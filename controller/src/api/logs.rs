//! `pods/log`: the API server asks the pod's node agent for the container's log, as the
//! Kubernetes API server asks the kubelet (`/containerLogs/{ns}/{pod}/{container}`), and streams
//! the answer back.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::error::ApiError;
use super::objects::Objects;
use super::resources;

const PASSED_ON: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "limitBytes",
    "sinceSeconds",
    "sinceTime",
];

pub(super) fn container_name(pod: &Value, q: &HashMap<String, String>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| pod["spec"][l].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c.as_str()) => Ok(c.clone()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
}

/// The address (`host`, port) of the agent on the pod's node, and the node's name.
pub(super) fn node_agent_address(
    objects: &Objects,
    pod: &Value,
) -> Result<(String, i64, String), ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = objects.get(resources::nodes(), None, node_name)?;
    let ip = node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| {
            ApiError::ServiceUnavailable(format!("node {node_name} reports no InternalIP"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(10250);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Ok((host, port, node_name.to_string()))
}

/// Proxies a log request for `pod` to its node's agent.
/// A node agent's answer body as trimmed text, for error messages.
pub(super) async fn body_text(body: hyper::body::Incoming) -> String {
    body.collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default()
}

pub async fn proxy(
    objects: &Objects,
    pod: &Value,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let container = container_name(pod, q)?;
    let (host, port, node_name) = node_agent_address(objects, pod)?;
    // Booleans go on in one spelling, whichever the client used (`follow=True`, `follow`).
    let query: Vec<(&str, String)> = PASSED_ON
        .iter()
        .filter_map(|k| {
            let v = q.get(*k)?;
            Some(match *k {
                "follow" | "previous" | "timestamps" => (*k, super::query_bool(v).to_string()),
                _ => (*k, v.clone()),
            })
        })
        .collect();
    let uri = format!(
        "http://{host}:{port}/containerLogs/{ns}/{name}/{container}?{}",
        serde_urlencoded::to_string(&query).map_err(|e| ApiError::Internal(e.to_string()))?
    );
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let req = axum::http::Request::get(&uri)
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = client.request(req).await.map_err(|e| {
        ApiError::ServiceUnavailable(format!(
            "cannot reach the node agent of {node_name} at {host}:{port}: {e}"
        ))
    })?;
    let status = resp.status();
    if !status.is_success() {
        let body = body_text(resp.into_body()).await;
        return Err(match status {
            StatusCode::NOT_FOUND => ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{name}\" has no log yet: {body}"
            )),
            _ => ApiError::ServiceUnavailable(format!("node agent of {node_name}: {body}")),
        });
    }
    let body = Body::new(resp.into_body());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .map_err(|e| ApiError::Internal(e.to_string()))
}
