//! Pod volumes on the node: emptyDir (on disk, or tmpfs for `medium: Memory`), hostPath, and
//! the projected kinds (configMap, secret, downwardAPI, projected) written with upstream's
//! atomic writer, so a container sees either the old files or the new ones, never a mix,
//! and sees updates. Each pod's volumes live in `DATA/agent/volumes/UID/NAME`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;
use kube::{Client, ResourceExt};

/// One file a projected volume holds: its path in the volume, content and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Where a pod's volumes are.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// Makes every volume of the pod ready, refreshing projected contents; returns each volume's
/// host path. An error is the FailedMount message.
pub async fn prepare(
    client: &Client,
    root: &Path,
    pod: &Pod,
    node_name: &str,
    node_ip: &str,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let uid = pod.uid().unwrap_or_default();
    let namespace = pod.namespace().unwrap_or_default();
    let mut paths = BTreeMap::new();
    for volume in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = pod_dir(root, &uid).join(&volume.name);
        let fail = |e: String| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", volume.name);
        let path = if let Some(empty) = &volume.empty_dir {
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            if empty.medium.as_deref() == Some("Memory") {
                mount_tmpfs(&dir).map_err(fail)?;
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(|e| fail(e.to_string()))?;
            dir
        } else if let Some(host) = &volume.host_path {
            host_path(&host.path, host.type_.as_deref().unwrap_or("")).map_err(fail)?
        } else if let Some(claim) = &volume.persistent_volume_claim {
            claimed_path(client, &namespace, &claim.claim_name).await.map_err(fail)?
        } else if let Some(files) =
            projected(client, &namespace, pod, volume, node_name, node_ip).await.map_err(fail)?
        {
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            // Secrets (and projected volumes, which may hold them) never touch the disk.
            if volume.secret.is_some() || volume.projected.is_some() {
                mount_tmpfs(&dir).map_err(fail)?;
            }
            write_atomic(&dir, &files).map_err(|e| fail(e.to_string()))?;
            dir
        } else {
            return Err(fail("this volume type is not supported by rkube yet".into()));
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

/// Unmounts and removes a pod's volumes.
pub fn remove(root: &Path, uid: &str) {
    let dir = pod_dir(root, uid);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let _ = rustix::mount::unmount(entry.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn mount_tmpfs(dir: &Path) -> Result<(), String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let target = dir.to_string_lossy();
    if mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*target)) {
        return Ok(());
    }
    rustix::mount::mount("tmpfs", dir, "tmpfs", rustix::mount::MountFlags::empty(), None)
        .map_err(|e| format!("mount tmpfs on {target}: {e}"))
}

/// The directory a bound claim's volume is: a hostPath or local volume on this node.
async fn claimed_path(client: &Client, namespace: &str, name: &str) -> Result<PathBuf, String> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") || volume_name.is_empty() {
        return Err(format!("error processing PVC {namespace}/{name}: PVC is not bound"));
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes.get(&volume_name).await.map_err(|e| e.to_string())?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(host) = spec.host_path {
        return host_path(&host.path, host.type_.as_deref().unwrap_or(""));
    }
    if let Some(local) = spec.local {
        let path = PathBuf::from(&local.path);
        return if path.exists() { Ok(path) } else { Err(format!("path {} does not exist", local.path)) };
    }
    Err(format!("PersistentVolume {volume_name} is neither hostPath nor local, which is all rkube mounts yet"))
}

fn host_path(path: &str, kind: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    let exists = p.exists();
    match kind {
        "DirectoryOrCreate" if !exists => {
            std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        }
        "FileOrCreate" if !exists => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&p, b"").map_err(|e| e.to_string())?;
        }
        "Directory" if !p.is_dir() => return Err(format!("hostPath type check failed: {path} is not a directory")),
        "File" if !p.is_file() => return Err(format!("hostPath type check failed: {path} is not a file")),
        "Socket" | "CharDevice" | "BlockDevice" if !exists => {
            return Err(format!("hostPath type check failed: {path} does not exist"));
        }
        _ => {}
    }
    Ok(p)
}

/// The files of a configMap, secret, downwardAPI or projected volume; None for other kinds.
async fn projected(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    volume: &Volume,
    node_name: &str,
    node_ip: &str,
) -> Result<Option<Vec<File>>, String> {
    let mut files = Vec::new();
    if let Some(cm) = &volume.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        files.extend(config_map_files(client, namespace, &cm.name, cm.items.as_deref(), cm.optional, mode).await?);
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let mode = secret.default_mode.unwrap_or(0o644) as u32;
        files.extend(secret_files(client, namespace, &name, secret.items.as_deref(), secret.optional, mode).await?);
    } else if let Some(downward) = &volume.downward_api {
        let mode = downward.default_mode.unwrap_or(0o644) as u32;
        for item in downward.items.iter().flatten() {
            let value = item
                .field_ref
                .as_ref()
                .and_then(|f| crate::spec::field_value(pod, &f.field_path, node_name, node_ip))
                .unwrap_or_default();
            files.push(File {
                path: item.path.clone(),
                data: value.into_bytes(),
                mode: item.mode.map_or(mode, |m| m as u32),
            });
        }
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(0o644) as u32;
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                files.extend(
                    config_map_files(client, namespace, &cm.name, cm.items.as_deref(), cm.optional, mode).await?,
                );
            }
            if let Some(secret) = &source.secret {
                files.extend(
                    secret_files(client, namespace, &secret.name, secret.items.as_deref(), secret.optional, mode)
                        .await?,
                );
            }
            if let Some(downward) = &source.downward_api {
                for item in downward.items.iter().flatten() {
                    let value = item
                        .field_ref
                        .as_ref()
                        .and_then(|f| crate::spec::field_value(pod, &f.field_path, node_name, node_ip))
                        .unwrap_or_default();
                    files.push(File {
                        path: item.path.clone(),
                        data: value.into_bytes(),
                        mode: item.mode.map_or(mode, |m| m as u32),
                    });
                }
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(files))
}

/// Keys to files: every key, or only the listed items at their paths.
pub fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: &str,
) -> Result<Vec<File>, String> {
    match items {
        None => Ok(data.into_iter().map(|(path, data)| File { path, data, mode }).collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let data = data.get(&item.key).cloned().ok_or_else(|| match what {
                    "secret" => format!("references non-existent secret key: {}", item.key),
                    _ => format!("configmap references non-existent config key: {}", item.key),
                })?;
                Ok(File { path: item.path.clone(), data, mode: item.mode.map_or(mode, |m| m as u32) })
            })
            .collect(),
    }
}

async fn config_map_files(
    client: &Client,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<Vec<File>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(cm) => {
            let mut data: BTreeMap<String, Vec<u8>> =
                cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            select(data, items, mode, "configmap")
        }
        None if optional == Some(true) => Ok(Vec::new()),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

async fn secret_files(
    client: &Client,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<Vec<File>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(secret) => {
            let mut data: BTreeMap<String, Vec<u8>> =
                secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            select(data, items, mode, "secret")
        }
        None if optional == Some(true) => Ok(Vec::new()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

/// Upstream's AtomicWriter: the files go to a new `..TIMESTAMP` directory, `..data` is
/// switched to it with one rename, and each top-level name is a symlink through `..data`.
/// Unchanged content writes nothing.
pub fn write_atomic(dir: &Path, files: &[File]) -> std::io::Result<bool> {
    let current = dir.join("..data");
    if let Ok(target) = std::fs::read_link(&current)
        && same_content(&dir.join(&target), files)
    {
        return Ok(false);
    }
    for f in files {
        if f.path.split('/').any(|part| part == ".." || part.is_empty()) || f.path.starts_with("..") {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid path {:?}", f.path)));
        }
    }
    let stamp = format!("..{}", k8s_openapi::jiff::Timestamp::now().as_nanosecond());
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh)?;
    for f in files {
        let path = fresh.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o777))?;
    }
    let old = std::fs::read_link(&current).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &current)?;
    // Top-level names point through ..data; names no longer present go.
    let tops: std::collections::BTreeSet<&str> = files.iter().filter_map(|f| f.path.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn same_content(dir: &Path, files: &[File]) -> bool {
    let count = walk(dir).len();
    count == files.len()
        && files.iter().all(|f| {
            let path = dir.join(&f.path);
            std::fs::read(&path).is_ok_and(|d| d == f.data)
                && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == f.mode & 0o777)
        })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str) -> File {
        File { path: path.into(), data: data.into(), mode: 0o644 }
    }

    #[test]
    fn atomic_writer_switches_contents_in_one_rename() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomic(dir.path(), &[file("a", "1"), file("sub/b", "2")]).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.path().join("sub/b")).unwrap(), "2");
        assert!(!write_atomic(dir.path(), &[file("a", "1"), file("sub/b", "2")]).unwrap(), "unchanged");
        assert!(write_atomic(dir.path(), &[file("a", "one")]).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "one");
        assert!(!dir.path().join("sub").exists(), "a name that went is removed");
        let stamps = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data")
            .count();
        assert_eq!(stamps, 1, "the old generation is removed");
        assert!(write_atomic(dir.path(), &[file("../escape", "x")]).is_err());
    }

    #[test]
    fn items_pick_keys_and_name_missing_ones() {
        let data = BTreeMap::from([("k".to_owned(), b"v".to_vec()), ("other".to_owned(), b"o".to_vec())]);
        let items = [KeyToPath { key: "k".into(), path: "renamed".into(), mode: Some(0o400) }];
        let files = select(data.clone(), Some(&items), 0o644, "configmap").unwrap();
        assert_eq!(files, vec![File { path: "renamed".into(), data: b"v".to_vec(), mode: 0o400 }]);
        assert_eq!(select(data.clone(), None, 0o644, "configmap").unwrap().len(), 2);
        let missing = [KeyToPath { key: "nope".into(), path: "x".into(), mode: None }];
        assert_eq!(
            select(data, Some(&missing), 0o644, "secret").unwrap_err(),
            "references non-existent secret key: nope"
        );
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made");
        assert_eq!(host_path(made.to_str().unwrap(), "DirectoryOrCreate").unwrap(), made);
        assert!(made.is_dir());
        assert!(host_path(dir.path().join("absent").to_str().unwrap(), "Directory").is_err());
        assert!(host_path(made.to_str().unwrap(), "File").is_err());
    }
}
