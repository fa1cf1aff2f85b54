//! The deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`,
//! labelled `pod-template-hash`), rolled over with the RollingUpdate strategy's maxSurge and
//! maxUnavailable (or Recreate), scaled with the deployment, old ones pruned past
//! `revisionHistoryLimit`, and status with the Available and Progressing conditions.
//!
//! Each pass takes one step (scale the new set up within the surge, scale old sets down within
//! the availability budget) and the next pass, woken by the pods' status changes, takes the next.
//!
//! What `kubectl rollout` works from is kept as Kubernetes keeps it: each set's revision
//! (`deployment.kubernetes.io/revision`, the newest also on the deployment; a set rolled back to
//! becomes the newest revision and remembers its old numbers in `revision-history`), the
//! deployment's annotations copied to its new set (so `kubernetes.io/change-cause` shows in
//! `rollout history`), `spec.paused` (no rollout, but scaling; Progressing Unknown), and
//! `progressDeadlineSeconds` (Progressing False, ProgressDeadlineExceeded, once a rollout has
//! made no progress for that long).

use serde_json::{Map, Value, json};

use super::{
    condition, controlled_by, controller_ref, deleting, name, namespace, uid, write_status,
};
use crate::api::{ApiError, DeleteOptions, Objects, Part, resources};
use crate::reconcile::events::{EventType, record};

const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX,
    "deprecated.deployment.rollback.to",
];

/// The deployment's annotations its new ReplicaSet carries.
fn copied_annotations(d: &Value) -> Map<String, Value> {
    d.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// maxSurge of the deployment's RollingUpdate strategy (0 for Recreate).
fn surge_of(d: &Value, want: i64) -> i64 {
    if d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        return 0;
    }
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    int_or_percent(ru.and_then(|r| r.get("maxSurge")), want, true, 1)
}

/// One pass over every deployment.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (deploys, _) = objects.list(resources::deployments(), None)?;
    if deploys.is_empty() {
        return Ok(());
    }
    let (sets, _) = objects.list(resources::replica_sets(), None)?;
    for d in deploys {
        if deleting(&d) {
            continue;
        }
        if let Err(e) = sync(objects, &d, &sets).await {
            tracing::debug!(deployment = %name(&d), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

/// FNV-1a over the template, encoded with Kubernetes' "safe" alphabet (no vowels, no 0/1/3).
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in t.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = h;
    while n > 0 {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
    }
    out
}

/// An int-or-percent of `total` (maxSurge rounds up, maxUnavailable down).
pub fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(default),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

fn replicas(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn scale(objects: &Objects, d: &Value, rs: &Value, to: i64) -> Result<(), ApiError> {
    let from = replicas(rs, "/spec/replicas");
    if from == to {
        return Ok(());
    }
    let want = replicas(d, "/spec/replicas");
    objects
        .modify(
            resources::replica_sets(),
            Some(namespace(rs)),
            name(rs),
            Part::Main,
            |o| {
                o["spec"]["replicas"] = json!(to);
                let a = o["metadata"]
                    .as_object_mut()
                    .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
                if let Some(Value::Object(a)) = a {
                    a.insert(DESIRED.into(), json!(want.to_string()));
                    a.insert(MAX.into(), json!((want + surge_of(d, want)).to_string()));
                }
                Ok(())
            },
        )
        .await?;
    let verb = if to > from { "up" } else { "down" };
    let msg = format!("Scaled {verb} replica set {} from {from} to {to}", name(rs));
    record(
        objects,
        d,
        EventType::Normal,
        "ScalingReplicaSet",
        &msg,
        "deployment-controller",
    )
    .await;
    Ok(())
}

async fn sync(objects: &Objects, d: &Value, all_sets: &[Value]) -> Result<(), ApiError> {
    let ns = namespace(d);
    let mut sets: Vec<Value> = all_sets
        .iter()
        .filter(|rs| namespace(rs) == ns && controlled_by(rs, uid(d)))
        .cloned()
        .collect();
    sets.sort_by_key(revision);
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let want = replicas(d, "/spec/replicas");
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let is_new = |rs: &Value| {
        rs.pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str)
            == Some(hash.as_str())
    };
    let max_rev = sets.iter().map(revision).max().unwrap_or(0);
    let mut created_new = false;
    let new_rs = match sets.iter().find(|rs| is_new(rs)).cloned() {
        Some(rs) => {
            // A rollback to an older template makes its set the newest revision again, and
            // the deployment's annotations follow it.
            let rollback = revision(&rs) < max_rev && !paused;
            let copied = copied_annotations(d);
            let stale = copied.iter().any(|(k, v)| {
                rs.pointer("/metadata/annotations").and_then(|a| a.get(k)) != Some(v)
            });
            if rollback || stale {
                let next = (max_rev + 1).to_string();
                let out = objects
                    .modify(
                        resources::replica_sets(),
                        Some(ns),
                        name(&rs),
                        Part::Main,
                        |o| {
                            let a = &mut o["metadata"]["annotations"];
                            if !a.is_object() {
                                *a = json!({});
                            }
                            for (k, v) in &copied {
                                a[k] = v.clone();
                            }
                            if rollback {
                                let old = a[REVISION].as_str().unwrap_or("").to_string();
                                let history = match a[REVISION_HISTORY].as_str() {
                                    Some(h) if !h.is_empty() => format!("{h},{old}"),
                                    _ => old,
                                };
                                a[REVISION_HISTORY] = json!(history);
                                a[REVISION] = json!(next);
                            }
                            Ok(())
                        },
                    )
                    .await?;
                sets.retain(|s| uid(s) != uid(&out));
                sets.push(out.clone());
                out
            } else {
                rs
            }
        }
        None if paused => {
            // Paused with a new template: no new set, but the deployment's scale still holds
            // for the set that runs.
            let active: Vec<&Value> = sets
                .iter()
                .filter(|rs| replicas(rs, "/spec/replicas") > 0)
                .collect();
            let target = match active.as_slice() {
                [one] => Some(*one),
                [] => sets.last(),
                _ => None,
            };
            if let Some(rs) = target {
                scale(objects, d, rs, want).await?;
            }
            let newest = sets.last().cloned().unwrap_or(json!({}));
            let status = status_of(d, &newest, &sets, want, false);
            return write_status(objects, resources::deployments(), d, status).await;
        }
        None => {
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut labels: Map<String, Value> = t["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert("pod-template-hash".into(), json!(hash));
            let surge_ok = sets.is_empty();
            let initial = if surge_ok { want } else { 0 };
            let rs = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("{}-{hash}", name(d)),
                    "namespace": ns,
                    "labels": labels,
                    "annotations": new_annotations(d, max_rev + 1, want),
                    "ownerReferences": [controller_ref(d)],
                },
                "spec": {
                    "replicas": initial,
                    "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
                    "selector": selector,
                    "template": t,
                },
            });
            let out = match objects
                .create(resources::replica_sets(), Some(ns), rs, false)
                .await
            {
                Ok(o) => o,
                // Created by an earlier pass that this list did not see yet.
                Err(ApiError::AlreadyExists { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            let msg = format!("Scaled up replica set {} from 0 to {initial}", name(&out));
            record(
                objects,
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                &msg,
                "deployment-controller",
            )
            .await;
            created_new = true;
            sets.push(out.clone());
            out
        }
    };
    let old: Vec<Value> = sets
        .iter()
        .filter(|rs| uid(rs) != uid(&new_rs))
        .cloned()
        .collect();
    if paused {
        // Scaling a paused deployment resizes the newest set (the others stay as they are).
        let total: i64 = sets.iter().map(|rs| replicas(rs, "/spec/replicas")).sum();
        let old_total = total - replicas(&new_rs, "/spec/replicas");
        scale(objects, d, &new_rs, (want - old_total).max(0)).await?;
    } else {
        roll(objects, d, &new_rs, &old, want).await?;
    }
    // The deployment carries its newest revision.
    let rev = revision(&new_rs).to_string();
    if d.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        != Some(rev.as_str())
    {
        let r = objects
            .modify(
                resources::deployments(),
                Some(ns),
                name(d),
                Part::Main,
                |o| {
                    let a = &mut o["metadata"]["annotations"];
                    if !a.is_object() {
                        *a = json!({});
                    }
                    a[REVISION] = json!(rev);
                    Ok(())
                },
            )
            .await;
        super::ignore_missing(r)?;
    }
    // Old sets scaled to zero beyond the history limit go, oldest first.
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let idle: Vec<&Value> = old
        .iter()
        .filter(|rs| replicas(rs, "/spec/replicas") == 0 && replicas(rs, "/status/replicas") == 0)
        .collect();
    if idle.len() > limit {
        for rs in &idle[..idle.len() - limit] {
            match objects
                .delete(
                    resources::replica_sets(),
                    Some(ns),
                    name(rs),
                    &DeleteOptions::default(),
                )
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let status = status_of(d, &new_rs, &sets, want, created_new);
    write_status(objects, resources::deployments(), d, status).await
}

/// A new ReplicaSet's annotations: the deployment's copied ones, its revision and sizes.
fn new_annotations(d: &Value, rev: i64, want: i64) -> Value {
    let mut a = copied_annotations(d);
    a.insert(REVISION.into(), json!(rev.to_string()));
    a.insert(DESIRED.into(), json!(want.to_string()));
    a.insert(MAX.into(), json!((want + surge_of(d, want)).to_string()));
    Value::Object(a)
}

/// One step of the rollout.
async fn roll(
    objects: &Objects,
    d: &Value,
    new_rs: &Value,
    old: &[Value],
    want: i64,
) -> Result<(), ApiError> {
    let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
    let new_spec = replicas(new_rs, "/spec/replicas");
    if recreate {
        let old_running: i64 = old.iter().map(|rs| replicas(rs, "/status/replicas")).sum();
        for rs in old {
            scale(objects, d, rs, 0).await?;
        }
        if old_running == 0 {
            scale(objects, d, new_rs, want).await?;
        }
        return Ok(());
    }
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = int_or_percent(ru.and_then(|r| r.get("maxSurge")), want, true, 1);
    let mut unavailable = int_or_percent(ru.and_then(|r| r.get("maxUnavailable")), want, false, 0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if old.iter().all(|rs| replicas(rs, "/spec/replicas") == 0) {
        // Nothing to roll: the new set simply follows the deployment's scale.
        return scale(objects, d, new_rs, want).await;
    }
    // Scale up the new set within the surge.
    let total: i64 = old
        .iter()
        .map(|rs| replicas(rs, "/spec/replicas"))
        .sum::<i64>()
        + new_spec;
    if new_spec < want {
        let room = (want + surge - total).max(0);
        let to = want.min(new_spec + room);
        if to > new_spec {
            scale(objects, d, new_rs, to).await?;
        }
    } else if new_spec > want {
        scale(objects, d, new_rs, want).await?;
    }
    // Counts are trusted only once the replicaset controller has seen every set's latest spec;
    // until then a scale-down could count pods that are already going.
    let settled = old.iter().chain(std::iter::once(new_rs)).all(|rs| {
        rs.pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            >= rs.pointer("/metadata/generation").and_then(Value::as_i64)
    });
    if !settled {
        return Ok(());
    }
    // Scale old sets down as far as availability allows: their unavailable pods first, then
    // available ones while at least want - maxUnavailable stay available.
    let min_available = want - unavailable;
    let available: i64 = old
        .iter()
        .chain(std::iter::once(new_rs))
        .map(|rs| replicas(rs, "/status/availableReplicas"))
        .sum();
    let mut budget = (available - min_available).max(0);
    for rs in old {
        let spec = replicas(rs, "/spec/replicas");
        if spec == 0 {
            continue;
        }
        let unhealthy = (spec - replicas(rs, "/status/availableReplicas")).max(0);
        let down = (unhealthy + budget).min(spec);
        budget -= (down - unhealthy).max(0);
        if down > 0 {
            scale(objects, d, rs, spec - down).await?;
        }
    }
    Ok(())
}

/// What a rollout has achieved, compared between passes to see whether it progresses.
struct Progress {
    updated: i64,
    ready: i64,
    available: i64,
    old: i64,
}

/// The Progressing condition, as Kubernetes' controller keeps it: `lastUpdateTime` moves on
/// each step of progress (more updated, ready or available pods, fewer old ones); a rollout
/// without progress for `progressDeadlineSeconds` (600 by default) is ProgressDeadlineExceeded;
/// a paused deployment is Unknown.
fn progressing_condition(
    d: &Value,
    new_rs: &Value,
    now_p: Progress,
    complete: bool,
    created_new: bool,
    now: jiff::Timestamp,
) -> Value {
    let prev = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .cloned();
    let stamp = crate::api::objects::now();
    let make = |status: &str, reason: &str, message: String, touched: bool| {
        let same_status = prev.as_ref().is_some_and(|p| p["status"] == status);
        let transition = match &prev {
            Some(p) if same_status => p["lastTransitionTime"].clone(),
            _ => json!(stamp),
        };
        let unchanged = prev.as_ref().is_some_and(|p| {
            same_status && p["reason"] == reason && p["message"] == message.as_str()
        });
        let update = match &prev {
            Some(p) if unchanged && !touched => p["lastUpdateTime"].clone(),
            _ => json!(stamp),
        };
        json!({"type": "Progressing", "status": status, "reason": reason, "message": message,
            "lastUpdateTime": update, "lastTransitionTime": transition})
    };
    let rs_name = name(new_rs);
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    if paused {
        return make(
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            false,
        );
    }
    if prev
        .as_ref()
        .is_some_and(|p| p["reason"] == "DeploymentPaused")
    {
        return make(
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
            false,
        );
    }
    if complete {
        return make(
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            false,
        );
    }
    if created_new {
        return make(
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{rs_name}\""),
            true,
        );
    }
    let was = |k: &str| {
        d.pointer(&format!("/status/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let old_before = was("replicas") - was("updatedReplicas");
    let moved = now_p.updated > was("updatedReplicas")
        || now_p.ready > was("readyReplicas")
        || now_p.available > was("availableReplicas")
        || now_p.old < old_before;
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600);
    let since = prev
        .as_ref()
        .and_then(|p| p["lastUpdateTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let timed_out = prev
        .as_ref()
        .is_some_and(|p| p["reason"] == "ProgressDeadlineExceeded")
        || (!moved && since.is_some_and(|t| t + jiff::SignedDuration::from_secs(deadline) < now));
    if timed_out && !moved {
        return make(
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            false,
        );
    }
    make(
        "True",
        "ReplicaSetUpdated",
        format!("ReplicaSet \"{rs_name}\" is progressing."),
        moved,
    )
}

fn status_of(d: &Value, new_rs: &Value, sets: &[Value], want: i64, created_new: bool) -> Value {
    let sum = |ptr: &str| sets.iter().map(|rs| replicas(rs, ptr)).sum::<i64>();
    let total = sum("/status/replicas");
    let ready = sum("/status/readyReplicas");
    let available = sum("/status/availableReplicas");
    let updated = replicas(new_rs, "/status/replicas");
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let max_unavailable = int_or_percent(ru.and_then(|r| r.get("maxUnavailable")), want, false, 0);
    let min_available = (want - max_unavailable).max(0);
    let is_available = available >= min_available;
    let available_cond = if is_available {
        condition(
            d,
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            true,
        )
    } else {
        condition(
            d,
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            true,
        )
    };
    let complete =
        updated == want && replicas(new_rs, "/status/availableReplicas") >= want && total == want;
    let progressing = progressing_condition(
        d,
        new_rs,
        Progress {
            updated,
            ready,
            available,
            old: total - updated,
        },
        complete,
        created_new,
        jiff::Timestamp::now(),
    );
    let mut status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": [available_cond, progressing],
    });
    if total - available > 0 {
        status["unavailableReplicas"] = json!(total - available);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_like_kubernetes() {
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, true, 0), 1);
        assert_eq!(int_or_percent(Some(&json!("25%")), 3, false, 0), 0);
        assert_eq!(int_or_percent(Some(&json!("25%")), 10, true, 0), 3);
        assert_eq!(int_or_percent(Some(&json!(2)), 10, true, 0), 2);
    }

    #[test]
    fn hash_ignores_its_own_label_and_follows_the_template() {
        let a = json!({"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"image": "x:1"}]}});
        let mut b = a.clone();
        b["metadata"]["labels"]["pod-template-hash"] = json!("zzz");
        assert_eq!(template_hash(&a), template_hash(&b));
        b["spec"]["containers"][0]["image"] = json!("x:2");
        assert_ne!(template_hash(&a), template_hash(&b));
    }
}
