//! The embedded store's tables and encodings.
//!
//! - `kv`: `key ++ 0x00 ++ revision (u64 big-endian)` -> record. Every version of every key, so a
//!   key's versions sort together by revision and a prefix scan at any revision is one range
//!   read. Keys never contain 0x00 (they are checked), so versions of `/a` never interleave with
//!   those of `/a/b`.
//! - `log`: revision -> key. One row per revision, in commit order: watch history and the
//!   compaction cursor.
//! - `meta`: the current revision, the compacted revision and how far physical compaction got.

use redb::{ReadableTable, TableDefinition};

use crate::{KeyValue, Result, StoreError};

pub(super) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
pub(super) const LOG: TableDefinition<u64, &str> = TableDefinition::new("log");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_REVISION: &str = "revision";
pub(super) const META_COMPACTED: &str = "compacted";
pub(super) const META_COMPACT_DONE: &str = "compact_done";

/// etcd starts an empty store at revision 1; so do we.
pub(super) const INITIAL_REVISION: u64 = 1;

pub(super) fn version_key(key: &[u8], revision: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 9);
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

/// Splits a `kv` table key into the user key and the revision.
pub(super) fn split_version_key(raw: &[u8]) -> Result<(&[u8], u64)> {
    if raw.len() < 9 || raw[raw.len() - 9] != 0 {
        return Err(corrupt("malformed version key"));
    }
    let (key, rest) = raw.split_at(raw.len() - 9);
    let revision = u64::from_be_bytes(rest[1..].try_into().expect("8 bytes"));
    Ok((key, revision))
}

/// The bounds (inclusive) of every version of `key` up to and including `revision`.
pub(super) fn versions_through(key: &[u8], revision: u64) -> (Vec<u8>, Vec<u8>) {
    (version_key(key, 0), version_key(key, revision))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Put = 0,
    Tombstone = 1,
}

/// One version of a key: `[kind u8][create_revision u64 le][version u64 le][value]`.
pub(super) struct Record<'a> {
    pub kind: Kind,
    pub create_revision: u64,
    pub version: u64,
    pub value: &'a [u8],
}

const RECORD_HEADER: usize = 17;

impl<'a> Record<'a> {
    pub(super) fn encode(kind: Kind, create_revision: u64, version: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + value.len());
        out.push(kind as u8);
        out.extend_from_slice(&create_revision.to_le_bytes());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    pub(super) fn decode(raw: &'a [u8]) -> Result<Record<'a>> {
        if raw.len() < RECORD_HEADER {
            return Err(corrupt("short record"));
        }
        let kind = match raw[0] {
            0 => Kind::Put,
            1 => Kind::Tombstone,
            other => return Err(corrupt(&format!("unknown record kind {other}"))),
        };
        Ok(Record {
            kind,
            create_revision: u64::from_le_bytes(raw[1..9].try_into().expect("8 bytes")),
            version: u64::from_le_bytes(raw[9..17].try_into().expect("8 bytes")),
            value: &raw[RECORD_HEADER..],
        })
    }

    /// The key-value this record describes, if it is a live value.
    pub(super) fn to_kv(&self, key: &[u8], mod_revision: u64) -> Result<Option<KeyValue>> {
        if self.kind == Kind::Tombstone {
            return Ok(None);
        }
        Ok(Some(KeyValue {
            key: key_string(key)?,
            value: bytes::Bytes::copy_from_slice(self.value),
            create_revision: self.create_revision as i64,
            mod_revision: mod_revision as i64,
            version: self.version as i64,
        }))
    }
}

pub(super) fn key_string(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|_| corrupt("key is not UTF-8"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Engine(format!("corrupt data: {what}"))
}

/// The latest version of `key` at or before `revision`: (its revision, its key-value if live).
pub(super) fn version_at<T>(table: &T, key: &[u8], revision: u64) -> Result<Option<(u64, Option<KeyValue>)>>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let (lo, hi) = versions_through(key, revision);
    let Some(entry) = table.range(lo.as_slice()..=hi.as_slice())?.next_back() else {
        return Ok(None);
    };
    let (k, v) = entry?;
    let (_, rev) = split_version_key(k.value())?;
    let kv = Record::decode(v.value())?.to_kv(key, rev)?;
    Ok(Some((rev, kv)))
}

pub(super) fn read_meta<T>(table: &T, name: &str, default: u64) -> Result<u64>
where
    T: ReadableTable<&'static str, u64>,
{
    Ok(table.get(name)?.map(|v| v.value()).unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_round_trip_and_sort_by_key_then_revision() {
        let a1 = version_key(b"/a", 1);
        let a300 = version_key(b"/a", 300);
        let ab1 = version_key(b"/a/b", 1);
        assert!(a1 < a300 && a300 < ab1);
        assert_eq!(split_version_key(&a300).unwrap(), (&b"/a"[..], 300));
        assert!(split_version_key(b"/a").is_err());
    }

    #[test]
    fn records_round_trip() {
        let raw = Record::encode(Kind::Put, 7, 3, b"hello");
        let r = Record::decode(&raw).unwrap();
        assert_eq!((r.kind, r.create_revision, r.version, r.value), (Kind::Put, 7, 3, &b"hello"[..]));
        let kv = r.to_kv(b"/k", 9).unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (7, 9, 3));
        let tomb = Record::encode(Kind::Tombstone, 0, 0, b"");
        assert!(Record::decode(&tomb).unwrap().to_kv(b"/k", 10).unwrap().is_none());
        assert!(Record::decode(&[9; 17]).is_err());
    }
}
