//! Finds the source directories of k8s-pb and k8s-openapi.
//!
//! We ask cargo itself (`cargo metadata`) instead of globbing
//! `~/.cargo/registry/src/*/`, because only cargo knows which version the
//! lockfile picked, and where it lives (vendored dirs, custom `CARGO_HOME`, git
//! or path sources all work the same way).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns the package roots (directories holding Cargo.toml) of the two
/// crates, in the order `[k8s-pb, k8s-openapi]`.
pub fn sources() -> [PathBuf; 2] {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let manifest = Path::new(&manifest_dir).join("Cargo.toml");
    // Offline first: the lockfile is already resolved, and build scripts
    // should not touch the network. Only when the sources were never
    // downloaded (fresh CARGO_HOME + `cargo build`, which skips
    // dev-dependencies) do we let cargo fetch them.
    let json = run_metadata(&cargo, &manifest, true)
        .filter(|j| ["k8s-pb", "k8s-openapi"].iter().all(|n| find(j, n).is_some_and(|p| p.exists())))
        .or_else(|| run_metadata(&cargo, &manifest, false))
        .unwrap_or_else(|| panic!("`cargo metadata` failed for {}", manifest.display()));
    ["k8s-pb", "k8s-openapi"].map(|name| {
        let manifest = find(&json, name)
            .unwrap_or_else(|| panic!("package {name} is not in the dependency graph; add it as a dev-dependency"));
        let dir = manifest.parent().expect("manifest has a parent").to_path_buf();
        assert!(dir.join("src").is_dir(), "{name} sources missing at {}", dir.display());
        dir
    })
}

fn run_metadata(cargo: &str, manifest: &Path, offline: bool) -> Option<String> {
    let mut cmd = Command::new(cargo);
    cmd.args(["metadata", "--format-version", "1", "--manifest-path"]).arg(manifest);
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Extracts the `manifest_path` of package `name` from `cargo metadata` JSON
/// without a JSON parser (a build-dependency on `serde_json` would add a second,
/// host-side compile of serde to every clean build).
///
/// Package objects serialize as `{"name":N,"version":V,"id":...,...,
/// "manifest_path":P,...}`; dependency entries also start with `"name":N` but
/// are followed by `"source"`, and never contain `manifest_path`, so the first
/// `manifest_path` after a `"name":N,"version":V,"id"` prefix is the package's.
fn find(json: &str, name: &str) -> Option<PathBuf> {
    const KEY: &str = "\"manifest_path\":\"";
    let needle = format!("{{\"name\":\"{name}\",\"version\":\"");
    let mut rest = json;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        let after_version = &rest[rest.find('"')? + 1..];
        if !after_version.starts_with(",\"id\":") {
            continue;
        }
        let start = rest.find(KEY)? + KEY.len();
        return Some(PathBuf::from(unescape_json(&rest[start..])));
    }
    None
}

/// Decodes a JSON string body up to its closing quote. Paths only ever need
/// `\\`, `\"` and `\/` (Windows separators), other escapes are kept verbatim.
fn unescape_json(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some(e @ ('\\' | '"' | '/')) => out.push(e),
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}
