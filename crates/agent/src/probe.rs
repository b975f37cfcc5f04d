//! Liveness, readiness and startup probes (exec through CRI, httpGet over HTTP or HTTPS,
//! tcpSocket), one task
//! per running container that has any, as the kubelet's probe workers. Results go to the pod
//! worker, which reports `ready` and `started`; a failed liveness or startup probe stops the
//! container, and the worker restarts it by the pod's restart policy.

use std::time::Duration;

use k8s_cri::v1::{ExecSyncRequest, StopContainerRequest};
use k8s_openapi::api::core::v1::{Container as SpecContainer, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rkube_controllers::events::{Recorder, Type};
use tokio::sync::{Notify, watch};

use crate::cri::Cri;

/// What the probes have found so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The readiness probe passes (true at once when there is none).
    pub ready: bool,
    /// The startup probe has passed (true at once when there is none).
    pub started: bool,
}

/// Consecutive results against a probe's thresholds: upstream's worker logic.
#[derive(Debug)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    pub result: Option<bool>,
}

impl Tracker {
    pub fn new(probe: &Probe) -> Tracker {
        Tracker {
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            successes: 0,
            failures: 0,
            result: None,
        }
    }

    /// Records one outcome; returns the settled result when it changes.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let settled = if ok && self.successes >= self.success_threshold {
            Some(true)
        } else if !ok && self.failures >= self.failure_threshold {
            Some(false)
        } else {
            None
        };
        match settled {
            Some(r) if self.result != Some(r) => {
                self.result = Some(r);
                Some(r)
            }
            _ => None,
        }
    }
}

/// Everything a probe task needs.
pub struct Target {
    pub cri: Cri,
    pub recorder: Recorder,
    pub pod: Pod,
    pub container: SpecContainer,
    pub container_id: String,
    /// Where httpGet and tcpSocket probes connect (the pod IP).
    pub ip: String,
    /// Nanoseconds since the epoch at which the container started.
    pub started_at: i64,
}

pub fn has_probes(c: &SpecContainer) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

pub fn initial(c: &SpecContainer) -> Found {
    Found { ready: c.readiness_probe.is_none(), started: c.startup_probe.is_none() }
}

/// Probes until the task is dropped (the container stopped), sending each change.
pub async fn run(target: Target, found: watch::Sender<Found>, wake: std::sync::Arc<Notify>) {
    let c = target.container.clone();
    let mut startup = c.startup_probe.as_ref().map(|p| (p.clone(), Tracker::new(p)));
    let mut liveness = c.liveness_probe.as_ref().map(|p| (p.clone(), Tracker::new(p)));
    let mut readiness = c.readiness_probe.as_ref().map(|p| (p.clone(), Tracker::new(p)));
    let since_start = || {
        let now = k8s_openapi::jiff::Timestamp::now().as_nanosecond() as i64;
        Duration::from_nanos(now.saturating_sub(target.started_at).max(0) as u64)
    };
    let mut next_due = [Duration::ZERO; 3];
    loop {
        let mut state = *found.borrow();
        // Each probe runs on its own period, after its initial delay.
        let probes: [(&str, Option<&mut (Probe, Tracker)>); 3] =
            [("Startup", startup.as_mut()), ("Liveness", liveness.as_mut()), ("Readiness", readiness.as_mut())];
        let mut sleep = Duration::from_secs(3600);
        for (i, (kind, probe)) in probes.into_iter().enumerate() {
            let Some((spec, tracker)) = probe else { continue };
            // Liveness and readiness wait until the startup probe has passed.
            if i > 0 && !state.started {
                continue;
            }
            if i == 0 && state.started {
                continue;
            }
            let elapsed = since_start();
            let delay = Duration::from_secs(spec.initial_delay_seconds.unwrap_or(0).max(0) as u64);
            let due = next_due[i].max(delay);
            if elapsed < due {
                sleep = sleep.min(due - elapsed);
                continue;
            }
            let period = Duration::from_secs(spec.period_seconds.unwrap_or(10).max(1) as u64);
            next_due[i] = elapsed + period;
            sleep = sleep.min(period);
            let outcome = check(&target, spec).await;
            if let Err(why) = &outcome {
                let message = format!("{kind} probe failed: {why}");
                target.recorder.record(&target.pod, Type::Warning, "Unhealthy", "Probing", message);
            }
            let Some(settled) = tracker.observe(outcome.is_ok()) else { continue };
            match (kind, settled) {
                ("Startup", true) => state.started = true,
                ("Readiness", r) => state.ready = r,
                ("Liveness" | "Startup", false) => {
                    let message =
                        format!("Container {} failed {} probe, will be restarted", c.name, kind.to_lowercase());
                    target.recorder.record(&target.pod, Type::Normal, "Killing", "Killing", message);
                    let grace = spec
                        .termination_grace_period_seconds
                        .or(target.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                        .unwrap_or(30);
                    let (grace, failed) =
                        crate::hooks::pre_stop(&target.cri, &c, &target.container_id, &target.ip, grace).await;
                    if failed.is_some() {
                        let message = "PreStopHook failed".to_owned();
                        target.recorder.record(&target.pod, Type::Warning, "FailedPreStopHook", "Killing", message);
                    }
                    let request = StopContainerRequest { container_id: target.container_id.clone(), timeout: grace };
                    let _ = target.cri.runtime.clone().stop_container(request).await;
                    state.ready = false;
                    found.send_replace(state);
                    wake.notify_one();
                    return;
                }
                _ => {}
            }
            if *found.borrow() != state {
                found.send_replace(state);
                wake.notify_one();
            }
        }
        tokio::time::sleep(sleep.max(Duration::from_millis(100))).await;
    }
}

fn port(c: &SpecContainer, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// One probe attempt; the error is upstream's failure output.
async fn check(target: &Target, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let c = &target.container;
    if let Some(exec) = &probe.exec {
        return run_exec(&target.cri, &target.container_id, exec.command.clone().unwrap_or_default(), timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(c, &tcp.port).ok_or("the probe's port is not valid")?;
        let host = tcp.host.clone().unwrap_or_else(|| target.ip.clone());
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(http) = &probe.http_get {
        return http_get(c, http, &target.ip, timeout).await;
    }
    if probe.grpc.is_some() {
        return Err("gRPC probes are not supported yet".into());
    }
    Err("the probe has no handler".into())
}

/// Runs `cmd` in the container through CRI ExecSync; an error is its output or exit code.
pub async fn run_exec(cri: &Cri, container_id: &str, cmd: Vec<String>, timeout: Duration) -> Result<(), String> {
    let request = ExecSyncRequest { container_id: container_id.to_owned(), cmd, timeout: timeout.as_secs() as i64 };
    let response = tokio::time::timeout(timeout + Duration::from_secs(1), cri.runtime.clone().exec_sync(request))
        .await
        .map_err(|_| format!("command timed out after {}s", timeout.as_secs()))?
        .map_err(|e| e.message().to_owned())?
        .into_inner();
    if response.exit_code == 0 {
        return Ok(());
    }
    let output = String::from_utf8_lossy(&[response.stdout, response.stderr].concat()).trim().to_owned();
    Err(if output.is_empty() { format!("command exited with {}", response.exit_code) } else { output })
}

/// An httpGet handler (probe or lifecycle hook) against `pod_ip` unless it names a host:
/// success is a status from 200 to 399. HTTPS does not verify the certificate, as the
/// kubelet does not.
pub async fn http_get(c: &SpecContainer, http: &HTTPGetAction, pod_ip: &str, timeout: Duration) -> Result<(), String> {
    let port = port(c, &http.port).ok_or("the handler's port is not valid")?;
    let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_owned());
    let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    let https = http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let url = format!("{}://{host}:{port}{path}", if https { "https" } else { "http" });
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let mut request = axum::http::Request::get(&path)
            .header("host", format!("{host}:{port}"))
            .header("user-agent", "kube-probe/1.33")
            .header("accept", "*/*");
        for h in http.http_headers.iter().flatten() {
            request = request.header(h.name.as_str(), h.value.as_str());
        }
        let request = request.body(axum::body::Body::empty()).map_err(|e| e.to_string())?;
        let response = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let tls = insecure_tls().connect(name, tcp).await.map_err(|e| e.to_string())?;
            send(hyper_util::rt::TokioIo::new(tls), request).await?
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), request).await?
        };
        Ok::<_, String>(response)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
        Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
        Ok(Err(e)) => Err(format!("Get \"{url}\": {e}")),
        Err(_) => Err(format!("Get \"{url}\": context deadline exceeded")),
    }
}

async fn send<T>(io: T, request: axum::http::Request<axum::body::Body>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await.map_err(|e| e.to_string())?.status().as_u16())
}

/// TLS that accepts any server certificate (still checking the handshake's signatures).
fn insecure_tls() -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe { success_threshold: Some(success), failure_threshold: Some(failure), ..Default::default() }
    }

    #[test]
    fn thresholds_settle_results_like_upstream() {
        let mut t = Tracker::new(&probe(1, 3));
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(true), None, "unchanged");
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false), "the third failure in a row");
        assert_eq!(t.observe(true), Some(true));

        let mut t = Tracker::new(&probe(2, 1));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), Some(false));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c: SpecContainer = serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        assert_eq!(port(&c, &IntOrString::String("http".into())), Some(8080));
        assert_eq!(port(&c, &IntOrString::String("nope".into())), None);
        assert_eq!(port(&c, &IntOrString::Int(70000)), None);
        assert_eq!(initial(&c), Found { ready: true, started: true });
    }
}
