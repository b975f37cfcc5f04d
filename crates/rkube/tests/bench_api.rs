//! `rkube bench api --json` runs a real server end to end and prints the documented figures.
//! (Whether they meet issue 3's targets is judged in docs/benchmarks.md, not here.)

use std::process::Command;

#[test]
fn bench_api_prints_its_figures_as_json() {
    let output = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["bench", "api", "--json", "--seconds", "1", "--watchers", "50"])
        .output()
        .expect("run rkube");
    assert!(output.status.success(), "rkube bench api failed: {}", String::from_utf8_lossy(&output.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    for field in
        ["creates_per_s", "create_p99_ms", "list_10k_ms", "watch_fanout_p99_ms", "cold_start_ms", "idle_rss_mb"]
    {
        let value = figures[field].as_f64().unwrap_or_else(|| panic!("{field} missing: {figures}"));
        assert!(value > 0.0, "{field} was not measured: {figures}");
    }
}
