//! Consistent copies of a live database: every table is copied from one read snapshot into a new
//! file beside the destination, made durable, then renamed into place, so a backup is either
//! whole or absent. Writers keep running meanwhile; the copy holds what was committed when the
//! snapshot was taken.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, Key, ReadTransaction, ReadableTable, TableDefinition, Value};

use super::{DATABASE_FILE, Store, tables};
use crate::error::{Error, Result};

/// Entries copied per transaction of the new file (they are made durable together at the end).
const CHUNK: usize = 100_000;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The new database file.
    pub path: PathBuf,
    /// Table entries copied.
    pub entries: u64,
    /// The new file's size.
    pub bytes: u64,
    /// Cluster mode: the last stream sequence the copy holds (0 outside a cluster).
    pub applied_seq: u64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backed up {} entries ({} bytes) to {}",
            self.entries,
            self.bytes,
            self.path.display()
        )?;
        if self.applied_seq > 0 {
            write!(
                f,
                "; it holds the cluster's stream through sequence {}",
                self.applied_seq
            )?;
        }
        Ok(())
    }
}

/// Copies the database as of now into `destination/runledger.redb`. The destination directory
/// is created if needed and must be empty (but for what an interrupted backup left), so that
/// a copy never ends up beside another store's files (a foreign master key).
pub fn backup(store: &Store, destination: &Path) -> Result<BackupReport> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        Error::Unavailable(format!("cannot {what} {}: {e}", path.display()))
    };
    crate::private::create_dir(destination).map_err(|e| io("create", destination, e))?;
    let target = destination.join(DATABASE_FILE);
    let partial_name = format!("{DATABASE_FILE}.partial");
    let entries = std::fs::read_dir(destination).map_err(|e| io("read", destination, e))?;
    for entry in entries {
        let name = entry.map_err(|e| io("read", destination, e))?.file_name();
        if name.to_str() != Some(partial_name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "{} is not empty (it holds {}); back up into an empty or new directory",
                destination.display(),
                crate::error::quote(&name.to_string_lossy())
            )));
        }
    }
    let partial = destination.join(partial_name);
    let _ = std::fs::remove_file(&partial);

    let snapshot = store.snapshot()?;
    let applied_seq = super::batch::read_cut(
        &snapshot.open_table(tables::META)?,
        tables::meta::APPLIED_SEQ,
    )?
    .map_or(0, |seq| seq as u64);
    let entries = {
        let copy = Database::create(&partial)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", partial.display())))?;
        crate::private::restrict(&partial).map_err(|e| io("restrict", &partial, e))?;
        let entries = copy_tables(&snapshot, &copy).inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
        // An empty durable commit makes the chunks above, written without fsync, durable.
        let txn = copy.begin_write()?;
        txn.commit()?;
        entries
    };
    std::fs::rename(&partial, &target).map_err(|e| io("rename", &partial, e))?;
    if let Ok(dir) = std::fs::File::open(destination) {
        let _ = dir.sync_all();
    }
    let bytes = std::fs::metadata(&target).map_or(0, |m| m.len());
    Ok(BackupReport {
        path: target,
        entries,
        bytes,
        applied_seq,
    })
}

/// Copies every table of `snapshot` into `copy` in key order (appends only, so leaves come out
/// full), in transactions that are not durable on their own: commit once durably afterwards.
pub(super) fn copy_tables(snapshot: &ReadTransaction, copy: &Database) -> Result<u64> {
    struct Copy<'a> {
        snapshot: &'a ReadTransaction,
        copy: &'a Database,
        copied: u64,
    }
    impl tables::TableVisitor for Copy<'_> {
        type Error = Error;
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<()> {
            self.copied += copy_table(self.snapshot, self.copy, table)?;
            Ok(())
        }
    }
    let mut copy = Copy {
        snapshot,
        copy,
        copied: 0,
    };
    tables::visit_tables(&mut copy)?;
    Ok(copy.copied)
}

/// Copies one table in key order, `CHUNK` entries per transaction of the copy.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    snapshot: &ReadTransaction,
    copy: &Database,
    table: TableDefinition<K, V>,
) -> Result<u64> {
    let source = snapshot.open_table(table)?;
    let mut entries = source.iter()?;
    let mut copied = 0u64;
    loop {
        let mut txn = copy.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| Error::Internal(format!("backup: {e}")))?;
        let mut done = true;
        {
            let mut target = txn.open_table(table)?;
            for entry in entries.by_ref().take(CHUNK) {
                let (key, value) = entry?;
                target.insert(key.value(), value.value())?;
                copied += 1;
                done = false;
            }
        }
        txn.commit()?;
        if done {
            return Ok(copied);
        }
    }
}
