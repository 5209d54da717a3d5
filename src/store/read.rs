//! Queries on one consistent snapshot (a redb read transaction). Every query costs a bounded
//! number of tree reads: stats a handful of rollup lookups (see [`super::rollup`]), aggregated
//! stats one lookup per year or month, last run one lookup, a log page one range of at most
//! `limit` entries.

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};
use uuid::Uuid;

use super::cache::EntityCache;
use super::credentials::{ClientRecord, OrgRecord, TokenRecord};
use super::records::{
    EntityDetail, EntityKey, LastRunRecord, PipelineRunAgg, RunRecord, RunRef, TaskRunHome,
};
use super::rollup::{Series, Source, aggregated, last_run_at_or_before, range_summary};
use super::tables::{
    self, ENTITIES, ENTITY_KEYS, EntityId, INDEX_KEY_LEN, LAST_RUNS, OrgIndex, PIPELINE_RUNS,
    ROLLUPS, RUN_LOG, YEAR_ROLLUPS, pipeline_name_key, pipeline_task_key, run_key, scoped_key,
    split_run_key,
};
use crate::error::{Error, Result};
use crate::model::{
    BucketCount, BucketStats, EntityKind, Fill, LastRun, LogCursor, LogEntry, LogPage, OrgId,
    PendingTaskRun, PipelineId, RunningPage, RunningTaskRun, Stats, TaskId, TaskRunId, TimeRange,
    WindowStats,
};
use crate::time::{Level, MAX_SECOND, MICROS_PER_SECOND, MIN_SECOND, Period, Timestamp};

/// The stored bytes of the task runs one page of logs holds at most (past one entry): outputs
/// are sealed as they came, up to a gRPC message's 16 MiB, so a page of a hundred large ones
/// would otherwise be gigabytes.
pub const MAX_LOG_PAGE_BYTES: usize = 4 << 20;

/// See [`Reader::prune_preview`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrunePreview {
    pub task_runs: u64,
    pub newest: Option<Timestamp>,
}

/// A snapshot of the database to answer queries from.
pub struct Reader<'a> {
    txn: ReadTransaction,
    cache: &'a EntityCache,
}

impl<'a> Reader<'a> {
    pub(super) fn new(txn: ReadTransaction, cache: &'a EntityCache) -> Reader<'a> {
        Reader { txn, cache }
    }

    /// The organization's namespace, if it has any pipeline yet.
    pub fn org_index(&self, org: OrgId) -> Result<Option<OrgIndex>> {
        if let Some(index) = self.cache.org_index(org) {
            return Ok(Some(index));
        }
        let table = self.txn.open_table(tables::ORG_INDEX)?;
        let Some(index) = table.get(org.as_bytes())?.map(|v| OrgIndex(v.value())) else {
            return Ok(None);
        };
        self.cache.insert_org(org, index);
        Ok(Some(index))
    }

    /// The pipeline or task with this UUID in the organization's namespace, if it exists.
    pub fn entity(&self, org: OrgId, uuid: Uuid) -> Result<Option<EntityKey>> {
        let Some(org) = self.org_index(org)? else {
            return Ok(None);
        };
        if let Some(key) = self.cache.get(org, &uuid) {
            return Ok(Some(key));
        }
        let table = self.txn.open_table(ENTITY_KEYS)?;
        let Some(bytes) = table.get(&scoped_key(org, uuid.as_bytes()))? else {
            return Ok(None);
        };
        let key = EntityKey::decode(bytes.value())?;
        self.cache.insert(uuid, key);
        Ok(Some(key))
    }

    /// The key of the entity behind an id.
    pub fn entity_by_id(&self, id: EntityId) -> Result<EntityKey> {
        let detail = self.detail(id)?;
        let table = self.txn.open_table(ENTITY_KEYS)?;
        let bytes = table
            .get(&scoped_key(detail.org_index, detail.uuid.as_bytes()))?
            .ok_or_else(|| Error::Internal(format!("entity {} has no key", id.0)))?;
        EntityKey::decode(bytes.value())
    }

    /// The details (name, type) of an entity.
    pub fn detail(&self, id: EntityId) -> Result<EntityDetail> {
        let table = self.txn.open_table(ENTITIES)?;
        let bytes = table
            .get(id.0)?
            .ok_or_else(|| Error::Internal(format!("entity {} has no details", id.0)))?;
        EntityDetail::decode(bytes.value())
    }

    /// The UUID behind an entity id.
    pub fn entity_uuid(&self, id: EntityId) -> Result<Uuid> {
        if let Some(uuid) = self.cache.uuid(id) {
            return Ok(uuid);
        }
        let uuid = self.detail(id)?.uuid;
        self.cache.insert_uuid(id, uuid);
        Ok(uuid)
    }

    /// The tasks of a pipeline, with their details.
    pub fn pipeline_tasks(&self, pipeline: EntityId) -> Result<Vec<(EntityId, EntityDetail)>> {
        let table = self.txn.open_table(tables::PIPELINE_TASKS)?;
        let low = pipeline_task_key(pipeline, EntityId(0));
        let high = pipeline_task_key(pipeline, EntityId(u32::MAX));
        let mut tasks = Vec::new();
        for entry in table.range::<&[u8; 8]>(&low..=&high)? {
            let (key, _) = entry?;
            let id = EntityId(u32::from_be_bytes(
                key.value()[4..].try_into().expect("4 bytes"),
            ));
            tasks.push((id, self.detail(id)?));
        }
        Ok(tasks)
    }

    /// Answers a rollup question on this snapshot's tables.
    fn with_rollups<T>(
        &self,
        answer: impl FnOnce(
            &Source<
                '_,
                ReadOnlyTable<&'static [u8; tables::YEAR_KEY_LEN], &'static [u8]>,
                ReadOnlyTable<&'static [u8; tables::ROLLUP_KEY_LEN], &'static [u8]>,
                ReadOnlyTable<&'static [u8; tables::RUN_KEY_LEN], &'static [u8]>,
                ReadOnlyTable<u64, &'static [u8]>,
            >,
        ) -> Result<T>,
    ) -> Result<T> {
        let years = self.txn.open_table(YEAR_ROLLUPS)?;
        let rollups = self.txn.open_table(ROLLUPS)?;
        let run_log = self.txn.open_table(RUN_LOG)?;
        let runs = self.txn.open_table(PIPELINE_RUNS)?;
        answer(&Source {
            years: &years,
            rollups: &rollups,
            run_log: &run_log,
            runs: &runs,
            cut: self.retention_cut()?,
            memo: Default::default(),
        })
    }

    /// The retention cut: runs executed before this second were pruned (or are being).
    pub fn retention_cut(&self) -> Result<Option<i64>> {
        super::batch::read_cut(
            &self.txn.open_table(tables::META)?,
            tables::meta::RETENTION_CUT,
        )
    }

    /// Cluster mode: the last stream sequence this database applied (0: none).
    pub fn applied_seq(&self) -> Result<u64> {
        Ok(super::batch::read_cut(
            &self.txn.open_table(tables::META)?,
            tables::meta::APPLIED_SEQ,
        )?
        .map_or(0, |seq| seq as u64))
    }

    /// Tally of the runs in a range and the last run at or before its end.
    pub fn stats(&self, entity: &EntityKey, range: TimeRange) -> Result<Stats> {
        let series = series(entity);
        let last = self.last_run_record(entity.id)?;
        self.with_rollups(|source| {
            // The last run is the latest at or before the asked `to`, never after it, even
            // when the tally is counted over whole days.
            let to = range.to();
            let (range, mut approximate) = match source.cut {
                Some(cut) => whole_days_before(range, cut),
                None => (range, false),
            };
            let summary = range_summary(source, &series, range)?;
            let last_run = match last {
                None => None,
                Some(last) if last.executed_at.second() <= to => Some(last.last_run()),
                Some(_) => {
                    let found = last_run_at_or_before(source, &series, to)?
                        .filter(|record| record.executed_at.second() <= to);
                    if found.is_none()
                        && let Some(cut) = source.cut
                    {
                        // The last run before the cut is not kept: there is one if any run
                        // was counted before the cut.
                        let before = TimeRange::new(MIN_SECOND, (cut - 1).min(to));
                        approximate |= match before {
                            Some(before) => {
                                !range_summary(source, &series, before)?.tally.is_empty()
                            }
                            None => false,
                        };
                    }
                    found.map(|record| record.last_run())
                }
            };
            Ok(Stats {
                tally: summary.tally,
                percentiles: summary.percentiles,
                last_run,
                approximate,
            })
        })
    }

    /// For each entity, its runs in the same ranges and its last run: all asked of one
    /// source with its tables opened once (so ranges that end at the same second share what
    /// they read there), as the overview asks.
    pub fn summaries(
        &self,
        entities: &[EntityKey],
        ranges: &[TimeRange],
    ) -> Result<Vec<(Vec<WindowStats>, Option<LastRun>)>> {
        let last_runs = self.txn.open_table(LAST_RUNS)?;
        self.with_rollups(|source| {
            entities
                .iter()
                .map(|entity| {
                    let series = series(entity);
                    let summaries = ranges
                        .iter()
                        .map(|range| range_summary(source, &series, *range))
                        .collect::<Result<Vec<_>>>()?;
                    let last = last_runs
                        .get(entity.id.0)?
                        .map(|bytes| LastRunRecord::decode(bytes.value()))
                        .transpose()?
                        .map(|record| record.last_run());
                    Ok((summaries, last))
                })
                .collect()
        })
    }

    /// Up to `limit` pipelines of an organization in the overview's order (by name, unnamed
    /// last, then UUID), strictly after the pipeline `after` (its name and UUID) when given;
    /// and whether more follow.
    pub fn pipelines_by_name(
        &self,
        org: OrgIndex,
        after: Option<&(String, PipelineId)>,
        limit: usize,
    ) -> Result<(Vec<ListedPipeline>, bool)> {
        let table = self.txn.open_table(tables::PIPELINE_NAMES)?;
        use std::ops::Bound;
        let first = org.0.to_be_bytes();
        let next_org = org.0.checked_add(1).map(u32::to_be_bytes);
        let from =
            after.map(|(name, pipeline)| pipeline_name_key(org, name, pipeline.0.as_bytes()));
        let low = match &from {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Included(first.as_slice()),
        };
        let high = match &next_org {
            Some(next) => Bound::Excluded(next.as_slice()),
            None => Bound::Unbounded,
        };
        let range = table.range::<&[u8]>((low, high))?;
        let mut found = Vec::with_capacity(limit.min(1024));
        for entry in range {
            let (key, id) = entry?;
            if found.len() == limit {
                return Ok((found, true));
            }
            let key = key.value();
            let bad = || Error::Internal("corrupt pipeline name key in the database".into());
            let (head, uuid) = key
                .split_at_checked(key.len().saturating_sub(16))
                .ok_or_else(bad)?;
            let name = head.get(5..head.len().saturating_sub(1)).ok_or_else(bad)?;
            found.push((
                PipelineId(Uuid::from_bytes(uuid.try_into().map_err(|_| bad())?)),
                String::from_utf8(name.to_vec()).map_err(|_| bad())?,
                EntityId(id.value()),
            ));
        }
        Ok((found, false))
    }

    /// Per-bucket tallies of `n` consecutive buckets from the one containing `date_from`, oldest
    /// first; empty buckets are left out, or with [`Fill::Zero`] listed with an empty tally.
    pub fn aggregated(
        &self,
        entity: &EntityKey,
        period: Period,
        date_from: i64,
        n: BucketCount,
        fill: Fill,
    ) -> Result<Vec<BucketStats>> {
        let level = period.level();
        let start = level.bucket_start(date_from);
        let end = advance(level, start, n.get())?;
        let series = series(entity);
        let buckets =
            self.with_rollups(|source| aggregated(source, &series, period, start, end))?;
        let starts = match fill {
            Fill::Sparse => buckets,
            Fill::Zero => {
                let mut stored = buckets.into_iter().peekable();
                let mut all = Vec::with_capacity(n.get() as usize);
                let mut bucket = start;
                while bucket < end {
                    all.push(stored.next_if(|(s, ..)| *s == bucket).unwrap_or((
                        bucket,
                        crate::model::Tally::default(),
                        None,
                    )));
                    bucket = level.next_bucket(bucket);
                }
                all
            }
        };
        Ok(starts
            .into_iter()
            .map(|(start, tally, percentiles)| BucketStats {
                period,
                start,
                last_second: level.next_bucket(start) - 1,
                tally,
                percentiles,
            })
            .collect())
    }

    /// What pruning before `cut` (a second) would delete, counted before it does: the finished
    /// task runs executed between the current retention cut and it (from every task's rollups,
    /// a few lookups each), and when the newest stored run was executed.
    pub fn prune_preview(&self, cut: i64) -> Result<PrunePreview> {
        let from = self.retention_cut()?.unwrap_or(MIN_SECOND);
        let mut preview = PrunePreview::default();
        if let Some(range) = TimeRange::new(from, cut - 1) {
            for entry in self.txn.open_table(ENTITY_KEYS)?.iter()? {
                let key = EntityKey::decode(entry?.1.value())?;
                if key.kind == EntityKind::Task {
                    let tally = self.stats(&key, range)?.tally;
                    preview.task_runs += tally.successes + tally.failures;
                }
            }
        }
        for entry in self.txn.open_table(LAST_RUNS)?.iter()? {
            let last = LastRunRecord::decode(entry?.1.value())?.last_run();
            preview.newest = preview.newest.max(Some(last.executed_at));
        }
        Ok(preview)
    }

    /// The latest finished run, if any.
    pub fn last_run(&self, entity: &EntityKey) -> Result<Option<LastRun>> {
        Ok(self.last_run_record(entity.id)?.map(|r| r.last_run()))
    }

    fn last_run_record(&self, id: EntityId) -> Result<Option<LastRunRecord>> {
        let table = self.txn.open_table(LAST_RUNS)?;
        table
            .get(id.0)?
            .map(|bytes| LastRunRecord::decode(bytes.value()))
            .transpose()
    }

    /// A page of a pipeline's finished task runs in a range, newest first, strictly older than
    /// `after` when given.
    pub fn logs(
        &self,
        pipeline: &EntityKey,
        range: TimeRange,
        after: Option<LogCursor>,
        limit: usize,
    ) -> Result<LogPage> {
        let run_log = self.txn.open_table(RUN_LOG)?;
        let runs = self.txn.open_table(PIPELINE_RUNS)?;
        let low = run_key(pipeline.id, range.from() * MICROS_PER_SECOND, &[0; 16]);
        let mut high = run_key(pipeline.id, range.end_micros_exclusive(), &[0; 16]);
        if let Some(cursor) = after {
            high = high.min(run_key(
                pipeline.id,
                cursor.executed_at.micros(),
                cursor.task_run.as_bytes(),
            ));
        }
        let mut entries = Vec::with_capacity(limit.min(1_024));
        let mut bytes = 0;
        let mut more = false;
        if low < high {
            for entry in run_log
                .range::<&[u8; tables::RUN_KEY_LEN]>(&low..&high)?
                .rev()
            {
                // A page holds `limit` entries, or fewer when their outputs and errors already
                // fill [`MAX_LOG_PAGE_BYTES`] (it always holds one).
                if entries.len() == limit || bytes >= MAX_LOG_PAGE_BYTES {
                    more = true;
                    break;
                }
                let (key, value) = entry?;
                bytes += value.value().len();
                entries.push(self.log_entry(&runs, key.value(), value.value())?);
            }
        }
        let next = if more {
            entries.last().map(|entry: &LogEntry| LogCursor {
                executed_at: entry.executed_at,
                task_run: entry.task_run,
            })
        } else {
            None
        };
        Ok(LogPage { entries, next })
    }

    /// A page of a pipeline's running task runs, newest start first, after `after`.
    pub fn running(
        &self,
        pipeline: &EntityKey,
        after: Option<LogCursor>,
        limit: usize,
    ) -> Result<RunningPage> {
        let running = self.txn.open_table(tables::RUNNING)?;
        let homes = self.txn.open_table(tables::TASK_INDEX)?;
        let low = run_key(pipeline.id, i64::MIN, &[0; 16]);
        let high = match after {
            Some(cursor) => run_key(
                pipeline.id,
                cursor.executed_at.micros(),
                cursor.task_run.as_bytes(),
            ),
            // Past every instant a run can start at.
            None => run_key(pipeline.id, i64::MAX, &[0xff; 16]),
        };
        let mut entries = Vec::with_capacity(limit.min(1_024));
        let mut more = false;
        for entry in running
            .range::<&[u8; tables::RUN_KEY_LEN]>(&low..&high)?
            .rev()
        {
            if entries.len() == limit {
                more = true;
                break;
            }
            let (key, home_key) = entry?;
            let (_, micros, task_run) = split_run_key(key.value());
            let home = homes
                .get(home_key.value())?
                .ok_or_else(|| super::records::corrupt("running task run"))?;
            let TaskRunHome::Unfinished {
                updated_at, record, ..
            } = TaskRunHome::decode(home.value())?
            else {
                return Err(super::records::corrupt("running task run"));
            };
            let RunRef::Uuid(pipeline_run) = record.pipeline_run else {
                return Err(super::records::corrupt("running task run"));
            };
            entries.push(RunningTaskRun {
                task_run: TaskRunId(Uuid::from_bytes(task_run)),
                task: TaskId(self.entity_uuid(record.task)?),
                task_type: record.task_type,
                pipeline_run,
                started_at: Timestamp::from_micros(micros)
                    .ok_or_else(|| super::records::corrupt("running task run"))?,
                updated_at,
            });
        }
        let next = if more {
            entries.last().map(|entry| LogCursor {
                executed_at: entry.started_at,
                task_run: entry.task_run,
            })
        } else {
            None
        };
        Ok(RunningPage { entries, next })
    }

    fn log_entry(
        &self,
        runs: &ReadOnlyTable<u64, &'static [u8]>,
        key: &[u8; tables::RUN_KEY_LEN],
        value: &[u8],
    ) -> Result<LogEntry> {
        let (_, micros, task_run) = split_run_key(key);
        let record = RunRecord::decode(value)?;
        let pipeline_run = match record.pipeline_run {
            RunRef::Uuid(uuid) => uuid,
            RunRef::Id(id) => {
                let bytes = runs
                    .get(id.0)?
                    .ok_or_else(|| super::records::corrupt("pipeline run"))?;
                PipelineRunAgg::decode(bytes.value())?.uuid
            }
        };
        Ok(LogEntry {
            pipeline_run,
            task_run: TaskRunId(Uuid::from_bytes(task_run)),
            task: TaskId(self.entity_uuid(record.task)?),
            task_type: record.task_type,
            is_successful: record.is_successful,
            duration_ms: record.duration_ms,
            output: record.output,
            metric_value: record.metric_value,
            executed_at: Timestamp::from_micros(micros)
                .ok_or_else(|| super::records::corrupt("task run"))?,
            errors: record.errors,
        })
    }

    /// An organization, if it exists.
    pub fn organization(&self, org: OrgId) -> Result<Option<OrgRecord>> {
        let table = self.txn.open_table(tables::ORGANIZATIONS)?;
        let record = table.get(org.as_bytes())?;
        record
            .map(|bytes| OrgRecord::decode(bytes.value()))
            .transpose()
    }

    /// An organization's alert rules, by rule UUID.
    pub fn alert_rules(&self, org: OrgId) -> Result<Vec<(Uuid, crate::alerts::StoredRule)>> {
        let table = self.txn.open_table(tables::ALERT_RULES)?;
        let low = crate::alerts::rule_key(org.0, Uuid::nil());
        let high = crate::alerts::rule_key(org.0, Uuid::max());
        let mut rules = Vec::new();
        for entry in table.range::<&[u8; 32]>(&low..=&high)? {
            let (key, value) = entry?;
            let uuid = Uuid::from_bytes(key.value()[16..].try_into().expect("16 bytes"));
            let stored = crate::alerts::StoredRule::decode(value.value())
                .ok_or_else(|| super::records::corrupt("alert rule"))?;
            rules.push((uuid, stored));
        }
        Ok(rules)
    }

    /// One alert rule of an organization.
    pub fn alert_rule(&self, org: OrgId, rule: Uuid) -> Result<Option<crate::alerts::StoredRule>> {
        let table = self.txn.open_table(tables::ALERT_RULES)?;
        match table.get(&crate::alerts::rule_key(org.0, rule))? {
            Some(bytes) => Ok(Some(
                crate::alerts::StoredRule::decode(bytes.value())
                    .ok_or_else(|| super::records::corrupt("alert rule"))?,
            )),
            None => Ok(None),
        }
    }

    /// An organization's alerts newest first, from the one before serial `before` (when given):
    /// at most `limit` that `keep` accepts, and the serial to go on from when more remain.
    pub fn alerts(
        &self,
        org: OrgId,
        before: Option<u64>,
        limit: usize,
        keep: impl Fn(&crate::alerts::AlertRecord) -> bool,
    ) -> Result<AlertPage> {
        use crate::alerts::state::{alert_key, alert_serial};
        let table = self.txn.open_table(tables::ALERTS)?;
        let low = alert_key(org.0, 0);
        let high = alert_key(org.0, before.unwrap_or(u64::MAX));
        let mut found = Vec::new();
        for entry in table.range::<&[u8; 24]>(&low..&high)?.rev() {
            let (key, value) = entry?;
            let serial = alert_serial(key.value());
            if found.len() == limit {
                let next = found.last().map(|(serial, _)| *serial);
                return Ok((found, next));
            }
            let record = crate::alerts::AlertRecord::decode(value.value())
                .ok_or_else(|| super::records::corrupt("alert"))?;
            if keep(&record) {
                found.push((serial, record));
            }
        }
        Ok((found, None))
    }

    /// The outbox's entries in serial order, at most `limit`.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u64, crate::alerts::OutboxEntry)>> {
        let table = self.txn.open_table(tables::OUTBOX)?;
        let mut entries = Vec::new();
        for entry in table.iter()?.take(limit) {
            let (serial, value) = entry?;
            let entry = crate::alerts::OutboxEntry::decode(value.value())
                .ok_or_else(|| super::records::corrupt("outbox entry"))?;
            entries.push((serial.value(), entry));
        }
        Ok(entries)
    }

    /// Whether a token expired before `cutoff` (and is still stored).
    pub fn has_tokens_expired_before(&self, cutoff: crate::time::Timestamp) -> Result<bool> {
        let end = super::credentials::expiry_key(cutoff, &[0; 32]);
        let expiry = self.txn.open_table(tables::TOKEN_EXPIRY)?;
        Ok(expiry.range::<&[u8; 40]>(..&end)?.next().is_some())
    }

    /// How many transitions wait in the outbox.
    pub fn outbox_len(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        Ok(self.txn.open_table(tables::OUTBOX)?.len()?)
    }

    /// The adoption into a cluster this database continues, if it was adopted (see
    /// `runledger cluster adopt`).
    pub fn baseline(&self) -> Result<Option<Uuid>> {
        self.meta_uuid(tables::meta::BASELINE)
    }

    /// Cluster mode: the cluster whose stream this database applies, once it applied one.
    pub fn cluster_id(&self) -> Result<Option<Uuid>> {
        self.meta_uuid(tables::meta::CLUSTER_ID)
    }

    /// Cluster mode: the stream sequences skipped for good, with why, oldest first.
    pub fn skipped(&self) -> Result<Vec<(u64, String)>> {
        let table = self.txn.open_table(tables::SKIPPED)?;
        let mut skipped = Vec::new();
        for entry in table.iter()? {
            let (seq, why) = entry?;
            skipped.push((seq.value(), why.value().to_string()));
        }
        Ok(skipped)
    }

    fn meta_uuid(&self, name: &str) -> Result<Option<Uuid>> {
        let meta = self.txn.open_table(tables::META)?;
        let Some(bytes) = meta.get(name)? else {
            return Ok(None);
        };
        let bytes: [u8; 16] = bytes
            .value()
            .try_into()
            .map_err(|_| super::records::corrupt("meta"))?;
        Ok(Some(Uuid::from_bytes(bytes)))
    }

    /// Every organization with its record, in UUID order.
    pub fn organizations(&self) -> Result<Vec<(OrgId, OrgRecord)>> {
        let table = self.txn.open_table(tables::ORGANIZATIONS)?;
        let mut organizations = Vec::new();
        for entry in table.iter()? {
            let (org, record) = entry?;
            organizations.push((
                OrgId(Uuid::from_bytes(*org.value())),
                OrgRecord::decode(record.value())?,
            ));
        }
        Ok(organizations)
    }

    /// Some organization with its record, if there is any.
    pub fn any_organization(&self) -> Result<Option<(OrgId, OrgRecord)>> {
        let table = self.txn.open_table(tables::ORGANIZATIONS)?;
        let Some(entry) = table.first()? else {
            return Ok(None);
        };
        let (org, record) = entry;
        Ok(Some((
            OrgId(Uuid::from_bytes(*org.value())),
            OrgRecord::decode(record.value())?,
        )))
    }

    /// An OAuth client, if it exists.
    pub fn client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let table = self.txn.open_table(tables::CLIENTS)?;
        let record = table.get(client_id)?;
        record
            .map(|bytes| ClientRecord::decode(bytes.value()))
            .transpose()
    }

    /// Every OAuth client, by id.
    pub fn clients(&self) -> Result<Vec<(String, ClientRecord)>> {
        let table = self.txn.open_table(tables::CLIENTS)?;
        let mut clients = Vec::new();
        for entry in table.iter()? {
            let (id, record) = entry?;
            clients.push((
                id.value().to_string(),
                ClientRecord::decode(record.value())?,
            ));
        }
        Ok(clients)
    }

    /// The grant behind a token hash, if the token was issued and not purged.
    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        let table = self.txn.open_table(tables::TOKENS)?;
        let record = table.get(hash)?;
        record
            .map(|bytes| TokenRecord::decode(bytes.value()))
            .transpose()
    }

    /// The task runs waiting for an executor, oldest first.
    pub fn pending_runs(&self) -> Result<Vec<PendingTaskRun>> {
        let queue = self.txn.open_table(tables::PENDING)?;
        let homes = self.txn.open_table(tables::TASK_INDEX)?;
        let mut runs = Vec::new();
        for entry in queue.iter()? {
            let (serial, queued) = entry?;
            let queued = queued.value();
            let key: [u8; INDEX_KEY_LEN] = queued[..INDEX_KEY_LEN].try_into().expect("index key");
            let (_, _, task_run) = tables::split_index_key(&key);
            let organization = OrgId(Uuid::from_bytes(
                queued[INDEX_KEY_LEN..].try_into().expect("16 bytes"),
            ));
            let Some(home) = homes.get(&key)? else {
                continue;
            };
            if let TaskRunHome::Unfinished {
                pipeline,
                created_at,
                record,
                ..
            } = TaskRunHome::decode(home.value())?
            {
                let RunRef::Uuid(pipeline_run) = record.pipeline_run else {
                    return Err(super::records::corrupt("pending task run"));
                };
                runs.push(PendingTaskRun {
                    serial: serial.value(),
                    task_run: TaskRunId(Uuid::from_bytes(task_run)),
                    pipeline_run,
                    pipeline: PipelineId(self.entity_uuid(pipeline)?),
                    task: TaskId(self.entity_uuid(record.task)?),
                    task_type: record.task_type,
                    organization,
                    created_at,
                });
            }
        }
        Ok(runs)
    }

    /// Direct access to the snapshot's tables, for verification and tests.
    pub fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        definition: redb::TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>> {
        Ok(self.txn.open_table(definition)?)
    }
}

/// The start of the bucket `n` buckets after `start`, capped just past the year 9999.
/// The end of `n` buckets from `start`: refused when they run past the last second there is
/// (9999-12-31 23:59:59), naming the field at fault.
fn advance(level: Level, start: i64, n: u32) -> Result<i64> {
    let mut end = start;
    for done in 0..n {
        end = level.next_bucket(end);
        if end - 1 > MAX_SECOND {
            return Err(match done {
                0 => Error::invalid(
                    "date_from",
                    format!(
                        "the bucket holding {} ends after 9999-12-31 23:59:59, the last instant answered",
                        crate::time::format_datetime(start)
                    ),
                ),
                _ => Error::invalid(
                    "n",
                    format!(
                        "{n} buckets from {} run past 9999-12-31 23:59:59, the last instant answered; at most {done} fit",
                        crate::time::format_datetime(start)
                    ),
                ),
            });
        }
    }
    Ok(end)
}

/// A range with each edge that falls before the retention cut widened to its whole day (the
/// finest resolution kept there), and whether that changed it.
fn whole_days_before(range: TimeRange, cut: i64) -> (TimeRange, bool) {
    let (mut from, mut to) = (range.from(), range.to());
    if from < cut {
        from = Level::Day.bucket_start(from);
    }
    if to < cut {
        to = Level::Day.next_bucket(Level::Day.bucket_start(to)) - 1;
    }
    let widened = TimeRange::new(from, to).expect("widening keeps from <= to");
    (widened, widened != range)
}

/// A pipeline as the overview lists it: UUID, name (empty without one), id.
pub type ListedPipeline = (PipelineId, String, EntityId);

fn series(entity: &EntityKey) -> Series {
    Series {
        id: entity.id,
        kind: entity.kind,
        pipeline: entity.pipeline,
    }
}

/// A page of alerts by serial, newest first, and the serial to go on from when more remain.
pub type AlertPage = (Vec<(u64, crate::alerts::AlertRecord)>, Option<u64>);
