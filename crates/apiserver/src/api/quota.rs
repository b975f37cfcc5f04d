//! ResourceQuota admission, as upstream's: a create that would take its namespace past a
//! quota's hard limits is refused with 403 and the quota's arithmetic. Usage is counted from
//! the store at admission, so it never trails the quota controller's `status.used`. Creates a
//! quota limits are admitted one at a time per namespace, from the count through the store
//! write, so two racing for the last unit cannot both pass. That holds within one API server;
//! servers sharing an etcd do not share the lock (upstream reserves through the quota object).

use std::collections::BTreeMap;

use super::*;

/// What one object adds to each quota resource it is counted under.
fn usage(kind: &Kind, object: &Value) -> BTreeMap<String, i64> {
    let mut used = BTreeMap::new();
    let plural = kind.plural;
    if plural == "pods" && matches!(object["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
        return used;
    }
    let count_key =
        if kind.group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{}", kind.group) };
    used.insert(count_key, 1);
    if matches!(
        plural,
        "pods"
            | "services"
            | "configmaps"
            | "secrets"
            | "persistentvolumeclaims"
            | "replicationcontrollers"
            | "resourcequotas"
    ) && kind.group.is_empty()
    {
        used.insert(plural.to_owned(), 1);
    }
    if plural == "pods" {
        let containers = object["spec"]["containers"].as_array().cloned().unwrap_or_default();
        for (what, resource, key) in [
            ("requests", "cpu", "requests.cpu"),
            ("requests", "memory", "requests.memory"),
            ("limits", "cpu", "limits.cpu"),
            ("limits", "memory", "limits.memory"),
        ] {
            let sum: i64 = containers
                .iter()
                .filter_map(|c| {
                    c["resources"][what][resource]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| c["resources"][what][resource].as_i64().map(|n| n.to_string()))
                })
                .filter_map(|q| {
                    if resource == "cpu" { rkube_core::quantity::milli(&q) } else { rkube_core::quantity::value(&q) }
                })
                .sum();
            if sum > 0 {
                used.insert(key.to_owned(), sum);
                if what == "requests" {
                    used.insert(resource.to_owned(), sum);
                }
            }
        }
    }
    used
}

fn is_cpu(resource: &str) -> bool {
    resource == "cpu" || resource.ends_with(".cpu")
}

fn hard_value(resource: &str, q: &Value) -> Option<i64> {
    let text = q.as_str().map(str::to_owned).or_else(|| q.as_i64().map(|n| n.to_string()))?;
    if is_cpu(resource) { rkube_core::quantity::milli(&text) } else { rkube_core::quantity::value(&text) }
}

/// Upstream's canonical printing: cores or millicores, binary suffixes for exact bytes.
fn show(resource: &str, n: i64) -> String {
    if is_cpu(resource) {
        return if n % 1000 == 0 { (n / 1000).to_string() } else { format!("{n}m") };
    }
    for (suffix, size) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if n != 0 && n % size == 0 && (resource.contains("memory") || resource.contains("storage")) {
            return format!("{}{suffix}", n / size);
        }
    }
    n.to_string()
}

/// Held by a create that a quota limits until its object is written.
pub(super) type Admitted = Option<tokio::sync::OwnedMutexGuard<()>>;

/// Locks for the creates quotas limit, a namespace's chosen by hash from a fixed set, so
/// namespaces coming and going leave nothing behind.
#[derive(Clone)]
pub(super) struct Locks(Arc<[Arc<tokio::sync::Mutex<()>>]>);

impl Default for Locks {
    fn default() -> Locks {
        Locks((0..64).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect())
    }
}

impl Locks {
    async fn take(&self, namespace: &str) -> tokio::sync::OwnedMutexGuard<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        namespace.hash(&mut hasher);
        self.0[hasher.finish() as usize % self.0.len()].clone().lock_owned().await
    }
}

/// Refuses `object` if creating it would exceed a quota in `namespace`. The returned guard,
/// if any, must be held until the object is written (or the write fails).
pub(super) async fn admit(
    state: &State,
    kind: &Kind,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<Admitted, ApiError> {
    let quotas_kind = kinds::core("resourcequotas");
    let options = ListOptions { prefix: collection_prefix(quotas_kind, Some(namespace)), ..Default::default() };
    let quotas = state.store.list(&options).await.map_err(|e| ApiError::from_store(e, "resourcequotas", ""))?;
    if quotas.items.is_empty() {
        return Ok(None);
    }
    let wanted = usage(kind, object);
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut guard = None;
    // What the namespace already uses, counted once, only if some quota limits it.
    let mut current: Option<BTreeMap<String, i64>> = None;
    for kv in &quotas.items {
        let quota = with_revision(kv)?;
        let hard = quota["spec"]["hard"].as_object().cloned().unwrap_or_default();
        let limited: Vec<(&String, i64)> =
            wanted.iter().filter_map(|(r, n)| hard.get(r).and_then(|h| hard_value(r, h)).map(|_| (r, *n))).collect();
        if limited.is_empty() {
            continue;
        }
        if current.is_none() {
            guard = Some(state.quota_locks.take(namespace).await);
            let options = ListOptions { prefix: collection_prefix(kind, Some(namespace)), ..Default::default() };
            let page = state.store.list(&options).await.map_err(|e| ApiError::from_store(e, kind.resource, ""))?;
            let mut sum = BTreeMap::new();
            for kv in &page.items {
                for (r, n) in usage(kind, &with_revision(kv)?) {
                    *sum.entry(r).or_insert(0) += n;
                }
            }
            current = Some(sum);
        }
        let used = current.as_ref().expect("counted above");
        let over: Vec<&String> = limited
            .iter()
            .filter(|(r, n)| {
                used.get(*r).copied().unwrap_or(0) + n > hard.get(*r).and_then(|h| hard_value(r, h)).unwrap_or(i64::MAX)
            })
            .map(|(r, _)| *r)
            .collect();
        if over.is_empty() {
            continue;
        }
        let list = |f: &dyn Fn(&str) -> i64| {
            over.iter().map(|r| format!("{r}={}", show(r, f(r)))).collect::<Vec<_>>().join(",")
        };
        let message = format!(
            "exceeded quota: {}, requested: {}, used: {}, limited: {}",
            quota["metadata"]["name"].as_str().unwrap_or_default(),
            list(&|r| wanted.get(r).copied().unwrap_or(0)),
            list(&|r| used.get(r).copied().unwrap_or(0)),
            list(&|r| hard.get(r).and_then(|h| hard_value(r, h)).unwrap_or(0)),
        );
        return Err(ApiError::Forbidden { resource: kind.resource, name: name.to_owned(), message });
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_count_and_sum_their_containers() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"resources": {"requests": {"cpu": "250m"}}}
        ]}});
        let used = usage(kinds::core("pods"), &pod);
        assert_eq!(used["pods"], 1);
        assert_eq!(used["count/pods"], 1);
        assert_eq!(used["requests.cpu"], 500);
        assert_eq!(used["cpu"], 500);
        assert_eq!(used["requests.memory"], 64 << 20);
        assert_eq!(used["limits.cpu"], 1000);
        assert!(!used.contains_key("limits.memory"));
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert!(usage(kinds::core("pods"), &done).is_empty());
        assert_eq!(show("requests.cpu", 500), "500m");
        assert_eq!(show("requests.cpu", 2000), "2");
        assert_eq!(show("requests.memory", 64 << 20), "64Mi");
        assert_eq!(show("pods", 3), "3");
    }
}
