//! The embedded store's tables and encodings, laid out as etcd lays out bbolt.
//!
//! - `revs`: revision -> `[kind u8][create_revision u64][version u64][key]`, one row per write.
//! - `values`: revision -> value, for puts.
//! - `meta`: the compacted revision and how far physical compaction got.
//!
//! Both data tables are keyed by revision, so every commit appends at the right edge of its
//! B-trees and dirties a few pages however scattered its keys are. (Keyed by key, a batch of 32
//! writes dirtied about 32 leaves and committed 1.8x slower.) Finding a key's versions is the
//! in-memory [`super::index::Index`]'s job, rebuilt from `revs` at open.
//!
//! Rows are removed only by compaction; the current revision is the last row of `revs`.

use redb::TableDefinition;

use crate::{Result, StoreError};

pub(super) const REVS: TableDefinition<u64, &[u8]> = TableDefinition::new("revs");
pub(super) const VALUES: TableDefinition<u64, &[u8]> = TableDefinition::new("values");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_COMPACTED: &str = "compacted";
pub(super) const META_COMPACT_DONE: &str = "compact_done";

/// etcd starts an empty store at revision 1; so do we.
pub(super) const INITIAL_REVISION: u64 = 1;

/// One row of `revs`: which key a revision wrote, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RevRow<'a> {
    /// False for a delete (a tombstone).
    pub live: bool,
    pub create_revision: u64,
    pub version: u64,
    pub key: &'a str,
}

const HEADER: usize = 17;

impl<'a> RevRow<'a> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.key.len());
        out.push(if self.live { 0 } else { 1 });
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out
    }

    pub(super) fn decode(raw: &'a [u8]) -> Result<RevRow<'a>> {
        if raw.len() < HEADER {
            return Err(corrupt("short revision row"));
        }
        let live = match raw[0] {
            0 => true,
            1 => false,
            other => return Err(corrupt(&format!("unknown revision row kind {other}"))),
        };
        Ok(RevRow {
            live,
            create_revision: u64::from_le_bytes(raw[1..9].try_into().expect("8 bytes")),
            version: u64::from_le_bytes(raw[9..17].try_into().expect("8 bytes")),
            key: std::str::from_utf8(&raw[HEADER..]).map_err(|_| corrupt("key is not UTF-8"))?,
        })
    }
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Engine(format!("corrupt data: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let row = RevRow { live: true, create_revision: 7, version: 3, key: "/registry/pods/default/web-0" };
        assert_eq!(RevRow::decode(&row.encode()).unwrap(), row);
        let tomb = RevRow { live: false, create_revision: 0, version: 0, key: "/k" };
        assert_eq!(RevRow::decode(&tomb.encode()).unwrap(), tomb);
    }

    #[test]
    fn damaged_rows_are_errors() {
        assert!(RevRow::decode(&[0; 5]).is_err());
        assert!(RevRow::decode(&[9; 17]).is_err());
        let mut bad_utf8 = RevRow { live: true, create_revision: 1, version: 1, key: "/k" }.encode();
        bad_utf8.push(0xff);
        assert!(RevRow::decode(&bad_utf8).is_err());
    }
}
