//! [`Storage`]: the handle the broker holds, over either engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use roost_protocol::ClientId;
use tracing::{info, warn};

use crate::batch::{AppendOutcome, Batch, CommitReceipt, Plan};
use crate::engine::{Engine, MemoryEngine, Op, RocksEngine};
use crate::error::{RecordError, Result, StorageError};
use crate::keys::{self, ColumnFamily};
use crate::record::{
    decode, encode, FifoMeta, InflightState, QueueMeta, QueuedMessage, SessionRecord, StoreMarker,
    StoredMessage, SUPPORTED_FORMAT,
};

/// How to open a store. The broker's `storage.*` config maps onto this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageOptions {
    /// fsync the write-ahead log on every commit (`storage.sync`). Default
    /// false: a commit is in the WAL (survives `kill -9` of the process) but
    /// not necessarily on the disk (a power loss may lose the last commits).
    pub sync: bool,
    /// When the data dir is corrupt, move it aside
    /// ([`Storage::quarantine`]) and start with an empty store instead of
    /// failing. Default false: refuse to start.
    pub quarantine_corrupt: bool,
}

/// A record that could not be decoded, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Column family name.
    pub cf: &'static str,
    /// The key, printable (non-UTF-8 bytes escaped).
    pub key: String,
    pub reason: String,
}

/// Counters of a store, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Records skipped because they could not be decoded (since open).
    pub corrupt_records: u64,
    /// The most recent of them.
    pub last_corrupt: Option<CorruptRecord>,
    /// Batches committed (since open).
    pub commits: u64,
}

/// Which sessions are stored, and the queue meta of those whose queue was
/// touched since open. Guarded by the commit lock.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: HashMap<String, Option<QueueMeta>>,
    /// The metas of the FIFO queues touched since open.
    pub(crate) fifos: HashMap<String, FifoMeta>,
}

impl Registry {
    /// `None`: no session; `Some(None)`: stored, queue meta not loaded.
    pub(crate) fn slot(&self, client: &str) -> Option<Option<QueueMeta>> {
        self.sessions.get(client).copied()
    }
}

struct Inner {
    engine: Engine,
    options: StorageOptions,
    /// The commit lock: seqs are assigned and batches written under it.
    registry: Mutex<Registry>,
    corrupt_records: AtomicU64,
    last_corrupt: Mutex<Option<CorruptRecord>>,
    commits: AtomicU64,
    quarantined: Option<PathBuf>,
}

/// A handle to the store. Cheap to clone; the store closes (and its data dir
/// lock is released) when the last clone is dropped.
///
/// Every method blocks the calling thread on RocksDB (a commit without sync
/// takes microseconds; a page or a load reads from disk): call it from a
/// blocking context (`tokio::task::spawn_blocking`, a dedicated thread).
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.path())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Open (or create) the store in `dir`.
    ///
    /// Errors: [`StorageError::Locked`] when another open store holds the
    /// dir; [`StorageError::Corrupt`] when it cannot be read (unless
    /// `options.quarantine_corrupt`); [`StorageError::NewerFormat`] when a
    /// newer Roost wrote it (never quarantined); [`StorageError::Open`] /
    /// [`StorageError::Io`] otherwise. Every error names the path.
    pub fn open(dir: impl AsRef<Path>, options: StorageOptions) -> Result<Storage> {
        let dir = dir.as_ref();
        match Storage::open_rocks(dir, options.clone(), None) {
            Err(StorageError::Corrupt { path, source }) if options.quarantine_corrupt => {
                let moved = crate::quarantine::quarantine(dir)?;
                warn!(
                    path = %path.display(),
                    moved_to = %moved.display(),
                    error = %source,
                    "storage_quarantined"
                );
                Storage::open_rocks(dir, options, Some(moved))
            }
            other => other,
        }
    }

    /// A store in memory, with the same semantics as a RocksDB one, for
    /// tests. Nothing survives the process.
    pub fn in_memory(options: StorageOptions) -> Storage {
        let engine = MemoryEngine::new();
        // Encoding the marker cannot fail; without it the store still works.
        if let Ok(value) = encode("store marker", &current_marker()) {
            let key = keys::MARKER_KEY.to_vec();
            engine.write(vec![Op::Put(ColumnFamily::Default, key, value)]);
        }
        Storage::new(Engine::Memory(engine), options, None)
    }

    /// Move a (corrupt) data dir aside to `<dir>.corrupt-<UTC timestamp>` and
    /// return the new path; the next open of `dir` starts empty. Nothing is
    /// deleted: an operator can inspect or restore the moved dir.
    pub fn quarantine(dir: impl AsRef<Path>) -> Result<PathBuf> {
        crate::quarantine::quarantine(dir.as_ref())
    }

    fn open_rocks(
        dir: &Path,
        options: StorageOptions,
        quarantined: Option<PathBuf>,
    ) -> Result<Storage> {
        let engine = RocksEngine::open(dir)?;
        let storage = Storage::new(Engine::Rocks(engine), options, quarantined);
        storage.check_marker(dir)?;
        storage.load_registry()?;
        info!(
            path = %dir.display(),
            format = SUPPORTED_FORMAT,
            sessions = storage.inner.registry.lock().sessions.len(),
            "storage_opened"
        );
        Ok(storage)
    }

    fn new(engine: Engine, options: StorageOptions, quarantined: Option<PathBuf>) -> Storage {
        Storage {
            inner: Arc::new(Inner {
                engine,
                options,
                registry: Mutex::new(Registry::default()),
                corrupt_records: AtomicU64::new(0),
                last_corrupt: Mutex::new(None),
                commits: AtomicU64::new(0),
                quarantined,
            }),
        }
    }

    /// Refuse a store written by a newer Roost; mark a new one as ours.
    fn check_marker(&self, dir: &Path) -> Result<()> {
        let engine = &self.inner.engine;
        let Some(value) = engine.get(ColumnFamily::Default, keys::MARKER_KEY)? else {
            let value = encode("store marker", &current_marker())?;
            let put = Op::Put(ColumnFamily::Default, keys::MARKER_KEY.to_vec(), value);
            return engine.write(vec![put], true);
        };
        match decode::<StoreMarker>(&value) {
            Ok(marker) if value.first() != Some(&crate::record::FORMAT_V2) => {
                // An older store: from now on it holds V2 records, so an
                // older Roost must refuse it as a whole (not record by
                // record).
                let value = encode("store marker", &marker)?;
                let put = Op::Put(ColumnFamily::Default, keys::MARKER_KEY.to_vec(), value);
                engine.write(vec![put], true)
            }
            Ok(_) => Ok(()),
            Err(RecordError::NewerFormat { found, supported }) => Err(StorageError::NewerFormat {
                what: format!("data dir {}", dir.display()),
                found,
                supported,
            }),
            Err(e) => Err(StorageError::Corrupt {
                path: dir.to_path_buf(),
                source: format!("store marker unreadable: {e}").into(),
            }),
        }
    }

    /// Note every stored session (keys only), so appends can refuse clients
    /// without one.
    fn load_registry(&self) -> Result<()> {
        let mut sessions = HashMap::new();
        let mut bad_keys = Vec::new();
        self.inner
            .engine
            .scan(ColumnFamily::Sessions, &[], None, &mut |key, _| {
                match std::str::from_utf8(key) {
                    Ok(client) => {
                        sessions.insert(client.to_string(), None);
                    }
                    Err(_) => bad_keys.push(key.to_vec()),
                }
                true
            })?;
        for key in bad_keys {
            self.report_corrupt(
                ColumnFamily::Sessions,
                &key,
                &RecordError::BadKey("client id is not UTF-8"),
            );
        }
        self.inner.registry.lock().sessions = sessions;
        Ok(())
    }

    /// The commit lock and what it guards.
    pub(crate) fn registry(&self) -> &Mutex<Registry> {
        &self.inner.registry
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The data dir (`None` for an in-memory store).
    pub fn path(&self) -> Option<PathBuf> {
        match &self.inner.engine {
            Engine::Rocks(e) => Some(e.path()),
            Engine::Memory(_) => None,
        }
    }

    /// Where a corrupt data dir was moved by this open, if it was.
    pub fn quarantined(&self) -> Option<&Path> {
        self.inner.quarantined.as_deref()
    }

    pub fn options(&self) -> &StorageOptions {
        &self.inner.options
    }

    pub fn stats(&self) -> StorageStats {
        StorageStats {
            corrupt_records: self.inner.corrupt_records.load(Ordering::Relaxed),
            last_corrupt: self.inner.last_corrupt.lock().clone(),
            commits: self.inner.commits.load(Ordering::Relaxed),
        }
    }

    /// Commit a batch atomically: every write in it survives a crash, or
    /// none does. Blocks on fsync when the batch or the options ask for sync.
    pub fn commit(&self, batch: Batch) -> Result<CommitReceipt> {
        let (ops, sync) = batch.into_parts()?;
        let sync = sync.unwrap_or(self.inner.options.sync);
        let mut registry = self.inner.registry.lock();
        let mut plan = Plan::new(self, &registry);
        for op in ops {
            plan.add(op)?;
        }
        let (ops, receipt, slots, fifos) = plan.finish()?;
        self.inner.engine.write(ops, sync)?;
        registry.fifos.extend(fifos);
        for (client, slot) in slots {
            match slot {
                Some(meta) => registry.sessions.insert(client, meta),
                None => registry.sessions.remove(&client),
            };
        }
        self.inner.commits.fetch_add(1, Ordering::Relaxed);
        Ok(receipt)
    }

    /// [`Batch::put_session`], committed alone.
    pub fn put_session(&self, client_id: &ClientId, record: &SessionRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.put_session(client_id, record);
        self.commit(batch).map(drop)
    }

    /// [`Batch::delete_session`], committed alone.
    pub fn delete_session(&self, client_id: &ClientId) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete_session(client_id);
        self.commit(batch).map(drop)
    }

    /// [`Batch::append`], committed alone.
    pub fn append(
        &self,
        client_id: &ClientId,
        messages: &[QueuedMessage],
    ) -> Result<AppendOutcome> {
        let mut batch = Batch::new();
        batch.append(client_id, messages);
        let mut receipt = self.commit(batch)?;
        Ok(receipt
            .appends
            .pop()
            .map_or(AppendOutcome::NoSession, |(_, outcome)| outcome))
    }

    /// [`Batch::remove`], committed alone.
    pub fn remove(&self, client_id: &ClientId, seq: u64) -> Result<()> {
        let mut batch = Batch::new();
        batch.remove(client_id, seq);
        self.commit(batch).map(drop)
    }

    /// [`Batch::set_inflight`], committed alone.
    pub fn set_inflight(&self, client_id: &ClientId, seq: u64, state: InflightState) -> Result<()> {
        let mut batch = Batch::new();
        batch.set_inflight(client_id, seq, state);
        self.commit(batch).map(drop)
    }

    /// [`Batch::put_retained`], committed alone.
    pub fn put_retained(&self, topic: &str, message: &StoredMessage) -> Result<()> {
        let mut batch = Batch::new();
        batch.put_retained(topic, message);
        self.commit(batch).map(drop)
    }

    /// [`Batch::delete_retained`], committed alone.
    pub fn delete_retained(&self, topic: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete_retained(topic);
        self.commit(batch).map(drop)
    }

    /// Messages in a session's queue (0 without a session). Reads one meta
    /// record the first time a queue is touched after open, then O(1).
    /// Whether a session record is stored for this client. From memory (the
    /// set of stored sessions is loaded at open): no disk read.
    pub fn has_session(&self, client_id: &ClientId) -> bool {
        self.inner
            .registry
            .lock()
            .slot(client_id.as_str())
            .is_some()
    }

    pub fn queue_len(&self, client_id: &ClientId) -> Result<u64> {
        let mut registry = self.inner.registry.lock();
        let client = client_id.as_str();
        match registry.slot(client) {
            None => Ok(0),
            Some(Some(meta)) => Ok(meta.len),
            Some(None) => {
                let meta = self.load_queue_meta(client)?;
                registry.sessions.insert(client.to_string(), Some(meta));
                Ok(meta.len)
            }
        }
    }

    /// Drop every cached queue meta, as a reopen would (tests only).
    #[cfg(test)]
    pub(crate) fn forget_queue_metas(&self) {
        for meta in self.inner.registry.lock().sessions.values_mut() {
            *meta = None;
        }
    }

    /// Drop every cached FIFO meta, as a reopen would (tests only).
    #[cfg(test)]
    pub(crate) fn forget_fifo_metas(&self) {
        self.inner.registry.lock().fifos.clear();
    }

    /// Decode a stored value; a corrupt one is reported and gives `None`, a
    /// newer format one is an error (never misread, never skipped).
    pub(crate) fn decode_or_report<T: serde::de::DeserializeOwned>(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<T>> {
        self.decode_or_report_with(cf, key, value, decode)
    }

    /// [`Storage::decode_or_report`] with a decoder of its own.
    pub(crate) fn decode_or_report_with<T>(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        value: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, RecordError>,
    ) -> Result<Option<T>> {
        match decode(value) {
            Ok(record) => Ok(Some(record)),
            Err(RecordError::NewerFormat { found, supported }) => Err(StorageError::NewerFormat {
                what: format!("record {}/{}", cf.name(), keys::printable(key)),
                found,
                supported,
            }),
            Err(e) => {
                self.report_corrupt(cf, key, &e);
                Ok(None)
            }
        }
    }

    /// Log and count a record that cannot be read. It is left in place for
    /// an operator to inspect.
    pub(crate) fn report_corrupt(&self, cf: ColumnFamily, key: &[u8], error: &RecordError) {
        let record = CorruptRecord {
            cf: cf.name(),
            key: keys::printable(key),
            reason: error.to_string(),
        };
        warn!(cf = record.cf, key = %record.key, error = %record.reason, "storage_corrupt_record");
        self.inner.corrupt_records.fetch_add(1, Ordering::Relaxed);
        *self.inner.last_corrupt.lock() = Some(record);
    }
}

fn current_marker() -> StoreMarker {
    StoreMarker {
        created_by: concat!("roost ", env!("CARGO_PKG_VERSION")).to_string(),
    }
}
