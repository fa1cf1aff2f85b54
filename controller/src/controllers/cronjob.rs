//! The CronJob controller, as Kubernetes' (v2) runs it: at each scheduled time (in the
//! CronJob's `timeZone`, else UTC) a Job named `<cronjob>-<minutes since the epoch>` from the
//! job template; only the most recent of the times missed while nothing ran it (the control
//! plane was down), and none past `startingDeadlineSeconds`; concurrencyPolicy Allow, Forbid
//! (skip while one runs) or Replace (delete the running one); `suspend`; the successful and
//! failed Jobs beyond their history limits deleted, oldest first; `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`.

use serde_json::{Value, json};

use super::{controlled_by, controller_ref, deleting, name, namespace, uid, write_status};
use crate::api::{ApiError, DeleteOptions, Objects, Propagation, resources};
use crate::cron::{self, Cron};
use crate::reconcile::events::{EventType, record};

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
const COMPONENT: &str = "cronjob-controller";
/// How many missed times make the controller warn (and still run the most recent).
const TOO_MANY_MISSED: usize = 100;

/// One pass over every CronJob.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (cronjobs, _) = objects.list(resources::cron_jobs(), None)?;
    if cronjobs.is_empty() {
        return Ok(());
    }
    let (jobs, _) = objects.list(resources::jobs(), None)?;
    let now = jiff::Timestamp::now();
    for cj in cronjobs {
        if let Err(e) = sync(objects, &cj, &jobs, now).await {
            tracing::debug!(cronjob = %name(&cj), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

/// `Complete` or `Failed`, if the job finished.
fn finished(job: &Value) -> Option<&'static str> {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    ["Complete", "Failed"].into_iter().find(|t| {
        conds
            .iter()
            .any(|c| c["type"] == *t && c["status"] == "True")
    })
}

fn ts(v: &Value, ptr: &str) -> Option<jiff::Timestamp> {
    v.pointer(ptr).and_then(Value::as_str)?.parse().ok()
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn event(objects: &Objects, cj: &Value, ty: EventType, reason: &str, msg: String) {
    record(objects, cj, ty, reason, &msg, COMPONENT).await;
}

/// The CronJob's schedule in its time zone.
fn schedule(cj: &Value) -> Result<Cron, String> {
    let spec = cj
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .unwrap_or("");
    match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        Some(tz) if !spec.contains("TZ") => cron::parse(&format!("TZ={tz} {spec}")),
        _ => cron::parse(spec),
    }
}

/// The most recent scheduled time in `(earliest, now]` and how many there were.
fn most_recent(
    c: &Cron,
    earliest: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Option<(jiff::Timestamp, usize)> {
    let mut t = c.next(earliest).filter(|t| *t <= now)?;
    let mut missed = 1;
    while let Some(n) = c.next(t).filter(|n| *n <= now) {
        t = n;
        missed += 1;
        if missed > 100_000 {
            break;
        }
    }
    Some((t, missed))
}

async fn delete_job(objects: &Objects, cj: &Value, job_name: &str) -> Result<(), ApiError> {
    let opts = DeleteOptions {
        propagation: Some(Propagation::Background),
        ..Default::default()
    };
    match objects
        .delete(resources::jobs(), Some(namespace(cj)), job_name, &opts)
        .await
    {
        Ok(_) | Err(ApiError::NotFound { .. }) => {
            event(
                objects,
                cj,
                EventType::Normal,
                "SuccessfulDelete",
                format!("Deleted job {job_name}"),
            )
            .await;
            Ok(())
        }
        Err(e) => {
            event(
                objects,
                cj,
                EventType::Warning,
                "FailedDelete",
                format!("Deleted job: {e}"),
            )
            .await;
            Err(e)
        }
    }
}

/// Deletes the oldest finished jobs beyond the history limits.
async fn clean_history(objects: &Objects, cj: &Value, owned: &[&Value]) -> Result<(), ApiError> {
    for (kind, limit_field) in [
        ("Complete", "/spec/successfulJobsHistoryLimit"),
        ("Failed", "/spec/failedJobsHistoryLimit"),
    ] {
        let Some(limit) = cj.pointer(limit_field).and_then(Value::as_i64) else {
            continue;
        };
        let mut done: Vec<&&Value> = owned
            .iter()
            .filter(|j| finished(j) == Some(kind) && !deleting(j))
            .collect();
        let excess = done
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        done.sort_by_key(|j| {
            (
                ts(j, "/status/startTime").is_none(),
                ts(j, "/status/startTime"),
                name(j).to_string(),
            )
        });
        for j in done.into_iter().take(excess) {
            delete_job(objects, cj, name(j)).await?;
        }
    }
    Ok(())
}

/// One CronJob at `now` (the tests move the clock).
pub(super) async fn sync(
    objects: &Objects,
    cj: &Value,
    jobs: &[Value],
    now: jiff::Timestamp,
) -> Result<(), ApiError> {
    let ns = namespace(cj);
    let owned: Vec<&Value> = jobs
        .iter()
        .filter(|j| namespace(j) == ns && controlled_by(j, uid(cj)))
        .collect();
    let mut status = cj
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut active: Vec<Value> = status
        .get("active")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    // What ran: finished jobs leave `active`, vanished ones too.
    for j in &owned {
        let listed = active.iter().any(|a| a["uid"] == uid(j));
        match finished(j) {
            Some(how) if listed => {
                active.retain(|a| a["uid"] != uid(j));
                event(
                    objects,
                    cj,
                    EventType::Normal,
                    "SawCompletedJob",
                    format!("Saw completed job: {}, status: {how}", name(j)),
                )
                .await;
            }
            Some("Complete") => {}
            Some(_) => {}
            None if !listed && !deleting(j) => {
                event(
                    objects,
                    cj,
                    EventType::Warning,
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        name(j)
                    ),
                )
                .await;
            }
            None => {}
        }
        if finished(j) == Some("Complete")
            && let Some(done) = ts(j, "/status/completionTime")
            && ts(&status, "/lastSuccessfulTime").is_none_or(|l| done > l)
        {
            status["lastSuccessfulTime"] = json!(rfc3339(done));
        }
    }
    let before = active.len();
    active.retain(|a| owned.iter().any(|j| a["uid"] == uid(j)));
    if active.len() != before {
        event(
            objects,
            cj,
            EventType::Normal,
            "MissingJob",
            "Active job went missing".to_string(),
        )
        .await;
    }
    clean_history(objects, cj, &owned).await?;

    let suspended = cj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    if !deleting(cj) && !suspended {
        match schedule(cj) {
            Err(e) => {
                let spec = cj.pointer("/spec/schedule").cloned().unwrap_or_default();
                event(
                    objects,
                    cj,
                    EventType::Warning,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {spec} : {e}"),
                )
                .await;
            }
            Ok(c) => schedule_job(objects, cj, &c, &owned, &mut active, &mut status, now).await?,
        }
    }
    status["active"] = json!(active);
    if active.is_empty()
        && let Some(m) = status.as_object_mut()
    {
        m.remove("active");
    }
    write_status(objects, resources::cron_jobs(), cj, status).await
}

#[allow(clippy::too_many_arguments)]
async fn schedule_job(
    objects: &Objects,
    cj: &Value,
    c: &Cron,
    owned: &[&Value],
    active: &mut Vec<Value>,
    status: &mut Value,
    now: jiff::Timestamp,
) -> Result<(), ApiError> {
    let ns = namespace(cj);
    let mut earliest = ts(status, "/lastScheduleTime")
        .or_else(|| ts(cj, "/metadata/creationTimestamp"))
        .unwrap_or(now);
    let deadline = cj
        .pointer("/spec/startingDeadlineSeconds")
        .and_then(Value::as_i64);
    if let Some(sds) = deadline {
        let floor = now
            .checked_sub(jiff::SignedDuration::from_secs(sds))
            .unwrap_or(now);
        earliest = earliest.max(floor);
    }
    let Some((scheduled, missed)) = most_recent(c, earliest, now) else {
        return Ok(());
    };
    if missed > TOO_MANY_MISSED {
        event(
            objects,
            cj,
            EventType::Warning,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".to_string(),
        )
        .await;
    }
    if let Some(sds) = deadline
        && scheduled + jiff::SignedDuration::from_secs(sds) < now
    {
        event(
            objects,
            cj,
            EventType::Warning,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
            ),
        )
        .await;
        return Ok(());
    }
    let job_name = format!("{}-{}", name(cj), scheduled.as_second() / 60);
    if active.iter().any(|a| a["name"] == job_name.as_str())
        || ts(status, "/lastScheduleTime") == Some(scheduled)
    {
        return Ok(());
    }
    let policy = cj
        .pointer("/spec/concurrencyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        event(
            objects,
            cj,
            EventType::Normal,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .to_string(),
        )
        .await;
        return Ok(());
    }
    if policy == "Replace" {
        for a in active.clone() {
            let n = a["name"].as_str().unwrap_or("").to_string();
            delete_job(objects, cj, &n).await?;
            active.retain(|x| x["name"] != n.as_str());
        }
    }
    let template = cj
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.is_object() {
        meta = json!({});
    }
    meta["name"] = json!(job_name);
    meta["namespace"] = json!(ns);
    meta["ownerReferences"] = json!([controller_ref(cj)]);
    let tz = c.tz.clone();
    meta["annotations"][SCHEDULED_TIMESTAMP] = json!(
        scheduled
            .to_zoned(tz)
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z")
    );
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    let created = match objects
        .create(resources::jobs(), Some(ns), job, false)
        .await
    {
        Ok(j) => {
            event(
                objects,
                cj,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {job_name}"),
            )
            .await;
            j
        }
        Err(ApiError::AlreadyExists { .. }) => {
            let existing = objects.get(resources::jobs(), Some(ns), &job_name)?;
            if !controlled_by(&existing, uid(cj))
                || owned
                    .iter()
                    .any(|j| name(j) == job_name && finished(j).is_some())
            {
                return Ok(());
            }
            existing
        }
        Err(e) => {
            event(
                objects,
                cj,
                EventType::Warning,
                "FailedCreate",
                format!("Error creating job: {e}"),
            )
            .await;
            return Err(e);
        }
    };
    active.push(json!({
        "kind": "Job",
        "namespace": ns,
        "name": job_name,
        "uid": uid(&created),
        "apiVersion": "batch/v1",
        "resourceVersion": created.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!("")),
    }));
    status["lastScheduleTime"] = json!(rfc3339(scheduled));
    tracing::info!(cronjob = %format!("{ns}/{}", name(cj)), job = %job_name, "job created");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_missed_time_runs() {
        let c = cron::parse("*/10 * * * *").unwrap();
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let (at, missed) =
            most_recent(&c, t("2026-12-06T10:00:00Z"), t("2026-12-06T11:05:00Z")).unwrap();
        assert_eq!(at, t("2026-12-06T11:00:00Z"));
        assert_eq!(missed, 6);
        assert!(most_recent(&c, t("2026-12-06T11:00:00Z"), t("2026-12-06T11:05:00Z")).is_none());
    }
}
