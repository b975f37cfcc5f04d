//! Benchmark programs: each runs rkube and the component it replaces side by side in one run,
//! prints a table, and with `--json` one JSON object.

mod api;
mod store;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Which {
    /// The embedded store against a real etcd it starts itself.
    Store(store::Args),
    /// A real `rkube server`, through the `kube` client, against issue 3's targets.
    Api(api::Args),
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Store(args) => store::run(args).await,
        Which::Api(args) => api::run(args).await,
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
