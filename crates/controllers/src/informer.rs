//! Shared informers: one watch of a kind, decoded once, followed by every loop that needs
//! the kind, as upstream's `SharedInformerFactory` serves kube-controller-manager.
//!
//! Pods are the kind this matters for: the scheduler and seven controllers follow every pod,
//! and each decoding every event itself cost more than anything else they do.
//!
//! A subscriber gets the watcher's events with the objects in `Arc`s. One that subscribes
//! after the first list first gets the current state (`Init`, an `InitApply` per object,
//! `InitDone`), exactly as a watcher of its own would begin. Deletions reach every
//! subscriber as `Delete` events, unlike kube-runtime's shared reflector, which drops them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};

/// Namespace and name.
type Key = (Option<String>, String);

/// One shared watch of `K`, started by its first subscriber and stopped when the informer
/// is dropped.
pub struct Informer<K: Resource + 'static> {
    api: Api<K>,
    state: Arc<Mutex<State<K>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct State<K> {
    /// The objects as of the last complete list and the events since; None before the first
    /// list completed.
    synced: Option<HashMap<Key, Arc<K>>>,
    /// A list under way: the objects it has brought so far.
    listing: Option<HashMap<Key, Arc<K>>>,
    /// Unbounded, so the watch never waits for the slowest loop: each event is one `Arc` per
    /// subscriber, and every subscriber only files keys in a work queue.
    subscribers: Vec<mpsc::UnboundedSender<Event<Arc<K>>>>,
}

// By hand: a derive would ask `K: Default`.
impl<K> Default for State<K> {
    fn default() -> Self {
        State { synced: None, listing: None, subscribers: Vec::new() }
    }
}

fn key<K: Resource>(object: &K) -> Key {
    (object.namespace(), object.name_any())
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    pub fn new(api: Api<K>) -> Informer<K> {
        Informer { api, state: Arc::default(), task: Mutex::new(None) }
    }

    /// The watcher's events from now on, preceded by the current state if there is one.
    pub fn events(&self) -> impl Stream<Item = Event<Arc<K>>> + Send + 'static {
        let events = subscribe(&self.state);
        self.start();
        events
    }

    /// Every object applied or deleted (and, on each list, every object listed): the trigger
    /// stream a kube-runtime `Controller` takes for what it owns or watches.
    pub fn touched(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.events().filter_map(|event| {
            std::future::ready(match event {
                Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => Some(o),
                Event::Init | Event::InitDone => None,
            })
        })
    }

    fn start(&self) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_some() {
            return;
        }
        let (api, state) = (self.api.clone(), self.state.clone());
        *task = Some(tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => publish(&state, event),
                    Err(e) => tracing::debug!("shared {} watch: {e}", K::kind(&Default::default())),
                }
            }
        }));
    }
}

impl<K: Resource + 'static> Drop for Informer<K> {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

fn lock<K>(state: &Mutex<State<K>>) -> MutexGuard<'_, State<K>> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new subscriber: the current state as a watcher's first list shows it (and a list under
/// way so far, which the live `InitDone` will end), then every event.
fn subscribe<K>(state: &Mutex<State<K>>) -> mpsc::UnboundedReceiver<Event<Arc<K>>> {
    let (tx, rx) = mpsc::unbounded();
    let mut state = lock(state);
    if let Some(objects) = &state.synced {
        let _ = tx.unbounded_send(Event::Init);
        for object in objects.values() {
            let _ = tx.unbounded_send(Event::InitApply(object.clone()));
        }
        let _ = tx.unbounded_send(Event::InitDone);
    }
    if let Some(objects) = &state.listing {
        let _ = tx.unbounded_send(Event::Init);
        for object in objects.values() {
            let _ = tx.unbounded_send(Event::InitApply(object.clone()));
        }
    }
    state.subscribers.push(tx);
    rx
}

/// Files one event and hands it to every subscriber, dropping those that are gone.
fn publish<K: Resource>(state: &Mutex<State<K>>, event: Event<K>) {
    let mut state = lock(state);
    let shared = match event {
        Event::Init => {
            state.listing = Some(HashMap::new());
            Event::Init
        }
        Event::InitApply(object) => {
            let object = Arc::new(object);
            state.listing.get_or_insert_with(HashMap::new).insert(key(object.as_ref()), object.clone());
            Event::InitApply(object)
        }
        Event::InitDone => {
            state.synced = Some(state.listing.take().unwrap_or_default());
            Event::InitDone
        }
        Event::Apply(object) => {
            let object = Arc::new(object);
            state.synced.get_or_insert_with(HashMap::new).insert(key(object.as_ref()), object.clone());
            Event::Apply(object)
        }
        Event::Delete(object) => {
            let object = Arc::new(object);
            if let Some(synced) = state.synced.as_mut() {
                synced.remove(&key(object.as_ref()));
            }
            Event::Delete(object)
        }
    };
    state.subscribers.retain(|s| s.unbounded_send(shared.clone()).is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn map(name: &str, value: &str) -> ConfigMap {
        let mut m = ConfigMap::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("ns".into());
        m.data = Some([("v".to_owned(), value.to_owned())].into());
        m
    }

    fn shown(event: &Event<Arc<ConfigMap>>) -> String {
        let value = |o: &ConfigMap| format!("{}={}", o.name_any(), o.data.as_ref().unwrap()["v"]);
        match event {
            Event::Init => "Init".into(),
            Event::InitApply(o) => format!("InitApply {}", value(o)),
            Event::InitDone => "InitDone".into(),
            Event::Apply(o) => format!("Apply {}", value(o)),
            Event::Delete(o) => format!("Delete {}", value(o)),
        }
    }

    fn drain(rx: &mut (impl Stream<Item = Event<Arc<ConfigMap>>> + Unpin)) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(event)) = rx.next().now_or_never() {
            out.push(shown(&event));
        }
        out
    }

    #[test]
    fn subscribers_see_deletes_and_late_ones_start_from_the_current_state() {
        let state = Mutex::<State<ConfigMap>>::default();
        let mut early = subscribe(&state);
        publish(&state, Event::Init);
        publish(&state, Event::InitApply(map("a", "1")));
        publish(&state, Event::InitApply(map("b", "1")));
        publish(&state, Event::InitDone);
        publish(&state, Event::Apply(map("a", "2")));
        publish(&state, Event::Delete(map("b", "1")));
        assert_eq!(
            drain(&mut early),
            ["Init", "InitApply a=1", "InitApply b=1", "InitDone", "Apply a=2", "Delete b=1"]
        );

        let mut late = subscribe(&state);
        assert_eq!(drain(&mut late), ["Init", "InitApply a=2", "InitDone"]);

        // A relist under way: a subscriber joining now gets the synced state, then the list
        // so far, and the live rest.
        publish(&state, Event::Init);
        publish(&state, Event::InitApply(map("c", "1")));
        let mut during = subscribe(&state);
        publish(&state, Event::InitDone);
        assert_eq!(drain(&mut during), ["Init", "InitApply a=2", "InitDone", "Init", "InitApply c=1", "InitDone"]);
        assert_eq!(drain(&mut late), ["Init", "InitApply c=1", "InitDone"]);
        let mut after = subscribe(&state);
        assert_eq!(drain(&mut after), ["Init", "InitApply c=1", "InitDone"]);

        // A subscriber that went away is dropped on the next event.
        drop(early);
        publish(&state, Event::Apply(map("c", "2")));
        assert_eq!(lock(&state).subscribers.len(), 3);
    }
}
