//! The pods' `log`, `exec`, `attach` and `portforward` subresources, proxied to the node agent
//! that runs the pod, as upstream's API server proxies them to the kubelet: over HTTPS,
//! presenting the API server's kubelet client certificate and checking the node's serving
//! certificate against the cluster CA. Upgraded connections (SPDY, WebSocket) are relayed byte
//! for byte; the node agent speaks every protocol the clients do.

use std::sync::Arc;

use super::*;

/// How the API server reaches node agents.
#[derive(Clone)]
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<KubeletClient, crate::Error> {
        let fail = |e: &dyn std::fmt::Display| crate::Error::Tls(format!("kubelet client: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(ca.map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
        }
        let certs =
            rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| fail(&e))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| fail(&e))?
            .ok_or_else(|| fail(&"no private key"))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| fail(&e))?;
        Ok(KubeletClient { tls: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }

    /// GETs `path_and_query` from the node agent at `host:port`.
    async fn get(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        let request = axum::http::Request::get(path_and_query)
            .header("host", format!("{host}:{port}"))
            .body(axum::body::Body::empty())
            .map_err(|e| e.to_string())?;
        self.send(host, port, request).await
    }

    async fn send(
        &self,
        host: &str,
        port: u16,
        request: axum::http::Request<axum::body::Body>,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        let tcp =
            tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((host, port)))
                .await
                .map_err(|_| format!("dial tcp {host}:{port}: i/o timeout"))?
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("tls with {host}:{port}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection.with_upgrades());
        sender.send_request(request).await.map_err(|e| e.to_string())
    }
}

#[derive(serde::Deserialize)]
struct LogParams {
    container: Option<String>,
}

/// Names the pod's container a log request is for, with upstream's errors.
fn log_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let (containers, inits) = (names("containers"), names("initContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&inits).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message =
                format!("a container name must be specified for pod {name}, choose one of: [{}]", containers.join(" "));
            if !inits.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", inits.join(" ")));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

/// GET `pods/NAME/log`.
pub(super) async fn pod_log(
    state: &State,
    namespace: &str,
    name: &str,
    uri: &axum::http::Uri,
) -> Result<Response, ApiError> {
    let pod = get_object(&state.store, kinds::core("pods"), Some(namespace), name).await?;
    let params: LogParams = query(uri)?;
    let container = log_container(&pod, name, params.container.as_deref())?;
    let previous = uri.query().is_some_and(|q| q.split('&').any(|p| p == "previous=true" || p == "previous=1"));
    // A container that has not started has no logs yet, as the kubelet says.
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|f| pod["status"][f].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == container.as_str());
    if let Some(status) = &statuses {
        let waiting = &status["state"]["waiting"];
        let ran_before = status["lastState"]["terminated"].is_object();
        if waiting.is_object() && !ran_before && !previous {
            let reason = waiting["reason"].as_str().unwrap_or_default();
            return Err(ApiError::BadRequest(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )));
        }
    }
    let (kubelet, address, port) = node_agent(state, &pod, name).await?;
    let query = query_without_container(uri);
    let path = format!("/containerLogs/{namespace}/{name}/{container}?{query}");
    let response = kubelet
        .get(&address, port, &path)
        .await
        .map_err(|e| ApiError::Internal(format!("Get \"https://{address}:{port}{path}\": {e}")))?;
    if response.status() == StatusCode::OK {
        let (parts, body) = response.into_parts();
        let mut out = Response::new(axum::body::Body::new(body));
        *out.status_mut() = parts.status;
        out.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("text/plain"));
        return Ok(out);
    }
    let status = response.status();
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 64 << 10).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    Err(ApiError::BadRequest(if message.is_empty() { format!("the node agent answered {status}") } else { message }))
}

/// The node agent that runs `pod`: its client, address and port.
async fn node_agent<'a>(
    state: &'a State,
    pod: &Value,
    name: &str,
) -> Result<(&'a KubeletClient, String, u16), ApiError> {
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    };
    let node = get_object(&state.store, kinds::core("nodes"), None, node_name).await?;
    let address = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::BadRequest(format!("node {node_name} has no InternalIP address")))?
        .to_owned();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or(10250) as u16;
    let kubelet = state
        .kubelet
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("this API server cannot reach node agents".into()))?;
    Ok((kubelet, address, port))
}

fn query_without_container(uri: &axum::http::Uri) -> String {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("container="))
        .collect::<Vec<_>>()
        .join("&")
}

/// `nodes/NAME/proxy/PATH`: a GET relayed to the node agent's `/PATH` (its `/stats/summary`,
/// `/healthz`), answered with the agent's status, type and body.
pub(super) async fn node_proxy(
    state: &State,
    node_name: &str,
    path: &str,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    if request.method() != axum::http::Method::GET {
        return Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({})",
            request.method()
        )));
    }
    let pod_like = json!({"spec": {"nodeName": node_name}});
    let (kubelet, address, port) = node_agent(state, &pod_like, node_name).await?;
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let target = format!("/{path}{query}");
    let response = kubelet
        .get(&address, port, &target)
        .await
        .map_err(|e| ApiError::Internal(format!("error dialing backend: {e}")))?;
    let (parts, body) = response.into_parts();
    let mut out = Response::new(axum::body::Body::new(body));
    *out.status_mut() = parts.status;
    if let Some(kind) = parts.headers.get("content-type") {
        out.headers_mut().insert("content-type", kind.clone());
    }
    Ok(out)
}

/// `pods/NAME/exec`, `attach` and `portforward`: the client's upgrade request goes to the node
/// agent that runs the pod; after `101 Switching Protocols` the bytes flow both ways untouched.
pub(super) async fn pod_stream(
    state: &State,
    namespace: &str,
    name: &str,
    sub: Subresource,
    mut request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let pod = get_object(&state.store, kinds::core("pods"), Some(namespace), name).await?;
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if sub != Subresource::PortForward && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::BadRequest(format!(
            "cannot exec into or attach to a container in a completed pod; current phase is {phase}"
        )));
    }
    let uri = request.uri().clone();
    let path = match sub {
        Subresource::PortForward => format!("/portForward/{namespace}/{name}?{}", uri.query().unwrap_or_default()),
        _ => {
            let params: LogParams = query(&uri)?;
            let container = log_container(&pod, name, params.container.as_deref())?;
            let verb = if sub == Subresource::Exec { "exec" } else { "attach" };
            format!("/{verb}/{namespace}/{name}/{container}?{}", query_without_container(&uri))
        }
    };
    let (kubelet, address, port) = node_agent(state, &pod, name).await?;
    let mut forwarded = axum::http::Request::builder()
        .method(request.method().clone())
        .uri(&path)
        .header("host", format!("{address}:{port}"));
    for (header, value) in request.headers() {
        if rkube_core::UPGRADE_HEADERS.contains(&header.as_str()) {
            forwarded = forwarded.header(header, value);
        }
    }
    let forwarded = forwarded.body(axum::body::Body::empty()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = kubelet
        .send(&address, port, forwarded)
        .await
        .map_err(|e| ApiError::Internal(format!("error dialing backend: {e}")))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body =
            axum::body::to_bytes(axum::body::Body::new(response.into_body()), 64 << 10).await.unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(ApiError::BadRequest(if message.is_empty() {
            format!("the node agent answered {status}")
        } else {
            message
        }));
    }
    let client = hyper::upgrade::on(&mut request);
    let node = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(client), Ok(node)) = (client.await, node.await) else { return };
        let (mut a, mut b) = (hyper_util::rt::TokioIo::new(client), hyper_util::rt::TokioIo::new(node));
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    let mut out = Response::new(axum::body::Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = response.headers().clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_container_defaults_and_errors_like_upstream() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(log_container(&one, "p", None).unwrap(), "app");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(log_container(&two, "p", Some("i")).unwrap(), "i");
        let err = log_container(&two, "p", None).unwrap_err();
        assert_eq!(
            err.status()["message"],
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let err = log_container(&two, "p", Some("zzz")).unwrap_err();
        assert_eq!(err.status()["message"], "container zzz is not valid for pod p");
    }
}
