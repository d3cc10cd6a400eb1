//! The key-value engine under the domain API: RocksDB, or ordered maps in
//! memory. Both offer the same four operations (point read, existence check,
//! atomic batch write, ordered range scan), and everything above this module
//! (keys, records, queues, corruption handling) is shared, so the two
//! backends have the same semantics by construction.

mod memory;
mod rocks;

pub(crate) use memory::MemoryEngine;
pub(crate) use rocks::RocksEngine;

use crate::error::Result;
use crate::keys::ColumnFamily;

/// One write of an atomic batch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put(ColumnFamily, Vec<u8>, Vec<u8>),
    Delete(ColumnFamily, Vec<u8>),
    /// Delete every key in `[from, to)`.
    DeleteRange(ColumnFamily, Vec<u8>, Vec<u8>),
}

/// Called for each key/value of a scan, in key order; returns `false` to stop.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

pub(crate) enum Engine {
    Rocks(RocksEngine),
    Memory(MemoryEngine),
}

impl Engine {
    pub(crate) fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Engine::Rocks(e) => e.get(cf, key),
            Engine::Memory(e) => Ok(e.get(cf, key)),
        }
    }

    pub(crate) fn contains(&self, cf: ColumnFamily, key: &[u8]) -> Result<bool> {
        match self {
            Engine::Rocks(e) => e.contains(cf, key),
            Engine::Memory(e) => Ok(e.contains(cf, key)),
        }
    }

    /// Apply `ops` in order, all or nothing. `sync`: fsync the write-ahead
    /// log before returning (RocksDB; the memory engine ignores it).
    pub(crate) fn write(&self, ops: Vec<Op>, sync: bool) -> Result<()> {
        match self {
            Engine::Rocks(e) => e.write(ops, sync),
            Engine::Memory(e) => {
                e.write(ops);
                Ok(())
            }
        }
    }

    /// Visit the keys of `cf` in `[lower, upper)` (`upper: None`: to the
    /// end) in key order, until `visit` returns false.
    pub(crate) fn scan(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        match self {
            Engine::Rocks(e) => e.scan(cf, lower, upper, visit),
            Engine::Memory(e) => {
                e.scan(cf, lower, upper, visit);
                Ok(())
            }
        }
    }
}
