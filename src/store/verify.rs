//! Recomputes every derived record (rollups, pipeline-run aggregates and members, last runs, the
//! UUID indexes and their filters) from the raw finished task runs in `run_log`, and reports
//! every difference. Works one pipeline at a time on one snapshot, so memory grows with the
//! largest pipeline, not the database.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata};
use uuid::Uuid;

use super::Store;
use super::bloom::key_hash;
use super::index::Filters;
use super::records::{EntityKey, LastRunRecord, PipelineRunAgg, RunRecord, RunRef, TaskRunHome};
use super::rollup::{self, BucketRecord, Part, STORED};
use super::tables::{
    self, EntityId, INDEX_KEY_LEN, IndexKind, LAST_RUN_LEN, MEMBER_KEY_LEN, ROLLUP_KEY_LEN, RunId,
    YEAR_KEY_LEN, member_key, member_key_micros, rollup_key, split_index_key, split_run_key,
    year_key,
};
use crate::error::Result;
use crate::model::{RunState, Tally};
use crate::time::{Level, Timestamp, format_datetime};

/// At most this many differences are described; the rest are only counted.
const DESCRIBED: usize = 50;

/// What verification found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub pipelines: u64,
    pub task_runs: u64,
    pub pipeline_runs: u64,
    pub run_members: u64,
    pub rollup_entries: u64,
    pub last_runs: u64,
    /// How many differences there are in all.
    pub difference_count: u64,
    /// The first differences, described.
    pub differences: Vec<String>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.difference_count == 0
    }

    fn differ(&mut self, description: impl FnOnce() -> String) {
        self.difference_count += 1;
        if self.differences.len() < DESCRIBED {
            self.differences.push(description());
        }
    }
}

/// The tables a pipeline's recomputation is compared with.
struct Stored<'r> {
    reader: &'r super::Reader<'r>,
    years: ReadOnlyTable<&'static [u8; YEAR_KEY_LEN], &'static [u8]>,
    rollups: ReadOnlyTable<&'static [u8; ROLLUP_KEY_LEN], &'static [u8]>,
    pipeline_runs: ReadOnlyTable<u64, &'static [u8]>,
    pipeline_index: ReadOnlyTable<&'static [u8; INDEX_KEY_LEN], u64>,
    run_members: ReadOnlyTable<&'static [u8; MEMBER_KEY_LEN], u32>,
    last_runs: ReadOnlyTable<u32, &'static [u8; LAST_RUN_LEN]>,
    pipeline_tasks: ReadOnlyTable<&'static [u8; 8], ()>,
    task_index: ReadOnlyTable<&'static [u8; INDEX_KEY_LEN], &'static [u8]>,
    filters: Filters,
    /// The retention cut: what was executed before it is pruned, so only what follows it can
    /// be recomputed (and what pruning kept is checked for shape, not recomputed).
    cut: Option<i64>,
}

impl Stored<'_> {
    /// The index key of a UUID, looked for in every period (not through the filters, which
    /// [`check_filters`] checks on their own).
    fn locate<V: redb::Value + 'static>(
        &self,
        kind: IndexKind,
        table: &ReadOnlyTable<&'static [u8; INDEX_KEY_LEN], V>,
        org: tables::OrgIndex,
        uuid: &[u8; 16],
    ) -> Result<Option<[u8; INDEX_KEY_LEN]>> {
        for period in (0..self.filters.of(kind).periods()).rev() {
            let key = tables::index_key(period, org, uuid);
            if table.get(&key)?.is_some() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}

/// Checks that everything derived agrees with the raw task runs.
pub fn verify(store: &Store) -> Result<VerifyReport> {
    let reader = store.reader()?;
    let run_log = reader.table(tables::RUN_LOG)?;
    let snapshot_filters = Filters::load(
        &reader.table(tables::META)?,
        &reader.table(tables::INDEX_FILTERS)?,
        &reader.table(tables::TASK_INDEX)?,
        &reader.table(tables::PIPELINE_INDEX)?,
    )?;
    let stored = Stored {
        reader: &reader,
        years: reader.table(tables::YEAR_ROLLUPS)?,
        rollups: reader.table(tables::ROLLUPS)?,
        pipeline_runs: reader.table(tables::PIPELINE_RUNS)?,
        pipeline_index: reader.table(tables::PIPELINE_INDEX)?,
        run_members: reader.table(tables::RUN_MEMBERS)?,
        last_runs: reader.table(tables::LAST_RUNS)?,
        pipeline_tasks: reader.table(tables::PIPELINE_TASKS)?,
        task_index: reader.table(tables::TASK_INDEX)?,
        filters: snapshot_filters,
        cut: reader.retention_cut()?,
    };
    let mut report = VerifyReport::default();
    check_filters(&stored, &mut report)?;
    check_kept(&stored, &reader, &mut report)?;
    check_pipeline_names(&reader, &mut report)?;
    check_running(&stored, &mut report)?;
    check_alerts(&reader, &mut report)?;

    let mut current: Option<PipelineWork> = None;
    for entry in run_log.iter()? {
        let (key, value) = entry?;
        let (pipeline, micros, task_run) = split_run_key(key.value());
        if current
            .as_ref()
            .is_none_or(|work| work.pipeline.id != pipeline)
        {
            if let Some(work) = current.take() {
                work.check(&stored, &mut report)?;
            }
            current = Some(PipelineWork::new(reader.entity_by_id(pipeline)?));
        }
        let work = current.as_mut().expect("set above");
        report.task_runs += 1;
        let executed_at =
            Timestamp::from_micros(micros).unwrap_or(Timestamp::from_micros(0).expect("epoch"));
        let name = || Uuid::from_bytes(task_run);
        let record = match RunRecord::decode(value.value()) {
            Ok(record) => record,
            Err(_) => {
                report.differ(|| format!("task run {} has an undecodable record", name()));
                continue;
            }
        };
        if record.state != RunState::Finished {
            report.differ(|| format!("task run {} is in the run log but not finished", name()));
        }
        let RunRef::Id(run) = record.pipeline_run else {
            report.differ(|| format!("task run {} names its pipeline run by UUID", name()));
            continue;
        };
        let home = stored
            .locate(
                IndexKind::TaskRuns,
                &stored.task_index,
                work.pipeline.org_index,
                &task_run,
            )?
            .map(|key| stored.task_index.get(&key))
            .transpose()?
            .flatten()
            .map(|bytes| TaskRunHome::decode(bytes.value()))
            .transpose()?;
        if home
            != Some(TaskRunHome::Finished {
                pipeline,
                executed_at,
            })
        {
            report.differ(|| {
                format!(
                    "task run {} is not indexed where the run log has it",
                    name()
                )
            });
        }
        work.add(&record, run, executed_at, Uuid::from_bytes(task_run));
    }
    if let Some(work) = current.take() {
        work.check(&stored, &mut report)?;
    }

    // Nothing may exist that no raw run explains.
    let mut finished_homes = 0u64;
    for entry in stored.task_index.iter()? {
        let (_, value) = entry?;
        finished_homes += u64::from(value.value().first() == Some(&0));
    }
    let counts = [
        (
            finished_homes,
            report.task_runs,
            "finished task runs indexed",
        ),
        (
            stored.pipeline_runs.len()?,
            report.pipeline_runs,
            "pipeline-run aggregates",
        ),
        (
            stored.run_members.len()?,
            report.run_members,
            "pipeline-run member entries",
        ),
        (
            rollups_after(&stored, &mut report)?,
            report.rollup_entries,
            "rollup records",
        ),
        (
            stored.last_runs.len()?,
            report.last_runs + last_runs_before(&stored)?,
            "last-run records",
        ),
    ];
    // A pipeline run keeps its id after its last finished task run is withdrawn, so the index
    // may hold more entries than there are aggregates, never fewer.
    let (indexed, explained) = (stored.pipeline_index.len()?, report.pipeline_runs);
    if indexed < explained {
        report.differ(|| {
            format!(
                "{indexed} pipeline-run index entries are stored, the run log explains {explained}"
            )
        });
    }
    for (stored, found, what) in counts {
        if stored != found {
            report.differ(|| format!("{stored} {what} are stored, the run log explains {found}"));
        }
    }
    Ok(report)
}

/// The rollup records of buckets starting at or after the retention cut (all without one);
/// day and hour records before it must be gone.
fn rollups_after(stored: &Stored<'_>, report: &mut VerifyReport) -> Result<u64> {
    let Some(cut) = stored.cut else {
        return Ok(stored.years.len()? + stored.rollups.len()?);
    };
    let mut count = 0;
    for entry in stored.years.iter()? {
        count += u64::from(tables::year_key_start(entry?.0.value()) >= cut);
    }
    for entry in stored.rollups.iter()? {
        let (key, _) = entry?;
        let (tag, start, _) = tables::split_rollup_key(key.value());
        if start >= cut {
            count += 1;
        } else if tag != Level::Month.tag() {
            let bucket = format_datetime(start);
            report.differ(|| {
                format!("a day or hour record of {bucket} is kept before the retention cut")
            });
        }
    }
    Ok(count)
}

/// Last-run records of runs executed before the retention cut (kept, no longer recomputable).
fn last_runs_before(stored: &Stored<'_>) -> Result<u64> {
    let Some(cut) = stored.cut else {
        return Ok(0);
    };
    let mut count = 0;
    for entry in stored.last_runs.iter()? {
        let record = LastRunRecord::decode(entry?.1.value())?;
        count += u64::from(record.executed_at.second() < cut);
    }
    Ok(count)
}

/// Whether a stored pipeline run has task runs executed before the cut.
fn spans_cut(stored: &Stored<'_>, run: RunId, agg: &PipelineRunAgg, cut: i64) -> Result<bool> {
    let cut_micros = cut * crate::time::MICROS_PER_SECOND;
    if let Some(inline) = &agg.members {
        return Ok(inline.as_slice().iter().any(|m| *m < cut_micros));
    }
    let (low, high) = (member_key(run, i64::MIN), member_key(run, cut_micros));
    Ok(stored
        .run_members
        .range::<&[u8; MEMBER_KEY_LEN]>(&low..&high)?
        .next()
        .is_some())
}

/// The rollups before the retention cut are as pruning left them (see `kept`).
fn check_kept(
    stored: &Stored<'_>,
    reader: &super::Reader<'_>,
    report: &mut VerifyReport,
) -> Result<()> {
    let recorded = reader
        .table(tables::META)?
        .get(tables::meta::KEPT_DIGEST)?
        .and_then(|bytes| super::kept::decode(bytes.value()));
    let Some((cut, digest)) = recorded else {
        if stored.cut.is_some() {
            report.differ(|| "a retention cut is recorded without its kept rollups' digest".into());
        }
        return Ok(());
    };
    if super::kept::digest(&stored.years, &stored.rollups, cut)? != digest {
        let cut = format_datetime(cut);
        report.differ(|| {
            format!("the rollups kept before the retention cut {cut} changed since it was made")
        });
    }
    Ok(())
}

/// The list of pipelines by name holds exactly one entry per pipeline, under its current name.
fn check_pipeline_names(reader: &super::Reader<'_>, report: &mut VerifyReport) -> Result<()> {
    let names = reader.table(tables::PIPELINE_NAMES)?;
    let keys = reader.table(tables::ENTITY_KEYS)?;
    let mut pipelines = 0u64;
    for entry in keys.iter()? {
        let (scoped, key) = entry?;
        let key = EntityKey::decode(key.value())?;
        if key.kind != crate::model::EntityKind::Pipeline {
            continue;
        }
        pipelines += 1;
        let uuid: [u8; 16] = scoped.value()[4..].try_into().expect("16 bytes");
        let name = reader.detail(key.id)?.name;
        let listed = names
            .get(tables::pipeline_name_key(key.org_index, &name, &uuid).as_slice())?
            .map(|id| id.value());
        if listed != Some(key.id.0) {
            let uuid = Uuid::from_bytes(uuid);
            report.differ(|| format!("pipeline {uuid} is not listed under its name {name:?}"));
        }
    }
    let listed = names.len()?;
    if listed != pipelines {
        report.differ(|| format!("{listed} pipelines are listed by name, there are {pipelines}"));
    }
    Ok(())
}

/// The running list holds exactly the running task runs, each under its pipeline and start.
/// Alerts agree with themselves: each firing one (in `alert_state`) is stored as firing since
/// then, of its rule and pipeline; every alert stored as firing is listed there; every outbox
/// entry decodes.
fn check_alerts(reader: &super::Reader<'_>, report: &mut VerifyReport) -> Result<()> {
    use crate::alerts::state::{alert_key, alert_serial};
    use crate::alerts::{AlertRecord, AlertState, Firing, OutboxEntry};
    let alerts = reader.table(tables::ALERTS)?;
    let mut firing = std::collections::HashSet::new();
    for entry in reader.table(tables::ALERT_STATE)?.iter()? {
        let (key, value) = entry?;
        let key = key.value();
        let org = Uuid::from_bytes(key[..16].try_into().expect("16 bytes"));
        let Some(state) = Firing::decode(value.value()) else {
            report.differ(|| format!("a firing alert of organization {org} does not decode"));
            continue;
        };
        firing.insert((org, state.serial));
        let record = alerts
            .get(&alert_key(org, state.serial))?
            .and_then(|bytes| AlertRecord::decode(bytes.value()));
        let agrees = record.is_some_and(|alert| {
            alert.state == AlertState::Firing
                && alert.since == state.since
                && alert.rule.as_bytes()[..] == key[16..32]
                && alert.pipeline.as_bytes()[..] == key[32..]
        });
        if !agrees {
            report.differ(|| format!("firing alert #{} is not stored as firing", state.serial));
        }
    }
    for entry in alerts.iter()? {
        let (key, value) = entry?;
        let org = Uuid::from_bytes(key.value()[..16].try_into().expect("16 bytes"));
        let serial = alert_serial(key.value());
        match AlertRecord::decode(value.value()) {
            Some(alert)
                if alert.state == AlertState::Firing && !firing.contains(&(org, serial)) =>
            {
                report.differ(|| format!("alert #{serial} is stored as firing but is not listed"));
            }
            Some(_) => {}
            None => report.differ(|| format!("alert #{serial} does not decode")),
        }
    }
    for entry in reader.table(tables::OUTBOX)?.iter()? {
        let (serial, value) = entry?;
        if OutboxEntry::decode(value.value()).is_none() {
            let serial = serial.value();
            report.differ(|| format!("outbox entry #{serial} does not decode"));
        }
    }
    Ok(())
}

fn check_running(stored: &Stored<'_>, report: &mut VerifyReport) -> Result<()> {
    let running = stored.reader.table(tables::RUNNING)?;
    let mut listed = 0u64;
    for entry in running.iter()? {
        let (key, home_key) = entry?;
        listed += 1;
        let (pipeline, micros, task_run) = split_run_key(key.value());
        let task_run = Uuid::from_bytes(task_run);
        let home = match stored.task_index.get(home_key.value())? {
            Some(home) => TaskRunHome::decode(home.value())?,
            None => {
                report.differ(|| format!("running task run {task_run} has no index entry"));
                continue;
            }
        };
        let agrees = matches!(
            &home,
            TaskRunHome::Unfinished { pipeline: p, started_at: Some(start), record, .. }
                if *p == pipeline && start.micros() == micros && record.state == RunState::Running
        );
        if !agrees || home_key.value()[8..] != *task_run.as_bytes() {
            report.differ(|| format!("running task run {task_run} is not stored as running then"));
        }
    }
    // A home with a start (tag 2) is a running one.
    let mut started = 0u64;
    for entry in stored.task_index.iter()? {
        if entry?.1.value().first() == Some(&2) {
            started += 1;
        }
    }
    if started != listed {
        report.differ(|| format!("{started} task runs are running, {listed} are listed"));
    }
    Ok(())
}

/// Every UUID index key must be in its period's filter, or lookups would miss it.
fn check_filters(stored: &Stored<'_>, report: &mut VerifyReport) -> Result<()> {
    let task_keys = stored
        .task_index
        .iter()?
        .map(|e| e.map(|(k, _)| *k.value()));
    let pipeline_keys = stored
        .pipeline_index
        .iter()?
        .map(|e| e.map(|(k, _)| *k.value()));
    let all: Vec<(
        IndexKind,
        std::result::Result<[u8; INDEX_KEY_LEN], redb::StorageError>,
    )> = task_keys
        .map(|k| (IndexKind::TaskRuns, k))
        .chain(pipeline_keys.map(|k| (IndexKind::PipelineRuns, k)))
        .collect();
    for (kind, key) in all {
        let (period, org, uuid) = split_index_key(&key?);
        let filters = stored.filters.of(kind);
        let hash = key_hash(kind.tag(), org.0, &uuid);
        let present = period < filters.periods() && filters.contains(period, hash);
        if !present {
            report.differ(|| {
                format!(
                    "{} is in period {period} of the {kind:?} index but not in its filter",
                    Uuid::from_bytes(uuid)
                )
            });
        }
    }
    Ok(())
}

/// An expected rollup record: total, weight, parts by index.
type Expected = (Tally, u64, BTreeMap<u16, Part>);

/// The recomputation for one pipeline.
struct PipelineWork {
    pipeline: EntityKey,
    /// Expected records by (entity, level tag, bucket).
    rollups: BTreeMap<(EntityId, u8, i64), Expected>,
    aggs: HashMap<RunId, PipelineRunAgg>,
    /// Finished task runs per pipeline run and executed_at.
    members: BTreeMap<(RunId, i64), u32>,
    last: HashMap<EntityId, LastRunRecord>,
}

impl PipelineWork {
    fn new(pipeline: EntityKey) -> Self {
        PipelineWork {
            pipeline,
            rollups: BTreeMap::new(),
            aggs: HashMap::new(),
            members: BTreeMap::new(),
            last: HashMap::new(),
        }
    }

    fn contribute(&mut self, entity: EntityId, at: Timestamp, tally: Tally, weight: u64) {
        let second = at.second();
        for level in STORED {
            let start = level.bucket_start(second);
            let index = level
                .part_index(start, second)
                .expect("stored levels have parts");
            let (total, total_weight, parts) = self
                .rollups
                .entry((entity, level.tag(), start))
                .or_default();
            *total = *total + tally;
            *total_weight += weight;
            let part = parts.entry(index).or_insert(Part {
                index,
                ..Part::default()
            });
            part.tally = part.tally + tally;
            part.weight += weight;
            if !tally.is_empty() {
                part.durations.add_value(tally.duration_ms);
            }
        }
    }

    fn offer_last(&mut self, entity: EntityId, candidate: LastRunRecord) {
        let last = self.last.entry(entity).or_insert(candidate);
        if candidate.order_key() > last.order_key() {
            *last = candidate;
        }
    }

    fn add(&mut self, record: &RunRecord, run: RunId, at: Timestamp, task_run: Uuid) {
        let tally = Tally::of_run(record.is_successful, u64::from(record.duration_ms));
        self.contribute(record.task, at, tally, 0);
        self.contribute(self.pipeline.id, at, Tally::default(), 1);
        self.offer_last(
            record.task,
            LastRunRecord {
                executed_at: at,
                run: task_run,
                is_successful: record.is_successful,
                duration_ms: u64::from(record.duration_ms),
            },
        );
        let micros = at.micros();
        let agg = self.aggs.entry(run).or_insert(PipelineRunAgg {
            uuid: crate::model::PipelineRunId(Uuid::nil()),
            pipeline: self.pipeline.id,
            finished: 0,
            failed: 0,
            duration_ms: 0,
            latest_micros: micros,
            members: None,
        });
        agg.finished += 1;
        agg.failed += u32::from(!record.is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_add(u64::from(record.duration_ms));
        agg.latest_micros = agg.latest_micros.max(micros);
        *self.members.entry((run, micros)).or_default() += 1;
    }

    /// Checks everything stored of this pipeline against the recomputation.
    fn check(mut self, stored: &Stored<'_>, report: &mut VerifyReport) -> Result<()> {
        report.pipelines += 1;
        self.check_pipeline_runs(stored, report)?;
        self.check_rollups(stored, report)?;
        self.check_last_runs(stored, report)
    }

    /// Each pipeline run's aggregate, index entry and members; counts it for its pipeline.
    fn check_pipeline_runs(
        &mut self,
        stored: &Stored<'_>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let pipeline = self.pipeline.id;
        let mut aggs: Vec<(RunId, PipelineRunAgg)> =
            std::mem::take(&mut self.aggs).into_iter().collect();
        aggs.sort_unstable_by_key(|(run, _)| *run);
        for (run, agg) in &aggs {
            let found = stored
                .pipeline_runs
                .get(run.0)?
                .map(|bytes| PipelineRunAgg::decode(bytes.value()))
                .transpose()?;
            if found.is_none()
                && stored
                    .cut
                    .is_some_and(|cut| agg.latest_micros < cut * crate::time::MICROS_PER_SECOND)
            {
                // Pruning stopped part way (a step deletes a pipeline run that ended before
                // the cut with its first task runs; the next step deletes the rest).
                continue;
            }
            report.pipeline_runs += 1;
            // A pipeline run with task runs on both sides of the retention cut keeps what it
            // summed before it: the stored aggregate is what counts.
            let spanning = match (&found, stored.cut) {
                (Some(found), Some(cut)) => spans_cut(stored, *run, found, cut)?,
                _ => false,
            };
            let totals = |a: &PipelineRunAgg| {
                (
                    a.pipeline,
                    a.finished,
                    a.failed,
                    a.duration_ms,
                    a.latest_micros,
                )
            };
            if !spanning && found.as_ref().map(totals) != Some(totals(agg)) {
                report.differ(|| {
                    format!(
                        "pipeline run #{}: stored {found:?}, recomputed {agg:?}",
                        run.0
                    )
                });
                continue;
            }
            let found = found.expect("checked");
            let agg = if spanning { &found } else { agg };
            let at = Timestamp::from_micros(agg.latest_micros).expect("from a valid timestamp");
            self.contribute(pipeline, at, agg.tally(), 0);
            self.offer_last(
                pipeline,
                LastRunRecord {
                    executed_at: at,
                    run: found.uuid.0,
                    is_successful: agg.failed == 0,
                    duration_ms: agg.duration_ms,
                },
            );
            self.check_indexed(stored, report, *run, &found)?;
            if spanning {
                let (low, high) = (member_key(*run, i64::MIN), member_key(*run, i64::MAX));
                report.run_members += stored
                    .run_members
                    .range::<&[u8; MEMBER_KEY_LEN]>(&low..=&high)?
                    .count() as u64;
                continue;
            }
            self.check_members(stored, report, *run, &found)?;
        }
        Ok(())
    }

    /// A pipeline run's UUID leads back to its id.
    fn check_indexed(
        &self,
        stored: &Stored<'_>,
        report: &mut VerifyReport,
        run: RunId,
        found: &PipelineRunAgg,
    ) -> Result<()> {
        let indexed = stored
            .locate(
                IndexKind::PipelineRuns,
                &stored.pipeline_index,
                self.pipeline.org_index,
                found.uuid.as_bytes(),
            )?
            .map(|key| stored.pipeline_index.get(&key))
            .transpose()?
            .flatten()
            .map(|id| id.value());
        if indexed != Some(run.0) {
            report.differ(|| {
                format!(
                    "pipeline run {} is indexed as {indexed:?}, stored as #{}",
                    found.uuid, run.0
                )
            });
        }
        Ok(())
    }

    /// A pipeline run's members, in its aggregate or (for a large pipeline run) in the index.
    fn check_members(
        &self,
        stored: &Stored<'_>,
        report: &mut VerifyReport,
        run: RunId,
        found: &PipelineRunAgg,
    ) -> Result<()> {
        let expected: Vec<i64> = self
            .members
            .range((run, i64::MIN)..=(run, i64::MAX))
            .flat_map(|((_, micros), count)| std::iter::repeat_n(*micros, *count as usize))
            .collect();
        let (low, high) = (member_key(run, i64::MIN), member_key(run, i64::MAX));
        let (mut indexed, mut entries) = (Vec::new(), 0);
        for entry in stored
            .run_members
            .range::<&[u8; MEMBER_KEY_LEN]>(&low..=&high)?
        {
            let (key, count) = entry?;
            entries += 1;
            indexed.extend(std::iter::repeat_n(
                member_key_micros(key.value()),
                count.value() as usize,
            ));
        }
        let members = match found.members {
            Some(inline) if indexed.is_empty() => inline.as_slice().to_vec(),
            Some(_) => {
                report.differ(|| {
                    format!(
                        "pipeline run {} keeps its members inline and in the index",
                        found.uuid
                    )
                });
                indexed
            }
            None => {
                report.run_members += entries;
                indexed
            }
        };
        if members != expected {
            report.differ(|| {
                format!(
                    "members of pipeline run {}: stored {members:?}, recomputed {expected:?}",
                    found.uuid
                )
            });
        }
        Ok(())
    }

    /// The records that must exist: years always; finer buckets where the pipeline is dense
    /// (and months before the retention cut).
    fn check_rollups(&self, stored: &Stored<'_>, report: &mut VerifyReport) -> Result<()> {
        let pipeline = self.pipeline.id;
        let dense = |work: &PipelineWork, level: Level, start: i64| {
            level == Level::Year
                || work
                    .rollups
                    .get(&(pipeline, level.tag(), start))
                    .is_some_and(|(_, weight, _)| rollup::kept(level, start, *weight, stored.cut))
        };
        let expected: Vec<((EntityId, u8, i64), BucketRecord)> = self
            .rollups
            .iter()
            .filter(|((_, tag, start), _)| {
                let level = STORED
                    .into_iter()
                    .find(|l| l.tag() == *tag)
                    .expect("stored");
                dense(self, level, *start)
            })
            .map(|(key, (total, weight, parts))| {
                let record = BucketRecord {
                    total: *total,
                    weight: *weight,
                    parts: parts.values().filter(|p| !p.is_empty()).cloned().collect(),
                };
                (*key, record)
            })
            .collect();
        for ((entity, tag, start), mut record) in expected {
            let level = STORED.into_iter().find(|l| l.tag() == tag).expect("stored");
            let mut found = match level {
                Level::Year => stored.years.get(&year_key(entity, start))?,
                _ => stored.rollups.get(&rollup_key(level, start, entity))?,
            }
            .map(|bytes| BucketRecord::decode(bytes.value()))
            .transpose()?;
            match stored.cut {
                // Pruning deletes day and hour records before the cut (their absence is
                // checked on its own), even while their runs are still being deleted.
                Some(cut) if start < cut && matches!(level, Level::Day | Level::Hour) => continue,
                Some(cut) if start < cut => {
                    // Straddling the cut: only the parts after it can be recomputed.
                    for record in found.iter_mut().chain(std::iter::once(&mut record)) {
                        record
                            .parts
                            .retain(|p| level.part_span(start, p.index).0 >= cut);
                        (record.total, record.weight) = (Tally::default(), 0);
                    }
                }
                _ => report.rollup_entries += 1,
            }
            if found.as_ref() != Some(&record) {
                let name = stored
                    .reader
                    .entity_uuid(entity)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| format!("#{}", entity.0));
                let bucket = format_datetime(start);
                report.differ(|| format!("rollup of {name} at {level:?} {bucket}: stored {found:?}, recomputed {record:?}"));
            }
        }
        Ok(())
    }

    /// The last run of the pipeline and of each of its tasks, with or without runs.
    fn check_last_runs(&self, stored: &Stored<'_>, report: &mut VerifyReport) -> Result<()> {
        let pipeline = self.pipeline.id;
        let mut entities = vec![pipeline];
        let low = tables::pipeline_task_key(pipeline, EntityId(0));
        let high = tables::pipeline_task_key(pipeline, EntityId(u32::MAX));
        for entry in stored.pipeline_tasks.range::<&[u8; 8]>(&low..=&high)? {
            let (key, _) = entry?;
            entities.push(EntityId(u32::from_be_bytes(
                key.value()[4..].try_into().expect("4 bytes"),
            )));
        }
        for entity in entities {
            let stored_last = stored
                .last_runs
                .get(entity.0)?
                .map(|bytes| LastRunRecord::decode(bytes.value()))
                .transpose()?;
            let expected_last = self.last.get(&entity).copied();
            let pruned_away = |last: &LastRunRecord| {
                stored
                    .cut
                    .is_some_and(|cut| last.executed_at.second() < cut)
            };
            // (Records of runs before the cut are counted apart, see `last_runs_before`.)
            report.last_runs += u64::from(
                expected_last.is_some() && !stored_last.as_ref().is_some_and(pruned_away),
            );
            if expected_last.is_none() && stored_last.as_ref().is_some_and(pruned_away) {
                continue; // its runs were pruned; the last of them stays
            }
            if stored_last != expected_last {
                report.differ(|| {
                    format!(
                        "last run of #{}: stored {stored_last:?}, recomputed {expected_last:?}",
                        entity.0
                    )
                });
            }
        }
        Ok(())
    }
}
