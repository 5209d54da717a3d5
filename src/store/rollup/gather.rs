//! Gathering a write transaction's rollup contributions. Applying a run only notes it: one
//! event for the series it counts in (a task run for its task, a pipeline run for its pipeline)
//! and, for a task run, one for its pipeline's weights. [`RollupDeltas::prepare`] then sorts the
//! events by series and time and adds them up in one pass, every stored level at once: a
//! series' events arrive in time order, so each level's current bucket and part only ever move
//! forward, and the calendar is consulted once per hour of events, not once per run. The result
//! is one delta record per touched bucket, in the order the flush writes them.
//!
//! Sums are wrapping and duration counts of taken-back runs are `u64::MAX` (minus one), so the
//! deltas are the same whatever order the events came in.

use super::record::{BucketRecord, Part};
use super::write::{Delta, PreparedDeltas};
use super::{STORED, Series};
use crate::durations::{self, Bin, Durations};
use crate::model::{EntityKind, Tally};
use crate::store::tables::EntityId;
use crate::time::{Level, Timestamp};

/// The event takes a run back out.
const RETRACT: u8 = 1;
/// The run succeeded.
const SUCCESS: u8 = 2;
/// The event is a task run's weight in its pipeline's records (no tally, no duration).
const WEIGHT: u8 = 4;
/// The event's series is a pipeline.
const PIPELINE: u8 = 8;

/// One run's contribution to one series.
#[derive(Clone, Copy, Debug)]
struct Event {
    /// The series' pipeline in the high half, the series in the low half: events sort by
    /// pipeline, then series.
    series: u64,
    second: i64,
    duration: u64,
    flags: u8,
}

impl Event {
    fn new(series: Series, at: Timestamp, duration: u64, flags: u8) -> Event {
        Event {
            series: (u64::from(series.pipeline.0) << 32) | u64::from(series.id.0),
            second: at.second(),
            duration,
            flags,
        }
    }

    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn series(self) -> Series {
        let pipeline = EntityId((self.series >> 32) as u32);
        let id = EntityId(self.series as u32);
        let kind = if self.has(PIPELINE) {
            EntityKind::Pipeline
        } else {
            EntityKind::Task
        };
        Series { id, kind, pipeline }
    }

    /// The tally and weight it adds (wrapping: a retraction adds their negation).
    fn signed(self) -> (Tally, u64) {
        let (tally, weight) = if self.has(WEIGHT) {
            (Tally::default(), 1)
        } else {
            (Tally::of_run(self.has(SUCCESS), self.duration), 0)
        };
        if self.has(RETRACT) {
            (Tally::default() - tally, 0u64.wrapping_sub(weight))
        } else {
            (tally, weight)
        }
    }
}

/// Contributions gathered during a write transaction (see the module docs).
#[derive(Default)]
pub struct RollupDeltas {
    events: Vec<Event>,
}

impl RollupDeltas {
    /// A finished task run counts for its task (or, with `retract`, stops counting) and weighs
    /// for its pipeline.
    pub fn task_run(
        &mut self,
        task: Series,
        at: Timestamp,
        successful: bool,
        duration_ms: u64,
        retract: bool,
    ) {
        let retract = u8::from(retract) * RETRACT;
        let pipeline = Series {
            id: task.pipeline,
            kind: EntityKind::Pipeline,
            pipeline: task.pipeline,
        };
        self.events.push(Event::new(
            task,
            at,
            duration_ms,
            retract | (u8::from(successful) * SUCCESS),
        ));
        self.events
            .push(Event::new(pipeline, at, 0, retract | WEIGHT | PIPELINE));
    }

    /// A pipeline run counts for its pipeline at its latest task run (or stops counting).
    pub fn pipeline_run(
        &mut self,
        pipeline: Series,
        at: Timestamp,
        successful: bool,
        duration_ms: u64,
        retract: bool,
    ) {
        let flags = (u8::from(retract) * RETRACT) | (u8::from(successful) * SUCCESS) | PIPELINE;
        self.events
            .push(Event::new(pipeline, at, duration_ms, flags));
    }

    /// The delta records, in flush order (no table needed, so this may run on another thread
    /// than the flush).
    pub fn prepare(mut self) -> PreparedDeltas {
        self.events.sort_unstable_by_key(|e| (e.series, e.second));
        let mut deltas = Vec::new();
        let mut levels: [Open; 4] = Default::default();
        for series in self.events.chunk_by(|a, b| a.series == b.series) {
            gather_series(series, &mut levels, &mut deltas);
        }
        deltas.sort_unstable_by_key(|d| (d.series.pipeline, rank(d.level), d.start, d.series.id));
        PreparedDeltas::new(deltas)
    }
}

/// A stored level's position in [`STORED`]: 0 for years, 3 for hours.
pub(super) fn rank(level: Level) -> usize {
    STORED.iter().position(|l| *l == level).expect("stored")
}

/// One level's record being gathered, and its current part.
#[derive(Default)]
struct Open {
    start: i64,
    record: BucketRecord,
    retracted: Vec<(u16, u64)>,
    part: OpenPart,
}

/// A part being gathered: its durations as (bin, count) pairs in any order until it closes.
#[derive(Default)]
struct OpenPart {
    index: u16,
    tally: Tally,
    weight: u64,
    bins: Vec<(Bin, u64)>,
    max: u64,
}

impl OpenPart {
    fn is_empty(&self) -> bool {
        self.tally.is_empty() && self.weight == 0 && self.bins.is_empty()
    }

    /// The gathered part, if it holds anything once combined; starts the next at `index`.
    fn close(&mut self, index: u16) -> Option<Part> {
        let part = if self.is_empty() {
            None
        } else {
            self.bins.sort_unstable_by_key(|&(bin, _)| bin);
            let mut bins: Vec<(Bin, u64)> = Vec::with_capacity(self.bins.len());
            for &(bin, count) in &self.bins {
                match bins.last_mut() {
                    Some(last) if last.0 == bin => last.1 = last.1.wrapping_add(count),
                    _ => bins.push((bin, count)),
                }
            }
            bins.retain(|(_, count)| *count != 0);
            let part = Part {
                index: self.index,
                tally: self.tally,
                weight: self.weight,
                durations: Durations::from_parts(bins, self.max),
            };
            (!part.is_empty()).then_some(part)
        };
        self.index = index;
        self.tally = Tally::default();
        self.weight = 0;
        self.bins.clear();
        self.max = 0;
        part
    }
}

impl Open {
    /// Closes the record being gathered into a delta and starts the bucket at `start`.
    fn close(&mut self, series: Series, level: Level, start: i64, deltas: &mut Vec<Delta>) {
        if let Some(part) = self.part.close(0) {
            self.record.parts.push(part);
        }
        deltas.push(Delta {
            series,
            level,
            start: self.start,
            record: std::mem::take(&mut self.record),
            retracted: std::mem::take(&mut self.retracted),
        });
        self.start = start;
    }
}

/// Adds up one series' events (in time order) into a delta per touched bucket and level.
fn gather_series(events: &[Event], levels: &mut [Open; 4], deltas: &mut Vec<Delta>) {
    let series = events[0].series();
    // The hour of the events being added, and the part each coarser level is in during it.
    let mut hour = None;
    let mut parts = [0u16; 3];
    for &event in events {
        let second = event.second;
        if hour.is_none_or(|hour| second - hour >= 3_600 || second < hour) {
            let starts = Level::bucket_starts(second);
            // Level::ALL order: hour, day, week, month, quarter, year.
            let stored = [starts[5], starts[3], starts[1], starts[0]];
            for (rank, (open, start)) in levels.iter_mut().zip(stored).enumerate() {
                if hour.is_none() {
                    open.start = start;
                    open.part.index = part_index(rank, start, second);
                } else if open.start != start {
                    open.close(series, STORED[rank], start, deltas);
                }
            }
            for (rank, part) in parts.iter_mut().enumerate() {
                *part = part_index(rank, stored[rank], second);
            }
            hour = Some(stored[3]);
        }
        let hour_start = hour.expect("set above");
        let (tally, weight) = event.signed();
        let bin = (!event.has(WEIGHT)).then(|| durations::bin_of(event.duration));
        let retract = event.has(RETRACT);
        for (rank, open) in levels.iter_mut().enumerate() {
            let index = match rank {
                3 => (second - hour_start) as u16,
                _ => parts[rank],
            };
            if open.part.index != index
                && let Some(part) = open.part.close(index)
            {
                open.record.parts.push(part);
            }
            open.record.total = open.record.total + tally;
            open.record.weight = open.record.weight.wrapping_add(weight);
            let part = &mut open.part;
            part.tally = part.tally + tally;
            part.weight = part.weight.wrapping_add(weight);
            if let Some(bin) = bin {
                if retract {
                    part.bins.push((bin, u64::MAX));
                    open.retracted.push((index, event.duration));
                } else {
                    part.bins.push((bin, 1));
                    part.max = part.max.max(event.duration);
                }
            }
        }
    }
    for (rank, open) in levels.iter_mut().enumerate() {
        open.close(series, STORED[rank], 0, deltas);
    }
}

/// The part of the bucket of the stored level `rank` (starting at `start`) that holds `second`.
fn part_index(rank: usize, start: i64, second: i64) -> u16 {
    STORED[rank]
        .part_index(start, second)
        .expect("stored levels have parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(id: u32, kind: EntityKind, pipeline: u32) -> Series {
        Series {
            id: EntityId(id),
            kind,
            pipeline: EntityId(pipeline),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn a_run_added_then_taken_back_leaves_empty_deltas_for_every_level() {
        let task = series(2, EntityKind::Task, 1);
        let mut deltas = RollupDeltas::default();
        deltas.task_run(task, at(1_000_000), true, 40, false);
        deltas.task_run(task, at(1_000_000), true, 40, true);
        let prepared = deltas.prepare();
        // Year, month, day and hour records of the task and of its pipeline.
        assert_eq!(prepared.len(), 8);
        assert!(prepared.records().all(|(_, r)| r.is_empty()));
    }

    #[test]
    fn runs_in_any_order_give_the_same_deltas() {
        let task = series(2, EntityKind::Task, 1);
        let pipeline = series(1, EntityKind::Pipeline, 1);
        let seconds = [
            86_400 * 400 + 7,
            86_400 * 31 + 3_599,
            86_400 * 31 + 3_600,
            5,
            5,
        ];
        let gather = |order: &[usize]| {
            let mut deltas = RollupDeltas::default();
            for &i in order {
                deltas.task_run(task, at(seconds[i]), i % 2 == 0, 10 * i as u64, false);
                deltas.pipeline_run(pipeline, at(seconds[i]), true, 100 + i as u64, i == 3);
            }
            deltas.prepare().debug_text()
        };
        assert_eq!(gather(&[0, 1, 2, 3, 4]), gather(&[4, 2, 0, 3, 1]));
    }

    #[test]
    fn durations_that_move_between_bins_keep_a_part_whose_tally_cancels() {
        // Runs of 1 and 9 ms taken out, two of 5 ms added in the same second: the tally cancels,
        // the histogram does not.
        let task = series(2, EntityKind::Task, 1);
        let mut deltas = RollupDeltas::default();
        deltas.task_run(task, at(7_200), true, 1, true);
        deltas.task_run(task, at(7_200), true, 5, false);
        deltas.task_run(task, at(7_200), true, 9, true);
        deltas.task_run(task, at(7_200), true, 5, false);
        let prepared = deltas.prepare();
        let bin = durations::bin_of;
        let tasks: Vec<_> = prepared
            .records()
            .filter(|(s, _)| s.kind == EntityKind::Task)
            .collect();
        assert_eq!(tasks.len(), 4);
        for (_, record) in tasks {
            assert!(record.total.is_empty());
            let [part] = &record.parts[..] else {
                panic!("one part: {record:?}")
            };
            assert_eq!(
                part.durations.bins(),
                &[(bin(1), u64::MAX), (bin(5), 2), (bin(9), u64::MAX)]
            );
            assert_eq!(part.durations.max(), 5);
        }
    }
}
