//! Static pods: pod manifests in `DATA/agent/manifests/` that the agent runs on its own, as
//! the kubelet's file source does. Each is named `NAME-NODE`, and its uid is a hash of the node
//! and the file, so an edited file is a new pod. The API shows each as a mirror pod (annotated
//! `kubernetes.io/config.mirror`, owned by the Node) that carries its status; deleting the
//! mirror does not stop the pod, and the mirror comes back. Removing the file stops the pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

pub const MIRROR: &str = "kubernetes.io/config.mirror";
pub const HASH: &str = "kubernetes.io/config.hash";
pub const SOURCE: &str = "kubernetes.io/config.source";

pub fn is_mirror(pod: &Pod) -> bool {
    pod.annotations().contains_key(MIRROR)
}

/// Reads the manifests; a file that is not a pod is reported once and skipped.
pub struct Source {
    dir: PathBuf,
    node: String,
    /// Files (and their contents) last read, and the complaints already made.
    seen: Option<BTreeMap<PathBuf, String>>,
    complained: BTreeMap<PathBuf, String>,
}

impl Source {
    pub fn new(dir: PathBuf, node: &str) -> Source {
        Source { dir, node: node.to_owned(), seen: None, complained: BTreeMap::new() }
    }

    /// The static pods by uid, when the directory changed since the last call (the first call
    /// always answers).
    pub fn changed(&mut self) -> Option<BTreeMap<String, Pod>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let manifest = path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            match std::fs::read_to_string(&path) {
                Ok(text) if manifest && !hidden => {
                    files.insert(path, text);
                }
                _ => {}
            }
        }
        if self.seen.as_ref() == Some(&files) {
            return None;
        }
        let mut pods = BTreeMap::new();
        for (path, text) in &files {
            match static_pod(path, text, &self.node) {
                Ok(pod) => {
                    self.complained.remove(path);
                    pods.insert(pod.uid().unwrap_or_default(), pod);
                }
                Err(e) if self.complained.get(path) != Some(&e) => {
                    tracing::warn!("static pod {}: {e}", path.display());
                    self.complained.insert(path.clone(), e);
                }
                Err(_) => {}
            }
        }
        self.seen = Some(files);
        Some(pods)
    }
}

/// The pod a manifest describes, as this node runs it.
pub fn static_pod(path: &Path, text: &str, node: &str) -> Result<Pod, String> {
    let mut pod: Pod = serde_saphyr::from_str(text).map_err(|e| format!("not a pod: {e}"))?;
    let name = pod.metadata.name.clone().filter(|n| !n.is_empty()).ok_or("the pod has no name")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{node}\n{}\n{text}", path.display()).as_bytes());
    let hash: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    pod.metadata.name = Some(format!("{name}-{node}"));
    pod.metadata.namespace = Some(pod.metadata.namespace.clone().filter(|n| !n.is_empty()).unwrap_or("default".into()));
    pod.metadata.uid = Some(hash.clone());
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(HASH.into(), hash);
    annotations.insert(SOURCE.into(), "file".into());
    let spec = pod.spec.as_mut().ok_or("the pod has no spec")?;
    spec.node_name = Some(node.to_owned());
    // As upstream: a static pod tolerates every NoExecute taint; the node runs it regardless.
    spec.tolerations.get_or_insert_with(Vec::new).push(Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    });
    pod.status = None;
    Ok(pod)
}

/// The mirror pod for a static pod: the same object without its uid, annotated with the
/// static pod's hash and owned by the node.
fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror.metadata.resource_version = None;
    mirror.status = None;
    let hash = pod.annotations().get(HASH).cloned().unwrap_or_default();
    mirror.metadata.annotations.get_or_insert_with(Default::default).insert(MIRROR.into(), hash);
    mirror.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.name_any(),
        uid: node.uid().unwrap_or_default(),
        controller: Some(true),
        ..Default::default()
    }]);
    mirror
}

/// Makes the API's mirror pods match the static pods: creates missing ones, replaces those
/// of an older manifest, deletes those whose file is gone.
pub async fn sync_mirrors(client: &Client, node_name: &str, statics: &BTreeMap<String, Pod>) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(node_name).await.map_err(|e| e.to_string())?;
    let all: Api<Pod> = Api::all(client.clone());
    let listed = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .map_err(|e| e.to_string())?;
    let mut mirrors: BTreeMap<(String, String), Pod> = BTreeMap::new();
    for pod in listed.items.into_iter().filter(is_mirror) {
        mirrors.insert((pod.namespace().unwrap_or_default(), pod.name_any()), pod);
    }
    for pod in statics.values() {
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let hash = pod.annotations().get(HASH).cloned();
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.0);
        match mirrors.remove(&key) {
            Some(m) if m.annotations().get(MIRROR) == hash.as_ref() && m.metadata.deletion_timestamp.is_none() => {}
            Some(m) => {
                // An older manifest's mirror, or one being deleted: replaced.
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: m.uid(), resource_version: None }),
                    ..Default::default()
                };
                let _ = api.delete(&key.1, &params).await;
            }
            None => match api.create(&PostParams::default(), &mirror_of(pod, &node)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::warn!("static pod {}/{}: a pod of that name exists and is not its mirror", key.0, key.1);
                }
                Err(e) => return Err(e.to_string()),
            },
        }
    }
    for ((namespace, name), m) in mirrors {
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: m.uid(), resource_version: None }),
            ..Default::default()
        };
        let _ = api.delete(&name, &params).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_static_pods_named_for_the_node() {
        let text =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n";
        let pod = static_pod(Path::new("/m/web.yaml"), text, "n1").unwrap();
        assert_eq!(pod.name_any(), "web-n1");
        assert_eq!(pod.namespace().as_deref(), Some("default"));
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        let uid = pod.uid().unwrap();
        assert_eq!(pod.annotations()[HASH], uid);
        // The same file on another node, or an edited file, is another pod.
        assert_ne!(static_pod(Path::new("/m/web.yaml"), text, "n2").unwrap().uid().unwrap(), uid);
        let edited = text.replace("busybox", "busybox:1.35");
        assert_ne!(static_pod(Path::new("/m/web.yaml"), &edited, "n1").unwrap().uid().unwrap(), uid);
        assert!(static_pod(Path::new("/m/x.yaml"), "kind: ConfigMap\nmetadata: {name: x}\n", "n1").is_err());
        assert!(static_pod(Path::new("/m/x.yaml"), "{", "n1").is_err());
        let node = Node {
            metadata: kube::api::ObjectMeta { name: Some("n1".into()), uid: Some("u".into()), ..Default::default() },
            ..Default::default()
        };
        let mirror = mirror_of(&pod, &node);
        assert!(is_mirror(&mirror) && mirror.uid().is_none());
        assert_eq!(mirror.owner_references()[0].kind, "Node");
    }
}
