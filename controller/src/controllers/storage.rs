//! Storage, as Kubernetes' PV controller, a local-path provisioner (k3s ships Rancher's) and the
//! protection controllers do it: claims are bound to a matching Available volume, or get one
//! made for them when their StorageClass's provisioner is skiff's own (`skiff.io/local-path`:
//! a directory on the node, under the root the node's agent announces, for WaitForFirstConsumer
//! on the node the scheduler chose for the claim's first pod); volumes whose claim is gone are
//! Released (and, with reclaim policy Delete, removed by their node's agent, which owns the
//! directory); claims and volumes being deleted lose their protection finalizer once no pod
//! uses them and nothing is bound.

use serde_json::{Value, json};

use super::{deleting, name, namespace, pod_terminal, uid};
use crate::api::kinds::persistentvolume::PROTECTION as PV_PROTECTION;
use crate::api::kinds::persistentvolumeclaim::PROTECTION as PVC_PROTECTION;
use crate::api::kinds::storageclass::LOCAL_PATH;
use crate::api::strategy::{annotation_at as annotation, str_at as s};
use crate::api::{ApiError, Objects, Part, resources};
use crate::quantity;
use crate::reconcile::events::{EventType, record};

pub use crate::scheduler::volumes::{ROOT_ANNOTATION, SELECTED_NODE};
/// On a volume skiff provisioned: the node that holds its directory.
pub const NODE_ANNOTATION: &str = "skiff.io/local-path-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const COMPONENT: &str = "persistentvolume-controller";

fn storage(v: &Value, ptr: &str) -> i128 {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(quantity::parse_units)
        .unwrap_or(0)
}

fn modes(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Whether a claim uses `claim` (a pod that has not finished).
fn in_use(pods: &[Value], claim: &Value) -> bool {
    pods.iter().any(|p| {
        namespace(p) == namespace(claim)
            && !pod_terminal(p)
            && p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|v| s(v, "/persistentVolumeClaim/claimName") == name(claim))
    })
}

/// One pass over every claim and volume.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (claims, _) = objects.list(resources::persistent_volume_claims(), None)?;
    let (volumes, _) = objects.list(resources::persistent_volumes(), None)?;
    if claims.is_empty() && volumes.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    let (classes, _) = objects.list(resources::storage_classes(), None)?;
    let (nodes, _) = objects.list(resources::nodes(), None)?;
    let world = World {
        claims: &claims,
        volumes: &volumes,
        pods: &pods,
        classes: &classes,
        nodes: &nodes,
    };
    for c in &claims {
        if let Err(e) = sync_claim(objects, &world, c).await {
            tracing::debug!(claim = %name(c), error = %e, "claim sync failed; next pass retries");
        }
    }
    for v in &volumes {
        if let Err(e) = sync_volume(objects, &world, v).await {
            tracing::debug!(volume = %name(v), error = %e, "volume sync failed; next pass retries");
        }
    }
    Ok(())
}

/// What a pass looks at.
struct World<'a> {
    claims: &'a [Value],
    volumes: &'a [Value],
    pods: &'a [Value],
    classes: &'a [Value],
    nodes: &'a [Value],
}

async fn remove_finalizer(
    objects: &Objects,
    res: &'static resources::Resource,
    obj: &Value,
    finalizer: &str,
) -> Result<(), ApiError> {
    let ns = (res.namespaced).then(|| namespace(obj));
    let r = objects
        .modify(res, ns, name(obj), Part::Main, |o| {
            if let Some(Value::Array(f)) = o.pointer_mut("/metadata/finalizers") {
                f.retain(|x| x != finalizer);
            }
            Ok(())
        })
        .await;
    super::ignore_missing(r)
}

async fn set_phase(
    objects: &Objects,
    res: &'static resources::Resource,
    obj: &Value,
    status: Value,
) -> Result<(), ApiError> {
    let mut merged = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    if let (Some(m), Some(add)) = (merged.as_object_mut(), status.as_object()) {
        for (k, v) in add {
            m.insert(k.clone(), v.clone());
        }
    }
    super::write_status(objects, res, obj, merged).await
}

async fn sync_claim(objects: &Objects, w: &World<'_>, claim: &Value) -> Result<(), ApiError> {
    let pvcs = resources::persistent_volume_claims();
    if deleting(claim) {
        let protected = claim
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == PVC_PROTECTION));
        if protected && !in_use(w.pods, claim) {
            remove_finalizer(objects, pvcs, claim, PVC_PROTECTION).await?;
        }
        return Ok(());
    }
    let volume_name = s(claim, "/spec/volumeName");
    if !volume_name.is_empty() {
        return match w.volumes.iter().find(|v| name(v) == volume_name) {
            Some(pv) if s(pv, "/spec/claimRef/uid") == uid(claim) => {
                finish_claim(objects, claim, pv).await
            }
            Some(pv) if s(pv, "/spec/claimRef/name").is_empty() => {
                // Pre-bound by its user: the volume is claimed now.
                bind(objects, claim, pv).await
            }
            Some(_) => Ok(()),
            None => {
                if s(claim, "/status/phase") == "Bound" {
                    set_phase(objects, pvcs, claim, json!({"phase": "Lost"})).await?;
                    event(
                        objects,
                        claim,
                        EventType::Warning,
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                    )
                    .await;
                }
                Ok(())
            }
        };
    }
    let class = claim
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(pv) = best_match(w, claim, class) {
        return bind(objects, claim, pv).await;
    }
    if class.is_empty() {
        event(
            objects,
            claim,
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )
        .await;
        return Ok(());
    }
    let Some(sc) = w.classes.iter().find(|c| name(c) == class) else {
        event(
            objects,
            claim,
            EventType::Warning,
            "ProvisioningFailed",
            &format!("storageclass.storage.k8s.io \"{class}\" not found"),
        )
        .await;
        return Ok(());
    };
    let provisioner = s(sc, "/provisioner");
    if provisioner != LOCAL_PATH {
        event(
            objects,
            claim,
            EventType::Normal,
            "ExternalProvisioning",
            &format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
        )
        .await;
        return Ok(());
    }
    let wait = s(sc, "/volumeBindingMode") == "WaitForFirstConsumer";
    let node = match annotation(claim, SELECTED_NODE) {
        "" if wait => {
            event(
                objects,
                claim,
                EventType::Normal,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            )
            .await;
            return Ok(());
        }
        // Immediate binding: any node that is ready takes it.
        "" => w
            .nodes
            .iter()
            .find(|n| crate::scheduler::node_ready(n))
            .map(|n| name(n).to_string()),
        n => Some(n.to_string()),
    };
    let Some(node) = node else {
        return Ok(());
    };
    provision(objects, w, claim, sc, &node).await
}

/// The smallest Available volume of the claim's class that is large enough and offers its
/// access modes.
fn best_match<'a>(w: &World<'a>, claim: &Value, class: &str) -> Option<&'a Value> {
    let want = storage(claim, "/spec/resources/requests/storage");
    let want_modes = modes(claim, "/spec/accessModes");
    w.volumes
        .iter()
        .filter(|v| {
            !deleting(v)
                && s(v, "/status/phase") == "Available"
                && s(v, "/spec/claimRef/name").is_empty()
                && s(v, "/spec/storageClassName") == class
                && storage(v, "/spec/capacity/storage") >= want
                && want_modes
                    .iter()
                    .all(|m| modes(v, "/spec/accessModes").contains(m))
        })
        .min_by_key(|v| storage(v, "/spec/capacity/storage"))
}

/// Binds `claim` to `pv`: the volume's claimRef, then the claim's volumeName and status.
async fn bind(objects: &Objects, claim: &Value, pv: &Value) -> Result<(), ApiError> {
    let claim_ref = json!({
        "kind": "PersistentVolumeClaim",
        "namespace": namespace(claim),
        "name": name(claim),
        "uid": uid(claim),
        "apiVersion": "v1",
        "resourceVersion": s(claim, "/metadata/resourceVersion"),
    });
    let pv = objects
        .modify(
            resources::persistent_volumes(),
            None,
            name(pv),
            Part::Main,
            |v| {
                let current = v.pointer("/spec/claimRef/uid").and_then(Value::as_str);
                if current.is_some_and(|u| !u.is_empty() && u != uid(claim)) {
                    return Err(ApiError::Conflict {
                        resource: "persistentvolumes".into(),
                        name: name(v).to_string(),
                        detail: "volume already bound to a different claim".into(),
                    });
                }
                v["spec"]["claimRef"] = claim_ref.clone();
                v["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
                Ok(())
            },
        )
        .await?;
    complete(objects, claim, &pv).await
}

/// A volume now bound to `claim`: its phase, then the claim's side.
async fn complete(objects: &Objects, claim: &Value, pv: &Value) -> Result<(), ApiError> {
    set_phase(
        objects,
        resources::persistent_volumes(),
        pv,
        json!({"phase": "Bound"}),
    )
    .await?;
    finish_claim(objects, claim, pv).await
}

/// The claim's side of a binding: volumeName, annotations, status Bound with the volume's
/// capacity and access modes.
async fn finish_claim(objects: &Objects, claim: &Value, pv: &Value) -> Result<(), ApiError> {
    let pvcs = resources::persistent_volume_claims();
    let claim = if s(claim, "/spec/volumeName") != name(pv)
        || annotation(claim, BIND_COMPLETED).is_empty()
    {
        objects
            .modify(pvcs, Some(namespace(claim)), name(claim), Part::Main, |c| {
                c["spec"]["volumeName"] = json!(name(pv));
                c["metadata"]["annotations"][BIND_COMPLETED] = json!("yes");
                c["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
                Ok(())
            })
            .await?
    } else {
        claim.clone()
    };
    let was_bound = s(&claim, "/status/phase") == "Bound";
    set_phase(
        objects,
        pvcs,
        &claim,
        json!({
            "phase": "Bound",
            "accessModes": pv.pointer("/spec/accessModes").cloned().unwrap_or(json!([])),
            "capacity": pv.pointer("/spec/capacity").cloned().unwrap_or(json!({})),
        }),
    )
    .await?;
    if !was_bound {
        tracing::info!(claim = %format!("{}/{}", namespace(&claim), name(&claim)), volume = %name(pv), "claim bound");
    }
    Ok(())
}

/// Makes a local-path volume for `claim` on `node`, bound to it from the start.
async fn provision(
    objects: &Objects,
    w: &World<'_>,
    claim: &Value,
    class: &Value,
    node: &str,
) -> Result<(), ApiError> {
    let pv_name = format!("pvc-{}", uid(claim));
    if w.volumes.iter().any(|v| name(v) == pv_name) {
        return Ok(());
    }
    let Some(root) = w
        .nodes
        .iter()
        .find(|n| name(n) == node)
        .map(|n| annotation(n, ROOT_ANNOTATION))
        .filter(|r| !r.is_empty())
    else {
        event(
            objects,
            claim,
            EventType::Warning,
            "ProvisioningFailed",
            &format!("node {node:?} does not offer local-path storage (its agent announces no {ROOT_ANNOTATION})"),
        )
        .await;
        return Ok(());
    };
    let ns = namespace(claim);
    event(
        objects,
        claim,
        EventType::Normal,
        "Provisioning",
        &format!(
            "External provisioner is provisioning volume for claim \"{ns}/{}\"",
            name(claim)
        ),
    )
    .await;
    let path = format!("{root}/{pv_name}_{ns}_{}", name(claim));
    let hostname = w
        .nodes
        .iter()
        .find(|n| name(n) == node)
        .and_then(|n| n.pointer("/metadata/labels/kubernetes.io~1hostname"))
        .and_then(Value::as_str)
        .unwrap_or(node)
        .to_string();
    let pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name,
            "annotations": {PROVISIONED_BY: LOCAL_PATH, NODE_ANNOTATION: node},
        },
        "spec": {
            "capacity": {"storage": s(claim, "/spec/resources/requests/storage")},
            "accessModes": claim.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
            "persistentVolumeReclaimPolicy": match s(class, "/reclaimPolicy") { "" => "Delete", p => p },
            "storageClassName": name(class),
            "volumeMode": "Filesystem",
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
            "claimRef": {
                "kind": "PersistentVolumeClaim", "namespace": ns, "name": name(claim),
                "uid": uid(claim), "apiVersion": "v1",
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}
            ]}]}},
        },
    });
    match objects
        .create(resources::persistent_volumes(), None, pv, false)
        .await
    {
        Ok(pv) => {
            event(
                objects,
                claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                &format!("Successfully provisioned volume {pv_name}"),
            )
            .await;
            complete(objects, claim, &pv).await
        }
        Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => {
            event(
                objects,
                claim,
                EventType::Warning,
                "ProvisioningFailed",
                &format!(
                    "failed to provision volume with StorageClass \"{}\": {e}",
                    name(class)
                ),
            )
            .await;
            Err(e)
        }
    }
}

async fn sync_volume(objects: &Objects, w: &World<'_>, pv: &Value) -> Result<(), ApiError> {
    let pvs = resources::persistent_volumes();
    let phase = s(pv, "/status/phase");
    if deleting(pv) {
        let protected = pv
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == PV_PROTECTION));
        if protected && phase != "Bound" {
            remove_finalizer(objects, pvs, pv, PV_PROTECTION).await?;
        }
        return Ok(());
    }
    let claim_uid = s(pv, "/spec/claimRef/uid");
    let claim_name = s(pv, "/spec/claimRef/name");
    if claim_name.is_empty() {
        if phase != "Available" {
            set_phase(objects, pvs, pv, json!({"phase": "Available"})).await?;
        }
        return Ok(());
    }
    let claim = w.claims.iter().find(|c| {
        namespace(c) == s(pv, "/spec/claimRef/namespace")
            && name(c) == claim_name
            && (claim_uid.is_empty() || uid(c) == claim_uid)
    });
    match claim {
        Some(c) if s(c, "/spec/volumeName") == name(pv) => {
            if phase != "Bound" {
                set_phase(objects, pvs, pv, json!({"phase": "Bound"})).await?;
            }
        }
        Some(c) if s(c, "/spec/volumeName").is_empty() && !deleting(c) => {
            bind(objects, c, pv).await?;
        }
        Some(_) => {}
        None if phase != "Released" && phase != "Failed" => {
            set_phase(objects, pvs, pv, json!({"phase": "Released"})).await?;
            tracing::info!(volume = %name(pv), "volume released");
        }
        None => {
            // Released: with Delete, a volume skiff did not provision is just removed; the
            // node's agent removes the ones it holds a directory for.
            let delete = s(pv, "/spec/persistentVolumeReclaimPolicy") == "Delete";
            if delete && annotation(pv, PROVISIONED_BY) != LOCAL_PATH {
                let r = objects
                    .delete(pvs, None, name(pv), &Default::default())
                    .await;
                super::ignore_missing(r)?;
            }
        }
    }
    Ok(())
}

async fn event(objects: &Objects, obj: &Value, ty: EventType, reason: &str, msg: &str) {
    record(objects, obj, ty, reason, msg, COMPONENT).await;
}
