//! Label selectors, as upstream parses them (`k8s.io/apimachinery/pkg/labels`): comma-separated
//! requirements `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`. Pure: no IO.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term).map_err(|e| format!("unable to parse requirement: {e}"))?);
        }
        Ok(LabelSelector(requirements))
    }

    /// A `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`), as workloads
    /// carry it.
    pub fn from_object(selector: &serde_json::Value) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for (key, value) in selector["matchLabels"].as_object().into_iter().flatten() {
            let value = value.as_str().ok_or_else(|| format!("label {key:?} has a non-string value"))?;
            requirements.push(Requirement::In(key_of(key)?, vec![value_of(value)?]));
        }
        for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
            let key = key_of(expression["key"].as_str().unwrap_or_default())?;
            let values: Vec<String> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().map(str::to_owned).ok_or("values must be strings".to_owned()))
                .collect::<Result<_, _>>()?;
            let operator = expression["operator"].as_str().unwrap_or_default();
            requirements.push(match operator {
                "In" | "NotIn" if values.is_empty() => {
                    return Err("for 'in', 'notin' operators, values set can't be empty".to_string());
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err("values set must be empty for exists and does not exist".into());
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            });
        }
        Ok(LabelSelector(requirements))
    }

    /// The selector in upstream's string form, as a Scale's `status.selector` carries it.
    pub fn to_query(&self) -> String {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
                Requirement::In(k, v) if v.len() == 1 => format!("{k}={}", v[0]),
                Requirement::In(k, v) => format!("{k} in ({})", v.join(",")),
                Requirement::NotIn(k, v) if v.len() == 1 => format!("{k}!={}", v[0]),
                Requirement::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
            })
            .collect();
        terms.join(",")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unable to parse requirement: unbalanced parentheses in {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unable to parse requirement: unbalanced parentheses in {text:?}"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key.trim())?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotIn(key_of(key.trim())?, vec![value_of(value.trim())?]));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::In(key_of(key.trim())?, vec![value_of(value.trim())?]));
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => Ok(Requirement::Exists(key_of(key)?)),
        [key, rest] => {
            let rest = rest.trim_start();
            let (negated, set) = if let Some(set) = rest.strip_prefix("notin") {
                (true, set)
            } else if let Some(set) = rest.strip_prefix("in") {
                (false, set)
            } else {
                return Err(format!("{term:?}: expected one of =, ==, !=, in, notin"));
            };
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{term:?}: a set must be in parentheses"))?;
            let values = inner.split(',').map(|v| value_of(v.trim())).collect::<Result<Vec<_>, _>>()?;
            Ok(if negated { Requirement::NotIn(key_of(key)?, values) } else { Requirement::In(key_of(key)?, values) })
        }
        _ => Err(format!("{term:?}: empty requirement")),
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of up to 63 characters.
fn key_of(key: &str) -> Result<String, String> {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    });
    if name_ok && prefix_ok { Ok(key.to_owned()) } else { Err(format!("invalid label key {key:?}")) }
}

/// A label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn value_of(value: &str) -> Result<String, String> {
    let ok = value.is_empty()
        || (value.len() <= 63
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.as_bytes()[0].is_ascii_alphanumeric()
            && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric());
    if ok { Ok(value.to_owned()) } else { Err(format!("invalid label value {value:?}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_operator_matches_as_upstream() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        for (selector, on_web, on_db) in [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app in (web,db)", true, true),
            ("app in (cache)", false, false),
            ("app notin (web)", false, true),
            ("tier notin (front)", false, true),
            ("app=web,tier=front", true, false),
            ("app in (web, db),!tier", false, true),
            ("example.com/role!=x", true, true),
        ] {
            let s = LabelSelector::parse(selector).unwrap();
            assert_eq!((s.matches(&web), s.matches(&db)), (on_web, on_db), "{selector:?}");
        }
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in ["app in web", "app in (web", "a=b)", "-bad=x", "app=-x", "app ~ web", "Bad Prefix/x=y"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
