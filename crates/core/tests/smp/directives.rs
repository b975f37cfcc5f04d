//! Parallel-list and key directives: `$setElementOrder/<field>`,
//! `$deleteFromPrimitiveList/<field>`, `$retainKeys`. Cases mirror upstream's
//! patch_test.go ("2-way" cases apply the patch to kubectl's last-applied
//! original, "3-way" ones to a live object with server-side additions).

use crate::common::*;
use serde_json::{Value, json};

fn list(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({ "name": n })).collect())
}

#[test]
fn set_element_order_on_merging_lists() {
    check(
        "add an item in a list and preserve order",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 1}, {"name": 2}], "mergingList": [{"name": 3, "value": 3}]}),
        json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
    );
    check(
        "add multiple items in a list and preserve order",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 4}, {"name": 2}, {"name": 3}],
               "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]}),
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "value": 4}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
    );
    check(
        "delete an item in a list and preserve order",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
        json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}], "mergingList": [{"name": 3, "$patch": "delete"}]}),
        json!({"mergingList": [{"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}]}),
    );
    check(
        "change an item in a list and preserve order",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
        json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}, {"name": 1}], "mergingList": [{"name": 3, "value": "x"}]}),
        json!({"mergingList": [{"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": "x"}, {"name": 1, "other": "a"}]}),
    );
    check(
        "add and delete an item in a list and preserve order",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
        json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
               "mergingList": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}]}),
        json!({"mergingList": [{"name": 4, "value": 4}, {"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}]}),
    );
    check(
        "nested patch merge with empty list: the patch item goes before the server-only one",
        json!({"name": "hi", "mergingList": [{"name": "hello2"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "hello"}, {"name": "doesntexist"}], "mergingList": [{"name": "hello"}]}),
        json!({"name": "hi", "mergingList": [{"name": "hello"}, {"name": "hello2"}]}),
    );
    check(
        "$setElementOrder contains item that is not present in the list to be merged",
        json!({"mergingList": [{"name": 1}, {"name": 3}]}),
        json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
               "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
    );
    check(
        "order for a list the object did not have",
        json!({}),
        json!({"$setElementOrder/mergingList": [{"name": "c"}, {"name": "b"}, {"name": "a"}], "mergingList": [{"name": "b"}, {"name": "a", "value": null}]}),
        json!({"mergingList": [{"name": "b"}, {"name": "a"}]}),
    );
}

#[test]
fn set_element_order_alone_reorders() {
    check(
        "set elements order in a list",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 3, "value": 3}, {"name": 4, "value": 4}, {"name": 2, "value": 2}]}),
        json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}]}),
        json!({"mergingList": [{"name": 4, "value": 4}, {"name": 2, "value": 2}, {"name": 3, "value": 3}, {"name": 1, "other": "a"}]}),
    );
    check(
        "set elements order in a list with server-only items",
        json!({"mergingList": list(&["1", "3", "4", "2", "9"])}),
        json!({"$setElementOrder/mergingList": list(&["4", "2", "3", "1"])}),
        json!({"mergingList": list(&["4", "2", "3", "1", "9"])}),
    );
    check(
        "set elements order in a list with server-only items 2",
        json!({"mergingList": list(&["1", "2", "9", "3", "4"])}),
        json!({"$setElementOrder/mergingList": list(&["2", "1", "4", "3"])}),
        json!({"mergingList": list(&["2", "1", "9", "4", "3"])}),
    );
    check(
        "set elements order in a list with server-only items 3",
        json!({"mergingList": list(&["1", "2", "7", "9", "8", "3", "4"])}),
        json!({"$setElementOrder/mergingList": list(&["2", "1", "4", "3"])}),
        json!({"mergingList": list(&["2", "1", "7", "9", "8", "4", "3"])}),
    );
    check(
        "behavior of set element order for a merging list with duplicate",
        json!({"mergingList": [{"name": 1}, {"name": 2, "value": "dup1"}, {"name": 3}, {"name": 2, "value": "dup2"}, {"name": 4}]}),
        json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}, {"name": 2}]}),
        json!({"mergingList": [{"name": 2, "value": "dup1"}, {"name": 2, "value": "dup2"}, {"name": 1}, {"name": 4}, {"name": 3}]}),
    );
    check(
        "delete and reorder in one list, reorder in another",
        json!({"mergingList": [{"name": "a", "value": "a"}, {"name": "b", "value": "b"}],
               "mergeItemPtr": [{"name": "c", "value": "c"}, {"name": "d", "value": "d"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "b"}], "$setElementOrder/mergeItemPtr": [{"name": "d"}, {"name": "c"}],
               "mergingList": [{"$patch": "delete", "name": "a"}]}),
        json!({"mergingList": [{"name": "b", "value": "b"}], "mergeItemPtr": [{"name": "d", "value": "d"}, {"name": "c", "value": "c"}]}),
    );
    check(
        "order for a list the patch deletes is ignored",
        json!({"mergingList": list(&["a", "b"]), "name": 1}),
        json!({"$setElementOrder/mergingList": list(&["b", "a"]), "mergingList": null}),
        json!({"name": 1}),
    );
    check(
        "order for an absent list adds nothing",
        json!({"name": 1}),
        json!({"$setElementOrder/mergingList": list(&["a"])}),
        json!({"name": 1}),
    );
    check(
        "non-merging lists can be reordered too",
        json!({"nonMergingIntList": [1, 2, 3]}),
        json!({"$setElementOrder/nonMergingIntList": [3, 2, 1]}),
        json!({"nonMergingIntList": [3, 2, 1]}),
    );
}

#[test]
fn set_element_order_on_primitive_lists() {
    check(
        "add an item in a list of primitives and preserve order",
        json!({"mergingIntList": [1, 4, 2]}),
        json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
        json!({"mergingIntList": [3, 1, 4, 2]}),
    );
    check(
        "add multiple items in a int list and preserve order",
        json!({"mergingIntList": [1, 2]}),
        json!({"$setElementOrder/mergingIntList": [1, 4, 2, 3], "mergingIntList": [4, 3]}),
        json!({"mergingIntList": [1, 4, 2, 3]}),
    );
    check(
        "delete an item in a int list and preserve order",
        json!({"mergingIntList": [1, 2, 3]}),
        json!({"$setElementOrder/mergingIntList": [2, 1], "$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"mergingIntList": [2, 1]}),
    );
    check(
        "add and delete an item in a int list and preserve order",
        json!({"mergingIntList": [1, 2, 3]}),
        json!({"$setElementOrder/mergingIntList": [4, 2, 1], "mergingIntList": [4], "$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"mergingIntList": [4, 2, 1]}),
    );
    check(
        "set elements order in a int list with server-only items 3",
        json!({"mergingIntList": [1, 2, 7, 9, 8, 3, 4]}),
        json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3]}),
        json!({"mergingIntList": [2, 1, 7, 9, 8, 4, 3]}),
    );
    check(
        "$setElementOrder contains item that is not present in the int list to be merged",
        json!({"mergingIntList": [1, 3]}),
        json!({"$setElementOrder/mergingIntList": [3, 2, 1]}),
        json!({"mergingIntList": [3, 1]}),
    );
    check(
        "behavior of set element order for a merging int list with duplicate",
        json!({"mergingIntList": [1, 2, 3, 2, 4]}),
        json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3, 2]}),
        json!({"mergingIntList": [2, 2, 1, 4, 3]}),
    );
}

#[test]
fn design_doc_examples_as_upstream_computes_them() {
    // The preserve-order design document's examples, with the results upstream's
    // code gives (the document predicts slightly different interleavings).
    check(
        "env with server-added entries",
        json!({"mergingList": [{"name": "ENV2", "value": "bar"}, {"name": "ENV5", "value": "server-added-2"}, {"name": "ENV1", "value": "foo"},
                       {"name": "ENV3", "value": "baz"}, {"name": "ENV4", "value": "server-added-1"}]}),
        json!({"$setElementOrder/mergingList": [{"name": "ENV1"}, {"name": "ENV2"}, {"name": "ENV6"}],
               "mergingList": [{"name": "ENV3", "$patch": "delete"}, {"name": "ENV6", "value": "new-env"}]}),
        json!({"mergingList": [{"name": "ENV5", "value": "server-added-2"}, {"name": "ENV1", "value": "foo"}, {"name": "ENV2", "value": "bar"},
                       {"name": "ENV4", "value": "server-added-1"}, {"name": "ENV6", "value": "new-env"}]}),
    );
    check(
        "finalizers with server-added entries",
        json!({"mergingIntList": ["b", "e", "a", "c", "d"]}),
        json!({"$setElementOrder/mergingIntList": ["a", "b", "f"], "$deleteFromPrimitiveList/mergingIntList": ["c"], "mergingIntList": ["f"]}),
        json!({"mergingIntList": ["e", "a", "b", "f", "d"]}),
    );
}

#[test]
fn delete_from_primitive_list() {
    check(
        "delete items in lists of scalars",
        json!({"mergingIntList": [1, 2, 3, 4]}),
        json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"mergingIntList": [1, 2, 4]}),
    );
    check(
        "delete all duplicate items in lists of scalars",
        json!({"mergingIntList": [1, 2, 3, 3, 4]}),
        json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"mergingIntList": [1, 2, 4]}),
    );
    check(
        "$deleteFromPrimitiveList of nonexistent item in primitive list should not add the item to the list",
        json!({"mergingIntList": [1, 2]}),
        json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"mergingIntList": [1, 2]}),
    );
    check(
        "$deleteFromPrimitiveList on empty primitive list should not add the item to the list",
        json!({"mergingIntList": null}),
        json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"mergingIntList": null}),
    );
    check(
        "$deleteFromPrimitiveList on nonexistent primitive list should not add the primitive list",
        json!({"foo": ["bar"]}),
        json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
        json!({"foo": ["bar"]}),
    );
    check(
        "$deleteFromPrimitiveList should delete item from a list without merge patch strategy",
        json!({"nonMergingIntList": [1, 2, 3]}),
        json!({"$deleteFromPrimitiveList/nonMergingIntList": [2]}),
        json!({"nonMergingIntList": [1, 3]}),
    );
    check(
        "delete by numeric value",
        json!({"mergingIntList": [1, 2]}),
        json!({"$deleteFromPrimitiveList/mergingIntList": [2.0]}),
        json!({"mergingIntList": [1]}),
    );
    check(
        "delete wins over add of the same value",
        json!({"mergingIntList": ["a"]}),
        json!({"mergingIntList": ["b"], "$deleteFromPrimitiveList/mergingIntList": ["b"]}),
        json!({"mergingIntList": ["a"]}),
    );
    check(
        "nested in a merging list element",
        json!({"mergingList": [{"name": "x", "mergingIntList": [1, 2]}]}),
        json!({"mergingList": [{"name": "x", "$deleteFromPrimitiveList/mergingIntList": [1]}]}),
        json!({"mergingList": [{"name": "x", "mergingIntList": [2]}]}),
    );
}

#[test]
fn retain_keys_on_maps() {
    check(
        "retainKeys map should clear defaulted field",
        json!({"retainKeysMap": {"value": "foo"}}),
        json!({"retainKeysMap": {"$retainKeys": ["other"], "other": "bar"}}),
        json!({"retainKeysMap": {"other": "bar"}}),
    );
    check(
        "retainKeys map should clear defaulted field with conflict (discriminated union)",
        json!({"retainKeysMap": {"name": "type1", "value": "foo"}}),
        json!({"retainKeysMap": {"$retainKeys": ["name", "other"], "name": "type2", "other": "bar"}}),
        json!({"retainKeysMap": {"name": "type2", "other": "bar"}}),
    );
    check(
        "retainKeys map adds a field and clear a field",
        json!({"retainKeysMap": {"name": "foo", "other": "a"}}),
        json!({"retainKeysMap": {"$retainKeys": ["name", "value"], "value": "bar"}}),
        json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
    );
    check(
        "retainKeys map deletes a field and clears a field",
        json!({"retainKeysMap": {"name": "foo", "value": "bar", "other": "a"}}),
        json!({"retainKeysMap": {"$retainKeys": ["name"], "value": null}}),
        json!({"retainKeysMap": {"name": "foo"}}),
    );
    check(
        "retainKeys map deletes a field in a nested map",
        json!({"retainKeysMap": {"name": "foo", "value": "bar", "simpleMap": {"key1": "a", "key2": "b", "key3": "c"}}}),
        json!({"retainKeysMap": {"$retainKeys": ["name", "simpleMap", "value"], "simpleMap": {"key2": null}}}),
        json!({"retainKeysMap": {"name": "foo", "value": "bar", "simpleMap": {"key1": "a", "key3": "c"}}}),
    );
    check(
        "retainKeys map adds an item and deletes an item in nested merging int list",
        json!({"retainKeysMap": {"name": "foo", "mergingIntList": [1, 2, 3, 4]}}),
        json!({"retainKeysMap": {"$retainKeys": ["mergingIntList", "name"], "mergingIntList": [5],
               "$deleteFromPrimitiveList/mergingIntList": [2], "$setElementOrder/mergingIntList": [1, 3, 5]}}),
        json!({"retainKeysMap": {"name": "foo", "mergingIntList": [1, 3, 5, 4]}}),
    );
    check(
        "retainKeys map changes an item in nested merging list",
        json!({"retainKeysMap": {"name": "foo", "mergingList": [{"name": "a"}, {"name": "b", "value": "foo"}, {"name": "x"}]}}),
        json!({"retainKeysMap": {"$retainKeys": ["mergingList", "name"], "$setElementOrder/mergingList": [{"name": "a"}, {"name": "b"}],
               "mergingList": [{"name": "b", "value": "bar"}]}}),
        json!({"retainKeysMap": {"name": "foo", "mergingList": [{"name": "a"}, {"name": "b", "value": "bar"}, {"name": "x"}]}}),
    );
    check(
        "retainKeys map deletes nested merging list",
        json!({"retainKeysMap": {"name": "foo", "mergingList": [{"name": "a"}, {"name": "b"}]}}),
        json!({"retainKeysMap": {"$retainKeys": ["name", "value"], "value": "bar", "mergingList": null}}),
        json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
    );
    check(
        "retainKeys map can add a field when no retainKeys directive present",
        json!({"retainKeysMap": {"name": "foo"}}),
        json!({"retainKeysMap": {"value": "bar"}}),
        json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
    );
    check(
        "empty $retainKeys clears everything",
        json!({"retainKeysMap": {"name": "foo"}}),
        json!({"retainKeysMap": {"$retainKeys": []}}),
        json!({"retainKeysMap": {}}),
    );
    check(
        "$retainKeys applies where the field has no retainKeys strategy too (as upstream)",
        json!({"simpleMap": {"a": "1", "b": "2"}}),
        json!({"simpleMap": {"$retainKeys": ["a"]}}),
        json!({"simpleMap": {"a": "1"}}),
    );
    check(
        "$retainKeys in a new map is dropped",
        json!({}),
        json!({"retainKeysMap": {"$retainKeys": ["name"], "name": "x"}}),
        json!({"retainKeysMap": {"name": "x"}}),
    );
}

#[test]
fn retain_keys_on_merging_list_elements() {
    check(
        "retainKeys list of maps clears a field",
        json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a", "other": "x"}]}),
        json!({"$setElementOrder/retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}],
               "retainKeysMergingList": [{"$retainKeys": ["name", "value"], "name": "foo"}]}),
        json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
    );
    check(
        "retainKeys list of maps changes a field and clear a field",
        json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "new", "other": "x"}]}),
        json!({"$setElementOrder/retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}],
               "retainKeysMergingList": [{"$retainKeys": ["name", "value"], "name": "foo", "value": "modified"}]}),
        json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "modified"}]}),
    );
    check(
        "retainKeys list of maps deletes a field",
        json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
        json!({"$setElementOrder/retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}],
               "retainKeysMergingList": [{"$retainKeys": ["name"], "name": "foo", "value": null}]}),
        json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}]}),
    );
}
