//! Subresources: status, scale, pods' binding and eviction, a namespace's finalize, and the
//! read-only component statuses.

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

fn success(code: StatusCode) -> Response {
    (
        code,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()}),
        ),
    )
        .into_response()
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
    let binding = kinds::typed::<k8s_openapi::api::core::v1::Binding>(binding)
        .map_err(|e| ApiError::BadRequest(format!("the object is not a valid Binding: {e}")))?;
    let target = binding["target"]["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::Invalid {
        kind: "Binding",
        name: name.to_owned(),
        causes: vec![("target.name".into(), "Required value".into())],
    })?;
    if binding["target"]["kind"].as_str().is_some_and(|k| !k.is_empty() && k != "Node") {
        return Err(ApiError::Invalid {
            kind: "Binding",
            name: name.to_owned(),
            causes: vec![("target.kind".into(), "Unsupported value: must be empty or \"Node\"".into())],
        });
    }
    let conflict =
        |message: String| ApiError::Conflicting { resource: "pods/binding".into(), name: name.to_owned(), message };
    let key = object_key(kind, Some(namespace), name);
    for _ in 0..PATCH_ATTEMPTS {
        let current = current(&state.store, kind, &key, name).await?;
        // As stored: no resourceVersion to add, and none to strip before writing it back.
        let mut pod: Value = serde_json::from_slice(&current.value).map_err(|e| ApiError::Internal(e.to_string()))?;
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
        }
        if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(conflict(format!("pod {name} is already assigned to node {node:?}")));
        }
        pod["spec"]["nodeName"] = json!(target);
        for (key, value) in binding["metadata"]["annotations"].as_object().into_iter().flatten() {
            pod["metadata"]["annotations"][key] = value.clone();
        }
        set_condition(&mut pod["status"], json!({"type": "PodScheduled", "status": "True"}));
        if dry_run {
            return Ok(success(StatusCode::CREATED));
        }
        let value = serde_json::to_vec(&pod).map_err(|e| ApiError::Internal(e.to_string()))?;
        match state.store.update(&key, value.into(), current.mod_revision).await {
            Ok(_) => return Ok(success(StatusCode::CREATED)),
            Err(rkube_store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.resource, name)),
        }
    }
    Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() })
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
    Ok(success(StatusCode::CREATED))
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
