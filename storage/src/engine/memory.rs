//! The in-memory engine: one ordered map per column family behind one lock.
//! A batch is applied under the write lock, so it is atomic like a RocksDB
//! WriteBatch; nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{Op, Visit};
use crate::keys::ColumnFamily;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

pub(crate) struct MemoryEngine {
    cfs: RwLock<Vec<Map>>,
}

impl MemoryEngine {
    pub(crate) fn new() -> MemoryEngine {
        MemoryEngine {
            cfs: RwLock::new(ColumnFamily::ALL.iter().map(|_| Map::new()).collect()),
        }
    }

    pub(crate) fn get(&self, cf: ColumnFamily, key: &[u8]) -> Option<Vec<u8>> {
        self.cfs.read()[cf.index()].get(key).cloned()
    }

    pub(crate) fn contains(&self, cf: ColumnFamily, key: &[u8]) -> bool {
        self.cfs.read()[cf.index()].contains_key(key)
    }

    pub(crate) fn write(&self, ops: Vec<Op>) {
        let mut cfs = self.cfs.write();
        for op in ops {
            match op {
                Op::Put(cf, key, value) => {
                    cfs[cf.index()].insert(key, value);
                }
                Op::Delete(cf, key) => {
                    cfs[cf.index()].remove(&key);
                }
                Op::DeleteRange(cf, from, to) => {
                    let map = &mut cfs[cf.index()];
                    let mut tail = map.split_off(&from);
                    let mut rest = tail.split_off(&to);
                    map.append(&mut rest);
                }
            }
        }
    }

    /// Holds the read lock while visiting: `visit` must not write.
    pub(crate) fn scan(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) {
        let cfs = self.cfs.read();
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        for (key, value) in cfs[cf.index()].range::<[u8], _>((Bound::Included(lower), upper)) {
            if !visit(key, value) {
                break;
            }
        }
    }
}
