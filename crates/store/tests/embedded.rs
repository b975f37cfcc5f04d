//! What only the embedded backend promises: it persists across reopen, refuses damaged files
//! without touching them, writes nothing while idle, and stays bounded under churn.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rkube_store::{Backend, EmbeddedConfig, Store, StoreError, WatchEvent, WatchOptions};

const DATA_FILE: &str = "store.redb";

async fn open(dir: &Path) -> rkube_store::Result<Store> {
    Store::open(Backend::Embedded(EmbeddedConfig::new(dir))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_history_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = {
        let store = open(dir.path()).await.unwrap();
        let first = store.create("/r/a", Bytes::from_static(b"1")).await.unwrap();
        let second = store.update("/r/a", Bytes::from_static(b"2"), first.mod_revision).await.unwrap();
        (first, second)
    };
    let store = open(dir.path()).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), second.mod_revision);
    assert_eq!(store.get("/r/a", None).await.unwrap(), Some(second.clone()));
    assert_eq!(store.get("/r/a", Some(first.mod_revision)).await.unwrap(), Some(first.clone()));
    let mut watch = store
        .watch(WatchOptions { prefix: "/r/".into(), start_revision: first.mod_revision, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap(), WatchEvent::Put { kv: first.clone(), prev: None });
    assert_eq!(watch.next().await.unwrap().unwrap(), WatchEvent::Put { kv: second, prev: Some(first) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await.unwrap();
    let mut watch = store.watch(WatchOptions { prefix: "/w/".into(), ..Default::default() }).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("the watch ends");
    assert!(end.is_none(), "expected the end of the watch, got {end:?}");
    drop(watch);
    // Nothing holds the file any more.
    open(dir.path()).await.expect("reopen after close");
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path()).await.unwrap();
    match open(dir.path()).await {
        Err(StoreError::DataFile { path, message }) => {
            assert_eq!(path, dir.path().join(DATA_FILE));
            assert!(message.contains("already open"), "{message}");
        }
        other => panic!("expected a data file error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_damaged_file_is_reported_by_name_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).await.unwrap();
        for i in 0..200 {
            store.create(&format!("/d/{i}"), Bytes::from(vec![7u8; 2000])).await.unwrap();
        }
    }
    let path = dir.path().join(DATA_FILE);
    let damaged = |bytes: &mut Vec<u8>| {
        // Overwrite a stretch in the middle of the data pages.
        let mid = bytes.len() / 2;
        bytes[mid..mid + 4096].fill(0x5a);
    };
    for (name, damage) in [
        ("scribbled", Box::new(damaged) as Box<dyn Fn(&mut Vec<u8>)>),
        ("garbage", Box::new(|b: &mut Vec<u8>| b.iter_mut().for_each(|x| *x = 0x42))),
        ("truncated", Box::new(|b: &mut Vec<u8>| b.truncate(100))),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
    ] {
        let case = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        let case_path = case.path().join(DATA_FILE);
        std::fs::write(&case_path, &bytes).unwrap();
        match open(case.path()).await {
            Err(e @ StoreError::DataFile { .. }) => {
                assert!(e.to_string().contains(&case_path.display().to_string()), "{name}: {e}");
            }
            other => panic!("{name}: expected a data file error, got {:?}", other.map(|_| ())),
        }
        assert_eq!(std::fs::read(&case_path).unwrap(), bytes, "{name}: the file was changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_store_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await.unwrap();
    let mut rev = 0;
    for i in 0..500 {
        rev = store.create(&format!("/idle/{i}"), Bytes::from_static(b"v")).await.unwrap().mod_revision;
    }
    store.compact(rev - 100).await.unwrap();
    let _watch = store.watch(WatchOptions { prefix: "/idle/".into(), ..Default::default() }).await.unwrap();
    let _compactor = store.start_compactor(rkube_store::CompactorConfig { interval: Duration::from_millis(100) });
    // Let the compactor run its course: two ticks to compact what was written, then idle ticks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = dir.path().join(DATA_FILE);
    let before = (std::fs::metadata(&path).unwrap().modified().unwrap(), std::fs::read(&path).unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Writes that are refused change nothing, so they write nothing either.
    assert!(matches!(store.create("/idle/0", Bytes::from_static(b"v")).await, Err(StoreError::AlreadyExists { .. })));
    assert!(matches!(store.update("/idle/0", Bytes::from_static(b"v"), 1).await, Err(StoreError::Conflict { .. })));
    assert!(matches!(store.delete("/idle/missing", None).await, Err(StoreError::NotFound { .. })));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = (std::fs::metadata(&path).unwrap().modified().unwrap(), std::fs::read(&path).unwrap());
    assert!(before.0 == after.0 && before.1 == after.1, "the data file changed while the store was idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_stays_bounded_under_churn_with_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await.unwrap();
    let path = dir.path().join(DATA_FILE);
    let value = Bytes::from(vec![b'c'; 4096]);
    let mut revisions = vec![0i64; 50];
    let mut sizes = Vec::new();
    for round in 0..12 {
        let writers: Vec<_> = (0..50)
            .map(|k| {
                let (store, value, mut rev) = (store.clone(), value.clone(), revisions[k]);
                tokio::spawn(async move {
                    let key = format!("/churn/{k}");
                    for _ in 0..40 {
                        rev = if rev == 0 {
                            store.create(&key, value.clone()).await.unwrap().mod_revision
                        } else {
                            store.update(&key, value.clone(), rev).await.unwrap().mod_revision
                        };
                    }
                    rev
                })
            })
            .collect();
        for (k, w) in writers.into_iter().enumerate() {
            revisions[k] = w.await.unwrap();
        }
        store.compact(store.current_revision().await.unwrap()).await.unwrap();
        // Physical compaction runs in steps between writes; let it finish.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if round >= 2 {
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
    }
    // 24,000 writes of 4 KiB (98 MB) went through; the live data is 50 keys. redb reuses freed
    // pages, so after the first rounds the file stops growing.
    let early = sizes[0].max(sizes[1]);
    let (last, written) = (*sizes.last().unwrap(), 24_000 * 4096);
    assert!(sizes.iter().all(|&s| s <= early * 3 / 2), "the file kept growing under steady churn: {sizes:?}");
    assert!(last < written / 2, "the file holds history it should have dropped: {last} bytes of {written}");
}
