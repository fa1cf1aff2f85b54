//! `ApiError`: every way an API request fails, and the one place it becomes a Kubernetes
//! `Status` object with the right HTTP code and reason.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::protobuf::ProtobufError;
use crate::store::StoreError;

/// How long a client is told to wait before retrying a request that was not carried out.
const RETRY_AFTER_SECONDS: u32 = 1;

/// One invalid field, as Kubernetes reports it in `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueNotSupported`, `FieldValueForbidden`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }
    /// A required field, with why (`Required value: must specify a handler type`).
    pub fn required_because(field: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {detail}"),
        }
    }
    /// A reference to something that does not exist (`Not found: "data"`).
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueNotFound",
            field: field.into(),
            message: format!("Not found: {value}"),
        }
    }
    pub fn invalid(
        field: impl Into<String>,
        value: &Value,
        detail: impl std::fmt::Display,
    ) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", detail.into()),
        }
    }
}

/// Errors of the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("the server could not find the requested resource")]
    NoSuchPath,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        resource: String,
        name: String,
        detail: String,
    },
    /// Server-side apply found fields owned by other managers with other values.
    #[error("Apply failed with {} conflict{}: {}", .conflicts.len(), if .conflicts.len() == 1 { "" } else { "s" }, conflicts_text(.conflicts, .api_version))]
    ApplyConflict {
        resource: String,
        name: String,
        /// (manager, field path such as `.spec.replicas`)
        conflicts: Vec<(String, String)>,
        api_version: String,
    },
    /// `kind` is the group-kind as Kubernetes prints it: `Deployment.apps`, `Pod`.
    #[error("{}", invalid_text(.kind, .name, .causes))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<FieldError>,
    },
    /// A JSON patch whose `test` operation failed (Kubernetes' 422 without causes).
    #[error("the server rejected our request due to an error in our request")]
    PatchTestFailed,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// A write refused for what it would do to one object (`NewForbidden`).
    #[error("{resource} \"{name}\" is forbidden: {detail}")]
    ForbiddenObject {
        resource: String,
        name: String,
        detail: String,
    },
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// A verb the resource does not have (`watch` of componentstatuses).
    #[error("{verb} is not supported on resources of kind \"{resource}\"")]
    VerbNotSupported { verb: String, resource: String },
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// A protobuf body that cannot be decoded or is not the kind the URL takes.
    #[error(transparent)]
    Protobuf(#[from] ProtobufError),
    /// The client accepts none of the media types the resource is served in (listed).
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Gone(String),
    /// The message, which starts `Request entity too large: ` as Kubernetes' does.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// The request was not carried out at all (no leader could take a write): the answer has a
    /// `Retry-After`, on which Kubernetes clients retry any verb by themselves.
    #[error("{0}")]
    RetryLater(String),
    /// No answer in time; a write may or may not have been carried out. No `Retry-After`:
    /// retrying a create or an update blindly could apply it twice.
    #[error("{0}")]
    Timeout(String),
    /// A read at a resourceVersion the store has not reached (client-go's
    /// `IsTooLargeResourceVersion` looks for the cause, and retries after a second).
    #[error("Timeout: Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
    /// An eviction that would break a PodDisruptionBudget (429; clients such as `kubectl
    /// drain` retry); `message` is the cause, naming the budget.
    #[error("Cannot evict pod as it would violate the pod's disruption budget.")]
    DisruptionBudget {
        message: String,
        /// Seconds to wait before retrying (a budget the controller has not caught up with).
        retry_after: u32,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

fn conflicts_text(conflicts: &[(String, String)], api_version: &str) -> String {
    conflicts
        .iter()
        .map(|(m, f)| format!("conflict with \"{m}\" using {api_version}: {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `NewInvalid`'s message: the causes once each (`ToAggregate` drops repeats), none at all
/// without causes.
fn invalid_text(kind: &str, name: &str, causes: &[FieldError]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in causes {
        let part = format!("{}: {}", c.field, c.message);
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    match parts.as_slice() {
        [] => format!("{kind} {name:?} is invalid"),
        [one] => format!("{kind} {name:?} is invalid: {one}"),
        _ => format!("{kind} {name:?} is invalid: [{}]", parts.join(", ")),
    }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchPath => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } | ApiError::PatchTestFailed => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) | ApiError::ForbiddenObject { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed | ApiError::VerbNotSupported { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Protobuf(ProtobufError::Descriptors(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Protobuf(e) if e.unsupported_media() => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Protobuf(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ServiceUnavailable(_) | ApiError::RetryLater(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) | ApiError::TooLargeResourceVersion { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ApiError::DisruptionBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchPath => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::PatchTestFailed => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) | ApiError::ForbiddenObject { .. } => "Forbidden",
            ApiError::MethodNotAllowed | ApiError::VerbNotSupported { .. } => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Protobuf(ProtobufError::Descriptors(_)) => "InternalError",
            ApiError::Protobuf(e) if e.unsupported_media() => "UnsupportedMediaType",
            ApiError::Protobuf(_) => "BadRequest",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::ServiceUnavailable(_) | ApiError::RetryLater(_) => "ServiceUnavailable",
            ApiError::Timeout(_) | ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::DisruptionBudget { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// Seconds a client should wait before retrying, sent as `Retry-After` and in the details.
    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::RetryLater(_) => Some(RETRY_AFTER_SECONDS),
            ApiError::TooLargeResourceVersion { .. } => Some(1),
            ApiError::DisruptionBudget { retry_after, .. } if *retry_after > 0 => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The Kubernetes `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut details = serde_json::Map::new();
        // Kubernetes writes `"details":{}` for these (a non-nil, empty StatusDetails).
        let mut empty_details = matches!(
            self,
            ApiError::NoSuchPath
                | ApiError::MethodNotAllowed
                | ApiError::Timeout(_)
                | ApiError::PatchTestFailed
        );
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. }
            | ApiError::ForbiddenObject { resource, name, .. } => {
                let (kind, group) = match resource.split_once('.') {
                    Some((k, g)) => (k, g),
                    None => (resource.as_str(), ""),
                };
                details.insert("name".into(), json!(name));
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(kind));
            }
            ApiError::ApplyConflict {
                resource,
                name,
                conflicts,
                api_version,
            } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
                details.insert("name".into(), json!(name));
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(kind));
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {api_version}"), "field": f}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            ApiError::Invalid { kind, name, causes } => {
                let (kind, group) = kind.split_once('.').unwrap_or((kind.as_str(), ""));
                if !name.is_empty() {
                    details.insert("name".into(), json!(name));
                }
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(kind));
                empty_details = true;
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            ApiError::DisruptionBudget { message, .. } => {
                details.insert(
                    "causes".into(),
                    json!([{"reason": "DisruptionBudget", "message": message}]),
                );
            }
            ApiError::VerbNotSupported { resource, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(kind));
            }
            ApiError::TooLargeResourceVersion { .. } => {
                details.insert(
                    "causes".into(),
                    json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]),
                );
            }
            _ => {}
        }
        if let Some(s) = self.retry_after() {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if !details.is_empty() || empty_details {
            status["details"] = Value::Object(details);
        }
        status
    }

    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            resource: resource.to_string(),
            name: name.to_string(),
        }
    }

    pub fn modified(resource: &str, name: &str) -> Self {
        ApiError::Conflict {
            resource: resource.to_string(),
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(
            self,
            ApiError::Internal(_) | ApiError::Protobuf(ProtobufError::Descriptors(_))
        ) {
            tracing::error!(error = %self, "internal error");
        }
        let body = super::encode::to_vec(&self.status());
        let mut resp = (
            self.code(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after() {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(s),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Nothing was proposed: the client may safely send it again.
            StoreError::NoLeader
            | StoreError::NotLeader { .. }
            | StoreError::ProposalDropped
            | StoreError::Unreachable { .. } => ApiError::RetryLater(e.to_string()),
            StoreError::Stopped => ApiError::ServiceUnavailable(e.to_string()),
            // As the kube-apiserver answers when etcd does not answer in time.
            StoreError::Timeout | StoreError::NoAnswer { .. } => ApiError::Timeout(format!(
                "Timeout: request did not complete within requested timeout - {e}"
            )),
            StoreError::TooOld { requested, oldest } => ApiError::Gone(format!(
                "too old resource version: {requested} ({oldest})"
            )),
            StoreError::PreconditionFailed { key, .. } => ApiError::Conflict {
                resource: "object".into(),
                name: key,
                detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
            },
            StoreError::Disk(_) | StoreError::Raft(_) | StoreError::Thread(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_the_field() {
        let e = ApiError::Invalid {
            kind: "Pod".into(),
            name: "web".into(),
            causes: vec![FieldError::required("spec.containers[0].image")],
        };
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "Pod \"web\" is invalid: spec.containers[0].image: Required value"
        );
        assert_eq!(
            s["details"]["causes"][0]["field"],
            "spec.containers[0].image"
        );
    }

    #[test]
    fn store_errors_say_whether_a_retry_is_safe() {
        // Certainly not proposed: 503 with Retry-After, on which client-go retries any verb.
        for e in [
            StoreError::NoLeader,
            StoreError::Unreachable { id: 2 },
            StoreError::ProposalDropped,
        ] {
            let resp = ApiError::from(e).into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        // Maybe applied: 504 Timeout as the kube-apiserver answers, and no Retry-After.
        for e in [StoreError::NoAnswer { id: 2 }, StoreError::Timeout] {
            let err = ApiError::from(e);
            let s = err.status();
            assert_eq!(
                (s["code"].as_u64(), s["reason"].as_str()),
                (Some(504), Some("Timeout"))
            );
            let resp = err.into_response();
            assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
            assert!(resp.headers().get("retry-after").is_none());
        }
    }

    #[test]
    fn not_found_status_has_kind_and_group() {
        let s = ApiError::not_found("leases.coordination.k8s.io", "n1").status();
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["group"], "coordination.k8s.io");
        assert_eq!(s["details"]["kind"], "leases");
        assert_eq!(s["message"], "leases.coordination.k8s.io \"n1\" not found");
    }
}
