//! Patch metadata of the built-in kinds, transcribed from the
//! `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api (release-1.33,
//! matching the k8s-openapi `v1_33` feature rkube builds with) and of
//! k8s.io/apimachinery's `ObjectMeta`.
//!
//! The table is a small graph of types, mirroring the Go structs only as far
//! as a tagged field lies below: a lookup walks it along the field path from the
//! kind root. Shared types (`ObjectMeta`, `PodTemplateSpec`, `PodSpec`,
//! `Container`) appear once, so every place a pod template sits (Deployment,
//! CronJob's `spec.jobTemplate.spec.template`...) gets the same rules. Fields
//! with no tag are simply absent; untagged fields answer [`FieldMeta::DEFAULT`].
//!
//! Deliberately absent because upstream has no tag on them (so they are
//! replaced wholesale): `tolerations`, `Node.spec.taints`, `resizePolicy`,
//! `args`/`command`, `Namespace.spec.finalizers`, `envFrom`, `readinessGates`,
//! `CertificateSigningRequest.status.conditions`.

use crate::smp::meta::{FieldMeta, PatchMeta};

/// [`PatchMeta`] for one built-in kind. Cheap to create and copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinMeta {
    root: Ty,
}

impl BuiltinMeta {
    /// The metadata of `kind` (e.g. `"Deployment"`). Kinds without tagged
    /// fields of their own (ConfigMap, Secret, custom resources...) get the
    /// rules every object has under `metadata`.
    pub fn for_kind(kind: &str) -> Self {
        BuiltinMeta { root: root_for(kind).unwrap_or(Ty::Object) }
    }

    /// Whether `kind` has rules beyond `metadata` in the table.
    pub fn is_known_kind(kind: &str) -> bool {
        root_for(kind).is_some()
    }

    /// The kinds with rules beyond `metadata`.
    pub fn kinds() -> &'static [&'static str] {
        KINDS
    }

    /// Looks up a dotted path such as `"spec.template.spec.containers[].env"`
    /// (`[]` marks list elements and is ignored).
    pub fn lookup_dotted(&self, path: &str) -> FieldMeta<'static> {
        let segments: Vec<&str> = path.split('.').map(|s| s.trim_end_matches("[]")).collect();
        self.walk(&segments)
    }

    /// Every field of this kind that has a strategy, as
    /// (`"spec.template.spec.containers[].env"`, metadata) pairs.
    pub fn rules(&self) -> Vec<(String, FieldMeta<'static>)> {
        let mut out = Vec::new();
        collect(self.root, String::new(), &mut out);
        out
    }

    fn walk(&self, path: &[&str]) -> FieldMeta<'static> {
        let mut ty = self.root;
        for (i, segment) in path.iter().enumerate() {
            let Some(field) = fields(ty).iter().find(|f| f.name == *segment) else {
                return FieldMeta::DEFAULT;
            };
            if i + 1 == path.len() {
                return field.meta;
            }
            match field.ty {
                Some(next) => ty = next,
                None => return FieldMeta::DEFAULT,
            }
        }
        FieldMeta::DEFAULT
    }
}

impl PatchMeta for BuiltinMeta {
    fn lookup(&self, path: &[&str]) -> FieldMeta<'_> {
        self.walk(path)
    }
}

fn collect(ty: Ty, prefix: String, out: &mut Vec<(String, FieldMeta<'static>)>) {
    for f in fields(ty) {
        let path = format!("{prefix}{}{}", f.name, if f.list { "[]" } else { "" });
        if f.meta != FieldMeta::DEFAULT {
            out.push((path.trim_end_matches("[]").to_string(), f.meta));
        }
        if let Some(child) = f.ty {
            collect(child, format!("{path}."), out);
        }
    }
}

/// The Go types (or groups of identically tagged types) the table needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    /// Any object: only `metadata`.
    Object,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    Container,
    ContainerStatus,
    PodTemplate,
    PodTemplateSpec,
    /// ReplicationController, ReplicaSet, DaemonSet, Job: `spec.template` and
    /// `status.conditions`.
    Workload,
    WorkloadSpec,
    Deployment,
    DeploymentSpec,
    StatefulSet,
    StatefulSetSpec,
    CronJob,
    CronJobSpec,
    JobTemplateSpec,
    /// Kinds whose only tag is `status.conditions` keyed by `type`.
    StatusConditions,
    ConditionsStatus,
    Service,
    ServiceSpec,
    Node,
    NodeSpec,
    NodeStatus,
    ServiceAccount,
    ComponentStatus,
    PodDisruptionBudget,
    PodDisruptionBudgetSpec,
    CsiNode,
    CsiNodeSpec,
    WebhookConfiguration,
    Webhook,
    AdmissionPolicy,
    AdmissionPolicySpec,
    ResourceClaim,
    ResourceClaimStatus,
}

const KINDS: &[&str] = &[
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "ReplicaSet",
    "DaemonSet",
    "Job",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "Service",
    "Node",
    "Namespace",
    "PersistentVolumeClaim",
    "ServiceAccount",
    "ComponentStatus",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "ServiceCIDR",
    "CSINode",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ResourceClaim",
];

fn root_for(kind: &str) -> Option<Ty> {
    Some(match kind {
        "Pod" => Ty::Pod,
        "PodTemplate" => Ty::PodTemplate,
        "ReplicationController" | "ReplicaSet" | "DaemonSet" | "Job" => Ty::Workload,
        "Deployment" => Ty::Deployment,
        "StatefulSet" => Ty::StatefulSet,
        "CronJob" => Ty::CronJob,
        "Service" => Ty::Service,
        "Node" => Ty::Node,
        "Namespace"
        | "PersistentVolumeClaim"
        | "HorizontalPodAutoscaler"
        | "FlowSchema"
        | "PriorityLevelConfiguration"
        | "ServiceCIDR" => Ty::StatusConditions,
        "ServiceAccount" => Ty::ServiceAccount,
        "ComponentStatus" => Ty::ComponentStatus,
        "PodDisruptionBudget" => Ty::PodDisruptionBudget,
        "CSINode" => Ty::CsiNode,
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => Ty::WebhookConfiguration,
        "ValidatingAdmissionPolicy" => Ty::AdmissionPolicy,
        "ResourceClaim" => Ty::ResourceClaim,
        _ => return None,
    })
}

/// One field of a type: its metadata and, when tagged fields lie below it, the
/// type of its value (of its elements, for lists).
struct F {
    name: &'static str,
    meta: FieldMeta<'static>,
    ty: Option<Ty>,
    list: bool,
}

/// An untagged object field leading to more rules.
const fn obj(name: &'static str, ty: Ty) -> F {
    F { name, meta: FieldMeta::DEFAULT, ty: Some(ty), list: false }
}

/// An untagged list field whose elements hold more rules.
const fn list_of(name: &'static str, ty: Ty) -> F {
    F { name, meta: FieldMeta::DEFAULT, ty: Some(ty), list: true }
}

/// A list merged by `key`.
const fn keyed(name: &'static str, key: &'static str) -> F {
    F { name, meta: FieldMeta::merge_by(key), ty: None, list: true }
}

/// A list merged by `key` whose elements hold more rules.
const fn keyed_of(name: &'static str, key: &'static str, ty: Ty) -> F {
    F { name, meta: FieldMeta::merge_by(key), ty: Some(ty), list: true }
}

/// A list merged by `key` with the `retainKeys` strategy on its elements.
const fn keyed_retain(name: &'static str, key: &'static str) -> F {
    F { name, meta: FieldMeta::merge_by(key).with_retain_keys(), ty: None, list: true }
}

/// A list of primitives merged as a set.
const fn set(name: &'static str) -> F {
    F { name, meta: FieldMeta::merge_set(), ty: None, list: true }
}

const METADATA: F = obj("metadata", Ty::ObjectMeta);
const CONDITIONS: F = keyed("conditions", "type");
const STATUS: F = obj("status", Ty::ConditionsStatus);

fn fields(ty: Ty) -> &'static [F] {
    match ty {
        Ty::Object => OBJECT,
        Ty::ObjectMeta => OBJECT_META,
        Ty::Pod => POD,
        Ty::PodSpec => POD_SPEC,
        Ty::Container => CONTAINER,
        Ty::PodStatus => POD_STATUS,
        Ty::ContainerStatus => CONTAINER_STATUS,
        Ty::PodTemplate => POD_TEMPLATE,
        Ty::PodTemplateSpec => POD_TEMPLATE_SPEC,
        Ty::Service => SERVICE,
        Ty::ServiceSpec => SERVICE_SPEC,
        Ty::Node => NODE,
        Ty::NodeSpec => NODE_SPEC,
        Ty::NodeStatus => NODE_STATUS,
        Ty::ServiceAccount => SERVICE_ACCOUNT,
        Ty::ComponentStatus => COMPONENT_STATUS,
        Ty::StatusConditions => STATUS_CONDITIONS_KIND,
        Ty::ConditionsStatus => CONDITIONS_STATUS,
        Ty::Workload => WORKLOAD,
        Ty::WorkloadSpec => WORKLOAD_SPEC,
        Ty::Deployment => DEPLOYMENT,
        Ty::DeploymentSpec => DEPLOYMENT_SPEC,
        Ty::StatefulSet => STATEFUL_SET,
        Ty::StatefulSetSpec => STATEFUL_SET_SPEC,
        Ty::CronJob => CRON_JOB,
        Ty::CronJobSpec => CRON_JOB_SPEC,
        Ty::JobTemplateSpec => JOB_TEMPLATE_SPEC,
        Ty::PodDisruptionBudget => POD_DISRUPTION_BUDGET,
        Ty::PodDisruptionBudgetSpec => POD_DISRUPTION_BUDGET_SPEC,
        Ty::CsiNode => CSI_NODE,
        Ty::CsiNodeSpec => CSI_NODE_SPEC,
        Ty::WebhookConfiguration => WEBHOOK_CONFIGURATION,
        Ty::Webhook => WEBHOOK,
        Ty::AdmissionPolicy => ADMISSION_POLICY,
        Ty::AdmissionPolicySpec => ADMISSION_POLICY_SPEC,
        Ty::ResourceClaim => RESOURCE_CLAIM,
        Ty::ResourceClaimStatus => RESOURCE_CLAIM_STATUS,
    }
}

static OBJECT: &[F] = &[METADATA];
// k8s.io/apimachinery meta/v1 ObjectMeta.
static OBJECT_META: &[F] = &[set("finalizers"), keyed("ownerReferences", "uid")];
// core/v1
static POD: &[F] = &[METADATA, obj("spec", Ty::PodSpec), obj("status", Ty::PodStatus)];
static POD_SPEC: &[F] = &[
    keyed_retain("volumes", "name"),
    keyed_of("initContainers", "name", Ty::Container),
    keyed_of("containers", "name", Ty::Container),
    // EphemeralContainer inlines EphemeralContainerCommon, tagged like Container.
    keyed_of("ephemeralContainers", "name", Ty::Container),
    keyed("imagePullSecrets", "name"),
    keyed("hostAliases", "ip"),
    keyed("topologySpreadConstraints", "topologyKey"),
    keyed("schedulingGates", "name"),
    keyed_retain("resourceClaims", "name"),
];
static CONTAINER: &[F] = &[
    keyed("ports", "containerPort"),
    keyed("env", "name"),
    keyed("volumeMounts", "mountPath"),
    keyed("volumeDevices", "devicePath"),
];
static POD_STATUS: &[F] = &[
    CONDITIONS,
    keyed("hostIPs", "ip"),
    keyed("podIPs", "ip"),
    keyed_retain("resourceClaimStatuses", "name"),
    list_of("initContainerStatuses", Ty::ContainerStatus),
    list_of("containerStatuses", Ty::ContainerStatus),
    list_of("ephemeralContainerStatuses", Ty::ContainerStatus),
];
static CONTAINER_STATUS: &[F] = &[keyed("volumeMounts", "mountPath"), keyed("allocatedResourcesStatus", "name")];
static POD_TEMPLATE: &[F] = &[METADATA, obj("template", Ty::PodTemplateSpec)];
static POD_TEMPLATE_SPEC: &[F] = &[METADATA, obj("spec", Ty::PodSpec)];
static SERVICE: &[F] = &[METADATA, obj("spec", Ty::ServiceSpec), STATUS];
static SERVICE_SPEC: &[F] = &[keyed("ports", "port")];
static NODE: &[F] = &[METADATA, obj("spec", Ty::NodeSpec), obj("status", Ty::NodeStatus)];
static NODE_SPEC: &[F] = &[set("podCIDRs")];
static NODE_STATUS: &[F] = &[CONDITIONS, keyed("addresses", "type")];
static SERVICE_ACCOUNT: &[F] = &[METADATA, keyed("secrets", "name")];
static COMPONENT_STATUS: &[F] = &[METADATA, CONDITIONS];
static STATUS_CONDITIONS_KIND: &[F] = &[METADATA, STATUS];
static CONDITIONS_STATUS: &[F] = &[CONDITIONS];
// apps/v1, batch/v1; ReplicationController (core/v1) has the same shape.
static WORKLOAD: &[F] = &[METADATA, obj("spec", Ty::WorkloadSpec), STATUS];
static WORKLOAD_SPEC: &[F] = &[obj("template", Ty::PodTemplateSpec)];
static DEPLOYMENT: &[F] = &[METADATA, obj("spec", Ty::DeploymentSpec), STATUS];
static DEPLOYMENT_SPEC: &[F] = &[
    obj("template", Ty::PodTemplateSpec),
    F { name: "strategy", meta: FieldMeta::DEFAULT.with_retain_keys(), ty: None, list: false },
];
static STATEFUL_SET: &[F] = &[METADATA, obj("spec", Ty::StatefulSetSpec), STATUS];
static STATEFUL_SET_SPEC: &[F] = &[
    obj("template", Ty::PodTemplateSpec),
    // PersistentVolumeClaim: metadata and status.conditions.
    list_of("volumeClaimTemplates", Ty::StatusConditions),
];
static CRON_JOB: &[F] = &[METADATA, obj("spec", Ty::CronJobSpec)];
static CRON_JOB_SPEC: &[F] = &[obj("jobTemplate", Ty::JobTemplateSpec)];
static JOB_TEMPLATE_SPEC: &[F] = &[METADATA, obj("spec", Ty::WorkloadSpec)];
// policy/v1
static POD_DISRUPTION_BUDGET: &[F] = &[METADATA, obj("spec", Ty::PodDisruptionBudgetSpec), STATUS];
static POD_DISRUPTION_BUDGET_SPEC: &[F] = &[F { name: "selector", meta: FieldMeta::replace(), ty: None, list: false }];
// storage/v1
static CSI_NODE: &[F] = &[METADATA, obj("spec", Ty::CsiNodeSpec)];
static CSI_NODE_SPEC: &[F] = &[keyed("drivers", "name")];
// admissionregistration/v1
static WEBHOOK_CONFIGURATION: &[F] = &[METADATA, keyed_of("webhooks", "name", Ty::Webhook)];
static WEBHOOK: &[F] = &[keyed("matchConditions", "name")];
static ADMISSION_POLICY: &[F] = &[METADATA, obj("spec", Ty::AdmissionPolicySpec)];
static ADMISSION_POLICY_SPEC: &[F] = &[keyed("matchConditions", "name"), keyed("variables", "name")];
// resource.k8s.io
static RESOURCE_CLAIM: &[F] = &[METADATA, obj("status", Ty::ResourceClaimStatus)];
static RESOURCE_CLAIM_STATUS: &[F] = &[keyed("reservedFor", "uid")];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smp::meta::Strategy;

    #[test]
    fn pod_templates_share_pod_spec_rules() {
        let env = FieldMeta::merge_by("name");
        for (kind, prefix) in [
            ("Pod", "spec"),
            ("Deployment", "spec.template.spec"),
            ("ReplicaSet", "spec.template.spec"),
            ("StatefulSet", "spec.template.spec"),
            ("DaemonSet", "spec.template.spec"),
            ("Job", "spec.template.spec"),
            ("ReplicationController", "spec.template.spec"),
            ("CronJob", "spec.jobTemplate.spec.template.spec"),
            ("PodTemplate", "template.spec"),
        ] {
            let meta = BuiltinMeta::for_kind(kind);
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                assert_eq!(meta.lookup_dotted(&format!("{prefix}.{list}[].env")), env, "{kind} {list}");
                assert_eq!(
                    meta.lookup_dotted(&format!("{prefix}.{list}")),
                    FieldMeta::merge_by("name"),
                    "{kind} {list}"
                );
            }
            assert_eq!(
                meta.lookup_dotted(&format!("{prefix}.containers[].ports")),
                FieldMeta::merge_by("containerPort")
            );
            assert_eq!(
                meta.lookup_dotted(&format!("{prefix}.volumes")),
                FieldMeta::merge_by("name").with_retain_keys()
            );
            assert_eq!(meta.lookup_dotted(&format!("{prefix}.tolerations")), FieldMeta::DEFAULT);
        }
    }

    #[test]
    fn metadata_rules_apply_to_every_kind_and_nested_object_meta() {
        for kind in ["ConfigMap", "Deployment", "Pod", "SomeCustomKind"] {
            let meta = BuiltinMeta::for_kind(kind);
            assert_eq!(meta.lookup_dotted("metadata.finalizers"), FieldMeta::merge_set());
            assert_eq!(meta.lookup_dotted("metadata.ownerReferences"), FieldMeta::merge_by("uid"));
            assert_eq!(meta.lookup_dotted("metadata.labels"), FieldMeta::DEFAULT);
        }
        let d = BuiltinMeta::for_kind("Deployment");
        assert_eq!(d.lookup_dotted("spec.template.metadata.finalizers"), FieldMeta::merge_set());
        let sts = BuiltinMeta::for_kind("StatefulSet");
        assert_eq!(sts.lookup_dotted("spec.volumeClaimTemplates[].status.conditions"), CONDITIONS.meta);
    }

    #[test]
    fn other_kinds() {
        let m = |k: &str, p: &str| BuiltinMeta::for_kind(k).lookup_dotted(p);
        assert_eq!(m("Service", "spec.ports"), FieldMeta::merge_by("port"));
        assert_eq!(m("Node", "spec.podCIDRs"), FieldMeta::merge_set());
        assert_eq!(m("Node", "spec.taints"), FieldMeta::DEFAULT);
        assert_eq!(m("Node", "status.addresses"), FieldMeta::merge_by("type"));
        assert!(m("Deployment", "spec.strategy").retain_keys);
        assert_eq!(m("Deployment", "status.conditions"), FieldMeta::merge_by("type"));
        assert_eq!(m("PodDisruptionBudget", "spec.selector").strategy, Strategy::Replace);
        assert_eq!(m("MutatingWebhookConfiguration", "webhooks[].matchConditions"), FieldMeta::merge_by("name"));
        assert_eq!(m("Pod", "status.containerStatuses[].volumeMounts"), FieldMeta::merge_by("mountPath"));
        assert_eq!(m("Pod", "status.containerStatuses"), FieldMeta::DEFAULT);
        // Paths running past a leaf or into unknown fields have no rule.
        assert_eq!(m("Pod", "spec.containers.env.name"), FieldMeta::DEFAULT);
        assert_eq!(m("Pod", "nonsense.containers"), FieldMeta::DEFAULT);
        assert_eq!(m("Pod", ""), FieldMeta::DEFAULT);
    }

    #[test]
    fn every_listed_kind_has_a_root_and_rules() {
        for kind in BuiltinMeta::kinds() {
            assert!(BuiltinMeta::is_known_kind(kind), "{kind}");
            let rules = BuiltinMeta::for_kind(kind).rules();
            assert!(rules.len() > 2, "{kind}: {rules:?}");
        }
        let rules = BuiltinMeta::for_kind("CronJob").rules();
        assert!(rules.iter().any(|(p, _)| p == "spec.jobTemplate.spec.template.spec.containers[].env"));
    }
}
