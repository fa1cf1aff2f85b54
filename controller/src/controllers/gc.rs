//! The garbage collector: objects whose owners (by ownerReference uid) are all gone are deleted
//! (background propagation); dangling references next to a live owner are removed; an owner
//! being deleted in the foreground (`foregroundDeletion` finalizer) has its dependents deleted
//! first and loses the finalizer (and so goes) once none are left; the `orphan` finalizer
//! orphans the dependents, then goes.
//!
//! The lists of different resources are not one snapshot, so before deleting a dependent the
//! collector reads each owner again: an owner created after its resource was listed is not
//! mistaken for a missing one.

use std::collections::HashSet;

use serde_json::Value;

use super::{deleting, ignore_missing, name, namespace, uid};
use crate::api::objects::{FOREGROUND_FINALIZER, owned_by};
use crate::api::resources::{self, RESOURCES, Resource};
use crate::api::{ApiError, DeleteOptions, Objects, Part, Propagation};

const ORPHAN_FINALIZER: &str = "orphan";

/// One pass over every object.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let mut all: Vec<(&'static Resource, Value)> = Vec::new();
    for r in RESOURCES {
        let (items, _) = objects.list(r, None)?;
        all.extend(items.into_iter().map(|o| (r, o)));
    }
    let uids: HashSet<String> = all.iter().map(|(_, o)| uid(o).to_string()).collect();
    for (r, obj) in &all {
        let refs: Vec<Value> = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !refs.is_empty() && !deleting(obj) {
            let missing: Vec<&Value> = refs
                .iter()
                .filter(|rf| !uids.contains(rf["uid"].as_str().unwrap_or("")))
                .filter(|rf| owner_gone(objects, obj, rf))
                .collect();
            if missing.len() == refs.len() {
                tracing::info!(kind = r.kind, object = %name(obj), "owner gone; deleting");
                let opts = DeleteOptions {
                    propagation: Some(Propagation::Background),
                    ..Default::default()
                };
                ignore_missing(objects.delete(r, ns_of(obj), name(obj), &opts).await)?;
            } else if !missing.is_empty() {
                let gone: Vec<String> = missing
                    .iter()
                    .map(|m| m["uid"].as_str().unwrap_or("").to_string())
                    .collect();
                ignore_missing(
                    objects
                        .modify(r, ns_of(obj), name(obj), Part::Main, |o| {
                            if let Some(Value::Array(rs)) =
                                o.pointer_mut("/metadata/ownerReferences")
                            {
                                rs.retain(|x| !gone.iter().any(|g| x["uid"] == g.as_str()));
                            }
                            Ok(())
                        })
                        .await,
                )?;
            }
        }
        if deleting(obj) {
            let fins = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array);
            let has = |f: &str| fins.is_some_and(|fs| fs.iter().any(|x| x == f));
            if has(FOREGROUND_FINALIZER) {
                foreground(objects, r, obj, &all).await?;
            } else if has(ORPHAN_FINALIZER) {
                orphan(objects, r, obj, &all).await?;
            }
        }
    }
    Ok(())
}

fn ns_of(obj: &Value) -> Option<&str> {
    Some(namespace(obj)).filter(|n| !n.is_empty())
}

/// Whether the owner named by `rf` is really gone (a fresh read); an owner of a kind this server
/// does not serve is never taken for gone.
fn owner_gone(objects: &Objects, dependent: &Value, rf: &Value) -> bool {
    let api_version = rf["apiVersion"].as_str().unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(res) = resources::by_kind(group, rf["kind"].as_str().unwrap_or("")) else {
        return false;
    };
    let ns = if res.namespaced {
        ns_of(dependent)
    } else {
        None
    };
    match objects.get(res, ns, rf["name"].as_str().unwrap_or("")) {
        Ok(o) => uid(&o) != rf["uid"].as_str().unwrap_or(""),
        Err(ApiError::NotFound { .. }) => true,
        Err(_) => false,
    }
}

fn dependents_of<'a>(
    owner: &Value,
    all: &'a [(&'static Resource, Value)],
) -> Vec<&'a (&'static Resource, Value)> {
    let owner_uid = uid(owner);
    all.iter()
        .filter(|(r, o)| {
            owned_by(o, owner_uid)
                && (!r.namespaced
                    || namespace(owner).is_empty()
                    || namespace(o) == namespace(owner))
        })
        .collect()
}

async fn remove_finalizer(
    objects: &Objects,
    r: &Resource,
    obj: &Value,
    fin: &str,
) -> Result<(), ApiError> {
    ignore_missing(
        objects
            .modify(r, ns_of(obj), name(obj), Part::Main, |o| {
                if let Some(Value::Array(f)) = o.pointer_mut("/metadata/finalizers") {
                    f.retain(|x| x != fin);
                }
                Ok(())
            })
            .await,
    )
}

async fn foreground(
    objects: &Objects,
    r: &'static Resource,
    owner: &Value,
    all: &[(&'static Resource, Value)],
) -> Result<(), ApiError> {
    let deps = dependents_of(owner, all);
    if deps.is_empty() {
        tracing::info!(kind = r.kind, object = %name(owner), "dependents gone; finishing foreground deletion");
        return remove_finalizer(objects, r, owner, FOREGROUND_FINALIZER).await;
    }
    for (dr, dep) in deps {
        if deleting(dep) {
            continue;
        }
        let opts = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        };
        ignore_missing(objects.delete(dr, ns_of(dep), name(dep), &opts).await)?;
    }
    Ok(())
}

async fn orphan(
    objects: &Objects,
    r: &'static Resource,
    owner: &Value,
    all: &[(&'static Resource, Value)],
) -> Result<(), ApiError> {
    let owner_uid = uid(owner).to_string();
    for (dr, dep) in dependents_of(owner, all) {
        ignore_missing(
            objects
                .modify(dr, ns_of(dep), name(dep), Part::Main, |o| {
                    if let Some(Value::Array(rs)) = o.pointer_mut("/metadata/ownerReferences") {
                        rs.retain(|x| x["uid"] != owner_uid.as_str());
                    }
                    Ok(())
                })
                .await,
        )?;
    }
    remove_finalizer(objects, r, owner, ORPHAN_FINALIZER).await
}
