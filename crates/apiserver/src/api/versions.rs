//! Kinds served in more than one version, stored once. A served version that is not the
//! stored one converts on the way in and out (autoscaling/v1 HorizontalPodAutoscaler over
//! autoscaling/v2; events.k8s.io/v1 Event over core/v1), as upstream's storage versions do.
//! Everything else (defaults, validation, allocation, deletion) runs on the stored kind.

use super::*;

/// How a served version maps to its stored kind.
pub(super) struct Conversion {
    /// The stored kind: (group, version, plural).
    pub(super) stored: (&'static str, &'static str, &'static str),
    /// Served form to stored form.
    pub(super) up: fn(Value) -> Value,
    /// Stored form to served form.
    pub(super) down: fn(Value) -> Value,
}

impl Conversion {
    pub(super) fn stored_kind(&self) -> &'static Kind {
        let (group, version, plural) = self.stored;
        kinds::find(group, version, plural).expect("a conversion names a served kind")
    }
}

/// Serves a request on a converted kind.
pub(super) async fn serve_converted(
    state: &State,
    kind: &'static Kind,
    conversion: &'static Conversion,
    namespace: Option<&str>,
    name: Option<&str>,
    subresource: Option<Subresource>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::http::Method;
    let stored = conversion.stored_kind();
    let method = request.method().clone();
    let headers = request.headers().clone();
    let uri = request.uri().clone();
    let down = |object: Value| served_as(kind, (conversion.down)(object));
    let json = |value: Value| axum::Json(value).into_response();
    match (&method, name, subresource) {
        (&Method::GET, None, None) => {
            let params: ListParams = query(&uri)?;
            if matches!(params.watch.as_deref(), Some("true" | "1")) {
                let selector = Filter::parse(stored, &params)?;
                let prefix = collection_prefix(stored, namespace);
                let convert = Some(conversion.down as fn(Value) -> Value);
                return watch_collection(
                    state,
                    kind,
                    stored,
                    prefix,
                    selector,
                    params,
                    table::shape(&headers),
                    convert,
                )
                .await;
            }
            let (items, revision) = list_all(state, stored, namespace, &params).await?;
            let items: Vec<Value> = items.into_iter().map(down).collect();
            let metadata = json!({"resourceVersion": revision.to_string()});
            if table::shape(&headers) == Shape::Metadata {
                let items: Vec<Value> = items.iter().map(partial).collect();
                return Ok(json(json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                      "metadata": metadata, "items": items})));
            }
            if table::requested(&headers) {
                let include = Include::parse(params.include_object.as_deref());
                return Ok(json(table::table(
                    kind.columns,
                    &items,
                    include,
                    metadata,
                    time::OffsetDateTime::now_utc(),
                )));
            }
            Ok(json(
                json!({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": metadata, "items": items}),
            ))
        }
        (&Method::GET, Some(name), None | Some(Subresource::Status)) => {
            let object = down(get_object(&state.store, stored, namespace, name).await?);
            Ok(json(as_table_if(kind, object, &query(&uri)?, &headers)))
        }
        (&Method::POST, None, None) => {
            let params: WriteParams = query(&uri)?;
            let fields = params.field_validation()?;
            let object = (conversion.up)(decode(kind, body_of(request).await?, &fields)?);
            let created = create_object(state, stored, namespace, served_as(stored, object), params.dry_run()?).await?;
            Ok(warned((StatusCode::CREATED, axum::Json(down(created))).into_response(), &fields))
        }
        (&Method::PUT, Some(name), None | Some(Subresource::Status)) => {
            let params: WriteParams = query(&uri)?;
            let (dry_run, fields) = (params.dry_run()?, params.field_validation()?);
            let object = served_as(stored, (conversion.up)(decode(kind, body_of(request).await?, &fields)?));
            let scope = if subresource.is_some() { Scope::Status } else { Scope::Object };
            let updated = update_object(state, stored, namespace, name, object, scope, dry_run).await?;
            Ok(warned(json(down(updated)), &fields))
        }
        (&Method::PATCH, Some(name), None | Some(Subresource::Status)) => {
            let params: WriteParams = query(&uri)?;
            let (dry_run, fields) = (params.dry_run()?, params.field_validation()?);
            let patch = PatchBody::read(request).await?;
            let scope = if subresource.is_some() { Scope::Status } else { Scope::Object };
            let key = object_key(stored, namespace, name);
            for _ in 0..PATCH_ATTEMPTS {
                let current = current(&state.store, stored, &key, name).await?;
                let mut object = down(with_revision(&current)?);
                apply_patch(kind, name, &mut object, &patch)?;
                let patched = served_as(stored, (conversion.up)(decode(kind, object, &fields)?));
                match store_update(
                    state,
                    stored,
                    namespace,
                    name,
                    patched,
                    &current,
                    current.mod_revision,
                    scope,
                    dry_run,
                )
                .await
                {
                    Err(ApiError::Conflict { .. }) => continue,
                    other => return Ok(warned(json(down(other?)), &fields)),
                }
            }
            Err(ApiError::Conflict { resource: kind.resource, name: name.to_owned() })
        }
        (&Method::DELETE, Some(name), None) => {
            let options = DeleteOptions::parse(body_of(request).await?, &query(&uri)?)?;
            delete_object(state, stored, namespace, name, options).await
        }
        (&Method::DELETE, None, None) => {
            let params: ListParams = query(&uri)?;
            let options = DeleteOptions::parse(body_of(request).await?, &query(&uri)?)?;
            let deleted = delete_collection(state, stored, namespace, params, options).await?;
            let items: Vec<Value> =
                deleted["items"].as_array().cloned().unwrap_or_default().into_iter().map(down).collect();
            Ok(json(json!({"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": {}, "items": items})))
        }
        _ => Err(not_allowed(&method)),
    }
}

/// Stamps an object with a kind's apiVersion and kind.
fn served_as(kind: &Kind, mut object: Value) -> Value {
    if object.is_object() {
        object["apiVersion"] = json!(kind.api_version);
        object["kind"] = json!(kind.kind);
    }
    object
}

/// Annotations upstream keeps autoscaling/v2 fields in, on the v1 view of an HPA.
const HPA_ANNOTATIONS: [(&str, &str); 3] = [
    ("autoscaling.alpha.kubernetes.io/metrics", "metrics"),
    ("autoscaling.alpha.kubernetes.io/behavior", "behavior"),
    ("autoscaling.alpha.kubernetes.io/conditions", "conditions"),
];

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"]["target"]["type"] == "Utilization"
}

/// autoscaling/v2 → v1: the CPU target becomes `targetCPUUtilizationPercentage`; the rest of
/// the v2 spec rides in annotations, so a v1 client's update loses nothing.
pub(super) fn hpa_down(mut hpa: Value) -> Value {
    let spec = std::mem::take(&mut hpa["spec"]);
    let metrics: Vec<Value> = spec["metrics"].as_array().cloned().unwrap_or_default();
    let (cpu, others): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    let mut v1 = json!({
        "scaleTargetRef": spec["scaleTargetRef"],
        "maxReplicas": spec["maxReplicas"],
    });
    if !spec["minReplicas"].is_null() {
        v1["minReplicas"] = spec["minReplicas"].clone();
    }
    if let Some(cpu) = cpu.first() {
        v1["targetCPUUtilizationPercentage"] = cpu["resource"]["target"]["averageUtilization"].clone();
    }
    let status = std::mem::take(&mut hpa["status"]);
    let mut v1_status = json!({});
    for field in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
        if !status[field].is_null() {
            v1_status[field] = status[field].clone();
        }
    }
    let current_cpu = status["currentMetrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
    if let Some(utilization) = current_cpu.and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64()) {
        v1_status["currentCPUUtilizationPercentage"] = json!(utilization);
    }
    let mut kept = [
        (others.is_empty(), json!(others)),
        (spec["behavior"].is_null(), spec["behavior"].clone()),
        (status["conditions"].is_null(), status["conditions"].clone()),
    ];
    for ((annotation, _), (empty, value)) in HPA_ANNOTATIONS.iter().zip(kept.iter_mut()) {
        if !*empty {
            hpa["metadata"]["annotations"][*annotation] = json!(value.to_string());
        }
    }
    hpa["spec"] = v1;
    hpa["status"] = v1_status;
    hpa
}

/// autoscaling/v1 → v2: the inverse of [`hpa_down`].
pub(super) fn hpa_up(mut hpa: Value) -> Value {
    let spec = std::mem::take(&mut hpa["spec"]);
    let mut v2 = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if !spec["minReplicas"].is_null() {
        v2["minReplicas"] = spec["minReplicas"].clone();
    }
    let mut saved = |annotation: &str| -> Option<Value> {
        // `get_mut`, not indexing, which would insert a null `annotations`.
        let annotations = hpa.get_mut("metadata")?.get_mut("annotations")?.as_object_mut()?;
        let text = annotations.remove(annotation)?;
        serde_json::from_str(text.as_str()?).ok()
    };
    let mut metrics: Vec<Value> = saved(HPA_ANNOTATIONS[0].0).and_then(|m| m.as_array().cloned()).unwrap_or_default();
    let behavior = saved(HPA_ANNOTATIONS[1].0);
    let conditions = saved(HPA_ANNOTATIONS[2].0);
    if let Some(cpu) = spec["targetCPUUtilizationPercentage"].as_i64() {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}),
        );
    }
    if !metrics.is_empty() {
        v2["metrics"] = json!(metrics);
    }
    if let Some(behavior) = behavior {
        v2["behavior"] = behavior;
    }
    let status = std::mem::take(&mut hpa["status"]);
    let mut v2_status = json!({});
    for field in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
        if !status[field].is_null() {
            v2_status[field] = status[field].clone();
        }
    }
    if let Some(cpu) = status["currentCPUUtilizationPercentage"].as_i64() {
        v2_status["currentMetrics"] =
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]);
    }
    if let Some(conditions) = conditions {
        v2_status["conditions"] = conditions;
    }
    if hpa["metadata"].get("annotations").and_then(Value::as_object).is_some_and(|a| a.is_empty()) {
        hpa["metadata"].as_object_mut().map(|m| m.remove("annotations"));
    }
    hpa["spec"] = v2;
    hpa["status"] = v2_status;
    hpa
}

/// Field renames between core/v1 Event (stored) and events.k8s.io/v1 Event (served).
const EVENT_FIELDS: [(&str, &str); 8] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingInstance", "reportingInstance"),
];

fn rename(mut object: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) -> Value {
    if let Some(map) = object.as_object_mut() {
        for (from, to) in pairs {
            if let Some(value) = map.remove(from) {
                map.insert(to.to_owned(), value);
            }
        }
    }
    object
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub(super) fn event_down(event: Value) -> Value {
    rename(event, EVENT_FIELDS.into_iter())
}

/// events.k8s.io/v1 Event → core/v1 Event.
pub(super) fn event_up(event: Value) -> Value {
    rename(event, EVENT_FIELDS.into_iter().map(|(a, b)| (b, a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_versions_round_trip_without_loss() {
        let v2 = json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "minReplicas": 2, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
            ],
        }, "status": {"currentReplicas": 2, "desiredReplicas": 2,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}});
        let v1 = hpa_down(v2.clone());
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
        assert!(v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"].is_string());
        let back = hpa_up(v1);
        assert_eq!(back["spec"], v2["spec"]);
        assert!(back["metadata"].get("annotations").is_none());
    }

    #[test]
    fn event_fields_are_renamed_both_ways() {
        let core = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "count": 3, "reason": "R"});
        let served = event_down(core.clone());
        assert_eq!(served["regarding"]["name"], "p");
        assert_eq!(served["note"], "m");
        assert_eq!(served["deprecatedCount"], 3);
        assert_eq!(event_up(served), core);
    }
}
