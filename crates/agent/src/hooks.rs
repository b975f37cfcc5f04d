//! Container lifecycle hooks, as the kubelet runs them: postStart right after the container
//! starts (a failure kills the container, and the restart policy decides what follows), and
//! preStop before a container is stopped, inside its grace period. Handlers: exec (CRI
//! ExecSync), httpGet (HTTP or HTTPS) and sleep; tcpSocket is deprecated and does nothing, as
//! upstream.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container as SpecContainer, LifecycleHandler};

use crate::cri::Cri;
use crate::probe;

/// Upstream's floor for what is left of the grace period after a preStop hook.
pub const MIN_GRACE_AFTER_HOOK: i64 = 2;

/// Runs one handler against the container; the error is what failed.
pub async fn run(
    cri: &Cri,
    c: &SpecContainer,
    container_id: &str,
    pod_ip: &str,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        return probe::run_exec(cri, container_id, exec.command.clone().unwrap_or_default(), timeout).await;
    }
    if let Some(http) = &handler.http_get {
        return probe::http_get(c, http, pod_ip, timeout).await;
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
    }
    Ok(())
}

/// Runs the container's preStop hook, if it has one, within `grace` seconds; returns what is
/// left of the grace period for stopping it (at least upstream's two seconds).
pub async fn pre_stop(
    cri: &Cri,
    c: &SpecContainer,
    container_id: &str,
    pod_ip: &str,
    grace: i64,
) -> (i64, Option<String>) {
    let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else { return (grace, None) };
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(grace.max(1) as u64);
    let failed = match tokio::time::timeout(timeout, run(cri, c, container_id, pod_ip, handler, timeout)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("the hook did not finish within the grace period of {grace}s")),
    };
    let left = (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE_AFTER_HOOK);
    (left, failed)
}
