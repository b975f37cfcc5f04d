//! The CronJob controller: creates a Job for each scheduled time (in the CronJob's
//! `timeZone`, UTC by default), honouring `suspend`, `startingDeadlineSeconds` and
//! `concurrencyPolicy` (Allow, Forbid, Replace), and keeps `successfulJobsHistoryLimit` and
//! `failedJobsHistoryLimit` finished Jobs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::cron::Schedule;
use crate::events::{Recorder, Type};
use crate::job::finished;
use crate::replicaset::{controller_of, owner_reference};

/// The annotation a Job carries its scheduled time in.
pub const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct Context {
    client: Client,
    recorder: Recorder,
}

pub async fn run(client: Client) {
    let context =
        Arc::new(Context { recorder: Recorder::start(client.clone(), "cronjob-controller"), client: client.clone() });
    Controller::new(Api::<CronJob>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Job>::all(client), watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(cj: Arc<CronJob>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("cronjob {}: {error}", cj.name_any());
    Action::requeue(Duration::from_secs(5))
}

/// The latest scheduled time in (`since`, `now`], and the next one after `now`.
pub fn times(
    schedule: &Schedule,
    zone: &TimeZone,
    since: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let civil = |t: Timestamp| zone.to_datetime(t);
    let back = |d: k8s_openapi::jiff::civil::DateTime| zone.to_ambiguous_timestamp(d).compatible().ok();
    let mut latest = None;
    let mut cursor = civil(since);
    // Only the most recent missed time runs; stop walking after a bounded number of them.
    for _ in 0..10_000 {
        match schedule.next_after(cursor).and_then(back) {
            Some(t) if t <= now => {
                latest = Some(t);
                cursor = civil(t);
            }
            _ => break,
        }
    }
    let next = schedule.next_after(civil(now)).and_then(back);
    (latest, next)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cj.namespace().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = cj.uid().unwrap_or_default();
    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));

    // History: the oldest finished Jobs beyond each limit go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        for job in done.iter().take(done.len().saturating_sub(limit.max(0) as usize)) {
            match jobs_api.delete(&job.name_any(), &DeleteParams::background()).await {
                Ok(_) => ctx.recorder.record(
                    cj.as_ref(),
                    Type::Normal,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted job {}", job.name_any()),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let active: Vec<&Job> =
        jobs.iter().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).collect();
    let last_successful = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0);

    let zone = match spec.time_zone.as_deref() {
        None => TimeZone::UTC,
        Some(name) => match TimeZone::get(name) {
            Ok(zone) => zone,
            Err(_) => {
                ctx.recorder.record(
                    cj.as_ref(),
                    Type::Warning,
                    "UnknownTimeZone",
                    "Schedule",
                    format!("invalid timeZone: {name:?}"),
                );
                return Ok(Action::await_change());
            }
        },
    };
    let schedule: Schedule = match spec.schedule.parse() {
        Ok(s) => s,
        Err(e) => {
            ctx.recorder.record(
                cj.as_ref(),
                Type::Warning,
                "UnparseableSchedule",
                "Schedule",
                format!("unparseable schedule: {:?}: {e}", spec.schedule),
            );
            return Ok(Action::await_change());
        }
    };
    let old = cj.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let since = old
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let (due, next) = times(&schedule, &zone, since, now);
    let mut last_schedule = old.last_schedule_time.clone();
    let mut active_refs: Vec<ObjectReference> = active.iter().map(|j| j.object_ref(&())).collect();
    if let (Some(at), false) = (due, spec.suspend.unwrap_or(false)) {
        let too_late = spec.starting_deadline_seconds.is_some_and(|d| at + SignedDuration::from_secs(d) < now);
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if too_late {
            ctx.recorder.record(
                cj.as_ref(),
                Type::Warning,
                "MissSchedule",
                "Schedule",
                format!("Missed scheduled time to start a job: {at}"),
            );
        } else if policy == "Forbid" && !active.is_empty() {
            // Skipped: upstream waits for the running Job and does not count this time.
            let wait = Duration::from_secs(1);
            return Ok(Action::requeue(wait));
        } else {
            if policy == "Replace" {
                for job in &active {
                    let _ = jobs_api.delete(&job.name_any(), &DeleteParams::background()).await;
                    ctx.recorder.record(
                        cj.as_ref(),
                        Type::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted job {}", job.name_any()),
                    );
                }
                active_refs.clear();
            }
            let job = job_for(&cj, at);
            match jobs_api.create(&PostParams::default(), &job).await {
                Ok(created) => {
                    ctx.recorder.record(
                        cj.as_ref(),
                        Type::Normal,
                        "SuccessfulCreate",
                        "Create",
                        format!("Created job {}", created.name_any()),
                    );
                    active_refs.push(created.object_ref(&()));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        last_schedule = Some(Time(at));
    }
    let status = json!({"status": {
        "active": if active_refs.is_empty() { json!(null) } else { json!(active_refs) },
        "lastScheduleTime": last_schedule,
        "lastSuccessfulTime": last_successful.or(old.last_successful_time.clone()),
    }});
    let changed = status["status"]["lastScheduleTime"] != json!(old.last_schedule_time)
        || status["status"]["lastSuccessfulTime"] != json!(old.last_successful_time)
        || status["status"]["active"] != json!(old.active.clone().filter(|a| !a.is_empty()));
    if changed {
        api.patch_status(&cj.name_any(), &PatchParams::default(), &Patch::Merge(status)).await?;
    }
    Ok(match next {
        Some(t) => Action::requeue(
            Duration::try_from(t.duration_since(now)).unwrap_or(Duration::from_secs(1)) + Duration::from_millis(100),
        ),
        None => Action::await_change(),
    })
}

/// The Job for one scheduled time, named after it as upstream names it (minutes since the epoch).
fn job_for(cj: &CronJob, at: Timestamp) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED.into(), at.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.name_any(), at.as_second() / 60)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_missed_time_runs_and_the_next_is_known() {
        let schedule: Schedule = "*/5 * * * *".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let (due, next) = times(&schedule, &TimeZone::UTC, at("2026-01-01T00:01:00Z"), at("2026-01-01T00:17:00Z"));
        assert_eq!(due, Some(at("2026-01-01T00:15:00Z")));
        assert_eq!(next, Some(at("2026-01-01T00:20:00Z")));
        let (due, _) = times(&schedule, &TimeZone::UTC, at("2026-01-01T00:15:00Z"), at("2026-01-01T00:17:00Z"));
        assert_eq!(due, None);
    }
}
