//! Everything redb: one database file in the data dir holding the run store, the pipeline-run
//! aggregates and the rollups (see [`tables`] for the layout). Reads run on snapshots
//! ([`Reader`]); writes go through the single group-committing [`writer`], or straight through
//! [`Store::apply_now`] for bulk loads.

pub mod backup;
mod batch;
mod bloom;
mod cache;
pub mod credentials;
mod digest;
mod handle;
mod index;
mod kept;
mod packed;
mod read;
mod records;
pub mod repack;
mod rollup;
pub mod tables;
pub mod upgrade;
pub mod verify;
mod writer;

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable};

use handle::Handle;

pub use batch::{
    Admission, IssueRequest, PruneProgress, UnfinishedRun, WriteOp, WriteOutcome, derived_task_run,
};
pub use digest::Digests;
pub use read::{PrunePreview, Reader};
pub use records::{EntityDetail, EntityKey};
pub use tables::EntityId;
pub use writer::{PendingWrite, outcome};

use cache::EntityCache;
use index::Filters;
use writer::Writer;

use crate::error::Result;

/// The database file's name inside the data dir.
pub const DATABASE_FILE: &str = "runledger.redb";

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

/// The size of one table.
#[derive(Clone, Debug)]
pub struct TableSize {
    pub name: String,
    pub entries: u64,
    /// Bytes of keys and values.
    pub stored_bytes: u64,
    /// Bytes of pages held but unused.
    pub fragmented_bytes: u64,
    /// Pages of 4 KiB.
    pub pages: u64,
}

/// Tuning knobs of a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Bytes of redb page cache.
    pub cache_bytes: usize,
    /// Writes that may wait for the writer before submitters wait for room.
    pub write_queue: usize,
    /// Bytes those writes may hold between them (task runs with their outputs, estimated).
    pub write_queue_bytes: usize,
    /// How long a submitter waits for room before its write is refused as overloaded.
    pub queue_wait: std::time::Duration,
    /// Open the file read-only: reads work, writes are refused (a backup being inspected, a
    /// read-only volume). A file the process may not write is opened read-only regardless.
    pub read_only: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            write_queue: 1_024,
            write_queue_bytes: 256 << 20,
            queue_wait: std::time::Duration::from_secs(2),
            read_only: false,
        }
    }
}

/// The open database: snapshots for reads, the writer for writes.
pub struct Store {
    db: Arc<Handle>,
    cache: Arc<EntityCache>,
    /// The UUID indexes' committed Bloom filters; a write transaction holds the lock until it
    /// commits or fails (writes are serialized anyway).
    filters: Arc<Mutex<Filters>>,
    /// `None` when the database is open read-only.
    writer: Option<Writer>,
    path: PathBuf,
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
        let filters = Arc::new(Mutex::new(filters));
        let db = Arc::new(Handle::writable(db, &path, options.cache_bytes));
        let cache = Arc::new(EntityCache::default());
        let writer = Writer::spawn(
            db.clone(),
            cache.clone(),
            filters.clone(),
            options.write_queue,
            options.write_queue_bytes,
            options.queue_wait,
        );
        Ok(Store {
            db,
            cache,
            filters,
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
            cache: Arc::new(EntityCache::default()),
            filters: Arc::new(Mutex::new(filters)),
            writer: None,
            path: path.to_path_buf(),
        })
    }

    /// Why writes are refused, when the database is open read-only.
    pub fn read_only_reason(&self) -> Option<String> {
        self.db.read_only_reason()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data dir holding the database file.
    pub fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A consistent snapshot to read from.
    pub fn reader(&self) -> Result<Reader<'_>> {
        Ok(Reader::new(self.db.begin_read()?, &self.cache))
    }

    /// The raw snapshot behind [`Store::reader`], for whole-database work such as backups.
    fn snapshot(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read()
    }

    /// Queues a write for the next group commit; await the result with [`outcome`].
    pub async fn submit(&self, op: WriteOp) -> Result<PendingWrite> {
        self.writer()?.submit(op).await
    }

    /// Applies a write in the next group commit and waits until it is durable.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.writer()?.write(op).await
    }

    fn writer(&self) -> Result<&Writer> {
        self.writer
            .as_ref()
            .ok_or_else(|| handle::read_only_error(&self.db.read_only_reason().unwrap_or_default()))
    }

    /// Applies writes in one transaction on the calling thread, bypassing the writer queue (for
    /// bulk loads). Each operation's result is its own; `Err` means nothing was applied (and a
    /// failed write was recovered from, see `Handle::write`).
    pub fn apply_now(&self, ops: &[WriteOp]) -> Result<Vec<Result<WriteOutcome>>> {
        self.db
            .write(|db| apply_batch(db, &self.cache, &self.filters, ops, None))
    }

    /// Applies messages read from the cluster's stream in one durable transaction on the
    /// calling thread, recording `through` as the last applied stream sequence in the same
    /// transaction. A writer's message is applied in its turn only ([`Admission`]): a copy
    /// that comes early is kept, and applied (read again with `replay`) right after its
    /// predecessor. A message that cannot be applied for good is recorded as skipped. `Err`
    /// means nothing was applied.
    pub fn apply_logged(
        &self,
        messages: &[LoggedMessage<'_>],
        through: u64,
        replay: &dyn Fn(&[u8]) -> Replayed,
    ) -> Result<Vec<LoggedOutcome>> {
        self.db.write(|db| {
            let started = std::time::Instant::now();
            let result = in_transaction(db, &self.cache, &self.filters, Some(through), |batch| {
                messages
                    .iter()
                    .map(|message| apply_message(batch, message, replay))
                    .collect::<Result<Vec<_>>>()
            });
            let outcomes = result.as_deref().unwrap_or_default();
            let mut pairs = Vec::new();
            for (message, outcome) in messages.iter().zip(outcomes) {
                let LoggedOutcome::Taken(taken) = outcome else {
                    continue;
                };
                for taken in taken {
                    let ops = match (&taken.kept_ops, &message.content) {
                        (Some(ops), _) => ops.as_slice(),
                        (None, LoggedContent::Numbered { ops: Ok(ops), .. }) => ops,
                        _ => &[],
                    };
                    if let Ok(outcomes) = &taken.outcome {
                        pairs.extend(ops.iter().zip(outcomes.iter().map(Some)));
                    }
                }
            }
            crate::metrics::record_transaction(
                pairs.into_iter(),
                result.as_ref().err(),
                started.elapsed(),
            );
            result
        })
    }

    /// Records the id of the cluster whose stream this database applies (once: a database
    /// that holds another is refused by [`crate::cluster::StartingPoint::check`] first).
    pub fn set_cluster_id(&self, cluster: uuid::Uuid) -> Result<()> {
        self.db.write(|db| {
            let txn = db.begin_write()?;
            txn.open_table(tables::META)?
                .insert(tables::meta::CLUSTER_ID, cluster.as_bytes().as_slice())?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Marks the database as the start of a cluster's stream (`runledger cluster adopt`): the
    /// adoption's id, which nodes compare with the one the stream names before applying it.
    /// A database adopted before keeps its id (so an interrupted adoption can be run again);
    /// one that applied a stream already is refused.
    pub fn adopt(&self) -> Result<uuid::Uuid> {
        let reader = self.reader()?;
        if let Some(existing) = reader.baseline()? {
            return Ok(existing);
        }
        if reader.applied_seq()? > 0 {
            return Err(crate::error::Error::Conflict(
                "this data dir is a cluster node's: it applied a cluster's stream already".into(),
            ));
        }
        drop(reader);
        let baseline = uuid::Uuid::new_v4();
        self.db.write(|db| {
            let txn = db.begin_write()?;
            txn.open_table(tables::META)?
                .insert(tables::meta::BASELINE, baseline.as_bytes().as_slice())?;
            txn.commit()?;
            Ok(())
        })?;
        Ok(baseline)
    }

    /// Entries and space of every table, from one snapshot.
    pub fn table_sizes(&self) -> Result<Vec<TableSize>> {
        struct Describe<'a>(&'a redb::ReadTransaction, Vec<TableSize>);
        impl tables::TableVisitor for Describe<'_> {
            type Error = crate::error::Error;
            fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
                &mut self,
                table: redb::TableDefinition<'static, K, V>,
            ) -> Result<()> {
                use redb::ReadableTableMetadata;
                let open = self.0.open_table(table)?;
                let stats = open.stats()?;
                self.1.push(TableSize {
                    name: redb::TableHandle::name(&table).to_string(),
                    entries: open.len()?,
                    stored_bytes: stats.stored_bytes(),
                    fragmented_bytes: stats.fragmented_bytes(),
                    pages: stats.leaf_pages() + stats.branch_pages(),
                });
                Ok(())
            }
        }
        let snapshot = self.snapshot()?;
        let mut describe = Describe(&snapshot, Vec::new());
        tables::visit_tables(&mut describe)?;
        Ok(describe.1)
    }

    /// A SHA-256 of every table's entries in key order, from one snapshot.
    pub fn digest(&self) -> Result<Digests> {
        digest::digest(&self.snapshot()?)
    }

    /// Stops accepting writes, finishes the queued ones, and waits for the writer. Blocks.
    pub fn shutdown(&self) {
        if let Some(writer) = &self.writer {
            writer.shutdown();
        }
    }
}

/// Applies `ops` in one durable transaction.
fn apply_batch(
    db: &Database,
    cache: &EntityCache,
    filters: &Mutex<Filters>,
    ops: &[WriteOp],
    through: Option<u64>,
) -> Result<Vec<Result<WriteOutcome>>> {
    let started = std::time::Instant::now();
    let outcomes = in_transaction(db, cache, filters, through, |batch| {
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(batch.apply(op)?);
        }
        Ok(outcomes)
    });
    let applied = ops.iter().zip(
        outcomes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None)),
    );
    crate::metrics::record_transaction(applied, outcomes.as_ref().err(), started.elapsed());
    outcomes
}

/// Runs `work` in one write transaction and commits it (recording `through` as the last
/// applied stream sequence); then the caches learn what it created.
fn in_transaction<R>(
    db: &Database,
    cache: &EntityCache,
    filters: &Mutex<Filters>,
    through: Option<u64>,
    work: impl FnOnce(&mut batch::Batch<'_>) -> Result<R>,
) -> Result<R> {
    let started = std::time::Instant::now();
    let mut filters = filters.lock().unwrap_or_else(|e| e.into_inner());
    let txn = db.begin_write()?;
    let (done, created, applied, finished) = {
        let mut batch = batch::Batch::open(&txn, cache, &filters)?;
        let done = work(&mut batch)?;
        let applied = started.elapsed();
        if let Some(seq) = through {
            batch.record_applied_seq(seq)?;
        }
        (done, batch.finish()?, applied, started.elapsed())
    };
    txn.commit()?;
    tracing::debug!(?applied, ?finished, committed = ?started.elapsed(), "transaction");
    for (org, index) in created.orgs {
        cache.insert_org(org, index);
    }
    for ((_, uuid), key) in created.entities {
        cache.insert(uuid, key);
    }
    for work in created.indexes {
        filters.learn(work);
    }
    Ok(done)
}

/// A message of the cluster's stream as the applier hands it over.
pub struct LoggedMessage<'a> {
    pub seq: u64,
    pub content: LoggedContent<'a>,
}

pub enum LoggedContent<'a> {
    /// A writer's numbered message, sent when its writer had confirmed every number through
    /// `confirmed`: its operations (none for a pass-over permission), or why they are not
    /// applied (it still takes its turn); `copy` is the message as `replay` reads it again,
    /// should it be kept for later.
    Numbered {
        writer: [u8; 16],
        number: u64,
        confirmed: u64,
        ops: std::result::Result<&'a [WriteOp], Skip>,
        copy: &'a dyn Fn() -> Vec<u8>,
    },
    /// A message skipped for good, and why (recorded in `skipped`).
    Skip(Skip),
}

/// Why a message is skipped for good: the label of the skipped-messages metric, and the
/// sentence recorded in the `skipped` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub label: &'static str,
    pub why: String,
}

/// A kept copy read again: its stream sequence and operations (or why they are not applied).
pub struct Replayed {
    pub seq: u64,
    pub ops: std::result::Result<Vec<WriteOp>, Skip>,
}

/// A writer's message that took its turn.
#[derive(Debug)]
pub struct Taken {
    pub number: u64,
    pub seq: u64,
    /// The operations of a copy that was kept (the caller has the others').
    pub kept_ops: Option<Vec<WriteOp>>,
    /// Each operation's outcome, or why none was applied (recorded as skipped).
    pub outcome: std::result::Result<Vec<Result<WriteOutcome>>, Skip>,
}

/// What became of a message of the stream.
#[derive(Debug)]
pub enum LoggedOutcome {
    /// Its turn: applied with the kept copies that were waiting for it, in number order.
    Taken(Vec<Taken>),
    /// Not applied: a duplicate, or a copy that came before its writer's previous message.
    NotApplied(Admission),
    /// Skipped for good (recorded).
    Skipped,
}

/// One message inside the transaction.
fn apply_message(
    batch: &mut batch::Batch<'_>,
    message: &LoggedMessage<'_>,
    replay: &dyn Fn(&[u8]) -> Replayed,
) -> Result<LoggedOutcome> {
    let (writer, number, confirmed, ops, copy) = match &message.content {
        LoggedContent::Skip(skip) => {
            batch.record_skipped(message.seq, &skip.why)?;
            return Ok(LoggedOutcome::Skipped);
        }
        LoggedContent::Numbered {
            writer,
            number,
            confirmed,
            ops,
            copy,
        } => (writer, *number, *confirmed, ops, copy),
    };
    let from = match batch.admit(writer, number, confirmed)? {
        Admission::Turn { from } => from,
        Admission::Early { expected, .. } => {
            let kept = batch.keep_early(writer, number, &copy())?;
            return Ok(LoggedOutcome::NotApplied(Admission::Early {
                expected,
                kept,
            }));
        }
        other => return Ok(LoggedOutcome::NotApplied(other)),
    };
    // Kept copies below it (the numbers not kept are gone from the stream), it, and the kept
    // copies that follow it without a gap.
    let mut taken = Vec::new();
    for (kept, copy) in batch.take_early(writer, from, number)? {
        taken.push(apply_kept(batch, kept, &copy, replay)?);
    }
    let outcome = apply_ops(batch, message.seq, ops.as_deref().map_err(Clone::clone))?;
    taken.push(Taken {
        number,
        seq: message.seq,
        kept_ops: None,
        outcome,
    });
    let mut last = number;
    while let Some((kept, copy)) = batch.take_early(writer, last + 1, last + 2)?.pop() {
        taken.push(apply_kept(batch, kept, &copy, replay)?);
        last = kept;
    }
    batch.set_last_number(writer, last)?;
    Ok(LoggedOutcome::Taken(taken))
}

fn apply_kept(
    batch: &mut batch::Batch<'_>,
    number: u64,
    copy: &[u8],
    replay: &dyn Fn(&[u8]) -> Replayed,
) -> Result<Taken> {
    let Replayed { seq, ops } = replay(copy);
    let outcome = apply_ops(batch, seq, ops.as_deref().map_err(Clone::clone))?;
    Ok(Taken {
        number,
        seq,
        kept_ops: ops.ok(),
        outcome,
    })
}

/// Applies a message's operations, or records why it is skipped.
fn apply_ops(
    batch: &mut batch::Batch<'_>,
    seq: u64,
    ops: std::result::Result<&[WriteOp], Skip>,
) -> Result<std::result::Result<Vec<Result<WriteOutcome>>, Skip>> {
    match ops {
        Ok(ops) => {
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(batch.apply(op)?);
            }
            Ok(Ok(outcomes))
        }
        Err(skip) => {
            batch.record_skipped(seq, &skip.why)?;
            Ok(Err(skip))
        }
    }
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
