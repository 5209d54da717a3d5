//! Repacking the database file after a bulk load. Tables that take inserts at random places
//! (the UUID indexes within their period, the run log within each pipeline, the rollups) split
//! their leaves in half and settle at 60-70% full, and large transactions leave free pages
//! behind. Copying every table in key order into a new file appends to the rightmost leaf only,
//! which redb packs full: the same entries in fewer pages, in a file with no free space.
//!
//! Crash-safe: the copy is written beside the database and renamed over it only once it is
//! complete and durable; until then the database file is untouched, and a copy left by an
//! interrupted run is discarded by the next.

use std::path::Path;

use redb::ReadableDatabase;

use super::DATABASE_FILE;

/// The file's size before and after.
pub struct Repacked {
    pub before: u64,
    pub after: u64,
}

/// Repacks the database in `data_dir`, which no process may hold open.
pub fn repack(data_dir: &Path) -> Result<Repacked, String> {
    let path = data_dir.join(DATABASE_FILE);
    let copy = data_dir.join("runledger.redb.repack");
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let before = size(&path)?;
    // Read once in key order: a small cache does (redb's default, 1 GiB, would hold the file).
    let source = redb::Builder::new()
        .set_cache_size(32 << 20)
        .open(&path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => format!(
                "the data dir {} is in use by another runledger process",
                data_dir.display()
            ),
            other => format!("cannot open {}: {other}", path.display()),
        })?;
    if copy.exists() {
        std::fs::remove_file(&copy)
            .map_err(|e| format!("cannot remove {}: {e}", copy.display()))?;
    }
    let mut target = redb::Builder::new()
        .set_cache_size(64 << 20)
        .create(&copy)
        .map_err(|e| format!("cannot create {}: {e}", copy.display()))?;
    if let Err(error) = crate::private::restrict(&copy) {
        tracing::warn!(%error, path = %copy.display(), "cannot make the copy owner-only");
    }
    let snapshot = source.begin_read().map_err(|e| e.to_string())?;
    super::backup::copy_tables(&snapshot, &target)
        .and_then(|_| Ok(target.begin_write()?.commit()?))
        .map_err(|e| format!("cannot copy the database: {e}"))?;
    drop(snapshot);
    // The copy's own growth steps leave some free space at its end; give it back.
    target
        .compact()
        .map_err(|e| format!("cannot compact {}: {e}", copy.display()))?;
    drop(target);
    drop(source);
    std::fs::rename(&copy, &path).map_err(|e| format!("cannot replace the database: {e}"))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", data_dir.display()))?;
    Ok(Repacked {
        before,
        after: size(&path)?,
    })
}
