//! `runledger upgrade`: brings a database of an older format to this one. The raw facts
//! (organizations, clients, tokens, pipelines, task runs, the executors' queue) are read from
//! the old file and applied through the writer into a new file beside it, whose derived tables
//! (rollups, last runs, pipeline-run aggregates, UUID indexes) are thereby rebuilt; the new file
//! is verified and repacked, then renamed over the old one.
//!
//! Crash-safe at every point: until the final rename the database file is the old one, intact
//! (the half-built new one sits in `upgrade.partial/` and is discarded by the next attempt);
//! the rename is atomic, and the old file stays beside the new one as
//! `runledger.format<N>.redb`, a hard link made before the rename.

mod format2;
mod format4;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::ReadableDatabase;

use super::{DATABASE_FILE, IssueRequest, Store, StoreOptions, WriteOp, tables};
use crate::error::{Error, Result};
use crate::model::TaskRun;
use crate::store::credentials::TokenRecord;
use crate::time::Timestamp;

/// The formats `runledger upgrade` reads.
pub const UPGRADABLE: &[u32] = &[2, 4];

/// Task runs applied per transaction.
const RUNS_PER_TRANSACTION: usize = 100_000;

/// What an upgrade carried over.
#[derive(Debug, Default)]
pub struct UpgradeReport {
    pub from: u32,
    /// Only the rollups were rebuilt; every other table was carried over as it was.
    pub rollups_only: bool,
    pub organizations: usize,
    pub clients: usize,
    pub tokens: usize,
    pub pipelines: usize,
    pub finished_runs: u64,
    pub unfinished_runs: usize,
    /// Runs the old format stored but this one refuses, with the reason (at most 20 listed).
    pub refused: Vec<String>,
    pub refused_count: u64,
    /// Where the old file stays.
    pub old_file: PathBuf,
}

/// Upgrades the database in `data_dir`; `progress` hears the finished runs applied so far.
pub fn upgrade(data_dir: &Path, mut progress: impl FnMut(u64)) -> Result<UpgradeReport, String> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Err(format!("there is no database at {}", path.display()));
    }
    let old = open_old(&path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => format!(
            "the data dir {} is in use by another runledger process; stop it first",
            data_dir.display()
        ),
        other => format!("cannot open {}: {other}", path.display()),
    })?;
    let txn = old.begin_read().map_err(|e| e.to_string())?;
    let from = format_of(&txn).map_err(|e| format!("{}: {e}", path.display()))?;
    if from == tables::FORMAT_VERSION {
        return Err(format!(
            "{} is already format {from}; there is nothing to upgrade",
            path.display()
        ));
    }
    if !UPGRADABLE.contains(&from) {
        return Err(format!(
            "{} is format {from}, which this build cannot upgrade (it upgrades formats {:?}); import its runs again into a new data dir",
            path.display(),
            UPGRADABLE
        ));
    }
    let partial = data_dir.join("upgrade.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| format!("cannot clear {}: {e}", partial.display()))?;
    }
    let options = StoreOptions {
        cache_bytes: 256 << 20,
        ..StoreOptions::default()
    };
    let mut report = UpgradeReport {
        from,
        ..UpgradeReport::default()
    };
    let unchanged = |e: String| format!("upgrade failed, {} is unchanged: {e}", path.display());
    let store = if from == 4 {
        drop(txn);
        format4::copy_and_rebuild(&path, &partial).map_err(unchanged)?;
        Store::open(&partial, options).map_err(|e| e.to_string())?
    } else {
        let store = Store::open(&partial, options).map_err(|e| e.to_string())?;
        let copied = copy_format2(txn, &store, &mut report, &mut progress);
        store.shutdown();
        copied.map_err(|e| unchanged(e.to_string()))?;
        store
    };
    let verified = super::verify::verify(&store).map_err(|e| e.to_string())?;
    if from == 4 {
        report.rollups_only = true;
        report.pipelines = verified.pipelines as usize;
        report.finished_runs = verified.task_runs;
        progress(report.finished_runs);
    }
    if !verified.is_consistent() {
        return Err(format!(
            "the upgraded database does not verify ({} differences, first: {}); {} is unchanged",
            verified.difference_count,
            verified.differences.first().map_or("", String::as_str),
            path.display()
        ));
    }
    drop(store);
    // Written run by run, its tables are as loosely packed as an import's: repack it the same way.
    super::repack::repack(&partial)?;
    drop(old);
    report.old_file = data_dir.join(format!("runledger.format{from}.redb"));
    swap_in(data_dir, &partial, &report.old_file)
        .map_err(|e| format!("cannot put the upgraded database in place: {e}"))?;
    Ok(report)
}

/// The old file, opened read-only so that it stays byte for byte as it was; a file that was not
/// closed cleanly cannot be, and is opened writable once so that redb recovers it.
fn open_old(path: &Path) -> Result<Box<dyn ReadableDatabase>, redb::DatabaseError> {
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => Ok(Box::new(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        }
        Err(_) => Ok(Box::new(redb::Database::open(path)?)),
    }
}

/// The format marker of a runledger database.
fn format_of(txn: &redb::ReadTransaction) -> Result<u32, String> {
    let meta = txn
        .open_table(tables::META)
        .map_err(|_| "it is not a runledger database (it has no meta table)".to_string())?;
    let bytes = meta
        .get(tables::meta::FORMAT)
        .map_err(|e| e.to_string())?
        .ok_or("it has no format marker")?;
    let bytes: [u8; 4] = bytes
        .value()
        .try_into()
        .map_err(|_| "its format marker is damaged".to_string())?;
    Ok(u32::from_le_bytes(bytes))
}

/// Hard-links the old file aside, then renames the new one over it, syncing the directory after
/// each step.
fn swap_in(data_dir: &Path, partial: &Path, old_file: &Path) -> std::io::Result<()> {
    let path = data_dir.join(DATABASE_FILE);
    if old_file.exists() {
        // Left by an attempt that stopped before its rename: the database is still this file.
        std::fs::remove_file(old_file)?;
    }
    std::fs::hard_link(&path, old_file)?;
    sync_dir(data_dir)?;
    std::fs::rename(partial.join(DATABASE_FILE), &path)?;
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(partial)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Applies one operation; a rejection is an error naming what was refused.
fn apply(store: &Store, op: WriteOp, what: &str) -> Result<()> {
    match store.apply_now(std::slice::from_ref(&op))?.pop() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(Error::Internal(format!("{what} was refused: {e}"))),
        None => Err(Error::Internal(format!("{what} was not applied"))),
    }
}

fn copy_format2(
    old: redb::ReadTransaction,
    store: &Store,
    report: &mut UpgradeReport,
    progress: &mut impl FnMut(u64),
) -> Result<()> {
    let source = format2::Format2::open(old)?;
    let now = Timestamp::now();
    for (org, record) in source.organizations()? {
        apply(
            store,
            WriteOp::CreateOrganization { org, record },
            &format!("organization {org}"),
        )?;
        report.organizations += 1;
    }
    let mut live_clients = Vec::new();
    for (client_id, record) in source.clients()? {
        if record.revoked_at.is_none() {
            live_clients.push(client_id.clone());
        }
        let what = format!("client {client_id}");
        apply(store, WriteOp::CreateClient { client_id, record }, &what)?;
        report.clients += 1;
    }
    // Tokens carry over as they are, expired ones too: the server's hourly purge removes those,
    // so the upgraded tables do not depend on when the upgrade ran.
    let mut tokens: BTreeMap<String, Vec<([u8; 32], TokenRecord)>> = BTreeMap::new();
    for (hash, token) in source.tokens()? {
        if live_clients.contains(&token.client_id) {
            tokens
                .entry(token.client_id.clone())
                .or_default()
                .push((hash, token));
        }
    }
    for (client_id, tokens) in tokens {
        report.tokens += tokens.len();
        let what = format!("the tokens of client {client_id}");
        let request = IssueRequest {
            client_id,
            tokens,
            redeem: None,
            at: now,
        };
        apply(store, WriteOp::IssueTokens(request), &what)?;
    }
    let pipelines = source.pipelines()?;
    report.pipelines = pipelines.len();
    let registrations: Vec<WriteOp> = pipelines.into_iter().map(WriteOp::Register).collect();
    for outcome in store.apply_now(&registrations)? {
        outcome.map_err(|e| Error::Internal(format!("a pipeline was refused: {e}")))?;
    }
    source.finished_runs(RUNS_PER_TRANSACTION, |runs| {
        report.finished_runs += runs.len() as u64;
        apply_runs(store, runs, now, report)?;
        progress(report.finished_runs);
        Ok(())
    })?;
    let unfinished = source.unfinished_runs()?;
    report.unfinished_runs = unfinished.len();
    let restore = WriteOp::Restore {
        unfinished,
        next_serial: source.next_serial()?,
    };
    apply(store, restore, "the unfinished task runs")
}

/// Applies a chunk of runs in one transaction; when the chunk is refused (the old format let
/// through a run this one refuses), applies them one by one and counts those refused.
fn apply_runs(
    store: &Store,
    runs: Vec<TaskRun>,
    at: Timestamp,
    report: &mut UpgradeReport,
) -> Result<()> {
    let op = WriteOp::Report { runs, at };
    if let Some(Ok(_)) = store.apply_now(std::slice::from_ref(&op))?.pop() {
        return Ok(());
    }
    let WriteOp::Report { runs, .. } = op else {
        unreachable!("built above")
    };
    let singles: Vec<WriteOp> = runs
        .into_iter()
        .map(|run| WriteOp::Report {
            runs: vec![run],
            at,
        })
        .collect();
    for (op, outcome) in singles.iter().zip(store.apply_now(&singles)?) {
        if let (Err(e), WriteOp::Report { runs, .. }) = (outcome, op) {
            report.refused_count += 1;
            if report.refused.len() < 20 {
                report
                    .refused
                    .push(format!("task run {}: {e}", runs[0].task_run));
            }
        }
    }
    Ok(())
}
