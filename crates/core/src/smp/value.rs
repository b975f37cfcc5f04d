//! Small helpers over `serde_json::Value`.

use serde_json::Value;

/// JSON equality with Go's view of numbers.
///
/// Upstream decodes every JSON number into a `float64`, so `80` and `80.0` are the
/// same merge key and the same set member. serde_json keeps integers and floats
/// apart (`Number(80) != Number(80.0)`), so compare numbers by value here.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                i == j
            } else if let (Some(i), Some(j)) = (x.as_u64(), y.as_u64()) {
                i == j
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(l, r)| json_eq(l, r)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The JSON type of a value, as far as "all elements have the same type" goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonType {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub(crate) fn json_type(v: &Value) -> JsonType {
    match v {
        Value::Null => JsonType::Null,
        Value::Bool(_) => JsonType::Bool,
        Value::Number(_) => JsonType::Number,
        Value::String(_) => JsonType::String,
        Value::Array(_) => JsonType::Array,
        Value::Object(_) => JsonType::Object,
    }
}

/// What identifies a list element for merging and ordering: the merge key's
/// value for lists of objects merged by key, the element itself otherwise.
/// `None` when the element has no (non-null) merge key.
pub(crate) fn ident<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        None => Some(item),
        Some(k) => item.as_object()?.get(k).filter(|v| !v.is_null()),
    }
}

/// A hashable form of a value with [`json_eq`]'s equality (numbers by value), so lookups in
/// long lists are hash lookups: a patch of a few MiB must not take quadratic time.
pub(crate) fn canon(v: &Value) -> String {
    let mut out = String::new();
    write_canon(v, &mut out);
    out
}

fn write_canon(v: &Value, out: &mut String) {
    use std::fmt::Write as _;
    match v {
        Value::Number(n) => {
            let integral = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)).or_else(|| {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 1e18).then_some(f as i128)
            });
            match integral {
                Some(i) => write!(out, "n{i};"),
                None => write!(out, "f{};", n.as_f64().unwrap_or(0.0).to_bits()),
            }
            .expect("writing to a String");
        }
        Value::String(s) => write!(out, "s{}:{s}", s.len()).expect("writing to a String"),
        Value::Bool(b) => out.push_str(if *b { "t" } else { "F" }),
        Value::Null => out.push('z'),
        Value::Array(items) => {
            out.push('[');
            items.iter().for_each(|i| write_canon(i, out));
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's map iterates in key order, so equal objects write alike.
            out.push('{');
            for (k, v) in map {
                write!(out, "{}:{k}", k.len()).expect("writing to a String");
                write_canon(v, out);
            }
            out.push('}');
        }
    }
}

/// The first position of each identity in a list, for lookups by identity in O(1).
pub(crate) struct Positions(std::collections::HashMap<String, usize>);

impl Positions {
    pub(crate) fn new<'a>(ids: impl Iterator<Item = Option<&'a Value>>) -> Positions {
        let mut map = std::collections::HashMap::new();
        for (i, id) in ids.enumerate() {
            if let Some(id) = id {
                map.entry(canon(id)).or_insert(i);
            }
        }
        Positions(map)
    }

    pub(crate) fn get(&self, id: Option<&Value>) -> Option<usize> {
        self.0.get(&canon(id?)).copied()
    }

    pub(crate) fn insert(&mut self, id: &Value, at: usize) {
        self.0.entry(canon(id)).or_insert(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(&json!(80), &json!(80.0)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!(80), &json!("80")));
        assert!(!json_eq(&json!(-1), &json!(u64::MAX)));
        assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
    }

    #[test]
    fn ident_uses_merge_key() {
        let el = json!({"name": "a", "value": 1});
        assert_eq!(ident(&el, Some("name")), Some(&json!("a")));
        assert_eq!(ident(&el, Some("other")), None);
        assert_eq!(ident(&json!({"name": null}), Some("name")), None);
        assert_eq!(ident(&json!("x"), Some("name")), None);
        assert_eq!(ident(&json!("x"), None), Some(&json!("x")));
    }
}
