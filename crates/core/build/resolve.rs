//! Turns parsed k8s-pb messages + k8s-openapi names into the final schema:
//! JSON names, embedded (`json:",inline"`) fields, special JSON encodings,
//! empty-value flags and the (apiVersion, kind) → message table.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::openapi::{Names, norm};
use crate::pb::{Card, Message, ResourceImpl, Scalar};

// Field flags; keep in sync with src/schema.rs.
pub const INLINE: u8 = 1;
pub const KEEP_EMPTY: u8 = 2;
pub const DROP_ZERO: u8 = 4;

/// Messages whose JSON form is not an object: (module pattern, name,
/// `Special` variant, expected field signature). The signature check makes a
/// k8s-pb upgrade that changes one of them fail the build loudly.
const SPECIALS: &[(&str, &str, &str, &str)] = &[
    ("apimachinery/pkg/api/resource", "Quantity", "Quantity", "1:String"),
    ("apimachinery/pkg/api/resource", "QuantityValue", "Quantity", "1:String"),
    ("apimachinery/pkg/apis/meta/v1", "Time", "Time", "1:Int64 2:Int32"),
    ("apimachinery/pkg/apis/meta/v1", "MicroTime", "MicroTime", "1:Int64 2:Int32"),
    ("apimachinery/pkg/apis/meta/v1", "Duration", "Duration", "1:Int64"),
    ("apimachinery/pkg/apis/meta/v1", "FieldsV1", "RawJson", "1:Bytes"),
    ("apimachinery/pkg/apis/meta/v1", "Verbs", "StringList", "1:String*"),
    ("apimachinery/pkg/runtime", "RawExtension", "RawExtension", "1:Bytes"),
    ("apimachinery/pkg/util/intstr", "IntOrString", "IntOrString", "1:Int64 2:Int32 3:String"),
    // Go `type ExtraValue []string` in authentication/authorization/certificates.
    ("*", "ExtraValue", "StringList", "1:String*"),
    ("apiextensions_apiserver/*", "Json", "RawJson", "1:Bytes"),
    ("apiextensions_apiserver/*", "JsonSchemaPropsOrArray", "SchemaOrArray", "1:Message 2:Message*"),
    ("apiextensions_apiserver/*", "JsonSchemaPropsOrBool", "SchemaOrBool", "1:Bool 2:Message"),
    ("apiextensions_apiserver/*", "JsonSchemaPropsOrStringArray", "SchemaOrStringArray", "1:Message 2:String*"),
];

/// Go `*string` fields where `""` differs from unset, so the decoder must not
/// drop an empty string there (see `KEEP_EMPTY` in src/schema.rs).
const KEEP_EMPTY_FIELDS: &[(&str, &str, &str)] = &[
    // "" = no class (disables dynamic provisioning); unset = default class.
    ("api/core/v1", "PersistentVolumeClaimSpec", "storage_class_name"),
    ("api/core/v1", "PersistentVolumeClaimSpec", "volume_attributes_class_name"),
];

/// Non-pointer Go ints tagged `omitempty` whose 0 means "unset, default me"
/// (Go sends them as 0 on the wire; Go JSON would omit them).
const DROP_ZERO_FIELDS: &[(&str, &str, &str)] = &[
    ("api/core/v1", "Probe", "timeout_seconds"),
    ("api/core/v1", "Probe", "period_seconds"),
    ("api/core/v1", "Probe", "success_threshold"),
    ("api/core/v1", "Probe", "failure_threshold"),
    ("api/core/v1", "ServicePort", "node_port"),
    ("api/core/v1", "ContainerPort", "host_port"),
    ("apimachinery/pkg/apis/meta/v1", "ObjectMeta", "generation"),
];

/// JSON names k8s-openapi cannot supply (types absent from every `OpenAPI`
/// version) and lowerCamelCase gets wrong because of Go initialisms.
const NAME_OVERRIDES: &[(&str, &str, &str)] = &[
    ("PodLogOptions", "insecure_skip_tls_verify_backend", "insecureSkipTLSVerifyBackend"),
    ("ConversionRequest", "desired_api_version", "desiredAPIVersion"),
    ("CarpStatus", "carp_ip", "carpIP"),
];

/// Top-level kinds without an ObjectMeta/ListMeta `metadata` field.
const EXTRA_KINDS: &[&str] = &["AdmissionReview", "ConversionReview", "DeploymentRollback"];

pub enum Ty {
    Scalar(Scalar),
    Message(usize),
}

pub struct OutField {
    /// How the JSON name was found (for the report).
    pub how: &'static str,
    pub ident: String,
    pub tag: u32,
    pub json: String,
    pub ty: Ty,
    pub card: Card,
    pub flags: u8,
}

pub struct OutMsg {
    pub full_name: String,
    pub special: &'static str,
    pub fields: Vec<OutField>,
}

pub struct Schema {
    /// Sorted by lowercase full name (runtime binary search).
    pub msgs: Vec<OutMsg>,
    /// `(apiVersion, kind, message index)`.
    pub kinds: Vec<(String, String, usize)>,
    pub report: String,
}

/// Protobuf package + name, e.g. `k8s.io.api.core.v1.Pod`. Only the top
/// directory differs from the Go import path (`kube_aggregator` → `kube-aggregator`).
fn full_name(m: &Message) -> String {
    let mut segs = m.module.split('/');
    let top = segs.next().unwrap_or_default().replace('_', "-");
    let rest: Vec<_> = segs.collect();
    format!("k8s.io.{top}.{}.{}", rest.join("."), m.name).replace("..", ".")
}

fn lower_camel(ident: &str) -> String {
    let mut out = String::new();
    for (i, part) in ident.split('_').enumerate() {
        let mut cs = part.chars();
        match (i, cs.next()) {
            (0, Some(c)) => out.push(c),
            (_, Some(c)) => out.extend(c.to_uppercase()),
            (_, None) => {}
        }
        out.extend(cs);
    }
    out
}

/// JSON name of a field: exact per-type name from k8s-openapi, else from a
/// same-named type in another API version, else the unique global name with
/// the same normalization, else lowerCamelCase.
fn json_name(m: &Message, pt: Option<&HashMap<String, String>>, names: &Names, ident: &str) -> (String, &'static str) {
    let n = norm(ident);
    if let Some(j) = pt.and_then(|pt| pt.get(&n)) {
        return (j.clone(), "type");
    }
    if let Some(&(_, _, j)) = NAME_OVERRIDES.iter().find(|o| o.0 == m.name && o.1 == ident) {
        return (j.to_string(), "override");
    }
    if let Some(j) = names.by_type_name.get(&norm(&m.name)).and_then(|t| t.get(&n)) {
        return (j.clone(), "sibling");
    }
    let camel = lower_camel(ident);
    match names.global.get(&n) {
        Some(set) if set.len() == 1 => (set.first().expect("non-empty").clone(), "global"),
        Some(set) if set.contains(&camel) => (camel, "global-ambiguous"),
        Some(set) => (set.first().expect("non-empty").clone(), "global-ambiguous"),
        None => (camel, "camel"),
    }
}

/// Whether every field of message `idx` appears among the parent's JSON
/// keys `pt`, looking through nested embedded structs (admissionregistration
/// `NamedRuleWithOperations` embeds `RuleWithOperations`, which embeds `Rule`).
fn covered(msgs: &[Message], idx: usize, pt: &HashMap<String, String>, depth: usize) -> bool {
    let m = &msgs[idx];
    let index_of = |r: &(String, String)| msgs.iter().position(|x| x.module == r.0 && x.name == r.1);
    !m.fields.is_empty()
        && m.fields.iter().all(|f| {
            pt.contains_key(&norm(&f.ident))
                || (depth < 3
                    && f.card == Card::Single
                    && f.type_ref.as_ref().and_then(index_of).is_some_and(|c| covered(msgs, c, pt, depth + 1)))
        })
}

fn signature(m: &Message) -> String {
    let mut fs: Vec<_> = m.fields.iter().collect();
    fs.sort_by_key(|f| f.tag);
    let sig: Vec<_> = fs
        .iter()
        .map(|f| format!("{}:{:?}{}", f.tag, f.scalar, if f.card == Card::Repeated { "*" } else { "" }))
        .collect();
    sig.join(" ")
}

fn module_matches(pattern: &str, module: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => module.starts_with(prefix),
        None => pattern == module,
    }
}

/// Group of an API directory (`api/<dir>/<ver>`, `<x>/pkg/apis/<dir>/<ver>`)
/// when no k8s-pb `Resource` impl names it.
fn fallback_group(dir: &str) -> String {
    match dir {
        "core" => String::new(),
        "meta" => "meta.k8s.io".into(),
        "apps" | "batch" | "autoscaling" | "policy" | "extensions" => dir.into(),
        "custom_metrics" => "custom.metrics.k8s.io".into(),
        "external_metrics" => "external.metrics.k8s.io".into(),
        "testapigroup" => "testapigroup.apimachinery.k8s.io".into(),
        _ => format!("{dir}.k8s.io"),
    }
}

fn group_dir(module: &str) -> Option<(&str, &str)> {
    let segs: Vec<&str> = module.split('/').collect();
    match segs.as_slice() {
        ["api", g, v] | [_, "pkg", "apis", g, v] => Some((g, v)),
        _ => None,
    }
}

pub fn resolve(mut msgs: Vec<Message>, resources: &[ResourceImpl], names: &Names) -> Schema {
    msgs.sort_by_cached_key(|m| full_name(m).to_ascii_lowercase());
    let mut index = HashMap::new();
    for (i, m) in msgs.iter().enumerate() {
        let dup = index.insert((m.module.clone(), m.name.clone()), i);
        assert!(dup.is_none(), "duplicate message {}", full_name(m));
    }
    let mut report = String::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    // (parent, field ident, child) triples proven inline where k8s-openapi
    // knows the parent, reused for parents it lacks (old beta versions).
    let mut inline_patterns = HashSet::new();
    let mut out: Vec<OutMsg> = Vec::with_capacity(msgs.len());

    for m in &msgs {
        let pt = names.per_type.get(&(m.module.clone(), norm(&m.name)));
        let mut fields = Vec::new();
        for f in &m.fields {
            let ty = match &f.type_ref {
                Some(r) => Ty::Message(*index.get(r).unwrap_or_else(|| panic!("unresolved type {r:?}"))),
                None => Ty::Scalar(f.scalar),
            };
            let (json, how) = json_name(m, pt, names, &f.ident);
            *counts.entry(how).or_default() += 1;
            let mut flags = 0;
            // An embedded Go struct has no JSON key of its own: the parent's
            // JSON lacks the field's name but has all of the child's fields.
            if let (Some(pt), Ty::Message(c), Card::Single) = (pt, &ty, f.card)
                && !pt.contains_key(&norm(&f.ident))
                && covered(&msgs, *c, pt, 0)
            {
                flags |= INLINE;
                inline_patterns.insert((m.name.clone(), f.ident.clone(), msgs[*c].name.clone()));
            }
            fields.push(OutField { how, ident: f.ident.clone(), tag: f.tag, json, ty, card: f.card, flags });
        }
        fields.sort_by_key(|f| f.tag);
        assert!(fields.windows(2).all(|w| w[0].tag < w[1].tag), "duplicate tag in {}", m.name);
        out.push(OutMsg { full_name: full_name(m), special: "None", fields });
    }

    for (m, o) in msgs.iter().zip(&mut out) {
        let known = names.per_type.contains_key(&(m.module.clone(), norm(&m.name)));
        for f in &mut o.fields {
            if let (false, Ty::Message(c), Card::Single) = (known, &f.ty, f.card)
                && inline_patterns.contains(&(m.name.clone(), f.ident.clone(), msgs[*c].name.clone()))
            {
                f.flags |= INLINE;
            }
            if f.flags & INLINE != 0 {
                let _ = writeln!(report, "inline: {}.{}", o.full_name, f.ident);
            } else if !matches!(f.how, "type" | "sibling" | "global") {
                // Inline fields have no JSON name, so only report the others.
                let _ = writeln!(report, "name {}: {}.{} -> {}", f.how, o.full_name, f.ident, f.json);
            }
        }
    }

    for &(pat, name, special, sig) in SPECIALS {
        let mut hits = 0;
        for (m, o) in msgs.iter().zip(&mut out) {
            if m.name == name && module_matches(pat, &m.module) {
                assert_eq!(signature(m), sig, "special message {} changed shape", o.full_name);
                o.special = special;
                hits += 1;
            }
        }
        assert!(hits > 0, "special message {pat}/{name} not found in k8s-pb");
    }
    for (table, flag) in [(KEEP_EMPTY_FIELDS, KEEP_EMPTY), (DROP_ZERO_FIELDS, DROP_ZERO)] {
        for &(module, name, ident) in table {
            let i = index[&(module.to_string(), name.to_string())];
            let f = out[i].fields.iter_mut().find(|f| f.ident == ident);
            f.unwrap_or_else(|| panic!("no field {name}.{ident}")).flags |= flag;
        }
    }

    let mut kinds = kinds(&msgs, resources, &index);
    // Special messages (meta.k8s.io Time, …) are not objects, so not kinds.
    kinds.retain(|k| out[k.2].special == "None");
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_unstable();
    let _ = writeln!(report, "# naming counts: {counts:?}");
    let _ = writeln!(report, "# messages: {}, kinds: {}", out.len(), kinds.len());
    for (n, set) in names.global.iter().filter(|(_, s)| s.len() > 1) {
        let _ = writeln!(report, "global collision: {n} -> {set:?}");
    }
    for c in &names.per_type_collisions {
        let _ = writeln!(report, "per-type collision: {c}");
    }
    Schema { msgs: out, kinds, report }
}

fn kinds(
    msgs: &[Message],
    resources: &[ResourceImpl],
    index: &HashMap<(String, String), usize>,
) -> Vec<(String, String, usize)> {
    // Directory → group as declared by k8s-pb's Resource impls.
    let mut groups: HashMap<&str, String> = HashMap::new();
    let mut kind_names: HashMap<(&str, &str), &str> = HashMap::new();
    for (module, name, api_version, kind) in resources {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g).to_string();
        if let Some((dir, _)) = group_dir(module) {
            let old = groups.insert(dir, group.clone());
            assert!(old.is_none_or(|o| o == group), "inconsistent group for {dir}");
        }
        kind_names.insert((module, name), kind);
    }
    let is_meta = |r: &Option<(String, String)>| {
        r.as_ref().is_some_and(|(m, n)| m == "apimachinery/pkg/apis/meta/v1" && (n == "ObjectMeta" || n == "ListMeta"))
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for m in msgs {
        let Some((dir, version)) = group_dir(&m.module) else { continue };
        let group = groups.get(dir).cloned().unwrap_or_else(|| fallback_group(dir));
        let has_meta = m.fields.iter().any(|f| f.ident == "metadata" && is_meta(&f.type_ref));
        if !(has_meta || group == "meta.k8s.io" || EXTRA_KINDS.contains(&m.name.as_str())) {
            continue;
        }
        let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        let kind = kind_names.get(&(m.module.as_str(), m.name.as_str())).map_or(m.name.as_str(), |k| k);
        assert!(seen.insert((api_version.clone(), kind.to_ascii_lowercase())), "duplicate kind {kind}");
        out.push((api_version, kind.to_string(), index[&(m.module.clone(), m.name.clone())]));
    }
    out.sort();
    out
}
