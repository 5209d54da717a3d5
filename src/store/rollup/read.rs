//! Answers from the rollups. A second-precision range takes whole years from their records and
//! descends at each edge: a cut year by its month parts, a cut month by its record's day parts
//! (or, where the pipeline is sparse that month, from the run log), and so on down to seconds.
//! Aggregated buckets come from the parts of coarser records: months and quarters from years',
//! days and weeks from months' (or the log, for sparse months).

use std::collections::BTreeMap;
use std::rc::Rc;

use uuid::Uuid;

use super::record::{PartView, RecordView};
use super::scan::aggregate;
use super::{RollupTable, RunLogTable, RunTable, Series, Source, YearTable, Years};
use crate::durations::{Histogram, Percentiles};
use crate::error::Result;
use crate::model::{EntityKind, Summary, Tally, TimeRange, WindowStats};
use crate::store::records::{LastRunRecord, RunRecord, RunRef, corrupt};
use crate::store::tables::{
    EntityId, RUN_KEY_LEN, YEAR_KEY_LEN, run_key_bounds, split_run_key, year_key, year_key_start,
};
use crate::time::{Level, MICROS_PER_SECOND, MIN_SECOND, Period, Timestamp};

/// What a range question adds up: the tally and the histogram of the runs counted.
#[derive(Default)]
struct Sum {
    tally: Tally,
    histogram: Histogram,
}

impl<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable> Source<'_, Y, R, L, P> {
    /// The entity's year records overlapping the seconds `[from, end)`, in order (or in
    /// reverse).
    fn years(&self, entity: EntityId, from: i64, end: i64, reverse: bool) -> Result<Years> {
        let first = Level::Year.bucket_start(from);
        let key = (entity, first, end, reverse);
        if let Some(years) = self.memo.years.borrow().get(&key) {
            return Ok(years.clone());
        }
        let low = year_key(entity, first);
        let high = year_key(entity, end);
        let mut years = Vec::new();
        for entry in self.years.range::<&[u8; YEAR_KEY_LEN]>(&low..&high)? {
            let (key, value) = entry?;
            let start = year_key_start(key.value());
            years.push((start, self.year_record(entity, start, value.value())?));
        }
        if reverse {
            years.reverse();
        }
        let years = Rc::new(years);
        self.memo.years.borrow_mut().insert(key, years.clone());
        Ok(years)
    }

    /// The series' record of a dense bucket: absent means no run of the series there.
    fn dense_record(&self, series: &Series, level: Level, start: i64) -> Result<Rc<RecordView>> {
        Ok(self
            .record(series.id, level, start)?
            .unwrap_or_else(|| Rc::new(RecordView::empty())))
    }

    /// Adds the runs of the seconds `[from, end)` within the bucket of `level` at `start`,
    /// whose record for the series is `record`. Whole parts come from the record: added one by
    /// one, or, when fewer parts lie outside the range, as the bucket's total less those (tallies
    /// and histograms subtract exactly; the max is taken over the whole parts inside). Parts cut
    /// by an edge come from their own records where the pipeline is dense, else from the log.
    fn sum_parts(
        &self,
        series: &Series,
        (level, start): (Level, i64),
        record: &RecordView,
        (from, end): (i64, i64),
        sum: &mut Sum,
    ) -> Result<()> {
        let (first, last) = parts_touched(level, start, from, end);
        let (mut whole, mut other, mut cut) = (Vec::new(), Vec::new(), Vec::new());
        // (A pipeline's part may carry only weight: task runs, but no pipeline run ending there.)
        for part in record.parts.iter().filter(|p| !p.tally.is_empty()) {
            if part.index < first || part.index > last {
                other.push(part);
                continue;
            }
            // Only the first and last parts touched can be cut by the range's edges.
            let whole_part = (part.index != first && part.index != last) || {
                let (part_first, part_end) = level.part_span(start, part.index);
                from <= part_first && part_end <= end
            };
            if whole_part {
                whole.push(part);
            } else {
                other.push(part);
                cut.push(part);
            }
        }
        if other.len() < whole.len() {
            sum.tally = sum.tally + record.total;
            record.add_total_to(&mut sum.histogram, false)?;
            for part in other {
                sum.tally = sum.tally - part.tally;
                record.add_part_to(part, &mut sum.histogram, true)?;
            }
            for part in whole {
                sum.histogram.raise_max(record.part_max(part)?);
            }
        } else {
            for part in whole {
                sum.tally = sum.tally + part.tally;
                record.add_part_to(part, &mut sum.histogram, false)?;
            }
        }
        for part in cut {
            let (part_first, part_end) = level.part_span(start, part.index);
            // An hour's parts are whole seconds, so never cut.
            let finer = level.part_level().ok_or_else(|| corrupt("rollup"))?;
            let (cut_from, cut_end) = (from.max(part_first), end.min(part_end));
            if self.descends(series, (level, start), part.index, record)? {
                let inner = self.dense_record(series, finer, part_first)?;
                self.sum_parts(
                    series,
                    (finer, part_first),
                    &inner,
                    (cut_from, cut_end),
                    sum,
                )?;
            } else {
                let bucket = (part_first, part_end);
                self.cut_runs(series, bucket, (cut_from, cut_end), |ok, duration| {
                    sum.tally = sum.tally + Tally::of_run(ok, duration);
                    sum.histogram.add_value(duration);
                })?;
            }
        }
        Ok(())
    }

    /// The latest second at or before `to` with a run, within the bucket of `level` at `start`.
    fn latest_in(
        &self,
        series: &Series,
        level: Level,
        start: i64,
        record: &RecordView,
        to: i64,
    ) -> Result<Option<i64>> {
        let limit = if to < level.next_bucket(start) {
            level.part_index(start, to).unwrap_or(u16::MAX)
        } else {
            u16::MAX
        };
        for part in record
            .parts
            .iter()
            .rev()
            .filter(|p| p.index <= limit && !p.tally.is_empty())
        {
            let (first, end) = level.part_span(start, part.index);
            let Some(finer) = level.part_level() else {
                return Ok(Some(first)); // a second of an hour
            };
            let found = if self.descends(series, (level, start), part.index, record)? {
                let inner = self.dense_record(series, finer, first)?;
                self.latest_in(series, finer, first, &inner, to)?
            } else {
                self.scan_latest(series, first, to.min(end - 1))?
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The summaries of the series' days (by `bucket` of each day's start) in the seconds
    /// `[from, end)`, from the year's month parts: a dense month's record, or the log.
    fn days(
        &self,
        series: &Series,
        (year, record): (i64, &RecordView),
        (from, end): (i64, i64),
        bucket: &impl Fn(i64) -> i64,
        into: &mut BTreeMap<i64, Gathered>,
    ) -> Result<()> {
        for part in &record.parts {
            let (month, month_end) = Level::Year.part_span(year, part.index);
            if month_end <= from || end <= month {
                continue;
            }
            if self.descends(series, (Level::Year, year), part.index, record)? {
                let days = self.dense_record(series, Level::Month, month)?;
                for day in days.parts.iter().filter(|p| !p.tally.is_empty()) {
                    let (first, _) = Level::Month.part_span(month, day.index);
                    if (from..end).contains(&first) {
                        into.entry(bucket(first))
                            .or_default()
                            .add_part(&days, day)?;
                    }
                }
            } else {
                let scanned =
                    self.scan_buckets(series, from.max(month), end.min(month_end), |second| {
                        bucket(Level::Day.bucket_start(second))
                    })?;
                for (start, summary) in scanned {
                    into.entry(start).or_default().add(&summary)?;
                }
            }
        }
        Ok(())
    }
}

/// The first and last part of the bucket of `level` at `start` that hold seconds of
/// `[from, end)` (which must overlap the bucket).
fn parts_touched(level: Level, start: i64, from: i64, end: i64) -> (u16, u16) {
    let first = level.part_index(start, from.max(start)).unwrap_or(0);
    let last_second = (end - 1).min(level.next_bucket(start) - 1);
    (
        first,
        level.part_index(start, last_second).unwrap_or(u16::MAX),
    )
}

/// A bucket of an aggregated answer as it is gathered: a year record's total or a single record
/// part stays encoded until the answer reads its percentiles from it (most buckets are one part:
/// a day, a month); a bucket of several parts, or of runs read from the log, is summed.
enum Gathered {
    Total(Rc<RecordView>),
    Part(Rc<RecordView>, PartView),
    Sum(Summary),
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered::Sum(Summary::default())
    }
}

impl Gathered {
    /// Adds a whole part of a record.
    fn add_part(&mut self, record: &Rc<RecordView>, part: &PartView) -> Result<()> {
        if let Gathered::Sum(sum) = self
            && sum.is_empty()
        {
            *self = Gathered::Part(record.clone(), part.clone());
            return Ok(());
        }
        let sum = self.summed()?;
        sum.tally = sum.tally + part.tally;
        sum.durations.add(&record.part_durations(part)?);
        Ok(())
    }

    /// Adds runs read from the log.
    fn add(&mut self, summary: &Summary) -> Result<()> {
        self.summed()?.add(summary);
        Ok(())
    }

    /// The bucket as a sum, decoding a single part first.
    fn summed(&mut self) -> Result<&mut Summary> {
        let decoded = match self {
            Gathered::Total(record) => Summary {
                tally: record.total,
                durations: record.total_durations()?,
            },
            Gathered::Part(record, part) => Summary {
                tally: part.tally,
                durations: record.part_durations(part)?,
            },
            Gathered::Sum(sum) => return Ok(sum),
        };
        *self = Gathered::Sum(decoded);
        match self {
            Gathered::Sum(sum) => Ok(sum),
            _ => unreachable!("summed just above"),
        }
    }

    fn tally(&self) -> Tally {
        match self {
            Gathered::Total(record) => record.total,
            Gathered::Part(_, part) => part.tally,
            Gathered::Sum(sum) => sum.tally,
        }
    }

    fn percentiles(&self) -> Result<Option<Percentiles>> {
        match self {
            Gathered::Total(record) => record.total_percentiles(),
            Gathered::Part(record, part) => record.part_percentiles(part),
            Gathered::Sum(sum) => Ok(sum.percentiles()),
        }
    }
}

/// The tally and duration percentiles of a series' runs in a range.
pub fn range_summary<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable>(
    source: &Source<'_, Y, R, L, P>,
    series: &Series,
    range: TimeRange,
) -> Result<WindowStats> {
    let stats = range_summary_with(source, series, range, |_, _| true)?;
    Ok(stats.expect("nothing to make inexact"))
}

/// [`range_summary`], with `adjust` changing the tally and the histogram of the runs counted
/// before the percentiles are worked out (runs the tables do not hold yet); `None` when it
/// says the answer would not be exact.
pub fn range_summary_with<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable>(
    source: &Source<'_, Y, R, L, P>,
    series: &Series,
    range: TimeRange,
    adjust: impl FnOnce(&mut Tally, &mut Histogram) -> bool,
) -> Result<Option<WindowStats>> {
    let (from, end) = (range.from(), range.to() + 1);
    let mut sum = Sum {
        tally: Tally::default(),
        histogram: source.memo.histogram.take().unwrap_or_default(),
    };
    for (start, record) in source.years(series.id, from, end, false)?.iter() {
        let next = Level::Year.next_bucket(*start);
        if from <= *start && next <= end {
            sum.tally = sum.tally + record.total;
            record.add_total_to(&mut sum.histogram, true)?;
        } else {
            source.sum_parts(series, (Level::Year, *start), record, (from, end), &mut sum)?;
        }
    }
    let exact = adjust(&mut sum.tally, &mut sum.histogram);
    let percentiles = sum.histogram.take_percentiles();
    source.memo.histogram.set(Some(sum.histogram));
    Ok(exact.then_some(WindowStats {
        tally: sum.tally,
        percentiles,
    }))
}

/// Stats of the buckets of `period` in the seconds `[start, end)` (bucket-aligned), by bucket
/// start: each bucket's tally and percentiles; buckets without runs left out.
pub fn aggregated<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable>(
    source: &Source<'_, Y, R, L, P>,
    series: &Series,
    period: Period,
    start: i64,
    end: i64,
) -> Result<Vec<(i64, Tally, Option<Percentiles>)>> {
    let level = period.level();
    let bucket = |second: i64| level.bucket_start(second);
    let mut buckets: BTreeMap<i64, Gathered> = BTreeMap::new();
    for (year, record) in source.years(series.id, start, end, false)?.iter() {
        let year = *year;
        match period {
            Period::Year => {
                buckets.insert(year, Gathered::Total(record.clone()));
            }
            Period::Month | Period::Quarter => {
                for part in record.parts.iter().filter(|p| !p.tally.is_empty()) {
                    let (first, _) = Level::Year.part_span(year, part.index);
                    if (start..end).contains(&first) {
                        buckets
                            .entry(bucket(first))
                            .or_default()
                            .add_part(record, part)?;
                    }
                }
            }
            Period::Day | Period::Week => {
                source.days(series, (year, record), (start, end), &bucket, &mut buckets)?;
            }
        }
    }
    let mut answers = Vec::with_capacity(buckets.len());
    for (start, gathered) in buckets {
        let tally = gathered.tally();
        if !tally.is_empty() {
            answers.push((start, tally, gathered.percentiles()?));
        }
    }
    Ok(answers)
}

/// The latest second at or before `to` in which the series has a run.
fn latest_second<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable>(
    source: &Source<'_, Y, R, L, P>,
    series: &Series,
    to: i64,
) -> Result<Option<i64>> {
    for (start, record) in source.years(series.id, MIN_SECOND, to + 1, true)?.iter() {
        if let Some(second) = source.latest_in(series, Level::Year, *start, record, to)? {
            return Ok(Some(second));
        }
    }
    Ok(None)
}

/// The latest run of a series executed at or before the second `to` (inclusive), found without
/// reading history: the rollups (or a sparse bucket's few log entries) name the latest second
/// with a run, and only the runs of that one second are read.
pub fn last_run_at_or_before<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable>(
    source: &Source<'_, Y, R, L, P>,
    series: &Series,
    to: i64,
) -> Result<Option<LastRunRecord>> {
    let Some(second) = latest_second(source, series, to)? else {
        return Ok(None);
    };
    let (first, end) = run_key_bounds(
        series.pipeline,
        second * MICROS_PER_SECOND,
        (second + 1) * MICROS_PER_SECOND,
    );
    let mut best: Option<LastRunRecord> = None;
    match series.kind {
        EntityKind::Task => {
            // Newest first: the first run of this task is the latest (ties broken by UUID,
            // which is the key's last part).
            for entry in source
                .run_log
                .range::<&[u8; RUN_KEY_LEN]>(&first..&end)?
                .rev()
            {
                let (key, value) = entry?;
                let outcome = RunRecord::decode_outcome(value.value())?;
                if outcome.task == series.id {
                    let (_, micros, task_run) = split_run_key(key.value());
                    best = Some(LastRunRecord {
                        executed_at: timestamp(micros)?,
                        run: Uuid::from_bytes(task_run),
                        is_successful: outcome.is_successful,
                        duration_ms: u64::from(outcome.duration_ms),
                    });
                    break;
                }
            }
        }
        EntityKind::Pipeline => {
            // A pipeline run executed in this second has its latest task run in this second.
            let mut seen = std::collections::HashSet::new();
            for entry in source.run_log.range::<&[u8; RUN_KEY_LEN]>(&first..&end)? {
                let (_, value) = entry?;
                let RunRef::Id(run) = RunRecord::decode_outcome(value.value())?.pipeline_run else {
                    return Err(corrupt("task run"));
                };
                if !seen.insert(run) {
                    continue;
                }
                let agg = aggregate(source.runs, run)?;
                if agg.latest_micros.div_euclid(MICROS_PER_SECOND) != second {
                    continue;
                }
                let candidate = LastRunRecord {
                    executed_at: timestamp(agg.latest_micros)?,
                    run: agg.uuid.0,
                    is_successful: agg.failed == 0,
                    duration_ms: agg.duration_ms,
                };
                if best.is_none_or(|b| candidate.order_key() > b.order_key()) {
                    best = Some(candidate);
                }
            }
        }
    }
    match best {
        Some(best) => Ok(Some(best)),
        // The rollup says a run was executed in this second; the log must agree.
        None => Err(corrupt("rollup")),
    }
}

fn timestamp(micros: i64) -> Result<Timestamp> {
    Timestamp::from_micros(micros).ok_or_else(|| corrupt("task run"))
}
