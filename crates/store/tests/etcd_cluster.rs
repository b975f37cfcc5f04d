//! The etcd backend against a real three-member etcd cluster: the shape of a multi-server
//! rkube. Losing one member (SIGKILL) loses no acknowledged write and interrupts neither writes
//! nor watches.

use std::time::Duration;

use bytes::Bytes;
use rkube_store::etcd_process::EtcdProcess;
use rkube_store::{Backend, Store, WatchEvent, WatchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_survives_losing_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = EtcdProcess::start_cluster(dir.path(), 3).await.expect("start a 3-member etcd");
    let endpoints: Vec<String> = members.iter().map(|m| m.endpoint().to_owned()).collect();
    let store = Store::open(Backend::Etcd { endpoints }).await.unwrap();

    let mut watch = store.watch(WatchOptions { prefix: "/ha/".into(), ..Default::default() }).await.unwrap();
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(store.create(&format!("/ha/before-{i}"), Bytes::from_static(b"v")).await.unwrap());
    }

    // SIGKILL one member: the other two keep quorum.
    drop(members.remove(0));

    for i in 0..20 {
        let kv = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                // A request already routed to the dead member may fail once; the client then
                // uses the others. An acknowledged write is never lost either way.
                match store.create(&format!("/ha/after-{i}"), Bytes::from_static(b"v")).await {
                    Ok(kv) => return kv,
                    Err(rkube_store::StoreError::AlreadyExists { key }) => {
                        return store.get(&key, None).await.unwrap().unwrap();
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .expect("writes go on with two of three members");
        written.push(kv);
    }
    for kv in &written {
        assert_eq!(store.get(&kv.key, None).await.unwrap().as_ref(), Some(kv));
    }

    // The watch saw every write in order, with no error: if its member died, it moved on.
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        match tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("watch event") {
            Some(Ok(WatchEvent::Put { kv, .. })) => seen.push(kv.key),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the watch failed with the member: {e}"),
            None => panic!("watch ended"),
        }
    }
    let keys: Vec<_> = written.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(seen, keys);
}
