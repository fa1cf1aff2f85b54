//! The job controller: runs pods from the template until `completions` have succeeded (at
//! most `parallelism` at a time), fails the job once more than `backoffLimit` pods failed (or
//! restarted, under restartPolicy OnFailure), and records startTime, completionTime, counts and
//! the Complete / Failed conditions (with SuccessCriteriaMet / FailureTarget before them, as
//! Kubernetes 1.31+ writes them).

use serde_json::{Value, json};

use super::{
    condition, controlled_by, deleting, name, namespace, pod_active, pod_from_template, pod_ready,
    uid, write_status,
};
use crate::api::{ApiError, Objects, objects::now, resources};
use crate::reconcile::events::{EventType, record};

/// One pass over every job.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (jobs, _) = objects.list(resources::jobs(), None)?;
    if jobs.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    for job in jobs {
        if let Err(e) = sync(objects, &job, &pods).await {
            tracing::debug!(job = %name(&job), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

fn finished(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
            })
        })
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn sync(objects: &Objects, job: &Value, pods: &[Value]) -> Result<(), ApiError> {
    let ns = namespace(job);
    let owned: Vec<&Value> = pods
        .iter()
        .filter(|p| namespace(p) == ns && controlled_by(p, uid(job)))
        .collect();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let restarts: i64 = owned
        .iter()
        .filter(|p| pod_active(p))
        .flat_map(|p| {
            p.pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let active: Vec<&Value> = owned.iter().copied().filter(|p| pod_active(p)).collect();
    let completions = job.pointer("/spec/completions").and_then(Value::as_i64);
    let parallelism = job
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let backoff = job
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let mut status = job
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    let done_before = finished(job);
    if !done_before && !deleting(job) {
        if status.get("startTime").is_none() && !suspended {
            status["startTime"] = json!(now());
        }
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let over_backoff = failed + restarts > backoff;
        let mut conds: Vec<Value> = status
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if complete {
            for p in &active {
                super::delete_pod(objects, p).await?;
            }
            conds.push(condition(
                job,
                "SuccessCriteriaMet",
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                false,
            ));
            conds.push(condition(
                job,
                "Complete",
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                false,
            ));
            status["completionTime"] = json!(now());
            record(
                objects,
                job,
                EventType::Normal,
                "Completed",
                "Job completed",
                "job-controller",
            )
            .await;
        } else if over_backoff {
            for p in &active {
                super::delete_pod(objects, p).await?;
            }
            let msg = "Job has reached the specified backoff limit";
            conds.push(condition(
                job,
                "FailureTarget",
                true,
                "BackoffLimitExceeded",
                msg,
                false,
            ));
            conds.push(condition(
                job,
                "Failed",
                true,
                "BackoffLimitExceeded",
                msg,
                false,
            ));
            record(
                objects,
                job,
                EventType::Warning,
                "BackoffLimitExceeded",
                msg,
                "job-controller",
            )
            .await;
        } else if !suspended {
            let remaining = match completions {
                Some(c) => (c - succeeded).max(0),
                // Without completions, new pods start only until one has succeeded.
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            let want = parallelism.min(remaining);
            let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
            for _ in active.len() as i64..want {
                let pod = pod_from_template(job, &template, name(job));
                match objects
                    .create(resources::pods(), Some(ns), pod, false)
                    .await
                {
                    Ok(p) => {
                        let msg = format!("Created pod: {}", name(&p));
                        record(
                            objects,
                            job,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &msg,
                            "job-controller",
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::debug!(job = %name(job), error = %e, "cannot create pod");
                        break;
                    }
                }
            }
        } else {
            for p in &active {
                super::delete_pod(objects, p).await?;
            }
        }
        if !conds.is_empty() {
            status["conditions"] = json!(conds);
        }
    }
    let still_active = if finished(&json!({"status": status.clone()})) {
        0
    } else {
        active.len()
    };
    status["active"] = json!(still_active);
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["ready"] = json!(active.iter().filter(|p| pod_ready(p)).count());
    status["terminating"] = json!(owned.iter().filter(|p| deleting(p)).count());
    if status.get("uncountedTerminatedPods").is_none() {
        status["uncountedTerminatedPods"] = json!({});
    }
    write_status(objects, resources::jobs(), job, status).await
}
