//! The persistent volume binder (upstream's PV controller, without dynamic provisioning):
//! a pending claim is bound to the smallest available volume that satisfies it (storage class,
//! access modes, capacity, volume mode, selector), or to the volume it names; volumes become
//! Available, Bound, and Released when their claim is deleted. Binding writes the volume's
//! `claimRef` first, then the claim, as upstream does, so a crash in between is finished on the
//! next pass rather than binding one volume twice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{Recorder, Type};

pub async fn run(client: Client) {
    let recorder = Recorder::start(client.clone(), "persistentvolume-controller");
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut claim_events = watcher(claims.clone(), watcher::Config::default()).boxed();
    let mut volume_events = watcher(volumes.clone(), watcher::Config::default()).boxed();
    let mut complained = HashSet::new();
    loop {
        if let Err(e) = reconcile(&claims, &volumes, &recorder, &mut complained).await {
            tracing::debug!("volume binding: {e}");
        }
        tokio::select! {
            Some(_) = claim_events.next() => {}
            Some(_) = volume_events.next() => {}
            () = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
        // Events come in bursts (a StatefulSet's claims); one pass serves a burst.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bytes(q: Option<&Quantity>) -> i64 {
    q.and_then(|q| rkube_core::quantity::value(&q.0)).unwrap_or(0).max(0)
}

fn claim_key(c: &PersistentVolumeClaim) -> (String, String) {
    (c.namespace().unwrap_or_default(), c.name_any())
}

/// Whether `pv` can serve `claim`. Pure.
pub fn matches(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (&pv.spec, &claim.spec) else { return false };
    if vs.storage_class_name.clone().unwrap_or_default() != cs.storage_class_name.clone().unwrap_or_default() {
        return false;
    }
    let modes = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| modes.contains(m)) {
        return false;
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    if mode(&vs.volume_mode) != mode(&cs.volume_mode) {
        return false;
    }
    let wanted = bytes(cs.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")));
    if bytes(vs.capacity.as_ref().and_then(|c| c.get("storage"))) < wanted {
        return false;
    }
    match &cs.selector {
        Some(selector) => crate::labels::matches(selector, &pv.metadata.labels.clone().unwrap_or_default()),
        None => true,
    }
}

/// The volume a pending claim should get: the one it names, else the one reserved for it
/// (claimRef), else the smallest available match.
pub fn choose<'a>(claim: &PersistentVolumeClaim, volumes: &'a [PersistentVolume]) -> Option<&'a PersistentVolume> {
    let (ns, name) = claim_key(claim);
    let claimed_by_other = |pv: &PersistentVolume| {
        pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
            r.namespace.as_deref() != Some(&ns)
                || r.name.as_deref() != Some(&name)
                || r.uid.as_ref().is_some_and(|u| Some(u) != claim.metadata.uid.as_ref())
        })
    };
    let usable = |pv: &&PersistentVolume| pv.metadata.deletion_timestamp.is_none() && matches(pv, claim);
    if let Some(named) = claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()).filter(|n| !n.is_empty()) {
        return volumes
            .iter()
            .find(|pv| pv.metadata.name.as_ref() == Some(named) && !claimed_by_other(pv))
            .filter(usable);
    }
    let reserved = volumes.iter().find(|pv| {
        pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
            r.namespace.as_deref() == Some(&ns) && r.name.as_deref() == Some(&name) && !claimed_by_other(pv)
        })
    });
    if reserved.is_some() {
        return reserved.filter(usable);
    }
    volumes
        .iter()
        .filter(|pv| pv.metadata.deletion_timestamp.is_none() && !claimed_by_other(pv) && matches(pv, claim))
        .filter(|pv| pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none())
        .min_by_key(|pv| bytes(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage"))))
}

async fn reconcile(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    recorder: &Recorder,
    complained: &mut HashSet<String>,
) -> Result<(), kube::Error> {
    let all_claims = claims.list(&ListParams::default()).await?.items;
    let mut all_volumes = volumes.list(&ListParams::default()).await?.items;
    let by_key: BTreeMap<(String, String), &PersistentVolumeClaim> =
        all_claims.iter().map(|c| (claim_key(c), c)).collect();
    let status = |phase: &str| json!({"status": {"phase": phase}});
    let pp = PatchParams::default();
    // Volumes: Available when free, Bound when their claim is, Released when it is gone.
    for pv in &all_volumes {
        let phase = pv.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let wanted = match claim_ref {
            None => "Available",
            Some(r) => {
                let key = (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default());
                match by_key.get(&key) {
                    Some(c) if r.uid.is_none() || r.uid == c.metadata.uid => {
                        let bound = c.spec.as_ref().and_then(|s| s.volume_name.as_ref()) == pv.metadata.name.as_ref();
                        if bound { "Bound" } else { "Available" }
                    }
                    _ if r.uid.is_some() && phase == "Bound" => "Released",
                    _ if phase == "Released" => "Released",
                    _ => "Available",
                }
            }
        };
        if phase != wanted {
            volumes.patch_status(&pv.name_any(), &pp, &Patch::Merge(status(wanted))).await?;
        }
    }
    // Claims: pending ones are bound.
    for claim in &all_claims {
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (ns, name) = claim_key(claim);
        let Some(pv) = choose(claim, &all_volumes) else {
            if complained.insert(format!("{ns}/{name}")) {
                let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
                let message = if class.is_empty() {
                    "no persistent volumes available for this claim and no storage class is set".to_owned()
                } else {
                    format!("storageclass.storage.k8s.io \"{class}\" not found")
                };
                recorder.record(claim, Type::Normal, "FailedBinding", "", message);
            }
            continue;
        };
        complained.remove(&format!("{ns}/{name}"));
        let pv_name = pv.name_any();
        let pv = pv.clone();
        // The volume first: its claimRef is the reservation.
        let claim_ref: ObjectReference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(ns.clone()),
            name: Some(name.clone()),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            ..Default::default()
        };
        // With the volume's resourceVersion: a concurrent binder's claimRef is never overwritten.
        let reserve =
            json!({"metadata": {"resourceVersion": pv.metadata.resource_version}, "spec": {"claimRef": claim_ref}});
        volumes.patch(&pv_name, &pp, &Patch::Merge(reserve)).await?;
        volumes.patch_status(&pv_name, &pp, &Patch::Merge(status("Bound"))).await?;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(claims.clone().into_client(), &ns);
        let annotations =
            json!({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"});
        api.patch(
            &name,
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv_name}})),
        )
        .await?;
        let spec = pv.spec.clone().unwrap_or_default();
        let body = json!({"status": {"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity}});
        api.patch_status(&name, &pp, &Patch::Merge(body)).await?;
        // Later claims in this pass see the volume as taken.
        if let Some(taken) = all_volumes.iter_mut().find(|v| v.metadata.name.as_deref() == Some(pv_name.as_str())) {
            taken.spec.get_or_insert_with(Default::default).claim_ref = Some(claim_ref);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, size: &str, modes: &[&str], class: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"disk": "ssd"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class,
                     "hostPath": {"path": "/tmp/x"}}
        }))
        .unwrap()
    }

    fn claim(size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn the_smallest_volume_that_fits_is_chosen() {
        let volumes = vec![
            pv("big", "10Gi", &["ReadWriteOnce"], ""),
            pv("small", "1Gi", &["ReadWriteOnce"], ""),
            pv("tiny", "100Mi", &["ReadWriteOnce"], ""),
        ];
        assert_eq!(choose(&claim("500Mi", &["ReadWriteOnce"], None), &volumes).unwrap().name_any(), "small");
        assert!(choose(&claim("20Gi", &["ReadWriteOnce"], None), &volumes).is_none());
        assert!(choose(&claim("1Gi", &["ReadWriteMany"], None), &volumes).is_none());
        assert!(choose(&claim("1Gi", &["ReadWriteOnce"], Some("fast")), &volumes).is_none());
        let mut selective = claim("1Gi", &["ReadWriteOnce"], None);
        selective.spec.as_mut().unwrap().selector =
            Some(serde_json::from_value(json!({"matchLabels": {"disk": "hdd"}})).unwrap());
        assert!(choose(&selective, &volumes).is_none());
    }

    #[test]
    fn named_and_reserved_volumes_win_and_others_claims_are_respected() {
        let mut taken = pv("taken", "1Gi", &["ReadWriteOnce"], "");
        taken.spec.as_mut().unwrap().claim_ref =
            Some(ObjectReference { namespace: Some("other".into()), name: Some("x".into()), ..Default::default() });
        let mut reserved = pv("reserved", "5Gi", &["ReadWriteOnce"], "");
        reserved.spec.as_mut().unwrap().claim_ref =
            Some(ObjectReference { namespace: Some("ns".into()), name: Some("data".into()), ..Default::default() });
        let free = pv("free", "2Gi", &["ReadWriteOnce"], "");
        let volumes = vec![taken, reserved, free];
        assert_eq!(choose(&claim("1Gi", &["ReadWriteOnce"], None), &volumes).unwrap().name_any(), "reserved");
        let mut named = claim("1Gi", &["ReadWriteOnce"], None);
        named.spec.as_mut().unwrap().volume_name = Some("taken".into());
        assert!(choose(&named, &volumes).is_none());
        named.spec.as_mut().unwrap().volume_name = Some("free".into());
        assert_eq!(choose(&named, &volumes).unwrap().name_any(), "free");
    }
}
