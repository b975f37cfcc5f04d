//! OpenAPI v3: `/openapi/v3` (the index) and one document per group version, generated from
//! the k8s-openapi types' JSON schemas and the `KINDS` table. kubectl reads them to validate
//! (it checks that PATCH takes `fieldValidation`, then leaves validation to the server), for
//! `explain`, and to find which kinds a group version serves.
//!
//! The documents are built once, on first use, and served with a content hash, as upstream
//! does, so clients can cache them by URL.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::*;

/// One group version's document, serialized, and its hash.
struct Document {
    hash: String,
    json: Bytes,
}

struct Documents {
    /// By path: `api/v1`, `apis/apps/v1`.
    by_path: BTreeMap<String, Document>,
    index: Bytes,
}

fn documents() -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(build)
}

fn build() -> Documents {
    let mut by_path = BTreeMap::new();
    let mut seen = Vec::new();
    for kind in KINDS {
        if seen.contains(&(kind.group, kind.version)) {
            continue;
        }
        seen.push((kind.group, kind.version));
        let kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.group == kind.group && k.version == kind.version).collect();
        let path = group_version_path(kind.group, kind.version);
        let json = Bytes::from(group_version_document(&kinds).to_string());
        let hash = format!("{:016X}{:016X}", fnv(&json, 0xcbf2_9ce4_8422_2325), fnv(&json, 0x8422_2325_cbf2_9ce4));
        by_path.insert(path, Document { hash, json });
    }
    let paths: serde_json::Map<String, Value> = by_path
        .iter()
        .map(|(path, doc)| {
            (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}))
        })
        .collect();
    Documents { by_path, index: Bytes::from(json!({"paths": paths}).to_string()) }
}

/// 64-bit FNV-1a; with two seeds, a content hash for cache URLs (not a security boundary).
fn fnv(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `GET /openapi/v2`: a document with no definitions. kubectl 1.27 and 1.28 fetch it before
/// anything else when they validate or explain, and only as protobuf; with no definitions
/// their client-side validation passes everything on to the server's `fieldValidation`, and
/// every kubectl reads schemas from v3.
pub(super) async fn v2(headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let version = format!("v1.{KUBE_MINOR}.0");
    if accept.contains("protobuf") {
        // gnostic's openapi.v2.Document{swagger: "2.0", info: {title: "Kubernetes", version}}.
        let mut info = Vec::new();
        proto_string(&mut info, 1, "Kubernetes");
        proto_string(&mut info, 2, &version);
        let mut document = Vec::new();
        proto_string(&mut document, 1, "2.0");
        proto_bytes(&mut document, 2, &info);
        return Response::builder()
            // Go cannot parse the `@` of the name clients ask for; upstream answers with this one.
            .header(header::CONTENT_TYPE, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            .body(Body::from(document))
            .expect("static response parts");
    }
    axum::Json(json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": {}}))
        .into_response()
}

/// A length-delimited protobuf field (strings are shorter than 128 bytes here, but the length
/// is a varint all the same).
fn proto_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
}

fn proto_string(out: &mut Vec<u8>, field: u8, text: &str) {
    proto_bytes(out, field, text.as_bytes());
}

/// `GET /openapi/v3`.
pub(super) async fn index() -> Response {
    let docs = documents();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(docs.index.clone()))
        .expect("static response parts")
}

/// `GET /openapi/v3/{*path}`: one group version's document.
pub(super) async fn group_version(
    Path(path): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let docs = documents();
    let doc = docs
        .by_path
        .get(path.trim_matches('/'))
        .ok_or_else(|| ApiError::NotFoundPath("the server could not find the requested resource".into()))?;
    let asked_hash = request.uri().query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("hash=")));
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ETAG, format!("\"{}\"", doc.hash));
    // A URL with the current hash never changes content; one without (or stale) must revalidate.
    response = match asked_hash {
        Some(hash) if hash == doc.hash => response.header(header::CACHE_CONTROL, "public, immutable"),
        _ => response.header(header::CACHE_CONTROL, "no-cache, private"),
    };
    Ok(response.body(Body::from(doc.json.clone())).expect("static response parts"))
}

/// The document of one group version: the kinds' schemas and their REST paths.
fn group_version_document(kinds: &[&Kind]) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut roots = Vec::new();
    for kind in kinds {
        let root = (kind.schema)(&mut generator);
        let name = root.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).map(str::to_owned);
        roots.push((*kind, name));
    }
    let mut schemas: serde_json::Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (kind, name) in &roots {
        if let Some(schema) = name.as_ref().and_then(|n| schemas.get_mut(n)) {
            schema["x-kubernetes-group-version-kind"] = json!([gvk(kind)]);
        }
    }
    let mut paths = serde_json::Map::new();
    for (kind, name) in &roots {
        let Some(name) = name else { continue };
        add_paths(&mut paths, kind, name);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn gvk(kind: &Kind) -> Value {
    json!({"group": kind.group, "version": kind.version, "kind": kind.kind})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// The parameters every write takes; kubectl checks PATCH for `fieldValidation` before it
/// leaves validation to the server.
fn write_parameters() -> Vec<Value> {
    vec![
        query("dryRun", "When present, indicates that modifications should not be persisted."),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or \
             duplicate fields. Valid values are: Ignore, Warn (the default) and Strict.",
        ),
    ]
}

fn operation(kind: &Kind, action: &str, verb: &str, response: Value, parameters: Vec<Value>) -> Value {
    let scope = if kind.namespaced { "Namespaced" } else { "" };
    let group = kind.group.split('.').next().unwrap_or_default();
    let prefix = if group.is_empty() { String::new() } else { capitalize(group) };
    let id = format!("{verb}{prefix}{}{scope}{}", capitalize(kind.version), kind.kind);
    let mut op = json!({
        "description": format!("{verb} {}", kind.kind),
        "operationId": id,
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind),
    });
    if matches!(action, "post" | "put") {
        op["requestBody"] = json!({"content": {"*/*": {"schema": response}}, "required": true});
    }
    if action == "patch" {
        // Strategic merge patch is served but deliberately not listed: kubectl then computes
        // its patches from its own compiled-in types, whose merge keys are exact, rather than
        // from these schemas, which carry none.
        let patch = json!({"schema": {"type": "object"}});
        op["requestBody"] = json!({"required": true, "content": {
            "application/json-patch+json": patch, "application/merge-patch+json": patch,
        }});
    }
    op
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn add_paths(paths: &mut serde_json::Map<String, Value>, kind: &Kind, schema_name: &str) {
    let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
    let base = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    let (collection, object, mut scope) = if kind.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", kind.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", kind.plural),
            vec![path_parameter("namespace")],
        )
    } else {
        (format!("{base}/{}", kind.plural), format!("{base}/{}/{{name}}", kind.plural), Vec::new())
    };
    let list_params = vec![
        query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
        query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
        query("limit", "limit is a maximum number of responses to return for a list call."),
        query("continue", "The continue option should be set when retrieving more results from the server."),
        query(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        query(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ),
    ];
    let mut entry = json!({"parameters": scope.clone()});
    entry["get"] = operation(kind, "list", "list", json!({"type": "object"}), list_params.clone());
    if !kind.read_only {
        entry["post"] = operation(kind, "post", "create", reference.clone(), write_parameters());
    }
    paths.insert(collection, entry);
    scope.push(path_parameter("name"));
    let mut entry = json!({"parameters": scope});
    entry["get"] = operation(kind, "get", "read", reference.clone(), Vec::new());
    if !kind.read_only {
        entry["put"] = operation(kind, "put", "replace", reference.clone(), write_parameters());
        entry["patch"] = operation(kind, "patch", "patch", reference.clone(), write_parameters());
        entry["delete"] = operation(
            kind,
            "delete",
            "delete",
            json!({"type": "object"}),
            vec![query("dryRun", "When present, indicates that modifications should not be persisted.")],
        );
    }
    paths.insert(object, entry);
    if kind.namespaced {
        let mut all = json!({"parameters": []});
        all["get"] = operation(kind, "list", "list", json!({"type": "object"}), list_params);
        paths.insert(format!("{base}/{}", kind.plural), all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_v2_stub_is_the_document_upstream_tools_decode() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf".parse().unwrap());
        let body = axum::body::to_bytes(v2(headers).await.into_body(), 1 << 10).await.unwrap();
        // The bytes `protoc --decode openapi.v2.Document` reads as swagger "2.0" and the info.
        let mut expected = b"\x0a\x032.0\x12\x15\x0a\x0aKubernetes\x12\x07".to_vec();
        expected.extend(format!("v1.{KUBE_MINOR}.0").as_bytes());
        assert_eq!(body.as_ref(), expected.as_slice());
    }

    #[test]
    fn every_group_version_has_a_document_with_its_kinds() {
        let docs = documents();
        let index: Value = serde_json::from_slice(&docs.index).unwrap();
        let apps = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(apps.starts_with("/openapi/v3/apis/apps/v1?hash="), "{apps}");
        let doc: Value = serde_json::from_slice(&docs.by_path["apis/apps/v1"].json).unwrap();
        let deployment = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deployment["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        let parameters = patch["parameters"].as_array().unwrap();
        assert!(parameters.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let core: Value = serde_json::from_slice(&docs.by_path["api/v1"].json).unwrap();
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"].is_object());
    }
}
