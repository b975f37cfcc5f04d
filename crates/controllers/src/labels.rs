//! Matching labels against the selectors objects carry: `LabelSelector` (workloads, pod
//! affinity, spread constraints) and `NodeSelectorTerm` (node affinity), as upstream's
//! `metav1.LabelSelectorAsSelector` and `nodeaffinity` read them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// Whether `labels` satisfy `selector`. An empty selector matches everything; a malformed
/// requirement (an unknown operator) matches nothing, as upstream refuses such a selector.
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_label = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// The selector as a label-selector query string (`a=b,c in (d,e)`), for list calls.
pub fn to_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Whether a node with `labels` (and `name`, for `matchFields`) satisfies any of the terms;
/// an empty list of terms matches nothing, as upstream.
pub fn node_matches_any(terms: &[NodeSelectorTerm], labels: &Labels, name: &str) -> bool {
    terms.iter().any(|term| node_matches(term, labels, name))
}

/// One term: all its requirements hold. A term with no requirements matches nothing.
pub fn node_matches(term: &NodeSelectorTerm, labels: &Labels, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions.iter().all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement(r, Some(name)))
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (value.and_then(number), values.first().and_then(|v| number(v))) else {
                return false;
            };
            if r.operator == "Gt" { have > bound } else { have < bound }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors() {
        let app = labels(&[("app", "web"), ("tier", "front")]);
        let check =
            |selector: LabelSelector, expect: bool| assert_eq!(matches(&selector, &app), expect, "{selector:?}");
        check(LabelSelector::default(), true);
        check(LabelSelector { match_labels: Some(labels(&[("app", "web")])), ..Default::default() }, true);
        check(LabelSelector { match_labels: Some(labels(&[("app", "db")])), ..Default::default() }, false);
        let with = |e| LabelSelector { match_expressions: Some(vec![e]), ..Default::default() };
        check(with(expr("tier", "In", &["front", "back"])), true);
        check(with(expr("tier", "NotIn", &["front"])), false);
        check(with(expr("zone", "NotIn", &["a"])), true);
        check(with(expr("app", "Exists", &[])), true);
        check(with(expr("app", "DoesNotExist", &[])), false);
        check(with(expr("app", "Sideways", &[])), false);
        let query = to_query(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![expr("tier", "In", &["a", "b"]), expr("x", "DoesNotExist", &[])]),
        });
        assert_eq!(query, "app=web,tier in (a,b),!x");
    }

    #[test]
    fn node_selector_terms() {
        let node = labels(&[("zone", "a"), ("cores", "8")]);
        let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let term =
            |reqs: Vec<NodeSelectorRequirement>| NodeSelectorTerm { match_expressions: Some(reqs), match_fields: None };
        assert!(node_matches(&term(vec![req("zone", "In", &["a"]), req("cores", "Gt", &["4"])]), &node, "n1"));
        assert!(!node_matches(&term(vec![req("cores", "Lt", &["4"])]), &node, "n1"));
        assert!(!node_matches(&term(vec![req("cores", "Gt", &["x"])]), &node, "n1"));
        assert!(!node_matches(&term(vec![]), &node, "n1"));
        assert!(!node_matches_any(&[], &node, "n1"));
        let by_name =
            NodeSelectorTerm { match_expressions: None, match_fields: Some(vec![req("metadata.name", "In", &["n1"])]) };
        assert!(node_matches(&by_name, &node, "n1"));
        assert!(!node_matches(&by_name, &node, "n2"));
    }
}
