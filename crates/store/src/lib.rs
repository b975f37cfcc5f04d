//! The cluster state store: etcd v3 MVCC semantics behind one handle, [`Store`].
//!
//! Every rkube component keeps its state through the API server, and the API server keeps it
//! here. Keys are paths (`/registry/pods/default/web-0`), values are opaque bytes, and one
//! cluster-wide revision increases with every committed write. Three backends share this
//! contract and one behaviour suite: `embedded` (redb, the default), `etcd` (a real etcd v3
//! cluster) and `memory` (the embedded engine on redb's in-memory backend, for unit tests).
//!
//! This crate knows nothing of Kubernetes objects, HTTP or `Status`: it speaks keys, bytes and
//! revisions, and its errors are typed so the API server can map them (Compacted -> 410 Gone,
//! Conflict -> 409, ValueTooLarge -> 413/422).

mod compactor;
mod embedded;
mod error;
mod etcd;
pub mod etcd_process;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use compactor::CompactorConfig;
pub use embedded::EmbeddedConfig;
pub use error::{Result, StoreError};
pub use watch::{ProgressRequester, Watch};

/// The largest value the store accepts: 1.5 MiB, etcd's default `--max-request-bytes`.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;
/// The longest key the store accepts.
pub const MAX_KEY_BYTES: usize = 4096;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that created this incarnation of the key.
    pub create_revision: i64,
    /// The revision of the write that produced this value; becomes `metadata.resourceVersion`.
    pub mod_revision: i64,
    /// How many times this incarnation was written: 1 on create.
    pub version: i64,
}

/// A page of a prefix listing, all read at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Keys that start with this prefix are listed.
    pub prefix: String,
    /// Continue after this key (exclusive): the last key of the previous page.
    pub after: Option<String>,
    /// At most this many items; `None` or 0 means all.
    pub limit: Option<usize>,
    /// Read at this revision; `None` means the latest. Later pages pass the first page's revision.
    pub revision: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: i64,
    /// Whether keys remain after the last item.
    pub more: bool,
}

/// The result of a delete: the value that was deleted, and the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub prev: KeyValue,
    pub revision: i64,
}

#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    pub prefix: String,
    /// Deliver every event with a revision at or after this one; 0 means from now on.
    pub start_revision: i64,
    /// Emit a [`WatchEvent::Progress`] after this long without events.
    pub progress_interval: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        kv: KeyValue,
        /// The value before this write; `None` on create or if history was compacted.
        prev: Option<KeyValue>,
    },
    Delete {
        key: String,
        revision: i64,
        prev: Option<KeyValue>,
    },
    /// Every event up to `revision` has been delivered (a bookmark, for the API server).
    Progress {
        revision: i64,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// Which backend to open.
#[derive(Clone, Debug)]
pub enum Backend {
    /// redb in a file in this directory.
    Embedded(EmbeddedConfig),
    /// The embedded engine on redb's in-memory backend: nothing survives a drop.
    Memory,
    /// A real etcd cluster over its v3 gRPC API.
    Etcd { endpoints: Vec<String> },
}

/// A handle to the store. Cheap to clone; all clones share one backend.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn StoreBackend>,
    name: &'static str,
}

impl Store {
    /// Opens a backend. Automatic compaction is started separately with [`Store::start_compactor`].
    pub async fn open(backend: Backend) -> Result<Store> {
        Ok(match backend {
            Backend::Embedded(config) => {
                Store { inner: Arc::new(embedded::Embedded::open(config).await?), name: "embedded" }
            }
            Backend::Memory => Store { inner: Arc::new(embedded::Embedded::in_memory()?), name: "memory" },
            Backend::Etcd { endpoints } => {
                Store { inner: Arc::new(etcd::EtcdStore::connect(&endpoints).await?), name: "etcd" }
            }
        })
    }

    /// The backend's name: `embedded`, `memory` or `etcd`.
    pub fn backend_name(&self) -> &'static str {
        self.name
    }

    /// Reads a key at the latest revision, or at `revision`.
    pub async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>> {
        check_key(key)?;
        check_read_revision(revision)?;
        self.inner.get(key, revision).await
    }

    pub async fn list(&self, options: &ListOptions) -> Result<ListPage> {
        check_prefix(&options.prefix)?;
        if let Some(after) = &options.after {
            check_key(after)?;
        }
        check_read_revision(options.revision)?;
        self.inner.list(options).await
    }

    /// Creates a key; fails with [`StoreError::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        check_key(key)?;
        check_value(key, &value)?;
        self.inner.write(Write::Create { key: key.to_owned(), value }).await.map(Written::kv)
    }

    /// Replaces a key's value if its `mod_revision` still equals `expected_mod_revision`.
    /// A mismatch fails with [`StoreError::Conflict`] carrying the current value.
    pub async fn update(&self, key: &str, value: Bytes, expected_mod_revision: i64) -> Result<KeyValue> {
        check_key(key)?;
        check_value(key, &value)?;
        check_revision(expected_mod_revision)?;
        self.inner.write(Write::Update { key: key.to_owned(), value, expected_mod_revision }).await.map(Written::kv)
    }

    /// Deletes a key, unconditionally or only if its `mod_revision` matches.
    pub async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<Deleted> {
        check_key(key)?;
        if let Some(expected) = expected_mod_revision {
            check_revision(expected)?;
        }
        match self.inner.write(Write::Delete { key: key.to_owned(), expected_mod_revision }).await? {
            Written::Deleted(d) => Ok(d),
            Written::Put(_) => unreachable!("a delete yields Written::Deleted"),
        }
    }

    /// Watches every key under a prefix from a revision. A compacted start revision fails
    /// with [`StoreError::Compacted`], which the API server turns into 410 Gone.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watch> {
        check_prefix(&options.prefix)?;
        if options.start_revision < 0 {
            return Err(StoreError::InvalidRevision(options.start_revision));
        }
        if options.progress_interval.is_some_and(|i| i.is_zero()) {
            return Err(StoreError::InvalidArgument("the progress interval must be longer than zero".into()));
        }
        self.inner.watch(options).await
    }

    pub async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }

    /// Forgets history before `revision`: reads and watches before it fail with
    /// [`StoreError::Compacted`]. The latest value of every live key is always kept.
    pub async fn compact(&self, revision: i64) -> Result<()> {
        check_revision(revision)?;
        self.inner.compact(revision).await
    }

    /// The oldest revision still readable.
    pub async fn compacted_revision(&self) -> Result<i64> {
        self.inner.compacted_revision().await
    }

    /// Starts automatic compaction; it stops when the returned handle is dropped.
    pub fn start_compactor(&self, config: CompactorConfig) -> compactor::Compactor {
        compactor::Compactor::start(self.clone(), config)
    }
}

/// One conditional write; each backend applies it atomically.
#[derive(Debug)]
pub(crate) enum Write {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected_mod_revision: i64 },
    Delete { key: String, expected_mod_revision: Option<i64> },
}

pub(crate) enum Written {
    Put(KeyValue),
    Deleted(Deleted),
}

impl Written {
    fn kv(self) -> KeyValue {
        match self {
            Written::Put(kv) => kv,
            Written::Deleted(_) => unreachable!("a put yields Written::Put"),
        }
    }
}

/// What each backend implements. Arguments arrive already validated by [`Store`].
#[async_trait]
pub(crate) trait StoreBackend: Send + Sync + 'static {
    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>>;
    async fn list(&self, options: &ListOptions) -> Result<ListPage>;
    async fn write(&self, write: Write) -> Result<Written>;
    async fn watch(&self, options: WatchOptions) -> Result<Watch>;
    async fn current_revision(&self) -> Result<i64>;
    async fn compact(&self, revision: i64) -> Result<()>;
    async fn compacted_revision(&self) -> Result<i64>;
}

fn check_key(key: &str) -> Result<()> {
    let reason = if !key.starts_with('/') {
        "must start with '/'"
    } else if key.len() > MAX_KEY_BYTES {
        "is longer than 4096 bytes"
    } else if key.bytes().any(|b| b.is_ascii_control()) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey { key: key.to_owned(), reason })
}

/// A read at a revision: none or 0 means the latest; a negative one is a mistake.
fn check_read_revision(revision: Option<i64>) -> Result<()> {
    match revision {
        Some(r) if r < 0 => Err(StoreError::InvalidRevision(r)),
        _ => Ok(()),
    }
}

/// A key's mod revision is always positive; 0 would match a missing key in etcd.
fn check_revision(revision: i64) -> Result<()> {
    if revision <= 0 {
        return Err(StoreError::InvalidRevision(revision));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<()> {
    check_key(prefix)
}

fn check_value(key: &str, value: &Bytes) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge { key: key.to_owned(), size: value.len(), limit: MAX_VALUE_BYTES });
    }
    Ok(())
}

/// FNV-1a: a cheap checksum for test payloads and benchmarks (not for security).
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The first key after every key that starts with `prefix`, or `None` if there is none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for (key, ok) in [
            ("/registry/pods/default/web-0", true),
            ("/", true),
            ("", false),
            ("registry/pods", false),
            ("/a\0b", false),
            ("/a\nb", false),
        ] {
            assert_eq!(check_key(key).is_ok(), ok, "{key:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_KEY_BYTES));
        assert!(matches!(check_key(&long), Err(StoreError::InvalidKey { .. })));
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"/a\xff"), Some(b"/b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn value_limit_names_the_limit() {
        let err = check_value("/k", &Bytes::from(vec![0; MAX_VALUE_BYTES + 1])).unwrap_err();
        assert!(err.to_string().contains("1572864"), "{err}");
        assert!(check_value("/k", &Bytes::from(vec![0; MAX_VALUE_BYTES])).is_ok());
    }
}
