//! The watch cache: for each kind that is listed or watched, the kind's objects and one store
//! watch, shared by every API list and watch of that kind.
//!
//! Each event is decoded and serialized once, however many clients watch (upstream's
//! cacher does the same), and a window of recent events lets a watch that starts a little in
//! the past be served without going back to the store. A watch from before the window, or
//! one that falls too far behind the live events, is served as upstream serves it: straight
//! from the store, or ended with a 410 so the client relists.
//!
//! Lists are served from the objects the cache holds, as upstream's consistent reads from
//! cache are: a list that must be current first asks the store for its revision and waits
//! (asking the store watch for progress) until the cache has caught up with it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use rkube_store::ProgressRequester;
use tokio::sync::broadcast;

use super::*;

/// Events kept per kind for watches that resume from a recent revision: at least
/// `WINDOW_MIN`, and up to `WINDOW_MAX` while they are younger than `WINDOW_FRESH`, as
/// upstream's cacher sizes its window. A client that lists during a burst of writes (a
/// scheduler binding thousands of pods a second while an informer pages through its first
/// list) can then still watch from its list's revision here, rather than from the store's
/// history.
const WINDOW_MIN: usize = 1024;
const WINDOW_MAX: usize = 16 * 1024;
const WINDOW_FRESH: Duration = Duration::from_secs(75);
/// Events a watcher may fall behind the live stream before it is ended with a 410.
const LAG: usize = 4096;
/// How long a list waits for the cache to catch up before it reads the store instead
/// (upstream's `blockTimeout`).
const FRESH_WAIT: Duration = Duration::from_secs(3);
/// Progress events reach watchers (as bookmarks) at most this often, as upstream's cacher
/// sends them: those that lists ask for are for the cache alone.
const PROGRESS_BROADCAST: Duration = BOOKMARK_INTERVAL;

/// A store event with its decoded and encoded forms, computed once and shared.
///
/// Watchers with no selector never parse the object: the stored JSON gets its
/// resourceVersion spliced in, and each whole watch line is made once for all of them.
pub(super) struct Cached {
    pub(super) event: WatchEvent,
    now: OnceLock<Option<Value>>,
    before: OnceLock<Option<Value>>,
    now_json: OnceLock<Option<Bytes>>,
    before_json: OnceLock<Option<Bytes>>,
    /// Whole lines, by event type and shape (full or metadata-only).
    lines: [OnceLock<Option<Bytes>>; 6],
}

/// The type of a watch event line carrying an object.
#[derive(Clone, Copy)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

impl Cached {
    pub(super) fn new(event: WatchEvent) -> Cached {
        Cached {
            event,
            now: OnceLock::new(),
            before: OnceLock::new(),
            now_json: OnceLock::new(),
            before_json: OnceLock::new(),
            lines: Default::default(),
        }
    }

    /// An event whose new object's JSON (with its resourceVersion) is already made.
    fn with_now_json(event: WatchEvent, json: Bytes) -> Cached {
        let cached = Cached::new(event);
        let _ = cached.now_json.set(Some(json));
        cached
    }

    /// The object after a put, with its resourceVersion.
    pub(super) fn now(&self) -> Option<&Value> {
        self.now.get_or_init(|| serde_json::from_slice(self.now_json()?).ok()).as_ref()
    }

    /// The object before the event, stamped with the event's revision (as a DELETED event
    /// carries it).
    pub(super) fn before(&self) -> Option<&Value> {
        self.before.get_or_init(|| serde_json::from_slice(self.before_json()?).ok()).as_ref()
    }

    pub(super) fn now_json(&self) -> Option<&Bytes> {
        self.now_json
            .get_or_init(|| match &self.event {
                WatchEvent::Put { kv, .. } => with_revision_bytes(kv).ok().map(Bytes::from),
                _ => None,
            })
            .as_ref()
    }

    pub(super) fn before_json(&self) -> Option<&Bytes> {
        self.before_json
            .get_or_init(|| {
                let (prev, revision) = match &self.event {
                    WatchEvent::Put { kv, prev } => (prev.as_ref(), kv.mod_revision),
                    WatchEvent::Delete { prev, revision, .. } => (prev.as_ref(), *revision),
                    WatchEvent::Progress { .. } => (None, 0),
                };
                revision_spliced(&prev?.value, revision).ok().map(Bytes::from)
            })
            .as_ref()
    }

    /// The watch line `{"type":...,"object":...}` for this event: the new object for ADDED
    /// and MODIFIED, the old one for DELETED; as `PartialObjectMetadata` if `metadata_only`.
    pub(super) fn line(&self, event: EventType, metadata_only: bool) -> Option<Bytes> {
        self.lines[event as usize * 2 + metadata_only as usize]
            .get_or_init(|| {
                let object = match event {
                    EventType::Added | EventType::Modified => self.now_json()?,
                    EventType::Deleted => self.before_json()?,
                };
                let partial;
                let object = if metadata_only {
                    partial = partial_json(object).ok()?;
                    &partial[..]
                } else {
                    &object[..]
                };
                Some(watch_line(event.as_str(), object))
            })
            .clone()
    }
}

/// `{"type":TYPE,"object":OBJECT}` and a newline, from the object's JSON.
pub(super) fn watch_line(event: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + event.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(event.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// One object as the cache holds it.
pub(super) struct Entry {
    pub(super) key: String,
    /// The stored JSON with its resourceVersion spliced in: what a list sends, and what the
    /// event that put it sends.
    pub(super) json: Bytes,
    /// The revision the object was last written at.
    pub(super) revision: i64,
    /// The fields and labels selectors look at, extracted on first use.
    selectable: OnceLock<Value>,
}

impl Entry {
    fn new(kv: &KeyValue) -> Option<Entry> {
        let json = Bytes::from(with_revision_bytes(kv).ok()?);
        Some(Entry { key: kv.key.clone(), json, revision: kv.mod_revision, selectable: OnceLock::new() })
    }

    /// The object, parsed.
    pub(super) fn object(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.json).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// A small object holding only what a selector of `kind` can match on: the name,
    /// namespace and labels, and the kind's field labels. Kept, so a selective list of many
    /// objects parses each one once, not on every list.
    pub(super) fn selectable(&self, kind: &Kind) -> &Value {
        self.selectable.get_or_init(|| {
            let Ok(object) = self.object() else { return Value::Null };
            let mut out = json!({"metadata": {}});
            for field in ["metadata.name", "metadata.namespace", "metadata.labels"]
                .into_iter()
                .chain(kind.field_labels.iter().map(|f| if *f == "source" { "source.component" } else { f }))
            {
                let found = field.split('.').fold(&object, |v, part| &v[part]);
                if !found.is_null() {
                    let mut at = &mut out;
                    for part in field.split('.') {
                        at = &mut at[part];
                    }
                    *at = found.clone();
                }
            }
            out
        })
    }
}

/// The state of one kind and the channel its live events go out on. Events are applied,
/// appended and sent under the same lock, so a watcher that reads the window (or the objects)
/// and subscribes under it sees every later event exactly once.
struct Feed {
    /// Recent events, with when each came.
    window: VecDeque<(tokio::time::Instant, Arc<Cached>)>,
    /// Every event at or after this revision is in the window or still to come.
    complete_from: i64,
    sender: broadcast::Sender<Arc<Cached>>,
    /// The kind's objects as of `revision`, by key.
    objects: BTreeMap<String, Arc<Entry>>,
    revision: i64,
    last_progress_broadcast: tokio::time::Instant,
}

impl Feed {
    /// Drops the events the window no longer keeps: beyond its cap, or old ones beyond its
    /// minimum.
    fn trim_window(&mut self, now: tokio::time::Instant) {
        while self.window.len() > WINDOW_MAX
            || (self.window.len() > WINDOW_MIN
                && self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > WINDOW_FRESH))
        {
            let Some((_, oldest)) = self.window.pop_front() else { break };
            self.complete_from = oldest.event.revision() + 1;
        }
    }
}

struct KindCache {
    feed: Mutex<Feed>,
    /// The revision the objects are at, for lists waiting for the cache to catch up.
    fresh: tokio::sync::watch::Sender<i64>,
    progress: ProgressRequester,
    /// Set while a progress request is out, so that many waiting lists make one.
    progress_asked: std::sync::atomic::AtomicBool,
    task: OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for KindCache {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl KindCache {
    /// Waits until the objects are at `revision` or later; false if that takes too long.
    async fn caught_up(&self, revision: i64) -> bool {
        let deadline = tokio::time::Instant::now() + FRESH_WAIT;
        let mut fresh = self.fresh.subscribe();
        loop {
            if *fresh.borrow_and_update() >= revision {
                return true;
            }
            // One request at a time for all waiting lists; a progress event clears it (before
            // waking them), so a list still behind after one asks again.
            if !self.progress_asked.swap(true, std::sync::atomic::Ordering::AcqRel) {
                self.progress.request();
            }
            if !matches!(tokio::time::timeout_at(deadline, fresh.changed()).await, Ok(Ok(()))) {
                // Should a request have gone unanswered, the next list asks again.
                self.progress_asked.store(false, std::sync::atomic::Ordering::Release);
                return false;
            }
        }
    }

    /// Applies one store event and sends it to watchers; the revision the objects are now at.
    fn apply(&self, event: WatchEvent) -> Option<i64> {
        let mut feed = self.feed.lock().ok()?;
        let revision = event.revision();
        let mut json = None;
        match &event {
            WatchEvent::Put { kv, .. } => match Entry::new(kv) {
                Some(entry) => {
                    json = Some(entry.json.clone());
                    feed.objects.insert(kv.key.clone(), Arc::new(entry));
                }
                // Never serve an old version of an object the cache could not read.
                None => {
                    feed.objects.remove(&kv.key);
                }
            },
            WatchEvent::Delete { key, .. } => {
                feed.objects.remove(key);
            }
            WatchEvent::Progress { .. } => self.progress_asked.store(false, std::sync::atomic::Ordering::Release),
        }
        feed.revision = feed.revision.max(revision);
        let cached = Arc::new(match json {
            Some(json) => Cached::with_now_json(event, json),
            None => Cached::new(event),
        });
        if matches!(cached.event, WatchEvent::Progress { .. }) {
            let now = tokio::time::Instant::now();
            if now.duration_since(feed.last_progress_broadcast) < PROGRESS_BROADCAST {
                return Some(feed.revision);
            }
            feed.last_progress_broadcast = now;
            feed.trim_window(now);
        } else {
            let now = tokio::time::Instant::now();
            feed.window.push_back((now, cached.clone()));
            feed.trim_window(now);
        }
        // No receivers is fine: the window still serves the next watch.
        let _ = feed.sender.send(cached);
        Some(feed.revision)
    }
}

/// The caches of every kind listed or watched, made on first use.
#[derive(Clone, Default)]
pub struct WatchCache {
    kinds: Arc<Mutex<HashMap<&'static str, Slot>>>,
}

/// Where a kind's cache is made once, by whichever request comes first.
type Slot = Arc<tokio::sync::OnceCell<Arc<KindCache>>>;

/// What a cached watch yields: events, or the end of a watcher that fell too far behind.
pub(super) enum Served {
    Event(Arc<Cached>),
    TooSlow,
}

/// A list read from the cache: objects in key order, and the revision they are all at.
pub(super) struct Listing {
    pub(super) revision: i64,
    pub(super) entries: Vec<Arc<Entry>>,
    /// Whether objects under the prefix follow the last of `entries`.
    pub(super) more: bool,
}

/// How current a read from the cache must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Freshness {
    /// Whatever the cache holds (`resourceVersion=0`).
    Any,
    /// At this revision or later.
    AtLeast(i64),
}

impl WatchCache {
    /// The object at `key` as the kind's cache holds it, if the cache is running. It may be
    /// behind the store: callers use it as a first guess for a write that the store checks.
    pub(super) fn cached(&self, kind: &Kind, key: &str) -> Option<Arc<Entry>> {
        let slot = self.kinds.lock().ok()?.get(kind.plural)?.clone();
        let cache = slot.get()?;
        let feed = cache.feed.lock().ok()?;
        feed.objects.get(key).cloned()
    }

    /// The objects under `prefix`, at most `take` of them (all if `None`), if the cache can
    /// serve them as fresh as asked; `None` means the caller should read the store.
    pub(super) async fn list(
        &self,
        store: &Store,
        kind: &'static Kind,
        prefix: &str,
        freshness: Freshness,
        take: Option<usize>,
    ) -> Option<Listing> {
        let cache = self.get_or_start(store, kind).await?;
        if let Freshness::AtLeast(revision) = freshness
            && !cache.caught_up(revision).await
        {
            return None;
        }
        let feed = cache.feed.lock().ok()?;
        let mut under = under(&feed.objects, prefix);
        let entries: Vec<Arc<Entry>> = match take {
            Some(n) => under.by_ref().take(n).collect(),
            None => under.by_ref().collect(),
        };
        let more = under.next().is_some();
        Some(Listing { revision: feed.revision, entries, more })
    }

    /// The objects under `prefix` as of a revision, and every event after it: what a watch
    /// without a resourceVersion starts with. `None` means the caller should use the store.
    pub(super) async fn watch_with_state(
        &self,
        store: &Store,
        kind: &'static Kind,
        prefix: String,
        freshness: Freshness,
    ) -> Option<(Listing, impl futures::Stream<Item = Served> + Send + 'static)> {
        let cache = self.get_or_start(store, kind).await?;
        if let Freshness::AtLeast(revision) = freshness
            && !cache.caught_up(revision).await
        {
            return None;
        }
        let (listing, receiver) = {
            let feed = cache.feed.lock().ok()?;
            let entries = under(&feed.objects, &prefix).collect();
            (Listing { revision: feed.revision, entries, more: false }, feed.sender.subscribe())
        };
        let from = listing.revision + 1;
        Some((listing, served(prefix, from, Vec::new(), receiver)))
    }

    /// Events under `prefix` from `start_revision` on, if the cache can serve them; `None`
    /// means the caller should watch the store itself.
    pub(super) async fn watch(
        &self,
        store: &Store,
        kind: &'static Kind,
        prefix: String,
        start_revision: i64,
    ) -> Option<impl futures::Stream<Item = Served> + Send + 'static> {
        let cache = self.get_or_start(store, kind).await?;
        let (replay, receiver) = {
            let feed = cache.feed.lock().ok()?;
            if start_revision < feed.complete_from {
                return None;
            }
            // Revisions rise along the window.
            let from = feed.window.partition_point(|(_, c)| c.event.revision() < start_revision);
            let replay: Vec<Arc<Cached>> = feed.window.range(from..).map(|(_, c)| c.clone()).collect();
            (replay, feed.sender.subscribe())
        };
        Some(served(prefix, start_revision, replay, receiver))
    }

    /// The cache of `kind`, started on first use: a list of all its objects, then a store
    /// watch from just after that list.
    async fn get_or_start(&self, store: &Store, kind: &'static Kind) -> Option<Arc<KindCache>> {
        let cell = self.kinds.lock().ok()?.entry(kind.plural).or_default().clone();
        // One request starts it; others of the same kind wait for that rather than listing too.
        let cache = cell.get_or_try_init(|| self.start(store, kind, cell.clone())).await.ok()?;
        Some(cache.clone())
    }

    async fn start(&self, store: &Store, kind: &'static Kind, cell: Slot) -> Result<Arc<KindCache>, ()> {
        let prefix = format!("/registry/{}/", kind.plural);
        let page = store.list(&ListOptions { prefix: prefix.clone(), ..Default::default() }).await.map_err(|_| ())?;
        let watch = store
            .watch(WatchOptions {
                prefix,
                start_revision: page.revision + 1,
                progress_interval: Some(BOOKMARK_INTERVAL),
            })
            .await
            .map_err(|_| ())?;
        let objects: BTreeMap<String, Arc<Entry>> =
            page.items.iter().filter_map(|kv| Some((kv.key.clone(), Arc::new(Entry::new(kv)?)))).collect();
        let (sender, _) = broadcast::channel(LAG);
        let feed = Mutex::new(Feed {
            window: VecDeque::with_capacity(WINDOW_MIN),
            complete_from: page.revision + 1,
            sender,
            objects,
            revision: page.revision,
            last_progress_broadcast: tokio::time::Instant::now(),
        });
        let (fresh, _) = tokio::sync::watch::channel(page.revision);
        let progress = watch.progress_requester();
        let mut events = lagged(watch);
        let kinds = self.kinds.clone();
        let cache = Arc::new(KindCache {
            feed,
            fresh,
            progress,
            progress_asked: std::sync::atomic::AtomicBool::new(false),
            task: OnceLock::new(),
        });
        // The task holds weak references only: the map owns the cache, and dropping the cache
        // stops the task. It starts once the cache exists, so it never finds it missing.
        let (weak, cell) = (Arc::downgrade(&cache), Arc::downgrade(&cell));
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Some(cache) = weak.upgrade() else { return };
                let Ok(event) = event else { break };
                let Some(revision) = cache.apply(event) else { break };
                cache.fresh.send_replace(revision);
            }
            // The store watch ended (compaction, shutdown): forget this cache, so the next
            // request starts a fresh one; its watchers see their stream end and re-watch.
            if let Ok(mut kinds) = kinds.lock()
                && kinds.get(kind.plural).is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), cell.as_ptr()))
            {
                kinds.remove(kind.plural);
            }
        });
        let _ = cache.task.set(task);
        Ok(cache)
    }
}

/// The objects whose keys start with `prefix`, in key order.
fn under<'a>(objects: &'a BTreeMap<String, Arc<Entry>>, prefix: &'a str) -> impl Iterator<Item = Arc<Entry>> + 'a {
    objects
        .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(prefix))
        .map(|(_, entry)| entry.clone())
}

/// The store watch's events, each held back by `RKUBE_WATCH_CACHE_LAG_MS` if that is set: a
/// fault injected by tests, so that a cache behind the store is seen, not just possible.
fn lagged(watch: rkube_store::Watch) -> futures::stream::BoxStream<'static, rkube_store::Result<WatchEvent>> {
    let lag = std::env::var("RKUBE_WATCH_CACHE_LAG_MS").ok().and_then(|ms| ms.parse().ok()).map(Duration::from_millis);
    let Some(lag) = lag else { return watch.boxed() };
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut watch = watch;
        while let Some(event) = watch.next().await {
            if sender.send((tokio::time::Instant::now() + lag, event)).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(receiver)
        .then(|(due, event)| async move {
            tokio::time::sleep_until(due).await;
            event
        })
        .boxed()
}

/// A watcher's stream: the replayed events, then the live ones, all from `from` on and under
/// `prefix`; it ends after telling a watcher that fell too far behind.
fn served(
    prefix: String,
    from: i64,
    replay: Vec<Arc<Cached>>,
    receiver: broadcast::Receiver<Arc<Cached>>,
) -> impl futures::Stream<Item = Served> + Send + 'static {
    let keep = move |c: &Arc<Cached>| {
        c.event.revision() >= from
            && match &c.event {
                WatchEvent::Put { kv, .. } => kv.key.starts_with(&prefix),
                WatchEvent::Delete { key, .. } => key.starts_with(&prefix),
                WatchEvent::Progress { .. } => true,
            }
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
    let mut ended = false;
    replayed.chain(live).take_while(move |served| {
        let go = !ended;
        ended |= matches!(served, Served::TooSlow);
        std::future::ready(go)
    })
}
