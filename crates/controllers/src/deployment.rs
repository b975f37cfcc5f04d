//! The Deployment controller: a ReplicaSet per pod template (named with its
//! `pod-template-hash`), rolled from old to new by RollingUpdate (maxSurge, maxUnavailable)
//! or Recreate, with revision annotations `kubectl rollout history` and `undo` read, old
//! ReplicaSets pruned to `revisionHistoryLimit`, and the Progressing and Available conditions
//! `kubectl rollout status` follows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::events::{Recorder, Type};
use crate::replicaset::{claim, controller_of, owner_reference};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of the Deployment not copied to its ReplicaSets, as upstream.
const NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX_REPLICAS,
];

struct Context {
    client: Client,
    recorder: Recorder,
}

pub async fn run(client: Client) {
    let context = Arc::new(Context {
        recorder: Recorder::start(client.clone(), "deployment-controller"),
        client: client.clone(),
    });
    Controller::new(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(d: Arc<Deployment>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("deployment {}: {error}", d.name_any());
    Action::requeue(Duration::from_secs(2))
}

/// The template's hash, as upstream's `ComputeHash`: FNV-1a over the template and the
/// collision count, written with the safe alphabet of `rand.SafeEncodeString`.
pub fn template_hash(template: &PodTemplateSpec, collisions: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collisions {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string().bytes().map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char).collect()
}

/// The template without the hash label, in a form compared semantically: a ReplicaSet's
/// with the Deployment's.
fn without_hash(template: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut t = template.cloned().unwrap_or_default();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    semantic(serde_json::to_value(t).unwrap_or_default())
}

/// Drops fields holding `false`, `0`, `""` or nothing. Go clients omit such fields of
/// non-pointer types, so a template that went through one (`kubectl rollout undo`) and the
/// same template sent as protobuf (which carries them) must compare equal, as they do under
/// upstream's semantic equality.
pub fn semantic(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, semantic(v)))
                .filter(|(_, v)| match v {
                    Value::Null | Value::Bool(false) => false,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    Value::Object(m) => !m.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    Value::Bool(true) => true,
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(semantic).collect()),
        other => other,
    }
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// An int-or-percent of `total`, rounded up or down as upstream resolves maxSurge (up) and
/// maxUnavailable (down).
pub fn resolve(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => percent(s, total, round_up),
        None => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i32, round_up: bool) -> i32 {
    let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
    let scaled = p * i64::from(total);
    (if round_up { (scaled + 99) / 100 } else { scaled / 100 }) as i32
}

/// (maxSurge, maxUnavailable), never both zero.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let rolling = spec.and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), "25%", want, true);
    let unavailable = resolve(rolling.and_then(|r| r.max_unavailable.as_ref()), "25%", want, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable.min(want)) }
}

/// How many replicas each ReplicaSet should have next, for a rolling update. `new` is the
/// index of the new ReplicaSet in `sets`; old ones are scaled down oldest first.
pub fn rolling_targets(want: i32, surge: i32, unavailable: i32, sets: &[ReplicaSet], new: usize) -> Vec<i32> {
    let mut targets: Vec<i32> = sets.iter().map(replicas).collect();
    let total: i32 = targets.iter().sum();
    // Scale the new one up within the surge.
    if targets[new] < want {
        let room = (want + surge - total).max(0);
        targets[new] += room.min(want - targets[new]);
    } else if targets[new] > want {
        targets[new] = want;
    }
    let old_total: i32 = targets.iter().enumerate().filter(|(i, _)| *i != new).map(|(_, r)| *r).sum();
    if old_total == 0 {
        return targets;
    }
    let all: i32 = targets.iter().sum();
    let min_available = want - unavailable;
    let new_unavailable = (targets[new] - available(&sets[new])).max(0);
    let mut budget = all - min_available - new_unavailable;
    let mut order: Vec<usize> = (0..sets.len()).filter(|i| *i != new).collect();
    order.sort_by_key(|i| (sets[*i].metadata.creation_timestamp.as_ref().map(|t| t.0), revision(&sets[*i])));
    // First the old pods that are not available anyway.
    for &i in &order {
        if budget <= 0 {
            break;
        }
        let unhealthy = (targets[i] - available(&sets[i])).max(0).min(budget);
        targets[i] -= unhealthy;
        budget -= unhealthy;
    }
    // Then available ones, keeping minAvailable across all sets.
    let available_now: i32 = sets.iter().zip(&targets).map(|(rs, t)| available(rs).min(*t)).sum();
    let mut budget = (available_now - min_available).min(budget.max(0)).max(0);
    for &i in &order {
        if budget <= 0 {
            break;
        }
        let cut = targets[i].min(budget);
        targets[i] -= cut;
        budget -= cut;
    }
    targets
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut sets = claim(&rs_api, &spec.selector, &owner_reference(d.as_ref())).await?;
    sets.retain(|rs| rs.metadata.deletion_timestamp.is_none());
    let template = without_hash(Some(&spec.template));
    let max_revision = sets.iter().map(revision).max().unwrap_or(0);
    let mut progress_reason = None;
    let new = sets.iter().position(|rs| without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == template);
    let new = match new {
        Some(i) => {
            // A template rolled back to becomes the newest revision again.
            let bump = revision(&sets[i]) < max_revision;
            let revision_now = if bump { max_revision + 1 } else { revision(&sets[i]) };
            let mut annotations = copied_annotations(&d);
            annotations.insert(REVISION.into(), revision_now.to_string());
            let stale = annotations.iter().any(|(k, v)| sets[i].annotations().get(k) != Some(v));
            if stale && !spec.paused.unwrap_or(false) {
                let patch = json!({"metadata": {"annotations": annotations}});
                sets[i] = rs_api.patch(&sets[i].name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
            progress_reason = Some(("FoundNewReplicaSet", format!("Found new replica set {:?}", sets[i].name_any())));
            Some(i)
        }
        None if spec.paused.unwrap_or(false) => None,
        None => {
            let collisions = d.status.as_ref().and_then(|s| s.collision_count);
            let rs = create_set(&ctx, &d, &rs_api, &spec.template, collisions, max_revision + 1).await?;
            progress_reason = Some(("NewReplicaSetCreated", format!("Created new replica set {:?}", rs.name_any())));
            sets.push(rs);
            Some(sets.len() - 1)
        }
    };
    let (surge, unavailable) = surge_and_unavailable(&d);
    if let (Some(new), false) = (new, spec.paused.unwrap_or(false)) {
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let targets = if recreate {
            // Old pods all go first; the new ones come once none is left.
            let old_left = sets
                .iter()
                .enumerate()
                .any(|(i, rs)| i != new && (replicas(rs) > 0 || rs.status.as_ref().is_some_and(|s| s.replicas > 0)));
            (0..sets.len()).map(|i| if i == new && !old_left { want } else { 0 }).collect()
        } else {
            rolling_targets(want, surge, unavailable, &sets, new)
        };
        for (i, target) in targets.iter().enumerate() {
            if *target != replicas(&sets[i])
                || (i == new && sets[i].annotations().get(DESIRED) != Some(&want.to_string()))
            {
                scale(&ctx, &d, &rs_api, &mut sets[i], *target, want, want + surge).await?;
            }
        }
    } else if new.is_none() || spec.paused.unwrap_or(false) {
        // Paused: only scaling is honoured, on the newest set.
        if let Some(i) = new.or_else(|| (0..sets.len()).max_by_key(|i| revision(&sets[*i]))) {
            let others: i32 = sets.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, rs)| replicas(rs)).sum();
            let target = (want - others).max(0);
            if target != replicas(&sets[i]) {
                scale(&ctx, &d, &rs_api, &mut sets[i], target, want, want + surge).await?;
            }
        }
    }
    let complete = new.is_some_and(|i| {
        let rs = &sets[i];
        let status = rs.status.as_ref();
        replicas(rs) == want
            && status.is_some_and(|s| s.replicas == want && s.available_replicas.unwrap_or(0) >= want)
            && sets
                .iter()
                .enumerate()
                .all(|(j, o)| j == i || (replicas(o) == 0 && o.status.as_ref().is_none_or(|s| s.replicas == 0)))
    });
    if complete {
        prune(&ctx, &rs_api, &sets, new, spec.revision_history_limit.unwrap_or(10)).await;
    }
    let status = compute_status(&d, &sets, new, want, unavailable, complete, progress_reason);
    let deadline = spec.progress_deadline_seconds.filter(|_| !complete && !spec.paused.unwrap_or(false));
    // The revision annotation goes with the status, through the status subresource, so it
    // does not bump the generation (upstream does the same).
    let revision = new.map(|i| revision(&sets[i]).to_string());
    let stale_revision = revision.as_ref().is_some_and(|r| d.annotations().get(REVISION) != Some(r));
    if d.status.as_ref() != Some(&status) || stale_revision {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut patch = json!({"status": status});
        if let (true, Some(revision)) = (stale_revision, revision) {
            patch["metadata"] = json!({"annotations": {REVISION: revision}});
        }
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    // Look again when the progress deadline would pass.
    Ok(match deadline {
        Some(seconds) => Action::requeue(Duration::from_secs(u64::try_from(seconds).unwrap_or(600).clamp(1, 600))),
        None => Action::await_change(),
    })
}

async fn create_set(
    ctx: &Context,
    d: &Deployment,
    api: &Api<ReplicaSet>,
    template: &PodTemplateSpec,
    collisions: Option<i32>,
    revision: i64,
) -> Result<ReplicaSet, Error> {
    let hash = template_hash(template, collisions);
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
    let spec = d.spec.clone().unwrap_or_default();
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), revision.to_string());
    let want = spec.replicas.unwrap_or(1);
    annotations.insert(DESIRED.into(), want.to_string());
    annotations.insert(MAX_REPLICAS.into(), (want + surge_and_unavailable(d).0).to_string());
    let name = format!("{}-{hash}", d.name_any());
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: d.namespace(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(d)]),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &rs).await {
        Ok(rs) => Ok(rs),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // A set of that name exists with another template: count the collision, which
            // changes the hash on the next pass, as upstream does.
            let existing = api.get(&name).await?;
            if without_hash(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                == without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()))
                && controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref())
            {
                return Ok(existing);
            }
            let patch = json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
            Api::<Deployment>::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default())
                .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Err(Error::Api(kube::Error::Api(s)))
        }
        Err(e) => Err(e.into()),
    }
    .inspect(|rs| {
        ctx.recorder.record(
            d,
            Type::Normal,
            "ScalingReplicaSet",
            "Scaling",
            format!("Created new replica set {:?}", rs.name_any()),
        );
    })
}

async fn scale(
    ctx: &Context,
    d: &Deployment,
    api: &Api<ReplicaSet>,
    rs: &mut ReplicaSet,
    target: i32,
    desired: i32,
    max: i32,
) -> Result<(), Error> {
    let before = replicas(rs);
    let patch = json!({
        "metadata": {"annotations": {DESIRED: desired.to_string(), MAX_REPLICAS: max.to_string()}},
        "spec": {"replicas": target},
    });
    *rs = api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    if before != target {
        let direction = if target > before { "up" } else { "down" };
        ctx.recorder.record(
            d,
            Type::Normal,
            "ScalingReplicaSet",
            "Scaling",
            format!("Scaled {direction} replica set {} from {before} to {target}", rs.name_any()),
        );
    }
    Ok(())
}

/// Deletes the oldest scaled-down sets beyond the history limit.
async fn prune(ctx: &Context, api: &Api<ReplicaSet>, sets: &[ReplicaSet], new: Option<usize>, limit: i32) {
    let mut old: Vec<&ReplicaSet> = sets
        .iter()
        .enumerate()
        .filter(|(i, rs)| Some(*i) != new && replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0))
        .map(|(_, rs)| rs)
        .collect();
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    old.sort_by_key(|rs| revision(rs));
    for rs in old.into_iter().take(excess) {
        if let Err(e) = api.delete(&rs.name_any(), &DeleteParams::background()).await {
            tracing::debug!("deployment: pruning {}: {e}", rs.name_any());
        }
    }
    let _ = ctx;
}

fn compute_status(
    d: &Deployment,
    sets: &[ReplicaSet],
    new: Option<usize>,
    want: i32,
    unavailable: i32,
    complete: bool,
    found: Option<(&str, String)>,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| sets.iter().map(f).sum::<i32>();
    let total_pods = sum(&|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let available_pods = sum(&available);
    let ready = sum(&|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let updated = new.map(|i| sets[i].status.as_ref().map(|s| s.replicas).unwrap_or(0)).unwrap_or(0);
    let spec_total = sum(&replicas);
    let now = Time(Timestamp::now());
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let set_condition =
        |conditions: &mut Vec<DeploymentCondition>, kind: &str, status: &str, reason: &str, message: String| {
            match conditions.iter_mut().find(|c| c.type_ == kind) {
                Some(c)
                    if c.status == status
                        && c.reason.as_deref() == Some(reason)
                        && c.message.as_deref() == Some(&message) => {}
                Some(c) => {
                    if c.status != status {
                        c.last_transition_time = Some(now.clone());
                    }
                    c.status = status.into();
                    c.reason = Some(reason.into());
                    c.message = Some(message);
                    c.last_update_time = Some(now.clone());
                }
                None => conditions.push(DeploymentCondition {
                    type_: kind.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_update_time: Some(now.clone()),
                    last_transition_time: Some(now.clone()),
                }),
            }
        };
    if available_pods >= want - unavailable {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        );
    }
    let spec = d.spec.clone().unwrap_or_default();
    let new_name = new.map(|i| sets[i].name_any()).unwrap_or_default();
    let progressing = conditions.iter().find(|c| c.type_ == "Progressing").cloned();
    if spec.paused.unwrap_or(false) {
        set_condition(&mut conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into());
    } else if complete {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {new_name:?} has successfully progressed."),
        );
    } else {
        let made_progress = updated != old.updated_replicas.unwrap_or(0)
            || available_pods != old.available_replicas.unwrap_or(0)
            || total_pods != old.replicas.unwrap_or(0);
        let timed_out = progressing.as_ref().is_some_and(|c| {
            let since = c.last_update_time.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
            let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
            c.reason.as_deref() != Some("NewReplicaSetAvailable")
                && since + SignedDuration::from_secs(deadline) < Timestamp::now()
        });
        let was_paused = progressing.as_ref().is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        if was_paused {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            );
        } else if let Some((reason, message)) = found.filter(|(r, _)| *r == "NewReplicaSetCreated") {
            set_condition(&mut conditions, "Progressing", "True", reason, message);
        } else if made_progress || progressing.is_none() {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet {new_name:?} is progressing."),
            );
        } else if timed_out {
            set_condition(
                &mut conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {new_name:?} has timed out progressing."),
            );
        }
    }
    // Upstream lists Available before Progressing.
    conditions.sort_by_key(|c| c.type_ != "Available");
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total_pods),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available_pods),
        unavailable_replicas: Some((spec_total - available_pods).max(0)),
        conditions: Some(conditions),
        collision_count: old.collision_count,
        terminating_replicas: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(name: &str, created: &str, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": replicas, "availableReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn percentages_round_as_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve(Some(&pct("25%")), "", 10, true), 3);
        assert_eq!(resolve(Some(&pct("25%")), "", 10, false), 2);
        assert_eq!(resolve(None, "25%", 3, true), 1);
        assert_eq!(resolve(None, "25%", 3, false), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), "25%", 3, false), 2);
    }

    #[test]
    fn a_rolling_update_honours_surge_and_unavailability() {
        // 10 replicas, surge 3, unavailable 2: a fresh new set starts at 3 (13 in all).
        let mut sets = vec![rs("old", "2026-01-01T00:00:00Z", 10, 10), rs("new", "2026-01-02T00:00:00Z", 0, 0)];
        let targets = rolling_targets(10, 3, 2, &sets, 1);
        assert_eq!(targets, [8, 3]);
        // The new pods are not available yet: old ones may only go down to keep 8 available.
        sets = vec![rs("old", "2026-01-01T00:00:00Z", 8, 8), rs("new", "2026-01-02T00:00:00Z", 3, 0)];
        assert_eq!(rolling_targets(10, 3, 2, &sets, 1), [8, 5]);
        // Once they are, more old ones go, and then the new set grows into the room.
        sets = vec![rs("old", "2026-01-01T00:00:00Z", 8, 8), rs("new", "2026-01-02T00:00:00Z", 5, 5)];
        assert_eq!(rolling_targets(10, 3, 2, &sets, 1), [3, 5]);
        sets = vec![rs("old", "2026-01-01T00:00:00Z", 3, 3), rs("new", "2026-01-02T00:00:00Z", 5, 5)];
        assert_eq!(rolling_targets(10, 3, 2, &sets, 1), [3, 10]);
        sets = vec![rs("old", "2026-01-01T00:00:00Z", 3, 3), rs("new", "2026-01-02T00:00:00Z", 10, 10)];
        assert_eq!(rolling_targets(10, 3, 2, &sets, 1), [0, 10]);
    }

    #[test]
    fn hashes_are_stable_and_change_with_collisions() {
        let t = PodTemplateSpec::default();
        assert_eq!(template_hash(&t, None), template_hash(&t, None));
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        assert!(template_hash(&t, None).chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
