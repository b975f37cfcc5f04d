//! Random small patches over random small objects: applying never panics, is
//! deterministic, and never leaves a directive in the result.

use crate::common::*;
use rkube_core::smp::{BuiltinMeta, PatchMeta, apply};
use serde_json::{Map, Value, json};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const FIELDS: &[&str] = &[
    "name",
    "value",
    "other",
    "mergingList",
    "mergingIntList",
    "nonMergingList",
    "simpleMap",
    "retainKeysMap",
    "retainKeysMergingList",
    "replacingItem",
    "mergeItemPtr",
    "$ref",
    // Kubernetes names, for the built-in table.
    "spec",
    "template",
    "containers",
    "env",
    "ports",
    "containerPort",
    "metadata",
    "finalizers",
    "volumes",
    "strategy",
];
const DIRECTIVES: &[&str] = &[
    "$patch",
    "$retainKeys",
    "$setElementOrder/mergingList",
    "$setElementOrder/mergingIntList",
    "$setElementOrder/env",
    "$deleteFromPrimitiveList/mergingIntList",
    "$deleteFromPrimitiveList/finalizers",
    "$deleteFromPrimitiveList/mergingList",
    "$setElementOrder/containers",
    "$setElementOrder",
];
const STRINGS: &[&str] = &["a", "b", "name", "replace", "delete", "merge", "value", "containers"];

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.below(4)),
        3 => json!(rng.below(4) as f64),
        _ => json!(rng.pick(STRINGS)),
    }
}

/// A random value; `directives` allows directive keys (patches only).
fn value(rng: &mut Rng, depth: usize, directives: bool) -> Value {
    if depth == 0 {
        return scalar(rng);
    }
    match rng.below(6) {
        0 | 1 => scalar(rng),
        2 | 3 => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                let key = if directives && rng.below(4) == 0 { rng.pick(DIRECTIVES) } else { rng.pick(FIELDS) };
                m.insert(key.to_string(), value(rng, depth - 1, directives));
            }
            // Elements of merge lists usually carry a key: give the merge a chance.
            if rng.below(2) == 0 {
                m.insert("name".into(), json!(rng.pick(&["a", "b", "c"])));
            }
            Value::Object(m)
        }
        _ => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1, directives)).collect()),
    }
}

fn object(rng: &mut Rng, depth: usize, directives: bool) -> Value {
    match value(rng, depth, directives) {
        v @ Value::Object(_) => v,
        other => json!({ "spec": other }),
    }
}

/// `RKUBE_FUZZ_SCALE=n` multiplies the rounds for a longer local run.
fn scaled(rounds: usize) -> usize {
    rounds * std::env::var("RKUBE_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

fn run(meta: &dyn PatchMeta, seed: u64, rounds: usize) -> (usize, usize) {
    let rounds = scaled(rounds);
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..rounds {
        let original = object(&mut rng, 4, false);
        let patch = object(&mut rng, 4, true);
        match apply(&original, &patch, meta) {
            Ok(out) => {
                ok += 1;
                assert_no_directives(&out);
                assert_eq!(apply(&original, &patch, meta).unwrap(), out, "not deterministic: {patch}");
                // An empty patch is the identity on any result.
                assert_eq!(apply(&out, &json!({}), meta).unwrap(), out);
            }
            Err(e) => {
                err += 1;
                let msg = e.to_string();
                assert!(!msg.is_empty() && !msg.starts_with(|c: char| c.is_uppercase()), "{msg}");
            }
        }
    }
    (ok, err)
}

#[test]
fn random_patches_with_the_test_schema() {
    let (ok, err) = run(&item_meta, 0x5eed_1234_abcd_0001, 20_000);
    // Both outcomes must be well represented for the fuzz to mean anything.
    assert!(ok > scaled(2_000) && err > scaled(500), "ok {ok}, err {err}");
}

#[test]
fn random_patches_with_the_builtin_table() {
    let meta = BuiltinMeta::for_kind("Deployment");
    let (ok, err) = run(&meta, 0x0dd_ba11_cafe_f00d, 10_000);
    assert!(ok > scaled(1_000) && err > scaled(100), "ok {ok}, err {err}");
}

#[test]
fn random_patches_onto_their_own_results() {
    // Chains of patches: each result is the next original.
    let mut rng = Rng(42);
    let mut current = json!({});
    for _ in 0..scaled(5_000) {
        let patch = object(&mut rng, 3, true);
        if let Ok(next) = apply(&current, &patch, &item_meta) {
            assert_no_directives(&next);
            current = next;
        }
    }
}
