//! The in-memory key index: every key's versions (revision, create revision, version, live),
//! as etcd's treeIndex. Values stay on disk, keyed by revision. Pure data, no IO.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::KeyValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Version {
    pub revision: u64,
    pub create_revision: u64,
    pub version: u64,
    /// False for a delete.
    pub live: bool,
}

impl Version {
    /// This version of `key` as the API returns it.
    pub(super) fn to_kv(self, key: impl Into<String>, value: bytes::Bytes) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            create_revision: self.create_revision as i64,
            mod_revision: self.revision as i64,
            version: self.version as i64,
        }
    }
}

#[derive(Default)]
pub(super) struct Index {
    /// Each key's versions, oldest first.
    keys: BTreeMap<String, Vec<Version>>,
}

impl Index {
    /// Records a new version; revisions arrive in increasing order.
    pub(super) fn push(&mut self, key: &str, version: Version) {
        match self.keys.get_mut(key) {
            Some(versions) => versions.push(version),
            None => {
                self.keys.insert(key.to_owned(), vec![version]);
            }
        }
    }

    /// The key's version visible at `revision`, if it is live there.
    pub(super) fn live_at(&self, key: &str, revision: u64) -> Option<Version> {
        visible(self.keys.get(key)?, revision)
    }

    /// The latest version of the key at or before `revision`, live or not.
    pub(super) fn version_before(&self, key: &str, revision: u64) -> Option<Version> {
        self.keys.get(key)?.iter().rev().find(|v| v.revision <= revision).copied()
    }

    /// Live keys after `after` (exclusive) that start with `prefix`, as visible at `revision`,
    /// in key order. Stops after `limit` keys.
    pub(super) fn live_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> Vec<(String, Version)> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.keys
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, versions)| Some((key.clone(), visible(versions, revision)?)))
            .take(limit)
            .collect()
    }

    /// Forgets up to `limit` of the key's versions that no revision at or after `target` can
    /// see: every version superseded at `target`, and a delete before `target`. Returns their
    /// revisions, oldest first, and whether any such version remains.
    pub(super) fn compact_key(&mut self, key: &str, target: u64, limit: usize) -> (Vec<u64>, bool) {
        let Some(versions) = self.keys.get_mut(key) else { return (Vec::new(), false) };
        // The last version at or before the target stays, unless it is a delete before it.
        let obsolete = match versions.iter().rposition(|v| v.revision <= target) {
            Some(i) if !versions[i].live && versions[i].revision < target => i + 1,
            Some(i) => i,
            None => 0,
        };
        let removed: Vec<u64> = versions.drain(..obsolete.min(limit)).map(|v| v.revision).collect();
        let more = obsolete > limit;
        if versions.is_empty() {
            self.keys.remove(key);
        }
        (removed, more)
    }

    #[cfg(test)]
    fn versions(&self, key: &str) -> Vec<u64> {
        self.keys.get(key).map(|vs| vs.iter().map(|v| v.revision).collect()).unwrap_or_default()
    }
}

fn visible(versions: &[Version], revision: u64) -> Option<Version> {
    versions.iter().rev().find(|v| v.revision <= revision).filter(|v| v.live).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: u64, create_revision: u64, version: u64) -> Version {
        Version { revision, create_revision, version, live: true }
    }

    fn delete(revision: u64) -> Version {
        Version { revision, create_revision: 0, version: 0, live: false }
    }

    fn sample() -> Index {
        let mut index = Index::default();
        index.push("/a", put(2, 2, 1));
        index.push("/b", put(3, 3, 1));
        index.push("/a", put(4, 2, 2));
        index.push("/b", delete(5));
        index.push("/a/x", put(6, 6, 1));
        index.push("/b", put(7, 7, 1));
        index
    }

    #[test]
    fn versions_are_seen_as_of_a_revision() {
        let index = sample();
        assert_eq!(index.live_at("/a", 3), Some(put(2, 2, 1)));
        assert_eq!(index.live_at("/a", 100), Some(put(4, 2, 2)));
        assert_eq!(index.live_at("/a", 1), None);
        assert_eq!(index.live_at("/b", 5), None, "deleted at 5");
        assert_eq!(index.live_at("/b", 7), Some(put(7, 7, 1)), "created again");
        assert_eq!(index.version_before("/b", 6), Some(delete(5)));
        assert_eq!(index.live_at("/missing", 7), None);
    }

    #[test]
    fn ranges_respect_prefix_after_revision_and_limit() {
        let index = sample();
        let keys = |v: Vec<(String, Version)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(index.live_range("/", None, 7, 10)), ["/a", "/a/x", "/b"]);
        assert_eq!(keys(index.live_range("/", None, 5, 10)), ["/a"]);
        assert_eq!(keys(index.live_range("/a", None, 7, 10)), ["/a", "/a/x"]);
        assert_eq!(keys(index.live_range("/a/", None, 7, 10)), ["/a/x"]);
        assert_eq!(keys(index.live_range("/", Some("/a"), 7, 10)), ["/a/x", "/b"]);
        assert_eq!(keys(index.live_range("/", None, 7, 2)), ["/a", "/a/x"]);
        assert_eq!(keys(index.live_range("/b", Some("/a"), 7, 10)), ["/b"], "after before the prefix");
    }

    #[test]
    fn compaction_keeps_what_the_target_can_see() {
        let mut index = sample();
        assert_eq!(index.compact_key("/a", 4, 10), (vec![2], false));
        assert_eq!(index.versions("/a"), [4]);
        // The delete at 5 is the latest at 5: kept, so a watch from 5 still sees it.
        assert_eq!(index.compact_key("/b", 5, 10), (vec![3], false));
        assert_eq!(index.versions("/b"), [5, 7]);
        // Past the target, the delete goes.
        assert_eq!(index.compact_key("/b", 6, 10), (vec![5], false));
        assert_eq!(index.versions("/b"), [7]);
        assert_eq!(index.compact_key("/b", 6, 10), (vec![], false), "idempotent");

        let mut gone = Index::default();
        gone.push("/g", put(2, 2, 1));
        gone.push("/g", delete(3));
        assert_eq!(gone.compact_key("/g", 9, 10), (vec![2, 3], false));
        assert!(gone.keys.is_empty(), "a deleted key leaves the index");
    }

    #[test]
    fn compaction_of_a_key_can_be_done_in_slices() {
        let mut index = Index::default();
        for (i, rev) in (10..20).enumerate() {
            index.push("/hot", put(rev, 10, i as u64 + 1));
        }
        assert_eq!(index.compact_key("/hot", 19, 4), (vec![10, 11, 12, 13], true));
        assert_eq!(index.compact_key("/hot", 19, 4), (vec![14, 15, 16, 17], true));
        assert_eq!(index.compact_key("/hot", 19, 4), (vec![18], false));
        assert_eq!(index.versions("/hot"), [19]);
    }
}
