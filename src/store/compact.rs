//! Compacting the database file after a bulk load: redb grows its file in large steps and keeps
//! freed pages for reuse, so a file that took many large transactions holds free space that
//! `Database::compact` moves live pages over and gives back to the file system. Each step is a
//! transaction of its own: stopped at any point, the file is as consistent as before.

use std::path::Path;

use super::DATABASE_FILE;

/// The file's size before and after.
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

/// Compacts the database in `data_dir`, which no process may hold open.
pub fn compact(data_dir: &Path) -> Result<Compacted, String> {
    let path = data_dir.join(DATABASE_FILE);
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let before = size(&path)?;
    let mut db = redb::Database::open(&path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => format!(
            "the data dir {} is in use by another runledger process",
            data_dir.display()
        ),
        other => format!("cannot open {}: {other}", path.display()),
    })?;
    db.compact()
        .map_err(|e| format!("cannot compact {}: {e}", path.display()))?;
    drop(db);
    Ok(Compacted {
        before,
        after: size(&path)?,
    })
}
