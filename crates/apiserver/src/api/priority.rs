//! Priority admission, as upstream's `Priority` plugin: a pod's `priorityClassName` (or the
//! class marked `globalDefault`) becomes its `spec.priority` and `spec.preemptionPolicy`, which
//! the scheduler orders and preempts by. A client may not choose the number itself.

use super::*;

/// The classes every cluster has, created at start-up as upstream's API server does.
pub(super) const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// Fills in a new pod's priority from its class; 403 for a class that does not exist or a
/// priority the pod sets itself that differs from its class's.
pub(super) async fn admit(state: &State, name: &str, pod: &mut Value) -> Result<(), ApiError> {
    let forbidden = |message: String| ApiError::Forbidden { resource: "pods", name: name.to_owned(), message };
    let class = match pod["spec"]["priorityClassName"].as_str().filter(|c| !c.is_empty()) {
        Some(class_name) => {
            let key = format!("/registry/priorityclasses/{class_name}");
            let found =
                state.store.get(&key, None).await.map_err(|e| ApiError::from_store(e, "priorityclasses", ""))?;
            match found {
                Some(kv) => Some(with_revision(&kv)?),
                None => return Err(forbidden(format!("no PriorityClass with name {class_name} was found"))),
            }
        }
        None => global_default(state).await?,
    };
    let (priority, policy) = match &class {
        Some(class) => (
            class["value"].as_i64().unwrap_or(0),
            class["preemptionPolicy"].as_str().unwrap_or("PreemptLowerPriority").to_owned(),
        ),
        None => (0, "PreemptLowerPriority".to_owned()),
    };
    if let Some(given) = pod["spec"]["priority"].as_i64()
        && given != priority
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission \
             controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(given) = pod["spec"]["preemptionPolicy"].as_str()
        && given != policy
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission \
             controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(class) = &class {
        pod["spec"]["priorityClassName"] = class["metadata"]["name"].clone();
    }
    pod["spec"]["priority"] = json!(priority);
    pod["spec"]["preemptionPolicy"] = json!(policy);
    Ok(())
}

/// The class marked `globalDefault`, if any: the lowest-valued, should there be several, as
/// upstream picks.
async fn global_default(state: &State) -> Result<Option<Value>, ApiError> {
    let options = ListOptions { prefix: "/registry/priorityclasses/".into(), ..Default::default() };
    let page = state.store.list(&options).await.map_err(|e| ApiError::from_store(e, "priorityclasses", ""))?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| with_revision(kv).ok())
        .filter(|c| c["globalDefault"].as_bool() == Some(true))
        .min_by_key(|c| c["value"].as_i64().unwrap_or(0)))
}
