//! Discovery: which groups, versions and resources the server serves, in the legacy documents
//! (`/api`, `/apis`, `/apis/GROUP/VERSION`) and the aggregated ones (`apidiscovery.k8s.io`
//! v2 and v2beta1) that kubectl 1.27+ asks for first. All of it is derived from `KINDS`.

use super::*;

/// The served groups, core first, each once, in `KINDS` order.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut seen = Vec::new();
    for kind in KINDS {
        if !seen.contains(&(kind.group, kind.version)) {
            seen.push((kind.group, kind.version));
        }
    }
    seen
}

/// The aggregated discovery version the client asked for, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    // Media types in the client's order: the first that we serve wins.
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        if params.contains(&"as=APIGroupDiscoveryList") && params.contains(&"g=apidiscovery.k8s.io") {
            if params.contains(&"v=v2") {
                return Some("v2");
            }
            if params.contains(&"v=v2beta1") {
                return Some("v2beta1");
            }
        }
        if params.first().is_some_and(|m| *m == "application/json" && params.len() == 1) {
            return None;
        }
    }
    None
}

fn aggregated_response(version: &str, groups: &[&str]) -> Response {
    let items: Vec<Value> = groups
        .iter()
        .map(|group| {
            let versions: Vec<Value> = group_versions()
                .into_iter()
                .filter(|(g, _)| g == group)
                .map(|(g, v)| {
                    let resources: Vec<Value> = KINDS
                        .iter()
                        .filter(|k| k.group == g && k.version == v)
                        .map(|k| {
                            let subresources: Vec<Value> = k
                                .subresources
                                .iter()
                                .map(|s| {
                                    let (group, version, kind, verbs) = subresource_facts(k, *s);
                                    json!({"subresource": s.name(), "verbs": verbs,
                                           "responseKind": {"group": group, "version": version, "kind": kind}})
                                })
                                .collect();
                            json!({
                                "resource": k.plural,
                                "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                                "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": k.singular,
                                "verbs": k.verbs(),
                                "shortNames": k.short_names,
                                "categories": k.categories,
                                "subresources": subresources,
                            })
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
        )
        .header(header::VARY, "Accept")
        .body(Body::from(body.to_string()))
        .expect("static response parts")
}

/// What a subresource returns and accepts: (group, version, kind, verbs).
fn subresource_facts(
    kind: &Kind,
    sub: Subresource,
) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
    match sub {
        Subresource::Status => (kind.group, kind.version, kind.kind, &["get", "patch", "update"]),
        Subresource::Scale => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        Subresource::Binding => ("", "v1", "Binding", &["create"]),
        Subresource::Eviction => ("policy", "v1", "Eviction", &["create"]),
        Subresource::Finalize => ("", "v1", "Namespace", &["update"]),
        Subresource::Log => ("", "v1", "Pod", &["get"]),
        Subresource::Exec => ("", "v1", "PodExecOptions", &["create", "get"]),
        Subresource::Attach => ("", "v1", "PodAttachOptions", &["create", "get"]),
        Subresource::PortForward => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        Subresource::Proxy => ("", "v1", "NodeProxyOptions", &["create", "delete", "get", "patch", "update"]),
    }
}

/// `/api`: the core group's versions.
pub(super) async fn core_versions(headers: HeaderMap) -> Response {
    if let Some(version) = aggregated(&headers) {
        return aggregated_response(version, &[""]);
    }
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

fn group_document(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis`: the named groups.
pub(super) async fn groups(headers: HeaderMap) -> Response {
    let mut names: Vec<&str> = group_versions().into_iter().map(|(g, _)| g).filter(|g| !g.is_empty()).collect();
    names.dedup();
    if let Some(version) = aggregated(&headers) {
        return aggregated_response(version, &names);
    }
    let groups: Vec<Value> = names.iter().map(|g| group_document(g)).collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})).into_response()
}

/// `/apis/GROUP`.
pub(super) fn group(group: &str) -> Result<Response, ApiError> {
    if group.is_empty() || !KINDS.iter().any(|k| k.group == group) {
        return Err(ApiError::NotFoundPath("the server could not find the requested resource".into()));
    }
    let mut document = group_document(group);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Ok(axum::Json(document).into_response())
}

/// `/api/v1` or `/apis/GROUP/VERSION`: the resources of one group version.
pub(super) fn resources(
    _state: &State,
    group: &str,
    version: &str,
    _headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return Err(ApiError::NotFoundPath("the server could not find the requested resource".into()));
    }
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs(),
            "shortNames": k.short_names,
            "categories": k.categories,
        }));
        for sub in k.subresources {
            let (g, v, kind, verbs) = subresource_facts(k, *sub);
            let mut entry = json!({
                "name": format!("{}/{}", k.plural, sub.name()),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if (g, v) != (k.group, k.version) {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Ok(axum::Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
    .into_response())
}
