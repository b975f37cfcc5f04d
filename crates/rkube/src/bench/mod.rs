//! Benchmark programs: each runs rkube and the component it replaces side by side in one run,
//! prints a table, and with `--json` one JSON object.

mod api;
mod density;
mod pods;
mod scheduler;
mod store;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Which {
    /// The embedded store against a real etcd it starts itself.
    Store(store::Args),
    /// A real `rkube server`, through the `kube` client, against issue 3's targets.
    Api(api::Args),
    /// Scheduling throughput at 5,000 nodes, basic and with pod anti-affinity.
    Scheduler(scheduler::Args),
    /// 150,000 pods on 5,000 simulated nodes in one server, until all are Running.
    Density(density::Args),
    /// Pod start-up on one real node against the same containers started straight through CRI.
    Pods(pods::Args),
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Store(args) => store::run(args).await,
        Which::Api(args) => api::run(args).await,
        Which::Scheduler(args) => scheduler::run(args).await,
        Which::Density(args) => density::run(args).await,
        Which::Pods(args) => pods::run(args).await,
    }
}

pub(super) struct ServerProcess {
    pub child: Child,
    kubeconfig: std::path::PathBuf,
    /// The data dir of a server that runs its node agent, cleaned with `rkube killall`.
    node: Option<std::path::PathBuf>,
}

impl ServerProcess {
    pub fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with(dir, &[])
    }

    /// A control plane with extra `rkube server` flags, without a node agent.
    pub fn start_with(dir: &Path, flags: &[&str]) -> anyhow::Result<ServerProcess> {
        let mut flags = flags.to_vec();
        flags.push("--no-agent");
        ServerProcess::spawn(dir, &flags, false)
    }

    /// A one-node cluster: the server with its node agent, on a cluster CIDR of its own.
    pub fn start_node(dir: &Path) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn(dir, &["--cluster-cidr", "10.250.0.0/16", "--node-api-port", "0"], true)
    }

    fn spawn(dir: &Path, flags: &[&str], node: bool) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["server", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        loop {
            match lines.next() {
                Some(line) => {
                    if line?.starts_with("rkube server listening on ") {
                        break;
                    }
                }
                None => anyhow::bail!("rkube server exited during start-up"),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(ServerProcess { child, kubeconfig: dir.join("kubeconfig"), node: node.then(|| dir.to_owned()) })
    }

    /// A client with its own connection.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let (Some(dir), Ok(exe)) = (self.node.take(), std::env::current_exe()) {
            let _ = Command::new(exe).args(["killall", "--data-dir"]).arg(dir).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `p`th percentile (0..=100) of a sorted slice, in milliseconds.
pub fn percentile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// A counter from `/proc/PID/io` or `/proc/PID/status`, if the kernel provides it.
pub fn proc_field(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_pick_by_rank() {
        let xs: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&xs, 50.0), 51.0);
        assert_eq!(percentile_ms(&xs, 99.0), 99.0);
        assert_eq!(percentile_ms(&xs, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn proc_fields_are_read() {
        let pid = std::process::id();
        assert!(proc_field(pid, "status", "VmRSS").unwrap() > 0);
        assert!(proc_field(pid, "status", "NoSuchField").is_none());
    }
}
