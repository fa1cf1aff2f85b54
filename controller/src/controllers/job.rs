//! The job controller, as Kubernetes' runs a Job: pods from the template until `completions`
//! have succeeded (at most `parallelism` at a time), in NonIndexed or Indexed mode (each index
//! `0..completions` once, its pod carrying `batch.kubernetes.io/job-completion-index`, the
//! hostname `<job>-<index>` and `JOB_COMPLETION_INDEX`); failed pods counted against
//! `backoffLimit` (or matched against `podFailurePolicy`: FailJob, Ignore, Count), with the
//! back-off between retries (10 s doubling, at most 6 minutes); `activeDeadlineSeconds`;
//! `podReplacementPolicy` (a terminating pod is replaced at once, or only once it failed);
//! `suspend`; the SuccessCriteriaMet/FailureTarget conditions first and Complete/Failed once no
//! pod still runs; and `ttlSecondsAfterFinished`, after which the Job and its pods are deleted.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{
    condition, controlled_by, deleting, name, namespace, pod_from_template, pod_ready,
    pod_terminal, uid, write_status,
};
use crate::api::{ApiError, DeleteOptions, Objects, Propagation, resources};
use crate::reconcile::events::{EventType, record};

/// The annotation (and label) with a pod's index in an Indexed Job.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
const COMPONENT: &str = "job-controller";
/// The back-off after the first failed pod, doubled per failure since the last success.
const BACKOFF_BASE: i64 = 10;
const BACKOFF_MAX: i64 = 360;

/// One pass over every job.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (jobs, _) = objects.list(resources::jobs(), None)?;
    if jobs.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    let now = jiff::Timestamp::now();
    for job in jobs {
        if let Err(e) = sync(objects, &job, &pods, now).await {
            tracing::debug!(job = %name(&job), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

fn has_condition(job: &Value, ty: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

fn finished(job: &Value) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn ts(v: &Value, ptr: &str) -> Option<jiff::Timestamp> {
    v.pointer(ptr).and_then(Value::as_str)?.parse().ok()
}

fn index_of(pod: &Value) -> Option<i64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(INDEX_ANNOTATION))
        .and_then(Value::as_str)?
        .parse()
        .ok()
}

/// When a failed pod finished: its containers' last finish, else when it stopped being Ready,
/// else its creation.
fn finish_time(pod: &Value) -> Option<jiff::Timestamp> {
    let statuses: Vec<&Value> = ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .collect();
    let ends: Vec<jiff::Timestamp> = statuses
        .iter()
        .filter_map(|c| ts(c, "/state/terminated/finishedAt"))
        .collect();
    if !ends.is_empty() && ends.len() == statuses.len() {
        return ends.into_iter().max();
    }
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "False")
        })
        .and_then(|c| ts(c, "/lastTransitionTime"))
        .or_else(|| ts(pod, "/metadata/creationTimestamp"))
}

/// What `podFailurePolicy` says of a failed pod.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Count,
    Ignore,
    /// FailJob, with the message Kubernetes writes.
    FailJob(String),
}

fn judge(job: &Value, pod: &Value) -> Verdict {
    let Some(rules) = job
        .pointer("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array)
    else {
        return Verdict::Count;
    };
    let pod_key = format!("{}/{}", namespace(pod), name(pod));
    for (i, rule) in rules.iter().enumerate() {
        let action = rule["action"].as_str().unwrap_or("Count");
        let matched = if let Some(on) = rule.get("onExitCodes").filter(|v| !v.is_null()) {
            let op = on["operator"].as_str().unwrap_or("In");
            let values: Vec<i64> = on["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            let only = on["containerName"].as_str();
            ["/status/containerStatuses", "/status/initContainerStatuses"]
                .iter()
                .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
                .flatten()
                .filter(|c| only.is_none_or(|n| c["name"] == n))
                .filter_map(|c| {
                    c.pointer("/state/terminated/exitCode")
                        .and_then(Value::as_i64)
                        .map(|code| (c["name"].as_str().unwrap_or("").to_string(), code))
                })
                .filter(|(_, code)| *code != 0)
                .find(|(_, code)| (op == "In") == values.contains(code))
                .map(|(c, code)| {
                    format!(
                        "Container {c} for pod {pod_key} failed with exit code {code} matching {action} rule at index {i}"
                    )
                })
        } else if let Some(conds) = rule.get("onPodConditions").and_then(Value::as_array) {
            let pod_conds = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conds
                .iter()
                .find(|want| {
                    let status = want["status"].as_str().unwrap_or("True");
                    pod_conds
                        .iter()
                        .any(|c| c["type"] == want["type"] && c["status"] == status)
                })
                .map(|want| {
                    format!(
                        "Pod {pod_key} has condition {} matching {action} rule at index {i}",
                        want["type"].as_str().unwrap_or("")
                    )
                })
        } else {
            None
        };
        if let Some(msg) = matched {
            return match action {
                "Ignore" => Verdict::Ignore,
                "FailJob" => Verdict::FailJob(msg),
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// `1,3-5,7,8`: sorted indexes, runs of three or more as ranges (Kubernetes' format).
pub fn format_indexes(set: &BTreeSet<i64>) -> String {
    let v: Vec<i64> = set.iter().copied().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        match j - i {
            0 => out.push(v[i].to_string()),
            1 => {
                out.push(v[i].to_string());
                out.push(v[j].to_string());
            }
            _ => out.push(format!("{}-{}", v[i], v[j])),
        }
        i = j + 1;
    }
    out.join(",")
}

async fn event(objects: &Objects, job: &Value, ty: EventType, reason: &str, msg: &str) {
    record(objects, job, ty, reason, msg, COMPONENT).await;
}

/// A pod for the job, with its index when the job is Indexed.
fn new_pod(job: &Value, index: Option<i64>) -> Value {
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let Some(i) = index else {
        return pod_from_template(job, &template, name(job));
    };
    let mut pod = pod_from_template(job, &template, &format!("{}-{i}", name(job)));
    pod["metadata"]["annotations"][INDEX_ANNOTATION] = json!(i.to_string());
    pod["metadata"]["labels"][INDEX_ANNOTATION] = json!(i.to_string());
    pod["spec"]["hostname"] = json!(format!("{}-{i}", name(job)));
    let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": format!("metadata.annotations['{INDEX_ANNOTATION}']")}}});
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = pod["spec"].get_mut(list) {
            for c in cs.iter_mut() {
                let has = c["env"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX"));
                if !has {
                    if !c["env"].is_array() {
                        c["env"] = json!([]);
                    }
                    if let Some(e) = c["env"].as_array_mut() {
                        e.push(env.clone());
                    }
                }
            }
        }
    }
    pod
}

async fn delete_pods(objects: &Objects, job: &Value, pods: &[&Value]) -> Result<(), ApiError> {
    for p in pods {
        if deleting(p) {
            continue;
        }
        super::delete_pod(objects, p).await?;
        event(
            objects,
            job,
            EventType::Normal,
            "SuccessfulDelete",
            &format!("Deleted pod: {}", name(p)),
        )
        .await;
    }
    Ok(())
}

/// A finished Job with `ttlSecondsAfterFinished` is deleted (with its pods) once it expired.
async fn expire(objects: &Objects, job: &Value, now: jiff::Timestamp) -> Result<(), ApiError> {
    let Some(ttl) = job
        .pointer("/spec/ttlSecondsAfterFinished")
        .and_then(Value::as_i64)
    else {
        return Ok(());
    };
    let done_at = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        .filter_map(|c| ts(c, "/lastTransitionTime"))
        .next();
    let Some(done_at) = done_at else {
        return Ok(());
    };
    if done_at + jiff::SignedDuration::from_secs(ttl) > now {
        return Ok(());
    }
    let opts = DeleteOptions {
        uid: Some(uid(job).to_string()),
        propagation: Some(Propagation::Foreground),
        ..Default::default()
    };
    tracing::info!(job = %format!("{}/{}", namespace(job), name(job)), "ttlSecondsAfterFinished expired; deleting");
    super::ignore_missing(
        objects
            .delete(resources::jobs(), Some(namespace(job)), name(job), &opts)
            .await,
    )
}

async fn sync(
    objects: &Objects,
    job: &Value,
    pods: &[Value],
    now: jiff::Timestamp,
) -> Result<(), ApiError> {
    if deleting(job) {
        return Ok(());
    }
    if finished(job) {
        return expire(objects, job, now).await;
    }
    let ns = namespace(job);
    let owned: Vec<&Value> = pods
        .iter()
        .filter(|p| namespace(p) == ns && controlled_by(p, uid(job)))
        .collect();
    let spec = |p: &str| job.pointer(&format!("/spec/{p}"));
    let indexed = spec("completionMode").and_then(Value::as_str) == Some("Indexed");
    let completions = spec("completions").and_then(Value::as_i64);
    let parallelism = spec("parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let backoff_limit = spec("backoffLimit").and_then(Value::as_i64).unwrap_or(6);
    let suspended = spec("suspend").and_then(Value::as_bool) == Some(true);
    let replace_failed_only = spec("podReplacementPolicy").and_then(Value::as_str)
        == Some("Failed")
        || spec("podFailurePolicy").is_some_and(|p| !p.is_null());

    // Counting: a pod that is terminating counts as failed unless only failed pods are replaced.
    let failed_pod = |p: &Value| {
        phase(p) == "Failed" || (!replace_failed_only && deleting(p) && phase(p) != "Succeeded")
    };
    let active: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| !pod_terminal(p) && !deleting(p))
        .collect();
    let terminating: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| deleting(p) && !pod_terminal(p))
        .collect();
    let succeeded_pods: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| phase(p) == "Succeeded")
        .collect();
    let mut fail_job: Option<(String, String)> = None;
    let mut failed = 0i64;
    for p in owned.iter().filter(|p| failed_pod(p)) {
        match judge(job, p) {
            Verdict::Ignore => {}
            Verdict::Count => failed += 1,
            Verdict::FailJob(msg) => {
                failed += 1;
                fail_job.get_or_insert(("PodFailurePolicy".into(), msg));
            }
        }
    }
    let completed: BTreeSet<i64> = if indexed {
        succeeded_pods
            .iter()
            .filter_map(|p| index_of(p))
            .filter(|i| completions.is_none_or(|c| *i < c))
            .collect()
    } else {
        BTreeSet::new()
    };
    let succeeded = if indexed {
        completed.len() as i64
    } else {
        succeeded_pods.len() as i64
    };
    // Kept monotonic: pods removed by someone else do not undo what they counted.
    let prev = |k: &str| {
        job.pointer(&format!("/status/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let failed = failed.max(prev("failed"));
    let succeeded = succeeded.max(if indexed { 0 } else { prev("succeeded") });

    let mut status = job
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if status.get("startTime").is_none() && !suspended {
        status["startTime"] = json!(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    let restarts: i64 = active
        .iter()
        .flat_map(|p| {
            ["/status/containerStatuses", "/status/initContainerStatuses"]
                .iter()
                .filter_map(|ptr| p.pointer(ptr).and_then(Value::as_array))
                .flatten()
                .filter_map(|c| c["restartCount"].as_i64())
                .collect::<Vec<_>>()
        })
        .sum();
    let on_failure = job
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        == Some("OnFailure");
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let failure_target = conds
        .iter()
        .find(|c| c["type"] == "FailureTarget" && c["status"] == "True")
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        });
    let deadline_passed = spec("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .zip(ts(&status, "/startTime"))
        .is_some_and(|(d, start)| !suspended && start + jiff::SignedDuration::from_secs(d) <= now);
    let failure = failure_target.or(fail_job).or_else(|| {
        let over = failed > backoff_limit
            || (on_failure
                && (restarts >= backoff_limit.max(1) || (backoff_limit == 0 && restarts > 0)));
        over.then(|| {
            (
                "BackoffLimitExceeded".to_string(),
                "Job has reached the specified backoff limit".to_string(),
            )
        })
    });
    let failure = failure.or_else(|| {
        deadline_passed.then(|| {
            (
                "DeadlineExceeded".to_string(),
                "Job was active longer than specified deadline".to_string(),
            )
        })
    });
    let complete = match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };

    if let Some((reason, msg)) = failure {
        // FailureTarget at once; Failed once every pod stopped.
        delete_pods(objects, job, &active).await?;
        if !conds.iter().any(|c| c["type"] == "FailureTarget") {
            conds.push(condition(job, "FailureTarget", true, &reason, &msg, false));
        }
        if active.is_empty() && terminating.is_empty() {
            conds.push(condition(job, "Failed", true, &reason, &msg, false));
            event(objects, job, EventType::Warning, &reason, &msg).await;
        }
    } else if complete {
        delete_pods(objects, job, &active).await?;
        let msg = "Reached expected number of succeeded pods";
        if !conds.iter().any(|c| c["type"] == "SuccessCriteriaMet") {
            conds.push(condition(
                job,
                "SuccessCriteriaMet",
                true,
                "CompletionsReached",
                msg,
                false,
            ));
        }
        if active.is_empty() && terminating.is_empty() {
            conds.push(condition(
                job,
                "Complete",
                true,
                "CompletionsReached",
                msg,
                false,
            ));
            status["completionTime"] = json!(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            event(
                objects,
                job,
                EventType::Normal,
                "Completed",
                "Job completed",
            )
            .await;
        }
    } else if suspended {
        delete_pods(objects, job, &active).await?;
        if !has_condition(job, "Suspended") {
            conds.retain(|c| c["type"] != "Suspended");
            conds.push(condition(
                job,
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
                false,
            ));
            event(
                objects,
                job,
                EventType::Normal,
                "Suspended",
                "Job suspended",
            )
            .await;
        }
    } else {
        if has_condition(job, "Suspended") {
            conds.retain(|c| c["type"] != "Suspended");
            conds.push(condition(
                job,
                "Suspended",
                false,
                "JobResumed",
                "Job resumed",
                false,
            ));
            status["startTime"] = json!(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            event(objects, job, EventType::Normal, "Resumed", "Job resumed").await;
        }
        manage(
            objects,
            job,
            &owned,
            &active,
            &terminating,
            &completed,
            ManageArgs {
                indexed,
                completions,
                parallelism,
                succeeded,
                replace_failed_only,
                now,
            },
        )
        .await?;
    }
    if !conds.is_empty() {
        status["conditions"] = json!(conds);
    }
    let finished_now = conds
        .iter()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
    status["active"] = json!(if finished_now { 0 } else { active.len() });
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["ready"] = json!(active.iter().filter(|p| pod_ready(p)).count());
    status["terminating"] = json!(terminating.len());
    if indexed {
        status["completedIndexes"] = json!(format_indexes(&completed));
    }
    if status.get("uncountedTerminatedPods").is_none() {
        status["uncountedTerminatedPods"] = json!({});
    }
    write_status(objects, resources::jobs(), job, status).await
}

/// What `manage` decides from.
struct ManageArgs {
    indexed: bool,
    completions: Option<i64>,
    parallelism: i64,
    succeeded: i64,
    replace_failed_only: bool,
    now: jiff::Timestamp,
}

/// Starts the pods the job still needs (after the failure back-off), or removes extra ones.
async fn manage(
    objects: &Objects,
    job: &Value,
    owned: &[&Value],
    active: &[&Value],
    terminating: &[&Value],
    completed: &BTreeSet<i64>,
    a: ManageArgs,
) -> Result<(), ApiError> {
    let ns = namespace(job);
    let want = match a.completions {
        None if a.succeeded > 0 => active.len() as i64,
        None => a.parallelism,
        Some(c) => (c - a.succeeded).clamp(0, a.parallelism),
    };
    let running = active.len() as i64;
    if running > want {
        // Not-ready pods go first.
        let mut extra: Vec<&Value> = active.to_vec();
        extra.sort_by_key(|p| pod_ready(p));
        let n = usize::try_from(running - want).unwrap_or(0);
        return delete_pods(objects, job, &extra[..n]).await;
    }
    let mut diff = want - running;
    if a.replace_failed_only {
        diff -= terminating.len() as i64;
    }
    if diff <= 0 {
        return Ok(());
    }
    // The back-off: 10 s doubled per failure since the last success, at most 6 minutes.
    let last_success = owned
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(|p| finish_time(p))
        .max();
    let failures: Vec<jiff::Timestamp> = owned
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(|p| finish_time(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    if let Some(last) = failures.iter().max() {
        let n = u32::try_from(failures.len()).unwrap_or(u32::MAX);
        let delay = BACKOFF_BASE
            .saturating_mul(1i64 << (n.saturating_sub(1)).min(20))
            .min(BACKOFF_MAX);
        if *last + jiff::SignedDuration::from_secs(delay) > a.now {
            return Ok(());
        }
    }
    let indexes: Vec<Option<i64>> = if a.indexed {
        let busy: BTreeSet<i64> = active.iter().filter_map(|p| index_of(p)).collect();
        (0..a.completions.unwrap_or(0))
            .filter(|i| !completed.contains(i) && !busy.contains(i))
            .take(usize::try_from(diff).unwrap_or(0))
            .map(Some)
            .collect()
    } else {
        (0..diff).map(|_| None).collect()
    };
    for index in indexes {
        let pod = new_pod(job, index);
        match objects
            .create(resources::pods(), Some(ns), pod, false)
            .await
        {
            Ok(p) => {
                event(
                    objects,
                    job,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", name(&p)),
                )
                .await
            }
            Err(e) => {
                event(
                    objects,
                    job,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_as_kubernetes_writes_them() {
        let s: BTreeSet<i64> = [1, 3, 4, 5, 7, 8].into_iter().collect();
        assert_eq!(format_indexes(&s), "1,3-5,7,8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn pod_failure_policy_rules_in_order() {
        let job = json!({"spec": {"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        ]}}});
        let pod = |code: i64, disrupted: bool| {
            json!({"metadata": {"name": "p", "namespace": "default"}, "status": {"phase": "Failed",
                "conditions": if disrupted { json!([{"type": "DisruptionTarget", "status": "True"}]) } else { json!([]) },
                "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}]}})
        };
        assert_eq!(judge(&job, &pod(1, false)), Verdict::Count);
        assert_eq!(judge(&job, &pod(42, true)), Verdict::Ignore);
        assert_eq!(
            judge(&job, &pod(42, false)),
            Verdict::FailJob(
                "Container main for pod default/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "work", "namespace": "default", "uid": "j1"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let p = new_pod(&job, Some(3));
        assert_eq!(p["metadata"]["annotations"][INDEX_ANNOTATION], "3");
        assert_eq!(p["metadata"]["generateName"], "work-3-");
        assert_eq!(p["spec"]["hostname"], "work-3");
        assert_eq!(
            p["spec"]["containers"][0]["env"][0]["name"],
            "JOB_COMPLETION_INDEX"
        );
    }
}
