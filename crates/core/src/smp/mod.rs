//! Server-side application of Kubernetes *strategic merge patches* (SMP).
//!
//! kubectl sends `application/strategic-merge-patch+json` for `kubectl patch`
//! (its default type), `kubectl edit`, client-side `kubectl apply` (from the
//! second apply on), `kubectl set image`, `kubectl rollout restart` and more.
//! This crate applies such a patch to a stored object, both given as
//! [`serde_json::Value`], following the behaviour of upstream
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch`),
//! re-implemented from its documented semantics and test cases.
//!
//! Semantics in brief:
//! * objects merge key by key; a `null` value deletes the key;
//!   `{"$patch": "replace", ...}` replaces the object by the rest of the map,
//!   `{"$patch": "delete"}` removes it;
//! * lists are replaced wholesale unless the field's [`PatchMeta`] says
//!   `patchStrategy: merge`: lists of objects then merge element-wise by the
//!   field's merge key (`{"$patch": "delete", <key>: v}` deletes,
//!   `{"$patch": "replace"}` replaces the list), lists of primitives merge as
//!   sets and `$deleteFromPrimitiveList/<field>` removes values;
//! * `$setElementOrder/<field>` fixes the relative order of a list's elements,
//!   `$retainKeys` clears every key of an object it does not list;
//! * none of these directives ever appears in the result.
//!
//! Which fields merge, and by which key, comes from Go struct tags upstream; here
//! it comes from a [`PatchMeta`] looked up by the path of field names from the
//! kind root. [`BuiltinMeta`] covers the built-in kinds.
//!
//! Where we knowingly differ from upstream's code (all where upstream's result
//! is accidental or leaks directives; kubectl never sends these shapes):
//! * `{"$patch": "delete"}` on an existing object removes the key, as the SMP
//!   document describes; upstream's code leaves `{}`.
//! * A value added where nothing is there to merge with (absent field, type
//!   change, replaced list, `$patch: replace` content) is merged into an empty
//!   value, so its directives are processed rather than copied or dropped:
//!   `{"$patch": "replace", ...}` there keeps its content (upstream drops the
//!   object), `$retainKeys`/`$setElementOrder` never leak, elements of a
//!   merging list need their merge key, and sets are de-duplicated.
//! * An unknown `$patch` value is an error wherever it appears (upstream
//!   silently drops such objects in some places).
//! * Unknown fields are not errors: they merge as objects / replace as lists
//!   (upstream fails on some when typed structs lack them).
//! * A `$setElementOrder/x` beside `x: null` is ignored (upstream fails), and
//!   `$deleteFromPrimitiveList/x` must hold a list of primitives even when
//!   `x` is absent (upstream ignores it then).
//!
//! ```
//! use serde_json::json;
//! let live = json!({"spec": {"template": {"spec": {"containers": [
//!     {"name": "nginx", "image": "nginx:1.24"}, {"name": "sidecar", "image": "busybox"}]}}}});
//! let patch = json!({"spec": {"template": {"spec": {"containers": [
//!     {"name": "nginx", "image": "nginx:1.25"}]}}}});
//! let out = rkube_core::smp::apply_for_kind(&live, &patch, "Deployment").unwrap();
//! assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");
//! assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["name"], "sidecar");
//! ```

mod builtin;
mod error;
mod list;
mod merge;
mod meta;
mod value;

pub use builtin::BuiltinMeta;
pub use error::SmpError;
pub use meta::{FieldMeta, NoMeta, PatchMeta, Strategy};

use serde_json::{Map, Value};

/// The directive key inside an object: `"$patch": "replace" | "delete"`.
pub const PATCH_DIRECTIVE: &str = "$patch";
/// The directive key listing the keys of an object to keep.
pub const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
/// Prefix of the parallel list fixing element order: `$setElementOrder/<field>`.
pub const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
/// Prefix of the parallel list deleting primitives: `$deleteFromPrimitiveList/<field>`.
pub const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

/// Deepest nesting of objects and lists the merge will descend into. A patch that
/// is deeper is refused with [`SmpError::TooDeep`] rather than risking the stack;
/// serde_json's parser already stops at 128, so real objects never get close.
pub const MAX_DEPTH: usize = 100;

/// Applies `patch` to `original` and returns the patched object.
///
/// `original` is not modified. Both must be JSON objects; a `null` original is
/// taken as `{}` and a `null` patch changes nothing (upstream decodes both into
/// a Go map, where `null` leaves the map empty).
pub fn apply(original: &Value, patch: &Value, meta: &dyn PatchMeta) -> Result<Value, SmpError> {
    let base = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(SmpError::NotAnObject { what: "original object" }),
    };
    let patch = match patch {
        Value::Object(p) => p,
        Value::Null => return Ok(Value::Object(base)),
        _ => return Err(SmpError::NotAnObject { what: "patch" }),
    };
    let mut merger = merge::Merger::new(meta);
    // A top-level `$patch: delete` cannot remove the object itself; like
    // upstream it leaves an empty object.
    Ok(Value::Object(merger.merge_map(base, patch)?.unwrap_or_default()))
}

/// [`apply`] with the built-in patch metadata of `kind` (e.g. `"Deployment"`).
///
/// Kinds without a table of their own get the rules every object shares
/// (`metadata.finalizers`, `metadata.ownerReferences`). Upstream refuses strategic
/// merge patches for custom resources (415 Unsupported Media Type); that decision
/// belongs to the caller, which knows whether a resource is a custom one.
pub fn apply_for_kind(original: &Value, patch: &Value, kind: &str) -> Result<Value, SmpError> {
    apply(original, patch, &BuiltinMeta::for_kind(kind))
}
