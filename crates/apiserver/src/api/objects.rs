//! Writing and reading single objects: create, get, update, patch, and the JSON on disk.

use super::*;

/// Parses a request body as an object of `kind`: 400 for malformed JSON or a wrong kind.
pub(super) fn decode(kind: &Kind, body: &[u8]) -> Result<Value, ApiError> {
    let object: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    if !object.is_object() {
        return Err(ApiError::BadRequest("the request body is not a JSON object".into()));
    }
    for (field, expected) in [("apiVersion", "v1"), ("kind", kind.kind)] {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => {}
            Some(found) if found == expected => {}
            Some(found) => {
                return Err(ApiError::BadRequest(format!(
                    "the {field} in the data ({found}) does not match the expected {field} ({expected})"
                )));
            }
        }
    }
    let mut normalized = (kind.normalize)(object)
        .map_err(|e| ApiError::BadRequest(format!("the object is not a valid {}: {e}", kind.kind)))?;
    normalized["apiVersion"] = json!("v1");
    normalized["kind"] = json!(kind.kind);
    (kind.prepare)(&mut normalized);
    Ok(normalized)
}

/// Returns the stored object with its resourceVersion.
pub(super) fn with_revision(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

pub(super) fn encode(object: &Value) -> Result<Bytes, ApiError> {
    let mut stored = object.clone();
    if let Some(meta) = stored["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&stored).map(Bytes::from).map_err(|e| ApiError::Internal(e.to_string()))
}

pub(super) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 ns is valid");
    now.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339 formats any UTC time")
}

pub(super) async fn create_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if meta["name"].as_str().unwrap_or("").is_empty() {
        match meta["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => meta["name"] = json!(generated_name(prefix)),
            _ => {
                return Err(ApiError::Invalid {
                    kind: kind.kind,
                    name: String::new(),
                    causes: vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
                });
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    if let Some(message) = check_name(kind.name_rule, &name) {
        return Err(ApiError::Invalid { kind: kind.kind, name, causes: vec![("metadata.name".into(), message)] });
    }
    if let Some(ns) = namespace {
        match meta["namespace"].as_str() {
            None | Some("") => meta["namespace"] = json!(ns),
            Some(found) if found == ns => {}
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        if store
            .get(&format!("/registry/namespaces/{ns}"), None)
            .await
            .map_err(|e| ApiError::from_store(e, "namespaces", ns))?
            .is_none()
        {
            return Err(ApiError::NotFound { resource: "namespaces", name: ns.to_owned() });
        }
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now_rfc3339());
    (kind.defaults)(&mut object);
    if namespace.is_none() {
        object["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    let key = object_key(kind, namespace, &name);
    if dry_run {
        return match store.get(&key, None).await.map_err(|e| ApiError::from_store(e, kind.plural, &name))? {
            Some(_) => Err(ApiError::AlreadyExists { resource: kind.plural, name }),
            None => Ok(object),
        };
    }
    let kv = store.create(&key, encode(&object)?).await.map_err(|e| ApiError::from_store(e, kind.plural, &name))?;
    with_revision(&kv)
}

pub(super) async fn get_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    match store.get(&key, None).await.map_err(|e| ApiError::from_store(e, kind.plural, name))? {
        Some(kv) => with_revision(&kv),
        None => Err(ApiError::NotFound { resource: kind.plural, name: name.to_owned() }),
    }
}

pub(super) async fn update_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if object["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::BadRequest("the name of the object does not match the name on the URL".into()));
    }
    let key = object_key(kind, namespace, name);
    let current = store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::from_store(e, kind.plural, name))?
        .ok_or_else(|| ApiError::NotFound { resource: kind.plural, name: name.to_owned() })?;
    if let (Some(ns), Some(found)) = (namespace, object["metadata"]["namespace"].as_str()) {
        if !found.is_empty() && found != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    let expected = match object["metadata"]["resourceVersion"].as_str() {
        // No resourceVersion: an unconditional update, which upstream allows for these kinds.
        None | Some("") | Some("0") => current.mod_revision,
        Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
    };
    keep_immutable(kind, &mut object, &current, namespace)?;
    if dry_run {
        return with_revision(&KeyValue { value: encode(&object)?, ..current });
    }
    let kv =
        store.update(&key, encode(&object)?, expected).await.map_err(|e| ApiError::from_store(e, kind.plural, name))?;
    with_revision(&kv)
}

/// How often a patch is re-applied when another write raced it, as upstream's GuaranteedUpdate.
pub(super) const PATCH_ATTEMPTS: usize = 5;

pub(super) async fn patch_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    patch: PatchBody,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    let invalid = |message: String| ApiError::Invalid {
        kind: kind.kind,
        name: name.to_owned(),
        causes: vec![("patch".into(), message)],
    };
    for _ in 0..PATCH_ATTEMPTS {
        let current = store
            .get(&key, None)
            .await
            .map_err(|e| ApiError::from_store(e, kind.plural, name))?
            .ok_or_else(|| ApiError::NotFound { resource: kind.plural, name: name.to_owned() })?;
        let mut object = with_revision(&current)?;
        match &patch {
            PatchBody::Json(operations) => {
                json_patch::patch(&mut object, operations).map_err(|e| invalid(e.to_string()))?
            }
            PatchBody::Merge(merge) => json_patch::merge(&mut object, merge),
        }
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(invalid("metadata.name: field is immutable".into()));
        }
        // A resourceVersion the patch sets is a precondition; otherwise a race is retried.
        let pinned = object["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| *rv != current.mod_revision.to_string())
            .map(str::to_owned);
        let expected = match &pinned {
            Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
            None => current.mod_revision,
        };
        let mut patched = (kind.normalize)(object)
            .map_err(|e| ApiError::BadRequest(format!("the patched object is not a valid {}: {e}", kind.kind)))?;
        patched["apiVersion"] = json!("v1");
        patched["kind"] = json!(kind.kind);
        (kind.prepare)(&mut patched);
        keep_immutable(kind, &mut patched, &current, namespace)?;
        if dry_run {
            return with_revision(&KeyValue { value: encode(&patched)?, ..current });
        }
        match store.update(&key, encode(&patched)?, expected).await {
            Ok(kv) => return with_revision(&kv),
            Err(rkube_store::StoreError::Conflict { .. }) if pinned.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.plural, name)),
        }
    }
    Err(ApiError::Conflict { resource: kind.plural, name: name.to_owned() })
}

/// Carries the fields a client may not change over from the stored object, and defaults what
/// the client left out, as upstream's update strategies do.
pub(super) fn keep_immutable(
    kind: &Kind,
    object: &mut Value,
    current: &KeyValue,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let stored: Value = serde_json::from_slice(&current.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    (kind.defaults)(object);
    for field in ["uid", "creationTimestamp", "namespace"] {
        object["metadata"][field] = stored["metadata"][field].clone();
    }
    // Status is written through the status subresource only.
    if stored.get("status").is_some() {
        object["status"] = stored["status"].clone();
    }
    let causes = (kind.check_update)(&stored, object);
    if !causes.is_empty() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        return Err(ApiError::Invalid { kind: kind.kind, name, causes });
    }
    if namespace.is_none() {
        object["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    Ok(())
}

/// A DELETE body's DeleteOptions: the resourceVersion precondition, and whether `dryRun`
/// (which kubectl sends here rather than in the query) asks for a dry run.
pub(super) fn delete_options(body: &[u8]) -> Result<(Option<i64>, bool), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, false));
    }
    let options: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?;
    let expected = match options["preconditions"]["resourceVersion"].as_str() {
        Some(rv) => Some(rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?),
        None => None,
    };
    let dry_run = match &options["dryRun"] {
        Value::Null => false,
        Value::Array(values) if values.iter().all(|v| v == "All") => !values.is_empty(),
        other => return Err(ApiError::BadRequest(format!("unsupported dryRun value {other}: only All is supported"))),
    };
    Ok((expected, dry_run))
}
