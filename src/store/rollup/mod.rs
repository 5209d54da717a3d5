//! Rollups: per entity (task or pipeline) and calendar bucket, the tally of its runs, with the
//! tallies of the bucket's parts. Stored levels: the year (parts: months), month (parts: days),
//! day (parts: hours) and hour (parts: seconds); weeks and quarters are summed from days and
//! months. A pipeline's records also carry weights: how many of its task runs were executed in
//! the bucket and in each part.
//!
//! Year records always exist. A finer bucket's records (the pipeline's and its tasks') are kept
//! only where the pipeline is dense there: at least [`DENSE`] task runs in the bucket, as its
//! parent's part says. Where it is not, the bucket's runs are read from the pipeline's run log,
//! which then holds fewer than [`DENSE`] of them, so sparse pipelines (most of them) cost a few
//! bytes of rollups per run, and every question still costs a handful of lookups plus, at a
//! range's edges, a read of at most a few dozen log entries. Whether a record exists depends only
//! on what is stored, never on how writes were grouped.
//!
//! Writes note each run's contribution and add them up per touched bucket at the end of the
//! transaction ([`gather`]), then rewrite each touched record once ([`write`]); reads descend from
//! years to the edges ([`read`]), falling back to the run log for sparse buckets ([`scan`]).

mod gather;
mod read;
mod record;
mod scan;
mod write;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use redb::ReadableTable;
use rustc_hash::FxHashMap;

pub use gather::RollupDeltas;
pub use read::{aggregated, last_run_at_or_before, range_summary, range_summary_with};
pub use record::{BucketRecord, Part, RecordView};
pub use write::{FlushTables, PreparedDeltas, materialize, rebuild};

use super::records::PipelineRunAgg;
use super::tables::{
    EntityId, ROLLUP_KEY_LEN, RUN_KEY_LEN, RunId, YEAR_KEY_LEN, rollup_key, year_key,
};
use crate::durations::Histogram;
use crate::error::Result;
use crate::model::EntityKind;
use crate::time::Level;

/// A pipeline's bucket finer than a year keeps records only with at least this many task runs.
pub const DENSE: u64 = 32;

/// Whether the records of the bucket of `level` at `start`, where the pipeline had `weight` task
/// runs, are kept: where the pipeline is dense, and for every month before the retention cut
/// (whose days can no longer be read from the log).
pub fn kept(level: Level, start: i64, weight: u64, cut: Option<i64>) -> bool {
    weight >= DENSE || (level == Level::Month && cut.is_some_and(|cut| start < cut))
}

/// The entity a rollup question is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Series {
    pub id: EntityId,
    pub kind: EntityKind,
    /// The pipeline whose run log holds the entity's runs (and whose weights decide density).
    pub pipeline: EntityId,
}

/// The read side of the tables rollups are computed from.
pub trait YearTable: ReadableTable<&'static [u8; YEAR_KEY_LEN], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8; YEAR_KEY_LEN], &'static [u8]>> YearTable for T {}
pub trait RollupTable: ReadableTable<&'static [u8; ROLLUP_KEY_LEN], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8; ROLLUP_KEY_LEN], &'static [u8]>> RollupTable for T {}
pub trait RunLogTable: ReadableTable<&'static [u8; RUN_KEY_LEN], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8; RUN_KEY_LEN], &'static [u8]>> RunLogTable for T {}
pub trait RunTable: ReadableTable<u64, &'static [u8]> {}
impl<T: ReadableTable<u64, &'static [u8]>> RunTable for T {}

/// The tables a rollup question reads.
pub struct Source<'a, Y, R, L, P> {
    pub years: &'a Y,
    pub rollups: &'a R,
    pub run_log: &'a L,
    pub runs: &'a P,
    /// The retention cut, if runs before it were pruned.
    pub cut: Option<i64>,
    /// What this source has read so far.
    pub memo: Memo,
}

/// A sparse bucket's log entries, shared.
type BucketEntries = Rc<Vec<scan::Entry>>;

/// An entity's year records in a span of years, by start, shared.
type Years = Rc<Vec<(i64, Rc<RecordView>)>>;

/// What a source has already read: decoded records and sparse buckets' runs. Questions asked
/// of one source share them (the overview's three windows end at the same second, so they
/// descend through the same records there, and often cut the same sparse month).
#[derive(Default)]
pub struct Memo {
    records: RefCell<FxHashMap<(EntityId, u8, i64), Rc<RecordView>>>,
    /// Year records read by range: by entity, first year, end second and direction.
    years: RefCell<FxHashMap<(EntityId, i64, i64, bool), Years>>,
    /// A sparse bucket's log entries, by pipeline and the bucket's seconds `[from, end)`.
    entries: RefCell<FxHashMap<(EntityId, i64, i64), BucketEntries>>,
    /// Pipeline-run aggregates read (as the tables hold them).
    aggs: RefCell<FxHashMap<RunId, PipelineRunAgg>>,
    /// A cleared histogram for the next range question's sum (a fresh one zeroes 16 KB).
    histogram: Cell<Option<Histogram>>,
}

impl Memo {
    /// Knows these pipeline-run aggregates, as the tables hold them (a write transaction's,
    /// kept across its questions), instead of those it knew.
    pub fn put_aggs(&mut self, aggs: FxHashMap<RunId, PipelineRunAgg>) {
        self.aggs = RefCell::new(aggs);
    }

    /// The pipeline-run aggregates known, leaving none.
    pub fn take_aggs(&mut self) -> FxHashMap<RunId, PipelineRunAgg> {
        self.aggs.take()
    }
}

impl<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable> Source<'_, Y, R, L, P> {
    /// An entity's record of a stored level's bucket, if there is one.
    pub fn record(
        &self,
        entity: EntityId,
        level: Level,
        start: i64,
    ) -> Result<Option<Rc<RecordView>>> {
        let key = (entity, level.tag(), start);
        if let Some(record) = self.memo.records.borrow().get(&key) {
            return Ok(Some(record.clone()));
        }
        let bytes = match level {
            Level::Year => self.years.get(&year_key(entity, start))?,
            _ => self.rollups.get(&rollup_key(level, start, entity))?,
        };
        bytes
            .map(|bytes| self.remember(key, bytes.value()))
            .transpose()
    }

    /// A year record read by a range over the year table, through the memo.
    fn year_record(&self, entity: EntityId, start: i64, bytes: &[u8]) -> Result<Rc<RecordView>> {
        let key = (entity, Level::Year.tag(), start);
        if let Some(record) = self.memo.records.borrow().get(&key) {
            return Ok(record.clone());
        }
        self.remember(key, bytes)
    }

    /// Decodes a record and keeps it for the source's later questions.
    fn remember(&self, key: (EntityId, u8, i64), bytes: &[u8]) -> Result<Rc<RecordView>> {
        let record = Rc::new(RecordView::decode(bytes)?);
        self.memo.records.borrow_mut().insert(key, record.clone());
        Ok(record)
    }

    /// Whether part `index` of the bucket of `level` at `start` has records of its own (else
    /// its runs are read from the log).
    fn descends(
        &self,
        series: &Series,
        (level, start): (Level, i64),
        index: u16,
        own: &RecordView,
    ) -> Result<bool> {
        let Some(finer) = level.part_level() else {
            return Ok(false);
        };
        let weight = self.weight(series, level, start, index, own)?;
        Ok(kept(
            finer,
            level.part_span(start, index).0,
            weight,
            self.cut,
        ))
    }

    /// The weight of part `index` of the pipeline's record at `level`/`start`: how many task
    /// runs the pipeline had in that part.
    fn weight(
        &self,
        series: &Series,
        level: Level,
        start: i64,
        index: u16,
        own: &RecordView,
    ) -> Result<u64> {
        let part = |record: &RecordView| record.part(index).map_or(0, |p| p.weight);
        if series.kind == EntityKind::Pipeline {
            return Ok(part(own));
        }
        Ok(self
            .record(series.pipeline, level, start)?
            .map_or(0, |record| part(&record)))
    }
}

/// The stored levels, coarsest first.
pub const STORED: [Level; 4] = [Level::Year, Level::Month, Level::Day, Level::Hour];

/// The stored level whose records have `level`'s buckets as parts.
fn parent(level: Level) -> Option<Level> {
    match level {
        Level::Month => Some(Level::Year),
        Level::Day => Some(Level::Month),
        Level::Hour => Some(Level::Day),
        _ => None,
    }
}
