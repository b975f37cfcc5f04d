//! The served kinds: what each is called, how it is validated, defaulted and printed.
//!
//! One table, `KINDS`, drives routing, discovery, storage keys and Status messages, so a kind
//! is served everywhere once it has a row here.

use std::collections::HashMap;

use super::*;
use crate::api::defaults;
use crate::api::printers;
use crate::api::versions;

/// One served resource type.
pub(super) struct Kind {
    /// The API group; empty for the core (legacy) group.
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    /// `v1` or `group/v1`, as objects carry it.
    pub(super) api_version: &'static str,
    pub(super) plural: &'static str,
    /// The plural qualified by group (`deployments.apps`), as Status messages name it.
    pub(super) resource: &'static str,
    pub(super) singular: &'static str,
    pub(super) kind: &'static str,
    /// The kind qualified by group (`Deployment.apps`), as 422 messages name it.
    pub(super) qualified_kind: &'static str,
    pub(super) list_kind: &'static str,
    pub(super) namespaced: bool,
    pub(super) short_names: &'static [&'static str],
    pub(super) categories: &'static [&'static str],
    pub(super) subresources: &'static [Subresource],
    /// Fields a field selector may name besides `metadata.name` and `metadata.namespace`.
    pub(super) field_labels: &'static [&'static str],
    /// Whether `metadata.generation` counts spec changes.
    pub(super) generation: bool,
    /// Served for reading only (computed by the server).
    pub(super) read_only: bool,
    /// Set for a version that is stored as another (autoscaling/v1 HPA as v2).
    pub(super) conversion: Option<&'static versions::Conversion>,
    /// Decodes a request body as this kind (rejecting wrong field types) and re-encodes it.
    pub(super) normalize: fn(Value) -> Result<Value, serde_json::Error>,
    /// The kind's JSON schema (a `$ref` into the generator's definitions), for OpenAPI.
    pub(super) schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Upstream's name rule for this kind.
    pub(super) name_rule: NameRule,
    /// Fields upstream defaults on create and update.
    pub(super) defaults: fn(&mut Value),
    /// Rewrites every incoming object (create, update, patch) as upstream stores it.
    pub(super) prepare: fn(&mut Value),
    /// Upstream's validation of an object: (field, message) for each problem.
    pub(super) validate: fn(&Value) -> Vec<(String, String)>,
    /// Upstream's update validation: (field, message) for each change it forbids.
    pub(super) check_update: fn(old: &Value, new: &Value) -> Vec<(String, String)>,
    /// `kubectl get` columns, `-o wide` ones included, as upstream's printers.
    pub(super) columns: &'static [Column],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Subresource {
    Status,
    /// `autoscaling/v1` Scale over `spec.replicas`.
    Scale,
    /// pods/binding: the scheduler's assignment of a node.
    Binding,
    /// pods/eviction: a delete that respects disruption budgets.
    Eviction,
    /// namespaces/finalize: the namespace controller's removal of spec.finalizers.
    Finalize,
    /// pods/log: container logs, proxied to the node agent.
    Log,
    /// pods/exec, pods/attach and pods/portforward: upgraded connections, relayed to the node
    /// agent.
    Exec,
    Attach,
    PortForward,
    /// nodes/proxy: requests relayed to the node agent (`/stats/summary`, logs).
    Proxy,
}

impl Subresource {
    pub(super) fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Finalize => "finalize",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Proxy => "proxy",
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
    /// RBAC and a few others accept any name that is a valid path segment.
    PathSegment,
}

impl Kind {
    /// The verbs discovery lists for this kind.
    pub(super) fn verbs(&self) -> &'static [&'static str] {
        if self.read_only {
            &["get", "list"]
        } else if self.plural == "namespaces" {
            &["create", "delete", "get", "list", "patch", "update", "watch"]
        } else {
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        }
    }

    pub(super) fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }
}

pub(super) fn typed<K: serde::Serialize + serde::de::DeserializeOwned>(v: Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<K>(v)?)
}

fn nothing(_: &mut Value) {}
fn valid(_: &Value) -> Vec<(String, String)> {
    Vec::new()
}
fn any_change(_: &Value, _: &Value) -> Vec<(String, String)> {
    Vec::new()
}

/// The fields every row shares; each row names its kind and overrides what differs.
const BASE: Kind = Kind {
    group: "",
    version: "v1",
    api_version: "v1",
    plural: "",
    resource: "",
    singular: "",
    kind: "",
    qualified_kind: "",
    list_kind: "",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    field_labels: &[],
    generation: false,
    read_only: false,
    conversion: None,
    normalize: |v| Ok(v),
    schema: |_| schemars::Schema::default(),
    name_rule: NameRule::Dns1123Subdomain,
    defaults: nothing,
    prepare: nothing,
    validate: valid,
    check_update: any_change,
    columns: printers::DEFAULT,
};

/// A row of `KINDS`: `kind!(group, version, plural, singular, Kind, Type, { overrides })`.
macro_rules! kind {
    ("", $version:literal, $plural:literal, $singular:literal, $kind:literal, $ty:ty, { $($field:ident: $value:expr),* $(,)? }) => {
        Kind {
            group: "",
            version: $version,
            api_version: $version,
            plural: $plural,
            resource: $plural,
            singular: $singular,
            kind: $kind,
            qualified_kind: $kind,
            list_kind: concat!($kind, "List"),
            normalize: typed::<$ty>,
            schema: |generator| generator.subschema_for::<$ty>(),
            $($field: $value,)*
            ..BASE
        }
    };
    ($group:literal, $version:literal, $plural:literal, $singular:literal, $kind:literal, $ty:ty, { $($field:ident: $value:expr),* $(,)? }) => {
        Kind {
            group: $group,
            version: $version,
            api_version: concat!($group, "/", $version),
            plural: $plural,
            resource: concat!($plural, ".", $group),
            singular: $singular,
            kind: $kind,
            qualified_kind: concat!($kind, ".", $group),
            list_kind: concat!($kind, "List"),
            normalize: typed::<$ty>,
            schema: |generator| generator.subschema_for::<$ty>(),
            $($field: $value,)*
            ..BASE
        }
    };
}

use Subresource::*;
use k8s_openapi::api as k8s;

/// Every served kind, in discovery order.
pub(super) const KINDS: &[Kind] = &[
    // core/v1
    kind!("", "v1", "namespaces", "namespace", "Namespace", k8s::core::v1::Namespace, {
        field_labels: &["status.phase"],
        namespaced: false, short_names: &["ns"], subresources: &[Status, Finalize],
        name_rule: NameRule::Dns1123Label, defaults: defaults::namespace, columns: printers::NAMESPACE,
    }),
    kind!("", "v1", "configmaps", "configmap", "ConfigMap", k8s::core::v1::ConfigMap, {
        short_names: &["cm"], check_update: frozen_data, columns: printers::CONFIGMAP,
    }),
    kind!("", "v1", "secrets", "secret", "Secret", k8s::core::v1::Secret, {
        field_labels: &["type"],
        defaults: defaults::secret, prepare: fold_string_data, check_update: secret_update, columns: printers::SECRET,
    }),
    kind!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", k8s::core::v1::ServiceAccount, {
        short_names: &["sa"], columns: printers::SERVICEACCOUNT,
    }),
    kind!("", "v1", "pods", "pod", "Pod", k8s::core::v1::Pod, {
        field_labels: &["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"],
        short_names: &["po"], categories: &["all"], subresources: &[Status, Binding, Eviction, Log, Exec, Attach, PortForward], generation: true,
        defaults: defaults::pod, validate: validate::pod, check_update: validate::pod_update,
        columns: printers::POD,
    }),
    kind!("", "v1", "services", "service", "Service", k8s::core::v1::Service, {
        field_labels: &["spec.clusterIP", "spec.type"],
        short_names: &["svc"], categories: &["all"], subresources: &[Status], name_rule: NameRule::Dns1123Label,
        defaults: defaults::service, validate: validate::service, check_update: validate::service_update,
        columns: printers::SERVICE,
    }),
    kind!("", "v1", "endpoints", "endpoints", "Endpoints", k8s::core::v1::Endpoints, {
        short_names: &["ep"], columns: printers::ENDPOINTS,
    }),
    kind!("", "v1", "nodes", "node", "Node", k8s::core::v1::Node, {
        field_labels: &["spec.unschedulable"],
        namespaced: false, short_names: &["no"], subresources: &[Status, Proxy],
        columns: printers::NODE,
    }),
    kind!("", "v1", "events", "event", "Event", k8s::core::v1::Event, {
        field_labels: &["involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"],
        short_names: &["ev"], columns: printers::EVENT,
    }),
    kind!("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", k8s::core::v1::PersistentVolume, {
        namespaced: false, short_names: &["pv"], subresources: &[Status],
        defaults: defaults::persistent_volume, columns: printers::PV,
    }),
    kind!("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", k8s::core::v1::PersistentVolumeClaim, {
        short_names: &["pvc"], subresources: &[Status], defaults: defaults::persistent_volume_claim, columns: printers::PVC,
    }),
    kind!("", "v1", "limitranges", "limitrange", "LimitRange", k8s::core::v1::LimitRange, {
        columns: printers::CREATED,
        short_names: &["limits"],
    }),
    kind!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", k8s::core::v1::ResourceQuota, {
        columns: printers::RESOURCE_QUOTA,
        short_names: &["quota"], subresources: &[Status],
    }),
    kind!("", "v1", "podtemplates", "podtemplate", "PodTemplate", k8s::core::v1::PodTemplate, {
        defaults: defaults::pod_template,
    }),
    kind!("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController", k8s::core::v1::ReplicationController, {
        field_labels: &["status.replicas"],
        short_names: &["rc"], categories: &["all"], subresources: &[Status, Scale], generation: true,
        defaults: defaults::replication_controller, columns: printers::REPLICATION_CONTROLLER,
    }),
    kind!("", "v1", "componentstatuses", "componentstatus", "ComponentStatus", k8s::core::v1::ComponentStatus, {
        namespaced: false, short_names: &["cs"], read_only: true, columns: printers::COMPONENT_STATUS,
    }),
    // apps/v1
    kind!("apps", "v1", "deployments", "deployment", "Deployment", k8s::apps::v1::Deployment, {
        short_names: &["deploy"], categories: &["all"], subresources: &[Status, Scale], generation: true,
        defaults: defaults::deployment, validate: validate::workload,
        columns: printers::DEPLOYMENT,
    }),
    kind!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", k8s::apps::v1::ReplicaSet, {
        field_labels: &["status.replicas"],
        short_names: &["rs"], categories: &["all"], subresources: &[Status, Scale], generation: true,
        defaults: defaults::replica_set, validate: validate::workload,
        columns: printers::REPLICA_SET,
    }),
    kind!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", k8s::apps::v1::StatefulSet, {
        short_names: &["sts"], categories: &["all"], subresources: &[Status, Scale], generation: true,
        defaults: defaults::stateful_set, validate: validate::workload,
        columns: printers::STATEFUL_SET,
    }),
    kind!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", k8s::apps::v1::DaemonSet, {
        short_names: &["ds"], categories: &["all"], subresources: &[Status], generation: true,
        defaults: defaults::daemon_set, validate: validate::workload,
        columns: printers::DAEMON_SET,
    }),
    kind!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", k8s::apps::v1::ControllerRevision, {
        columns: printers::CONTROLLER_REVISION,
    }),
    // batch/v1
    kind!("batch", "v1", "jobs", "job", "Job", k8s::batch::v1::Job, {
        field_labels: &["status.successful"],
        categories: &["all"], subresources: &[Status], generation: true,
        defaults: defaults::job, validate: validate::job, columns: printers::JOB,
    }),
    kind!("batch", "v1", "cronjobs", "cronjob", "CronJob", k8s::batch::v1::CronJob, {
        short_names: &["cj"], categories: &["all"], subresources: &[Status], generation: true,
        defaults: defaults::cron_job, columns: printers::CRON_JOB,
    }),
    // autoscaling/v2
    kind!("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", k8s::autoscaling::v2::HorizontalPodAutoscaler, {
        columns: printers::HPA, defaults: defaults::horizontal_pod_autoscaler,
        short_names: &["hpa"], categories: &["all"], subresources: &[Status], generation: true,
    }),
    kind!("autoscaling", "v1", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", k8s::autoscaling::v1::HorizontalPodAutoscaler, {
        short_names: &["hpa"], categories: &["all"], subresources: &[Status], generation: true,
        columns: printers::HPA, conversion: Some(&versions::Conversion {
            stored: ("autoscaling", "v2", "horizontalpodautoscalers"), up: versions::hpa_up, down: versions::hpa_down,
        }),
    }),
    // coordination.k8s.io/v1
    kind!("coordination.k8s.io", "v1", "leases", "lease", "Lease", k8s::coordination::v1::Lease, {
        columns: printers::LEASE,
    }),
    // discovery.k8s.io/v1
    kind!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", k8s::discovery::v1::EndpointSlice, {
        columns: printers::ENDPOINT_SLICE,
    }),
    // events.k8s.io/v1
    kind!("events.k8s.io", "v1", "events", "event", "Event", k8s::events::v1::Event, {
        short_names: &["ev"], columns: printers::EVENT, conversion: Some(&versions::Conversion {
            stored: ("", "v1", "events"), up: versions::event_up, down: versions::event_down,
        }),
    }),
    // networking.k8s.io/v1
    kind!("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", k8s::networking::v1::Ingress, {
        columns: printers::INGRESS,
        short_names: &["ing"], subresources: &[Status], generation: true,
    }),
    kind!("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", k8s::networking::v1::IngressClass, {
        columns: printers::INGRESS_CLASS,
        namespaced: false,
    }),
    kind!("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", k8s::networking::v1::NetworkPolicy, {
        columns: printers::NETWORK_POLICY,
        short_names: &["netpol"], generation: true,
    }),
    // policy/v1
    kind!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", k8s::policy::v1::PodDisruptionBudget, {
        columns: printers::PDB,
        short_names: &["pdb"], subresources: &[Status], generation: true,
    }),
    // rbac.authorization.k8s.io/v1
    kind!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", k8s::rbac::v1::ClusterRoleBinding, {
        columns: printers::ROLE_BINDING,
        namespaced: false, name_rule: NameRule::PathSegment,
    }),
    kind!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", k8s::rbac::v1::ClusterRole, {
        columns: printers::CREATED,
        namespaced: false, name_rule: NameRule::PathSegment,
    }),
    kind!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", k8s::rbac::v1::RoleBinding, {
        columns: printers::ROLE_BINDING,
        name_rule: NameRule::PathSegment,
    }),
    kind!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", k8s::rbac::v1::Role, {
        columns: printers::CREATED,
        name_rule: NameRule::PathSegment,
    }),
    // scheduling.k8s.io/v1
    kind!("scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", k8s::scheduling::v1::PriorityClass, {
        columns: printers::PRIORITY_CLASS, defaults: defaults::priority_class, validate: validate::priority_class,
        namespaced: false, short_names: &["pc"],
    }),
    // storage.k8s.io/v1
    kind!("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", k8s::storage::v1::StorageClass, {
        columns: printers::STORAGE_CLASS,
        namespaced: false, short_names: &["sc"], defaults: defaults::storage_class,
    }),
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

fn secret_update(old: &Value, new: &Value) -> Vec<(String, String)> {
    let mut causes = frozen_data(old, new);
    if old["type"] != new["type"] {
        causes.push(("type".into(), format!("Invalid value: {}: field is immutable", new["type"])));
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

/// The kind served at `group/version` under `plural`.
pub(super) fn find(group: &str, version: &str, plural: &str) -> Result<&'static Kind, ApiError> {
    with_plural(plural)
        .iter()
        .copied()
        .find(|k| k.group == group && k.version == version)
        .ok_or_else(|| ApiError::NotFoundPath(format!("the server could not find the requested resource ({plural})")))
}

/// A core kind, by plural; for the server's own bookkeeping.
pub(super) fn core(plural: &str) -> &'static Kind {
    with_plural(plural).iter().copied().find(|k| k.group.is_empty()).expect("core kind is in KINDS")
}

/// The kinds named `plural` (one or two): every request looks its kind up, so the table is
/// indexed by plural once rather than scanned.
fn with_plural(plural: &str) -> &'static [&'static Kind] {
    static BY_PLURAL: std::sync::OnceLock<HashMap<&'static str, Vec<&'static Kind>>> = std::sync::OnceLock::new();
    let index = BY_PLURAL.get_or_init(|| {
        let mut index: HashMap<&'static str, Vec<&'static Kind>> = HashMap::new();
        for kind in KINDS {
            index.entry(kind.plural).or_default().push(kind);
        }
        index
    });
    index.get(plural).map(Vec::as_slice).unwrap_or_default()
}

/// The characters upstream draws generated name suffixes from.
pub(super) const NAME_SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(super) fn generated_name(prefix: &str) -> String {
    // Upstream cuts the prefix so the name fits a DNS label (58 + 5 random characters).
    let mut cut = prefix.len().min(58);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = &prefix[..cut];
    let uuid = uuid::Uuid::new_v4();
    let suffix: String =
        uuid.as_bytes()[..5].iter().map(|b| NAME_SUFFIX_CHARS[*b as usize % NAME_SUFFIX_CHARS.len()] as char).collect();
    format!("{prefix}{suffix}")
}

pub(crate) fn check_name(rule: NameRule, name: &str) -> Option<String> {
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
        NameRule::PathSegment => !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']),
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
        NameRule::PathSegment => format!("Invalid value: \"{name}\": may not be '.' or '..' or contain '/' or '%'"),
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
        assert!(check_name(NameRule::PathSegment, "system:controller:x").is_none());
        assert!(check_name(NameRule::PathSegment, "a/b").is_some());
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

    #[test]
    fn the_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for kind in KINDS {
            assert!(seen.insert((kind.group, kind.version, kind.plural)), "{} is listed twice", kind.resource);
            // Storage keys are by plural: two kinds share one only through a conversion.
            let sharing = KINDS.iter().filter(|k| k.plural == kind.plural && k.conversion.is_none()).count();
            assert_eq!(sharing, 1, "{} is stored under a plural another kind uses", kind.resource);
            assert_eq!(kind.list_kind, format!("{}List", kind.kind));
            assert!(kind.plural.chars().all(|c| c.is_ascii_lowercase()), "{}", kind.plural);
            let sample = json!({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": "x"}});
            (kind.normalize)(sample).unwrap_or_else(|e| panic!("{} does not decode its own kind: {e}", kind.kind));
        }
    }
}
