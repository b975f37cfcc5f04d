//! Deletion as upstream does it: preconditions, graceful deletion of pods, finalizers and the
//! `deletionTimestamp` that marks an object whose deletion waits on them, the propagation
//! policy recorded for the garbage collector, and namespaces that terminate.

use super::*;

/// Namespaces upstream refuses to delete.
const PROTECTED_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// A DELETE's options, from its `DeleteOptions` body and query.
#[derive(Default, Debug)]
pub(super) struct DeleteOptions {
    resource_version: Option<i64>,
    uid: Option<String>,
    grace_period: Option<i64>,
    propagation: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    pub(super) fn parse(body: Value, query: &WriteParams) -> Result<DeleteOptions, ApiError> {
        let mut options = DeleteOptions {
            dry_run: query.dry_run()?,
            grace_period: query.grace_period_seconds,
            propagation: query.propagation_policy.clone(),
            ..Default::default()
        };
        options.merge(&body)?;
        Ok(options)
    }

    /// Takes the fields of a `DeleteOptions` object (also an Eviction's `deleteOptions`).
    pub(super) fn merge(&mut self, body: &Value) -> Result<(), ApiError> {
        let bad = |what: &str| ApiError::BadRequest(format!("invalid DeleteOptions: {what}"));
        if !body.is_object() && !body.is_null() {
            return Err(bad("the body is not an object"));
        }
        if let Some(rv) = body["preconditions"]["resourceVersion"].as_str() {
            self.resource_version = Some(parse_revision(rv)?);
        }
        if let Some(uid) = body["preconditions"]["uid"].as_str() {
            self.uid = Some(uid.to_owned());
        }
        match &body["gracePeriodSeconds"] {
            Value::Null => {}
            Value::Number(n) => self.grace_period = Some(n.as_i64().ok_or_else(|| bad("gracePeriodSeconds"))?),
            _ => return Err(bad("gracePeriodSeconds must be a number")),
        }
        match &body["propagationPolicy"] {
            Value::Null => {}
            Value::String(policy) => self.propagation = Some(policy.clone()),
            _ => return Err(bad("propagationPolicy must be a string")),
        }
        if body["orphanDependents"] == json!(true) && self.propagation.is_none() {
            self.propagation = Some("Orphan".into());
        }
        match &body["dryRun"] {
            Value::Null => {}
            Value::Array(values) if values.iter().all(|v| v == "All") => self.dry_run |= !values.is_empty(),
            other => {
                return Err(ApiError::BadRequest(format!("unsupported dryRun value {other}: only All is supported")));
            }
        }
        match self.propagation.as_deref() {
            None | Some("Background" | "Foreground" | "Orphan") => Ok(()),
            Some(other) => Err(ApiError::BadRequest(format!(
                "propagationPolicy {other:?} is not supported: use Background, Foreground or Orphan"
            ))),
        }
    }
}

/// The seconds a pod gets to stop: none if it never ran anywhere or has finished.
fn grace_period(kind: &Kind, object: &Value, options: &DeleteOptions) -> i64 {
    if kind.plural != "pods" {
        return 0;
    }
    let unscheduled = object["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let finished = matches!(object["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if unscheduled || finished {
        return 0;
    }
    let default = object["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    // A negative period means "as soon as possible" (1 s, as upstream); a huge one is capped so
    // the deletion time stays a date.
    match options.grace_period.unwrap_or(default) {
        period if period < 0 => 1,
        period => period.min(MAX_GRACE_SECONDS),
    }
}

/// Ten years: far beyond any real grace period, well inside what a timestamp can hold.
const MAX_GRACE_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// The garbage collector's finalizers.
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// The finalizers after a delete with these options, as upstream's
/// `deletionFinalizersForGarbageCollection`: Orphan records `orphan` (the collector frees the
/// dependents), Foreground records `foregroundDeletion` (it deletes them first), Background
/// neither; with no policy given, one already recorded stays.
fn gc_finalizers(finalizers: &[Value], options: &DeleteOptions) -> Vec<Value> {
    let has = |f: &str| finalizers.iter().any(|v| v == f);
    let (orphan, foreground) = match options.propagation.as_deref() {
        Some("Orphan") => (true, false),
        Some("Foreground") => (false, true),
        Some(_) => (false, false),
        None => (has(ORPHAN), !has(ORPHAN) && has(FOREGROUND)),
    };
    let mut kept: Vec<Value> = finalizers.iter().filter(|f| *f != ORPHAN && *f != FOREGROUND).cloned().collect();
    if orphan {
        kept.push(json!(ORPHAN));
    }
    if foreground {
        kept.push(json!(FOREGROUND));
    }
    // Unchanged as a set: keep the order the object had.
    let same = kept.len() == finalizers.len() && kept.iter().all(|f| finalizers.contains(f));
    if same { finalizers.to_vec() } else { kept }
}

/// Deletes one object, or marks it for deletion when a grace period or finalizers hold it.
pub(super) async fn delete_object(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    options: DeleteOptions,
) -> Result<Response, ApiError> {
    if kind.plural == "namespaces" && PROTECTED_NAMESPACES.contains(&name) {
        return Err(ApiError::Forbidden {
            resource: kind.resource,
            name: name.to_owned(),
            message: "this namespace may not be deleted".into(),
        });
    }
    let key = object_key(kind, namespace, name);
    for _ in 0..PATCH_ATTEMPTS {
        let current = current(&state.store, kind, &key, name).await?;
        match delete_once(state, kind, &key, name, &current, &options).await {
            Err(ApiError::Conflict { .. }) if options.resource_version.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() })
}

async fn delete_once(
    state: &State,
    kind: &Kind,
    key: &str,
    name: &str,
    current: &KeyValue,
    options: &DeleteOptions,
) -> Result<Response, ApiError> {
    let mut object = with_revision(current)?;
    if options.resource_version.is_some_and(|rv| rv != current.mod_revision) {
        return Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() });
    }
    if let Some(uid) = &options.uid {
        let found = object["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != found {
            return Err(ApiError::Conflicting {
                resource: kind.resource.to_owned(),
                name: name.to_owned(),
                message: format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {found}"),
            });
        }
    }
    let grace = grace_period(kind, &object, options);
    let meta = &mut object["metadata"];
    let before: Vec<Value> = meta["finalizers"].as_array().cloned().unwrap_or_default();
    let finalizers = gc_finalizers(&before, options);
    let namespace = kind.plural == "namespaces";
    let pending = grace > 0 || !finalizers.is_empty() || namespace;
    let uid = meta["uid"].clone();
    if pending {
        let changed = finalizers != before;
        if changed {
            meta["finalizers"] = json!(finalizers);
        }
        if meta["deletionTimestamp"].is_string() {
            let shorter = grace < meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
            if !shorter && !changed {
                // Already being deleted: nothing changes, as upstream answers a repeated delete.
                return Ok((StatusCode::OK, axum::Json(object)).into_response());
            }
        }
        let when = time::OffsetDateTime::now_utc() + time::Duration::seconds(grace);
        let when = when.replace_nanosecond(0).expect("0 ns is valid");
        meta["deletionTimestamp"] =
            json!(when.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339"));
        meta["deletionGracePeriodSeconds"] = json!(grace);
        if namespace {
            object["status"]["phase"] = json!("Terminating");
        }
        if options.dry_run {
            return Ok((StatusCode::OK, axum::Json(object)).into_response());
        }
        let kv = state
            .store
            .update(key, encode(&object)?, current.mod_revision)
            .await
            .map_err(|e| ApiError::from_store(e, kind.resource, name))?;
        return Ok((StatusCode::OK, axum::Json(with_revision(&kv)?)).into_response());
    }
    if !options.dry_run {
        state
            .store
            .delete(key, Some(current.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, kind.resource, name))?;
        services::release(state, &services::held(kind, &object)).await;
    }
    // Pods answer with the object, as upstream's pod storage does; the rest with a Status.
    if kind.plural == "pods" {
        return Ok(axum::Json(object).into_response());
    }
    let (plural, group) = kind.resource.split_once('.').unwrap_or((kind.resource, ""));
    let mut details = json!({"name": name, "kind": plural, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    Ok(axum::Json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }))
    .into_response())
}

/// `deletecollection`: deletes every selected object in the collection, answering with the
/// list of what was deleted or marked.
pub(super) async fn delete_collection(
    state: &State,
    kind: &'static Kind,
    namespace: Option<&str>,
    params: ListParams,
    options: DeleteOptions,
) -> Result<Value, ApiError> {
    let (objects, _) = list_all(state, kind, namespace, &params).await?;
    let mut deleted = Vec::new();
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let ns = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let options = DeleteOptions {
            resource_version: None,
            uid: None,
            grace_period: options.grace_period,
            propagation: options.propagation.clone(),
            dry_run: options.dry_run,
        };
        match delete_object(state, kind, ns.as_deref(), &name, options).await {
            Ok(_) => deleted.push(object),
            // Gone meanwhile: that is what was asked.
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": {}, "items": deleted}))
}
