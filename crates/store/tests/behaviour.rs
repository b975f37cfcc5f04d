//! The store's behaviour suite: every test runs against the in-memory, embedded and real etcd
//! backends, which must agree.

use std::time::Duration;

use bytes::Bytes;
use rkube_store::etcd_process::EtcdProcess;
use rkube_store::{
    Backend, EmbeddedConfig, KeyValue, ListOptions, MAX_VALUE_BYTES, Store, StoreError, Watch, WatchEvent, WatchOptions,
};

struct Harness {
    store: Store,
    _etcd: Option<EtcdProcess>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn open(kind: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (backend, etcd) = match kind {
            "memory" => (Backend::Memory, None),
            "embedded" => (Backend::Embedded(EmbeddedConfig::new(dir.path())), None),
            "etcd" => {
                let etcd = EtcdProcess::start(&dir.path().join("etcd")).await.expect("start etcd");
                (Backend::Etcd { endpoints: vec![etcd.endpoint().to_owned()] }, Some(etcd))
            }
            other => panic!("unknown backend {other}"),
        };
        let store = Store::open(backend).await.expect("open store");
        Harness { store, _etcd: etcd, _dir: dir }
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const WAIT: Duration = Duration::from_secs(20);

async fn next_event(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("watch event within 20s")
        .expect("watch still open")
        .expect("watch event, not error")
}

/// Skips progress events, which a backend may send at any time.
async fn next_change(watch: &mut Watch) -> WatchEvent {
    loop {
        match next_event(watch).await {
            WatchEvent::Progress { .. } => continue,
            event => return event,
        }
    }
}

async fn crud_and_revisions(s: &Store) {
    assert_eq!(s.compacted_revision().await.unwrap(), 0, "a new store has compacted nothing");
    let start = s.current_revision().await.unwrap();
    let created = s.create("/t/a", b("1")).await.unwrap();
    assert_eq!(created.mod_revision, start + 1);
    assert_eq!((created.create_revision, created.version), (start + 1, 1));
    assert!(matches!(s.create("/t/a", b("x")).await, Err(StoreError::AlreadyExists { .. })));

    let updated = s.update("/t/a", b("2"), created.mod_revision).await.unwrap();
    assert_eq!(updated.mod_revision, start + 2, "one revision per committed write");
    assert_eq!((updated.create_revision, updated.version), (start + 1, 2));
    assert_eq!(s.get("/t/a", None).await.unwrap(), Some(updated.clone()));
    assert_eq!(s.get("/t/a", Some(created.mod_revision)).await.unwrap(), Some(created.clone()));
    assert_eq!(s.get("/t/missing", None).await.unwrap(), None);

    let deleted = s.delete("/t/a", None).await.unwrap();
    assert_eq!(deleted.prev, updated);
    assert_eq!(deleted.revision, start + 3);
    assert_eq!(s.get("/t/a", None).await.unwrap(), None);
    assert_eq!(s.get("/t/a", Some(updated.mod_revision)).await.unwrap(), Some(updated));
    assert!(matches!(s.delete("/t/a", None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.update("/t/a", b("3"), deleted.revision).await, Err(StoreError::NotFound { .. })));

    // A key created again starts a new incarnation.
    let again = s.create("/t/a", b("4")).await.unwrap();
    assert_eq!((again.create_revision, again.version), (start + 4, 1));
    assert_eq!(s.current_revision().await.unwrap(), start + 4);
    assert!(matches!(
        s.get("/t/a", Some(start + 100)).await,
        Err(StoreError::FutureRevision { requested, current }) if requested == start + 100 && current == start + 4
    ));
}

async fn cas_conflicts(s: &Store) {
    let first = s.create("/cas/k", b("a")).await.unwrap();
    let second = s.update("/cas/k", b("b"), first.mod_revision).await.unwrap();
    match s.update("/cas/k", b("c"), first.mod_revision).await {
        Err(StoreError::Conflict { expected, current: Some(current), .. }) => {
            assert_eq!(expected, first.mod_revision);
            assert_eq!(*current, second, "a conflict carries the current value");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(s.delete("/cas/k", Some(first.mod_revision)).await, Err(StoreError::Conflict { .. })));
    assert_eq!(s.get("/cas/k", None).await.unwrap().unwrap().value, b("b"));
    assert!(s.delete("/cas/k", Some(second.mod_revision)).await.is_ok());

    // Concurrent read-modify-write increments: none may be lost.
    s.create("/cas/counter", b("0")).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..10 {
                    loop {
                        let kv = s.get("/cas/counter", None).await.unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                        match s.update("/cas/counter", b(&(n + 1).to_string()), kv.mod_revision).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let kv = s.get("/cas/counter", None).await.unwrap().unwrap();
    assert_eq!(kv.value, b("160"));
    assert_eq!(kv.version, 161);
}

async fn list_all(s: &Store, prefix: &str, limit: usize, revision: Option<i64>) -> (Vec<KeyValue>, i64) {
    let mut options = ListOptions { prefix: prefix.into(), limit: Some(limit), revision, after: None };
    let mut items = Vec::new();
    loop {
        let page = s.list(&options).await.unwrap();
        assert!(page.items.len() <= limit);
        items.extend(page.items);
        options.revision = Some(page.revision);
        if !page.more {
            return (items, page.revision);
        }
        options.after = Some(items.last().unwrap().key.clone());
    }
}

async fn pagination_is_consistent_under_writes(s: &Store) {
    for i in 0..100 {
        s.create(&format!("/page/k{i:03}"), b(&format!("v{i}"))).await.unwrap();
    }
    s.create("/pagf/outside", b("x")).await.unwrap();
    s.create("/pag", b("x")).await.unwrap();
    let snapshot = s.list(&ListOptions { prefix: "/page/".into(), ..Default::default() }).await.unwrap();
    assert_eq!(snapshot.items.len(), 100);
    assert!(!snapshot.more);

    let first = s.list(&ListOptions { prefix: "/page/".into(), limit: Some(7), ..Default::default() }).await.unwrap();
    assert_eq!(first.items.len(), 7);
    assert!(first.more);

    // Writers change the range while the rest of the pages are read.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                let key = format!("/page/k{i:03}");
                if i % 3 == 0 {
                    s.delete(&key, None).await.unwrap();
                } else {
                    let kv = s.get(&key, None).await.unwrap().unwrap();
                    s.update(&key, b("changed"), kv.mod_revision).await.unwrap();
                }
                s.create(&format!("/page/new{i:03}"), b("new")).await.unwrap();
            }
        })
    };
    let mut items = first.items.clone();
    let mut options = ListOptions {
        prefix: "/page/".into(),
        limit: Some(7),
        revision: Some(first.revision),
        after: Some(first.items.last().unwrap().key.clone()),
    };
    loop {
        let page = s.list(&options).await.unwrap();
        assert_eq!(page.revision, first.revision, "every page is read at the first page's revision");
        items.extend(page.items);
        if !page.more {
            break;
        }
        options.after = Some(items.last().unwrap().key.clone());
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(items, snapshot.items, "the pages together are exactly the snapshot");

    let (latest, _) = list_all(s, "/page/", 13, None).await;
    assert_eq!(latest.len(), 100 - 34 + 100);
    assert!(latest.windows(2).all(|w| w[0].key < w[1].key), "keys come in order");
}

async fn watch_order_and_resume(s: &Store) {
    let mut watch = s.watch(WatchOptions { prefix: "/w/".into(), ..Default::default() }).await.unwrap();
    let a = s.create("/w/a", b("1")).await.unwrap();
    s.create("/other/x", b("ignored")).await.unwrap();
    let a2 = s.update("/w/a", b("2"), a.mod_revision).await.unwrap();
    let bb = s.create("/w/b", b("3")).await.unwrap();
    let gone = s.delete("/w/a", None).await.unwrap();

    let expected = vec![
        WatchEvent::Put { kv: a.clone(), prev: None },
        WatchEvent::Put { kv: a2.clone(), prev: Some(a.clone()) },
        WatchEvent::Put { kv: bb.clone(), prev: None },
        WatchEvent::Delete { key: "/w/a".into(), revision: gone.revision, prev: Some(a2.clone()) },
    ];
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_change(&mut watch).await);
    }
    assert_eq!(got, expected);

    // Resuming from a past revision replays the same events from there on.
    let mut resumed = s
        .watch(WatchOptions { prefix: "/w/".into(), start_revision: a2.mod_revision, ..Default::default() })
        .await
        .unwrap();
    for want in &expected[1..] {
        assert_eq!(&next_change(&mut resumed).await, want);
    }
    // ...and then goes on live.
    let c = s.create("/w/c", b("4")).await.unwrap();
    assert_eq!(next_change(&mut resumed).await, WatchEvent::Put { kv: c.clone(), prev: None });
    assert_eq!(next_change(&mut watch).await, WatchEvent::Put { kv: c, prev: None });
}

async fn slow_watcher_gets_everything(s: &Store) {
    let mut watch = s.watch(WatchOptions { prefix: "/slow/".into(), ..Default::default() }).await.unwrap();
    let total = 5000;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..total / 8 {
                    s.create(&format!("/slow/{w}-{i}"), b("v")).await.unwrap();
                }
            })
        })
        .collect();
    for (n, w) in writers.into_iter().enumerate() {
        w.await.unwrap();
        if n % 3 == 0 {
            // Progress asked for while the watch is far behind.
            watch.request_progress();
        }
    }
    // Only now does the consumer read: the watch buffered or re-read from history. A progress
    // report may come at any point, but it must never claim a revision not yet delivered.
    let (mut last, mut claimed, mut received) = (0, 0, 0);
    while received < total {
        match next_event(&mut watch).await {
            WatchEvent::Progress { revision } => claimed = claimed.max(revision),
            event => {
                assert!(event.revision() > last, "revision order");
                assert!(event.revision() > claimed, "progress {claimed} claimed event {} early", event.revision());
                last = event.revision();
                received += 1;
            }
        }
    }
    assert_eq!(last, s.current_revision().await.unwrap());
}

async fn too_old_after_compaction(s: &Store) {
    s.create("/c/dead", b("x")).await.unwrap();
    s.delete("/c/dead", None).await.unwrap();
    let keep = s.create("/c/keep", b("old")).await.unwrap();
    let mut churn = s.create("/c/churn", b("0")).await.unwrap();
    for i in 1..20 {
        churn = s.update("/c/churn", b(&i.to_string()), churn.mod_revision).await.unwrap();
    }
    let target = churn.mod_revision;
    let after = s.update("/c/churn", b("last"), churn.mod_revision).await.unwrap();
    s.compact(target).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), target);

    let too_old = |r: Result<(), StoreError>| match r {
        Err(StoreError::Compacted { requested, compacted }) => {
            assert_eq!((requested, compacted), (target - 1, target));
        }
        other => panic!("expected Compacted, got {other:?}"),
    };
    too_old(
        s.watch(WatchOptions { prefix: "/c/".into(), start_revision: target - 1, ..Default::default() })
            .await
            .map(drop),
    );
    too_old(s.get("/c/keep", Some(target - 1)).await.map(drop));
    too_old(
        s.list(&ListOptions { prefix: "/c/".into(), revision: Some(target - 1), ..Default::default() }).await.map(drop),
    );
    assert!(matches!(s.compact(target).await, Err(StoreError::Compacted { .. })));

    // Everything readable at or after the compacted revision is intact.
    assert_eq!(s.get("/c/keep", Some(target)).await.unwrap(), Some(keep.clone()));
    assert_eq!(s.get("/c/churn", Some(target)).await.unwrap(), Some(churn));
    assert_eq!(s.get("/c/keep", None).await.unwrap(), Some(keep));
    let (items, _) = list_all(s, "/c/", 1, Some(target)).await;
    assert_eq!(items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/c/churn", "/c/keep"]);
    let mut watch =
        s.watch(WatchOptions { prefix: "/c/".into(), start_revision: target + 1, ..Default::default() }).await.unwrap();
    assert_eq!(next_change(&mut watch).await.revision(), after.mod_revision);
}

async fn thousand_watchers_get_every_event(s: &Store) {
    let watchers = 1000;
    let events = 50;
    let mut watches = Vec::new();
    for _ in 0..watchers {
        watches.push(s.watch(WatchOptions { prefix: "/many/".into(), ..Default::default() }).await.unwrap());
    }
    let writers: Vec<_> = (0..5)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..events / 5 {
                    s.create(&format!("/many/{w}-{i}"), b("v")).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut readers = Vec::new();
    for mut watch in watches {
        readers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            while revisions.len() < events {
                revisions.push(next_change(&mut watch).await.revision());
            }
            revisions
        }));
    }
    let mut first: Option<Vec<i64>> = None;
    for r in readers {
        let revisions = r.await.unwrap();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]));
        match &first {
            None => first = Some(revisions),
            Some(f) => assert_eq!(&revisions, f, "every watcher sees the same events"),
        }
    }
}

async fn size_and_key_limits(s: &Store) {
    match s.create("/big/over", Bytes::from(vec![b'x'; MAX_VALUE_BYTES + 1])).await {
        Err(StoreError::ValueTooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES));
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    let at_limit = Bytes::from(vec![b'y'; MAX_VALUE_BYTES]);
    let kv = s.create("/big/at-limit", at_limit.clone()).await.unwrap();
    assert_eq!(s.get("/big/at-limit", None).await.unwrap().unwrap().value, at_limit);
    assert!(matches!(
        s.update("/big/at-limit", Bytes::from(vec![0; MAX_VALUE_BYTES + 1]), kv.mod_revision).await,
        Err(StoreError::ValueTooLarge { .. })
    ));
    for bad in ["", "no-slash", "/nul\0key"] {
        assert!(matches!(s.create(bad, b("v")).await, Err(StoreError::InvalidKey { .. })), "{bad:?}");
        assert!(matches!(s.get(bad, None).await, Err(StoreError::InvalidKey { .. })), "{bad:?}");
    }
    assert!(matches!(s.update("/big/at-limit", b("v"), 0).await, Err(StoreError::InvalidRevision(0))));
    assert!(matches!(s.get("/big/at-limit", Some(-1)).await, Err(StoreError::InvalidRevision(-1))));
    assert!(matches!(
        s.list(&ListOptions { prefix: "/big/".into(), revision: Some(-2), ..Default::default() }).await,
        Err(StoreError::InvalidRevision(-2))
    ));
    assert!(matches!(s.compact(-3).await, Err(StoreError::InvalidRevision(-3))));
    let zero = WatchOptions { prefix: "/big/".into(), progress_interval: Some(Duration::ZERO), ..Default::default() };
    assert!(matches!(s.watch(zero).await, Err(StoreError::InvalidArgument(_))));
}

async fn progress_reports_the_current_revision(s: &Store) {
    let mut watch = s.watch(WatchOptions { prefix: "/p/".into(), ..Default::default() }).await.unwrap();
    s.create("/elsewhere/1", b("v")).await.unwrap();
    let last = s.create("/elsewhere/2", b("v")).await.unwrap();
    watch.request_progress();
    match next_event(&mut watch).await {
        WatchEvent::Progress { revision } => {
            assert!(revision >= last.mod_revision, "{revision} < {}", last.mod_revision)
        }
        other => panic!("expected progress, got {other:?}"),
    }

    let mut timed = s
        .watch(WatchOptions {
            prefix: "/p/".into(),
            progress_interval: Some(Duration::from_millis(200)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(next_event(&mut timed).await, WatchEvent::Progress { revision } if revision >= last.mod_revision));
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(&super::Harness::open("memory").await.store).await })*
        }
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(&super::Harness::open("embedded").await.store).await })*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(&super::Harness::open("etcd").await.store).await })*
        }
    };
}

suite!(
    crud_and_revisions,
    cas_conflicts,
    pagination_is_consistent_under_writes,
    watch_order_and_resume,
    slow_watcher_gets_everything,
    too_old_after_compaction,
    thousand_watchers_get_every_event,
    size_and_key_limits,
    progress_reports_the_current_revision,
);
