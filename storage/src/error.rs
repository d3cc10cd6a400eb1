//! The crate's one error enum, and the opaque wrapper that keeps RocksDB's
//! error type out of every other crate's sight.

use std::fmt;
use std::path::PathBuf;

/// A boxed cause, for [`StorageError::Corrupt`] whose cause is either the
/// engine or a record.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `roost-storage`. Every variant that has a
/// cause keeps it as its `source` and does not repeat it in its message:
/// print the chain (`{:#}` with anyhow) to see the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data dir is in use: RocksDB holds a lock on `<dir>/LOCK` for as
    /// long as a store is open (in this process or another one).
    #[error(
        "store is locked: {path} is held by another open store (another Roost \
         node on the same data dir?)"
    )]
    Locked {
        /// The lock file, `<dir>/LOCK`.
        path: PathBuf,
        #[source]
        source: EngineError,
    },

    /// The data dir exists but cannot be read as a Roost store. Moving it
    /// aside ([`crate::Storage::quarantine`]) lets the node start empty; the
    /// caller tells the operator how (the broker names its config key).
    #[error("store {path} is corrupt or unreadable")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: BoxError,
    },

    /// Opening failed for another reason (permissions, not a directory, bad
    /// options).
    #[error("cannot open store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: EngineError,
    },

    /// A filesystem operation of ours (creating or renaming the data dir).
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store or a record was written by a newer Roost. Never misread:
    /// upgrade Roost, or point it at another data dir.
    #[error(
        "{what} was written in storage format {found}, this Roost supports up to \
         {supported}: run a newer Roost on this data dir, or use another one"
    )]
    NewerFormat {
        /// What carries the version: the store marker (with its path) or a
        /// record (column family and key).
        what: String,
        found: u8,
        supported: u8,
    },

    /// A read or write failed once the store was open.
    #[error("storage {op} failed")]
    Engine {
        op: &'static str,
        #[source]
        source: EngineError,
    },

    /// A FIFO queue name longer than a key can hold (65,535 bytes).
    #[error("queue name is {len} bytes long, at most 65535 are allowed")]
    QueueName { len: usize },

    /// A record could not be encoded (not expected for our record types).
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
}

/// Why one stored record (value or key) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty value (no format byte)")]
    Empty,
    #[error("format byte {0} is not a known format")]
    UnknownFormat(u8),
    #[error("format {found} is newer than supported {supported}")]
    NewerFormat { found: u8, supported: u8 },
    /// The postcard error is shown, not chained: it has no further cause,
    /// and reports (`CorruptRecord::reason`) want it inline.
    #[error("postcard decode failed: {0}")]
    Decode(postcard::Error),
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    #[error("key does not match the record: {0}")]
    KeyMismatch(&'static str),
}

/// An error reported by the storage engine (RocksDB). Opaque on purpose: no
/// other crate names a RocksDB type, not even through an error.
#[derive(Debug)]
pub struct EngineError(pub(crate) rocksdb::Error);

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// No further source: RocksDB's error is a message, shown by `Display`.
impl std::error::Error for EngineError {}

impl StorageError {
    pub(crate) fn engine(op: &'static str, e: rocksdb::Error) -> StorageError {
        StorageError::Engine {
            op,
            source: EngineError(e),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
