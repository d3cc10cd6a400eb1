//! Test-only helpers for other crates' tests, compiled with the
//! `test-support` feature only (enabled by the broker's dev-dependencies,
//! never in a release build).

use std::path::Path;

use crate::engine::Op;
use crate::error::Result;
use crate::keys::{self, ColumnFamily};
use crate::record::SUPPORTED_FORMAT;
use crate::storage::Storage;

/// Make the store in `dir` look written by a newer Roost: its marker gets a
/// format byte past [`SUPPORTED_FORMAT`], as a future release would
/// write it. The next [`Storage::open`] refuses it.
pub fn mark_newer_format(dir: impl AsRef<Path>) -> Result<()> {
    let storage = Storage::open(dir, Default::default())?;
    let marker = Op::Put(
        ColumnFamily::Default,
        keys::MARKER_KEY.to_vec(),
        vec![SUPPORTED_FORMAT + 1, 0],
    );
    storage.engine().write(vec![marker], true)
}
