//! Objects: recursive merge, `null` deletion, `$patch` on objects, type
//! changes, the replace strategy. Cases mirror upstream's patch_test.go
//! (named after them where they correspond) plus our own.

use crate::common::*;
use rkube_core::smp::{NoMeta, apply};
use serde_json::json;

#[test]
fn null_original_and_empty_patch() {
    check("nil original", json!(null), json!({"name": 1, "value": 1}), json!({"name": 1, "value": 1}));
    check("nil patch", json!({"name": 1}), json!({}), json!({"name": 1}));
    check("null patch changes nothing", json!({"name": 1}), json!(null), json!({"name": 1}));
}

#[test]
fn add_change_and_delete_fields() {
    check(
        "add field to map",
        json!({"name": 1, "other": "a"}),
        json!({"value": 1}),
        json!({"name": 1, "value": 1, "other": "a"}),
    );
    check(
        "change a field",
        json!({"name": "a", "other": "a"}),
        json!({"name": 1, "value": 1}),
        json!({"name": 1, "value": 1, "other": "a"}),
    );
    check(
        "add field and delete field from map",
        json!({"name": 1, "other": "a"}),
        json!({"name": null, "value": 1}),
        json!({"value": 1, "other": "a"}),
    );
    check(
        "delete all fields from map",
        json!({"name": 1, "value": 1, "other": "a"}),
        json!({"name": null, "value": null}),
        json!({"other": "a"}),
    );
    check(
        "defined null values only delete what exists",
        json!({"name": "a", "other": "a"}),
        json!({"name": 1, "value": 1, "other": null}),
        json!({"name": 1, "value": 1}),
    );
    check("null for an absent key is ignored", json!({"name": 1}), json!({"value": null}), json!({"name": 1}));
}

#[test]
fn nested_maps_merge_recursively() {
    check(
        "delete field from nested map",
        json!({"simpleMap": {"key1": 1, "key2": 1, "other": "a"}}),
        json!({"simpleMap": {"key2": null}}),
        json!({"simpleMap": {"key1": 1, "other": "a"}}),
    );
    check(
        "deep merge",
        json!({"a": {"b": {"c": 1, "d": 2}, "e": 3}}),
        json!({"a": {"b": {"c": 10, "x": {"y": true}}}}),
        json!({"a": {"b": {"c": 10, "d": 2, "x": {"y": true}}, "e": 3}}),
    );
    check(
        "empty object patch keeps the object",
        json!({"simpleMap": {"a": "1"}}),
        json!({"simpleMap": {}}),
        json!({"simpleMap": {"a": "1"}}),
    );
    check("empty object is added when absent", json!({}), json!({"simpleMap": {}}), json!({"simpleMap": {}}));
    check(
        "whole nested map deleted by null",
        json!({"simpleMap": {"a": "1"}, "name": "x"}),
        json!({"simpleMap": null}),
        json!({"name": "x"}),
    );
}

#[test]
fn nulls_inside_added_values_are_dropped() {
    // Upstream's TestUnknownField cases: where there is nothing to merge with,
    // nulls in the patch must not end up in the object.
    check(
        "discard nulls in nested and adds not nulls",
        json!({"name": "foo"}),
        json!({"complex_nullable": {"key": {"keynotnull": "value", "keynull": null}}}),
        json!({"name": "foo", "complex_nullable": {"key": {"keynotnull": "value"}}}),
    );
    check("discard if modified all nulls", json!({}), json!({"complex": {"nested": null}}), json!({"complex": {}}));
    check(
        "filter nulls from nested slices",
        json!({}),
        json!({"complex_nullable": [{"inner_one": {"key_one": "foo", "key_two": null}}]}),
        json!({"complex_nullable": [{"inner_one": {"key_one": "foo"}}]}),
    );
    check(
        "not filter nulls from non-associative slice",
        json!({}),
        json!({"complex_nullable": ["key1", null, "key2"]}),
        json!({"complex_nullable": ["key1", null, "key2"]}),
    );
    check(
        "null values in original are preserved",
        json!({"complex": {"key": null}, "thing": null}),
        json!({"nested": {"value": 5}}),
        json!({"complex": {"key": null}, "nested": {"value": 5}, "thing": null}),
    );
    check(
        "null in a replaced type change is dropped",
        json!({"thing": "scalar"}),
        json!({"thing": {"a": null, "b": 1}}),
        json!({"thing": {"b": 1}}),
    );
}

#[test]
fn patch_replace_on_objects() {
    check("delete all keys from map", json!({"name": 1, "value": 1}), json!({"$patch": "replace"}), json!({}));
    check(
        "add key and delete all keys from map",
        json!({"name": 1, "value": 1}),
        json!({"other": "a", "$patch": "replace"}),
        json!({"other": "a"}),
    );
    check(
        "replace a nested map",
        json!({"simpleMap": {"key1": "1", "key2": "2"}, "name": "n"}),
        json!({"simpleMap": {"$patch": "replace", "key3": "3"}}),
        json!({"simpleMap": {"key3": "3"}, "name": "n"}),
    );
    check(
        "replacement content is cleaned of directives and nulls",
        json!({"simpleMap": {"key1": "1"}}),
        json!({"simpleMap": {"$patch": "replace", "gone": null, "inner": {"$patch": "delete"}, "list": [{"x": 1, "$patch": "delete"}, {"y": 2}]}}),
        json!({"simpleMap": {"list": [{"y": 2}]}}),
    );
    check(
        "replace an absent map adds its content",
        json!({}),
        json!({"simpleMap": {"$patch": "replace", "a": "1"}}),
        json!({"simpleMap": {"a": "1"}}),
    );
    check(
        "merge lists inside a replaced map start from nothing",
        json!({"retainKeysMap": {"mergingList": [{"name": "a"}], "name": "x"}}),
        json!({"retainKeysMap": {"$patch": "replace", "mergingList": [{"name": "b"}]}}),
        json!({"retainKeysMap": {"mergingList": [{"name": "b"}]}}),
    );
}

#[test]
fn patch_delete_on_objects() {
    check(
        "delete map from nested map",
        json!({"simpleMap": {"key1": 1, "key2": 1}, "name": "n"}),
        json!({"simpleMap": {"$patch": "delete"}}),
        json!({"name": "n"}),
    );
    check(
        "delete ignores the rest of the map",
        json!({"simpleMap": {"key1": 1}}),
        json!({"simpleMap": {"$patch": "delete", "key2": 2}}),
        json!({}),
    );
    check(
        "deleting an absent map adds nothing",
        json!({"name": 1}),
        json!({"simpleMap": {"$patch": "delete"}}),
        json!({"name": 1}),
    );
    check("delete at the top leaves an empty object", json!({"name": 1}), json!({"$patch": "delete"}), json!({}));
    check(
        "delete a map nested in a merging list element",
        json!({"mergingList": [{"name": "a", "retainKeysMap": {"name": "x"}, "value": "v"}]}),
        json!({"mergingList": [{"name": "a", "retainKeysMap": {"$patch": "delete"}}]}),
        json!({"mergingList": [{"name": "a", "value": "v"}]}),
    );
}

#[test]
fn type_changes_replace() {
    check("scalar becomes map", json!({"name": "x"}), json!({"name": {"a": 1}}), json!({"name": {"a": 1}}));
    check(
        "map becomes scalar",
        json!({"simpleMap": {"a": 1}}),
        json!({"simpleMap": "flat"}),
        json!({"simpleMap": "flat"}),
    );
    check(
        "map becomes list",
        json!({"simpleMap": {"a": 1}}),
        json!({"simpleMap": [1, 2]}),
        json!({"simpleMap": [1, 2]}),
    );
    check(
        "list becomes map",
        json!({"nonMergingList": [{"name": 1}]}),
        json!({"nonMergingList": {"x": 1}}),
        json!({"nonMergingList": {"x": 1}}),
    );
    // A merging list given an object: upstream replaces too (the decoder then
    // rejects the object if the field must be a list).
    check(
        "merging list given an object",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": {"name": 2}}),
        json!({"mergingList": {"name": 2}}),
    );
    check("scalar to null-valued key", json!({"name": null}), json!({"name": "x"}), json!({"name": "x"}));
    check("number to bool", json!({"value": 1}), json!({"value": true}), json!({"value": true}));
}

#[test]
fn replace_strategy_replaces_objects() {
    check(
        "replace RawExtension field, rest unchanged",
        json!({"name": "my-object", "other": "current-other", "replacingItem": {"Some": "Generic", "Yaml": "Inside", "Field": "Period"}}),
        json!({"replacingItem": {"Newly": "Modified", "Yaml": "Inside"}}),
        json!({"name": "my-object", "other": "current-other", "replacingItem": {"Newly": "Modified", "Yaml": "Inside"}}),
    );
    check(
        "replace RawExtension field and merge list",
        json!({"mergingList": [{"name": 1}, {"name": 3}], "replacingItem": {"Some": "Generic"}}),
        json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}], "mergingList": [{"name": 2}], "replacingItem": {"Newly": "Modified"}}),
        json!({"mergingList": [{"name": 1}, {"name": 2}, {"name": 3}], "replacingItem": {"Newly": "Modified"}}),
    );
    check(
        "replaced value is cleaned",
        json!({"replacingItem": {"a": 1}}),
        json!({"replacingItem": {"b": null, "c": {"$patch": "delete"}, "d": 4}}),
        json!({"replacingItem": {"d": 4}}),
    );
}

#[test]
fn dollar_keys_that_are_not_directives_are_data() {
    // A CRD's OpenAPI schema has `$ref` and `$schema` properties; only the four
    // directive names are special.
    check(
        "$ref and $schema merge like any key",
        json!({"schema": {"$ref": "#/a", "type": "object"}}),
        json!({"schema": {"$ref": "#/b", "$schema": "http://json-schema.org/draft-04/schema#"}}),
        json!({"schema": {"$ref": "#/b", "$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}}),
    );
    check(
        "$ref can be deleted by null",
        json!({"s": {"$ref": "#/a", "x": 1}}),
        json!({"s": {"$ref": null}}),
        json!({"s": {"x": 1}}),
    );
    check("$patchX is not $patch", json!({}), json!({"$patchX": "delete"}), json!({"$patchX": "delete"}));
}

#[test]
fn original_is_not_modified_and_errors_on_non_objects() {
    let original = json!({"mergingList": [{"name": "a", "value": 1}], "simpleMap": {"k": "v"}});
    let copy = original.clone();
    let _ = apply(&original, &json!({"mergingList": [{"name": "a", "value": 2}], "simpleMap": null}), &item_meta);
    assert_eq!(original, copy);

    assert!(apply(&json!([1]), &json!({}), &NoMeta).is_err());
    assert!(apply(&json!({}), &json!([1]), &NoMeta).is_err());
    assert!(apply(&json!({}), &json!("x"), &NoMeta).is_err());
    assert_eq!(apply(&json!({}), &json!([]), &NoMeta).unwrap_err().to_string(), "patch must be a json object");
}

#[test]
fn no_meta_behaves_like_json_merge_patch_for_lists() {
    check_with(
        &NoMeta,
        "lists are replaced without metadata",
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {"containers": [{"name": "c"}]}}),
        json!({"spec": {"containers": [{"name": "c"}]}}),
    );
}
