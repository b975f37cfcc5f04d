//! The node API (the kubelet's port 10250): HTTPS that only clients with a certificate from
//! the cluster CA may use (the API server's kubelet client, or an admin), serving container
//! logs, exec, attach and port-forward to the API server, which proxies the pods' `log`,
//! `exec`, `attach` and `portforward` subresources here; and `/stats/summary`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_cri::v1::{ContainerFilter, ContainerStateValue, ListContainersRequest};
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tower::Service;

use crate::Error;
use crate::cri::{CONTAINER_NAME, Cri, POD_NAME, POD_NAMESPACE};
use crate::{logs, stream};

/// The node API's certificate and who may call it.
#[derive(Clone)]
pub struct Tls {
    pub cert_pem: String,
    pub key_pem: String,
    /// Client certificates must chain to this CA.
    pub client_ca_pem: String,
}

#[derive(Clone)]
struct Ctx {
    cri: Cri,
    pod_logs: PathBuf,
    stats: Arc<crate::stats::Stats>,
}

/// Binds the node API; returns the bound address and the serving task.
pub async fn start(
    bind: SocketAddr,
    tls: &Tls,
    cri: Cri,
    pod_logs: PathBuf,
    stats: crate::stats::Stats,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()> + use<>), Error> {
    let config = Arc::new(server_config(tls)?);
    let listener = TcpListener::bind(bind).await.map_err(|e| Error::Runtime(format!("node API on {bind}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::Runtime(format!("node API on {bind}: {e}")))?;
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", axum::routing::get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", axum::routing::any(exec))
        .route("/attach/{namespace}/{pod}/{container}", axum::routing::any(attach))
        .route("/portForward/{namespace}/{pod}", axum::routing::any(port_forward))
        .route("/stats/summary", axum::routing::get(stats_summary))
        .with_state(Ctx { cri, pod_logs, stats: Arc::new(stats) });
    Ok((addr, serve(listener, tokio_rustls::TlsAcceptor::from(config), router)))
}

fn server_config(tls: &Tls) -> Result<rustls::ServerConfig, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Runtime(format!("node API TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs =
        |pem: &str| rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| fail(&e));
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&tls.client_ca_pem)? {
        roots.add(ca).map_err(|e| fail(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| fail(&e))?;
    let key = rustls_pemfile::private_key(&mut tls.key_pem.as_bytes())
        .map_err(|e| fail(&e))?
        .ok_or_else(|| fail(&"no private key"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&tls.cert_pem)?, key)
        .map_err(|e| fail(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: axum::Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |request| router.clone().call(request));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
        });
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

async fn stats_summary(State(ctx): State<Ctx>) -> Response {
    match ctx.stats.summary(&ctx.cri).await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn exec(
    State(ctx): State<Ctx>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: axum::extract::Request,
) -> Response {
    stream::handle(&ctx.cri, stream::Kind::Exec, &namespace, &pod, &container, request).await
}

async fn attach(
    State(ctx): State<Ctx>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: axum::extract::Request,
) -> Response {
    stream::handle(&ctx.cri, stream::Kind::Attach, &namespace, &pod, &container, request).await
}

async fn port_forward(
    State(ctx): State<Ctx>,
    Path((namespace, pod)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    stream::handle(&ctx.cri, stream::Kind::PortForward, &namespace, &pod, "", request).await
}

async fn container_logs(
    State(ctx): State<Ctx>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(options): Query<logs::Options>,
) -> Response {
    let Some(path) = logs::find(&ctx.pod_logs, &namespace, &pod, &container, options.previous) else {
        let message = if options.previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" has no logs on this node")
        };
        return error(if options.previous { StatusCode::BAD_REQUEST } else { StatusCode::NOT_FOUND }, message);
    };
    let since = logs::since(&options, Timestamp::now());
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::NOT_FOUND, format!("{}: {e}", path.display())),
    };
    let mut text = String::new();
    if let Err(e) = file.read_to_string(&mut text).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {e}", path.display()));
    }
    let (first, consumed) = logs::render(&text, &options, since);
    if !options.follow || options.previous {
        return ([("content-type", "text/plain")], first).into_response();
    }
    // Following: what is there, then new lines as they come, until the container stops.
    let budget = options.limit_bytes.map(|l| (l as usize).saturating_sub(first.len()));
    let follow =
        logs::Options { tail_lines: None, since_seconds: None, since_time: None, limit_bytes: None, ..options };
    let stream = async_stream(ctx, namespace, pod, container, file, consumed as u64, first, follow, budget);
    ([("content-type", "text/plain")], axum::body::Body::from_stream(stream)).into_response()
}

/// Where a followed log stands.
struct Follow {
    ctx: Ctx,
    namespace: String,
    pod: String,
    container: String,
    file: tokio::fs::File,
    offset: u64,
    first: Option<String>,
    carry: String,
    idle: u32,
    options: logs::Options,
    budget: Option<usize>,
}

#[allow(clippy::too_many_arguments)]
fn async_stream(
    ctx: Ctx,
    namespace: String,
    pod: String,
    container: String,
    file: tokio::fs::File,
    offset: u64,
    first: String,
    options: logs::Options,
    budget: Option<usize>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    let state = Follow {
        ctx,
        namespace,
        pod,
        container,
        file,
        offset,
        first: Some(first),
        carry: String::new(),
        idle: 0,
        options,
        budget,
    };
    futures::stream::unfold(state, |mut f| async move {
        if let Some(first) = f.first.take() {
            return Some((Ok(first), f));
        }
        loop {
            if f.budget == Some(0) {
                return None;
            }
            let mut chunk = String::new();
            if f.file.seek(std::io::SeekFrom::Start(f.offset)).await.is_err() {
                return None;
            }
            let read = f.file.read_to_string(&mut chunk).await.unwrap_or(0);
            f.offset += read as u64;
            f.carry.push_str(&chunk);
            let (mut out, consumed) = logs::render(&f.carry, &f.options, None);
            f.carry.drain(..consumed);
            if let Some(b) = f.budget.as_mut() {
                out.truncate((*b).min(out.len()));
                *b -= out.len();
            }
            if !out.is_empty() {
                f.idle = 0;
                return Some((Ok(out), f));
            }
            f.idle += 1;
            // Every second, whether the container still runs.
            if f.idle % 4 == 0 && !running(&f.ctx.cri, &f.namespace, &f.pod, &f.container).await {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn running(cri: &Cri, namespace: &str, pod: &str, container: &str) -> bool {
    let labels = [(POD_NAMESPACE, namespace), (POD_NAME, pod), (CONTAINER_NAME, container)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let filter =
        ContainerFilter { state: Some(ContainerStateValue { state: 1 }), label_selector: labels, ..Default::default() };
    let request = ListContainersRequest { filter: Some(filter) };
    cri.runtime.clone().list_containers(request).await.map(|r| !r.into_inner().containers.is_empty()).unwrap_or(false)
}
