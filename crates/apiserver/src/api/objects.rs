//! Writing and reading single objects: create, get, update, patch, and the JSON on disk.

use super::*;

/// Parses a request body as an object of `kind`: 400 for malformed JSON or a wrong kind.
pub(super) fn decode(kind: &Kind, object: Value, fields: &FieldValidation) -> Result<Value, ApiError> {
    if !object.is_object() {
        return Err(ApiError::BadRequest("the request body is not a JSON object".into()));
    }
    for (field, expected) in [("apiVersion", kind.api_version), ("kind", kind.kind)] {
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
    normalize(kind, object, fields, None)
}

/// How a write treats fields its kind does not have (the `fieldValidation` parameter), and the
/// warnings it collected for the response.
pub(super) struct FieldValidation {
    mode: FieldMode,
    warnings: std::sync::Mutex<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldMode {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// Upstream's default, without the parameter, is to warn.
    pub(super) fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        let mode = match value {
            None | Some("") | Some("Warn") => FieldMode::Warn,
            Some("Ignore") => FieldMode::Ignore,
            Some("Strict") => FieldMode::Strict,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "fieldValidation parameter unsupported: {other:?}; supported values: Ignore, Warn, Strict"
                )));
            }
        };
        Ok(FieldValidation { mode, warnings: Default::default() })
    }

    /// The warnings to send, as upstream's `Warning: 299 - "..."` headers.
    pub(super) fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// `patch` is the patch that made `input`, if one did: upstream words a patch's strict
    /// failure as a 422 on the field `patch`, a body's as a 400.
    fn check(&self, kind: &Kind, input: &Value, decoded: &Value, patch: Option<&PatchBody>) -> Result<(), ApiError> {
        if self.mode == FieldMode::Ignore {
            return Ok(());
        }
        let mut unknown = Vec::new();
        unknown_fields(input, decoded, &mut String::new(), &mut unknown);
        let unknown: Vec<String> = unknown.iter().map(|path| format!("unknown field {path:?}")).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        match (self.mode, patch) {
            (FieldMode::Strict, Some(patch)) => Err(ApiError::Invalid {
                kind: "",
                name: String::new(),
                causes: vec![(
                    "patch".into(),
                    format!(
                        "Invalid value: {:?}: strict decoding error: {}",
                        patch.as_json().to_string(),
                        unknown.join(", ")
                    ),
                )],
            }),
            (FieldMode::Strict, None) => Err(ApiError::BadRequest(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                kind.kind,
                kind.version,
                kind.kind,
                unknown.join(", ")
            ))),
            _ => {
                if let Ok(mut warnings) = self.warnings.lock() {
                    warnings.extend(unknown);
                }
                Ok(())
            }
        }
    }
}

/// The paths of fields in `input` that decoding into the kind's type dropped: fields the type
/// does not have. Nulls are skipped (a null known field is dropped too).
fn unknown_fields(input: &Value, decoded: &Value, path: &mut String, found: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(input), Value::Object(decoded)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match decoded.get(key) {
                    None => found.push(path.clone()),
                    Some(inner) => unknown_fields(value, inner, path, found),
                }
                path.truncate(len);
            }
        }
        (Value::Array(input), Value::Array(decoded)) => {
            for (i, (value, inner)) in input.iter().zip(decoded).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                unknown_fields(value, inner, path, found);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Decodes through the kind's type, which rejects wrong field types, and stamps the kind.
fn normalize(
    kind: &Kind,
    object: Value,
    fields: &FieldValidation,
    patch: Option<&PatchBody>,
) -> Result<Value, ApiError> {
    let input = (fields.mode != FieldMode::Ignore).then(|| object.clone());
    let mut normalized = (kind.normalize)(object)
        .map_err(|e| ApiError::BadRequest(format!("the object is not a valid {}: {e}", kind.kind)))?;
    if let Some(input) = input {
        fields.check(kind, &input, &normalized, patch)?;
    }
    normalized["apiVersion"] = json!(kind.api_version);
    normalized["kind"] = json!(kind.kind);
    (kind.prepare)(&mut normalized);
    Ok(normalized)
}

/// Parses the body of a subresource request (a Binding, an Eviction, a Scale).
pub(super) fn decode_as(object: Value, expected: &str) -> Result<Value, ApiError> {
    if !object.is_object() {
        return Err(ApiError::BadRequest(format!("the request body is not a {expected} object")));
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => Ok(object),
        Some(found) if found == expected => Ok(object),
        Some(found) => Err(ApiError::BadRequest(format!("expected a {expected}, got a {found}"))),
    }
}

/// Returns the stored object with its resourceVersion.
pub(super) fn with_revision(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

/// The stored object's JSON with its resourceVersion spliced into `metadata`, without parsing
/// it: lists of thousands of objects are mostly this. Falls back to parsing if the bytes are
/// not the shape `encode` writes.
pub(super) fn with_revision_bytes(kv: &KeyValue) -> Result<Vec<u8>, ApiError> {
    revision_spliced(&kv.value, kv.mod_revision)
}

/// Stored JSON with `revision` spliced in as its resourceVersion (see `with_revision_bytes`).
pub(super) fn revision_spliced(value: &[u8], revision: i64) -> Result<Vec<u8>, ApiError> {
    let field = format!("\"resourceVersion\":\"{revision}\"");
    match metadata_open_brace(value) {
        Some(at) => {
            let mut out = Vec::with_capacity(value.len() + field.len() + 1);
            out.extend_from_slice(&value[..=at]);
            out.extend_from_slice(field.as_bytes());
            if value.get(at + 1) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&value[at + 1..]);
            Ok(out)
        }
        None => {
            let mut object: Value = serde_json::from_slice(value).map_err(|e| ApiError::Internal(e.to_string()))?;
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            serde_json::to_vec(&object).map_err(|e| ApiError::Internal(e.to_string()))
        }
    }
}

/// The offset of the `{` that opens the top-level `metadata` object of compact JSON, found by
/// one pass that tracks strings and depth (a nested `metadata`, as in a pod template, or the
/// text inside a string never matches).
fn metadata_open_brace(json: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < json.len() {
        match json[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b'"' => {
                let start = i + 1;
                i = string_end(json, i);
                if depth == 1 && &json[start..i.min(json.len())] == b"metadata" && json.get(i + 1) == Some(&b':') {
                    return (json.get(i + 2) == Some(&b'{')).then_some(i + 2);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The top-level `metadata` object of compact JSON, as a byte range, without parsing.
fn metadata_span(json: &[u8]) -> Option<(usize, usize)> {
    let start = metadata_open_brace(json)?;
    let (mut depth, mut i) = (0usize, start);
    while i < json.len() {
        match json[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some((start, i + 1));
                }
            }
            b'"' => i = string_end(json, i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The offset of the quote closing the JSON string opened at `open` (or the end of the input).
fn string_end(json: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < json.len() && json[i] != b'"' {
        i += if json[i] == b'\\' { 2 } else { 1 };
    }
    i
}

/// An object as a `PartialObjectMetadata`: its metadata alone.
pub(super) fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

/// The same from an object's compact JSON, cutting out its metadata rather than parsing it.
pub(super) fn partial_json(json: &[u8]) -> Result<Vec<u8>, ApiError> {
    const HEAD: &[u8] = br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#;
    match metadata_span(json) {
        Some((start, end)) => {
            let mut out = Vec::with_capacity(HEAD.len() + end - start + 1);
            out.extend_from_slice(HEAD);
            out.extend_from_slice(&json[start..end]);
            out.push(b'}');
            Ok(out)
        }
        None => {
            let object: Value = serde_json::from_slice(json).map_err(|e| ApiError::Internal(e.to_string()))?;
            serde_json::to_vec(&partial(&object)).map_err(|e| ApiError::Internal(e.to_string()))
        }
    }
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

/// A namespace that exists and is not being deleted, or the error upstream gives.
async fn check_namespace(store: &Store, kind: &Kind, ns: &str, name: &str) -> Result<(), ApiError> {
    let found = store
        .get(&format!("/registry/namespaces/{ns}"), None)
        .await
        .map_err(|e| ApiError::from_store(e, "namespaces", ns))?
        .ok_or_else(|| ApiError::NotFound { resource: "namespaces", name: ns.to_owned() })?;
    let namespace: Value = serde_json::from_slice(&found.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    if namespace["metadata"]["deletionTimestamp"].is_string() {
        return Err(ApiError::Forbidden {
            resource: kind.resource,
            name: name.to_owned(),
            message: format!("unable to create new content in namespace {ns} because it is being terminated"),
        });
    }
    Ok(())
}

fn invalid(kind: &Kind, object: &Value, causes: Vec<(String, String)>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    Err(ApiError::Invalid { kind: kind.qualified_kind, name, causes })
}

pub(super) async fn create_object(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let store = &state.store;
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if meta["name"].as_str().unwrap_or("").is_empty() {
        match meta["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => meta["name"] = json!(generated_name(prefix)),
            _ => {
                return Err(ApiError::Invalid {
                    kind: kind.qualified_kind,
                    name: String::new(),
                    causes: vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
                });
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    if let Some(message) = check_name(kind.name_rule, &name) {
        return Err(ApiError::Invalid {
            kind: kind.qualified_kind,
            name,
            causes: vec![("metadata.name".into(), message)],
        });
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
        check_namespace(store, kind, ns, &name).await?;
    }
    // What only the server sets: identity, time, and no deletion in progress.
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"] {
        meta.as_object_mut().map(|m| m.remove(field));
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now_rfc3339());
    if kind.generation {
        meta["generation"] = json!(1);
    }
    // A new object's status is the server's to fill (nodes report their own on registration).
    if kind.has(Subresource::Status) && kind.plural != "nodes" {
        object["status"] = json!({});
    }
    // Admission that fills in fields comes before defaulting, which would fill them otherwise.
    if kind.plural == "pods" && kind.group.is_empty() {
        super::priority::admit(state, &name, &mut object).await?;
    }
    (kind.defaults)(&mut object);
    if namespace.is_none() {
        object["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    invalid(kind, &object, (kind.validate)(&object))?;
    let _admitted = match namespace {
        Some(ns) => super::quota::admit(state, kind, ns, &name, &object).await?,
        None => None,
    };
    let key = object_key(kind, namespace, &name);
    // A dry run, or a write that allocates (a service's IP), first checks the name is free,
    // so re-creating an object says AlreadyExists rather than that its IP is taken.
    if dry_run || kind.plural == "services" {
        if store.get(&key, None).await.map_err(|e| ApiError::from_store(e, kind.resource, &name))?.is_some() {
            return Err(ApiError::AlreadyExists { resource: kind.resource, name });
        }
        if dry_run {
            return Ok(object);
        }
    }
    let allocated = services::allocate(state, kind, &mut object, None).await?;
    match store.create(&key, encode(&object)?).await {
        Ok(kv) => with_revision(&kv),
        Err(e) => {
            services::release(state, &allocated).await;
            Err(ApiError::from_store(e, kind.resource, &name))
        }
    }
}

pub(super) async fn get_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    match store.get(&key, None).await.map_err(|e| ApiError::from_store(e, kind.resource, name))? {
        Some(kv) => with_revision(&kv),
        None => Err(ApiError::NotFound { resource: kind.resource, name: name.to_owned() }),
    }
}

/// Reads the stored object, or 404.
pub(super) async fn current(store: &Store, kind: &Kind, key: &str, name: &str) -> Result<KeyValue, ApiError> {
    store
        .get(key, None)
        .await
        .map_err(|e| ApiError::from_store(e, kind.resource, name))?
        .ok_or_else(|| ApiError::NotFound { resource: kind.resource, name: name.to_owned() })
}

pub(super) fn parse_revision(rv: &str) -> Result<i64, ApiError> {
    rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))
}

/// The revision a write of `object` expects: its resourceVersion, or, without one, whatever is
/// stored (an unconditional write, which upstream allows for these kinds).
pub(super) fn expected_revision(object: &Value, current: &KeyValue) -> Result<i64, ApiError> {
    match object["metadata"]["resourceVersion"].as_str() {
        None | Some("") | Some("0") => Ok(current.mod_revision),
        Some(rv) => parse_revision(rv),
    }
}

/// PUT of an object, or of its status (`scope`), keeping what that scope may not change.
pub(super) async fn update_object(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    object: Value,
    scope: Scope,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if object["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::BadRequest("the name of the object does not match the name on the URL".into()));
    }
    if let (Some(ns), Some(found)) = (namespace, object["metadata"]["namespace"].as_str())
        && !found.is_empty()
        && found != ns
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request".into(),
        ));
    }
    let key = object_key(kind, namespace, name);
    let current = current(&state.store, kind, &key, name).await?;
    let expected = expected_revision(&object, &current)?;
    store_update(state, kind, namespace, name, object, &current, expected, scope, dry_run).await
}

/// Which part of an object a write may change: the object (spec and metadata) or its status.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Object,
    Status,
    /// A namespace's `spec.finalizers`, through `/finalize`.
    Finalize,
}

/// Writes `object` over `current` if the store still holds revision `expected`: carries over
/// what the client may not change, validates, and finishes a deletion whose last finalizer
/// went.
#[allow(clippy::too_many_arguments)]
pub(super) async fn store_update(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    object: Value,
    current: &KeyValue,
    expected: i64,
    scope: Scope,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let stored: Value = serde_json::from_slice(&current.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut object = match scope {
        Scope::Object | Scope::Finalize => object,
        // A status write changes the status only, as upstream's status strategies.
        Scope::Status => {
            let mut merged = stored.clone();
            merged["status"] = object["status"].clone();
            merged["metadata"]["resourceVersion"] = object["metadata"]["resourceVersion"].clone();
            // Deployments' status writes carry annotations too: that is how upstream's
            // controller records the revision without bumping the generation.
            if kind.plural == "deployments"
                && let Some(annotations) = object["metadata"].get("annotations")
            {
                merged["metadata"]["annotations"] = annotations.clone();
            }
            merged
        }
    };
    keep_immutable(kind, &mut object, &stored, namespace, scope)?;
    let key = object_key(kind, namespace, name);
    let allocated =
        if dry_run { Vec::new() } else { services::allocate(state, kind, &mut object, Some(&stored)).await? };
    let finished = object["metadata"]["deletionTimestamp"].is_string()
        && object["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
        && object["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0
        && !blocked_by_spec_finalizers(kind, &object);
    if dry_run {
        return with_revision(&KeyValue { value: encode(&object)?, ..current.clone() });
    }
    if finished {
        // The last finalizer is gone from an object being deleted: it goes now.
        let deleted = match state.store.delete(&key, Some(expected)).await {
            Ok(deleted) => deleted,
            Err(e) => {
                services::release(state, &allocated).await;
                return Err(ApiError::from_store(e, kind.resource, name));
            }
        };
        services::release(state, &services::held(kind, &stored)).await;
        services::release(state, &allocated).await;
        object["metadata"]["resourceVersion"] = json!(deleted.revision.to_string());
        return Ok(object);
    }
    match state.store.update(&key, encode(&object)?, expected).await {
        Ok(kv) => {
            services::release(state, &services::dropped(kind, &stored, &object)).await;
            with_revision(&kv)
        }
        Err(e) => {
            services::release(state, &allocated).await;
            Err(ApiError::from_store(e, kind.resource, name))
        }
    }
}

/// A namespace waits for its own `spec.finalizers` (the namespace controller's) as well.
fn blocked_by_spec_finalizers(kind: &Kind, object: &Value) -> bool {
    kind.plural == "namespaces" && object["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty())
}

/// Upstream's cap on the operations of one JSON patch.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// How often a patch is re-applied when another write raced it, as upstream's GuaranteedUpdate.
pub(super) const PATCH_ATTEMPTS: usize = 5;

/// Applies a patch to the stored object, retrying if another write races it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn patch_object(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    patch: PatchBody,
    scope: Scope,
    dry_run: bool,
    fields: &FieldValidation,
) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    for _ in 0..PATCH_ATTEMPTS {
        let current = current(&state.store, kind, &key, name).await?;
        let mut object = with_revision(&current)?;
        apply_patch(kind, name, &mut object, &patch)?;
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(patch_invalid(kind, name, "metadata.name: field is immutable".into()));
        }
        // A resourceVersion the patch sets is a precondition; otherwise a race is retried.
        let pinned = object["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| *rv != current.mod_revision.to_string())
            .map(str::to_owned);
        let expected = match &pinned {
            Some(rv) => parse_revision(rv)?,
            None => current.mod_revision,
        };
        let patched = normalize(kind, object, fields, Some(&patch))?;
        match store_update(state, kind, namespace, name, patched, &current, expected, scope, dry_run).await {
            Err(ApiError::Conflict { .. }) if pinned.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() })
}

fn patch_invalid(kind: &Kind, name: &str, message: String) -> ApiError {
    ApiError::Invalid { kind: kind.qualified_kind, name: name.to_owned(), causes: vec![("patch".into(), message)] }
}

pub(super) fn apply_patch(kind: &Kind, name: &str, object: &mut Value, body: &PatchBody) -> Result<(), ApiError> {
    match body {
        PatchBody::Json(operations) => {
            // Upstream's limits: copies could otherwise double an object per operation.
            if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::TooLarge(format!(
                    "the JSON patch has {} operations, more than the {MAX_JSON_PATCH_OPERATIONS} allowed",
                    operations.0.len()
                )));
            }
            let mut copied = 0usize;
            for op in &operations.0 {
                if let json_patch::PatchOperation::Copy(copy) = op {
                    copied += object.pointer(copy.from.as_str()).map_or(0, |v| v.to_string().len());
                    if copied > MAX_BODY_BYTES {
                        return Err(ApiError::TooLarge(format!(
                            "the JSON patch copies more than {MAX_BODY_BYTES} bytes"
                        )));
                    }
                }
                json_patch::patch(object, std::slice::from_ref(op))
                    .map_err(|e| patch_invalid(kind, name, e.to_string()))?;
            }
            Ok(())
        }
        PatchBody::Merge(merge) => {
            json_patch::merge(object, merge);
            Ok(())
        }
        // Without managedFields, apply merges the applied object as a strategic patch would:
        // what it sets wins, lists merge by key; fields it stopped setting are not removed.
        PatchBody::Strategic(patch) | PatchBody::Apply(patch) => {
            if let PatchBody::Apply(applied) = body {
                for (field, expected) in [("apiVersion", kind.api_version), ("kind", kind.kind)] {
                    if applied[field].as_str() != Some(expected) {
                        return Err(ApiError::BadRequest(format!(
                            "the applied object must have {field} {expected:?}, not {}",
                            applied[field]
                        )));
                    }
                }
            }
            *object = rkube_core::smp::apply_for_kind(object, patch, kind.kind).map_err(|e| match e.http_status() {
                422 => patch_invalid(kind, name, e.to_string()),
                _ => ApiError::BadRequest(format!("the strategic merge patch is not valid: {e}")),
            })?;
            Ok(())
        }
    }
}

/// Carries the fields a client may not change over from the stored object, defaults what the
/// client left out, bumps the generation on spec changes, and validates, as upstream's update
/// strategies do.
pub(super) fn keep_immutable(
    kind: &Kind,
    object: &mut Value,
    stored: &Value,
    namespace: Option<&str>,
    scope: Scope,
) -> Result<(), ApiError> {
    // A uid in the body is a precondition, as upstream makes it: an update meant for an object
    // that was deleted and re-created under the same name must not land on the new one.
    if let Some(uid) = object["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
        let found = stored["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != found {
            return Err(ApiError::Conflicting {
                resource: kind.resource.to_owned(),
                name: object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                message: format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {found}"),
            });
        }
    }
    // The server's fields first, so defaulting sees them (a job's selector uses its uid).
    for field in
        ["uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"]
    {
        match stored["metadata"].get(field) {
            Some(value) => object["metadata"][field] = value.clone(),
            None => {
                object["metadata"].as_object_mut().map(|m| m.remove(field));
            }
        }
    }
    match kind.plural {
        // Only the namespace controller changes these, through /finalize.
        "namespaces" if scope == Scope::Object => {
            object["spec"]["finalizers"] = stored["spec"]["finalizers"].clone();
        }
        // An update that leaves out the service's IP or node ports keeps the ones it holds.
        "services" => services::carry_over(object, stored),
        _ => {}
    }
    (kind.defaults)(object);
    // Status is written through the status subresource only, where it has one.
    if scope != Scope::Status && kind.has(Subresource::Status) {
        match stored.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                object.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }
    // Deployments count annotation changes too (the deprecated rollback annotation lived there).
    let annotations_count =
        kind.plural == "deployments" && stored["metadata"]["annotations"] != object["metadata"]["annotations"];
    if kind.generation && scope != Scope::Status && (stored["spec"] != object["spec"] || annotations_count) {
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(0);
        object["metadata"]["generation"] = json!(generation + 1);
    }
    if stored["metadata"]["deletionTimestamp"].is_string() {
        let before = stored["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        let added = object["metadata"]["finalizers"].as_array().into_iter().flatten().any(|f| !before.contains(f));
        if added {
            return invalid(
                kind,
                object,
                vec![(
                    "metadata.finalizers".into(),
                    "Forbidden: no new finalizers can be added if the object is being deleted".into(),
                )],
            );
        }
    }
    let mut causes = (kind.validate)(object);
    causes.extend((kind.check_update)(stored, object));
    invalid(kind, object, causes)?;
    if namespace.is_none() {
        object["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &Value) -> KeyValue {
        KeyValue {
            key: "/registry/pods/ns/p".into(),
            value: Bytes::from(serde_json::to_vec(value).unwrap()),
            create_revision: 1,
            mod_revision: 42,
            version: 1,
        }
    }

    #[test]
    fn the_revision_is_spliced_where_parsing_would_put_it() {
        for object in [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}),
            json!({"metadata": {}}),
            // A nested metadata, and one inside a string, come before the real one.
            json!({"data": {"metadata": {"x": "\"metadata\":{"}}, "kind": "ControllerRevision", "metadata": {"name": "r"}}),
            json!({"a": "quote \" and backslash \\", "metadata": {"labels": {"k": "v"}}}),
        ] {
            let kv = kv(&object);
            let spliced: Value = serde_json::from_slice(&with_revision_bytes(&kv).unwrap()).unwrap();
            assert_eq!(spliced, with_revision(&kv).unwrap(), "{object}");
        }
        assert_eq!(metadata_open_brace(br#"{"metadata":"#), None, "truncated");
        assert_eq!(metadata_open_brace(b"}}"), None);
    }

    #[test]
    fn metadata_is_cut_out_where_parsing_would_find_it() {
        for object in [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "}{"}}, "spec": {}}),
            json!({"metadata": {}}),
            json!({"data": {"metadata": {"x": "\"metadata\":{"}}, "metadata": {"name": "r", "o": [{"k": "]"}]}}),
            json!({"a": "quote \" and backslash \\", "metadata": {"labels": {"k": "v\\"}}, "z": 1}),
        ] {
            let json = serde_json::to_vec(&object).unwrap();
            let cut: Value = serde_json::from_slice(&partial_json(&json).unwrap()).unwrap();
            assert_eq!(cut, partial(&object), "{object}");
        }
        // Not the shape `encode` writes: parsed instead; not JSON at all: an error, no panic.
        let spaced = br#"{ "metadata" : { "name" : "x" } }"#;
        assert_eq!(serde_json::from_slice::<Value>(&partial_json(spaced).unwrap()).unwrap()["metadata"]["name"], "x");
        assert!(partial_json(br#"{"metadata":{"name":"#).is_err());
    }
}
