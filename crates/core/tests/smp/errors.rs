//! Malformed patches fail with typed errors naming the field; none panics.

use crate::common::*;
use rkube_core::smp::{BuiltinMeta, MAX_DEPTH, NoMeta, SmpError, apply};
use serde_json::{Value, json};

#[test]
fn unknown_patch_types() {
    let e =
        check_err("unknown $patch in a map", json!({"simpleMap": {"a": 1}}), json!({"simpleMap": {"$patch": "bogus"}}));
    assert_eq!(e, SmpError::UnknownPatchType { path: "simpleMap".into(), value: "\"bogus\"".into() });
    assert_eq!(e.to_string(), r#"unknown patch type "bogus" at simpleMap: expected "replace" or "delete""#);

    let e = check_err("non-string $patch at the root", json!({}), json!({"$patch": 1}));
    assert!(matches!(e, SmpError::UnknownPatchType { ref path, .. } if path == "<root>"), "{e:?}");

    // Upstream rejects `merge` in objects too: it only exists as a struct tag.
    let e = check_err("$patch: merge in a map", json!({}), json!({"simpleMap": {"$patch": "merge"}}));
    assert!(matches!(e, SmpError::UnknownPatchType { .. }), "{e:?}");

    let e = check_err(
        "unknown $patch in a list element",
        json!({"mergingList": []}),
        json!({"mergingList": [{"name": 1, "$patch": "foo"}]}),
    );
    assert!(matches!(e, SmpError::UnknownPatchType { ref path, .. } if path == "mergingList"), "{e:?}");

    let e = check_err("$patch: merge in a list", json!({}), json!({"mergingList": [{"$patch": "merge"}]}));
    assert_eq!(e, SmpError::MergeDirectiveInList { path: "mergingList".into() });

    let e = check_err(
        "unknown $patch in a non-merging list element",
        json!({}),
        json!({"nonMergingList": [{"$patch": "nope"}]}),
    );
    assert!(matches!(e, SmpError::UnknownPatchType { ref path, .. } if path == "nonMergingList"), "{e:?}");
}

#[test]
fn merge_keys() {
    let e = check_err(
        "missing merge key should error out",
        json!({"mergingList": [{"name": 1, "value": "a"}]}),
        json!({"mergingList": [{"value": "b"}]}),
    );
    assert_eq!(e, SmpError::MissingMergeKey { path: "mergingList".into(), key: "name".into() });
    assert!(e.to_string().contains("does not contain merge key \"name\""), "{e}");

    let e = check_err(
        "delete without merge key",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": [{"$patch": "delete"}]}),
    );
    assert!(matches!(e, SmpError::MissingMergeKey { .. }), "{e:?}");

    let e = check_err("null merge key", json!({}), json!({"mergingList": [{"name": null}]}));
    assert!(matches!(e, SmpError::MissingMergeKey { .. }), "{e:?}");

    let e = check_err(
        "live element without merge key",
        json!({"mergingList": [{"value": 1}]}),
        json!({"mergingList": [{"name": 1}]}),
    );
    assert!(matches!(e, SmpError::MissingMergeKey { .. }), "{e:?}");

    let e = check_err_with(
        &BuiltinMeta::for_kind("Deployment"),
        "the path names the field from the object root",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
    );
    assert_eq!(e.to_string(), r#"list element in spec.template.spec.containers does not contain merge key "name""#);

    let e = check_err_with(
        &BuiltinMeta::for_kind("Pod"),
        "nested merge list",
        json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}),
        json!({"spec": {"containers": [{"name": "a", "env": [{"value": "1"}]}]}}),
    );
    assert_eq!(e, SmpError::MissingMergeKey { path: "spec.containers.env".into(), key: "name".into() });
}

#[test]
fn element_types() {
    let e = check_err("scalars in a list merged by key", json!({}), json!({"mergingList": ["a"]}));
    assert_eq!(e, SmpError::ElementNotObject { path: "mergingList".into(), key: "name".into() });

    let e = check_err(
        "objects in a set of primitives",
        json!({"mergingIntList": [1]}),
        json!({"mergingIntList": [{"a": 1}]}),
    );
    assert!(matches!(e, SmpError::MixedElementTypes { .. }), "{e:?}");
    let e = check_err("only objects in a set of primitives", json!({}), json!({"mergingIntList": [{"a": 1}]}));
    assert_eq!(e, SmpError::ObjectsInPrimitiveList { path: "mergingIntList".into() });

    let e = check_err("mixed scalar types", json!({"mergingIntList": ["a"]}), json!({"mergingIntList": [1]}));
    assert_eq!(e, SmpError::MixedElementTypes { path: "mergingIntList".into() });

    let e = check_err("list of lists", json!({}), json!({"mergingIntList": [[1]]}));
    assert_eq!(e, SmpError::ListOfLists { path: "mergingIntList".into() });
    assert_eq!(e.http_status(), 422);

    // `$patch: replace` is an object, so it cannot sit in a set of strings (upstream too).
    let e = check_err(
        "replace element in a set",
        json!({"mergingIntList": ["a"]}),
        json!({"mergingIntList": ["b", {"$patch": "replace"}]}),
    );
    assert!(matches!(e, SmpError::MixedElementTypes { .. }), "{e:?}");
}

#[test]
fn malformed_directive_keys() {
    for key in [
        "$setElementOrder",
        "$setElementOrder/",
        "$setElementOrderX/mergingList",
        "$deleteFromPrimitiveList",
        "$deleteFromPrimitiveListfoo",
    ] {
        let e = check_err(key, json!({}), json!({ key: [] }));
        assert_eq!(e, SmpError::MalformedDirectiveKey { path: "<root>".into(), key: key.into() }, "{key}");
    }
}

#[test]
fn bad_set_element_order() {
    let e = check_err(
        "not a list",
        json!({"mergingList": [{"name": 1}]}),
        json!({"$setElementOrder/mergingList": {"name": 1}}),
    );
    assert!(
        matches!(e, SmpError::InvalidDirectiveValue { ref directive, .. } if directive == "$setElementOrder/mergingList"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "invalid $setElementOrder/mergingList at mergingList: must be a list");

    let e = check_err(
        "not a list, with the patch list",
        json!({}),
        json!({"$setElementOrder/mergingList": "x", "mergingList": [{"name": 1}]}),
    );
    assert!(matches!(e, SmpError::InvalidDirectiveValue { .. }), "{e:?}");

    let e = check_err(
        "elements without merge key",
        json!({"mergingList": [{"name": 1}]}),
        json!({"$setElementOrder/mergingList": ["a"]}),
    );
    assert!(matches!(e, SmpError::InvalidDirectiveValue { .. }), "{e:?}");

    let e = check_err(
        "ordered field is not a list",
        json!({}),
        json!({"$setElementOrder/simpleMap": [], "simpleMap": {"a": 1}}),
    );
    assert!(matches!(e, SmpError::InvalidDirectiveValue { .. }), "{e:?}");

    let e = check_err(
        "should check if order in $setElementOrder and patch list match",
        json!({"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]}),
        json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}], "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
    );
    assert_eq!(e, SmpError::SetElementOrderMismatch { path: "mergingList".into() });
    assert!(e.to_string().contains("doesn't match"), "{e}");

    let e = check_err(
        "order mismatch in an int list",
        json!({"mergingIntList": [1, 3, 2]}),
        json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
    );
    assert!(matches!(e, SmpError::SetElementOrderMismatch { .. }), "{e:?}");

    let e = check_err(
        "patch item missing from the order",
        json!({}),
        json!({"$setElementOrder/mergingList": [{"name": 1}], "mergingList": [{"name": 1}, {"name": 2}]}),
    );
    assert!(matches!(e, SmpError::SetElementOrderMismatch { .. }), "{e:?}");
}

#[test]
fn bad_delete_from_primitive_list() {
    let e =
        check_err("not a list", json!({"mergingIntList": [1]}), json!({"$deleteFromPrimitiveList/mergingIntList": 1}));
    assert_eq!(e.to_string(), "invalid $deleteFromPrimitiveList/mergingIntList at mergingIntList: must be a list");
    // Malformed even when the list is absent: the patch itself is wrong.
    let e = check_err("objects", json!({}), json!({"$deleteFromPrimitiveList/mergingIntList": [{"a": 1}]}));
    assert!(matches!(e, SmpError::InvalidDirectiveValue { .. }), "{e:?}");
}

#[test]
fn bad_retain_keys() {
    let e = check_err("not a list", json!({}), json!({"retainKeysMap": {"$retainKeys": "name"}}));
    assert_eq!(e.to_string(), "invalid $retainKeys at retainKeysMap: must be a list");
    let e = check_err("not strings", json!({}), json!({"retainKeysMap": {"$retainKeys": [1]}}));
    assert!(matches!(e, SmpError::InvalidDirectiveValue { .. }), "{e:?}");
    let e = check_err(
        "patch sets a key the list would clear",
        json!({"retainKeysMap": {"name": "a"}}),
        json!({"retainKeysMap": {"$retainKeys": ["name"], "value": "b"}}),
    );
    assert_eq!(e, SmpError::RetainKeysMismatch { path: "retainKeysMap".into(), key: "value".into() });
    assert_eq!(e.http_status(), 422);
    assert_eq!(e.to_string(), r#"field "value" at retainKeysMap is not listed in $retainKeys"#);
}

fn nest_objects(depth: usize) -> Value {
    let mut v = json!({"leaf": 1});
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

fn nest_arrays(depth: usize) -> Value {
    let mut v = json!([1]);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

#[test]
fn depth_is_capped() {
    let e = apply(&json!({}), &nest_objects(MAX_DEPTH + 10), &NoMeta).unwrap_err();
    assert!(matches!(e, SmpError::TooDeep { max: MAX_DEPTH, .. }), "{e:?}");
    assert!(e.to_string().starts_with("patch is nested deeper than 100 levels at a.a.a"), "{e}");

    // The same depth in the original as well: merging, not adding.
    let deep = nest_objects(MAX_DEPTH + 10);
    assert!(matches!(apply(&deep, &deep, &NoMeta), Err(SmpError::TooDeep { .. })));

    // Arrays add no path segment but still count.
    let e = apply(&json!({}), &json!({ "x": nest_arrays(1000) }), &NoMeta).unwrap_err();
    assert!(matches!(e, SmpError::TooDeep { .. }), "{e:?}");

    // Just under the cap works.
    let ok = nest_objects(MAX_DEPTH - 5);
    assert_eq!(apply(&json!({}), &ok, &NoMeta).unwrap(), ok);
}

#[test]
fn status_codes() {
    assert_eq!(SmpError::MissingMergeKey { path: "p".into(), key: "k".into() }.http_status(), 400);
    assert_eq!(SmpError::SetElementOrderMismatch { path: "p".into() }.http_status(), 400);
    assert_eq!(SmpError::NotAnObject { what: "patch" }.http_status(), 400);
}
