//! The RocksDB engine: the one file in Roost that calls RocksDB.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType,
    ErrorKind, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::{Op, Visit};
use crate::error::{EngineError, Result, StorageError};
use crate::keys::ColumnFamily;

pub(crate) struct RocksEngine {
    db: DB,
}

/// The store's memory budget (docs/BENCHMARKS.md, "Offline backlog"):
/// every column family's memtables together, and one block cache shared by
/// all of them that also holds the SST index and filter blocks. With
/// RocksDB's defaults each family had its own 2 x 64 MiB of memtables and
/// its own 32 MiB cache, and the index blocks of every SST file stayed in
/// memory outside any cache: RSS grew with the backlog (about 1.2% of the
/// queued bytes).
const MEMTABLE_BUDGET: usize = 64 << 20;
const BLOCK_CACHE: usize = 32 << 20;
/// Write-ahead log kept before the families holding the oldest log are
/// flushed: bounds the disk a backlog's WAL takes, and the replay after a
/// crash (RocksDB's default is 4 x the memtable budget of every family).
const MAX_WAL: u64 = 256 << 20;

fn db_options(cache: &Cache) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    // RocksDB's own info LOG files: keep a few, not one per open forever.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(8 << 20);
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    opts.set_write_buffer_size(MEMTABLE_BUDGET / 2);
    opts.set_max_total_wal_size(MAX_WAL);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Index blocks in the (bounded) cache, partitioned so that a lookup
    // loads one small partition rather than a file's whole index: with
    // whole index blocks in a cache churned by the drain's data blocks,
    // draining a backlog ran 15x slower (measured); partitioned, within
    // 25% of unbounded in-memory indexes. Only the small top level, and
    // the newest files' indexes, stay pinned.
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    opts.set_block_based_table_factory(&table);
    opts
}

/// Map an error of `DB::open` or `DB::list_cf` to what the operator needs to
/// know. RocksDB reports a held lock as an IO error naming the `LOCK` file,
/// both for another process ("While lock file: <dir>/LOCK: Resource
/// temporarily unavailable") and for this one ("lock hold by current
/// process, ...: <dir>/LOCK: No locks available").
fn open_error(dir: &Path, e: rocksdb::Error) -> StorageError {
    let kind = e.kind();
    // The two messages of RocksDB's LockFile (env/fs_posix.cc) for a lock
    // that is held; failing to *open* the LOCK file ("while open a file for
    // lock", e.g. permissions) is not a held lock.
    let held = ["While lock file", "lock hold by current process"];
    if kind == ErrorKind::IOError && held.iter().any(|m| e.as_ref().contains(m)) {
        return StorageError::Locked {
            path: dir.join("LOCK"),
            source: EngineError(e),
        };
    }
    // A data dir whose CURRENT names files that are gone is damaged, not
    // absent: RocksDB says "IO error: No such file or directory" for it.
    let missing_files = matches!(kind, ErrorKind::IOError | ErrorKind::NotFound)
        && e.as_ref().contains("No such file")
        && dir.join("CURRENT").exists();
    let path = dir.to_path_buf();
    if kind == ErrorKind::Corruption || missing_files {
        StorageError::Corrupt {
            path,
            source: Box::new(EngineError(e)),
        }
    } else {
        StorageError::Open {
            path,
            source: EngineError(e),
        }
    }
}

impl RocksEngine {
    /// Open (or create) the store in `dir` with every Roost column family,
    /// plus any other family already there (a newer Roost may have added
    /// some: opening them lets the store marker refuse the dir with a clear
    /// message instead of RocksDB's).
    pub(crate) fn open(dir: &Path) -> Result<RocksEngine> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            op: "create data dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE);
        let opts = db_options(&cache);
        let mut names: Vec<String> = ColumnFamily::ALL
            .iter()
            .map(|cf| cf.name().to_string())
            .collect();
        if dir.join("CURRENT").exists() {
            let existing = DB::list_cf(&opts, dir).map_err(|e| open_error(dir, e))?;
            for name in existing {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let descriptors = names
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, db_options(&cache)));
        let db =
            DB::open_cf_descriptors(&opts, dir, descriptors).map_err(|e| open_error(dir, e))?;
        Ok(RocksEngine { db })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.db.path().to_path_buf()
    }

    fn cf(&self, cf: ColumnFamily) -> &rocksdb::ColumnFamily {
        // Invariant, not input: `open` opened every family in ColumnFamily::ALL.
        self.db
            .cf_handle(cf.name())
            .expect("the store was opened with every Roost column family")
    }

    pub(crate) fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf), key)
            .map_err(|e| StorageError::engine("read", e))
    }

    pub(crate) fn contains(&self, cf: ColumnFamily, key: &[u8]) -> Result<bool> {
        self.db
            .get_pinned_cf(self.cf(cf), key)
            .map(|v| v.is_some())
            .map_err(|e| StorageError::engine("read", e))
    }

    pub(crate) fn write(&self, ops: Vec<Op>, sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(cf, key, value) => batch.put_cf(self.cf(cf), key, value),
                Op::Delete(cf, key) => batch.delete_cf(self.cf(cf), key),
                Op::DeleteRange(cf, from, to) => batch.delete_range_cf(self.cf(cf), from, to),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StorageError::engine("write", e))
    }

    pub(crate) fn scan(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper);
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), opts);
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if !visit(key, value) {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| StorageError::engine("scan", e))
    }
}
