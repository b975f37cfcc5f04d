//! Routes: health, version, discovery, and the resource endpoints, served from the store.
//!
//! Objects are stored as JSON without `resourceVersion`; it is the store's `mod_revision`,
//! filled in on the way out, as upstream's etcd3 storage does.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use futures::StreamExt;
use rkube_store::{KeyValue, ListOptions, Store, WatchEvent, WatchOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::selector::LabelSelector;
use crate::status::ApiError;

mod collections;
mod defaults;
mod deletion;
mod discovery;
pub(crate) mod kinds;
mod metrics;
pub mod nodeproxy;
mod objects;
mod openapi;
mod printers;
mod priority;
mod quota;
pub mod services;
mod subresources;
mod validate;
mod versions;
mod watchcache;

use crate::table::{self, Column, Include, Shape};
use collections::*;
use deletion::*;
use kinds::*;
use objects::*;
use subresources::*;
use watchcache::{Cached, Entry, EventType, Freshness, Served, watch_line};

/// The Kubernetes version rkube implements; `/usr/bin/kubectl` picks its client by it.
pub const KUBE_MINOR: &str = "33";

#[derive(Clone)]
pub struct State {
    store: Store,
    services: services::Ranges,
    metrics: metrics::Metrics,
    watches: watchcache::WatchCache,
    quota_locks: quota::Locks,
    /// For the pods' log subresource; None where no node agent can be reached.
    kubelet: Option<nodeproxy::KubeletClient>,
}

impl State {
    pub fn new(store: Store, service_cidr: services::Cidr, kubelet: Option<nodeproxy::KubeletClient>) -> State {
        State {
            store,
            services: services::Ranges::new(service_cidr),
            metrics: metrics::Metrics::default(),
            watches: watchcache::WatchCache::default(),
            quota_locks: quota::Locks::default(),
            kubelet,
        }
    }
}

impl axum::extract::FromRef<State> for metrics::Metrics {
    fn from_ref(state: &State) -> metrics::Metrics {
        state.metrics.clone()
    }
}

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates what every cluster has: the system namespaces, the system priority classes and the
/// `kubernetes` service.
pub async fn ensure_system_objects(state: &State, port: u16) -> Result<(), crate::Error> {
    let failed =
        |what: &str, e: ApiError| crate::Error::Bootstrap(format!("cannot create {what}: {}", e.status()["message"]));
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match create_object(state, kinds::core("namespaces"), None, object, false).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(failed(&format!("namespace {name}"), e)),
        }
    }
    for (name, value, description) in priority::SYSTEM_CLASSES {
        let class = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
        });
        let kind =
            kinds::find("scheduling.k8s.io", "v1", "priorityclasses").map_err(|e| failed("priority classes", e))?;
        match create_object(state, kind, None, class, false).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(failed(&format!("priority class {name}"), e)),
        }
    }
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": state.services.cidr.first_host().to_string(),
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    match create_object(state, kinds::core("services"), Some("default"), service, false).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(failed("service default/kubernetes", e)),
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/version", get(version))
        // The Python client asks with a trailing slash; upstream answers both.
        .route("/version/", get(version))
        .route("/api", get(discovery::core_versions))
        .route("/apis", get(discovery::groups))
        .route("/metrics", get(metrics::serve))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::group_version))
        .route("/api/{*path}", any(core_request))
        .route("/apis/{*path}", any(group_request))
        .fallback(|| async { ApiError::NotFoundPath("the server could not find the requested resource".into()) })
        // read_body enforces upstream's limit itself, answering with a Status.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::measure))
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

/// `/api/v1/...`: the core group.
async fn core_request(
    AxumState(state): AxumState<State>,
    Path(path): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [version] => discovery::resources(&state, "", version, request.headers()),
        [version, rest @ ..] => serve(&state, "", version, rest, request).await,
        [] => Err(ApiError::NotFoundPath("the server could not find the requested resource".into())),
    }
}

/// `/apis/GROUP/VERSION/...`: the named groups.
async fn group_request(
    AxumState(state): AxumState<State>,
    Path(path): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [group] => discovery::group(group),
        [group, version] => discovery::resources(&state, group, version, request.headers()),
        [group, version, rest @ ..] => serve(&state, group, version, rest, request).await,
        [] => Err(ApiError::NotFoundPath("the server could not find the requested resource".into())),
    }
}

/// What a resource path names, as upstream's RequestInfo resolves it.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<Subresource>,
}

impl Target {
    fn parse(group: &str, version: &str, segments: &[&str]) -> Result<Target, ApiError> {
        let not_found = || ApiError::NotFoundPath("the server could not find the requested resource".into());
        // `namespaces/NAME/status` and `/finalize` are the namespace's own subresources.
        let (namespace, rest) = match segments {
            ["namespaces", ns, resource, ..] if !matches!(*resource, "status" | "finalize") => {
                (Some((*ns).to_owned()), &segments[2..])
            }
            _ => (None, segments),
        };
        let (plural, name, sub) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some((*name).to_owned()), None),
            [plural, name, sub] => (*plural, Some((*name).to_owned()), Some(*sub)),
            _ => return Err(not_found()),
        };
        let kind = kinds::find(group, version, plural)?;
        if namespace.is_some() && !kind.namespaced {
            return Err(not_found());
        }
        if namespace.is_none() && kind.namespaced && name.is_some() {
            return Err(not_found());
        }
        let subresource = match sub {
            None => None,
            Some(sub) => Some(kind.subresources.iter().copied().find(|s| s.name() == sub).ok_or_else(not_found)?),
        };
        Ok(Target { kind, namespace, name, subresource })
    }
}

fn not_allowed(method: &axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({method})"))
}

/// Serves one request on a resource path.
async fn serve(
    state: &State,
    group: &str,
    version: &str,
    segments: &[&str],
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::http::Method;
    // nodes/NAME/proxy/PATH...: a path of any depth, relayed to the node agent.
    if group.is_empty() && segments.len() >= 3 && segments[0] == "nodes" && segments[2] == "proxy" {
        return nodeproxy::node_proxy(state, segments[1], &segments[3..].join("/"), request).await;
    }
    let target = Target::parse(group, version, segments)?;
    let kind = target.kind;
    let method = request.method().clone();
    let headers = request.headers().clone();
    let uri = request.uri().clone();
    let list = || query::<ListParams>(&uri);
    let write = || query::<WriteParams>(&uri);
    let ns = target.namespace.as_deref();
    if kind.read_only && method != Method::GET {
        return Err(not_allowed(&method));
    }
    let json = |value: Value| axum::Json(value).into_response();
    // A namespaced kind is read across namespaces at its bare path, but written only in one.
    if kind.namespaced && ns.is_none() && method != Method::GET {
        return Err(not_allowed(&method));
    }
    if let Some(conversion) = kind.conversion {
        let name = target.name.as_deref();
        return versions::serve_converted(state, kind, conversion, ns, name, target.subresource, request).await;
    }
    match (&method, target.name.as_deref(), target.subresource) {
        (&Method::GET, None, None) => {
            if kind.read_only {
                return Ok(json(component_statuses(state, kind, &list()?, &headers).await));
            }
            read_collection(state, kind, target.namespace.clone(), list()?, table::shape(&headers)).await
        }
        (&Method::GET, Some(name), None | Some(Subresource::Status)) => {
            let object = if kind.read_only {
                component_status(state, name).await?
            } else {
                get_object(&state.store, kind, ns, name).await?
            };
            Ok(json(as_table_if(kind, object, &list()?, &headers)))
        }
        (&Method::GET, Some(name), Some(Subresource::Log)) => {
            nodeproxy::pod_log(state, ns.unwrap_or_default(), name, &uri).await
        }
        (
            &Method::GET | &Method::POST,
            Some(name),
            Some(sub @ (Subresource::Exec | Subresource::Attach | Subresource::PortForward)),
        ) => nodeproxy::pod_stream(state, ns.unwrap_or_default(), name, sub, request).await,
        (&Method::GET, Some(name), Some(Subresource::Scale)) => {
            Ok(json(scale_of(kind, &get_object(&state.store, kind, ns, name).await?)))
        }
        (&Method::POST, None, None) => {
            let params = write()?;
            let fields = params.field_validation()?;
            let object = decode(kind, body_of(request).await?, &fields)?;
            let created = create_object(state, kind, ns, object, params.dry_run()?).await?;
            Ok(warned((StatusCode::CREATED, axum::Json(created)).into_response(), &fields))
        }
        (&Method::POST, Some(name), Some(Subresource::Binding)) => {
            let body = decode_as(body_of(request).await?, "Binding")?;
            bind_pod(state, ns.unwrap_or_default(), name, body, write()?.dry_run()?).await
        }
        (&Method::POST, Some(name), Some(Subresource::Eviction)) => {
            let body = decode_as(body_of(request).await?, "Eviction")?;
            evict_pod(state, ns.unwrap_or_default(), name, body, write()?.dry_run()?).await
        }
        (&Method::PUT, Some(name), sub) => {
            let params = write()?;
            let (dry_run, fields) = (params.dry_run()?, params.field_validation()?);
            let body = body_of(request).await?;
            let updated = match sub {
                None => {
                    update_object(state, kind, ns, name, decode(kind, body, &fields)?, Scope::Object, dry_run).await?
                }
                Some(Subresource::Status) => {
                    update_object(state, kind, ns, name, decode(kind, body, &fields)?, Scope::Status, dry_run).await?
                }
                Some(Subresource::Scale) => {
                    update_scale(state, kind, ns, name, decode_as(body, "Scale")?, dry_run).await?
                }
                Some(Subresource::Finalize) => {
                    finalize_namespace(state, name, decode(kind, body, &fields)?, dry_run).await?
                }
                Some(_) => return Err(not_allowed(&method)),
            };
            Ok(warned(json(updated), &fields))
        }
        (&Method::PATCH, Some(name), sub) => {
            let params = write()?;
            let (dry_run, fields) = (params.dry_run()?, params.field_validation()?);
            let patch = PatchBody::read(request).await?;
            if let (PatchBody::Apply(applied), None) = (&patch, sub) {
                if params.field_manager.as_deref().is_none_or(str::is_empty) {
                    return Err(ApiError::BadRequest(
                        "PATCH requests of type apply must supply a field manager (the fieldManager parameter)".into(),
                    ));
                }
                // Applying an object that does not exist creates it.
                if let Err(ApiError::NotFound { .. }) = get_object(&state.store, kind, ns, name).await {
                    let mut object = decode(kind, applied.clone(), &fields)?;
                    if object["metadata"]["name"].as_str() != Some(name) {
                        return Err(ApiError::BadRequest(
                            "the name of the object does not match the name on the URL".into(),
                        ));
                    }
                    object["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
                    let created = create_object(state, kind, ns, object, dry_run).await?;
                    return Ok(warned((StatusCode::CREATED, axum::Json(created)).into_response(), &fields));
                }
            }
            let patched = match sub {
                None => patch_object(state, kind, ns, name, patch, Scope::Object, dry_run, &fields).await?,
                Some(Subresource::Status) => {
                    patch_object(state, kind, ns, name, patch, Scope::Status, dry_run, &fields).await?
                }
                Some(Subresource::Scale) => patch_scale(state, kind, ns, name, patch, dry_run).await?,
                Some(_) => return Err(not_allowed(&method)),
            };
            Ok(warned(json(patched), &fields))
        }
        (&Method::DELETE, Some(name), None) => {
            let options = DeleteOptions::parse(body_of(request).await?, &write()?)?;
            delete_object(state, kind, ns, name, options).await
        }
        (&Method::DELETE, None, None) if kind.verbs().contains(&"deletecollection") => {
            let options = DeleteOptions::parse(body_of(request).await?, &write()?)?;
            delete_collection(state, kind, ns, list()?, options).await.map(json)
        }
        _ => Err(not_allowed(&method)),
    }
}

/// Adds a write's warnings (unknown fields, in Warn mode) as upstream's `Warning` headers, which
/// kubectl prints.
fn warned(mut response: Response, fields: &FieldValidation) -> Response {
    for warning in fields.warnings() {
        let text = format!("299 - {}", serde_json::Value::String(warning));
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Query parameters; a malformed one is a 400 Status, not axum's plain text.
fn query<T: serde::de::DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri).map(|Query(p)| p).map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    watch: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    resource_version: Option<String>,
    resource_version_match: Option<String>,
    field_selector: Option<String>,
    label_selector: Option<String>,
    timeout_seconds: Option<u64>,
    allow_watch_bookmarks: Option<bool>,
    include_object: Option<String>,
}

/// A single object, as a one-row Table or as its metadata alone if the client asked.
fn as_table_if(kind: &Kind, object: Value, params: &ListParams, headers: &HeaderMap) -> Value {
    match table::shape(headers) {
        table::Shape::Full => return object,
        table::Shape::Metadata => return partial(&object),
        table::Shape::Table => {}
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

/// The parameters of a write.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WriteParams {
    dry_run: Option<String>,
    field_validation: Option<String>,
    field_manager: Option<String>,
    /// DELETE's options may come in the query too.
    pub(super) grace_period_seconds: Option<i64>,
    pub(super) propagation_policy: Option<String>,
}

impl WriteParams {
    /// `dryRun=All` validates a write and answers as if it happened, without storing it.
    fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        FieldValidation::parse(self.field_validation.as_deref())
    }

    pub(super) fn dry_run(&self) -> Result<bool, ApiError> {
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

/// A request body as JSON: sent as JSON, or as Kubernetes protobuf (which kubectl 1.33 and
/// client-go's typed clients send for built-in kinds, with no fallback). Null if empty.
async fn body_of(request: axum::extract::Request) -> Result<Value, ApiError> {
    let media = media_type(&request);
    match media.as_str() {
        "application/json" | "" => {
            let bytes = read_body(request).await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
        }
        "application/yaml" => {
            let bytes = read_body(request).await?;
            yaml(&bytes)
        }
        rkube_core::protobuf::CONTENT_TYPE => {
            let bytes = read_body(request).await?;
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            rkube_core::protobuf::decode(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("the protobuf request body cannot be decoded: {e}")))
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, \
             application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

/// A YAML body as JSON (JSON is YAML too); empty is null.
fn yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::BadRequest("the YAML body is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_saphyr::from_str(text).map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {e}")))
}

/// A PATCH body, parsed: JSON Patch, JSON merge patch or strategic merge patch.
pub enum PatchBody {
    Json(json_patch::Patch),
    Merge(Value),
    Strategic(Value),
    /// Server-side apply: the whole intended object.
    Apply(Value),
}

impl PatchBody {
    /// The patch as JSON, for messages.
    fn as_json(&self) -> Value {
        match self {
            PatchBody::Json(operations) => serde_json::to_value(operations).unwrap_or_default(),
            PatchBody::Merge(patch) | PatchBody::Strategic(patch) | PatchBody::Apply(patch) => patch.clone(),
        }
    }

    async fn read(request: axum::extract::Request) -> Result<PatchBody, ApiError> {
        let media = media_type(&request);
        let bytes = read_body(request).await?;
        let invalid = |e: serde_json::Error| ApiError::BadRequest(format!("the patch is not valid: {e}"));
        match media.as_str() {
            "application/json-patch+json" => Ok(PatchBody::Json(serde_json::from_slice(&bytes).map_err(invalid)?)),
            "application/merge-patch+json" => Ok(PatchBody::Merge(serde_json::from_slice(&bytes).map_err(invalid)?)),
            "application/strategic-merge-patch+json" => {
                Ok(PatchBody::Strategic(serde_json::from_slice(&bytes).map_err(invalid)?))
            }
            "application/apply-patch+yaml" => match yaml(&bytes)? {
                object @ Value::Object(_) => Ok(PatchBody::Apply(object)),
                _ => Err(ApiError::BadRequest("an apply patch must be an object".into())),
            },
            other => Err(ApiError::UnsupportedMediaType(format!("the patch content type {other:?} is not supported"))),
        }
    }
}
