//! Opening a data dir's database: refusing what is not ours or not of this format (before
//! anything is written to it), creating the tables of a new one, and serving one read-only.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::WriteContext;
use super::cache::EntityCache;
use super::handle::Handle;
use super::index::Filters;
use super::writer::Writer;
use super::{DATABASE_FILE, Store, StoreOptions, tables, upgrade};
use crate::error::Result;

/// Why a data dir could not be opened. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the data dir {0} is in use by another runledger process (is a server running on it?); stop it or use another --data-dir"
    )]
    InUse(PathBuf),
    #[error("{path} is not a runledger database ({reason}); refusing to touch it")]
    Foreign { path: PathBuf, reason: String },
    #[error(
        "{path} was written by a newer runledger (format {found}; this build reads format {})",
        tables::FORMAT_VERSION
    )]
    NewerFormat { path: PathBuf, found: u32 },
    #[error(
        "{path} was written by an older runledger (format {found}; this build reads format {}); {}",
        tables::FORMAT_VERSION,
        upgrade_advice(path, *found)
    )]
    OlderFormat { path: PathBuf, found: u32 },
    #[error("cannot open {path}: {reason}")]
    Failed { path: PathBuf, reason: String },
}

/// What to do about a database of an older format.
fn upgrade_advice(path: &Path, found: u32) -> String {
    if upgrade::UPGRADABLE.contains(&found) {
        let dir = path.parent().unwrap_or(Path::new("."));
        format!(
            "upgrade it with: runledger upgrade --data-dir {}",
            dir.display()
        )
    } else {
        "this build cannot upgrade it; import its runs again into a new data dir".into()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store, OpenError> {
        let path = data_dir.join(DATABASE_FILE);
        let failed = |reason: String| OpenError::Failed {
            path: path.clone(),
            reason,
        };
        crate::private::create_dir(data_dir).map_err(|e| failed(e.to_string()))?;
        check_magic(&path)?;
        check_existing(&path)?;
        if options.read_only {
            return Store::open_read_only(&path, options, "--read-only".into());
        }
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            redb::Builder::new()
                .set_cache_size(options.cache_bytes)
                .create(&path)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(OpenError::InUse(data_dir.to_path_buf()));
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)))) => {
                return Err(OpenError::Foreign {
                    path: path.clone(),
                    reason: format!("corrupted: {reason}"),
                });
            }
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(io))))
                if path.exists()
                    && matches!(
                        io.kind(),
                        std::io::ErrorKind::PermissionDenied
                            | std::io::ErrorKind::ReadOnlyFilesystem
                    ) =>
            {
                tracing::warn!(path = %path.display(), error = %io, "the database file is not writable; serving it read-only");
                return Store::open_read_only(
                    &path,
                    options,
                    format!("the file is not writable: {io}"),
                );
            }
            Ok(Err(error)) => return Err(failed(error.to_string())),
            Err(_) => {
                return Err(OpenError::Foreign {
                    path: path.clone(),
                    reason: "the file is damaged".into(),
                });
            }
        };
        initialize(&db, &path)?;
        if let Err(error) = crate::private::restrict(&path) {
            tracing::warn!(%error, path = %path.display(), "cannot make the database file owner-only");
        }
        let filters = load_filters(&db).map_err(|e| failed(e.to_string()))?;
        let rules = load_rules(&db).map_err(|e| failed(e.to_string()))?;
        let context = Arc::new(WriteContext {
            cache: EntityCache::default(),
            filters: Mutex::new(filters),
            threads: options.writer_threads.max(1),
            rules,
            outbox: Default::default(),
            outbox_commits: Default::default(),
        });
        let db = Arc::new(Handle::writable(db, &path, options.cache_bytes));
        let writer = Writer::spawn(
            db.clone(),
            context.clone(),
            options.write_queue,
            options.write_queue_bytes,
            options.queue_wait,
        );
        Ok(Store {
            db,
            context,
            writer: Some(writer),
            path,
        })
    }

    /// Opens an existing database for reading only; `why` is told to writers.
    fn open_read_only(path: &Path, options: StoreOptions, why: String) -> Result<Store, OpenError> {
        let failed = |reason: String| OpenError::Failed {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            return Err(failed("there is no database to open read-only".into()));
        }
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .open_read_only(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    OpenError::InUse(path.parent().unwrap_or(path).to_path_buf())
                }
                other => failed(format!(
                    "{other} (a file that was not closed cleanly must be opened writable once to recover)"
                )),
            })?;
        let filters = load_filters(&db).map_err(|e| failed(e.to_string()))?;
        Ok(Store {
            db: Arc::new(Handle::read_only(db, why, path, options.cache_bytes)),
            context: Arc::new(WriteContext {
                cache: EntityCache::default(),
                filters: Mutex::new(filters),
                threads: 1,
                rules: Default::default(),
                outbox: Default::default(),
                outbox_commits: Default::default(),
            }),
            writer: None,
            path: path.to_path_buf(),
        })
    }
}

/// Every organization's alert rules as the file holds them.
fn load_rules(db: &impl ReadableDatabase) -> Result<crate::alerts::RuleSet> {
    let txn = db.begin_read()?;
    let table = txn.open_table(tables::ALERT_RULES)?;
    let mut all = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let key = key.value();
        let org = crate::model::OrgId(uuid::Uuid::from_bytes(key[..16].try_into().expect("16")));
        let rule = uuid::Uuid::from_bytes(key[16..].try_into().expect("16"));
        let stored = crate::alerts::StoredRule::decode(value.value())
            .ok_or_else(|| super::records::corrupt("alert rule"))?;
        all.push((org, rule, stored));
    }
    Ok(crate::alerts::RuleSet::new(all))
}

/// The UUID indexes' filters as the file holds them.
fn load_filters(db: &impl ReadableDatabase) -> Result<Filters> {
    let txn = db.begin_read()?;
    Filters::load(
        &txn.open_table(tables::META)?,
        &txn.open_table(tables::INDEX_FILTERS)?,
        &txn.open_table(tables::TASK_INDEX)?,
        &txn.open_table(tables::PIPELINE_INDEX)?,
    )
}

/// Refuses a file that is not a redb database before redb sees it.
fn check_magic(path: &Path) -> Result<(), OpenError> {
    const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(OpenError::Failed {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut head = Vec::with_capacity(MAGIC.len());
    (&mut file)
        .take(MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| OpenError::Failed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if !head.is_empty() && head != MAGIC {
        return Err(OpenError::Foreign {
            path: path.to_path_buf(),
            reason: "it is not a redb database file".into(),
        });
    }
    Ok(())
}

/// Checks a database's format marker: `Ok(true)` when the database is new and needs one.
fn check_format(path: &Path, format: Option<Vec<u8>>, has_tables: bool) -> Result<bool, OpenError> {
    let Some(bytes) = format else {
        if has_tables {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                reason: "it is a redb database of another program".into(),
            });
        }
        return Ok(true);
    };
    let found = <[u8; 4]>::try_from(bytes.as_slice())
        .map(u32::from_le_bytes)
        .map_err(|_| OpenError::Foreign {
            path: path.to_path_buf(),
            reason: "its format marker is damaged".into(),
        })?;
    let path = path.to_path_buf();
    match found.cmp(&tables::FORMAT_VERSION) {
        std::cmp::Ordering::Greater => Err(OpenError::NewerFormat { path, found }),
        std::cmp::Ordering::Less => Err(OpenError::OlderFormat { path, found }),
        std::cmp::Ordering::Equal => Ok(false),
    }
}

/// Before opening an existing file for writing (which rewrites its header), checks read-only
/// that it is a runledger database of this format, so that a file that is not is left exactly
/// as it was. A file that needs crash recovery cannot be opened read-only; it is checked by
/// [`initialize`] after the writable open has recovered it.
fn check_existing(path: &Path) -> Result<(), OpenError> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(());
    }
    let db = match std::panic::catch_unwind(|| redb::ReadOnlyDatabase::open(path)) {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(OpenError::InUse(
                path.parent().unwrap_or(path).to_path_buf(),
            ));
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)))) => {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                reason: format!("corrupted: {reason}"),
            });
        }
        Ok(Err(_)) => return Ok(()), // needs recovery, or an error the writable open reports
        Err(_) => {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                reason: "the file is damaged".into(),
            });
        }
    };
    let failed = |reason: String| OpenError::Failed {
        path: path.to_path_buf(),
        reason,
    };
    let txn = db.begin_read().map_err(|e| failed(e.to_string()))?;
    let has_tables = txn
        .list_tables()
        .map_err(|e| failed(e.to_string()))?
        .next()
        .is_some();
    let format = match txn.open_table(tables::META) {
        Ok(meta) => meta
            .get(tables::meta::FORMAT)
            .map_err(|e| failed(e.to_string()))?
            .map(|bytes| bytes.value().to_vec()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => {
            return Err(OpenError::Foreign {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    check_format(path, format, has_tables)?;
    Ok(())
}

/// Creates the tables of a new database, or checks that an existing one is ours.
fn initialize(db: &Database, path: &Path) -> Result<(), OpenError> {
    let failed = |reason: String| OpenError::Failed {
        path: path.to_path_buf(),
        reason,
    };
    let txn = db.begin_write().map_err(|e| failed(e.to_string()))?;
    let has_tables = txn
        .list_tables()
        .map_err(|e| failed(e.to_string()))?
        .next()
        .is_some();
    {
        let mut meta = txn
            .open_table(tables::META)
            .map_err(|e| failed(e.to_string()))?;
        let format = meta
            .get(tables::meta::FORMAT)
            .map_err(|e| failed(e.to_string()))?
            .map(|bytes| bytes.value().to_vec());
        if check_format(path, format, has_tables)? {
            meta.insert(
                tables::meta::FORMAT,
                tables::FORMAT_VERSION.to_le_bytes().as_slice(),
            )
            .map_err(|e| failed(e.to_string()))?;
        }
    }
    // Every table exists from the start, so readers never meet a missing one.
    struct Create<'a>(&'a redb::WriteTransaction);
    impl tables::TableVisitor for Create<'_> {
        type Error = redb::TableError;
        fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
            &mut self,
            table: redb::TableDefinition<'static, K, V>,
        ) -> Result<(), redb::TableError> {
            self.0.open_table(table).map(drop)
        }
    }
    let create = || tables::visit_tables(&mut Create(&txn));
    create().map_err(|e| failed(e.to_string()))?;
    txn.commit().map_err(|e| failed(e.to_string()))?;
    Ok(())
}
