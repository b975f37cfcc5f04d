//! The Job controller: runs pods until `completions` succeed (NonIndexed or Indexed, at most
//! `parallelism` at once), fails the Job past `backoffLimit` failures or `activeDeadlineSeconds`,
//! honours `suspend`, and deletes a finished Job after `ttlSecondsAfterFinished`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::informer::Informer;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::events::{Recorder, Type};
use crate::replicaset::{claim_pods, create_pods, owner_reference, pod_from_template, ready_since};

/// The annotation and label an Indexed Job's pods carry their index in.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";

struct Context {
    client: Client,
    recorder: Recorder,
}

/// `pods` is the shared pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    let context =
        Arc::new(Context { recorder: Recorder::start(client.clone(), "job-controller"), client: client.clone() });
    Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns_shared_stream(pods.touched())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(job: Arc<Job>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("job {}: {error}", job.name_any());
    Action::requeue(Duration::from_secs(2))
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(INDEX).or_else(|| pod.labels().get(INDEX)).and_then(|i| i.parse().ok())
}

/// A finished Job's condition type, if it has finished.
pub fn finished(job: &Job) -> Option<&str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// `1,3-5,7`: the compressed index list upstream writes to `completedIndexes`.
pub fn compress(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

fn condition(kind: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = Timestamp::now();
    if finished(&job).is_some() {
        return expire(&api, &job, now).await;
    }
    let spec = job.spec.clone().unwrap_or_default();
    let owner = owner_reference(job.as_ref());
    let selector = spec.selector.clone().unwrap_or_default();
    let pods = claim_pods(&ctx.client, &namespace, &selector, &owner).await?;
    let old = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    let succeeded_pods: Vec<&Pod> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    let restart_failures: i32 =
        if spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure") {
            active
                .iter()
                .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
                .flatten()
                .map(|c| c.restart_count)
                .sum()
        } else {
            0
        };
    let failed =
        (pods.iter().filter(|p| phase(p) == "Failed").count() as i32).max(old.failed.unwrap_or(0)) + restart_failures;
    let mut completed_indexes: BTreeSet<i32> = BTreeSet::new();
    if indexed {
        completed_indexes.extend(succeeded_pods.iter().filter_map(|p| index_of(p)));
        completed_indexes.extend(parse_indexes(old.completed_indexes.as_deref().unwrap_or_default()));
    }
    let succeeded = if indexed {
        completed_indexes.len() as i32
    } else {
        (succeeded_pods.len() as i32).max(old.succeeded.unwrap_or(0))
    };
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let start_time = old.start_time.clone().unwrap_or(Time(now));
    let suspended = spec.suspend.unwrap_or(false);

    let mut conditions = old.conditions.clone().unwrap_or_default();
    let mut outcome: Option<(&str, &str, String)> = None;
    if failed > backoff_limit {
        outcome = Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit".into()));
    } else if let Some(deadline) = spec.active_deadline_seconds.filter(|_| !suspended)
        && start_time.0 + SignedDuration::from_secs(deadline) <= now
    {
        outcome = Some(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline".into()));
    }
    let complete = match completions {
        Some(n) => succeeded >= n,
        None => succeeded > 0 && active.is_empty(),
    };
    if outcome.is_none() && complete {
        outcome = Some(("Complete", "", String::new()));
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut active_count = active.len() as i32;
    if outcome.is_some() || suspended {
        // Finished or suspended: nothing keeps running.
        for pod in &active {
            let _ = pods_api.delete(&pod.name_any(), &DeleteParams::background()).await;
        }
        active_count = 0;
    } else {
        let want = match completions {
            Some(n) if !indexed => parallelism.min(n - succeeded),
            Some(n) => parallelism.min(n - completed_indexes.len() as i32),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
        .max(0);
        let missing = (want - active_count).max(0) as usize;
        // Failed pods are replaced after upstream's backoff: 10 s doubling per failure.
        let backoff =
            if failed > 0 { Duration::from_secs((10u64 << (failed - 1).min(5)).min(360)) } else { Duration::ZERO };
        let last_failure = pods.iter().filter(|p| phase(p) == "Failed").filter_map(finished_at).max();
        let waiting = last_failure.is_some_and(|at| at + SignedDuration::try_from(backoff).unwrap_or_default() > now);
        if missing > 0 && waiting {
            let until =
                last_failure.map(|at| (at + SignedDuration::try_from(backoff).unwrap_or_default()).duration_since(now));
            let wait = until.and_then(|d| Duration::try_from(d).ok()).unwrap_or(Duration::from_secs(1));
            write_status(
                &api,
                &job,
                &old,
                status_of(
                    &old,
                    active_count,
                    succeeded,
                    failed,
                    &pods,
                    start_time.clone(),
                    &conditions,
                    indexed.then_some(&completed_indexes),
                ),
            )
            .await?;
            return Ok(Action::requeue(wait.max(Duration::from_millis(200))));
        }
        if missing > 0 {
            let template = spec.template.clone();
            if indexed {
                let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                let todo: Vec<i32> = (0..completions.unwrap_or(0))
                    .filter(|i| !completed_indexes.contains(i) && !running.contains(i))
                    .take(missing)
                    .collect();
                for index in todo {
                    let mut pod = pod_from_template(&template, &owner, &namespace);
                    pod.metadata.generate_name = Some(format!("{}-{index}-", job.name_any()));
                    pod.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(INDEX.into(), index.to_string());
                    pod.metadata.labels.get_or_insert_with(Default::default).insert(INDEX.into(), index.to_string());
                    if let Some(spec) = pod.spec.as_mut() {
                        spec.hostname.get_or_insert_with(|| format!("{}-{index}", job.name_any()));
                        for c in &mut spec.containers {
                            let env = c.env.get_or_insert_with(Vec::new);
                            if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                                env.push(serde_json::from_value(
                                    json!({"name": "JOB_COMPLETION_INDEX", "value": index.to_string()}),
                                )?);
                            }
                        }
                    }
                    active_count +=
                        create_pods(&ctx.client, &namespace, &pod, 1, &ctx.recorder, job.as_ref()).await? as i32;
                }
            } else {
                let pod = pod_from_template(&template, &owner, &namespace);
                active_count +=
                    create_pods(&ctx.client, &namespace, &pod, missing, &ctx.recorder, job.as_ref()).await? as i32;
            }
        }
    }
    let suspended_condition = conditions.iter().any(|c| c.type_ == "Suspended" && c.status == "True");
    if suspended && !suspended_condition {
        conditions.retain(|c| c.type_ != "Suspended");
        conditions.push(condition("Suspended", "JobSuspended", "Job suspended", now));
    } else if !suspended && suspended_condition {
        conditions.retain(|c| c.type_ != "Suspended");
    }
    let mut status = status_of(
        &old,
        active_count,
        succeeded,
        failed,
        &pods,
        start_time,
        &conditions,
        indexed.then_some(&completed_indexes),
    );
    if suspended && old.start_time.is_none() {
        status.start_time = None;
    }
    if let Some((kind, reason, message)) = outcome {
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if kind == "Complete" {
            // Upstream (1.31+) sets SuccessCriteriaMet first, then Complete.
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
            status.completion_time = Some(Time(now));
            ctx.recorder.record(job.as_ref(), Type::Normal, "Completed", "Completed", "Job completed".into());
        } else {
            conditions.push(condition("FailureTarget", reason, &message, now));
            conditions.push(condition("Failed", reason, &message, now));
            ctx.recorder.record(job.as_ref(), Type::Warning, reason, "Failed", message.clone());
        }
        status.active = None;
        status.ready = Some(0);
    }
    write_status(&api, &job, &old, status).await?;
    // Come back for the deadline, if there is one.
    Ok(match spec.active_deadline_seconds {
        Some(d) if !suspended => {
            let left = (start_time_secs(&job).unwrap_or(now) + SignedDuration::from_secs(d)).duration_since(now);
            Action::requeue(Duration::try_from(left).unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(500)))
        }
        _ => Action::await_change(),
    })
}

fn start_time_secs(job: &Job) -> Option<Timestamp> {
    job.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0)).max()
}

fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b.min(a.saturating_add(100_000)));
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn status_of(
    old: &JobStatus,
    active: i32,
    succeeded: i32,
    failed: i32,
    pods: &[Pod],
    start_time: Time,
    conditions: &[JobCondition],
    completed: Option<&BTreeSet<i32>>,
) -> JobStatus {
    let ready = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running" && ready_since(p).is_some())
        .count() as i32;
    JobStatus {
        active: (active > 0).then_some(active),
        succeeded: (succeeded > 0).then_some(succeeded),
        failed: (failed > 0).then_some(failed),
        ready: Some(ready),
        terminating: Some(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count() as i32),
        start_time: Some(start_time),
        completion_time: old.completion_time.clone(),
        conditions: (!conditions.is_empty()).then(|| conditions.to_vec()),
        completed_indexes: completed.map(compress).filter(|s| !s.is_empty()),
        uncounted_terminated_pods: old.uncounted_terminated_pods.clone(),
        ..old.clone()
    }
}

async fn write_status(api: &Api<Job>, job: &Job, old: &JobStatus, status: JobStatus) -> Result<(), Error> {
    if *old != status {
        api.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(())
}

/// A finished Job goes `ttlSecondsAfterFinished` after it finished.
async fn expire(api: &Api<Job>, job: &Job, now: Timestamp) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let status = job.status.clone().unwrap_or_default();
    let finished_at = status
        .completion_time
        .map(|t| t.0)
        .or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ == "Failed")
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .unwrap_or(now);
    let due = finished_at + SignedDuration::from_secs(i64::from(ttl));
    if due > now {
        let wait = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::from_secs(1));
        return Ok(Action::requeue(wait.max(Duration::from_millis(200))));
    }
    match api.delete(&job.name_any(), &DeleteParams::background()).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_compress_and_parse_back() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(compress(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert_eq!(compress(&BTreeSet::new()), "");
        assert!(parse_indexes("x,3-").is_empty());
    }
}
