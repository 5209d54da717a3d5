//! The open database file, writable or read-only, behind a lock so that the writer can close and
//! reopen it after an I/O failure (a full disk): redb refuses every later operation on a file
//! whose write failed, reads included, until it is reopened.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase};

use crate::error::{Error, Result};

#[derive(Clone)]
enum Db {
    Writable(Arc<Database>),
    ReadOnly(Arc<ReadOnlyDatabase>, String),
}

/// The database, shared by readers and the writer.
pub struct Handle {
    db: RwLock<Option<Db>>,
    path: PathBuf,
    cache_bytes: usize,
}

impl Handle {
    pub fn writable(db: Database, path: &Path, cache_bytes: usize) -> Handle {
        Handle::new(Db::Writable(Arc::new(db)), path, cache_bytes)
    }

    /// A database that is only read; `why` says why, for the errors writers get.
    pub fn read_only(db: ReadOnlyDatabase, why: String, path: &Path, cache_bytes: usize) -> Handle {
        Handle::new(Db::ReadOnly(Arc::new(db), why), path, cache_bytes)
    }

    fn new(db: Db, path: &Path, cache_bytes: usize) -> Handle {
        Handle {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            cache_bytes,
        }
    }

    fn current(&self) -> Result<Db> {
        self.db
            .read()
            .expect("never poisoned")
            .clone()
            .ok_or_else(|| {
                Error::Unavailable(
                    "the database is being reopened after a failed write; retry in a moment".into(),
                )
            })
    }

    pub fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(match self.current()? {
            Db::Writable(db) => db.begin_read()?,
            Db::ReadOnly(db, _) => db.begin_read()?,
        })
    }

    /// Why writes are refused, when the database is open read-only.
    pub fn read_only_reason(&self) -> Option<String> {
        match self.db.read().expect("never poisoned").as_ref() {
            Some(Db::ReadOnly(_, why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// The database to write to.
    pub fn for_writing(&self) -> Result<Arc<Database>> {
        match self.current()? {
            Db::Writable(db) => Ok(db),
            Db::ReadOnly(_, why) => Err(read_only_error(&why)),
        }
    }

    /// Runs a write on the database. When it fails in a way that leaves redb refusing
    /// everything (a full disk), the file is reopened (recovering the last durable commit)
    /// before the error is returned, so that a caller told of the failure can read at once.
    /// Blocks.
    pub fn write<T>(&self, apply: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let result = self.for_writing().and_then(|db| apply(&db));
        if result.is_err() && self.is_failed() {
            self.reopen();
        }
        result
    }

    /// Whether the last write failed in a way that leaves redb refusing everything (an I/O
    /// error): a write transaction can no longer begin.
    pub fn is_failed(&self) -> bool {
        match self.current() {
            Ok(Db::Writable(db)) => matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::Io(_) | redb::StorageError::PreviousIo
                ))
            ),
            _ => false,
        }
    }

    /// Closes the failed database and opens it again (redb recovers the last durable commit),
    /// retrying each second until it opens. Readers are told to retry meanwhile. Blocks.
    pub fn reopen(&self) {
        let old = self.db.write().expect("never poisoned").take();
        if let Some(Db::Writable(mut db)) = old {
            // Readers hold the handle only while beginning a transaction.
            let db = loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => break db,
                    Err(shared) => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            };
            let _ = db.close();
        }
        loop {
            match redb::Builder::new()
                .set_cache_size(self.cache_bytes)
                .open(&self.path)
            {
                Ok(db) => {
                    *self.db.write().expect("never poisoned") = Some(Db::Writable(Arc::new(db)));
                    tracing::info!(path = %self.path.display(), "database reopened after a failed write");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, path = %self.path.display(), "cannot reopen the database; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

pub fn read_only_error(why: &str) -> Error {
    Error::Unavailable(format!(
        "this server has the database open read-only ({why}); writes are refused, reads work"
    ))
}
