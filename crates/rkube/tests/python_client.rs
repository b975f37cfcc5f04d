//! `rkube server` driven by the official Python `kubernetes` client (tests/python/client_check.py).

mod common;

use std::process::Command;

use common::ServerProcess;

#[test]
fn the_official_python_client_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let output = Command::new("python3").arg(script).arg(server.kubeconfig()).output().expect("run python3");
    assert!(
        output.status.success(),
        "the Python client checks failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
