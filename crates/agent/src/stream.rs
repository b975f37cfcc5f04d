//! exec, attach and port-forward on the node API. The container runtime's streaming server
//! does the work (CRI Exec, Attach and PortForward hand back its URL); the node API passes each
//! client's connection to it, as the kubelet does:
//! - SPDY clients (kubectl 1.29 and older), and port-forward over WebSocket (the Python
//!   client): the upgrade request is forwarded, and then the bytes, untouched;
//! - exec and attach over WebSocket `v5.channel.k8s.io` (kubectl 1.30 and later), which
//!   runtimes do not speak, and `v4.channel.k8s.io` (the Python client, whose text frames
//!   containerd's server drops): translated into SPDY streams, as upstream's API server
//!   translates them;
//! - kubectl's tunnelled port-forward (1.31 and later: SPDY inside WebSocket binary messages):
//!   unwrapped onto a SPDY connection to the runtime.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    AttachRequest, ContainerFilter, ContainerStateValue, ExecRequest, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxFilter, PodSandboxStateValue, PortForwardRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use crate::cri::{CONTAINER_NAME, Cri, POD_NAME, POD_NAMESPACE};
use crate::spdy::{self, Frame};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const TUNNELED_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// What a remote command asks for, from the query string.
#[derive(Default, Debug, PartialEq, Eq)]
struct Options {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    ports: Vec<i32>,
}

fn options(uri: &Uri) -> Result<Options, String> {
    let mut o = Options::default();
    let truthy = |v: &str| matches!(v, "true" | "1" | "True");
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match &*k {
            "command" => o.command.push(v.into_owned()),
            "stdin" => o.stdin = truthy(&v),
            "stdout" => o.stdout = truthy(&v),
            "stderr" => o.stderr = truthy(&v),
            "tty" => o.tty = truthy(&v),
            "ports" | "port" => {
                for p in v.split(',') {
                    o.ports.push(p.trim().parse().map_err(|_| format!("invalid port {p:?}"))?);
                }
            }
            _ => {}
        }
    }
    Ok(o)
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// Handles `/exec|attach/NAMESPACE/POD/CONTAINER` and `/portForward/NAMESPACE/POD`.
pub async fn handle(cri: &Cri, kind: Kind, namespace: &str, pod: &str, container: &str, request: Request) -> Response {
    let opts = match options(request.uri()) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if kind == Kind::Exec && opts.command.is_empty() {
        return error(StatusCode::BAD_REQUEST, "you must specify at least 1 command".into());
    }
    let url = match runtime_url(cri, kind, namespace, pod, container, &opts).await {
        Ok(url) => url,
        Err(response) => return response,
    };
    let protocols: Vec<String> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match kind {
        Kind::Exec | Kind::Attach if websocket && protocols.iter().any(|p| p == V5) => {
            translate(&url, request, opts, V5).await
        }
        Kind::Exec | Kind::Attach if websocket && protocols.iter().any(|p| p == V4) => {
            translate(&url, request, opts, V4).await
        }
        Kind::PortForward if websocket && protocols.iter().any(|p| p == TUNNELED_PORT_FORWARD) => {
            unwrap_tunnel(&url, request).await
        }
        _ => relay(&url, request).await,
    }
}

/// Asks the runtime for the streaming URL of this request.
async fn runtime_url(
    cri: &Cri,
    kind: Kind,
    namespace: &str,
    pod: &str,
    container: &str,
    opts: &Options,
) -> Result<String, Response> {
    let mut rt = cri.runtime.clone();
    let mut labels: HashMap<String, String> =
        [(POD_NAMESPACE, namespace), (POD_NAME, pod)].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let failed =
        |what: &str, e: tonic::Status| error(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {}", e.message()));
    if kind == Kind::PortForward {
        let filter = PodSandboxFilter {
            state: Some(PodSandboxStateValue { state: 0 }),
            label_selector: labels,
            ..Default::default()
        };
        let sandboxes = rt
            .list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })
            .await
            .map_err(|e| failed("listing sandboxes", e))?
            .into_inner()
            .items;
        let Some(sandbox) = sandboxes.into_iter().max_by_key(|s| s.created_at) else {
            return Err(error(StatusCode::NOT_FOUND, format!("pod \"{pod}\" has no running sandbox on this node")));
        };
        let request = PortForwardRequest { pod_sandbox_id: sandbox.id, port: opts.ports.clone() };
        return Ok(rt.port_forward(request).await.map_err(|e| failed("port forward", e))?.into_inner().url);
    }
    labels.insert(CONTAINER_NAME.to_owned(), container.to_owned());
    let filter =
        ContainerFilter { state: Some(ContainerStateValue { state: 1 }), label_selector: labels, ..Default::default() };
    let containers = rt
        .list_containers(ListContainersRequest { filter: Some(filter) })
        .await
        .map_err(|e| failed("listing containers", e))?
        .into_inner()
        .containers;
    let Some(found) = containers.into_iter().max_by_key(|c| c.created_at) else {
        return Err(error(StatusCode::NOT_FOUND, format!("container not found (\"{container}\")")));
    };
    let url = if kind == Kind::Exec {
        let request = ExecRequest {
            container_id: found.id,
            cmd: opts.command.clone(),
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr && !opts.tty,
        };
        rt.exec(request).await.map_err(|e| failed("exec", e))?.into_inner().url
    } else {
        let request = AttachRequest {
            container_id: found.id,
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr: opts.stderr && !opts.tty,
        };
        rt.attach(request).await.map_err(|e| failed("attach", e))?.into_inner().url
    };
    Ok(url)
}

/// Sends an upgrade request to the runtime's streaming server; on `101 Switching Protocols`
/// returns its response head and the upgraded connection, otherwise the runtime's answer.
async fn upgrade(
    url: &str,
    method: Method,
    headers: HeaderMap,
) -> Result<(axum::http::response::Parts, hyper::upgrade::Upgraded), Response> {
    let bad_gateway = |e: &dyn std::fmt::Display| error(StatusCode::BAD_GATEWAY, format!("{url}: {e}"));
    let uri: Uri = url.parse().map_err(|e| bad_gateway(&e))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_gateway(&"only plain HTTP streaming servers are supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad_gateway(&"no host"))?.to_string();
    let tcp = tokio::net::TcpStream::connect(&authority).await.map_err(|e| bad_gateway(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| bad_gateway(&e))?;
    tokio::spawn(connection.with_upgrades());
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(header::HOST, &authority);
    if let Some(h) = request.headers_mut() {
        h.extend(headers);
    }
    let request = request.body(Body::empty()).map_err(|e| bad_gateway(&e))?;
    let mut response = sender.send_request(request).await.map_err(|e| bad_gateway(&e))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(Body::new(body), 64 << 10).await.unwrap_or_default();
        return Err(Response::from_parts(parts, Body::from(body)));
    }
    let upgraded = hyper::upgrade::on(&mut response).await.map_err(|e| bad_gateway(&e))?;
    Ok((response.into_parts().0, upgraded))
}

/// The client's negotiation goes to the runtime as it is, and so do the bytes after it.
async fn relay(url: &str, mut request: Request) -> Response {
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers() {
        if rkube_core::UPGRADE_HEADERS.contains(&name.as_str()) {
            headers.append(name, value.clone());
        }
    }
    let client = hyper::upgrade::on(&mut request);
    let (parts, runtime) = match upgrade(url, request.method().clone(), headers).await {
        Ok(up) => up,
        Err(response) => return response,
    };
    tokio::spawn(async move {
        let Ok(client) = client.await else { return };
        let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(runtime));
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = parts.headers;
    response
}

/// A SPDY connection to the runtime speaking `protocol`.
async fn spdy_to_runtime(url: &str, protocol: &'static str) -> Result<hyper::upgrade::Upgraded, Response> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert("x-stream-protocol-version", HeaderValue::from_static(protocol));
    Ok(upgrade(url, Method::POST, headers).await?.1)
}

/// Accepts the client's WebSocket with `protocol`, runs `session` on it once upgraded.
fn accept_websocket<F, Fut>(mut request: Request, protocol: &'static str, session: F) -> Response
where
    F: FnOnce(WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key".into());
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let client = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(client) = client.await else { return };
        session(WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

/// A v5 or v4 WebSocket (the same channels; v5 adds closing one), served by opening the
/// matching SPDY streams on the runtime.
async fn translate(url: &str, request: Request, opts: Options, protocol: &'static str) -> Response {
    let runtime = match spdy_to_runtime(url, V4).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    accept_websocket(request, protocol, move |ws| async move {
        let spdy = tokio_util::codec::Framed::new(TokioIo::new(runtime), spdy::Codec::default());
        if let Err(e) = channel_session(ws, spdy, opts).await {
            tracing::debug!("exec stream: {e}");
        }
    })
}

/// v5 channels: what each carries and its SPDY stream type.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

async fn channel_session<W, S>(ws: W, spdy: S, opts: Options) -> Result<(), String>
where
    W: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send
        + 'static,
    S: futures::Stream<Item = Result<Frame, spdy::Error>>
        + futures::Sink<Frame, Error = spdy::Error>
        + Unpin
        + Send
        + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut sp_tx, mut sp_rx) = spdy.split();
    // The client opens every stream, error first, with odd ids.
    let mut wanted = vec![(ERROR, "error")];
    if opts.stdin {
        wanted.push((STDIN, "stdin"));
    }
    if opts.stdout {
        wanted.push((STDOUT, "stdout"));
    }
    if opts.stderr && !opts.tty {
        wanted.push((STDERR, "stderr"));
    }
    if opts.tty {
        wanted.push((RESIZE, "resize"));
    }
    let mut by_channel = HashMap::new();
    let mut by_id = HashMap::new();
    for (i, (channel, kind)) in wanted.into_iter().enumerate() {
        let id = 2 * i as u32 + 1;
        let headers = vec![("streamtype".to_owned(), kind.to_owned())];
        sp_tx.send(Frame::SynStream { id, fin: false, headers }).await.map_err(|e| e.to_string())?;
        by_channel.insert(channel, id);
        by_id.insert(id, channel);
    }
    // Each side has one writer task fed by a queue, so neither direction ever waits on the
    // other: a client pushing stdin never stops the output from being read (upstream's
    // translator copies each direction in its own goroutine).
    let (to_runtime, mut runtime_queue) = tokio::sync::mpsc::channel::<Frame>(64);
    let runtime_writer = tokio::spawn(async move {
        while let Some(frame) = runtime_queue.recv().await {
            if sp_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let _runtime_writer = crate::AbortOnDrop(runtime_writer);
    // Streams the runtime writes to, until each has ended; and the error stream.
    let mut open: Vec<u32> = [ERROR, STDOUT, STDERR].iter().filter_map(|c| by_channel.get(c).copied()).collect();
    let error_id = by_channel[&ERROR];
    // Client to runtime: stdin, resize and v5's close of stdin.
    let pings = to_runtime.clone();
    let input = async move {
        while let Some(message) = ws_rx.next().await {
            let data = match message {
                Ok(Message::Binary(data)) => data,
                // The Python client sends strings as text frames, channel byte first.
                Ok(Message::Text(text)) => Bytes::copy_from_slice(text.as_bytes()),
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => continue,
            };
            let frame = match data.first() {
                Some(&CLOSE) if data.len() > 1 => {
                    by_channel.get(&data[1]).map(|&id| Frame::Data { id, fin: true, data: Bytes::new() })
                }
                Some(&channel @ (STDIN | RESIZE)) => {
                    by_channel.get(&channel).map(|&id| Frame::Data { id, fin: false, data: data.slice(1..) })
                }
                _ => None,
            };
            let Some(frame) = frame else { continue };
            if to_runtime.send(frame).await.is_err() {
                return;
            }
        }
    };
    // Runtime to client: output, and the error stream's status, until every output ended.
    let output = async move {
        // Whether the runtime said anything on the error stream: v4 always writes a status,
        // Success included, before it closes.
        let mut error_said = false;
        while !open.is_empty() {
            match sp_rx.next().await {
                Some(Ok(Frame::Data { id, fin, data })) => {
                    error_said |= id == error_id && !data.is_empty();
                    if let (Some(&channel), false) = (by_id.get(&id), data.is_empty()) {
                        let mut message = Vec::with_capacity(data.len() + 1);
                        message.push(channel);
                        message.extend_from_slice(&data);
                        if ws_tx.send(Message::Binary(message.into())).await.is_err() {
                            return;
                        }
                    }
                    if fin {
                        open.retain(|&o| o != id);
                    }
                }
                Some(Ok(Frame::RstStream { id, .. })) => open.retain(|&o| o != id),
                Some(Ok(Frame::Ping { id })) => {
                    let _ = pings.send(Frame::Ping { id }).await;
                }
                Some(Ok(Frame::SynStream { id, .. })) => {
                    let _ = pings.send(Frame::RstStream { id, status: spdy::REFUSED_STREAM }).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        // A runtime connection that ended before the command's status came is a failure,
        // never an empty (successful) error stream.
        if !error_said {
            let status = serde_json::json!({
                "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
                "message": "error: the container runtime's stream ended before the command's status",
            });
            let mut message = vec![ERROR];
            message.extend_from_slice(status.to_string().as_bytes());
            let _ = ws_tx.send(Message::Binary(message.into())).await;
        }
        // A normal close tells the client the error stream is complete.
        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = ws_tx.send(Message::Close(Some(close))).await;
        let _ = ws_tx.flush().await;
    };
    // The session ends with the output; a client that goes away ends it too.
    tokio::pin!(output);
    tokio::select! {
        () = &mut output => {}
        () = input => {}
    }
    Ok(())
}

/// kubectl's tunnelled port-forward: SPDY bytes inside WebSocket binary messages, carried to a
/// SPDY connection on the runtime.
async fn unwrap_tunnel(url: &str, request: Request) -> Response {
    let runtime = match spdy_to_runtime(url, "portforward.k8s.io").await {
        Ok(c) => c,
        Err(response) => return response,
    };
    accept_websocket(request, TUNNELED_PORT_FORWARD, move |ws| async move {
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(runtime));
        // The two directions run side by side, so a slow writer never stops the reader.
        let upstream = async move {
            while let Some(Ok(message)) = ws_rx.next().await {
                match message {
                    Message::Binary(data) if wr.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let downstream = async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws_tx.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
            let _ = ws_tx.send(Message::Close(Some(close))).await;
        };
        tokio::select! {
            () = upstream => {}
            () = downstream => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_query() {
        let uri: Uri = "/exec/ns/p/c?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=1&tty=false&stderr=true"
            .parse()
            .unwrap();
        let o = options(&uri).unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let uri: Uri = "/portForward/ns/p?ports=80,8080".parse().unwrap();
        assert_eq!(options(&uri).unwrap().ports, [80, 8080]);
        let uri: Uri = "/portForward/ns/p?ports=http".parse().unwrap();
        assert!(options(&uri).is_err());
    }
}
