//! Subresources: status, scale, pods' binding and eviction, a namespace's finalize, and the
//! read-only component statuses.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::*;

/// The `autoscaling/v1` Scale of a scalable object.
pub(super) fn scale_of(kind: &Kind, object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector = match kind.plural {
        // A ReplicationController's selector is a plain map.
        "replicationcontrollers" => {
            let labels = validate::string_map(&object["spec"]["selector"]);
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
        _ => crate::selector::LabelSelector::from_object(&object["spec"]["selector"])
            .map(|s| s.to_query())
            .unwrap_or_default(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Writes a Scale's `spec.replicas` into the object it scales.
async fn write_scale(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    scale: &Value,
    current: &KeyValue,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let replicas = match &scale["spec"]["replicas"] {
        Value::Null => 0,
        value => value.as_i64().filter(|r| (0..=i64::from(i32::MAX)).contains(r)).ok_or_else(|| ApiError::Invalid {
            kind: "Scale.autoscaling",
            name: name.to_owned(),
            causes: vec![(
                "spec.replicas".into(),
                format!("Invalid value: {value}: must be greater than or equal to 0"),
            )],
        })?,
    };
    let expected = expected_revision(scale, current)?;
    let mut object = with_revision(current)?;
    object["spec"]["replicas"] = json!(replicas);
    let written = store_update(state, kind, namespace, name, object, current, expected, Scope::Object, dry_run).await?;
    Ok(scale_of(kind, &written))
}

pub(super) async fn update_scale(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    scale: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let current = current(&state.store, kind, &object_key(kind, namespace, name), name).await?;
    write_scale(state, kind, namespace, name, &scale, &current, dry_run).await
}

/// PATCH `.../scale`: the patch applies to the Scale view, as `kubectl scale` sends it.
pub(super) async fn patch_scale(
    state: &State,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    patch: PatchBody,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    for _ in 0..PATCH_ATTEMPTS {
        let current = current(&state.store, kind, &key, name).await?;
        let mut scale = scale_of(kind, &with_revision(&current)?);
        apply_patch(kind, name, &mut scale, &patch)?;
        let pinned = scale["metadata"]["resourceVersion"] != json!(current.mod_revision.to_string());
        match write_scale(state, kind, namespace, name, &scale, &current, dry_run).await {
            Err(ApiError::Conflict { .. }) if !pinned => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() })
}

/// A `Status` of success, 201, for a binding or an eviction. The body is made once, since
/// every binding the scheduler writes answers with it.
fn created() -> Response {
    static CREATED: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let body = CREATED.get_or_init(|| {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        Bytes::from(serde_json::to_vec(&status).expect("a Status serializes"))
    });
    (StatusCode::CREATED, [(axum::http::header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

/// POST `pods/NAME/binding`: the scheduler assigns the pod to a node, once.
pub(super) async fn bind_pod(
    state: &State,
    namespace: &str,
    name: &str,
    binding: Value,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let kind = kinds::core("pods");
    // Typed, so what reaches the stored pod (annotations) has the types clients expect.
    let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(binding)
        .map_err(|e| ApiError::BadRequest(format!("the object is not a valid Binding: {e}")))?;
    let target = binding.target.name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::Invalid {
        kind: "Binding",
        name: name.to_owned(),
        causes: vec![("target.name".into(), "Required value".into())],
    })?;
    if binding.target.kind.as_deref().is_some_and(|k| !k.is_empty() && k != "Node") {
        return Err(ApiError::Invalid {
            kind: "Binding",
            name: name.to_owned(),
            causes: vec![("target.kind".into(), "Unsupported value: must be empty or \"Node\"".into())],
        });
    }
    let conflict =
        |message: String| ApiError::Conflicting { resource: "pods/binding".into(), name: name.to_owned(), message };
    let key = object_key(kind, Some(namespace), name);
    let annotations = binding.metadata.annotations.as_ref().filter(|a| !a.is_empty());
    // The first try starts from the watch cache's copy, if it has one, as upstream's
    // GuaranteedUpdate does: a stale copy fails the write's revision check (or, bound or
    // being deleted, was so in the store too, as neither is undone), and the next try
    // reads the store.
    let mut cached = state.watches.cached(kind, &key);
    // As upstream's UID precondition: a binding names the pod it was made for.
    let uid = binding.metadata.uid.as_deref().filter(|u| !u.is_empty());
    for _ in 0..PATCH_ATTEMPTS {
        let (stored, revision, from_cache) = match cached.take() {
            Some(entry) => (entry.json.clone(), entry.revision, true),
            None => {
                let current = current(&state.store, kind, &key, name).await?;
                (current.value, current.mod_revision, false)
            }
        };
        let bound = match bound_pod(&stored, target, annotations, uid)? {
            Ok(bound) => bound,
            // The cached copy may be of an earlier pod of the same name: only the store's
            // answer is final.
            Err(_) if from_cache => continue,
            Err(Unbindable::Deleting) => {
                return Err(conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
            }
            Err(Unbindable::Bound(node)) => {
                return Err(conflict(format!("pod {name} is already assigned to node {node:?}")));
            }
            Err(Unbindable::OtherPod(found)) => {
                let want = uid.unwrap_or_default();
                return Err(conflict(format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {found}"
                )));
            }
        };
        if dry_run {
            return Ok(created());
        }
        match state.store.update(&key, bound.into(), revision).await {
            Ok(_) => return Ok(created()),
            Err(rkube_store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.resource, name)),
        }
    }
    Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() })
}

/// Why a pod cannot be bound.
enum Unbindable {
    Deleting,
    Bound(String),
    /// The pod of that name is another than the binding's (its uid).
    OtherPod(String),
}

/// JSON objects with their members' values left unparsed. Keys come out sorted, as
/// `serde_json::Value`'s do, so a pod written this way reads the same as one written whole.
type RawObject = BTreeMap<String, Box<RawValue>>;

/// The stored pod bound to `node`: `spec.nodeName` set, the binding's annotations added, and
/// PodScheduled=True. Only `metadata`, `spec` and `status` are opened, one level deep (the
/// containers, the bulk of a pod, are copied as they are): binding is the scheduler's hot path.
fn bound_pod(
    stored: &[u8],
    node: &str,
    annotations: Option<&BTreeMap<String, String>>,
    uid: Option<&str>,
) -> Result<Result<Vec<u8>, Unbindable>, ApiError> {
    let mut pod: RawObject = serde_json::from_slice(stored).map_err(internal)?;
    let string = |object: &RawObject, field: &str| -> Option<String> {
        object.get(field).and_then(|v| serde_json::from_str::<Option<String>>(v.get()).ok().flatten())
    };
    let mut metadata: RawObject = open(&pod, "metadata")?;
    // A pod from the watch cache carries its resourceVersion, which is never stored.
    let versioned = metadata.remove("resourceVersion").is_some();
    if let Some(want) = uid
        && let found = string(&metadata, "uid").unwrap_or_default()
        && found != want
    {
        return Ok(Err(Unbindable::OtherPod(found)));
    }
    if string(&metadata, "deletionTimestamp").is_some() {
        return Ok(Err(Unbindable::Deleting));
    }
    let mut spec: RawObject = open(&pod, "spec")?;
    if let Some(found) = string(&spec, "nodeName").filter(|n| !n.is_empty()) {
        return Ok(Err(Unbindable::Bound(found)));
    }
    spec.insert("nodeName".into(), raw(node)?);
    if let Some(annotations) = annotations {
        // Absent, it is null, which the first key makes an object.
        let mut merged: Value = open(&metadata, "annotations")?;
        for (key, value) in annotations {
            merged[key] = Value::from(value.as_str());
        }
        metadata.insert("annotations".into(), raw(&merged)?);
    }
    if annotations.is_some() || versioned {
        pod.insert("metadata".into(), raw(&metadata)?);
    }
    let mut status: Value = open(&pod, "status")?;
    set_condition(&mut status, json!({"type": "PodScheduled", "status": "True"}));
    pod.insert("spec".into(), raw(&spec)?);
    pod.insert("status".into(), raw(&status)?);
    serde_json::to_vec(&pod).map(Ok).map_err(internal)
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A member of a raw object, parsed; its type's default if absent.
fn open<T: serde::de::DeserializeOwned + Default>(object: &RawObject, field: &str) -> Result<T, ApiError> {
    match object.get(field) {
        Some(value) => serde_json::from_str(value.get()).map_err(internal),
        None => Ok(T::default()),
    }
}

fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, ApiError> {
    serde_json::value::to_raw_value(value).map_err(internal)
}

/// Sets a condition by type, stamping the transition time when its status changes.
pub(super) fn set_condition(status: &mut Value, mut condition: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conditions = status["conditions"].as_array_mut().expect("made an array above");
    let now = json!(now_rfc3339());
    match conditions.iter_mut().find(|c| c["type"] == condition["type"]) {
        Some(existing) if existing["status"] == condition["status"] => {}
        Some(existing) => {
            condition["lastTransitionTime"] = now;
            condition["lastProbeTime"] = Value::Null;
            *existing = condition;
        }
        None => {
            condition["lastTransitionTime"] = now;
            condition["lastProbeTime"] = Value::Null;
            conditions.push(condition);
        }
    }
}

/// POST `pods/NAME/eviction`: a delete that a PodDisruptionBudget can refuse.
pub(super) async fn evict_pod(
    state: &State,
    namespace: &str,
    name: &str,
    eviction: Value,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let kind = kinds::core("pods");
    let pod = get_object(&state.store, kind, Some(namespace), name).await?;
    // As upstream's canIgnorePDB: a pod that is not running, or already going, may always go.
    let exempt = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed" | "Pending") | None)
        || pod["metadata"]["deletionTimestamp"].is_string();
    if !exempt && !dry_run {
        take_disruption(state, namespace, &pod).await?;
    }
    let mut options = DeleteOptions::default();
    options.merge(&eviction["deleteOptions"])?;
    if dry_run {
        options.merge(&json!({"dryRun": ["All"]}))?;
    }
    delete_object(state, kind, Some(namespace), name, options).await?;
    Ok(created())
}

/// Spends one of the disruptions the pod's PodDisruptionBudget allows, or refuses with 429 as
/// upstream does. The budget's status is written with compare-and-swap, so parallel evictions
/// (a drain) cannot both spend the last one.
async fn take_disruption(state: &State, namespace: &str, pod: &Value) -> Result<(), ApiError> {
    let budgets = kinds::KINDS.iter().find(|k| k.plural == "poddisruptionbudgets").expect("served");
    let labels = validate::string_map(&pod["metadata"]["labels"]);
    for _ in 0..PATCH_ATTEMPTS {
        let page = state
            .store
            .list(&ListOptions { prefix: collection_prefix(budgets, Some(namespace)), ..Default::default() })
            .await
            .map_err(|e| ApiError::from_store(e, budgets.resource, ""))?;
        let mut matching = Vec::new();
        for kv in page.items {
            let pdb = with_revision(&kv)?;
            // In policy/v1 an empty selector selects every pod of the namespace.
            let selects =
                crate::selector::LabelSelector::from_object(&pdb["spec"]["selector"]).is_ok_and(|s| s.matches(&labels));
            if selects && pdb["spec"]["selector"].is_object() {
                matching.push((kv, pdb));
            }
        }
        let (kv, mut pdb) = match matching.len() {
            0 => return Ok(()),
            1 => matching.pop().expect("one budget"),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
            }
        };
        let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
        if observed < pdb["metadata"]["generation"].as_i64().unwrap_or(1) || allowed <= 0 {
            return Err(ApiError::TooManyRequests(format!(
                "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {} needs {} \
                 healthy pods and has {} currently",
                pdb["metadata"]["name"].as_str().unwrap_or_default(),
                pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                pdb["status"]["currentHealthy"].as_i64().unwrap_or(0),
            )));
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        pdb["status"]["disruptedPods"][name] = json!(now_rfc3339());
        match state.store.update(&kv.key, encode(&pdb)?, kv.mod_revision).await {
            Ok(_) => return Ok(()),
            Err(rkube_store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, budgets.resource, "")),
        }
    }
    Err(ApiError::TooManyRequests("the disruption budget is being updated; try again".into()))
}

/// PUT `namespaces/NAME/finalize`: the namespace controller sets `spec.finalizers`; a
/// terminating namespace with none left is deleted.
pub(super) async fn finalize_namespace(
    state: &State,
    name: &str,
    object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let kind = kinds::core("namespaces");
    let key = object_key(kind, None, name);
    let current = current(&state.store, kind, &key, name).await?;
    let mut namespace = with_revision(&current)?;
    namespace["spec"]["finalizers"] = match &object["spec"]["finalizers"] {
        Value::Null => json!([]),
        finalizers => finalizers.clone(),
    };
    store_update(state, kind, None, name, namespace, &current, current.mod_revision, Scope::Finalize, dry_run).await
}

/// The components `kubectl get componentstatuses` reports on.
const COMPONENTS: [&str; 3] = ["scheduler", "controller-manager", "etcd-0"];

pub(super) async fn component_status(state: &State, name: &str) -> Result<Value, ApiError> {
    if !COMPONENTS.contains(&name) {
        return Err(ApiError::NotFound { resource: "componentstatuses", name: name.to_owned() });
    }
    let (healthy, message, error) = match name {
        // The store answers for itself.
        "etcd-0" => match state.store.current_revision().await {
            Ok(_) => (true, "ok".to_owned(), String::new()),
            Err(e) => (false, String::new(), e.to_string()),
        },
        // The scheduler and controller manager prove they live by renewing their leader
        // election Leases, as upstream's do; a lease not renewed in its duration means dead.
        _ => match lease_fresh(state, &format!("kube-{name}")).await {
            Ok(()) => (true, "ok".to_owned(), String::new()),
            Err(why) => (false, String::new(), why),
        },
    };
    let mut condition =
        json!({"type": "Healthy", "status": if healthy { "True" } else { "False" }, "message": message});
    if !error.is_empty() {
        condition["error"] = json!(error);
    }
    Ok(json!({
        "kind": "ComponentStatus", "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    }))
}

/// Ok when the lease `kube-system/NAME` was renewed within its duration.
async fn lease_fresh(state: &State, name: &str) -> Result<(), String> {
    let kind = kinds::find("coordination.k8s.io", "v1", "leases").map_err(|_| "no lease kind".to_owned())?;
    let key = object_key(kind, Some("kube-system"), name);
    let lease = match state.store.get(&key, None).await {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value).map_err(|e| e.to_string())?,
        Ok(None) => return Err(format!("no leader holds the {name} lease: it is not running")),
        Err(e) => return Err(e.to_string()),
    };
    let renewed = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
    let duration = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(0);
    match renewed {
        Some(at) if at + time::Duration::seconds(duration) >= time::OffsetDateTime::now_utc() => Ok(()),
        Some(at) => Err(format!("the {name} lease was last renewed at {at}, longer ago than its {duration}s")),
        None => Err(format!("the {name} lease has no renew time")),
    }
}

pub(super) async fn component_statuses(state: &State, kind: &Kind, params: &ListParams, headers: &HeaderMap) -> Value {
    let mut items = Vec::new();
    for name in COMPONENTS {
        items.push(component_status(state, name).await.expect("a listed component"));
    }
    if table::requested(headers) {
        let include = Include::parse(params.include_object.as_deref());
        return table::table(kind.columns, &items, include, json!({}), time::OffsetDateTime::now_utc());
    }
    json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pod: &Value) -> Vec<u8> {
        serde_json::to_vec(pod).unwrap()
    }

    fn without_times(mut pod: Value) -> Value {
        for c in pod["status"]["conditions"].as_array_mut().into_iter().flatten() {
            c.as_object_mut().unwrap().remove("lastTransitionTime");
        }
        pod
    }

    #[test]
    fn binding_edits_only_what_it_must_and_writes_what_a_whole_edit_would() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}, "annotations": {"keep": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}],
                     "schedulerName": "default-scheduler", "tolerations": [{"key": "k", "operator": "Exists"}]},
            "status": {"phase": "Pending", "qosClass": "Burstable",
                       "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
        });
        let annotations = BTreeMap::from([("added".to_owned(), "2".to_owned())]);
        let bound = bound_pod(&stored(&pod), "node-1", Some(&annotations), None).unwrap().ok().unwrap();

        let mut whole = pod.clone();
        whole["spec"]["nodeName"] = json!("node-1");
        whole["metadata"]["annotations"]["added"] = json!("2");
        set_condition(&mut whole["status"], json!({"type": "PodScheduled", "status": "True"}));
        let bound: Value = serde_json::from_slice(&bound).unwrap();
        assert_eq!(without_times(bound.clone()), without_times(whole));
        let condition = &bound["status"]["conditions"][0];
        assert_eq!(condition["status"], "True");
        assert!(condition["lastTransitionTime"].is_string());

        // Nothing else is rewritten: without annotations, metadata keeps its bytes.
        let plain = bound_pod(&stored(&pod), "node-1", None, None).unwrap().ok().unwrap();
        let text = String::from_utf8(plain).unwrap();
        assert!(text.contains(r#""metadata":{"annotations":{"keep":"1"},"labels":{"app":"a"},"name":"p""#), "{text}");
        // A pod with no status at all gets one.
        let bare = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let bound: Value =
            serde_json::from_slice(&bound_pod(&stored(&bare), "n", None, None).unwrap().ok().unwrap()).unwrap();
        assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(bound["spec"]["nodeName"], "n");
    }

    #[test]
    fn a_cached_copy_binds_to_what_the_stored_pod_would() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        let cached = objects::revision_spliced(&stored(&pod), 42).unwrap();
        assert!(String::from_utf8_lossy(&cached).contains(r#""resourceVersion":"42""#));
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        let from_store = text(bound_pod(&stored(&pod), "n", None, None).unwrap().ok().unwrap());
        let from_cache = text(bound_pod(&cached, "n", None, None).unwrap().ok().unwrap());
        // Byte for byte but for the condition's time, and no resourceVersion is stored.
        let times = |s: &str| s.split("lastTransitionTime").next().unwrap().to_owned();
        assert_eq!(times(&from_cache), times(&from_store));
        assert!(!from_cache.contains("resourceVersion"), "{from_cache}");
        assert_eq!(
            without_times(serde_json::from_str(&from_cache).unwrap()),
            without_times(serde_json::from_str(&from_store).unwrap())
        );
    }

    #[test]
    fn bound_and_deleting_pods_cannot_be_bound() {
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-0"}});
        assert!(
            matches!(bound_pod(&stored(&bound), "n", None, None).unwrap(), Err(Unbindable::Bound(n)) if n == "node-0")
        );
        let empty = json!({"metadata": {"name": "p"}, "spec": {"nodeName": ""}});
        assert!(bound_pod(&stored(&empty), "n", None, None).unwrap().is_ok());
        let deleting = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}});
        assert!(matches!(bound_pod(&stored(&deleting), "n", None, None).unwrap(), Err(Unbindable::Deleting)));
        assert!(bound_pod(b"not json", "n", None, None).is_err());
        // A binding made for another pod of the same name (its uid) is refused.
        let pod = json!({"metadata": {"name": "p", "uid": "new"}, "spec": {}});
        assert!(bound_pod(&stored(&pod), "n", None, Some("new")).unwrap().is_ok());
        assert!(
            matches!(bound_pod(&stored(&pod), "n", None, Some("old")).unwrap(), Err(Unbindable::OtherPod(u)) if u == "new")
        );
    }
}
