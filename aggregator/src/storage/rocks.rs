//! The RocksDB engine under [`super::Storage`]: the only module that imports `rocksdb`.
//!
//! Opens the database with one column family per kind of record, applies write sets
//! atomically with one synced WAL write, and reads ranges back.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use super::StorageError;

/// Column families, one per kind of record (see `storage/mod.rs`).
pub const CF_META: &str = "meta";
pub const CF_SERIES: &str = "series";
pub const CF_TARGETS: &str = "targets";
pub const CF_HEAD: &str = "head";
pub const CF_BUILDS: &str = "builds";
pub const CF_STACKS: &str = "stacks";
pub const CF_CAPTURES: &str = "captures";
pub const CF_DIAGNOSES: &str = "diagnoses";
pub const CF_HEADLOG: &str = "headlog";
pub const CF_CHUNKS: &str = "chunks";
pub const CF_LATEST: &str = "latest";
pub const CF_ROLLUPS: &str = "rollups";
pub const CF_EXPORT: &str = "export";

const ALL_CFS: [&str; 13] = [
    CF_META,
    CF_SERIES,
    CF_TARGETS,
    CF_HEAD,
    CF_BUILDS,
    CF_STACKS,
    CF_CAPTURES,
    CF_DIAGNOSES,
    CF_HEADLOG,
    CF_CHUNKS,
    CF_LATEST,
    CF_ROLLUPS,
    CF_EXPORT,
];

enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// One atomic write: puts and deletes in column families by name.
#[derive(Default)]
pub struct WriteSet {
    ops: Vec<(&'static str, Op)>,
}

impl WriteSet {
    pub fn put(&mut self, cf: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((cf, Op::Put(key.into(), value.into())));
    }

    pub fn delete(&mut self, cf: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push((cf, Op::Delete(key.into())));
    }

    /// Deletes every key in `[from, to)`: one tombstone, however many keys.
    pub fn delete_range(
        &mut self,
        cf: &'static str,
        from: impl Into<Vec<u8>>,
        to: impl Into<Vec<u8>>,
    ) {
        self.ops.push((cf, Op::DeleteRange(from.into(), to.into())));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value, as read.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

pub struct Engine {
    db: DB,
    sync: bool,
}

impl Engine {
    /// Opens (creating if needed) the database in `dir`. With `sync`, every write waits
    /// for the WAL to reach the disk: what is acknowledged survives a power cut.
    pub fn open(dir: &Path, sync: bool) -> Result<Engine, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_bottommost_compression_type(DBCompressionType::Zstd);
        opts.increase_parallelism(2);
        opts.set_keep_log_file_num(4);

        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = opts.clone();
            if matches!(
                *name,
                CF_HEAD | CF_HEADLOG | CF_CHUNKS | CF_ROLLUPS | CF_EXPORT
            ) {
                // Head keys share an 8-byte series-id prefix; a bloom filter on whole keys
                // would not help range scans, so keep the default table options there.
                cf_opts.set_compression_type(DBCompressionType::Lz4);
            } else {
                let mut table = BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                cf_opts.set_block_based_table_factory(&table);
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| StorageError::Open {
            path: dir.to_owned(),
            reason: e.into_string(),
        })?;
        Ok(Engine { db, sync })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Engine(format!("column family {name} is missing")))
    }

    /// Applies every put of `set` in one atomic write.
    pub fn commit(&self, set: WriteSet) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (cf, op) in &set.ops {
            let cf = self.cf(cf)?;
            match op {
                Op::Put(key, value) => batch.put_cf(cf, key, value),
                Op::Delete(key) => batch.delete_cf(cf, key),
                Op::DeleteRange(from, to) => batch.delete_range_cf(cf, from, to),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StorageError::Engine(format!("write: {}", e.into_string())))
    }

    /// Calls `f` with every key and value of a column family whose key starts with
    /// `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let iter = self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (key, value) =
                item.map_err(|e| StorageError::Engine(format!("scan {cf}: {}", e.into_string())))?;
            if !key.starts_with(prefix) {
                break;
            }
            f(&key, &value)?;
        }
        Ok(())
    }

    /// Calls `f` with the keys and values in `[from, to)` of a column family, in key
    /// order, until it returns false.
    pub fn scan_range_while(
        &self,
        cf: &str,
        from: &[u8],
        to: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(to.to_vec());
        let iter = self.db.iterator_cf_opt(
            self.cf(cf)?,
            opts,
            IteratorMode::From(from, Direction::Forward),
        );
        for item in iter {
            let (key, value) =
                item.map_err(|e| StorageError::Engine(format!("scan {cf}: {}", e.into_string())))?;
            if !f(&key, &value)? {
                break;
            }
        }
        Ok(())
    }

    /// The first key and value in `[from, to)` of a column family, if any.
    pub fn first_in_range(
        &self,
        cf: &str,
        from: &[u8],
        to: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(to.to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        iter.seek(from);
        if iter.valid()
            && let (Some(k), Some(v)) = (iter.key(), iter.value())
        {
            return Ok(Some((k.into(), v.into())));
        }
        iter.status()
            .map_err(|e| StorageError::Engine(format!("seek {cf}: {}", e.into_string())))?;
        Ok(None)
    }

    /// Calls `f` with the keys and values in `[from, to)` of a column family, newest
    /// (last) first, until `f` returns false or `limit` were seen.
    pub fn scan_range_rev(
        &self,
        cf: &str,
        from: &[u8],
        to: &[u8],
        limit: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(from.to_vec());
        opts.set_iterate_upper_bound(to.to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        iter.seek_to_last();
        let mut seen = 0;
        while iter.valid() && seen < limit {
            if let (Some(k), Some(v)) = (iter.key(), iter.value())
                && !f(k, v)?
            {
                return Ok(());
            }
            seen += 1;
            iter.prev();
        }
        iter.status()
            .map_err(|e| StorageError::Engine(format!("scan {cf}: {}", e.into_string())))
    }

    /// Removes the files wholly inside `[from, to)` of a column family (after a range
    /// deletion of it), so that dropped partitions free their space at once.
    pub fn delete_files_in_range(
        &self,
        cf: &str,
        from: &[u8],
        to: &[u8],
    ) -> Result<(), StorageError> {
        self.db
            .delete_file_in_range_cf(self.cf(cf)?, from, to)
            .map_err(|e| StorageError::Engine(format!("delete files in {cf}: {}", e.into_string())))
    }

    /// Bytes of the database's table files on disk, over every column family.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes_by_family().iter().map(|(_, b)| b).sum()
    }

    /// Bytes of each column family's table files on disk.
    pub fn disk_bytes_by_family(&self) -> Vec<(&'static str, u64)> {
        ALL_CFS
            .iter()
            .filter_map(|name| {
                let cf = self.db.cf_handle(name)?;
                let bytes = self
                    .db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()?;
                Some((*name, bytes))
            })
            .collect()
    }

    /// Rewrites every column family down to its bottom level (flushing the memtables
    /// first), so that its files hold no overwritten or deleted data and carry the
    /// bottom level's compression. Blocking, and as long as the data is large.
    pub fn compact_all(&self) -> Result<(), StorageError> {
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            self.db
                .flush_cf(cf)
                .map_err(|e| StorageError::Engine(format!("flush {name}: {}", e.into_string())))?;
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        }
        Ok(())
    }

    /// Reads many keys of a column family at once (one batched lookup), in order.
    pub fn multi_get<K: AsRef<[u8]>>(
        &self,
        cf: &str,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let handle = self.cf(cf)?;
        let keys: Vec<K> = keys.into_iter().collect();
        self.db
            .batched_multi_get_cf(handle, keys.iter().map(AsRef::as_ref), false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|v| v.to_vec()))
                    .map_err(|e| StorageError::Engine(format!("get {cf}: {}", e.into_string())))
            })
            .collect()
    }

    /// Reads one key of a column family.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(cf)?, key)
            .map_err(|e| StorageError::Engine(format!("get {cf}: {}", e.into_string())))
    }
}
