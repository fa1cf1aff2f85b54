//! The `scale` subresource of deployments, replicasets, statefulsets and replication controllers (an `autoscaling/v1`
//! Scale) and the `eviction` subresource of pods (a graceful delete that the pod's
//! PodDisruptionBudget must allow, with the DisruptionTarget condition set first).

use serde_json::{Value, json};

use super::error::{ApiError, FieldError};
use super::kinds::pod::mark_disruption_target;
use super::kinds::poddisruptionbudget::take_disruption;
use super::objects::{DeleteOptions, Objects, Part};
use super::patch::{self, PatchType};
use super::resources::{self, Resource};
use super::selectors::selector_string;

/// The Scale of a deployment, replicaset, statefulset or replication controller.
pub fn scale_of(res: &Resource, obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut meta = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m.get(k) {
            meta[k] = v.clone();
        }
    }
    let sel = res.strategy.label_selector(obj);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(&sel),
        },
    })
}

pub fn get_scale(
    objects: &Objects,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    Ok(scale_of(res, &objects.get(res, ns, name)?))
}

/// PUT of a Scale: sets `spec.replicas`, honouring the Scale's resourceVersion if it has one.
pub async fn put_scale(
    objects: &Objects,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    scale: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    // Go's ScaleSpec.replicas is `omitempty`: Go clients (JSON or protobuf) send no field for 0.
    let replicas = scale
        .pointer("/spec/replicas")
        .cloned()
        .unwrap_or_else(|| json!(0));
    let Some(n) = replicas.as_i64().filter(|n| *n >= 0) else {
        return Err(ApiError::Invalid {
            kind: "Scale.autoscaling".into(),
            name: name.to_string(),
            causes: vec![FieldError::invalid(
                "spec.replicas",
                &replicas,
                "must be greater than or equal to 0",
            )],
        });
    };
    let mut obj = objects.get(res, ns, name)?;
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
    obj["spec"]["replicas"] = json!(n);
    let out = objects
        .update(res, ns, name, obj, Part::Main, dry_run)
        .await?;
    Ok(scale_of(res, &out))
}

/// PATCH of a Scale: the patch applies to the Scale object, then as a PUT.
pub async fn patch_scale(
    objects: &Objects,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    kind: PatchType,
    body: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    for _ in 0..8 {
        let mut scale = get_scale(objects, res, ns, name)?;
        let kind = if kind == PatchType::Apply {
            PatchType::Merge
        } else {
            kind
        };
        patch::apply_patch(kind, &mut scale, body)?;
        match put_scale(objects, res, ns, name, &scale, dry_run).await {
            Err(ApiError::Conflict { .. })
                if body.pointer("/metadata/resourceVersion").is_none() =>
            {
                continue;
            }
            other => return other,
        }
    }
    Err(ApiError::modified(&res.qualified(), name))
}

/// POST `pods/{name}/eviction`: deletes the pod gracefully with the Eviction's deleteOptions.
pub async fn evict(
    objects: &Objects,
    ns: Option<&str>,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let body_name = eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if body_name != name {
        return Err(ApiError::BadRequest(format!(
            "name in URL does not match name in Eviction object: {name} != {body_name}"
        )));
    }
    let mut opts = DeleteOptions {
        dry_run,
        ..Default::default()
    };
    if let Some(d) = eviction.get("deleteOptions") {
        if let Some(g) = d.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period_seconds = Some(g);
        }
        if let Some(u) = d.pointer("/preconditions/uid").and_then(Value::as_str) {
            opts.uid = Some(u.to_string());
        }
        if let Some(r) = d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            opts.resource_version = Some(r.to_string());
        }
        if d.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|x| !x.is_empty())
        {
            opts.dry_run = true;
        }
    }
    let pod = objects.get(resources::pods(), ns, name)?;
    if let Some(u) = &opts.uid
        && pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(u.as_str())
    {
        return Err(ApiError::Conflict {
            resource: "pods".into(),
            name: name.to_string(),
            detail: format!("Precondition failed: UID in precondition: {u}"),
        });
    }
    // Two evictions racing for a budget's last disruption: the loser's update conflicts and it
    // looks at the budget again, as Kubernetes retries on conflict.
    let mut tries = 0;
    loop {
        match take_disruption(objects, &pod, opts.dry_run).await {
            Err(ApiError::Conflict { .. }) if tries < 5 => tries += 1,
            other => break other?,
        }
    }
    let terminal = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !opts.dry_run && !terminal {
        mark_disruption_target(
            objects,
            ns,
            name,
            "EvictionByEvictionAPI",
            "Eviction API: evicting",
        )
        .await?;
    }
    // The pod that was checked is the one deleted.
    if opts.uid.is_none() {
        opts.uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    objects
        .delete(resources::pods(), ns, name, &opts)
        .await
        .map(|_| ())
}
