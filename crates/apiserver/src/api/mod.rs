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

mod collections;
mod kinds;
mod objects;

use crate::table::{self, Column, Include};
use collections::*;
use kinds::*;
use objects::*;

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

/// The request's media type, without parameters; empty if it names none.
fn media_type(request: &axum::extract::Request) -> String {
    let header = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    header.split(';').next().unwrap_or("").trim().to_owned()
}

/// A JSON request body.
pub struct JsonBody(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, _state: &S) -> Result<Self, ApiError> {
        let media = media_type(&request);
        // Protobuf is not decoded yet. client-go does not fall back to JSON on this 415, so
        // kubectl 1.33's typed requests fail here with a clear message until it is.
        if !matches!(media.as_str(), "application/json" | "") {
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
        let media = media_type(&request);
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
