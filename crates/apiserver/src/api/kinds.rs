//! The served kinds: how each is validated, defaulted, named, checked on update and printed.

use super::*;

/// One served resource type.
pub(super) struct Kind {
    pub(super) plural: &'static str,
    pub(super) singular: &'static str,
    pub(super) kind: &'static str,
    pub(super) list_kind: &'static str,
    pub(super) namespaced: bool,
    pub(super) short_names: &'static [&'static str],
    pub(super) verbs: &'static [&'static str],
    /// Decodes a request body as this kind (rejecting wrong field types) and re-encodes it.
    pub(super) normalize: fn(Value) -> Result<Value, serde_json::Error>,
    /// Upstream's name rule for this kind.
    pub(super) name_rule: NameRule,
    /// Fields upstream defaults on create.
    pub(super) defaults: fn(&mut Value),
    /// Rewrites every incoming object (create, update, patch) as upstream stores it.
    pub(super) prepare: fn(&mut Value),
    /// Upstream's update validation: (field, message) for each change it forbids.
    pub(super) check_update: fn(old: &Value, new: &Value) -> Vec<(String, String)>,
    /// `kubectl get` columns between NAME and AGE, as upstream's printers.
    pub(super) columns: &'static [Column],
}

#[derive(Clone, Copy)]
pub(super) enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
}

pub(super) fn typed<K: serde::Serialize + serde::de::DeserializeOwned>(v: Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<K>(v)?)
}

pub(super) const KINDS: &[Kind] = &[
    Kind {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        list_kind: "NamespaceList",
        namespaced: false,
        short_names: &["ns"],
        verbs: &["create", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::Namespace>,
        name_rule: NameRule::Dns1123Label,
        defaults: |object| {
            object["spec"]["finalizers"] = json!(["kubernetes"]);
            object["status"]["phase"] = json!("Active");
        },
        prepare: |_| {},
        check_update: |_, _| Vec::new(),
        columns: &[Column {
            name: "Status",
            kind: "string",
            description: "The status of the namespace",
            cell: |o| o["status"]["phase"].clone(),
        }],
    },
    Kind {
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        list_kind: "ConfigMapList",
        namespaced: true,
        short_names: &["cm"],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::ConfigMap>,
        name_rule: NameRule::Dns1123Subdomain,
        defaults: |_| {},
        prepare: |_| {},
        check_update: frozen_data,
        columns: &[Column {
            name: "Data",
            kind: "integer",
            description: "Number of data entries",
            cell: |o| {
                let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
                json!(count("data") + count("binaryData"))
            },
        }],
    },
    Kind {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        list_kind: "SecretList",
        namespaced: true,
        short_names: &[],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::Secret>,
        name_rule: NameRule::Dns1123Subdomain,
        defaults: |object| {
            if object["type"].as_str().is_none_or(str::is_empty) {
                object["type"] = json!("Opaque");
            }
        },
        prepare: fold_string_data,
        check_update: |old, new| {
            let mut causes = frozen_data(old, new);
            if old["type"] != new["type"] {
                causes.push(("type".into(), format!("Invalid value: {}: field is immutable", new["type"])));
            }
            causes
        },
        columns: &[
            Column { name: "Type", kind: "string", description: "The type of the secret", cell: |o| o["type"].clone() },
            Column {
                name: "Data",
                kind: "string",
                description: "Number of data entries",
                cell: |o| json!(o["data"].as_object().map_or(0, |m| m.len()).to_string()),
            },
        ],
    },
    Kind {
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        list_kind: "ServiceAccountList",
        namespaced: true,
        short_names: &["sa"],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::ServiceAccount>,
        name_rule: NameRule::Dns1123Subdomain,
        defaults: |_| {},
        prepare: |_| {},
        check_update: |_, _| Vec::new(),
        columns: &[Column {
            name: "Secrets",
            kind: "integer",
            description: "Number of secrets referenced by the service account",
            cell: |o| json!(o["secrets"].as_array().map_or(0, |s| s.len())),
        }],
    },
];

/// A ConfigMap or Secret marked `immutable: true` keeps its data, and stays immutable.
pub(super) fn frozen_data(old: &Value, new: &Value) -> Vec<(String, String)> {
    if old["immutable"] != json!(true) {
        return Vec::new();
    }
    const FROZEN: &str = "Forbidden: field is immutable when `immutable` is set";
    let mut causes = Vec::new();
    if new["immutable"] != json!(true) {
        causes.push(("immutable".into(), FROZEN.into()));
    }
    for field in ["data", "binaryData"] {
        if old[field] != new[field] {
            causes.push((field.into(), FROZEN.into()));
        }
    }
    causes
}

/// A Secret's write-only `stringData` is stored base64-encoded in `data`, where its keys win.
pub(super) fn fold_string_data(object: &mut Value) {
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        object["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

pub(super) fn kind(plural: &str) -> Result<&'static Kind, ApiError> {
    KINDS
        .iter()
        .find(|k| k.plural == plural)
        .ok_or_else(|| ApiError::NotFoundPath(format!("the server could not find the requested resource ({plural})")))
}

/// The characters upstream draws generated name suffixes from.
pub(super) const NAME_SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(super) fn generated_name(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4();
    let suffix: String =
        uuid.as_bytes()[..5].iter().map(|b| NAME_SUFFIX_CHARS[*b as usize % NAME_SUFFIX_CHARS.len()] as char).collect();
    format!("{prefix}{suffix}")
}

pub(super) fn check_name(rule: NameRule, name: &str) -> Option<String> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = match rule {
        NameRule::Dns1123Label => label(name),
        NameRule::Dns1123Subdomain => name.len() <= 253 && name.split('.').all(label),
    };
    (!ok).then(|| match rule {
        NameRule::Dns1123Label => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
             or '-', and must start and end with an alphanumeric character"
        ),
        NameRule::Dns1123Subdomain => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream_rules() {
        assert!(check_name(NameRule::Dns1123Label, "web-0").is_none());
        assert!(check_name(NameRule::Dns1123Label, "Web").is_some());
        assert!(check_name(NameRule::Dns1123Label, "a.b").is_some());
        assert!(check_name(NameRule::Dns1123Subdomain, "a.b-c").is_none());
        assert!(check_name(NameRule::Dns1123Subdomain, "-a").is_some());
        assert!(check_name(NameRule::Dns1123Label, &"a".repeat(64)).is_some());
    }

    #[test]
    fn generated_names_keep_the_prefix() {
        let name = generated_name("web-");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert!(check_name(NameRule::Dns1123Subdomain, &name).is_none());
    }

    #[test]
    fn immutable_data_stays_put() {
        let frozen = json!({"immutable": true, "data": {"k": "v"}});
        assert!(frozen_data(&frozen, &frozen).is_empty(), "metadata-only changes pass");
        let changed = json!({"immutable": true, "data": {"k": "other"}});
        assert_eq!(frozen_data(&frozen, &changed)[0].0, "data");
        let thawed = json!({"data": {"k": "v"}});
        assert_eq!(frozen_data(&frozen, &thawed)[0].0, "immutable");
        assert!(frozen_data(&thawed, &changed).is_empty(), "a mutable object may change and freeze");
    }
}
