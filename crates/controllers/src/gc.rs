//! The garbage collector, after upstream's: a graph of every object's ownerReferences, built
//! from a watch on each resource the server serves, and three propagation policies.
//! - **Background:** an object whose owners are all gone is deleted.
//! - **Foreground:** an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted first; the finalizer is removed once the blocking ones are gone.
//! - **Orphan:** an owner with the `orphan` finalizer has its references removed from its
//!   dependents, then the finalizer.
//!
//! An owner missing from the graph is looked up live before anything is deleted, so a lagging
//! watch never causes a deletion.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::workqueue::WorkQueue;

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
/// Objects worked on at once.
const WORKERS: usize = 16;
const RETRY: Duration = Duration::from_secs(1);

struct Resource {
    api: ApiResource,
    namespaced: bool,
}

/// What the collector keeps of an object.
#[derive(Clone, PartialEq)]
struct Item {
    resource: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    orphan: bool,
    foreground: bool,
}

#[derive(Default)]
struct Graph {
    items: HashMap<String, Item>,
    /// Owner uid → dependents' uids.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn insert(&mut self, uid: String, item: Item) {
        self.remove(&uid);
        for owner in &item.owners {
            self.dependents.entry(owner.uid.clone()).or_default().insert(uid.clone());
        }
        self.items.insert(uid, item);
    }

    fn remove(&mut self, uid: &str) -> Option<Item> {
        let item = self.items.remove(uid)?;
        for owner in &item.owners {
            if let Some(deps) = self.dependents.get_mut(&owner.uid) {
                deps.remove(uid);
                if deps.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
        Some(item)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Work {
    /// Check that the object's owners still exist.
    Dependent(String),
    /// Act on an owner being deleted with the orphan or foreground finalizer.
    Owner(String),
}

struct Collector {
    client: Client,
    resources: Vec<Resource>,
    /// (group, kind) → resource index, to resolve owner references.
    by_kind: HashMap<(String, String), usize>,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<Work>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the collector until its task is dropped.
pub async fn run(client: Client) {
    loop {
        match start(client.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!("garbage collector: {e}; starting again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn start(client: Client) -> Result<(), Error> {
    let discovery = Discovery::new(client.clone()).run().await.map_err(|e| Error::Discovery(e.to_string()))?;
    let mut resources = Vec::new();
    for group in discovery.groups() {
        for (api, caps) in group.recommended_resources() {
            // Events own nothing and are never owned in practice; upstream ignores them too.
            let watchable = [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v));
            if watchable && api.plural != "events" {
                resources.push(Resource { namespaced: caps.scope == Scope::Namespaced, api });
            }
        }
    }
    let by_kind = resources.iter().enumerate().map(|(i, r)| ((r.api.group.clone(), r.api.kind.clone()), i)).collect();
    let collector =
        Arc::new(Collector { client, resources, by_kind, graph: Mutex::default(), queue: Arc::new(WorkQueue::new()) });
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::channel::<()>(collector.resources.len().max(1));
    let watches = futures::future::join_all((0..collector.resources.len()).map(|i| {
        let (collector, synced) = (collector.clone(), synced_tx.clone());
        async move { collector.watch(i, synced).await }
    }));
    let workers = {
        let collector = collector.clone();
        async move {
            // Nothing is judged until every resource has been listed once.
            for _ in 0..collector.resources.len() {
                synced_rx.recv().await;
            }
            tracing::info!("garbage collector: graph synced");
            let uids: Vec<String> = lock(&collector.graph).items.keys().cloned().collect();
            for uid in uids {
                collector.enqueue_for(&uid);
            }
            futures::stream::repeat(())
                .for_each_concurrent(WORKERS, |()| {
                    let collector = collector.clone();
                    async move {
                        let work = collector.queue.next().await;
                        let result = match &work {
                            Work::Dependent(uid) => collector.check_dependent(uid).await,
                            Work::Owner(uid) => collector.process_owner(uid).await,
                        };
                        if let Err(e) = result {
                            tracing::debug!("garbage collector: {e}");
                            collector.queue.add_after(work.clone(), RETRY);
                        }
                        collector.queue.done(&work);
                    }
                })
                .await;
        }
    };
    tokio::join!(watches, workers);
    Ok(())
}

impl Collector {
    fn item_of(&self, resource: usize, object: &PartialObjectMeta<DynamicObject>) -> Item {
        let finalizers = object.finalizers();
        Item {
            resource,
            namespace: object.namespace(),
            name: object.name_any(),
            owners: object.owner_references().to_vec(),
            deleting: object.metadata.deletion_timestamp.is_some(),
            orphan: finalizers.iter().any(|f| f == ORPHAN),
            foreground: finalizers.iter().any(|f| f == FOREGROUND),
        }
    }

    /// Queues what an object's state calls for.
    fn enqueue_for(&self, uid: &str) {
        let graph = lock(&self.graph);
        let Some(item) = graph.items.get(uid) else { return };
        if item.deleting && (item.orphan || item.foreground) {
            self.queue.add(Work::Owner(uid.to_owned()));
        }
        if !item.owners.is_empty() {
            self.queue.add(Work::Dependent(uid.to_owned()));
        }
    }

    async fn watch(&self, resource: usize, synced: tokio::sync::mpsc::Sender<()>) {
        // Only metadata, as upstream's collector watches: owners, finalizers and deletion.
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &self.resources[resource].api);
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut relist: Option<HashSet<String>> = None;
        let mut first_sync = true;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!("garbage collector: watch {}: {e}", self.resources[resource].api.plural);
                    continue;
                }
            };
            match event {
                Event::Init => relist = Some(HashSet::new()),
                Event::InitApply(object) | Event::Apply(object) => {
                    let uid = object.uid().unwrap_or_default();
                    if let Some(seen) = relist.as_mut() {
                        seen.insert(uid.clone());
                    }
                    let item = self.item_of(resource, &object);
                    // Most updates (status, labels) change nothing the collector keeps; as
                    // upstream's, it acts only on changes to owners, finalizers or deletion.
                    let mut graph = lock(&self.graph);
                    if graph.items.get(&uid) == Some(&item) {
                        continue;
                    }
                    graph.insert(uid.clone(), item);
                    drop(graph);
                    if !first_sync {
                        self.enqueue_for(&uid);
                    }
                }
                Event::Delete(object) => self.deleted(&object.uid().unwrap_or_default()),
                Event::InitDone => {
                    let seen = relist.take().unwrap_or_default();
                    let gone: Vec<String> = lock(&self.graph)
                        .items
                        .iter()
                        .filter(|(uid, item)| item.resource == resource && !seen.contains(*uid))
                        .map(|(uid, _)| uid.clone())
                        .collect();
                    gone.iter().for_each(|uid| self.deleted(uid));
                    if first_sync {
                        first_sync = false;
                        let _ = synced.send(()).await;
                    } else {
                        seen.iter().for_each(|uid| self.enqueue_for(uid));
                    }
                }
            }
        }
    }

    /// An object is gone: its dependents may be orphans now, and an owner waiting for it in
    /// the foreground may be done.
    fn deleted(&self, uid: &str) {
        let mut graph = lock(&self.graph);
        let Some(item) = graph.remove(uid) else { return };
        for dependent in graph.dependents.get(uid).into_iter().flatten() {
            self.queue.add(Work::Dependent(dependent.clone()));
        }
        for owner in &item.owners {
            if graph.items.get(&owner.uid).is_some_and(|o| o.deleting && o.foreground) {
                self.queue.add(Work::Owner(owner.uid.clone()));
            }
        }
    }

    fn api_for(&self, item: &Item) -> Api<DynamicObject> {
        let resource = &self.resources[item.resource];
        match (&item.namespace, resource.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &resource.api),
            _ => Api::all_with(self.client.clone(), &resource.api),
        }
    }

    /// Whether the owner a reference names exists: (exists, waiting for its dependents).
    async fn owner_state(&self, dependent: &Item, owner: &OwnerReference) -> Result<(bool, bool), Error> {
        if let Some(o) = lock(&self.graph).items.get(&owner.uid) {
            return Ok((true, o.deleting && o.foreground));
        }
        // Not in the graph: ask the server, so a lagging watch deletes nothing.
        let group = owner.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let Some(&resource) = self.by_kind.get(&(group.to_owned(), owner.kind.clone())) else {
            // A kind this server does not serve cannot be checked; upstream keeps the object.
            return Ok((true, false));
        };
        let namespace = self.resources[resource].namespaced.then(|| dependent.namespace.clone()).flatten();
        let probe = Item { resource, namespace, name: owner.name.clone(), ..dependent.clone() };
        match self.api_for(&probe).get_opt(&owner.name).await? {
            Some(found) if found.uid().as_deref() == Some(owner.uid.as_str()) => {
                let deleting = found.metadata.deletion_timestamp.is_some();
                Ok((true, deleting && found.finalizers().iter().any(|f| f == FOREGROUND)))
            }
            _ => Ok((false, false)),
        }
    }

    async fn check_dependent(&self, uid: &str) -> Result<(), Error> {
        let Some(item) = lock(&self.graph).items.get(uid).cloned() else { return Ok(()) };
        if item.owners.is_empty() || (item.deleting && !item.foreground) {
            return Ok(());
        }
        let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for owner in &item.owners {
            match self.owner_state(&item, owner).await? {
                (false, _) => dangling.push(owner.uid.clone()),
                (true, true) => waiting.push(owner.uid.clone()),
                (true, false) => solid.push(owner.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Some owners remain: only the references to the others go.
            let keep: Vec<&OwnerReference> = item.owners.iter().filter(|o| solid.contains(&o.uid)).collect();
            let patch =
                json!({"metadata": {"ownerReferences": if keep.is_empty() { json!(null) } else { json!(keep) }}});
            return match self.api_for(&item).patch(&item.name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other.map(|_| ()).map_err(Error::from),
            };
        }
        if item.deleting {
            return Ok(());
        }
        let has_dependents = lock(&self.graph).dependents.contains_key(uid);
        let policy = if !waiting.is_empty() && has_dependents {
            PropagationPolicy::Foreground
        } else if item.orphan {
            PropagationPolicy::Orphan
        } else if item.foreground {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
            ..Default::default()
        };
        match self.api_for(&item).delete(&item.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a new object of the same name.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn process_owner(&self, uid: &str) -> Result<(), Error> {
        let Some(owner) = lock(&self.graph).items.get(uid).cloned() else { return Ok(()) };
        if !owner.deleting {
            return Ok(());
        }
        let dependents: Vec<(String, Item)> = {
            let graph = lock(&self.graph);
            graph
                .dependents
                .get(uid)
                .into_iter()
                .flatten()
                .filter_map(|d| Some((d.clone(), graph.items.get(d)?.clone())))
                .collect()
        };
        if owner.orphan {
            for (_, dependent) in &dependents {
                let keep: Vec<&OwnerReference> = dependent.owners.iter().filter(|o| o.uid != uid).collect();
                let patch =
                    json!({"metadata": {"ownerReferences": if keep.is_empty() { json!(null) } else { json!(keep) }}});
                match self
                    .api_for(dependent)
                    .patch(&dependent.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    other => {
                        other?;
                    }
                }
            }
            return self.remove_finalizer(&owner, ORPHAN).await;
        }
        if owner.foreground {
            let mut blocking = false;
            for (dependent_uid, dependent) in &dependents {
                if !dependent.deleting {
                    self.queue.add(Work::Dependent(dependent_uid.clone()));
                }
                let reference = dependent.owners.iter().find(|o| o.uid == uid);
                blocking |= reference.is_some_and(|r| r.block_owner_deletion == Some(true));
            }
            if !blocking {
                return self.remove_finalizer(&owner, FOREGROUND).await;
            }
        }
        Ok(())
    }

    async fn remove_finalizer(&self, owner: &Item, finalizer: &str) -> Result<(), Error> {
        let api = self.api_for(owner);
        let Some(current) = api.get_opt(&owner.name).await? else { return Ok(()) };
        let finalizers: Vec<&String> = current.finalizers().iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": current.resource_version()}});
        match api.patch(&owner.name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            other => other.map(|_| ()).map_err(Error::from),
        }
    }
}
