//! Leader election on a `coordination.k8s.io` Lease in `kube-system`, as upstream's
//! `leaderelection` package does it: only the holder runs the loops, it renews the lease, and
//! another server takes over once the lease has not been renewed for its duration.
//!
//! The lease is also how `kubectl get componentstatuses` learns that the scheduler and the
//! controller manager are alive: the API server reads their renew times.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

pub const NAMESPACE: &str = "kube-system";

/// Upstream's defaults are 15 s, 10 s and 2 s; rkube renews less often, which halves the
/// writes an idle cluster makes, and still hands over within the lease duration.
#[derive(Clone, Debug)]
pub struct Config {
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub retry_every: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// A unique name for this process as a lease holder: host name and a random suffix.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{}_{:016x}", if host.is_empty() { "rkube" } else { &host }, rand::random::<u64>())
}

/// Runs `work` while this process holds the lease `name`; if the lease is lost the work is
/// stopped and the election starts again. Returns only if `work` returns.
pub async fn run_elected<F, Fut>(client: Client, name: &'static str, config: Config, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let identity = identity();
    loop {
        let mut held = acquire(&leases, name, &identity, &config).await;
        tokio::select! {
            () = work() => return,
            () = keep(&leases, &mut held, &identity, &config) => {
                tracing::warn!("lost the {name} lease; stopping until it is won again");
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else { return true };
    renewed.0 + SignedDuration::from_secs(i64::from(seconds)) < now
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty())
}

/// Waits until the lease is ours, creating it if needed.
async fn acquire(leases: &Api<Lease>, name: &str, identity: &str, config: &Config) -> Lease {
    loop {
        match try_acquire(leases, name, identity, config).await {
            Ok(Some(lease)) => return lease,
            Ok(None) => {}
            Err(e) => tracing::debug!("lease {name}: {e}"),
        }
        tokio::time::sleep(config.retry_every).await;
    }
}

async fn try_acquire(leases: &Api<Lease>, name: &str, identity: &str, config: &Config) -> kube::Result<Option<Lease>> {
    let spec = |transitions: i32| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(mut lease) = leases.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(spec(0)),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        };
    };
    let ours = holder(&lease) == Some(identity);
    if !ours && holder(&lease).is_some() && !expired(&lease, Timestamp::now()) {
        return Ok(None);
    }
    let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
    lease.spec = Some(spec(if ours { transitions } else { transitions + 1 }));
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(lease) => Ok(Some(lease)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renews the lease until it is lost: taken by another holder, or not renewed within its
/// duration (the API server unreachable).
async fn keep(leases: &Api<Lease>, held: &mut Lease, identity: &str, config: &Config) {
    let name = held.metadata.name.clone().unwrap_or_default();
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.renew_every).await;
        if let Some(spec) = held.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match leases.replace(&name, &PostParams::default(), held).await {
            Ok(lease) => {
                *held = lease;
                last_renewal = tokio::time::Instant::now();
                continue;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => match leases.get(&name).await {
                Ok(lease) if holder(&lease) == Some(identity) => *held = lease,
                Ok(_) => return,
                Err(e) => tracing::debug!("lease {name}: {e}"),
            },
            Err(e) => tracing::debug!("lease {name}: {e}"),
        }
        if last_renewal.elapsed() >= config.lease_duration {
            return;
        }
    }
}
