//! Everything redb: one database file in the data dir holding the run store, the pipeline-run
//! aggregates and the rollups (see [`tables`] for the layout). Reads run on snapshots
//! ([`Reader`]); writes go through the single group-committing [`writer`], or straight through
//! [`Store::apply_now`] for bulk loads.

pub mod backup;
mod batch;
pub(crate) mod bloom;
mod cache;
pub mod credentials;
mod digest;
mod handle;
mod index;
mod kept;
mod open;
mod packed;
mod read;
mod records;
pub mod repack;
mod rollup;
pub mod tables;
pub mod upgrade;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::Database;

use handle::Handle;

pub use batch::{
    Admission, IssueRequest, PruneProgress, UnfinishedRun, WriteOp, WriteOutcome, derived_task_run,
};
pub use digest::Digests;
pub use open::OpenError;
pub use read::{AlertPage, PrunePreview, Reader};
pub use records::{EntityDetail, EntityKey};
pub use tables::EntityId;
pub use writer::{PendingWrite, outcome};

use cache::EntityCache;
use index::Filters;
use writer::Writer;

use crate::error::{Error, Result};

/// The database file's name inside the data dir.
pub const DATABASE_FILE: &str = "runledger.redb";

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
    /// Threads one write transaction may use: above 1, a large transaction adds up its rollups
    /// and writes separate tables from separate threads. The tables come out the same for any
    /// number. Default: the machine's cores, at most 4.
    pub writer_threads: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            write_queue: 1_024,
            write_queue_bytes: 256 << 20,
            queue_wait: std::time::Duration::from_secs(2),
            read_only: false,
            writer_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

/// What every write transaction works with besides the database.
pub(crate) struct WriteContext {
    cache: EntityCache,
    /// The UUID indexes' committed Bloom filters; a write transaction holds the lock until it
    /// commits or fails (writes are serialized anyway).
    filters: Mutex<Filters>,
    /// Threads a write transaction may use (see [`StoreOptions::writer_threads`]).
    threads: usize,
    /// The committed alert rules, which the writer evaluates.
    rules: crate::alerts::RuleSet,
    /// Told when a commit put something in the outbox.
    outbox: std::sync::Arc<tokio::sync::Notify>,
    /// When the latest commits that put entries in the outbox ended: the first and last entry
    /// of each, oldest first (at most [`OUTBOX_COMMITS_KEPT`]).
    outbox_commits: Mutex<std::collections::VecDeque<(u64, u64, std::time::Instant)>>,
}

/// Commits whose time [`Store::outbox_committed_at`] remembers.
const OUTBOX_COMMITS_KEPT: usize = 4_096;

/// The open database: snapshots for reads, the writer for writes.
pub struct Store {
    db: Arc<Handle>,
    /// The caches every transaction works with (the readers' entity cache too).
    context: Arc<WriteContext>,
    /// `None` when the database is open read-only.
    writer: Option<Writer>,
    path: PathBuf,
}

impl Store {
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
        Ok(Reader::new(self.db.begin_read()?, &self.context.cache))
    }

    /// Whether any organization has an alert rule the clock decides.
    pub fn has_time_rules(&self) -> bool {
        !self.context.rules.with_time_rules().is_empty()
    }

    /// Told (once per wait) when a commit puts something in the alert outbox.
    pub fn outbox_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.context.outbox.clone()
    }

    /// When the commit that put outbox entry `serial` there ended, if this process made it
    /// lately (for the delay from commit to first delivery attempt).
    pub fn outbox_committed_at(&self, serial: u64) -> Option<std::time::Instant> {
        let commits = self
            .context
            .outbox_commits
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let at = commits.partition_point(|(_, last, _)| *last < serial);
        match commits.get(at) {
            Some((first, _, ended)) if *first <= serial => Some(*ended),
            _ => None,
        }
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
            .write(|db| apply_batch(db, &self.context, ops, None))
    }

    /// Applies a long sequence of writes in one durable transaction on the calling thread, a
    /// chunk at a time (a bulk load): `next` gives each chunk once the one before is applied
    /// and written to the tables, `done` is told each operation's outcome, and once `next`
    /// gives none the transaction commits, so the whole sequence is applied or none of it. A
    /// chunk's operations are each their own unit, as in [`Store::apply_now`]; what the
    /// transaction holds in memory is about one chunk. `Err` (from the store, `next` or
    /// `done`) means nothing was applied. Blocks.
    pub fn apply_chunks(
        &self,
        mut next: impl FnMut() -> Result<Option<Chunk>>,
        mut done: impl FnMut(Vec<WriteOp>, Vec<Result<WriteOutcome>>) -> Result<()>,
    ) -> Result<()> {
        self.db.write(|db| {
            in_transaction(db, &self.context, None, |batch| {
                while let Some(Chunk { ops, new_task_runs }) = next()? {
                    batch.set_new_task_runs(new_task_runs);
                    if let Some(op) = ops.iter().find(|op| op.is_exclusive()) {
                        return Err(Error::InvalidArgument(format!(
                            "{} is not part of a bulk load",
                            op.name()
                        )));
                    }
                    batch.reserve(ops.iter().map(WriteOp::weight).sum());
                    let mut outcomes = Vec::with_capacity(ops.len());
                    for op in &ops {
                        outcomes.push(batch.apply(op)?);
                    }
                    batch.write_out()?;
                    done(ops, outcomes)?;
                }
                Ok(())
            })
        })
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
            let result = in_transaction(db, &self.context, Some(through), |batch| {
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
                pairs.into_iter().map(|(op, outcome)| counted(op, outcome)),
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
    context: &WriteContext,
    ops: &[WriteOp],
    through: Option<u64>,
) -> Result<Vec<Result<WriteOutcome>>> {
    let started = std::time::Instant::now();
    let outcomes = in_transaction(db, context, through, |batch| {
        batch.reserve(ops.iter().map(WriteOp::weight).sum());
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
    crate::metrics::record_transaction(
        applied.map(|(op, outcome)| counted(op, outcome)),
        outcomes.as_ref().err(),
        started.elapsed(),
    );
    outcomes
}

/// A write and its outcome as the metrics count them.
fn counted<'a>(
    op: &WriteOp,
    outcome: Option<&'a Result<WriteOutcome>>,
) -> crate::metrics::Counted<'a> {
    let runs = match (op, outcome) {
        (WriteOp::Report { runs, .. }, Some(Ok(WriteOutcome::Report(_)))) => runs.len() as u64,
        _ => 0,
    };
    crate::metrics::Counted {
        kind: op.kind(),
        runs,
        outcome: outcome.map(|outcome| outcome.as_ref().map(|_| ())),
    }
}

/// Runs `work` in one write transaction and commits it (recording `through` as the last
/// applied stream sequence); then the caches learn what it created.
fn in_transaction<R>(
    db: &Database,
    context: &WriteContext,
    through: Option<u64>,
    work: impl FnOnce(&mut batch::Batch<'_>) -> Result<R>,
) -> Result<R> {
    let started = std::time::Instant::now();
    let cache = &context.cache;
    let mut filters = context.filters.lock().unwrap_or_else(|e| e.into_inner());
    let txn = db.begin_write()?;
    let (done, created, applied, finished) = {
        let mut batch = batch::Batch::open(&txn, cache, &filters, &context.rules, context.threads)?;
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
    for (org, rules) in created.rules {
        context.rules.set(org, rules);
    }
    if let Some((first, last)) = created.outbox_serials {
        let mut commits = context
            .outbox_commits
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if commits.len() == OUTBOX_COMMITS_KEPT {
            commits.pop_front();
        }
        commits.push_back((first, last, std::time::Instant::now()));
    }
    if created.outbox {
        context.outbox.notify_one();
    }
    Ok(done)
}

/// One chunk of a bulk load (see [`Store::apply_chunks`]).
pub struct Chunk {
    pub ops: Vec<WriteOp>,
    /// Each task run reported here is reported nowhere else in the whole load (the load knows
    /// it; looking them up, the store then asks only what was stored before the load).
    pub new_task_runs: bool,
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
