//! `rkube bench scheduler`, `density` and `pods` (with `--json`) run end to end at a small
//! scale and print their documented figures. (Whether full-scale runs meet issue 4's targets
//! is judged in docs/benchmarks.md, not here.)

use std::process::Command;

fn figures(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_rkube")).args(args).output().expect("run rkube");
    assert!(output.status.success(), "rkube {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON object on stdout")
}

#[test]
fn bench_scheduler_prints_its_figures_as_json() {
    let f = figures(&["bench", "scheduler", "--json", "--nodes", "50", "--pods", "300"]);
    for field in ["basic_pods_per_s", "anti_affinity_pods_per_s"] {
        assert!(f[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {f}");
    }
}

#[test]
fn bench_density_prints_its_figures_as_json() {
    let f = figures(&["bench", "density", "--json", "--nodes", "10", "--pods", "200"]);
    assert_eq!(f["pods_running"], 200, "{f}");
    for field in ["total_s", "sched_p99_ms", "api_p99_ms", "peak_rss_mb"] {
        assert!(f[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {f}");
    }
}

#[test]
fn bench_pods_prints_its_figures_as_json() {
    let f = figures(&["bench", "pods", "--json", "--pods", "4", "--parallel", "2", "--idle-secs", "2"]);
    assert_eq!(f["pods_running"], 4, "{f}");
    for field in ["pod_start_p50_ms", "pod_start_p99_ms", "raw_start_p99_ms", "ratio_p99", "server_idle_rss_mb"] {
        assert!(f[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {f}");
    }
    assert!(f["agent_idle_rss_mb"].as_f64().is_some(), "{f}");
    assert!(f["node_idle_writes_per_10s"].as_f64().is_some(), "{f}");
}
