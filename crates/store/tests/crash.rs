//! Crash safety of the embedded store: a child process writes and reports each acknowledged
//! write; it is killed with SIGKILL at random moments; after each reopen every acknowledged write
//! is there and every value is whole.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use rkube_store::{Backend, EmbeddedConfig, ListOptions, Store, checksum};

const ROUNDS: usize = 6;

/// The latest acknowledged write of each key: (mod revision, checksum of the value).
type Acked = BTreeMap<String, (i64, u64)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Acked::new();
    let mut rng = rand::rng();
    for round in 0..ROUNDS {
        let before = acked.len();
        let delay = Duration::from_millis(rng.random_range(150..1200));
        run_and_kill(dir.path(), round, delay, &mut acked);
        assert!(acked.len() > before, "round {round}: the writer acknowledged nothing");
        verify(dir.path(), &acked).await;
    }
}

fn run_and_kill(dir: &std::path::Path, round: usize, delay: Duration, acked: &mut Acked) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkube-store-crash-writer"))
        .arg(dir)
        .arg(round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().expect("writer output").unwrap(), "ready");
    std::thread::sleep(delay);
    // SIGKILL: no destructor, no flush, no clean shutdown.
    child.kill().unwrap();
    child.wait().unwrap();
    // What the child acknowledged before it died is still in the pipe.
    for line in lines {
        let line = line.unwrap();
        let mut parts = line.split(' ');
        let (Some(key), Some(rev), Some(sum)) = (parts.next(), parts.next(), parts.next()) else {
            continue; // a line cut off by the kill was never a whole acknowledgement
        };
        let (Ok(rev), Ok(sum)) = (rev.parse(), sum.parse()) else { continue };
        let entry = acked.entry(key.to_owned()).or_insert((0, 0));
        if rev > entry.0 {
            *entry = (rev, sum);
        }
    }
}

async fn verify(dir: &std::path::Path, acked: &Acked) {
    let store = Store::open(Backend::Embedded(EmbeddedConfig::new(dir))).await.expect("reopen after SIGKILL");
    let max_acked = acked.values().map(|(rev, _)| *rev).max().unwrap_or(0);
    assert!(store.current_revision().await.unwrap() >= max_acked);
    for (key, (rev, sum)) in acked {
        let kv = store.get(key, None).await.unwrap().unwrap_or_else(|| panic!("acknowledged {key} is lost"));
        assert!(kv.mod_revision >= *rev, "{key}: revision {} went back from {rev}", kv.mod_revision);
        if kv.mod_revision == *rev {
            assert_eq!(checksum(&kv.value), *sum, "{key}: value differs from the acknowledged one");
        }
    }
    // Nothing torn: every stored value, acknowledged or not, is whole.
    let mut options = ListOptions { prefix: "/crash/".into(), limit: Some(500), ..Default::default() };
    loop {
        let page = store.list(&options).await.unwrap();
        for kv in &page.items {
            let (body, tail) = kv.value.split_at(kv.value.len() - 8);
            assert_eq!(checksum(body).to_le_bytes(), tail, "{} is torn", kv.key);
        }
        if !page.more {
            break;
        }
        options.revision = Some(page.revision);
        options.after = page.items.last().map(|kv| kv.key.clone());
    }
}
