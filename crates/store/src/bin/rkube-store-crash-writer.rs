//! The child process of the store's crash test (`tests/crash.rs`): it writes to an embedded
//! store as fast as it can from many tasks and prints one line per acknowledged write,
//! `KEY MOD_REVISION CHECKSUM`, until it is killed. It is a test tool, not part of rkube.

use std::io::Write;

use rkube_store::{Backend, EmbeddedConfig, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(round)) = (args.next(), args.next()) else {
        eprintln!("usage: rkube-store-crash-writer DATA_DIR ROUND");
        std::process::exit(2);
    };
    let store = Store::open(Backend::Embedded(EmbeddedConfig::new(dir))).await.expect("open the store");
    println!("ready");
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            let prefix = format!("/crash/r{round}/w{w}");
            tokio::spawn(async move { write_forever(store, prefix).await })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
}

async fn write_forever(store: Store, prefix: String) {
    let mut n = 0u64;
    loop {
        let key = format!("{prefix}/{n}");
        let value = payload(&key, 0);
        let kv = store.create(&key, value.into()).await.expect("create");
        ack(&key, kv.mod_revision, &kv.value);
        // Every other key is also rewritten, so recovery covers updates as well as creates.
        if n.is_multiple_of(2) {
            let value = payload(&key, 1);
            let kv = store.update(&key, value.into(), kv.mod_revision).await.expect("update");
            ack(&key, kv.mod_revision, &kv.value);
        }
        n += 1;
    }
}

fn ack(key: &str, revision: i64, value: &[u8]) {
    let line = format!("{key} {revision} {}\n", rkube_store::checksum(value));
    std::io::stdout().lock().write_all(line.as_bytes()).expect("stdout");
}

/// A self-checking value of varying size: its last 8 bytes are a checksum of the rest.
fn payload(key: &str, generation: u64) -> Vec<u8> {
    let len = 64 + (rkube_store::checksum(key.as_bytes()) % 16_000) as usize;
    let mut value = format!("{key}|{generation}|").into_bytes();
    value.resize(len, b'a' + (generation as u8));
    let sum = rkube_store::checksum(&value);
    value.extend_from_slice(&sum.to_le_bytes());
    value
}
