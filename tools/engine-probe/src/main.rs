//! Engine probe: how fast can each candidate engine make N writes durable in one commit?
//! The embedded store's write pattern (rows keyed by revision, 1 KiB values, group commit),
//! redb against SQLite in WAL mode with synchronous=FULL (its durable setting). Kept outside
//! the workspace so CI never builds SQLite; run it with
//! `cargo run --release --manifest-path tools/engine-probe/Cargo.toml`.

use std::path::PathBuf;
use std::time::Instant;

const VALUES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("values");
const REVS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("revs");

fn main() {
    let value = vec![b'v'; 1024];
    let key = b"/registry/pods/default/some-pod-name-abcde".to_vec();
    for batch in [1usize, 32, 64] {
        let commits = if batch == 1 { 2000 } else { 600 };
        let redb_us = redb_commit_us(batch, commits, &key, &value);
        let sqlite_us = sqlite_commit_us(batch, commits, &key, &value);
        println!(
            "batch {batch:>2}: redb {redb_us:>5.0} us/commit ({:>6.0} writes/s)   sqlite {sqlite_us:>5.0} us/commit ({:>6.0} writes/s)",
            batch as f64 * 1e6 / redb_us,
            batch as f64 * 1e6 / sqlite_us
        );
    }
}

fn redb_commit_us(batch: usize, commits: usize, key: &[u8], value: &[u8]) -> f64 {
    let dir = scratch("redb");
    let db = redb::Database::builder().set_cache_size(64 << 20).create(dir.join("db")).unwrap();
    let mut rev = 0u64;
    let started = Instant::now();
    for _ in 0..commits {
        let txn = db.begin_write().unwrap();
        {
            let mut values = txn.open_table(VALUES).unwrap();
            let mut revs = txn.open_table(REVS).unwrap();
            for _ in 0..batch {
                rev += 1;
                values.insert(rev, value).unwrap();
                revs.insert(rev, key).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let us = started.elapsed().as_micros() as f64 / commits as f64;
    let _ = std::fs::remove_dir_all(dir);
    us
}

fn sqlite_commit_us(batch: usize, commits: usize, key: &[u8], value: &[u8]) -> f64 {
    let dir = scratch("sqlite");
    let conn = rusqlite::Connection::open(dir.join("db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE revs(rev INTEGER PRIMARY KEY, key BLOB, value BLOB);",
    )
    .unwrap();
    let mut rev = 0i64;
    let started = Instant::now();
    for _ in 0..commits {
        conn.execute_batch("BEGIN").unwrap();
        {
            let mut insert = conn.prepare_cached("INSERT INTO revs VALUES (?1, ?2, ?3)").unwrap();
            for _ in 0..batch {
                rev += 1;
                insert.execute(rusqlite::params![rev, key, value]).unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    let us = started.elapsed().as_micros() as f64 / commits as f64;
    drop(conn);
    let _ = std::fs::remove_dir_all(dir);
    us
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkube-engine-probe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
