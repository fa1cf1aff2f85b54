//! The StatefulSet controller, as Kubernetes' does it: pods named `<set>-<ordinal>` with stable
//! hostnames under the governing Service (`subdomain`), one PersistentVolumeClaim per
//! volumeClaimTemplate and ordinal (`<template>-<set>-<ordinal>`) created before its pod and
//! kept when the pod goes (unless the retention policy says Delete, through ownerReferences the
//! garbage collector follows); OrderedReady (one pod at a time, each Running and Ready, and
//! available for minReadySeconds, before the next; scale-down from the highest ordinal) or
//! Parallel; rolling updates from the highest ordinal down to `partition` (or `maxUnavailable`
//! at a time), OnDelete; a ControllerRevision per pod template, history truncated to
//! `revisionHistoryLimit`; and the status `kubectl rollout status` reads.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::deployment::int_or_percent;
use super::{
    controlled_by, controller_ref, deleting, name, namespace, pod_available, pod_ready,
    pod_terminal, uid, write_status,
};
use crate::api::{ApiError, DeleteOptions, Objects, Part, resources};
use crate::reconcile::events::{EventType, record};

/// The label holding the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// One pass over every StatefulSet.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (sets, _) = objects.list(resources::stateful_sets(), None)?;
    if sets.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    let (revisions, _) = objects.list(resources::controller_revisions(), None)?;
    for set in sets {
        if let Err(e) = sync(objects, &set, &pods, &revisions).await {
            tracing::debug!(statefulset = %name(&set), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The ordinal of a pod of set `set_name` (`web-3` → 3).
fn ordinal(pod: &Value, set_name: &str) -> Option<i64> {
    name(pod)
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// What a revision saves: the set's pod template, as a strategic merge patch that replaces it
/// (`kubectl rollout undo` sends this back as it is).
pub fn revision_data(set: &Value) -> Value {
    let mut template = set
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(m) = template.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Kubernetes' "safe" encoding of an FNV-1a hash of `text` (no vowels, no 0, 1 or 3).
pub fn safe_hash(text: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The pod template a revision holds.
fn revision_template(rev: &Value) -> Value {
    let mut t = rev
        .pointer("/data/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// The revision of the set's current template: reused when the newest revision already holds
/// it, renumbered to the top when an older one does (a rollback), created otherwise. Returns the
/// revision and the collision count used.
async fn update_revision(
    objects: &Objects,
    set: &Value,
    revs: &[&Value],
) -> Result<(Value, i64), ApiError> {
    let data = revision_data(set);
    let next = revs.last().map_or(1, |r| int(r, "/revision") + 1);
    if let Some(last) = revs.last()
        && last.get("data") == Some(&data)
    {
        return Ok(((*last).clone(), int(set, "/status/collisionCount")));
    }
    let ns = namespace(set);
    if let Some(old) = revs.iter().rev().find(|r| r.get("data") == Some(&data)) {
        let bumped = objects
            .modify(
                resources::controller_revisions(),
                Some(ns),
                name(old),
                Part::Main,
                |r| {
                    r["revision"] = json!(next);
                    Ok(())
                },
            )
            .await?;
        return Ok((bumped, int(set, "/status/collisionCount")));
    }
    let mut collision = int(set, "/status/collisionCount");
    loop {
        let hash = safe_hash(&format!("{data}{collision}"));
        let rev_name = format!("{}-{hash}", name(set));
        let mut labels = set
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        labels[HASH_LABEL] = json!(hash);
        let rev = json!({
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": rev_name,
                "namespace": ns,
                "labels": labels,
                "annotations": set.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
                "ownerReferences": [controller_ref(set)],
            },
            "data": data,
            "revision": next,
        });
        match objects
            .create(resources::controller_revisions(), Some(ns), rev, false)
            .await
        {
            Ok(r) => return Ok((r, collision)),
            Err(ApiError::AlreadyExists { .. }) => {
                let existing =
                    objects.get(resources::controller_revisions(), Some(ns), &rev_name)?;
                if existing.get("data") == Some(&data) && controlled_by(&existing, uid(set)) {
                    return Ok((existing, collision));
                }
                collision += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The claim names of the set's pod `ordinal`, by template name.
fn claims(set: &Value, ordinal: i64) -> Vec<(String, String)> {
    set.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let t_name = t
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let claim = format!("{t_name}-{}-{ordinal}", name(set));
            (t_name, claim)
        })
        .collect()
}

/// The pod for `ordinal` from `template` of revision `rev_name`: its stable name, hostname and
/// subdomain, identity labels, and its claims in place of same-named template volumes.
fn new_pod(set: &Value, ordinal: i64, template: &Value, rev_name: &str) -> Value {
    let pod_name = format!("{}-{ordinal}", name(set));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.is_object() {
        meta = json!({});
    }
    meta["name"] = json!(pod_name);
    meta["namespace"] = json!(namespace(set));
    meta["ownerReferences"] = json!([controller_ref(set)]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("generateName");
        m.remove("creationTimestamp");
        let labels = m.entry("labels").or_insert_with(|| json!({}));
        labels[POD_NAME_LABEL] = json!(pod_name);
        labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
        labels[REVISION_LABEL] = json!(rev_name);
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = set
        .pointer("/spec/serviceName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(svc);
    }
    let claims = claims(set, ordinal);
    if !claims.is_empty() {
        let mut vols: Vec<Value> = claims
            .iter()
            .map(|(t, c)| json!({"name": t, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        vols.extend(
            spec.get("volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| !claims.iter().any(|(t, _)| v["name"] == t.as_str()))
                .cloned(),
        );
        spec["volumes"] = json!(vols);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

/// Creates the claims of pod `ordinal` that do not exist yet.
async fn create_claims(objects: &Objects, set: &Value, ordinal: i64) -> Result<(), ApiError> {
    let ns = namespace(set);
    let pod_name = format!("{}-{ordinal}", name(set));
    let templates: Vec<Value> = set
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let selector_labels = set
        .pointer("/spec/selector/matchLabels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let delete_with_set = set
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete");
    for (t, (_, claim)) in templates.iter().zip(claims(set, ordinal)) {
        match objects.get(resources::persistent_volume_claims(), Some(ns), &claim) {
            Ok(existing) if deleting(&existing) => {
                return Err(ApiError::Conflict {
                    resource: "persistentvolumeclaims".into(),
                    name: claim.clone(),
                    detail: format!("pvc {claim} is being deleted"),
                });
            }
            Ok(_) => continue,
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut meta = t.get("metadata").cloned().unwrap_or(json!({}));
        meta["name"] = json!(claim);
        meta["namespace"] = json!(ns);
        let mut labels = meta.get("labels").cloned().unwrap_or_else(|| json!({}));
        if let (Some(l), Some(sel)) = (labels.as_object_mut(), selector_labels.as_object()) {
            for (k, v) in sel {
                l.insert(k.clone(), v.clone());
            }
        }
        meta["labels"] = labels;
        if delete_with_set {
            meta["ownerReferences"] = json!([controller_ref(set)]);
        }
        let pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta,
            "spec": t.get("spec").cloned().unwrap_or(json!({})),
        });
        match objects
            .create(resources::persistent_volume_claims(), Some(ns), pvc, false)
            .await
        {
            Ok(_) => {
                record(
                    objects,
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!(
                        "create Claim {claim} Pod {pod_name} in StatefulSet {} success",
                        name(set)
                    ),
                    "statefulset-controller",
                )
                .await
            }
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => {
                record(
                    objects,
                    set,
                    EventType::Warning,
                    "FailedCreate",
                    &format!(
                        "create Claim {claim} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                        name(set)
                    ),
                    "statefulset-controller",
                )
                .await;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, the claims of a pod that is scaled away get the pod as their
/// owner, so the garbage collector deletes them once the pod is gone.
async fn release_claims(objects: &Objects, set: &Value, pod: &Value) -> Result<(), ApiError> {
    let scaled_delete = set
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenScaled")
        .and_then(Value::as_str)
        == Some("Delete");
    let Some(ord) = ordinal(pod, name(set)).filter(|_| scaled_delete) else {
        return Ok(());
    };
    let owner = controller_ref(pod);
    for (_, claim) in claims(set, ord) {
        let r = objects
            .modify(
                resources::persistent_volume_claims(),
                Some(namespace(set)),
                &claim,
                Part::Main,
                |c| {
                    c["metadata"]["ownerReferences"] = json!([owner.clone()]);
                    Ok(())
                },
            )
            .await;
        super::ignore_missing(r)?;
    }
    Ok(())
}

/// Running and Ready and not being deleted.
fn healthy(pod: &Value) -> bool {
    !deleting(pod)
        && pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod_ready(pod)
}

fn revision_of(pod: &Value) -> &str {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(REVISION_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn event(objects: &Objects, set: &Value, ty: EventType, reason: &str, msg: String) {
    record(objects, set, ty, reason, &msg, "statefulset-controller").await;
}

async fn delete_pod(objects: &Objects, set: &Value, pod: &Value) -> Result<(), ApiError> {
    let r = objects
        .delete(
            resources::pods(),
            Some(namespace(pod)),
            name(pod),
            &DeleteOptions::default(),
        )
        .await;
    super::ignore_missing(r)?;
    event(
        objects,
        set,
        EventType::Normal,
        "SuccessfulDelete",
        format!(
            "delete Pod {} in StatefulSet {} successful",
            name(pod),
            name(set)
        ),
    )
    .await;
    Ok(())
}

async fn sync(
    objects: &Objects,
    set: &Value,
    pods: &[Value],
    revisions: &[Value],
) -> Result<(), ApiError> {
    let ns = namespace(set);
    let set_name = name(set);
    let set_uid = uid(set);
    let mine: Vec<&Value> = pods
        .iter()
        .filter(|p| namespace(p) == ns && controlled_by(p, set_uid))
        .collect();
    let mut revs: Vec<&Value> = revisions
        .iter()
        .filter(|r| namespace(r) == ns && controlled_by(r, set_uid))
        .collect();
    revs.sort_by_key(|r| (int(r, "/revision"), name(r).to_string()));
    let (update_rev, collision) = update_revision(objects, set, &revs).await?;
    let update_name = name(&update_rev).to_string();
    let current_name = set
        .pointer("/status/currentRevision")
        .and_then(Value::as_str)
        .filter(|c| revs.iter().any(|r| name(r) == *c))
        .unwrap_or(&update_name)
        .to_string();
    let current_template = revs
        .iter()
        .find(|r| name(r) == current_name)
        .map(|r| revision_template(r))
        .unwrap_or_else(|| revision_template(&update_rev));
    let update_template = set
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));

    let replicas = int(set, "/spec/replicas");
    let start = int(set, "/spec/ordinals/start");
    let parallel = set
        .pointer("/spec/podManagementPolicy")
        .and_then(Value::as_str)
        == Some("Parallel");
    let min_ready = int(set, "/spec/minReadySeconds");
    let strategy = set
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    let rolling = set.pointer("/spec/updateStrategy/rollingUpdate");
    let partition = rolling
        .and_then(|r| r.get("partition"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    // Without a rollingUpdate block, ordinals below the current replica count keep the current
    // revision (Kubernetes' rule).
    let current_below = if rolling.is_none_or(Value::is_null) {
        start + int(set, "/status/currentReplicas")
    } else {
        start + partition
    };

    let by_ord: BTreeMap<i64, &Value> = mine
        .iter()
        .filter_map(|p| ordinal(p, set_name).map(|o| (o, *p)))
        .collect();
    let in_range = |o: i64| o >= start && o < start + replicas;

    let mut blocked = false;
    if !deleting(set) {
        for ord in start..start + replicas {
            match by_ord.get(&ord) {
                None => {
                    let (template, rev) = if ord < current_below {
                        (&current_template, current_name.as_str())
                    } else {
                        (&update_template, update_name.as_str())
                    };
                    create_claims(objects, set, ord).await?;
                    let pod = new_pod(set, ord, template, rev);
                    let pod_name = name(&pod).to_string();
                    match objects
                        .create(resources::pods(), Some(ns), pod, false)
                        .await
                    {
                        Ok(_) => {
                            event(
                                objects,
                                set,
                                EventType::Normal,
                                "SuccessfulCreate",
                                format!(
                                    "create Pod {pod_name} in StatefulSet {set_name} successful"
                                ),
                            )
                            .await
                        }
                        Err(ApiError::AlreadyExists { .. }) => {}
                        Err(e) => {
                            event(
                                objects,
                                set,
                                EventType::Warning,
                                "FailedCreate",
                                format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                            )
                            .await;
                            return Err(e);
                        }
                    }
                    blocked = true;
                }
                Some(p) if pod_terminal(p) => {
                    // A finished pod is replaced: deleted now, made again on a later pass.
                    if !deleting(p) {
                        delete_pod(objects, set, p).await?;
                    }
                    blocked = true;
                }
                Some(p) if !pod_available(p, min_ready) => blocked = true,
                Some(_) => {}
            }
            if blocked && !parallel {
                break;
            }
        }
    }

    // Scale down: the highest ordinals first, one at a time once every other pod is healthy
    // (OrderedReady), or all at once (Parallel).
    let mut condemned: Vec<&Value> = by_ord
        .iter()
        .filter(|(o, _)| !in_range(**o))
        .map(|(_, p)| *p)
        .collect();
    condemned.reverse();
    if !deleting(set) && (!blocked || parallel) {
        for p in condemned {
            if deleting(p) {
                if !parallel {
                    break;
                }
                continue;
            }
            release_claims(objects, set, p).await?;
            delete_pod(objects, set, p).await?;
            if !parallel {
                blocked = true;
                break;
            }
        }
    }

    // Rolling update: outdated pods from the highest ordinal down to the partition.
    if !deleting(set) && !blocked && strategy == "RollingUpdate" {
        let floor = start + partition;
        let max_unavailable = rolling.and_then(|r| r.get("maxUnavailable"));
        let targets: Vec<&Value> = (floor..start + replicas)
            .rev()
            .filter_map(|o| by_ord.get(&o).copied())
            .collect();
        match max_unavailable.filter(|v| !v.is_null()) {
            Some(mu) => {
                let budget = int_or_percent(Some(mu), replicas, false, 1).max(1);
                let unavailable = by_ord
                    .iter()
                    .filter(|(o, p)| in_range(**o) && !pod_available(p, min_ready))
                    .count() as i64;
                let mut left = budget - unavailable;
                for p in targets {
                    if left <= 0 {
                        break;
                    }
                    if revision_of(p) != update_name && !deleting(p) {
                        delete_pod(objects, set, p).await?;
                        left -= 1;
                    }
                }
            }
            None => {
                for p in targets {
                    if revision_of(p) != update_name && !deleting(p) {
                        delete_pod(objects, set, p).await?;
                        break;
                    }
                    if !healthy(p) {
                        break;
                    }
                }
            }
        }
    }

    // Status, as computeReplicaStatus counts it.
    let created: Vec<&Value> = mine.clone();
    let count = |f: &dyn Fn(&Value) -> bool| created.iter().filter(|p| f(p)).count() as i64;
    let ready = count(&|p| healthy(p));
    let avail = count(&|p| pod_available(p, min_ready));
    let current = count(&|p| !deleting(p) && revision_of(p) == current_name);
    let updated = count(&|p| !deleting(p) && revision_of(p) == update_name);
    let mut status = json!({
        "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": created.len(),
        "readyReplicas": ready,
        "availableReplicas": avail,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_name,
        "updateRevision": update_name,
        "collisionCount": collision,
    });
    if strategy == "RollingUpdate"
        && updated == replicas
        && created.len() as i64 == replicas
        && ready == replicas
    {
        status["currentReplicas"] = json!(updated);
        status["currentRevision"] = json!(update_name);
    }
    let mut keep = Map::new();
    if let Some(Value::Object(old)) = set.get("status") {
        // Fields another writer owns (conditions) stay.
        for (k, v) in old {
            if status.get(k).is_none() {
                keep.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(s) = status.as_object_mut() {
        s.extend(keep);
    }
    write_status(objects, resources::stateful_sets(), set, status.clone()).await?;

    truncate_history(objects, set, &revs, &status, &mine).await
}

/// Deletes the oldest revisions no pod uses beyond `revisionHistoryLimit`.
async fn truncate_history(
    objects: &Objects,
    set: &Value,
    revs: &[&Value],
    status: &Value,
    pods: &[&Value],
) -> Result<(), ApiError> {
    let limit = set
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    if limit < 0 {
        return Ok(());
    }
    let live = |n: &str| {
        status["currentRevision"] == n
            || status["updateRevision"] == n
            || pods.iter().any(|p| revision_of(p) == n)
    };
    let history: Vec<&&Value> = revs.iter().filter(|r| !live(name(r))).collect();
    let excess = history
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    for r in history.into_iter().take(excess) {
        let res = objects
            .delete(
                resources::controller_revisions(),
                Some(namespace(r)),
                name(r),
                &DeleteOptions::default(),
            )
            .await;
        super::ignore_missing(res)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_identity_claims_and_revision() {
        let set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"serviceName": "web", "volumeClaimTemplates": [{"metadata": {"name": "www"}}],
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}],
                    "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}}}});
        let t = set["spec"]["template"].clone();
        let pod = new_pod(&set, 2, &t, "web-abc");
        assert_eq!(pod["metadata"]["name"], "web-2");
        assert_eq!(pod["metadata"]["labels"][POD_NAME_LABEL], "web-2");
        assert_eq!(pod["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "web-abc");
        assert_eq!(pod["spec"]["hostname"], "web-2");
        assert_eq!(pod["spec"]["subdomain"], "web");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-2"}},
                {"name": "cfg", "emptyDir": {}}])
        );
        assert_eq!(ordinal(&pod, "web"), Some(2));
        assert_eq!(
            ordinal(&json!({"metadata": {"name": "web-x"}}), "web"),
            None
        );
    }

    #[test]
    fn revision_data_replaces_the_template() {
        let set = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}});
        let d = revision_data(&set);
        assert_eq!(
            d.to_string(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"labels":{"a":"b"}}}}}"#
        );
        let h = safe_hash(&format!("{d}0"));
        assert!(
            h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
    }
}
