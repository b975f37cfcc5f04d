//! The protobuf schema of all k8s-pb messages, generated at build time by
//! `build/` into `$OUT_DIR/schema.rs` and included here.

/// Wire/JSON type of a field (for maps: of the value; keys are strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    /// Index into [`MESSAGES`].
    Message(u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Card {
    Single,
    Repeated,
    /// `map<string, Ty>`, encoded as repeated entry messages {1: key, 2: value}.
    Map,
}

/// Messages whose Go type has a custom JSON form instead of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// resource.Quantity {1: string} → "100m".
    Quantity,
    /// meta.v1.Time {1: seconds, 2: nanos} → RFC 3339, second precision.
    Time,
    /// meta.v1.MicroTime → RFC 3339 with exactly 6 fractional digits.
    MicroTime,
    /// meta.v1.Duration {1: nanoseconds} → Go duration string ("1m30s").
    Duration,
    /// intstr.IntOrString {1: type, 2: intVal, 3: strVal} → number or string.
    IntOrString,
    /// runtime.RawExtension {1: raw} → embedded JSON or nested k8s protobuf.
    RawExtension,
    /// `FieldsV1` / apiextensions JSON {1: raw} → embedded JSON.
    RawJson,
    /// Go `[]string` named types (`Verbs`, `ExtraValue`) {1: items} → array.
    StringList,
    /// `JSONSchemaPropsOrArray` {1: schema, 2: schemas} → object or array.
    SchemaOrArray,
    /// `JSONSchemaPropsOrBool` {1: allows, 2: schema} → object or bool.
    SchemaOrBool,
    /// `JSONSchemaPropsOrStringArray` {1: schema, 2: property} → object or array.
    SchemaOrStringArray,
}

/// The field is a Go embedded struct (`json:",inline"`): its fields are
/// merged into the parent's JSON object.
pub(crate) const INLINE: u8 = 1;
/// Keep `""` for this singular string (Go `*string` where "" ≠ unset).
pub(crate) const KEEP_EMPTY: u8 = 2;
/// Drop a `0` for this singular int (Go non-pointer `omitempty` int).
pub(crate) const DROP_ZERO: u8 = 4;

pub(crate) struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub card: Card,
    pub flags: u8,
}

/// Keeps the generated table compact: one call per field.
const fn f(tag: u32, json: &'static str, ty: Ty, card: Card, flags: u8) -> Field {
    Field { tag, json, ty, card, flags }
}

pub(crate) struct Msg {
    /// Protobuf full name (prost's spelling), e.g. `k8s.io.api.core.v1.Pod`.
    pub name: &'static str,
    pub special: Special,
    /// Sorted by tag.
    pub fields: &'static [Field],
}

pub(crate) struct KindEntry {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub msg: u16,
}

include!(concat!(env!("OUT_DIR"), "/schema.rs"));

impl Msg {
    pub(crate) fn field_index(&self, tag: u32) -> Option<usize> {
        self.fields.binary_search_by_key(&tag, |f| f.tag).ok()
    }
}

/// Case-insensitive lookup by protobuf full name (MESSAGES is sorted by
/// lowercase name), so both `HTTPGetAction` and prost's `HttpGetAction` work.
pub(crate) fn message_by_name(name: &str) -> Option<u16> {
    let lower = |s: &'static str| s.bytes().map(|b| b.to_ascii_lowercase());
    let want = || name.bytes().map(|b| b.to_ascii_lowercase());
    MESSAGES.binary_search_by(|m| lower(m.name).cmp(want())).ok().and_then(|i| u16::try_from(i).ok())
}

/// Kinds that `metav1.AddToGroupVersion` registers in every group version,
/// so e.g. `apps/v1, Kind=DeleteOptions` is valid.
const META_KINDS: &[&str] = &[
    "DeleteOptions",
    "CreateOptions",
    "UpdateOptions",
    "PatchOptions",
    "GetOptions",
    "ListOptions",
    "WatchEvent",
    "Status",
];

/// Message index for a top-level (apiVersion, kind). The kind comparison is
/// ASCII case-insensitive because a few prost struct names differ in case from
/// the Go kind; apiVersion must match exactly.
pub(crate) fn message_for_kind(api_version: &str, kind: &str) -> Option<u16> {
    let find =
        |av: &str| KINDS.iter().find(|k| k.api_version == av && k.kind.eq_ignore_ascii_case(kind)).map(|k| k.msg);
    find(api_version).or_else(|| {
        let known_version = KINDS.iter().any(|k| k.api_version == api_version);
        let meta_kind = META_KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind));
        (known_version && meta_kind).then(|| find("meta.k8s.io/v1")).flatten()
    })
}
