//! `rkube bench store --json` runs end to end against the embedded store and a real etcd, and
//! prints one JSON object in the documented shape. (The figures themselves are judged in
//! docs/benchmarks.md, not here: a test must not depend on the machine's speed.)

use std::process::Command;

const FIELDS: [&str; 16] = [
    "writes_per_s_1",
    "write_p50_ms_1",
    "write_p99_ms_1",
    "writes_per_s_64",
    "write_p50_ms_64",
    "write_p99_ms_64",
    "gets_per_s",
    "list_10k_ms",
    "list_10k_paged_ms",
    "watch_p50_ms",
    "watch_p99_ms",
    "compacting_write_p99_ms",
    "compacting_write_max_ms",
    "open_ms",
    "idle_write_bytes",
    "rss_mb",
];

#[test]
fn bench_store_prints_both_backends_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["bench", "store", "--json", "--seconds", "1", "--idle-seconds", "1", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run rkube");
    assert!(output.status.success(), "rkube bench store failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    for backend in ["embedded", "etcd"] {
        let figures = &report[backend];
        for field in FIELDS {
            let value = figures[field].as_f64().unwrap_or_else(|| panic!("{backend}.{field} missing: {report}"));
            assert!(value >= 0.0, "{backend}.{field} = {value}");
        }
        for field in ["writes_per_s_1", "writes_per_s_64", "gets_per_s", "list_10k_ms", "open_ms"] {
            assert!(figures[field].as_f64().unwrap() > 0.0, "{backend}.{field} was not measured: {report}");
        }
    }
    // The benchmark cleans up after itself: its stores and etcd lived in a temporary directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "left files behind");
}

#[test]
fn bad_arguments_are_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["bench", "store", "--seconds", "soon"])
        .output()
        .expect("run rkube");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--seconds") && stderr.contains("soon"), "{stderr}");
}
