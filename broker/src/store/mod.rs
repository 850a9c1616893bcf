//! RocksDB: the node's metadata store. One database per node under `<data-dir>/meta` with
//! a column family per kind of state (controller raft log and raft state, cluster metadata,
//! and later group state, committed offsets and producer state). Keys and encodings live
//! here; what the state means lives with its owner (`cluster`, `coordinator`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

/// Column families, by the state they hold.
pub mod cf {
    /// Controller raft log entries, keyed by big-endian index.
    pub const RAFT_LOG: &str = "raft_log";
    /// Controller raft vote, last purged log id, committed log id.
    pub const RAFT_STATE: &str = "raft_state";
    /// The applied cluster metadata (controller state machine).
    pub const CLUSTER: &str = "cluster";
    /// Group coordinator: group metadata (members, generation, assignments).
    pub const GROUPS: &str = "groups";
    /// Committed consumer offsets.
    pub const OFFSETS: &str = "offsets";
    /// Idempotent and transactional producer state.
    pub const PRODUCERS: &str = "producers";

    pub const ALL: [&str; 6] = [RAFT_LOG, RAFT_STATE, CLUSTER, GROUPS, OFFSETS, PRODUCERS];
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb at {path}: {source}")]
    Db { path: PathBuf, source: rocksdb::Error },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("corrupt value under {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// One stored key and its value.
pub type Row = (Vec<u8>, Vec<u8>);

/// The node's RocksDB database.
pub struct MetadataStore {
    db: DB,
}

/// One write to apply atomically with others.
pub enum StoreOp<'a> {
    Put { cf: &'static str, key: &'a [u8], value: &'a [u8] },
    Delete { cf: &'static str, key: &'a [u8] },
    /// Deletes keys in `[from, to)`.
    DeleteRange { cf: &'static str, from: &'a [u8], to: &'a [u8] },
}

impl MetadataStore {
    /// Opens (creating when missing) the database in `path` with every column family.
    pub fn open(path: &Path) -> Result<MetadataStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Metadata is small: keep RocksDB's memory and file handles modest.
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(4);
        opts.set_write_buffer_size(8 << 20);
        let cfs = cf::ALL.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|source| StoreError::Db { path: path.to_path_buf(), source })?;
        Ok(MetadataStore { db })
    }

    fn handle(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
    }

    pub fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.handle(cf)?, key)?)
    }

    /// Applies `ops` atomically; with `sync` the write is on disk (fsynced WAL) on return.
    pub fn write(&self, ops: &[StoreOp<'_>], sync: bool) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                StoreOp::Put { cf, key, value } => batch.put_cf(self.handle(cf)?, key, value),
                StoreOp::Delete { cf, key } => batch.delete_cf(self.handle(cf)?, key),
                StoreOp::DeleteRange { cf, from, to } => batch.delete_range_cf(self.handle(cf)?, from, to),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Key-value pairs of `cf` with keys in `[from, to)`, in key order, at most `limit`.
    pub fn range(&self, cf: &'static str, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.handle(cf)?, IteratorMode::From(from, Direction::Forward)) {
            let (k, v) = item?;
            if &*k >= to || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// The last key-value pair of `cf` with a key in `[from, to)`, if any.
    pub fn last_in(&self, cf: &'static str, from: &[u8], to: &[u8]) -> Result<Option<Row>, StoreError> {
        for item in self.db.iterator_cf(self.handle(cf)?, IteratorMode::From(to, Direction::Reverse)) {
            let (k, v) = item?;
            if &*k >= to {
                continue;
            }
            if &*k < from {
                break;
            }
            return Ok(Some((k.into_vec(), v.into_vec())));
        }
        Ok(None)
    }

    /// The value under `key` decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(cf, key)?.map(|b| from_json(key, &b)).transpose()
    }

    /// Flushes memtables so the next start replays little WAL.
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in cf::ALL {
            self.db.flush_cf(self.handle(name)?)?;
        }
        Ok(())
    }
}

/// JSON encoding of a stored value.
pub fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt { key: "(encoding)".into(), reason: e.to_string() })
}

/// JSON decoding of the value stored under `key`.
pub fn from_json<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// The smallest key greater than every key starting with `prefix` (for range ends).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_atomic_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = MetadataStore::open(dir.path()).expect("open");
            s.write(
                &[
                    StoreOp::Put { cf: cf::RAFT_LOG, key: &1u64.to_be_bytes(), value: b"one" },
                    StoreOp::Put { cf: cf::RAFT_LOG, key: &2u64.to_be_bytes(), value: b"two" },
                    StoreOp::Put { cf: cf::CLUSTER, key: b"state", value: b"s" },
                ],
                true,
            )
            .expect("write");
        }
        let s = MetadataStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get(cf::CLUSTER, b"state").expect("get"), Some(b"s".to_vec()));
        let all = s.range(cf::RAFT_LOG, &0u64.to_be_bytes(), &u64::MAX.to_be_bytes(), 10).expect("range");
        assert_eq!(all.len(), 2);
        let (lo, hi) = (0u64.to_be_bytes(), u64::MAX.to_be_bytes());
        assert_eq!(s.last_in(cf::RAFT_LOG, &lo, &hi).expect("last").map(|(_, v)| v), Some(b"two".to_vec()));
        assert_eq!(s.last_in(cf::RAFT_LOG, &lo, &2u64.to_be_bytes()).expect("last").map(|(_, v)| v), Some(b"one".to_vec()));
        assert_eq!(s.last_in(cf::RAFT_LOG, &3u64.to_be_bytes(), &hi).expect("last"), None);
        s.write(&[StoreOp::DeleteRange { cf: cf::RAFT_LOG, from: &0u64.to_be_bytes(), to: &2u64.to_be_bytes() }], true)
            .expect("delete");
        let left = s.range(cf::RAFT_LOG, &0u64.to_be_bytes(), &u64::MAX.to_be_bytes(), 10).expect("range");
        assert_eq!(left.len(), 1);
        assert_eq!(s.get(cf::GROUPS, b"x").expect("get"), None);
    }
}
