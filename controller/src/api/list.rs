//! LIST: selectors, `limit`/`continue` pagination and the `resourceVersion` /
//! `resourceVersionMatch` rules of the Kubernetes API concepts.
//!
//! The continue token is opaque to clients: base64 of JSON holding the revision of the first
//! page and the store key of the last object returned. The store serves only its current state,
//! so later pages list what is there now after that key (Kubernetes serves the first page's
//! snapshot); a token whose revision has left the watch window is answered with 410 Expired, as
//! Kubernetes does once etcd has compacted it, so clients restart the list.

use base64::Engine as _;
use serde_json::{Value, json};

use super::error::ApiError;
use super::objects::Objects;
use super::resources::Resource;
use super::selectors::{FieldSelector, LabelSelector};

/// What a LIST asks for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Value>,
    pub revision: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

fn encode_token(rev: u64, key: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_token(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rev, start.to_string()))
}

fn key_of(res: &Resource, obj: &Value) -> String {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    res.key(ns, name)
}

/// Lists one page of `res` in `ns` (or everywhere).
pub fn list(
    objects: &Objects,
    res: &Resource,
    ns: Option<&str>,
    opts: &ListOptions,
) -> Result<Page, ApiError> {
    let rv = opts
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {v:?}")))
        })
        .transpose()?;
    if let Some(m) = opts
        .resource_version_match
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        if !matches!(m, "NotOlderThan" | "Exact") {
            return Err(ApiError::Invalid {
                kind: "ListOptions.meta.k8s.io".into(),
                name: String::new(),
                causes: vec![super::FieldError::not_supported(
                    "resourceVersionMatch",
                    &json!(m),
                    &["Exact", "NotOlderThan"],
                )],
            });
        }
        if rv.is_none() {
            return Err(ApiError::Invalid {
                kind: "ListOptions.meta.k8s.io".into(),
                name: String::new(),
                causes: vec![super::FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                )],
            });
        }
        if opts.continue_token.is_some() {
            return Err(ApiError::Invalid {
                kind: "ListOptions.meta.k8s.io".into(),
                name: String::new(),
                causes: vec![super::FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                )],
            });
        }
    }
    let (items, now) = objects.list(res, ns)?;
    let (start, revision) = match &opts.continue_token {
        Some(t) if !t.is_empty() => {
            let (rev, start) = decode_token(t)?;
            // A revision outside the watch window can no longer be listed consistently.
            if rev < now && objects.store.watch(rev).is_err() {
                return Err(ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                ));
            }
            (Some(start), rev)
        }
        _ => {
            if let Some(want) = rv.filter(|r| *r > 0) {
                if want > now {
                    return Err(ApiError::TooLargeResourceVersion {
                        requested: want,
                        current: now,
                    });
                }
                if opts.resource_version_match.as_deref() == Some("Exact") && want < now {
                    // Only the current state is kept: an exact older list is gone.
                    return Err(ApiError::Gone(format!("too old resource version: {want}")));
                }
            }
            (None, now)
        }
    };
    let mut selected = items.into_iter().filter(|o| {
        start.as_ref().is_none_or(|s| key_of(res, o) > *s)
            && opts.labels.matches(o)
            && opts.fields.matches(res, o)
    });
    let Some(limit) = opts.limit.filter(|l| *l > 0) else {
        return Ok(Page {
            items: selected.collect(),
            revision,
            continue_token: None,
            remaining: None,
        });
    };
    let page: Vec<Value> = selected.by_ref().take(limit).collect();
    let rest = selected.count();
    let token = match page.last() {
        Some(last) if rest > 0 => Some(encode_token(revision, &key_of(res, last))),
        _ => None,
    };
    // Kubernetes reports the count only when it is exact, i.e. without selectors.
    let remaining = (rest > 0 && opts.labels.is_empty() && opts.fields.is_empty()).then_some(rest);
    Ok(Page {
        items: page,
        revision,
        continue_token: token,
        remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token(42, "/registry/core/pods/default/a");
        assert_eq!(
            decode_token(&t).unwrap(),
            (42, "/registry/core/pods/default/a".to_string())
        );
        assert!(decode_token("!!!").is_err());
        assert!(decode_token("e30").is_err());
    }
}
