//! Upstream's validation for the kinds with rules beyond their types: each function returns
//! (field path, message) pairs, worded as upstream's `field.ErrorList`, so a 422 reads the same.

use serde_json::{Value, json};

use crate::selector::LabelSelector;

type Causes = Vec<(String, String)>;

fn required(causes: &mut Causes, path: impl Into<String>) {
    causes.push((path.into(), "Required value".into()));
}

/// The Go rendering of a string map in messages, `map[string]string{"app":"web"}`.
fn go_map(map: &Value) -> String {
    let entries: Vec<String> =
        map.as_object().map(|m| m.iter().map(|(k, v)| format!("{k:?}:{}", v)).collect()).unwrap_or_default();
    format!("map[string]string{{{}}}", entries.join(", "))
}

pub(super) fn pod(object: &Value) -> Causes {
    let mut causes = Vec::new();
    pod_spec(&object["spec"], "spec", &mut causes);
    causes
}

fn pod_spec(spec: &Value, path: &str, causes: &mut Causes) {
    let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    if containers.is_empty() {
        required(causes, format!("{path}.containers"));
    }
    let mut names = std::collections::HashSet::new();
    for (field, list) in [("initContainers", &spec["initContainers"]), ("containers", &spec["containers"])] {
        for (i, c) in list.as_array().into_iter().flatten().enumerate() {
            let at = format!("{path}.{field}[{i}]");
            match c["name"].as_str().filter(|n| !n.is_empty()) {
                None => required(causes, format!("{at}.name")),
                Some(name) => {
                    if let Some(message) = super::kinds::check_name(super::kinds::NameRule::Dns1123Label, name) {
                        causes.push((format!("{at}.name"), message));
                    } else if !names.insert(name.to_owned()) {
                        causes.push((format!("{at}.name"), format!("Duplicate value: {name:?}")));
                    }
                }
            }
            if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
                required(causes, format!("{at}.image"));
            }
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let number = port["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    causes.push((
                        format!("{at}.ports[{j}].containerPort"),
                        format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
    }
    let policy = spec["restartPolicy"].as_str().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&policy) {
        causes.push((
            format!("{path}.restartPolicy"),
            format!("Unsupported value: {policy:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
        ));
    }
}

/// A pod's spec is fixed once created, but for images, the active deadline, and tolerations
/// and the grace period (which only the server changes on deletion).
pub(super) fn pod_update(old: &Value, new: &Value) -> Causes {
    let mut causes = Vec::new();
    let strip = |spec: &Value| {
        let mut spec = spec.clone();
        for list in ["initContainers", "containers"] {
            if let Some(containers) = spec[list].as_array_mut() {
                containers.iter_mut().for_each(|c| c["image"] = Value::Null);
            }
        }
        if let Some(map) = spec.as_object_mut() {
            for field in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"] {
                map.remove(field);
            }
        }
        spec
    };
    if strip(&old["spec"]) != strip(&new["spec"]) {
        causes.push((
            "spec".into(),
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, \
             `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to \
             existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously \
             negative)"
                .into(),
        ));
    }
    if old["spec"]["nodeName"].is_string() && old["spec"]["nodeName"] != new["spec"]["nodeName"] {
        causes.push(("spec.nodeName".into(), "Forbidden: field is immutable".into()));
    }
    causes
}

/// A workload's selector must exist and select its own template.
pub(super) fn workload(object: &Value) -> Causes {
    let mut causes = Vec::new();
    let spec = &object["spec"];
    selects_template(&spec["selector"], &spec["template"], &mut causes);
    pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes);
    if let Some(replicas) = spec["replicas"].as_i64().filter(|r| *r < 0) {
        causes.push(("spec.replicas".into(), format!("Invalid value: {replicas}: must be greater than or equal to 0")));
    }
    causes
}

fn selects_template(selector: &Value, template: &Value, causes: &mut Causes) {
    if !selector.is_object() {
        required(causes, "spec.selector");
        return;
    }
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && selector["matchExpressions"].as_array().is_none_or(|e| e.is_empty());
    if empty {
        causes
            .push(("spec.selector".into(), "Invalid value: \"null\": empty selector is invalid for deployment".into()));
        return;
    }
    let labels = &template["metadata"]["labels"];
    let matches = match LabelSelector::from_object(selector) {
        Ok(parsed) => parsed.matches(&string_map(labels)),
        Err(message) => {
            causes.push(("spec.selector".into(), format!("Invalid value: {selector}: {message}")));
            return;
        }
    };
    if !matches {
        causes.push((
            "spec.template.metadata.labels".into(),
            format!("Invalid value: {}: `selector` does not match template `labels`", go_map(labels)),
        ));
    }
}

pub(super) fn string_map(map: &Value) -> std::collections::BTreeMap<String, String> {
    map.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

/// A job's pods may not restart in place forever: Never or OnFailure.
pub(super) fn job(object: &Value) -> Causes {
    let mut causes = Vec::new();
    let spec = &object["spec"];
    if spec["selector"].is_object() {
        selects_template(&spec["selector"], &spec["template"], &mut causes);
    }
    pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes);
    let policy = spec["template"]["spec"]["restartPolicy"].as_str().unwrap_or("Always");
    if policy != "Never" && policy != "OnFailure" {
        causes.push((
            "spec.template.spec.restartPolicy".into(),
            format!("Unsupported value: {policy:?}: supported values: \"OnFailure\", \"Never\""),
        ));
    }
    causes
}

/// Upstream's PriorityClass rules: user classes at most 1e9, and the `system-` prefix
/// reserved for the built-in classes with their values.
pub(super) fn priority_class(object: &Value) -> Causes {
    let mut causes = Vec::new();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let value = object["value"].as_i64().unwrap_or(0);
    let system = super::priority::SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name);
    match system {
        Some((_, expected, _)) if value != *expected => causes.push((
            "metadata.name".to_owned(),
            format!("Forbidden: {name:?} is a system priority class; its value must be {expected}"),
        )),
        Some(_) => {}
        None if name.starts_with("system-") => causes.push((
            "metadata.name".to_owned(),
            "Forbidden: priority class names with 'system-' prefix are reserved".to_owned(),
        )),
        None if value > 1_000_000_000 => causes.push((
            "value".to_owned(),
            "Forbidden: maximum allowed value of a user defined priority is 1000000000".to_owned(),
        )),
        None => {}
    }
    causes
}

pub(super) fn service(object: &Value) -> Causes {
    let mut causes = Vec::new();
    let spec = &object["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && spec["clusterIP"] != json!("None") {
        required(&mut causes, "spec.ports");
    }
    let mut names = std::collections::HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let number = port["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push((
                format!("spec.ports[{i}].port"),
                format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
            ));
        }
        let name = port["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            required(&mut causes, format!("spec.ports[{i}].name"));
        } else if !names.insert(name.to_owned()) {
            causes.push((format!("spec.ports[{i}].name"), format!("Duplicate value: {name:?}")));
        }
    }
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&kind) {
        causes.push((
            "spec.type".into(),
            format!(
                "Unsupported value: {kind:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \
                 \"NodePort\""
            ),
        ));
    }
    if kind == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        required(&mut causes, "spec.externalName");
    }
    causes
}

/// A service keeps its cluster IP: upstream forbids changing it once allocated.
pub(super) fn service_update(old: &Value, new: &Value) -> Causes {
    let mut causes = Vec::new();
    let old_ip = &old["spec"]["clusterIP"];
    if old_ip.is_string()
        && old_ip != ""
        && new["spec"]["clusterIP"] != *old_ip
        && new["spec"]["type"] != "ExternalName"
    {
        causes.push((
            "spec.clusterIPs[0]".into(),
            format!("Invalid value: {}: may not change once set", new["spec"]["clusterIP"]),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_need_containers_with_images() {
        let causes = pod(&json!({"spec": {}}));
        assert_eq!(causes, [("spec.containers".to_owned(), "Required value".to_owned())]);
        let causes = pod(&json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(causes[0].0, "spec.containers[0].image");
    }

    #[test]
    fn a_selector_must_match_its_template() {
        let deployment = |labels: Value| {
            json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}
            }}})
        };
        assert!(workload(&deployment(json!({"app": "web", "tier": "x"}))).is_empty());
        let causes = workload(&deployment(json!({"app": "db"})));
        assert_eq!(causes[0].0, "spec.template.metadata.labels");
        assert!(causes[0].1.contains("map[string]string{\"app\":\"db\"}"), "{}", causes[0].1);
    }

    #[test]
    fn only_images_of_a_pod_change() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let new = json!({"spec": {"containers": [{"name": "c", "image": "b"}]}});
        assert!(pod_update(&old, &new).is_empty());
        let renamed = json!({"spec": {"containers": [{"name": "d", "image": "a"}]}});
        assert_eq!(pod_update(&old, &renamed)[0].0, "spec");
    }
}
