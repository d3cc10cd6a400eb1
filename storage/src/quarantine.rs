//! Moving a corrupt data dir aside: `<dir>.corrupt-<UTC timestamp>`.

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, StorageError};

pub(crate) fn quarantine(dir: &Path) -> Result<PathBuf> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| StorageError::Io { op, path, source }
    };
    // "data/", "./data" and "." all name a dir we can rename: normalise to a
    // path that ends in the dir's own name.
    let dir: PathBuf = match dir.components().next_back() {
        Some(Component::Normal(_)) => dir.components().collect(),
        _ => dir.canonicalize().map_err(io("resolve data dir", dir))?,
    };
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{}", dir.display(), utc_stamp(secs));
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(&dir, &target).map_err(io("move aside data dir", &dir))?;
    Ok(target)
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch (proleptic Gregorian,
/// Howard Hinnant's days-to-civil).
pub(crate) fn utc_stamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z")
}
