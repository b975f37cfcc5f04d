//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rkube_core::smp::{BuiltinMeta, FieldMeta, PatchMeta, SmpError, apply};
use serde_json::Value;

/// The metadata of the type upstream's own tests use (`MergeItem` in
/// apimachinery's patch_test.go), re-described as a path lookup. The type is
/// recursive, so only the last path segment matters:
/// * `mergingList`, `mergeItemPtr`: lists of items merged by `name`;
/// * `retainKeysMergingList`: the same, with the retainKeys strategy;
/// * `mergingIntList`: a set of primitives;
/// * `replacingItem`: replaced wholesale (`patchStrategy:"replace"`);
/// * `retainKeysMap`: an object with the retainKeys strategy;
/// * everything else (`nonMergingList`, `nonMergingIntList`, `simpleMap`...): no strategy.
pub fn item_meta(path: &[&str]) -> FieldMeta<'static> {
    match path.last().copied() {
        Some("mergingList" | "mergeItemPtr") => FieldMeta::merge_by("name"),
        Some("retainKeysMergingList") => FieldMeta::merge_by("name").with_retain_keys(),
        Some("mergingIntList") => FieldMeta::merge_set(),
        Some("replacingItem") => FieldMeta::replace(),
        Some("retainKeysMap") => FieldMeta::DEFAULT.with_retain_keys(),
        _ => FieldMeta::DEFAULT,
    }
}

/// Applies `patch` to `original` with `meta` and expects `expected` exactly
/// (list order included), with no directive left anywhere in the result.
#[track_caller]
pub fn check_with(meta: &dyn PatchMeta, desc: &str, original: Value, patch: Value, expected: Value) {
    let got = match apply(&original, &patch, meta) {
        Ok(v) => v,
        Err(e) => panic!("{desc}: unexpected error: {e}\n original: {original}\n patch: {patch}"),
    };
    assert_eq!(got, expected, "{desc}\n original: {original}\n patch: {patch}");
    assert_no_directives(&got);
    // The original is borrowed, never modified: applying again gives the same.
    assert_eq!(apply(&original, &patch, meta).ok(), Some(got), "{desc}: not deterministic");
}

/// [`check_with`] using the upstream test type's metadata.
#[track_caller]
pub fn check(desc: &str, original: Value, patch: Value, expected: Value) {
    check_with(&item_meta, desc, original, patch, expected)
}

/// [`check_with`] using the built-in table for `kind`.
#[track_caller]
pub fn check_kind(kind: &str, desc: &str, original: Value, patch: Value, expected: Value) {
    check_with(&BuiltinMeta::for_kind(kind), desc, original, patch, expected)
}

/// Expects the patch to fail; returns the error for closer inspection.
#[track_caller]
pub fn check_err_with(meta: &dyn PatchMeta, desc: &str, original: Value, patch: Value) -> SmpError {
    match apply(&original, &patch, meta) {
        Ok(v) => panic!("{desc}: expected an error, got {v}\n patch: {patch}"),
        Err(e) => {
            // Go-style error text: starts lowercase, no trailing punctuation.
            let msg = e.to_string();
            assert!(!msg.starts_with(|c: char| c.is_uppercase()), "{desc}: message not lowercase: {msg}");
            assert!(!msg.ends_with(['.', '\n']), "{desc}: trailing punctuation: {msg}");
            e
        }
    }
}

#[track_caller]
pub fn check_err(desc: &str, original: Value, patch: Value) -> SmpError {
    check_err_with(&item_meta, desc, original, patch)
}

/// Fails if a patch directive survived into a result.
#[track_caller]
pub fn assert_no_directives(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                assert!(
                    k != "$patch"
                        && k != "$retainKeys"
                        && !k.starts_with("$setElementOrder")
                        && !k.starts_with("$deleteFromPrimitiveList"),
                    "directive {k:?} leaked into {v}"
                );
                assert_no_directives(x);
            }
        }
        Value::Array(a) => a.iter().for_each(assert_no_directives),
        _ => {}
    }
}
