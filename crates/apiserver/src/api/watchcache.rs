//! The watch cache: one store watch per kind, shared by every API watch of that kind.
//!
//! Each event is decoded and serialized once, however many clients watch (upstream's
//! cacher does the same), and a window of recent events lets a watch that starts a little in
//! the past be served without going back to the store. A watch from before the window, or
//! one that falls too far behind the live events, is served as upstream serves it: straight
//! from the store, or ended with a 410 so the client relists.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

use super::*;

/// Events kept per kind for watches that resume from a recent revision.
const WINDOW: usize = 1024;
/// Events a watcher may fall behind the live stream before it is ended with a 410.
const LAG: usize = 4096;

/// A store event with its decoded and encoded forms, computed once and shared.
pub(super) struct Cached {
    pub(super) event: WatchEvent,
    now: OnceLock<Option<Value>>,
    before: OnceLock<Option<Value>>,
    now_json: OnceLock<Option<String>>,
    before_json: OnceLock<Option<String>>,
}

impl Cached {
    pub(super) fn new(event: WatchEvent) -> Cached {
        Cached {
            event,
            now: OnceLock::new(),
            before: OnceLock::new(),
            now_json: OnceLock::new(),
            before_json: OnceLock::new(),
        }
    }

    /// The object after a put, with its resourceVersion.
    pub(super) fn now(&self) -> Option<&Value> {
        self.now
            .get_or_init(|| match &self.event {
                WatchEvent::Put { kv, .. } => with_revision(kv).ok(),
                _ => None,
            })
            .as_ref()
    }

    /// The object before the event, stamped with the event's revision (as a DELETED event
    /// carries it).
    pub(super) fn before(&self) -> Option<&Value> {
        self.before
            .get_or_init(|| {
                let (prev, revision) = match &self.event {
                    WatchEvent::Put { kv, prev } => (prev.as_ref(), kv.mod_revision),
                    WatchEvent::Delete { prev, revision, .. } => (prev.as_ref(), *revision),
                    WatchEvent::Progress { .. } => (None, 0),
                };
                let mut object: Value = serde_json::from_slice(&prev?.value).ok()?;
                object["metadata"]["resourceVersion"] = json!(revision.to_string());
                Some(object)
            })
            .as_ref()
    }

    pub(super) fn now_json(&self) -> Option<&str> {
        self.now_json.get_or_init(|| self.now().map(Value::to_string)).as_deref()
    }

    pub(super) fn before_json(&self) -> Option<&str> {
        self.before_json.get_or_init(|| self.before().map(Value::to_string)).as_deref()
    }
}

/// The window of one kind and the channel its live events go out on. Events are appended and
/// sent under the same lock, so a watcher that reads the window and subscribes under it sees
/// every event exactly once.
struct Feed {
    window: VecDeque<Arc<Cached>>,
    /// Every event at or after this revision is in the window or still to come.
    complete_from: i64,
    sender: broadcast::Sender<Arc<Cached>>,
}

struct KindCache {
    feed: Mutex<Feed>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KindCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The caches of every kind being watched, made on first watch.
#[derive(Clone, Default)]
pub struct WatchCache {
    kinds: Arc<Mutex<HashMap<&'static str, Arc<KindCache>>>>,
}

/// What a cached watch yields: events, or the end of a watcher that fell too far behind.
pub(super) enum Served {
    Event(Arc<Cached>),
    TooSlow,
}

impl WatchCache {
    /// Events under `prefix` from `start_revision` on, if the cache can serve them; `None`
    /// means the caller should watch the store itself.
    pub(super) async fn watch(
        &self,
        store: &Store,
        kind: &'static Kind,
        prefix: String,
        start_revision: i64,
    ) -> Option<impl futures::Stream<Item = Served> + Send + 'static> {
        let cache = self.get_or_start(store, kind, start_revision).await?;
        let (replay, receiver) = {
            let feed = cache.feed.lock().ok()?;
            if start_revision < feed.complete_from {
                return None;
            }
            let replay: Vec<Arc<Cached>> =
                feed.window.iter().filter(|c| c.event.revision() >= start_revision).cloned().collect();
            (replay, feed.sender.subscribe())
        };
        let keep = move |c: &Arc<Cached>| match &c.event {
            WatchEvent::Put { kv, .. } => kv.key.starts_with(&prefix),
            WatchEvent::Delete { key, .. } => key.starts_with(&prefix),
            WatchEvent::Progress { .. } => true,
        };
        let keep_live = keep.clone();
        let live = tokio_stream::wrappers::BroadcastStream::new(receiver)
            .map(|received| match received {
                Ok(cached) => Served::Event(cached),
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(_)) => Served::TooSlow,
            })
            .filter(move |served| {
                std::future::ready(match served {
                    Served::Event(c) => keep_live(c),
                    Served::TooSlow => true,
                })
            });
        let replayed = futures::stream::iter(replay.into_iter().filter(keep).map(Served::Event));
        // A watcher that lagged is told once, then its stream ends.
        let mut ended = false;
        Some(replayed.chain(live).take_while(move |served| {
            let go = !ended;
            ended |= matches!(served, Served::TooSlow);
            std::future::ready(go)
        }))
    }

    async fn get_or_start(&self, store: &Store, kind: &'static Kind, start_revision: i64) -> Option<Arc<KindCache>> {
        if let Some(cache) = self.kinds.lock().ok()?.get(kind.plural) {
            return Some(cache.clone());
        }
        // The first watch of a kind starts the cache where that watch starts, so it is served
        // too; the store replays what it holds since then.
        let watch = store
            .watch(WatchOptions {
                prefix: format!("/registry/{}/", kind.plural),
                start_revision,
                progress_interval: Some(BOOKMARK_INTERVAL),
            })
            .await
            .ok()?;
        let (sender, _) = broadcast::channel(LAG);
        let feed = Mutex::new(Feed { window: VecDeque::with_capacity(WINDOW), complete_from: start_revision, sender });
        let kinds = self.kinds.clone();
        let cache = Arc::new_cyclic(|weak: &std::sync::Weak<KindCache>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move {
                let mut watch = watch;
                while let Some(event) = watch.next().await {
                    let Some(cache) = weak.upgrade() else { return };
                    let Ok(event) = event else { break };
                    let Ok(mut feed) = cache.feed.lock() else { break };
                    let cached = Arc::new(Cached::new(event));
                    if !matches!(cached.event, WatchEvent::Progress { .. }) {
                        if feed.window.len() == WINDOW
                            && let Some(oldest) = feed.window.pop_front()
                        {
                            feed.complete_from = oldest.event.revision() + 1;
                        }
                        feed.window.push_back(cached.clone());
                    }
                    // No receivers is fine: the window still serves the next watch.
                    let _ = feed.sender.send(cached);
                }
                // The store watch ended (compaction, shutdown): forget this cache, so the next
                // watch starts a fresh one; its watchers see their stream end and re-watch.
                if let Ok(mut kinds) = kinds.lock()
                    && kinds.get(kind.plural).is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), weak.as_ptr()))
                {
                    kinds.remove(kind.plural);
                }
            });
            KindCache { feed, task }
        });
        let mut kinds = self.kinds.lock().ok()?;
        // Another watch may have started one meanwhile; keep the first.
        Some(kinds.entry(kind.plural).or_insert(cache).clone())
    }
}
