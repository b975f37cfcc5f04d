//! Harvests exact JSON field names from k8s-openapi's generated serde code.
//!
//! Every struct's `Deserialize` impl contains match arms like
//! `"hostIPC" => Field::Key_host_ipc,`, which is the only machine-readable
//! place (short of the .proto files) that has the real Go JSON tag. The file
//! `src/v1_NN/<module>/<snake_type>.rs` corresponds to k8s-pb's
//! `src/<module>/mod.rs` + struct, so we can map per type.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

/// Lowercase without `_`/`-` (and without a leading `$`): the common
/// denominator of prost's lossy `snake_case`, k8s-openapi's `snake_case` and the
/// JSON name itself (`pod_i_ps`, `pod_ips`, `podIPs` → `podips`;
/// `x_kubernetes_list_type`, `x-kubernetes-list-type` → `xkuberneteslisttype`).
pub fn norm(s: &str) -> String {
    s.trim_start_matches('$').chars().filter(|&c| c != '_' && c != '-').flat_map(char::to_lowercase).collect()
}

#[derive(Default)]
pub struct Names {
    /// `(module, norm(type))` → `norm(name)` → JSON name, where `name` is
    /// both the k8s-openapi identifier and the JSON name itself.
    pub per_type: HashMap<(String, String), HashMap<String, String>>,
    /// `norm(type)` → merged field map of every module's type of that name:
    /// names for old API versions k8s-openapi no longer ships (e.g.
    /// apiextensions v1beta1 `JSONSchemaProps` `$schema`) come from newer ones.
    pub by_type_name: HashMap<String, HashMap<String, String>>,
    /// `norm(json)` → every JSON name with that normalization, any type.
    pub global: BTreeMap<String, BTreeSet<String>>,
    /// Per-type normalization clashes: `module/type: a vs b`.
    pub per_type_collisions: BTreeSet<String>,
    pub files_read: usize,
}

/// Scans the `src/v1_*` trees, newest first. Newer trees have types/fields
/// that k8s-pb (generated from a newer Kubernetes) may have, older trees have
/// types since removed (beta versions). JSON names never change between
/// versions, so each type is read from the newest tree that has it; skipping
/// the other copies keeps this unoptimized build-script code fast.
pub fn scan(src: &Path) -> Names {
    let mut names = Names::default();
    let mut versions: Vec<_> = fs::read_dir(src)
        .expect("read k8s-openapi src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("v1_")))
        .collect();
    // Newest first, by numeric minor version (`v1_100` after `v1_99`).
    let minor = |p: &std::path::PathBuf| -> u32 {
        p.file_name().and_then(|n| n.to_str()?.strip_prefix("v1_")?.parse().ok()).unwrap_or(0)
    };
    versions.sort_by_key(|p| std::cmp::Reverse(minor(p)));
    assert!(!versions.is_empty(), "no v1_* dirs in {}", src.display());
    for v in &versions {
        walk(v, v, &mut names);
    }
    for ((_, ty), fields) in &names.per_type {
        let merged = names.by_type_name.entry(ty.clone()).or_default();
        for (n, json) in fields {
            if let Some(old) = merged.insert(n.clone(), json.clone()).filter(|old| old != json) {
                names.per_type_collisions.insert(format!("*/{ty}: {old} vs {json}"));
            }
        }
    }
    names
}

fn walk(root: &Path, dir: &Path, names: &mut Names) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(root, &path, names);
            continue;
        }
        let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
        if path.extension().is_none_or(|e| e != "rs") || stem == "mod" {
            continue;
        }
        let module: Vec<_> =
            dir.strip_prefix(root).expect("under root").iter().map(|c| c.to_string_lossy().into_owned()).collect();
        let key = (module.join("/"), norm(&stem));
        if names.per_type.contains_key(&key) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read openapi file");
        names.files_read += 1;
        let map = names.per_type.entry(key.clone()).or_default();
        // Search for the arm marker directly instead of iterating lines: this
        // runs unoptimized (build scripts are debug builds) over ~40 MB.
        const ARM: &str = " => Field::Key_";
        for (at, _) in text.match_indices(ARM) {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let rest = &text[at + ARM.len()..];
            let ident = &rest[..rest.find([',', '\n']).unwrap_or(rest.len())];
            let json = text[line_start..at].trim().trim_matches('"');
            for n in [norm(ident), norm(json)] {
                if let Some(old) = map.insert(n, json.to_string()).filter(|old| old != json) {
                    names.per_type_collisions.insert(format!("{}/{}: {old} vs {json}", key.0, key.1));
                }
            }
            names.global.entry(norm(json)).or_default().insert(json.to_string());
        }
    }
}
