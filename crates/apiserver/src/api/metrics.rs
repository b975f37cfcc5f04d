//! `/metrics` in Prometheus text: request counts and latencies by verb, resource and code,
//! named as upstream's (`apiserver_request_total`, `apiserver_request_duration_seconds`).
//!
//! Labels come only from the `KINDS` table and fixed verb names, never from raw paths, so a
//! client cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::*;

/// Upstream's request duration buckets, in seconds.
const BUCKETS: [f64; 16] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 4.0, 8.0, 15.0, 60.0];

/// What a request is counted under.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    verb: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    subresource: &'static str,
    scope: &'static str,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Recorded {
    totals: BTreeMap<(Labels, u16), u64>,
    durations: BTreeMap<Labels, Histogram>,
    /// Lists by resource, as served: from the watch cache, or from the store.
    lists: BTreeMap<(&'static str, ListSource), u64>,
}

/// Where a list was read from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ListSource {
    Cache,
    Store,
}

/// The server's request metrics, shared by every connection.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Recorded>>);

impl Metrics {
    fn record(&self, labels: Labels, code: u16, seconds: f64) {
        let Ok(mut recorded) = self.0.lock() else { return };
        *recorded.totals.entry((labels.clone(), code)).or_default() += 1;
        // A watch lasts as long as the client wants; its duration says nothing of the server.
        if labels.verb == "WATCH" {
            return;
        }
        let histogram = recorded.durations.entry(labels).or_default();
        histogram.count += 1;
        histogram.sum += seconds;
        for (bucket, upper) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= upper {
                *bucket += 1;
            }
        }
    }

    /// Counts a list of `resource` served from `source`.
    pub(super) fn count_list(&self, resource: &'static str, source: ListSource) {
        if let Ok(mut recorded) = self.0.lock() {
            *recorded.lists.entry((resource, source)).or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    fn render(&self) -> String {
        let Ok(recorded) = self.0.lock() else { return String::new() };
        let mut out = String::new();
        let labels = |l: &Labels| {
            format!(
                "component=\"apiserver\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"",
                l.group, l.resource, l.scope, l.subresource, l.verb, l.version
            )
        };
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        for ((l, code), count) in &recorded.totals {
            let _ = writeln!(out, "apiserver_request_total{{code=\"{code}\",{}}} {count}", labels(l));
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component.\n");
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for (l, h) in &recorded.durations {
            let base = labels(l);
            for (upper, count) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(out, "apiserver_request_duration_seconds_bucket{{{base},le=\"{upper}\"}} {count}");
            }
            let _ = writeln!(out, "apiserver_request_duration_seconds_bucket{{{base},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "apiserver_request_duration_seconds_sum{{{base}}} {}", h.sum);
            let _ = writeln!(out, "apiserver_request_duration_seconds_count{{{base}}} {}", h.count);
        }
        // Upstream's names: lists served by the watch cache, and lists that went to storage.
        for (name, wanted, label, help) in [
            (
                "apiserver_cache_list_total",
                ListSource::Cache,
                "resource_prefix",
                "Number of LIST requests served from watch cache",
            ),
            (
                "apiserver_storage_list_total",
                ListSource::Store,
                "resource",
                "Number of LIST requests served from storage",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((resource, source), count) in &recorded.lists {
                if *source == wanted {
                    let value =
                        if wanted == ListSource::Cache { format!("/{resource}") } else { (*resource).to_owned() };
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
                }
            }
        }
        out
    }
}

/// The labels of a request, from its method, path and query; None for paths that are not
/// resources (health, discovery, OpenAPI), which are not counted.
fn labels_of(method: &axum::http::Method, uri: &axum::http::Uri, content_type: &str) -> Option<Labels> {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return None,
    };
    // The same resolution the request itself gets, so the labels name what was served.
    let target = Target::parse(group, version, rest).ok()?;
    let kind = target.kind;
    let subresource = target.subresource.map_or("", |s| s.name());
    let (namespaced, named) = (target.namespace.is_some(), target.name.is_some());
    let query = uri.query().unwrap_or_default();
    let watching = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
    let verb = match *method {
        axum::http::Method::GET if watching => "WATCH",
        axum::http::Method::GET if named => "GET",
        axum::http::Method::GET => "LIST",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH if content_type.starts_with("application/apply-patch") => "APPLY",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE if named => "DELETE",
        axum::http::Method::DELETE => "DELETECOLLECTION",
        _ => return None,
    };
    let scope = match (kind.namespaced, namespaced, named) {
        (false, _, _) if named => "resource",
        (false, _, _) => "cluster",
        (true, true, true) => "resource",
        (true, true, false) => "namespace",
        (true, false, _) => "cluster",
    };
    Some(Labels { verb, group: kind.group, version: kind.version, resource: kind.plural, subresource, scope })
}

/// The middleware that records every resource request.
pub(super) async fn measure(
    AxumState(metrics): AxumState<Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let labels = labels_of(request.method(), request.uri(), content_type);
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(labels) = labels {
        metrics.record(labels, response.status().as_u16(), started.elapsed().as_secs_f64());
    }
    response
}

/// `GET /metrics`.
pub(super) async fn serve(AxumState(metrics): AxumState<Metrics>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Body::from(metrics.render()))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: &str, uri: &str) -> Option<Labels> {
        labels_of(&method.parse().unwrap(), &uri.parse().unwrap(), "application/json")
    }

    #[test]
    fn requests_are_labelled_as_upstream_labels_them() {
        let l = labels("GET", "/api/v1/namespaces/default/pods").unwrap();
        assert_eq!((l.verb, l.resource, l.scope), ("LIST", "pods", "namespace"));
        let l = labels("GET", "/apis/apps/v1/deployments?watch=true").unwrap();
        assert_eq!((l.verb, l.group, l.scope), ("WATCH", "apps", "cluster"));
        let l = labels("PATCH", "/apis/apps/v1/namespaces/d/deployments/web/scale").unwrap();
        assert_eq!((l.verb, l.subresource, l.scope), ("PATCH", "scale", "resource"));
        let l = labels("PUT", "/api/v1/namespaces/going/finalize").unwrap();
        assert_eq!((l.resource, l.subresource), ("namespaces", "finalize"));
        assert!(labels("GET", "/api/v1/namespaces/x/nonsense").is_none(), "no label from a client's invention");
        assert!(labels("GET", "/healthz").is_none());
    }

    #[test]
    fn the_exposition_counts_and_buckets() {
        let metrics = Metrics::default();
        let l = labels("POST", "/api/v1/namespaces/default/configmaps").unwrap();
        metrics.record(l.clone(), 201, 0.003);
        metrics.record(l, 409, 0.2);
        let text = metrics.render();
        assert!(text.contains(r#"apiserver_request_total{code="201",component="apiserver",group="",resource="configmaps",scope="namespace",subresource="",verb="POST",version="v1"} 1"#), "{text}");
        assert!(text.contains(r#"verb="POST",version="v1",le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"verb="POST",version="v1",le="+Inf"} 2"#), "{text}");
        metrics.count_list("pods", ListSource::Cache);
        metrics.count_list("pods", ListSource::Cache);
        metrics.count_list("pods", ListSource::Store);
        let text = metrics.render();
        assert!(text.contains("apiserver_cache_list_total{resource_prefix=\"/pods\"} 2\n"), "{text}");
        assert!(text.contains("apiserver_storage_list_total{resource=\"pods\"} 1\n"), "{text}");
    }
}
