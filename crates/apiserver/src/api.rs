//! Routes: health, version, discovery, and the resource endpoints, served from the store.
//!
//! Objects are stored as JSON without `resourceVersion`; it is the store's `mod_revision`,
//! filled in on the way out, as upstream's etcd3 storage does.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use futures::StreamExt;
use rkube_store::{KeyValue, ListOptions, Store, WatchEvent, WatchOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::selector::LabelSelector;
use crate::status::ApiError;
use crate::table::{self, Column, Include};

/// The Kubernetes version rkube implements; `/usr/bin/kubectl` picks its client by it.
pub const KUBE_MINOR: &str = "33";

#[derive(Clone)]
pub struct State {
    store: Store,
}

impl State {
    pub fn new(store: Store) -> State {
        State { store }
    }
}

/// One served resource type.
struct Kind {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    verbs: &'static [&'static str],
    /// Decodes a request body as this kind (rejecting wrong field types) and re-encodes it.
    normalize: fn(Value) -> Result<Value, serde_json::Error>,
    /// Upstream's name rule for this kind.
    name_rule: NameRule,
    /// Fields upstream defaults on create.
    defaults: fn(&mut Value),
    /// Rewrites every incoming object (create, update, patch) as upstream stores it.
    prepare: fn(&mut Value),
    /// Upstream's update validation: (field, message) for each change it forbids.
    check_update: fn(old: &Value, new: &Value) -> Vec<(String, String)>,
    /// `kubectl get` columns between NAME and AGE, as upstream's printers.
    columns: &'static [Column],
}

#[derive(Clone, Copy)]
enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
}

fn typed<K: serde::Serialize + serde::de::DeserializeOwned>(v: Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<K>(v)?)
}

const KINDS: &[Kind] = &[
    Kind {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        list_kind: "NamespaceList",
        namespaced: false,
        short_names: &["ns"],
        verbs: &["create", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::Namespace>,
        name_rule: NameRule::Dns1123Label,
        defaults: |object| {
            object["spec"]["finalizers"] = json!(["kubernetes"]);
            object["status"]["phase"] = json!("Active");
        },
        prepare: |_| {},
        check_update: |_, _| Vec::new(),
        columns: &[Column {
            name: "Status",
            kind: "string",
            description: "The status of the namespace",
            cell: |o| o["status"]["phase"].clone(),
        }],
    },
    Kind {
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        list_kind: "ConfigMapList",
        namespaced: true,
        short_names: &["cm"],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::ConfigMap>,
        name_rule: NameRule::Dns1123Subdomain,
        defaults: |_| {},
        prepare: |_| {},
        check_update: frozen_data,
        columns: &[Column {
            name: "Data",
            kind: "integer",
            description: "Number of data entries",
            cell: |o| {
                let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
                json!(count("data") + count("binaryData"))
            },
        }],
    },
    Kind {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        list_kind: "SecretList",
        namespaced: true,
        short_names: &[],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::Secret>,
        name_rule: NameRule::Dns1123Subdomain,
        defaults: |object| {
            if object["type"].as_str().is_none_or(str::is_empty) {
                object["type"] = json!("Opaque");
            }
        },
        prepare: fold_string_data,
        check_update: |old, new| {
            let mut causes = frozen_data(old, new);
            if old["type"] != new["type"] {
                causes.push(("type".into(), format!("Invalid value: {}: field is immutable", new["type"])));
            }
            causes
        },
        columns: &[
            Column { name: "Type", kind: "string", description: "The type of the secret", cell: |o| o["type"].clone() },
            Column {
                name: "Data",
                kind: "string",
                description: "Number of data entries",
                cell: |o| json!(o["data"].as_object().map_or(0, |m| m.len()).to_string()),
            },
        ],
    },
    Kind {
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        list_kind: "ServiceAccountList",
        namespaced: true,
        short_names: &["sa"],
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        normalize: typed::<k8s_openapi::api::core::v1::ServiceAccount>,
        name_rule: NameRule::Dns1123Subdomain,
        defaults: |_| {},
        prepare: |_| {},
        check_update: |_, _| Vec::new(),
        columns: &[Column {
            name: "Secrets",
            kind: "integer",
            description: "Number of secrets referenced by the service account",
            cell: |o| json!(o["secrets"].as_array().map_or(0, |s| s.len())),
        }],
    },
];

/// A ConfigMap or Secret marked `immutable: true` keeps its data, and stays immutable.
fn frozen_data(old: &Value, new: &Value) -> Vec<(String, String)> {
    if old["immutable"] != json!(true) {
        return Vec::new();
    }
    const FROZEN: &str = "Forbidden: field is immutable when `immutable` is set";
    let mut causes = Vec::new();
    if new["immutable"] != json!(true) {
        causes.push(("immutable".into(), FROZEN.into()));
    }
    for field in ["data", "binaryData"] {
        if old[field] != new[field] {
            causes.push((field.into(), FROZEN.into()));
        }
    }
    causes
}

/// A Secret's write-only `stringData` is stored base64-encoded in `data`, where its keys win.
fn fold_string_data(object: &mut Value) {
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        object["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

fn kind(plural: &str) -> Result<&'static Kind, ApiError> {
    KINDS
        .iter()
        .find(|k| k.plural == plural)
        .ok_or_else(|| ApiError::NotFoundPath(format!("the server could not find the requested resource ({plural})")))
}

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn ensure_system_namespaces(store: &Store) -> Result<(), crate::Error> {
    let namespaces = kind("namespaces").expect("namespaces is served");
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match create_object(store, namespaces, None, object, false).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(crate::Error::Pki(format!("cannot create namespace {name}: {:?}", e.status()))),
        }
    }
    Ok(())
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/version", get(version))
        // The Python client asks with a trailing slash; upstream answers both.
        .route("/version/", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(api_resources))
        .route("/apis", get(api_groups))
        .route("/api/v1/{resource}", get(collection_get).post(collection_post))
        .route("/api/v1/{resource}/{name}", get(object_get).put(object_put).patch(object_patch).delete(object_delete))
        .route("/api/v1/namespaces/{namespace}/{resource}", get(ns_collection_get).post(ns_collection_post))
        .route(
            "/api/v1/namespaces/{namespace}/{resource}/{name}",
            get(ns_object_get).put(ns_object_put).patch(ns_object_patch).delete(ns_object_delete),
        )
        .fallback(|| async { ApiError::NotFoundPath("the server could not find the requested resource".into()) })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            ))
        })
        // read_body enforces upstream's limit itself, answering with a Status.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn ok() -> &'static str {
    "ok"
}

async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-rkube.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    }))
}

async fn api_versions() -> axum::Json<Value> {
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
}

async fn api_groups() -> axum::Json<Value> {
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
}

async fn api_resources() -> axum::Json<Value> {
    let resources: Vec<Value> = KINDS
        .iter()
        .map(|k| {
            json!({
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": k.verbs,
                "shortNames": k.short_names,
            })
        })
        .collect();
    axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources}))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    watch: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    resource_version: Option<String>,
    field_selector: Option<String>,
    label_selector: Option<String>,
    timeout_seconds: Option<u64>,
    allow_watch_bookmarks: Option<bool>,
    include_object: Option<String>,
}

async fn collection_get(
    AxumState(state): AxumState<State>,
    Path(resource): Path<String>,
    Params(params): Params<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_collection(&state, kind(&resource)?, None, params, table::requested(&headers)).await
}

async fn ns_collection_get(
    AxumState(state): AxumState<State>,
    Path((namespace, resource)): Path<(String, String)>,
    Params(params): Params<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = namespaced(&resource)?;
    read_collection(&state, kind, Some(namespace), params, table::requested(&headers)).await
}

async fn collection_post(
    AxumState(state): AxumState<State>,
    Path(resource): Path<String>,
    Params(write): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let kind = kind(&resource)?;
    if kind.namespaced {
        return Err(ApiError::MethodNotAllowed(format!("{} must be created in a namespace", kind.plural)));
    }
    let created = create_object(&state.store, kind, None, decode(kind, &body)?, write.dry_run()?).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn ns_collection_post(
    AxumState(state): AxumState<State>,
    Path((namespace, resource)): Path<(String, String)>,
    Params(write): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let kind = namespaced(&resource)?;
    let object = decode(kind, &body)?;
    let created = create_object(&state.store, kind, Some(&namespace), object, write.dry_run()?).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn object_get(
    AxumState(state): AxumState<State>,
    Path((resource, name)): Path<(String, String)>,
    Params(params): Params<ListParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = cluster_scoped(&resource)?;
    let object = get_object(&state.store, kind, None, &name).await?;
    Ok(axum::Json(as_table_if(kind, object, &params, &headers)))
}

/// A single object, as a one-row Table if the client asked for one.
fn as_table_if(kind: &Kind, object: Value, params: &ListParams, headers: &HeaderMap) -> Value {
    if !table::requested(headers) {
        return object;
    }
    let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
    table::table(
        kind.columns,
        &[object],
        Include::parse(params.include_object.as_deref()),
        metadata,
        time::OffsetDateTime::now_utc(),
    )
}

async fn ns_object_get(
    AxumState(state): AxumState<State>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Params(params): Params<ListParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = namespaced(&resource)?;
    let object = get_object(&state.store, kind, Some(&namespace), &name).await?;
    Ok(axum::Json(as_table_if(kind, object, &params, &headers)))
}

async fn object_put(
    AxumState(state): AxumState<State>,
    Path((resource, name)): Path<(String, String)>,
    Params(write): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = cluster_scoped(&resource)?;
    update_object(&state.store, kind, None, &name, decode(kind, &body)?, write.dry_run()?).await.map(axum::Json)
}

async fn ns_object_put(
    AxumState(state): AxumState<State>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Params(write): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = namespaced(&resource)?;
    let object = decode(kind, &body)?;
    update_object(&state.store, kind, Some(&namespace), &name, object, write.dry_run()?).await.map(axum::Json)
}

async fn object_patch(
    AxumState(state): AxumState<State>,
    Path((resource, name)): Path<(String, String)>,
    Params(write): Params<WriteParams>,
    patch: PatchBody,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = cluster_scoped(&resource)?;
    patch_object(&state.store, kind, None, &name, patch, write.dry_run()?).await.map(axum::Json)
}

async fn ns_object_patch(
    AxumState(state): AxumState<State>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Params(write): Params<WriteParams>,
    patch: PatchBody,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = namespaced(&resource)?;
    patch_object(&state.store, kind, Some(&namespace), &name, patch, write.dry_run()?).await.map(axum::Json)
}

async fn object_delete(
    AxumState(_state): AxumState<State>,
    Path((resource, _name)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = cluster_scoped(&resource)?;
    // Deleting a namespace means deleting its contents first: that is the namespace
    // controller's work, which arrives with the control loops.
    Err(ApiError::MethodNotAllowed(format!("deleting {} is not supported yet", kind.plural)))
}

async fn ns_object_delete(
    AxumState(state): AxumState<State>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Params(write): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<axum::Json<Value>, ApiError> {
    let kind = namespaced(&resource)?;
    let (expected, dry_run_body) = delete_options(&body)?;
    let key = object_key(kind, Some(&namespace), &name);
    let to_store = |e| ApiError::from_store(e, kind.plural, &name);
    let deleted = if write.dry_run()? || dry_run_body {
        let current = state
            .store
            .get(&key, None)
            .await
            .map_err(to_store)?
            .ok_or_else(|| ApiError::NotFound { resource: kind.plural, name: name.clone() })?;
        if expected.is_some_and(|rv| rv != current.mod_revision) {
            return Err(ApiError::Conflict { resource: kind.plural, name: name.clone() });
        }
        current.value
    } else {
        state.store.delete(&key, expected).await.map_err(to_store)?.prev.value
    };
    let object: Value = serde_json::from_slice(&deleted).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(axum::Json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": kind.plural, "uid": object["metadata"]["uid"]},
    })))
}

fn namespaced(resource: &str) -> Result<&'static Kind, ApiError> {
    let kind = kind(resource)?;
    if !kind.namespaced {
        return Err(ApiError::NotFoundPath(format!("{resource} is not a namespaced resource")));
    }
    Ok(kind)
}

fn cluster_scoped(resource: &str) -> Result<&'static Kind, ApiError> {
    let kind = kind(resource)?;
    if kind.namespaced {
        return Err(ApiError::NotFoundPath(format!("{resource} must be addressed within a namespace")));
    }
    Ok(kind)
}

fn object_key(kind: &Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("/registry/{}/{ns}/{name}", kind.plural),
        None => format!("/registry/{}/{name}", kind.plural),
    }
}

fn collection_prefix(kind: &Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/registry/{}/{ns}/", kind.plural),
        None => format!("/registry/{}/", kind.plural),
    }
}

/// Query parameters; a malformed one is a 400 Status, not axum's plain text.
pub struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| Params(params))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The parameters of a write.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WriteParams {
    dry_run: Option<String>,
}

impl WriteParams {
    /// `dryRun=All` validates a write and answers as if it happened, without storing it.
    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::BadRequest(format!("unsupported dryRun value {other:?}: only All is supported")))
            }
        }
    }
}

/// Upstream's limit on a request body.
pub const MAX_BODY_BYTES: usize = 3 << 20;

/// How much of an oversized body is read and dropped before answering 413. Answering before the
/// client has sent it all makes HTTP/2 reset the stream, and some clients (curl) then lose the
/// answer.
const DRAIN_BYTES: usize = 16 << 20;

async fn read_body(request: axum::extract::Request) -> Result<Bytes, ApiError> {
    let mut chunks = request.into_body().into_data_stream();
    let (mut body, mut total) = (bytes::BytesMut::new(), 0usize);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        total += chunk.len();
        if total <= MAX_BODY_BYTES {
            body.extend_from_slice(&chunk);
        } else if total > DRAIN_BYTES {
            break;
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(format!("the request body is larger than {MAX_BODY_BYTES} bytes")));
    }
    Ok(body.freeze())
}

/// A request body with its content type.
pub struct JsonBody(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        // Protobuf is not served: a 415 tells client-go to send JSON instead.
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !matches!(media, "application/json" | "") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json (got {media})"
            )));
        }
        Ok(JsonBody(read_body(request).await?))
    }
}

/// A PATCH body: JSON Patch or JSON merge patch, parsed.
pub enum PatchBody {
    Json(json_patch::Patch),
    Merge(Value),
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for PatchBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        let media = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let bytes = read_body(request).await?;
        let invalid = |e: serde_json::Error| ApiError::BadRequest(format!("the patch is not valid: {e}"));
        match media.as_str() {
            "application/json-patch+json" => Ok(PatchBody::Json(serde_json::from_slice(&bytes).map_err(invalid)?)),
            "application/merge-patch+json" => Ok(PatchBody::Merge(serde_json::from_slice(&bytes).map_err(invalid)?)),
            "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
                Err(ApiError::UnsupportedMediaType(format!(
                    "{media} patches are not supported yet; use --type=merge or --type=json"
                )))
            }
            other => Err(ApiError::UnsupportedMediaType(format!("the patch content type {other:?} is not supported"))),
        }
    }
}

/// Parses a request body as an object of `kind`: 400 for malformed JSON or a wrong kind.
fn decode(kind: &Kind, body: &[u8]) -> Result<Value, ApiError> {
    let object: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    if !object.is_object() {
        return Err(ApiError::BadRequest("the request body is not a JSON object".into()));
    }
    for (field, expected) in [("apiVersion", "v1"), ("kind", kind.kind)] {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => {}
            Some(found) if found == expected => {}
            Some(found) => {
                return Err(ApiError::BadRequest(format!(
                    "the {field} in the data ({found}) does not match the expected {field} ({expected})"
                )));
            }
        }
    }
    let mut normalized = (kind.normalize)(object)
        .map_err(|e| ApiError::BadRequest(format!("the object is not a valid {}: {e}", kind.kind)))?;
    normalized["apiVersion"] = json!("v1");
    normalized["kind"] = json!(kind.kind);
    (kind.prepare)(&mut normalized);
    Ok(normalized)
}

/// Returns the stored object with its resourceVersion.
fn with_revision(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    object["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Ok(object)
}

fn encode(object: &Value) -> Result<Bytes, ApiError> {
    let mut stored = object.clone();
    if let Some(meta) = stored["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&stored).map(Bytes::from).map_err(|e| ApiError::Internal(e.to_string()))
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 ns is valid");
    now.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339 formats any UTC time")
}

/// The characters upstream draws generated name suffixes from.
const NAME_SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4();
    let suffix: String =
        uuid.as_bytes()[..5].iter().map(|b| NAME_SUFFIX_CHARS[*b as usize % NAME_SUFFIX_CHARS.len()] as char).collect();
    format!("{prefix}{suffix}")
}

fn check_name(rule: NameRule, name: &str) -> Option<String> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = match rule {
        NameRule::Dns1123Label => label(name),
        NameRule::Dns1123Subdomain => name.len() <= 253 && name.split('.').all(label),
    };
    (!ok).then(|| match rule {
        NameRule::Dns1123Label => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
             or '-', and must start and end with an alphanumeric character"
        ),
        NameRule::Dns1123Subdomain => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
        ),
    })
}

async fn create_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    if meta["name"].as_str().unwrap_or("").is_empty() {
        match meta["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => meta["name"] = json!(generated_name(prefix)),
            _ => {
                return Err(ApiError::Invalid {
                    kind: kind.kind,
                    name: String::new(),
                    causes: vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
                });
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    if let Some(message) = check_name(kind.name_rule, &name) {
        return Err(ApiError::Invalid { kind: kind.kind, name, causes: vec![("metadata.name".into(), message)] });
    }
    if let Some(ns) = namespace {
        match meta["namespace"].as_str() {
            None | Some("") => meta["namespace"] = json!(ns),
            Some(found) if found == ns => {}
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        if store
            .get(&format!("/registry/namespaces/{ns}"), None)
            .await
            .map_err(|e| ApiError::from_store(e, "namespaces", ns))?
            .is_none()
        {
            return Err(ApiError::NotFound { resource: "namespaces", name: ns.to_owned() });
        }
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now_rfc3339());
    (kind.defaults)(&mut object);
    if namespace.is_none() {
        object["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    let key = object_key(kind, namespace, &name);
    if dry_run {
        return match store.get(&key, None).await.map_err(|e| ApiError::from_store(e, kind.plural, &name))? {
            Some(_) => Err(ApiError::AlreadyExists { resource: kind.plural, name }),
            None => Ok(object),
        };
    }
    let kv = store.create(&key, encode(&object)?).await.map_err(|e| ApiError::from_store(e, kind.plural, &name))?;
    with_revision(&kv)
}

async fn get_object(store: &Store, kind: &Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    match store.get(&key, None).await.map_err(|e| ApiError::from_store(e, kind.plural, name))? {
        Some(kv) => with_revision(&kv),
        None => Err(ApiError::NotFound { resource: kind.plural, name: name.to_owned() }),
    }
}

async fn update_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if object["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::BadRequest("the name of the object does not match the name on the URL".into()));
    }
    let key = object_key(kind, namespace, name);
    let current = store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::from_store(e, kind.plural, name))?
        .ok_or_else(|| ApiError::NotFound { resource: kind.plural, name: name.to_owned() })?;
    if let (Some(ns), Some(found)) = (namespace, object["metadata"]["namespace"].as_str()) {
        if !found.is_empty() && found != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    let expected = match object["metadata"]["resourceVersion"].as_str() {
        // No resourceVersion: an unconditional update, which upstream allows for these kinds.
        None | Some("") | Some("0") => current.mod_revision,
        Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
    };
    keep_immutable(kind, &mut object, &current, namespace)?;
    if dry_run {
        return with_revision(&KeyValue { value: encode(&object)?, ..current });
    }
    let kv =
        store.update(&key, encode(&object)?, expected).await.map_err(|e| ApiError::from_store(e, kind.plural, name))?;
    with_revision(&kv)
}

/// How often a patch is re-applied when another write raced it, as upstream's GuaranteedUpdate.
const PATCH_ATTEMPTS: usize = 5;

async fn patch_object(
    store: &Store,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    patch: PatchBody,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let key = object_key(kind, namespace, name);
    let invalid = |message: String| ApiError::Invalid {
        kind: kind.kind,
        name: name.to_owned(),
        causes: vec![("patch".into(), message)],
    };
    for _ in 0..PATCH_ATTEMPTS {
        let current = store
            .get(&key, None)
            .await
            .map_err(|e| ApiError::from_store(e, kind.plural, name))?
            .ok_or_else(|| ApiError::NotFound { resource: kind.plural, name: name.to_owned() })?;
        let mut object = with_revision(&current)?;
        match &patch {
            PatchBody::Json(operations) => {
                json_patch::patch(&mut object, operations).map_err(|e| invalid(e.to_string()))?
            }
            PatchBody::Merge(merge) => json_patch::merge(&mut object, merge),
        }
        if object["metadata"]["name"].as_str() != Some(name) {
            return Err(invalid("metadata.name: field is immutable".into()));
        }
        // A resourceVersion the patch sets is a precondition; otherwise a race is retried.
        let pinned = object["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| *rv != current.mod_revision.to_string())
            .map(str::to_owned);
        let expected = match &pinned {
            Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
            None => current.mod_revision,
        };
        let mut patched = (kind.normalize)(object)
            .map_err(|e| ApiError::BadRequest(format!("the patched object is not a valid {}: {e}", kind.kind)))?;
        patched["apiVersion"] = json!("v1");
        patched["kind"] = json!(kind.kind);
        (kind.prepare)(&mut patched);
        keep_immutable(kind, &mut patched, &current, namespace)?;
        if dry_run {
            return with_revision(&KeyValue { value: encode(&patched)?, ..current });
        }
        match store.update(&key, encode(&patched)?, expected).await {
            Ok(kv) => return with_revision(&kv),
            Err(rkube_store::StoreError::Conflict { .. }) if pinned.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.plural, name)),
        }
    }
    Err(ApiError::Conflict { resource: kind.plural, name: name.to_owned() })
}

/// Carries the fields a client may not change over from the stored object, and defaults what
/// the client left out, as upstream's update strategies do.
fn keep_immutable(
    kind: &Kind,
    object: &mut Value,
    current: &KeyValue,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let stored: Value = serde_json::from_slice(&current.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    (kind.defaults)(object);
    for field in ["uid", "creationTimestamp", "namespace"] {
        object["metadata"][field] = stored["metadata"][field].clone();
    }
    // Status is written through the status subresource only.
    if stored.get("status").is_some() {
        object["status"] = stored["status"].clone();
    }
    let causes = (kind.check_update)(&stored, object);
    if !causes.is_empty() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        return Err(ApiError::Invalid { kind: kind.kind, name, causes });
    }
    if namespace.is_none() {
        object["metadata"].as_object_mut().map(|m| m.remove("namespace"));
    }
    Ok(())
}

/// A DELETE body's DeleteOptions: the resourceVersion precondition, and whether `dryRun`
/// (which kubectl sends here rather than in the query) asks for a dry run.
fn delete_options(body: &[u8]) -> Result<(Option<i64>, bool), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, false));
    }
    let options: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?;
    let expected = match options["preconditions"]["resourceVersion"].as_str() {
        Some(rv) => Some(rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?),
        None => None,
    };
    let dry_run = match &options["dryRun"] {
        Value::Null => false,
        Value::Array(values) if values.iter().all(|v| v == "All") => !values.is_empty(),
        other => return Err(ApiError::BadRequest(format!("unsupported dryRun value {other}: only All is supported"))),
    };
    Ok((expected, dry_run))
}

/// The selectors this slice understands: `metadata.name=` and `metadata.namespace=`.
struct FieldSelector {
    name: Option<String>,
    namespace: Option<String>,
}

impl FieldSelector {
    fn parse(selector: Option<&str>) -> Result<FieldSelector, ApiError> {
        let mut parsed = FieldSelector { name: None, namespace: None };
        for term in selector.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| ApiError::BadRequest(format!("invalid field selector {term:?}")))?;
            match field {
                "metadata.name" => parsed.name = Some(value.to_owned()),
                "metadata.namespace" => parsed.namespace = Some(value.to_owned()),
                other => return Err(ApiError::BadRequest(format!("field label not supported: {other}"))),
            }
        }
        Ok(parsed)
    }

    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        self.name.as_deref().is_none_or(|n| meta["name"].as_str() == Some(n))
            && self.namespace.as_deref().is_none_or(|n| meta["namespace"].as_str().unwrap_or("") == n)
    }
}

/// What a list or watch selects: field and label selectors together.
struct Filter {
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Filter {
    fn parse(params: &ListParams) -> Result<Filter, ApiError> {
        Ok(Filter {
            fields: FieldSelector::parse(params.field_selector.as_deref())?,
            labels: LabelSelector::parse(params.label_selector.as_deref().unwrap_or(""))
                .map_err(ApiError::BadRequest)?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        if !self.fields.matches(object) {
            return false;
        }
        if self.labels.is_empty() {
            return true;
        }
        let labels = object["metadata"]["labels"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        self.labels.matches(&labels)
    }
}

async fn read_collection(
    state: &State,
    kind: &'static Kind,
    namespace: Option<String>,
    params: ListParams,
    as_table: bool,
) -> Result<Response, ApiError> {
    let selector = Filter::parse(&params)?;
    let prefix = collection_prefix(kind, namespace.as_deref());
    if matches!(params.watch.as_deref(), Some("true" | "1")) {
        return watch_collection(state, kind, prefix, selector, params, as_table).await;
    }
    let mut options = ListOptions { prefix, limit: params.limit, ..Default::default() };
    if let Some(token) = params.continue_token.as_deref().filter(|t| !t.is_empty()) {
        let (revision, after) = decode_continue(token)?;
        if !after.starts_with(&options.prefix) {
            return Err(ApiError::BadRequest("the continue token was issued for another collection".into()));
        }
        options.revision = Some(revision);
        options.after = Some(after);
    }
    let page = state.store.list(&options).await.map_err(|e| match e {
        rkube_store::StoreError::Compacted { .. } => ApiError::Gone(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter."
                .into(),
        ),
        other => ApiError::from_store(other, kind.plural, ""),
    })?;
    let mut items = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        let object = with_revision(kv)?;
        if selector.matches(&object) {
            items.push(object);
        }
    }
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if page.more {
        let last = page.items.last().map(|kv| kv.key.as_str()).unwrap_or_default();
        metadata["continue"] = json!(encode_continue(page.revision, last));
    }
    if as_table {
        let include = Include::parse(params.include_object.as_deref());
        let now = time::OffsetDateTime::now_utc();
        return Ok(axum::Json(table::table(kind.columns, &items, include, metadata, now)).into_response());
    }
    Ok(axum::Json(json!({"kind": kind.list_kind, "apiVersion": "v1", "metadata": metadata, "items": items}))
        .into_response())
}

fn encode_continue(revision: i64, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let invalid = || ApiError::BadRequest("invalid continue token".into());
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision = value["rv"].as_i64().filter(|r| *r > 0).ok_or_else(invalid)?;
    let start = value["start"].as_str().filter(|s| s.starts_with("/registry/")).ok_or_else(invalid)?;
    Ok((revision, start.to_owned()))
}

/// How long a watch lasts when the client does not say, as upstream's default.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often an idle watch gets a bookmark, if it asked for them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

async fn watch_collection(
    state: &State,
    kind: &'static Kind,
    prefix: String,
    selector: Filter,
    params: ListParams,
    as_table: bool,
) -> Result<Response, ApiError> {
    let from: i64 = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => 0,
        Some(rv) => rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
    };
    // Without a resourceVersion a watch starts with the current state, as ADDED events.
    let mut initial = Vec::new();
    let start_revision = if from == 0 {
        let page = state
            .store
            .list(&ListOptions { prefix: prefix.clone(), ..Default::default() })
            .await
            .map_err(|e| ApiError::from_store(e, kind.plural, ""))?;
        for kv in &page.items {
            let object = with_revision(kv)?;
            if selector.matches(&object) {
                initial.push(json!({"type": "ADDED", "object": object}));
            }
        }
        page.revision + 1
    } else {
        from.checked_add(1).ok_or_else(|| ApiError::BadRequest(format!("invalid resourceVersion {from}")))?
    };
    let bookmarks = params.allow_watch_bookmarks.unwrap_or(false);
    let opened = state
        .store
        .watch(WatchOptions {
            prefix: prefix.clone(),
            start_revision,
            progress_interval: bookmarks.then_some(BOOKMARK_INTERVAL),
        })
        .await;
    let watch = match opened {
        Ok(watch) => watch,
        // A watch from a compacted resourceVersion is a 200 with a 410 ERROR event, as
        // upstream answers, so clients relist.
        Err(e @ rkube_store::StoreError::Compacted { .. }) => {
            let event = json!({"type": "ERROR", "object": ApiError::from_store(e, kind.plural, "").status()});
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!("{event}\n")))
                .expect("static response parts"));
        }
        Err(e) => return Err(ApiError::from_store(e, kind.plural, "")),
    };
    // 0 means the default, as upstream; a day at most keeps the deadline representable.
    let timeout = params
        .timeout_seconds
        .filter(|&t| t > 0)
        .map(|t| Duration::from_secs(t.min(86_400)))
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;

    let live = watch.filter_map(move |event| {
        let line = match event {
            Ok(WatchEvent::Put { kv, prev }) => {
                // An object entering the selection is ADDED, one leaving it DELETED (its old
                // state at the new resourceVersion), as upstream's watch cache reports them.
                let now = with_revision(&kv).ok().filter(|o| selector.matches(o));
                let before = match prev {
                    Some(p) => serde_json::from_slice::<Value>(&p.value).ok().filter(|o| selector.matches(o)),
                    // History compacted away: only the version tells a create from an update.
                    None if kv.version > 1 => now.clone(),
                    None => None,
                };
                match (before, now) {
                    (None, Some(object)) => Some(json!({"type": "ADDED", "object": object})),
                    (Some(_), Some(object)) => Some(json!({"type": "MODIFIED", "object": object})),
                    (Some(mut old), None) => {
                        old["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                        Some(json!({"type": "DELETED", "object": old}))
                    }
                    (None, None) => None,
                }
            }
            Ok(WatchEvent::Delete { revision, prev: Some(prev), .. }) => {
                let mut object: Value = serde_json::from_slice(&prev.value).unwrap_or(Value::Null);
                object["metadata"]["resourceVersion"] = json!(revision.to_string());
                selector.matches(&object).then(|| json!({"type": "DELETED", "object": object}))
            }
            // The deleted value was compacted away: name the object from its key, so clients
            // still drop it.
            Ok(WatchEvent::Delete { key, revision, prev: None }) => {
                let mut parts = key.strip_prefix(&prefix).unwrap_or_default().splitn(2, '/');
                let (first, second) = (parts.next().unwrap_or_default(), parts.next());
                let (namespace, name) = match second {
                    Some(name) => (Some(first), name),
                    None => (None, first),
                };
                let mut metadata = json!({"name": name, "resourceVersion": revision.to_string()});
                if let Some(ns) = namespace.filter(|_| kind.namespaced) {
                    metadata["namespace"] = json!(ns);
                }
                Some(
                    json!({"type": "DELETED", "object": {"kind": kind.kind, "apiVersion": "v1", "metadata": metadata}}),
                )
            }
            Ok(WatchEvent::Progress { revision }) => bookmarks.then(|| {
                json!({"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": "v1", "metadata": {"resourceVersion": revision.to_string()}
                }})
            }),
            Err(e) => Some(json!({"type": "ERROR", "object": ApiError::from_store(e, kind.plural, "").status()})),
        };
        std::future::ready(line)
    });
    // Asked for as a Table, each event's object is a one-row Table of that object.
    let include = Include::parse(params.include_object.as_deref());
    let events = futures::stream::iter(initial)
        .chain(live)
        .map(move |mut event| {
            if as_table && matches!(event["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED")) {
                let object = event["object"].take();
                let metadata = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                event["object"] =
                    table::table(kind.columns, &[object], include, metadata, time::OffsetDateTime::now_utc());
            }
            Ok::<_, std::io::Error>(Bytes::from(format!("{event}\n")))
        })
        .take_until(tokio::time::sleep_until(deadline));
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .expect("static response parts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream_rules() {
        assert!(check_name(NameRule::Dns1123Label, "web-0").is_none());
        assert!(check_name(NameRule::Dns1123Label, "Web").is_some());
        assert!(check_name(NameRule::Dns1123Label, "a.b").is_some());
        assert!(check_name(NameRule::Dns1123Subdomain, "a.b-c").is_none());
        assert!(check_name(NameRule::Dns1123Subdomain, "-a").is_some());
        assert!(check_name(NameRule::Dns1123Label, &"a".repeat(64)).is_some());
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, "/registry/configmaps/default/b");
        assert_eq!(decode_continue(&token).unwrap(), (42, "/registry/configmaps/default/b".into()));
        assert!(decode_continue("not-base64!").is_err());
        let outside = base64::engine::general_purpose::URL_SAFE.encode(r#"{"rv":3,"start":"/elsewhere"}"#);
        assert!(decode_continue(&outside).is_err());
    }

    #[test]
    fn generated_names_keep_the_prefix() {
        let name = generated_name("web-");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert!(check_name(NameRule::Dns1123Subdomain, &name).is_none());
    }

    #[test]
    fn immutable_data_stays_put() {
        let frozen = json!({"immutable": true, "data": {"k": "v"}});
        assert!(frozen_data(&frozen, &frozen).is_empty(), "metadata-only changes pass");
        let changed = json!({"immutable": true, "data": {"k": "other"}});
        assert_eq!(frozen_data(&frozen, &changed)[0].0, "data");
        let thawed = json!({"data": {"k": "v"}});
        assert_eq!(frozen_data(&frozen, &thawed)[0].0, "immutable");
        assert!(frozen_data(&thawed, &changed).is_empty(), "a mutable object may change and freeze");
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let selector = FieldSelector::parse(Some("metadata.name=a,metadata.namespace==ns")).unwrap();
        assert!(selector.matches(&json!({"metadata": {"name": "a", "namespace": "ns"}})));
        assert!(!selector.matches(&json!({"metadata": {"name": "b", "namespace": "ns"}})));
        assert!(FieldSelector::parse(Some("spec.unknown=x")).is_err());
    }
}
