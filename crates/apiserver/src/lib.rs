//! The API server: the Kubernetes REST API over HTTPS, in front of the store.
//!
//! It is the only component that touches the store; everything else, rkube's own control loops
//! included, goes through it. It knows Kubernetes objects, HTTP and `Status`; it knows nothing
//! of containers or nodes' internals.

pub mod api;
pub mod join;
pub mod pki;
mod selector;
mod status;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rkube_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::Service;

pub use status::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pki: {0}")]
    Pki(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("token file {path}: {message}")]
    Tokens { path: PathBuf, message: String },
    #[error("cannot create the system objects: {0}")]
    Bootstrap(String),
    #[error("store: {0}")]
    Store(#[from] rkube_store::StoreError),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    /// A `--token-auth-file`: lines of `token,user,uid[,"group1,group2"]`.
    pub token_file: Option<PathBuf>,
    /// The range services' cluster IPs come from.
    pub service_cidr: api::services::Cidr,
}

/// A running API server. Dropping it stops accepting connections and ends open ones.
pub struct Server {
    addr: SocketAddr,
    /// The routes with authentication, for in-process clients.
    router: axum::Router,
    tasks: JoinSet<()>,
}

impl Server {
    /// Starts serving: makes or loads the PKI, writes `DATA_DIR/kubeconfig`, binds, and
    /// returns once the server accepts connections.
    pub async fn start(config: Config, store: Store) -> Result<Server, Error> {
        let started = Instant::now();
        let pki = pki::Pki::load_or_create(&config.data_dir, &[config.bind.ip()])?;
        let tokens = match &config.token_file {
            Some(path) => Tokens::load(path)?,
            None => Tokens::default(),
        };
        let tls = tls_config(&pki)?;
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| Error::Listen { addr: config.bind, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen { addr: config.bind, source })?;
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
        let url = match addr {
            SocketAddr::V6(_) if !addr.ip().is_unspecified() => format!("https://[{host}]:{}", addr.port()),
            _ => format!("https://{host}:{}", addr.port()),
        };
        pki::write_file(&config.data_dir.join("kubeconfig"), pki.admin_kubeconfig(&url).as_bytes(), true)?;

        let client = pki::kubelet_client(&config.data_dir)?;
        let kubelet = api::nodeproxy::KubeletClient::new(&pki.ca_cert, &client.cert, &client.key)?;
        let state = api::State::new(store, config.service_cidr, Some(kubelet));
        api::ensure_system_objects(&state, addr.port()).await?;
        // Joining nodes authenticate with the join token's secret, which may call nothing else.
        let join_token = join::token(&config.data_dir, &pki.ca_cert)?;
        let mut tokens = tokens;
        if let Ok((_, secret)) = join::parse_token(&join_token) {
            let user = User { name: join::BOOTSTRAP_USER.into(), groups: vec![join::BOOTSTRAP_GROUP.into()] };
            tokens.0.insert(secret.to_owned(), user);
        }
        let joins = join::router(join::JoinState { data_dir: config.data_dir.clone(), ca_pem: pki.ca_cert.clone() });
        let router =
            api::router(state).merge(joins).layer(axum::middleware::from_fn_with_state(Arc::new(tokens), authenticate));
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)), router.clone()));
        tracing::info!("API server ready on {url} in {:?}", started.elapsed());
        Ok(Server { addr, router, tasks })
    }

    /// A transport to this server from inside its own process, as `user`, for a client such
    /// as `kube::Client::new`. Requests skip TLS, TCP and HTTP/2 framing but nothing else:
    /// authentication, metrics, handlers and the store are the same as any client's.
    pub fn in_process(&self, user: User) -> InProcess {
        InProcess { router: self.router.clone(), user }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server stops (it stops only on an error of its listener).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn tls_config(pki: &pki::Pki) -> Result<rustls::ServerConfig, Error> {
    let tls_error = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem_certs = |pem: &str| {
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| tls_error(&e))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&pki.ca_cert)? {
        roots.add(ca).map_err(|e| tls_error(&e))?;
    }
    // A client certificate is optional at the TLS layer: requests without one may still bring a
    // bearer token, and health checks need neither.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error(&e))?;
    let key = rustls_pemfile::private_key(&mut pki.server_key.as_bytes())
        .map_err(|e| tls_error(&e))?
        .ok_or_else(|| Error::Tls("the server key file holds no key".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem_certs(&pki.server_cert)?, key)
        .map_err(|e| tls_error(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until dropped; each connection is its own task, ended with the server.
async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: axum::Router) {
    let mut connections = JoinSet::new();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            // A client that never finishes its handshake does not hold a task for long.
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else { return };
            let peer =
                tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).and_then(|der| user_from_cert(der));
            let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                if let Some(user) = &peer {
                    request.extensions_mut().insert(CertUser(user.clone()));
                }
                router.clone().call(request)
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // With a timer, HTTP/1 enforces its header-read timeout on slow clients.
            builder.http1().timer(hyper_util::rt::TokioTimer::new());
            builder.http2().timer(hyper_util::rt::TokioTimer::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
        });
    }
}

/// Calls the API server's routes directly (see [`Server::in_process`]).
#[derive(Clone)]
pub struct InProcess {
    router: axum::Router,
    user: User,
}

impl<B> Service<axum::http::Request<B>> for InProcess
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use futures::FutureExt;
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(CertUser(self.user.clone()));
        // A handler that panicked would end only its connection's task over HTTPS; here it
        // must not take the calling control loop with it.
        std::panic::AssertUnwindSafe(self.router.call(request))
            .catch_unwind()
            .map(|result| match result {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(ApiError::Internal("the request handler panicked".into()).into_response()),
            })
            .boxed()
    }
}

/// Who is making a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The user named by a verified client certificate: CN is the name, O the groups.
#[derive(Clone)]
struct CertUser(User);

fn user_from_cert(der: &rustls::pki_types::CertificateDer<'_>) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Some(User { name, groups })
}

/// Bearer tokens from a token file.
#[derive(Default)]
struct Tokens(std::collections::HashMap<String, User>);

impl Tokens {
    fn load(path: &std::path::Path) -> Result<Tokens, Error> {
        let fail = |message: String| Error::Tokens { path: path.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let mut tokens = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let mut fields = line.splitn(4, ',').map(str::trim);
            let (Some(token), Some(user), Some(_uid)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(fail(format!("line {}: expected token,user,uid[,\"groups\"]", n + 1)));
            };
            if token.is_empty() || user.is_empty() {
                return Err(fail(format!("line {}: the token and the user must not be empty", n + 1)));
            }
            let groups = fields
                .next()
                .map(|g| g.trim_matches('"').split(',').map(str::to_owned).filter(|g| !g.is_empty()).collect())
                .unwrap_or_default();
            tokens.insert(token.to_owned(), User { name: user.to_owned(), groups });
        }
        Ok(Tokens(tokens))
    }
}

/// Health and version answer anyone, as upstream's do; everything else needs a user.
async fn authenticate(
    axum::extract::State(tokens): axum::extract::State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = request.extensions().get::<CertUser>().map(|c| c.0.clone()).or_else(|| {
        let header = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = header.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return None;
        }
        tokens.0.get(token.trim()).cloned()
    });
    match user {
        Some(user)
            if user.groups.iter().any(|g| g == join::BOOTSTRAP_GROUP) && request.uri().path() != join::JOIN_PATH =>
        {
            let (user, path) = (&user.name, request.uri().path());
            ApiError::ForbiddenRequest(format!(
                "forbidden: User \"{user}\" cannot use path \"{path}\": a join token only joins nodes"
            ))
            .into_response()
        }
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None if matches!(
            request.uri().path(),
            "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" | join::CA_PATH
        ) =>
        {
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_parse_as_upstream_token_auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "abc, alice ,1,\"dev,ops\"\n\nxyz,bob,2\n").unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.0["abc"], User { name: "alice".into(), groups: vec!["dev".into(), "ops".into()] });
        assert_eq!(tokens.0["xyz"].groups, Vec::<String>::new());
        for bad in [",alice,1\n", "abc,,1\n", "abc,alice\n"] {
            std::fs::write(&path, bad).unwrap();
            let err = Tokens::load(&path).err().expect("refused");
            assert!(err.to_string().contains("line 1"), "{bad:?}: {err}");
        }
    }
}
