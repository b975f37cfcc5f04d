//! Lists: replaced without strategy, merged by key, merged as sets, with
//! `$patch` elements, and the order of merged elements without
//! `$setElementOrder`. Cases mirror upstream's patch_test.go plus our own.

use crate::common::*;
use serde_json::json;

#[test]
fn lists_without_strategy_are_replaced() {
    check(
        "replace list of scalars",
        json!({"nonMergingIntList": [1, 2]}),
        json!({"nonMergingIntList": [2, 3]}),
        json!({"nonMergingIntList": [2, 3]}),
    );
    check(
        "replace list of maps",
        json!({"nonMergingList": [{"name": 1}, {"name": 2}]}),
        json!({"nonMergingList": [{"name": 3}]}),
        json!({"nonMergingList": [{"name": 3}]}),
    );
    check(
        "replace with empty list",
        json!({"nonMergingList": [{"name": 1}]}),
        json!({"nonMergingList": []}),
        json!({"nonMergingList": []}),
    );
    check(
        "add empty slices",
        json!({"name": "foo"}),
        json!({"complex_nullable": []}),
        json!({"name": "foo", "complex_nullable": []}),
    );
    check(
        "replace non merging list nested in merging list",
        json!({"mergingList": [{"name": 1, "nonMergingList": [{"name": 1}, {"name": 2, "value": 2}]}, {"name": 2}]}),
        json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}], "mergingList": [{"name": 1, "nonMergingList": [{"name": 1, "value": 1}]}]}),
        json!({"mergingList": [{"name": 1, "nonMergingList": [{"name": 1, "value": 1}]}, {"name": 2}]}),
    );
    check(
        "elements of a replaced list are cleaned",
        json!({"nonMergingList": [{"name": 0}]}),
        json!({"nonMergingList": [{"name": 1, "value": null}, {"name": 2, "$patch": "delete"}, {"name": 3, "mergingList": [{"name": "x", "$patch": "delete"}, {"name": "y"}]}]}),
        json!({"nonMergingList": [{"name": 1}, {"name": 3, "mergingList": [{"name": "y"}]}]}),
    );
}

#[test]
fn merging_lists_of_maps() {
    check(
        "merge lists of maps",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}], "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]}),
        json!({"mergingList": [{"name": 4, "value": 4}, {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
    );
    check(
        "add field to map in merging list",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        json!({"mergingList": [{"name": 1, "value": 1}]}),
        json!({"mergingList": [{"name": 1, "value": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
    );
    check(
        "replace map field value in merging list",
        json!({"mergingList": [{"name": 1, "value": 1, "other": "a"}, {"name": 2, "value": 2}]}),
        json!({"mergingList": [{"name": 1, "value": "a"}]}),
        json!({"mergingList": [{"name": 1, "value": "a", "other": "a"}, {"name": 2, "value": 2}]}),
    );
    check(
        "delete field from map in merging list",
        json!({"mergingList": [{"name": 1, "value": 1, "other": "a"}, {"name": 2, "value": 2}]}),
        json!({"mergingList": [{"name": 1, "value": null}]}),
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}]}),
    );
    check(
        "add an item that already exists in current object in merging list",
        json!({"mergingList": [{"name": 1, "value": "a"}, {"name": 2}, {"name": 3}]}),
        json!({"mergingList": [{"name": 3}]}),
        json!({"mergingList": [{"name": 1, "value": "a"}, {"name": 2}, {"name": 3}]}),
    );
    check(
        "add map to merging list by pointer",
        json!({"mergeItemPtr": [{"name": 1, "other": "a"}, {"name": 3}]}),
        json!({"$setElementOrder/mergeItemPtr": [{"name": 1}, {"name": 2}], "mergeItemPtr": [{"name": 2}]}),
        json!({"mergeItemPtr": [{"name": 1, "other": "a"}, {"name": 2}, {"name": 3}]}),
    );
    check(
        "add field to map in merging list nested in merging list",
        json!({"mergingList": [{"name": 1, "mergingList": [{"name": 1}, {"name": 2, "value": 2}]}, {"name": 2}]}),
        json!({"mergingList": [{"name": 1, "mergingList": [{"name": 1, "value": 1}]}]}),
        json!({"mergingList": [{"name": 1, "mergingList": [{"name": 1, "value": 1}, {"name": 2, "value": 2}]}, {"name": 2}]}),
    );
    check(
        "merge into an absent list adds it",
        json!({"name": "hi"}),
        json!({"mergingList": [{"name": "hello", "value": null}, {"$patch": "delete", "name": "doesntexist"}]}),
        json!({"name": "hi", "mergingList": [{"name": "hello"}]}),
    );
    check(
        "merge empty merging lists",
        json!({"mergingList": []}),
        json!({"mergingList": []}),
        json!({"mergingList": []}),
    );
    check(
        "empty patch list keeps the list",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": []}),
        json!({"mergingList": [{"name": 1}]}),
    );
    check(
        "a key repeated in the patch merges into one element",
        json!({"mergingList": [{"name": "a"}]}),
        json!({"mergingList": [{"name": "b", "value": 1}, {"name": "b", "other": 2}]}),
        json!({"mergingList": [{"name": "b", "value": 1, "other": 2}, {"name": "a"}]}),
    );
    check(
        "merge keys compare numerically",
        json!({"mergingList": [{"name": 80, "value": "a"}]}),
        json!({"mergingList": [{"name": 80.0, "other": "b"}]}),
        json!({"mergingList": [{"name": 80.0, "value": "a", "other": "b"}]}),
    );
}

#[test]
fn patch_elements_in_merging_lists() {
    check(
        "delete map from merging list",
        json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "other": "b"}]}),
        json!({"mergingList": [{"name": 1, "$patch": "delete"}]}),
        json!({"mergingList": [{"name": 2, "other": "b"}]}),
    );
    check(
        "delete missing map from merging list",
        json!({"mergingList": [{"name": 2}]}),
        json!({"mergingList": [{"name": 1, "$patch": "delete"}]}),
        json!({"mergingList": [{"name": 2}]}),
    );
    check(
        "delete all maps from merging list",
        json!({"mergingList": [{"name": 1}, {"name": 2}]}),
        json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "$patch": "delete"}]}),
        json!({"mergingList": []}),
    );
    check(
        "delete all duplicate entries in a merging list",
        json!({"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]}),
        json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}),
        json!({"mergingList": [{"name": 2, "value": "a"}]}),
    );
    check(
        "add map and delete map from merging list",
        json!({"mergingList": [{"name": 1}, {"name": 2, "other": "b"}, {"name": 4, "other": "c"}]}),
        json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}], "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]}),
        json!({"mergingList": [{"name": 2, "other": "b"}, {"name": 4, "other": "c"}, {"name": 3}]}),
    );
    check(
        "delete all items from merging list",
        json!({"mergingList": [{"name": 1}, {"name": 2}]}),
        json!({"mergingList": [{"$patch": "replace"}]}),
        json!({"mergingList": []}),
    );
    check(
        "replace a merging list",
        json!({"mergingList": [{"name": 1, "value": 1}, {"name": 2}]}),
        json!({"mergingList": [{"name": 3, "value": null}, {"name": 1}, {"$patch": "replace"}]}),
        json!({"mergingList": [{"name": 3}, {"name": 1}]}),
    );
    check(
        "replace ignores deletions in the same list",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": [{"$patch": "replace"}, {"name": 1, "$patch": "delete"}, {"name": 2}]}),
        json!({"mergingList": [{"name": 2}]}),
    );
}

#[test]
fn merging_lists_of_primitives() {
    check(
        "unique scalars when merging lists",
        json!({"mergingIntList": [1, 2]}),
        json!({"mergingIntList": [2, 3]}),
        json!({"mergingIntList": [1, 2, 3]}),
    );
    check(
        "merge lists of scalars",
        json!({"mergingIntList": [1, 2]}),
        json!({"mergingIntList": [3]}),
        json!({"mergingIntList": [3, 1, 2]}),
    );
    check(
        "preserve the order from the patch in a merging int list",
        json!({"mergingIntList": [1, 2, 3]}),
        json!({"mergingIntList": [3, 1, 2]}),
        json!({"mergingIntList": [3, 1, 2]}),
    );
    check(
        "preserve the order from the patch in a merging int list 2",
        json!({"mergingIntList": [1, 2, 3]}),
        json!({"mergingIntList": [3, 1]}),
        json!({"mergingIntList": [2, 3, 1]}),
    );
    check(
        "duplicates in the patch collapse",
        json!({"mergingIntList": [1]}),
        json!({"mergingIntList": [2, 2, 1]}),
        json!({"mergingIntList": [2, 1]}),
    );
    check(
        "set of strings",
        json!({"mergingIntList": ["a", "b"]}),
        json!({"mergingIntList": ["c", "a"]}),
        json!({"mergingIntList": ["c", "a", "b"]}),
    );
    check(
        "numbers compare by value",
        json!({"mergingIntList": [1, 2]}),
        json!({"mergingIntList": [2.0]}),
        json!({"mergingIntList": [1, 2.0]}),
    );
    check("set added where absent", json!({}), json!({"mergingIntList": [3, 3, 1]}), json!({"mergingIntList": [3, 1]}));
    check(
        "empty set patch keeps the set",
        json!({"mergingIntList": [1]}),
        json!({"mergingIntList": []}),
        json!({"mergingIntList": [1]}),
    );
}

#[test]
fn order_without_set_element_order() {
    // Elements named by the patch follow the patch; new ones go before the
    // remaining live-only elements (upstream's interleave), live-only elements
    // keep their order.
    check(
        "new element goes first",
        json!({"mergingList": [{"name": "a"}, {"name": "b"}]}),
        json!({"mergingList": [{"name": "c"}]}),
        json!({"mergingList": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}),
    );
    check(
        "preserve the order from the patch in a merging list",
        json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
        json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "other": "x"}]}),
        json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "value": "b", "other": "x"}]}),
    );
    check(
        "preserve the order from the patch in a merging list 2",
        json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
        json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
        json!({"mergingList": [{"name": 2, "value": "b"}, {"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
    );
    check(
        "design doc example: server-only item comes first",
        json!({"mergingList": [{"name": "B"}, {"name": "C"}, {"name": "A"}]}),
        json!({"mergingList": [{"name": "A", "value": 1}, {"name": "B", "value": 2}, {"name": "D"}]}),
        json!({"mergingList": [{"name": "C"}, {"name": "A", "value": 1}, {"name": "B", "value": 2}, {"name": "D"}]}),
    );
    check(
        "updating one element in place keeps its position",
        json!({"mergingList": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
        json!({"mergingList": [{"name": "b", "value": 1}]}),
        json!({"mergingList": [{"name": "a"}, {"name": "b", "value": 1}, {"name": "c"}]}),
    );
}

#[test]
fn large_lists_stay_fast() {
    // 100,000 live entries, a patch touching every other one with a full
    // $setElementOrder reversing them: hash lookups keep this linear. (A quadratic
    // merge took minutes at this size; the bound only catches that.)
    let n = 100_000;
    let live: Vec<_> = (0..n).map(|i| json!({"name": format!("E{i}"), "value": "old"})).collect();
    let patch_items: Vec<_> =
        (0..n).rev().step_by(2).map(|i| json!({"name": format!("E{i}"), "value": "new"})).collect();
    let order: Vec<_> = (0..n).rev().map(|i| json!({"name": format!("E{i}")})).collect();
    let started = std::time::Instant::now();
    let out = rkube_core::smp::apply(
        &json!({"mergingList": live}),
        &json!({"$setElementOrder/mergingList": order, "mergingList": patch_items}),
        &item_meta,
    )
    .unwrap();
    let list = out["mergingList"].as_array().unwrap();
    assert_eq!(list.len(), n);
    assert_eq!(list[0], json!({"name": format!("E{}", n - 1), "value": "new"}));
    assert_eq!(list[1], json!({"name": format!("E{}", n - 2), "value": "old"}));
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
}

#[test]
fn large_sets_and_deletions_stay_fast() {
    // The shape of a hostile patch: a set of 200,000 finalizers merged into one of 200,000,
    // then every one deleted again.
    let n = 200_000;
    let live: Vec<_> = (0..n).map(|i| json!(format!("f{i}"))).collect();
    let more: Vec<_> = (n / 2..n + n / 2).map(|i| json!(format!("f{i}"))).collect();
    let started = std::time::Instant::now();
    let out =
        rkube_core::smp::apply(&json!({"mergingIntList": live}), &json!({"mergingIntList": more}), &item_meta).unwrap();
    let merged = out["mergingIntList"].as_array().unwrap().clone();
    assert_eq!(merged.len(), n + n / 2);
    let gone =
        rkube_core::smp::apply(&out, &json!({"$deleteFromPrimitiveList/mergingIntList": merged}), &item_meta).unwrap();
    assert_eq!(gone["mergingIntList"], json!([]));
    let keyed: Vec<_> = (0..n).map(|i| json!({"name": format!("E{i}")})).collect();
    let deletes: Vec<_> = (0..n).map(|i| json!({"$patch": "delete", "name": format!("E{i}")})).collect();
    let out =
        rkube_core::smp::apply(&json!({"mergingList": keyed}), &json!({"mergingList": deletes}), &item_meta).unwrap();
    assert_eq!(out["mergingList"], json!([]));
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
}
