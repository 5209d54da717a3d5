//! The oracle: random task runs (out of order, re-reported, duplicated, across bucket, year and
//! leap-day boundaries, pending ones mixed in) ingested through the engine in random batches,
//! then every kind of question compared with a brute-force recomputation over the raw reports.
//! The recomputation uses chrono's calendar, not runledger's, so bucket arithmetic is checked too.
//!
//! `RUNLEDGER_ORACLE_SEEDS=N` runs N seeds instead of the default few (the long variant).

use std::collections::HashMap;

use chrono::{Datelike, Months, NaiveDate, TimeDelta};
use runledger::auth::Caller;
use runledger::durations::Percentiles;
use runledger::engine::Engine;
use runledger::error::Error;
use runledger::model::{
    BucketCount, EntityKind, EntityRef, Fill, LastRun, LogCursor, OVERVIEW_WINDOWS, OrgId,
    PipelineDefinition, PipelineId, PipelineRunId, RunState, Stats, Tally, TaskDefinition,
    TaskError, TaskId, TaskRun, TaskRunId, TaskType, TimeRange,
};
use runledger::store::{Store, StoreOptions, WriteOp, WriteOutcome, verify::verify};
use runledger::time::{
    MAX_SECOND, MICROS_PER_SECOND, MIN_SECOND, Period, Timestamp, parse_instant,
};
use uuid::Uuid;

/// A small deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(
            ((u128::from(self.next()) << 64) | u128::from(self.next())).to_be_bytes(),
        )
        .into_uuid()
    }
}

/// Instants where buckets of several levels meet, leap days among them.
const BOUNDARIES: [&str; 14] = [
    "2023-12-31 23:59:59",
    "2024-01-01 00:00:00",
    "2024-02-28 23:59:59",
    "2024-02-29 12:00:00",
    "2024-03-01 00:00:00",
    "2020-02-29 23:59:59",
    "2024-03-31 23:59:59",
    "2024-07-01 00:00:00",
    "2024-09-30 23:59:30",
    "2024-12-30 00:00:00",
    "2025-01-05 23:59:59",
    "2024-06-30 23:59:59",
    "2100-02-28 23:59:59",
    "1999-12-31 23:59:59",
];

fn second_of(text: &str) -> i64 {
    parse_instant(text).unwrap().second()
}

fn instant(rng: &mut Rng) -> Timestamp {
    let second = if rng.chance(70) {
        let base = second_of(rng.pick::<&str>(&BOUNDARIES));
        let spread = *rng.pick(&[2, 120, 7_200, 3 * 86_400]);
        base + rng.range(-spread, spread)
    } else {
        rng.range(
            second_of("2019-01-01 00:00:00"),
            second_of("2027-01-01 00:00:00"),
        )
    };
    let micros = if rng.chance(30) {
        0
    } else {
        rng.range(0, MICROS_PER_SECOND - 1)
    };
    Timestamp::from_micros(second * MICROS_PER_SECOND + micros).unwrap()
}

struct PipelineSpec {
    id: PipelineId,
    org: OrgId,
    tasks: Vec<(TaskId, TaskType)>,
    runs: Vec<(PipelineRunId, Timestamp)>,
}

impl PipelineSpec {
    /// The pipeline and its tasks.
    fn entities(&self) -> Vec<EntityRef> {
        let mut entities = vec![EntityRef {
            kind: EntityKind::Pipeline,
            uuid: self.id.0,
        }];
        entities.extend(self.tasks.iter().map(|(task, _)| EntityRef {
            kind: EntityKind::Task,
            uuid: task.0,
        }));
        entities
    }
}

/// Random reports in the order they are delivered.
fn generate(rng: &mut Rng, task_runs: usize) -> (Vec<PipelineSpec>, Vec<TaskRun>) {
    let orgs: Vec<OrgId> = (0..2).map(|_| OrgId(rng.uuid())).collect();
    let mut pipelines: Vec<PipelineSpec> = (0..3)
        .map(|_| PipelineSpec {
            id: PipelineId(rng.uuid()),
            org: *rng.pick(&orgs),
            tasks: (0..rng.range(1, 4))
                .map(|_| (TaskId(rng.uuid()), *rng.pick(&TaskType::ALL)))
                .collect(),
            runs: Vec::new(),
        })
        .collect();
    for pipeline in &mut pipelines {
        for _ in 0..task_runs / 6 {
            pipeline
                .runs
                .push((PipelineRunId(rng.uuid()), instant(rng)));
        }
    }
    let mut reports = Vec::new();
    for _ in 0..task_runs {
        let pipeline = &pipelines[rng.below(pipelines.len() as u64) as usize];
        let task_run = TaskRunId(rng.uuid());
        let (task, task_type) = *rng.pick(&pipeline.tasks);
        let report = |rng: &mut Rng| {
            // A fifth of the reports go to two large pipeline runs (whose members outgrow
            // their aggregate and move to the member index).
            let (pipeline_run, base) = if rng.chance(20) {
                pipeline.runs[rng.below(2) as usize]
            } else {
                *rng.pick(&pipeline.runs)
            };
            let state = match rng.below(10) {
                0 => RunState::Pending,
                1 => RunState::Running,
                _ => RunState::Finished,
            };
            // Members of a pipeline run end close together, sometimes in the same microsecond.
            let executed_at = match rng.below(4) {
                0 => base,
                _ => Timestamp::from_micros(base.micros() + rng.range(0, 600 * MICROS_PER_SECOND))
                    .unwrap(),
            };
            TaskRun {
                task_run,
                pipeline_run,
                pipeline: pipeline.id,
                task,
                organization: Some(pipeline.org),
                task_type,
                state,
                is_successful: rng.chance(80),
                duration_ms: if rng.chance(50) {
                    *rng.pick(&[0, 1, 7, 250, 99_999, u32::MAX])
                } else {
                    // Spread over every magnitude, so percentiles fall in many bins.
                    let magnitude = 10u64.pow(rng.range(1, 9) as u32);
                    rng.below(magnitude) as u32
                },
                executed_at: (state == RunState::Finished || rng.chance(50)).then_some(executed_at),
                output: if rng.chance(50) {
                    rng.uuid().as_bytes()[..rng.below(16) as usize].to_vec()
                } else {
                    Vec::new()
                },
                errors: if rng.chance(20) {
                    vec![TaskError {
                        code: "E1".into(),
                        severity: "error".into(),
                        message: "boom".into(),
                    }]
                } else {
                    Vec::new()
                },
                metric_value: rng
                    .chance(30)
                    .then(|| rng.range(-1_000, 1_000) as f64 / 8.0),
                is_initial_task: rng.chance(30),
                is_final_task: rng.chance(30),
            }
        };
        let mut previous: Option<TaskRun> = None;
        for _ in 0..rng.range(1, 3) {
            let mut next = report(rng);
            if let Some(previous) = previous.as_ref().filter(|_| rng.chance(50)) {
                // A corrected report: same run, same time, another outcome.
                next.pipeline_run = previous.pipeline_run;
                next.executed_at = previous.executed_at.or(next.executed_at);
            }
            if rng.chance(20) {
                reports.push(next.clone()); // an exact redelivery
            }
            reports.push(next.clone());
            previous = Some(next);
        }
    }
    // Out of order: a shuffle of everything. The last delivery of a task run is its truth.
    for i in (1..reports.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        reports.swap(i, j);
    }
    (pipelines, reports)
}

/// The brute-force answers, from the final report of each task run.
struct Oracle {
    /// Finished task runs: (pipeline, task, pipeline run, task run, executed_at, ok, duration).
    finished: Vec<TaskRun>,
}

#[derive(Clone, Copy)]
struct Run {
    at: Timestamp,
    id: Uuid,
    ok: bool,
    duration: u64,
}

impl Oracle {
    fn new(reports: &[TaskRun]) -> Oracle {
        let mut last: HashMap<TaskRunId, &TaskRun> = HashMap::new();
        for report in reports {
            last.insert(report.task_run, report);
        }
        let mut finished: Vec<TaskRun> = last
            .into_values()
            .filter(|r| r.finished_at().is_some())
            .cloned()
            .collect();
        // In a fixed order, so that a seed picks the same runs every time.
        finished.sort_by_key(|r| r.task_run.0);
        Oracle { finished }
    }

    /// The runs counted for an entity: task runs of a task, or pipeline runs of a pipeline.
    fn runs(&self, entity: EntityRef) -> Vec<Run> {
        match entity.kind {
            EntityKind::Task => self
                .finished
                .iter()
                .filter(|r| r.task.0 == entity.uuid)
                .map(|r| Run {
                    at: r.executed_at.unwrap(),
                    id: r.task_run.0,
                    ok: r.is_successful,
                    duration: u64::from(r.duration_ms),
                })
                .collect(),
            EntityKind::Pipeline => {
                let mut by_run: HashMap<Uuid, Run> = HashMap::new();
                for r in self.finished.iter().filter(|r| r.pipeline.0 == entity.uuid) {
                    let run = by_run.entry(r.pipeline_run.0).or_insert(Run {
                        at: r.executed_at.unwrap(),
                        id: r.pipeline_run.0,
                        ok: true,
                        duration: 0,
                    });
                    run.at = run.at.max(r.executed_at.unwrap());
                    run.ok &= r.is_successful;
                    run.duration += u64::from(r.duration_ms);
                }
                by_run.into_values().collect()
            }
        }
    }

    fn tally(runs: impl Iterator<Item = Run>) -> Tally {
        runs.fold(Tally::default(), |t, r| t + Tally::of_run(r.ok, r.duration))
    }

    fn stats(&self, entity: EntityRef, from: i64, to: i64) -> Stats {
        let runs = self.runs(entity);
        let counted = || {
            runs.iter()
                .copied()
                .filter(|r| (from..=to).contains(&r.at.second()))
        };
        let tally = Self::tally(counted());
        let percentiles = exact_percentiles(counted().map(|r| r.duration));
        let last_run = runs
            .iter()
            .filter(|r| r.at.second() <= to)
            .max_by_key(|r| (r.at, r.id))
            .map(|r| LastRun {
                executed_at: r.at,
                is_successful: r.ok,
                duration_ms: r.duration,
            });
        Stats {
            tally,
            percentiles,
            last_run,
            approximate: false,
        }
    }

    fn aggregated(
        &self,
        entity: EntityRef,
        period: Period,
        date_from: i64,
        n: u32,
    ) -> Vec<(i64, i64, Tally, Option<Percentiles>)> {
        let runs = self.runs(entity);
        let mut start = chrono_bucket_start(period, date_from);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(next) = chrono_next(period, start) else {
                break;
            };
            let counted = || {
                runs.iter()
                    .copied()
                    .filter(|r| (start..next).contains(&r.at.second()))
            };
            let tally = Self::tally(counted());
            if tally.runs() > 0 {
                let percentiles = exact_percentiles(counted().map(|r| r.duration));
                out.push((start, next - 1, tally, percentiles));
            }
            start = next;
        }
        out
    }
}

/// The exact nearest-rank percentiles and maximum of some durations.
fn exact_percentiles(durations: impl Iterator<Item = u64>) -> Option<Percentiles> {
    let mut sorted: Vec<u64> = durations.collect();
    sorted.sort_unstable();
    let rank = |p: usize| sorted[(p * sorted.len()).div_ceil(100) - 1];
    (!sorted.is_empty()).then(|| Percentiles {
        p50: rank(50),
        p90: rank(90),
        p95: rank(95),
        p99: rank(99),
        max: *sorted.last().unwrap(),
    })
}

/// Whether percentiles answered are within the contract's tolerance of the exact ones: each
/// within 1% (0 exactly), the maximum exact.
fn close(got: Option<Percentiles>, exact: Option<Percentiles>) -> bool {
    match (got, exact) {
        (None, None) => true,
        (Some(g), Some(e)) => {
            let near = |a: u64, b: u64| a.abs_diff(b) as f64 <= b as f64 * 0.01;
            near(g.p50, e.p50)
                && near(g.p90, e.p90)
                && near(g.p95, e.p95)
                && near(g.p99, e.p99)
                && g.max == e.max
        }
        _ => false,
    }
}

/// Asserts stats equal the oracle's: tallies and last runs exactly, percentiles within
/// tolerance.
fn assert_stats_match(got: &Stats, expected: &Stats, context: &str) {
    assert_eq!(
        (got.tally, got.last_run),
        (expected.tally, expected.last_run),
        "{context}"
    );
    assert!(
        close(got.percentiles, expected.percentiles),
        "{context}: percentiles {:?}, exact {:?}",
        got.percentiles,
        expected.percentiles
    );
}

/// Asserts aggregated buckets equal the oracle's (percentiles within tolerance).
fn assert_buckets_match(
    got: &[(i64, i64, Tally, Option<Percentiles>)],
    expected: &[(i64, i64, Tally, Option<Percentiles>)],
    context: &str,
) {
    let plain = |b: &[(i64, i64, Tally, Option<Percentiles>)]| -> Vec<(i64, i64, Tally)> {
        b.iter().map(|(s, l, t, _)| (*s, *l, *t)).collect()
    };
    assert_eq!(plain(got), plain(expected), "{context}");
    for (g, e) in got.iter().zip(expected) {
        assert!(
            close(g.3, e.3),
            "{context}: bucket {}: percentiles {:?}, exact {:?}",
            g.0,
            g.3,
            e.3
        );
    }
}

fn date_of(second: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(second, 0)
        .unwrap()
        .date_naive()
}

fn midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// Bucket starts by chrono's calendar, independent of runledger's.
fn chrono_bucket_start(period: Period, second: i64) -> i64 {
    let day = date_of(second);
    midnight(match period {
        Period::Day => day,
        Period::Week => day - TimeDelta::days(i64::from(day.weekday().num_days_from_monday())),
        Period::Month => day.with_day(1).unwrap(),
        Period::Quarter => {
            NaiveDate::from_ymd_opt(day.year(), day.month0() / 3 * 3 + 1, 1).unwrap()
        }
        Period::Year => NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap(),
    })
}

fn chrono_next(period: Period, start: i64) -> Option<i64> {
    let day = date_of(start);
    let next = match period {
        Period::Day => day + TimeDelta::days(1),
        Period::Week => day + TimeDelta::days(7),
        Period::Month => day.checked_add_months(Months::new(1))?,
        Period::Quarter => day.checked_add_months(Months::new(3))?,
        Period::Year => day.checked_add_months(Months::new(12))?,
    };
    (next.year() <= 9999).then(|| midnight(next))
}

fn random_second(rng: &mut Rng) -> i64 {
    instant(rng).second()
}

fn check_seed(seed: u64, task_runs: usize, queries: usize) {
    let mut rng = Rng(seed);
    let (pipelines, reports) = generate(&mut rng, task_runs);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .worker_threads(2)
        .build()
        .unwrap();

    // Random batches, many queued before any is awaited, so group commits merge them.
    runtime.block_on(async {
        let mut rest = reports.as_slice();
        let mut pending = Vec::new();
        while !rest.is_empty() {
            let size = (rng.range(1, 40) as usize).min(rest.len());
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            pending.push(
                engine
                    .submit_report(&Caller::OPERATOR, batch.to_vec())
                    .await
                    .unwrap(),
            );
            if rng.chance(10) {
                for durable in pending.drain(..) {
                    durable.await.unwrap();
                }
            }
        }
        for durable in pending {
            durable.await.unwrap();
        }
    });

    let oracle = Oracle::new(&reports);
    // Questions are asked within the organization of the entity (UUIDs are namespaced).
    let org_of: HashMap<Uuid, OrgId> = pipelines
        .iter()
        .flat_map(|p| {
            std::iter::once((p.id.0, p.org)).chain(p.tasks.iter().map(|(t, _)| (t.0, p.org)))
        })
        .collect();
    let op = |entity: EntityRef| Caller::operator_in(org_of[&entity.uuid]);
    let mut entities: Vec<EntityRef> = Vec::new();
    for pipeline in &pipelines {
        entities.push(EntityRef {
            kind: EntityKind::Pipeline,
            uuid: pipeline.id.0,
        });
        for (task, _) in &pipeline.tasks {
            entities.push(EntityRef {
                kind: EntityKind::Task,
                uuid: task.0,
            });
        }
    }
    let context = |what: String| format!("seed {seed}: {what}");

    for _ in 0..queries {
        let entity = *rng.pick(&entities);
        if oracle.runs(entity).is_empty() && rng.chance(50) {
            continue;
        }
        // Range stats over random ranges, from a second to years long.
        let (mut from, mut to) = (random_second(&mut rng), random_second(&mut rng));
        if rng.chance(30) {
            to = from + rng.range(0, 120);
        }
        if from > to {
            std::mem::swap(&mut from, &mut to);
        }
        let range = TimeRange::new(from, to).unwrap();
        let got = engine.stats(&op(entity), entity, range);
        match got {
            Ok(stats) => assert_stats_match(
                &stats,
                &oracle.stats(entity, from, to),
                &context(format!("stats {entity} {from}..={to}")),
            ),
            Err(Error::NotFound(_)) => assert!(
                oracle.runs(entity).is_empty(),
                "{}",
                context(format!("{entity} not found"))
            ),
            Err(e) => panic!("{}", context(e.to_string())),
        }

        // Aggregated stats for a random period, start and count.
        let period = *rng.pick(&Period::ALL);
        let n = if rng.chance(10) {
            rng.range(1, 1000) as u32
        } else {
            rng.range(1, 30) as u32
        };
        let date_from = random_second(&mut rng);
        let ask = |fill| {
            engine.aggregated_stats(
                &op(entity),
                entity,
                period,
                date_from,
                BucketCount::new(n).unwrap(),
                fill,
            )
        };
        if let Ok(buckets) = ask(Fill::Sparse) {
            let got: Vec<_> = buckets
                .iter()
                .map(|b| (b.start, b.last_second, b.tally, b.percentiles))
                .collect();
            let what = || format!("aggregated {entity} {period:?} from {date_from} n {n}");
            assert_buckets_match(
                &got,
                &oracle.aggregated(entity, period, date_from, n),
                &context(what()),
            );
            // Filled: n consecutive buckets from the one holding date_from (fewer only at the
            // end of time), the same tallies where there are runs, zero elsewhere.
            let filled = ask(Fill::Zero).unwrap();
            let first = filled.first().expect("at least one bucket");
            assert!(first.start <= date_from && date_from <= first.last_second);
            for pair in filled.windows(2) {
                assert_eq!(
                    pair[1].start,
                    pair[0].last_second + 1,
                    "{}",
                    context(what())
                );
            }
            let last = filled.last().expect("at least one bucket");
            assert!(
                filled.len() == n as usize || last.last_second + 1 > MAX_SECOND - 400 * 86_400,
                "{}",
                context(what())
            );
            let nonempty: Vec<_> = filled
                .iter()
                .filter(|b| b.tally.runs() > 0)
                .map(|b| (b.start, b.last_second, b.tally, b.percentiles))
                .collect();
            assert_eq!(nonempty, got, "{}", context(what()));
            assert!(
                filled
                    .iter()
                    .all(|b| (b.tally.runs() == 0) == b.percentiles.is_none()),
                "{}",
                context(what())
            );
        }

        // The last run.
        match engine.last_run(&op(entity), entity) {
            Ok(last) => assert_eq!(
                Some(last),
                oracle.stats(entity, i64::MIN, i64::MAX).last_run,
                "{}",
                context(format!("last run {entity}"))
            ),
            Err(Error::NotFound(_)) => assert_eq!(
                oracle.stats(entity, i64::MIN, i64::MAX).last_run,
                None,
                "{}",
                context(format!("last run {entity}"))
            ),
            Err(e) => panic!("{}", context(e.to_string())),
        }
    }

    // The overview of each organization's pipelines, at instants where runs are (most windows
    // hold some), paged one pipeline at a time: every pipeline once, in name then UUID order
    // (none has a name here), each window as a brute force over the raw runs.
    let orgs: std::collections::BTreeSet<OrgId> = pipelines.iter().map(|p| p.org).collect();
    for org in orgs {
        let mut expected: Vec<&PipelineSpec> = pipelines.iter().filter(|p| p.org == org).collect();
        expected.sort_by_key(|p| p.id.0);
        for _ in 0..10 {
            let now = rng.pick(&expected).runs.first().map_or(0, |r| r.1.second())
                + rng.range(-86_400, 40 * 86_400);
            let (mut listed, mut cursor) = (Vec::new(), None);
            loop {
                let page = engine
                    .pipelines_overview(&Caller::operator_in(org), now, cursor, 1)
                    .unwrap();
                listed.extend(page.pipelines);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let ids: Vec<PipelineId> = listed.iter().map(|o| o.pipeline).collect();
            let want: Vec<PipelineId> = expected.iter().map(|p| p.id).collect();
            assert_eq!(ids, want, "{}", context(format!("overview order at {now}")));
            for overview in &listed {
                let entity = EntityRef {
                    kind: EntityKind::Pipeline,
                    uuid: overview.pipeline.0,
                };
                assert_eq!(
                    overview.last_run,
                    oracle.stats(entity, i64::MIN, i64::MAX).last_run,
                    "{}",
                    context(format!("overview last run of {entity}"))
                );
                for (window, seconds) in overview.windows.iter().zip(OVERVIEW_WINDOWS) {
                    let exact = oracle.stats(entity, now - seconds + 1, now);
                    let what = context(format!("overview {entity} {seconds} s to {now}"));
                    assert_eq!(window.tally, exact.tally, "{what}");
                    assert!(close(window.percentiles, exact.percentiles), "{what}");
                }
            }
        }
    }

    // Logs, paged with random limits, against a sort of the raw runs.
    for pipeline in &pipelines {
        for _ in 0..5 {
            let (mut from, mut to) = (random_second(&mut rng), random_second(&mut rng));
            if from > to {
                std::mem::swap(&mut from, &mut to);
            }
            if rng.chance(30) {
                (from, to) = (
                    second_of("1999-01-01 00:00:00"),
                    second_of("2101-01-01 00:00:00"),
                );
            }
            let mut expected: Vec<&TaskRun> = oracle
                .finished
                .iter()
                .filter(|r| {
                    r.pipeline == pipeline.id
                        && (from..=to).contains(&r.executed_at.unwrap().second())
                })
                .collect();
            expected.sort_by_key(|r| std::cmp::Reverse((r.executed_at, r.task_run)));
            let range = TimeRange::new(from, to).unwrap();
            let mut cursor: Option<LogCursor> = None;
            let mut got = Vec::new();
            loop {
                let limit = rng.range(1, 7) as u32;
                let asker = Caller::operator_in(pipeline.org);
                let page = match engine.logs(&asker, pipeline.id, range, cursor, limit) {
                    Ok(page) => page,
                    Err(Error::NotFound(_)) => break,
                    Err(e) => panic!("{}", context(e.to_string())),
                };
                assert!(page.entries.len() <= limit as usize);
                got.extend(page.entries);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                got.len(),
                expected.len(),
                "{}",
                context(format!("log length of {}", pipeline.id))
            );
            for (entry, run) in got.iter().zip(&expected) {
                assert_eq!(
                    (
                        entry.task_run,
                        entry.pipeline_run,
                        entry.task,
                        entry.task_type,
                        entry.is_successful,
                        entry.duration_ms,
                        entry.executed_at,
                        entry.metric_value,
                        &entry.errors
                    ),
                    (
                        run.task_run,
                        run.pipeline_run,
                        run.task,
                        run.task_type,
                        run.is_successful,
                        run.duration_ms,
                        run.executed_at.unwrap(),
                        run.metric_value,
                        &run.errors
                    ),
                    "{}",
                    context("log entry".into())
                );
            }
        }
    }

    // Unknown entities are not found, and everything derived agrees with the raw runs.
    let unknown = EntityRef {
        kind: EntityKind::Task,
        uuid: Uuid::from_u128(1),
    };
    assert!(matches!(
        engine.last_run(&Caller::operator_in(pipelines[0].org), unknown),
        Err(Error::NotFound(_))
    ));
    let report = verify(engine.store()).unwrap();
    assert!(
        report.is_consistent(),
        "{}",
        context(format!("{:?}", report.differences))
    );
    assert_eq!(
        report.task_runs,
        oracle.finished.len() as u64,
        "{}",
        context("task runs".into())
    );
}

/// How many seeds a test runs: `RUNLEDGER_ORACLE_SEEDS`, or `default`.
fn seeds_or(default: u64) -> u64 {
    std::env::var("RUNLEDGER_ORACLE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn rollups_equal_a_recomputation_from_raw_runs() {
    let seeds = seeds_or(4);
    for seed in 0..seeds {
        check_seed(seed, 2_500, 300);
    }
}

#[test]
fn one_dense_pipeline_in_one_second() {
    // Many runs in the same second and microsecond: ties are broken the same way everywhere.
    let mut rng = Rng(99);
    let org = OrgId(rng.uuid());
    let pipeline = PipelineId(rng.uuid());
    let task = TaskId(rng.uuid());
    let at = Timestamp::from_micros(second_of("2024-02-29 23:59:59") * MICROS_PER_SECOND).unwrap();
    let reports: Vec<TaskRun> = (0..200)
        .map(|i| TaskRun {
            task_run: TaskRunId(rng.uuid()),
            pipeline_run: PipelineRunId(Uuid::from_u128(i % 7 + 1)),
            pipeline,
            task,
            organization: Some(org),
            task_type: TaskType::Query,
            state: RunState::Finished,
            is_successful: i % 3 != 0,
            duration_ms: i as u32,
            executed_at: Some(at),
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: false,
            is_final_task: false,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime
        .block_on(engine.report(&Caller::OPERATOR, reports.clone()))
        .unwrap();
    let oracle = Oracle::new(&reports);
    let op = Caller::operator_in(org);
    for entity in [
        EntityRef {
            kind: EntityKind::Task,
            uuid: task.0,
        },
        EntityRef {
            kind: EntityKind::Pipeline,
            uuid: pipeline.0,
        },
    ] {
        let second = at.second();
        let range = TimeRange::new(second, second).unwrap();
        assert_stats_match(
            &engine.stats(&op, entity, range).unwrap(),
            &oracle.stats(entity, second, second),
            &format!("{entity}"),
        );
        assert_eq!(
            Some(engine.last_run(&op, entity).unwrap()),
            oracle.stats(entity, second, second).last_run
        );
    }
    assert!(verify(engine.store()).unwrap().is_consistent());
}

/// Delivers `reports` at least once, the way a client that loses connections retries: the
/// stream is cut at random points and resent from an earlier point, each resent stretch in a
/// new order that keeps the order of reports of the same task run; stretches are resent
/// whole, so the last delivery of every task run is still its last report in the stream.
fn at_least_once(rng: &mut Rng, reports: &[TaskRun]) -> Vec<TaskRun> {
    let mut delivered = Vec::new();
    let mut sent = 0;
    while sent < reports.len() {
        let cut = (sent + rng.range(1, 400) as usize).min(reports.len());
        delivered.extend_from_slice(&reports[sent..cut]);
        if cut < reports.len() && rng.chance(60) {
            // The connection drops; unsure what was applied, the client resends from earlier.
            let back = rng.range(0, (cut - sent) as i64 + 50) as usize;
            let resend_from = cut.saturating_sub(back);
            delivered.extend(reordered(rng, &reports[resend_from..cut]));
        }
        sent = cut;
    }
    delivered
}

/// A random order of `reports` in which the reports of each task run keep their order.
fn reordered(rng: &mut Rng, reports: &[TaskRun]) -> Vec<TaskRun> {
    let mut slots: Vec<usize> = (0..reports.len()).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // slots[i] is where report i goes; give each task run its slots in ascending order.
    let mut by_run: HashMap<TaskRunId, Vec<usize>> = HashMap::new();
    for (i, report) in reports.iter().enumerate() {
        by_run.entry(report.task_run).or_default().push(i);
    }
    let mut placed: Vec<Option<TaskRun>> = vec![None; reports.len()];
    for indices in by_run.values() {
        let mut targets: Vec<usize> = indices.iter().map(|&i| slots[i]).collect();
        targets.sort_unstable();
        for (&i, target) in indices.iter().zip(targets) {
            placed[target] = Some(reports[i].clone());
        }
    }
    placed.into_iter().map(Option::unwrap).collect()
}

/// One clean delivery: the last report of each task run, once, in stream order.
fn final_reports(reports: &[TaskRun]) -> Vec<TaskRun> {
    let last: HashMap<TaskRunId, usize> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| (r.task_run, i))
        .collect();
    reports
        .iter()
        .enumerate()
        .filter(|(i, r)| last[&r.task_run] == *i)
        .map(|(_, r)| r.clone())
        .collect()
}

/// An engine fed `reports` in batches of random sizes.
fn engine_with(rng: &mut Rng, reports: &[TaskRun]) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut rest = reports;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at((rng.range(1, 60) as usize).min(rest.len()));
        rest = tail;
        runtime
            .block_on(engine.report(&Caller::OPERATOR, batch.to_vec()))
            .unwrap();
    }
    (engine, dir)
}

/// A log entry without its output, whose ciphertext differs between databases (each has its
/// own organization keys); the output's length stands in for it.
fn comparable(entry: &runledger::model::LogEntry) -> String {
    let mut entry = entry.clone();
    let length = entry.output.len();
    entry.output.clear();
    format!("{entry:?} output of {length} bytes")
}

/// Asserts that two engines answer every question about `pipelines` and their tasks the same:
/// last runs, random range stats and aggregated stats, and whole logs. Returns how many of the
/// ranges compared held runs.
fn assert_same_answers(
    rng: &mut Rng,
    seed: u64,
    messy: &Engine,
    clean: &Engine,
    pipelines: &[PipelineSpec],
) -> usize {
    let whole = TimeRange::new(
        second_of("0001-01-01 00:00:00"),
        second_of("9999-12-31 23:59:59"),
    )
    .unwrap();
    let mut compared = 0;
    for pipeline in pipelines {
        let op = Caller::operator_in(pipeline.org);
        for entity in pipeline.entities() {
            let context = format!("seed {seed}, {entity}");
            let last = |e: &Engine| e.last_run(&op, entity).map_err(|e| e.to_string());
            assert_eq!(last(messy), last(clean), "{context}");
            for _ in 0..40 {
                let (mut from, mut to) = (random_second(rng), random_second(rng));
                if from > to {
                    std::mem::swap(&mut from, &mut to);
                }
                let range = TimeRange::new(from, to).unwrap();
                let stats = |e: &Engine| e.stats(&op, entity, range).map_err(|e| e.to_string());
                let answer = stats(messy);
                if answer.as_ref().is_ok_and(|s| s.tally.runs() > 0) {
                    compared += 1;
                }
                assert_eq!(answer, stats(clean), "{context} {from}..={to}");
                let period = *rng.pick(&Period::ALL);
                let n = BucketCount::new(rng.range(1, 200) as u32).unwrap();
                let aggregated = |e: &Engine| {
                    e.aggregated_stats(&op, entity, period, from, n, Fill::Sparse)
                        .map_err(|e| e.to_string())
                };
                assert_eq!(aggregated(messy), aggregated(clean), "{context} {period:?}");
            }
        }
        let log = |e: &Engine| -> Vec<String> {
            let (mut entries, mut cursor) = (Vec::new(), None);
            loop {
                match e.logs(&op, pipeline.id, whole, cursor, 1_000) {
                    Ok(page) => {
                        entries.extend(page.entries.iter().map(comparable));
                        match page.next {
                            Some(next) => cursor = Some(next),
                            None => return entries,
                        }
                    }
                    Err(e) => return vec![e.to_string()],
                }
            }
        };
        let entries = log(messy);
        assert!(
            entries.len() > 100,
            "seed {seed}: {} log entries",
            entries.len()
        );
        let expected = log(clean);
        if let Some(at) =
            (0..entries.len().max(expected.len())).find(|&i| entries.get(i) != expected.get(i))
        {
            panic!(
                "seed {seed}: logs of {} differ first at entry {at} of {}/{}:\n{:?}\n{:?}",
                pipeline.id,
                entries.len(),
                expected.len(),
                entries.get(at),
                expected.get(at)
            );
        }
    }
    compared
}

#[test]
fn replaying_any_part_of_a_stream_equals_one_clean_delivery() {
    let seeds = seeds_or(3);
    for seed in 100..100 + seeds {
        let mut rng = Rng(seed);
        let (pipelines, stream) = generate(&mut rng, 1_500);
        let delivered = at_least_once(&mut rng, &stream);
        assert!(
            delivered.len() > stream.len(),
            "the replay must resend something"
        );
        let (messy, _a) = engine_with(&mut rng, &delivered);
        let (clean, _b) = engine_with(&mut rng, &final_reports(&stream));
        let compared = assert_same_answers(&mut rng, seed, &messy, &clean, &pipelines);
        assert!(
            compared > 50,
            "seed {seed}: only {compared} ranges held runs"
        );
        for engine in [&messy, &clean] {
            assert!(
                verify(engine.store()).unwrap().is_consistent(),
                "seed {seed}"
            );
        }
    }
}

/// A hostile organization's writes, derived from a victim's reports: its UUIDs reused in the
/// attacker's name, reports naming the victim's organization, UUIDs used as both pipeline and
/// task, re-report storms and registrations of the victim's UUIDs.
fn hostile_writes(
    rng: &mut Rng,
    victim_reports: &[TaskRun],
    attacker: OrgId,
    victim: OrgId,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for _ in 0..60 {
        let sample =
            |rng: &mut Rng| victim_reports[rng.below(victim_reports.len() as u64) as usize].clone();
        let write = match rng.below(6) {
            // The victim's UUIDs, reported as the attacker's own, with other outcomes.
            0 | 1 => Write::Report(
                attacker,
                (0..rng.range(1, 40))
                    .map(|_| {
                        let mut run = sample(rng);
                        run.organization = if rng.chance(50) { Some(attacker) } else { None };
                        run.is_successful = rng.chance(50);
                        run.duration_ms = rng.below(1_000) as u32;
                        run
                    })
                    .collect(),
            ),
            // Naming the victim's organization: refused whole.
            2 => {
                let mut run = sample(rng);
                run.organization = Some(victim);
                Write::Report(attacker, vec![run])
            }
            // A UUID as pipeline and task at once, or first as one and then as the other.
            3 => {
                let (mut first, mut second) = (sample(rng), sample(rng));
                first.organization = Some(attacker);
                second.organization = Some(attacker);
                if rng.chance(50) {
                    first.task = TaskId(first.pipeline.0);
                    Write::Report(attacker, vec![first])
                } else {
                    second.pipeline = PipelineId(first.task.0);
                    Write::Report(attacker, vec![first, second])
                }
            }
            // A storm: one task run reported hundreds of times in one batch.
            4 => {
                let run = sample(rng);
                let storm = (0..rng.range(50, 500))
                    .map(|i| TaskRun {
                        organization: Some(attacker),
                        is_successful: i % 3 != 0,
                        duration_ms: i as u32,
                        executed_at: Some(instant(rng)),
                        state: RunState::Finished,
                        ..run.clone()
                    })
                    .collect();
                Write::Report(attacker, storm)
            }
            // The victim's pipeline registered by the attacker, with the victim's tasks.
            _ => {
                let run = sample(rng);
                Write::Register(
                    attacker,
                    PipelineDefinition {
                        pipeline: run.pipeline,
                        organization: None,
                        name: "mine now".into(),
                        tasks: vec![TaskDefinition {
                            task: run.task,
                            task_type: run.task_type,
                            name: String::new(),
                            is_initial: true,
                        }],
                    },
                )
            }
        };
        writes.push(write);
    }
    writes
}

/// A write of one organization.
enum Write {
    Report(OrgId, Vec<TaskRun>),
    Register(OrgId, PipelineDefinition),
}

#[test]
fn another_organizations_hostile_writes_never_change_our_answers() {
    let seeds = seeds_or(3);
    for seed in 300..300 + seeds {
        let mut rng = Rng(seed);
        let (mut pipelines, mut ours) = generate(&mut rng, 1_500);
        let (victim, attacker) = (OrgId(rng.uuid()), OrgId(rng.uuid()));
        for pipeline in &mut pipelines {
            pipeline.org = victim;
        }
        for run in &mut ours {
            run.organization = Some(victim);
        }
        let theirs = hostile_writes(&mut rng, &ours, attacker, victim);

        // Our batches in order, their writes interleaved at random points; several reports
        // queued at once, so that group commits mix both organizations in one transaction.
        let dir = tempfile::tempdir().unwrap();
        let engine =
            Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut writes: Vec<Write> = Vec::new();
        let mut rest = ours.as_slice();
        let mut theirs = theirs.into_iter().peekable();
        while !rest.is_empty() || theirs.peek().is_some() {
            if rest.is_empty() || (theirs.peek().is_some() && rng.chance(40)) {
                writes.extend(theirs.next());
            } else {
                let (batch, tail) = rest.split_at((rng.range(1, 60) as usize).min(rest.len()));
                rest = tail;
                writes.push(Write::Report(victim, batch.to_vec()));
            }
        }
        // Each outcome of a write: ours must be accepted; theirs may be refused, but never
        // with an internal error.
        let (mut refused, mut accepted) = (0, 0);
        let mut count = |mine: bool, outcome: Result<(), Error>| match outcome {
            Ok(()) => accepted += u32::from(!mine),
            Err(error) => {
                assert!(!mine, "seed {seed}: our write refused: {error}");
                assert!(!matches!(error, Error::Internal(_)), "seed {seed}: {error}");
                refused += 1;
            }
        };
        runtime.block_on(async {
            let mut queued = Vec::new();
            for write in writes {
                match write {
                    Write::Report(org, runs) => {
                        let mine = org == victim;
                        match engine.submit_report(&Caller::operator_in(org), runs).await {
                            Ok(durable) => queued.push((mine, durable)),
                            Err(error) => count(mine, Err(error)),
                        }
                    }
                    Write::Register(org, definition) => {
                        let outcome = engine
                            .register_pipeline(&Caller::operator_in(org), definition)
                            .await;
                        count(false, outcome.map(|_| ()));
                    }
                }
                if rng.chance(30) {
                    for (mine, durable) in queued.drain(..) {
                        count(mine, durable.await.map(|_| ()));
                    }
                }
            }
            for (mine, durable) in queued {
                count(mine, durable.await.map(|_| ()));
            }
        });
        assert!(
            refused > 5 && accepted > 5,
            "seed {seed}: {refused} refused, {accepted} accepted"
        );

        let (clean, _dir) = engine_with(&mut rng, &ours);
        let compared = assert_same_answers(&mut rng, seed, &engine, &clean, &pipelines);
        assert!(
            compared > 20,
            "seed {seed}: only {compared} ranges held runs"
        );
        let report = verify(engine.store()).unwrap();
        assert!(
            report.is_consistent(),
            "seed {seed}: {:?}",
            report.differences
        );
    }
}

/// One write sequence: registrations, reports in batches (out of order, re-reported, some
/// refused) and pipeline runs started, each with the instant the engine stamped on it.
fn write_sequence(rng: &mut Rng, pipelines: &[PipelineSpec], reports: &[TaskRun]) -> Vec<WriteOp> {
    let mut at = second_of("2024-06-01 00:00:00") * MICROS_PER_SECOND;
    let mut stamp = |rng: &mut Rng| {
        at += rng.range(0, 5_000_000);
        Timestamp::from_micros(at).unwrap()
    };
    let mut ops = Vec::new();
    for pipeline in pipelines.iter().filter(|_| rng.chance(70)) {
        ops.push(WriteOp::Register(PipelineDefinition {
            pipeline: pipeline.id,
            organization: Some(pipeline.org),
            name: format!("pipeline {}", pipeline.id.0),
            tasks: pipeline
                .tasks
                .iter()
                .enumerate()
                .map(|(i, (task, task_type))| TaskDefinition {
                    task: *task,
                    task_type: *task_type,
                    name: format!("task {i}"),
                    is_initial: i == 0,
                })
                .collect(),
        }));
    }
    let mut rest = reports;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at((rng.range(1, 30) as usize).min(rest.len()));
        rest = tail;
        ops.push(WriteOp::Report {
            runs: batch.to_vec(),
            at: stamp(rng),
        });
        if rng.chance(3) {
            // Refused: a pipeline's UUID reported as a task.
            let mut clash = batch[0].clone();
            clash.task_run = TaskRunId(rng.uuid());
            clash.task = TaskId(clash.pipeline.0);
            ops.push(WriteOp::Report {
                runs: vec![clash],
                at: stamp(rng),
            });
        }
        if rng.chance(5) {
            let pipeline = rng.pick(pipelines);
            ops.push(WriteOp::StartPipelineRun {
                // Refused when the pipeline was never registered, or is made up.
                pipeline: if rng.chance(20) {
                    PipelineId(rng.uuid())
                } else {
                    pipeline.id
                },
                org: pipeline.org,
                pipeline_run: PipelineRunId(rng.uuid()),
                at: stamp(rng),
            });
        }
    }
    ops
}

/// `ops` applied to a new store whose transactions may use `threads` threads, in commits of
/// random sizes up to `largest` operations; the outcome of each operation, in order, as text.
fn apply_grouped(
    rng: &mut Rng,
    ops: &[WriteOp],
    largest: i64,
    threads: usize,
) -> (Store, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        writer_threads: threads,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let mut outcomes = Vec::new();
    let mut rest = ops;
    while !rest.is_empty() {
        let (group, tail) = rest.split_at((rng.range(1, largest) as usize).min(rest.len()));
        rest = tail;
        for outcome in store.apply_now(group).unwrap() {
            outcomes.push(format!("{outcome:?}"));
        }
    }
    (store, outcomes, dir)
}

/// `ops` applied to a new store in one transaction written out in chunks of random sizes (a
/// bulk load); the outcome of each operation, in order, as text.
fn apply_bulk(
    rng: &mut Rng,
    ops: &[WriteOp],
    threads: usize,
) -> (Store, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        writer_threads: threads,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let mut outcomes = Vec::new();
    let mut rest = ops;
    store
        .apply_chunks(
            || {
                let (chunk, tail) = rest.split_at((rng.range(1, 60) as usize).min(rest.len()));
                rest = tail;
                Ok((!chunk.is_empty()).then(|| runledger::store::Chunk {
                    ops: chunk.to_vec(),
                    new_task_runs: false,
                }))
            },
            |_, done| {
                outcomes.extend(done.iter().map(|outcome| format!("{outcome:?}")));
                Ok(())
            },
        )
        .unwrap();
    (store, outcomes, dir)
}

#[test]
fn one_write_sequence_grouped_two_ways_gives_identical_tables() {
    let seeds = seeds_or(3);
    for seed in 300..300 + seeds {
        let mut rng = Rng(seed);
        let (pipelines, reports) = generate(&mut rng, 2_000);
        let ops = write_sequence(&mut rng, &pipelines, &reports);
        let (one_by_one, outcomes_a, _a) = apply_grouped(&mut rng, &ops, 1, 1);
        let (grouped, outcomes_b, dir_b) = apply_grouped(&mut rng, &ops, 40, 2);
        assert_eq!(outcomes_a, outcomes_b, "seed {seed}: outcomes differ");
        // Commits large enough for a transaction to use its helper threads.
        let (large, outcomes_c, _c) = apply_grouped(&mut rng, &ops, 800, 4);
        assert_eq!(
            outcomes_a, outcomes_c,
            "seed {seed}: outcomes differ with 4 threads"
        );
        let (bulk, outcomes_d, _d) = apply_bulk(&mut rng, &ops, 2);
        assert_eq!(
            outcomes_a, outcomes_d,
            "seed {seed}: outcomes differ in bulk"
        );
        assert!(
            outcomes_a.iter().any(|o| o.starts_with("Err")),
            "seed {seed}: the sequence should include refused writes"
        );
        let rollups = |store: &Store| {
            store
                .table_sizes()
                .unwrap()
                .into_iter()
                .find(|t| t.name == "rollups")
                .unwrap()
                .entries
        };
        assert!(
            rollups(&grouped) > 0,
            "seed {seed}: no pipeline was dense enough for finer rollups"
        );
        let digests = [&one_by_one, &grouped, &large, &bulk].map(|store| store.digest().unwrap());
        for other in &digests[1..] {
            assert_eq!(
                digests[0].tables, other.tables,
                "seed {seed}: the same writes grouped differently, or applied by more threads, left different tables"
            );
            assert_eq!(digests[0].whole(), other.whole());
        }
        for store in [&one_by_one, &grouped, &large, &bulk] {
            assert!(verify(store).unwrap().is_consistent(), "seed {seed}");
        }

        // Repacking (after a bulk import) changes the pages, not a byte of any table.
        grouped.shutdown();
        drop(grouped);
        let repacked = runledger::store::repack::repack(dir_b.path()).unwrap();
        assert!(repacked.after > 0);
        let reopened = Store::open(dir_b.path(), StoreOptions::default()).unwrap();
        assert_eq!(
            reopened.digest().unwrap(),
            digests[1],
            "seed {seed}: repacking"
        );
        assert!(verify(&reopened).unwrap().is_consistent(), "seed {seed}");
    }
}

/// Whole-day widening of a range's edges that fall before the cut, as the contract answers
/// them, and whether it changed the range.
fn widened(from: i64, to: i64, cut: i64) -> (i64, i64, bool) {
    let day = |s: i64| s - s.rem_euclid(86_400);
    let from2 = if from < cut { day(from) } else { from };
    let to2 = if to < cut { day(to) + 86_399 } else { to };
    (from2, to2, (from2, to2) != (from, to))
}

fn check_pruning(seed: u64) {
    let mut rng = Rng(seed);
    let (pipelines, reports) = generate(&mut rng, 2_000);
    let (engine, dir) = engine_with(&mut rng, &reports);
    let mut oracle = Oracle::new(&reports);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // A cut among the runs: a midnight near one of them.
    let near = oracle.finished[rng.below(oracle.finished.len() as u64) as usize]
        .executed_at
        .unwrap()
        .second();
    let cut = near - near.rem_euclid(86_400) + 86_400 * rng.range(0, 2);
    let context = |what: String| format!("seed {seed}, cut {cut}: {what}");
    // A prune stopped after its first small step (as by a crash) leaves a database that
    // verifies; pruning again finishes the job.
    let step = WriteOp::Prune {
        before: cut,
        limit: 7,
    };
    let first = engine.store().apply_now(&[step]).unwrap().pop().unwrap();
    assert!(matches!(first, Ok(WriteOutcome::Pruned(p)) if p.task_runs <= 7 && p.cut == cut));
    let partial = verify(engine.store()).unwrap();
    assert!(
        partial.is_consistent(),
        "{}",
        context(format!("part way: {:?}", partial.differences))
    );
    let mut summary = runtime.block_on(engine.prune(cut)).unwrap();
    if let Ok(WriteOutcome::Pruned(p)) = first {
        summary.task_runs += p.task_runs;
    }
    let kept = oracle
        .finished
        .iter()
        .filter(|r| r.executed_at.unwrap().second() >= cut)
        .count();
    assert_eq!(
        summary.task_runs as usize,
        oracle.finished.len() - kept,
        "{}",
        context("task runs pruned".into())
    );
    let report = verify(engine.store()).unwrap();
    assert!(
        report.is_consistent(),
        "{}",
        context(format!("{:?}", report.differences))
    );
    assert_eq!(report.task_runs as usize, kept);

    // A report before the cut is refused, nothing applied; one after it is taken.
    let spec = &pipelines[0];
    let mut late = reports
        .iter()
        .find(|r| r.pipeline == spec.id && r.finished_at().is_some())
        .unwrap()
        .clone();
    late.task_run = TaskRunId(rng.uuid());
    // (A new pipeline run: one whose task runs were all pruned would start afresh, as the
    // README says, where the oracle would continue it.)
    late.pipeline_run = PipelineRunId(rng.uuid());
    late.executed_at = Timestamp::from_micros((cut - 1) * MICROS_PER_SECOND);
    let refused = runtime
        .block_on(engine.report(&Caller::OPERATOR, vec![late.clone()]))
        .unwrap_err();
    assert!(
        refused.to_string().contains("retention cut"),
        "{}",
        context(refused.to_string())
    );
    late.executed_at = Timestamp::from_micros((cut + 3_600) * MICROS_PER_SECOND + 5);
    runtime
        .block_on(engine.report(&Caller::OPERATOR, vec![late.clone()]))
        .unwrap();
    let mut all = reports.clone();
    all.push(late);
    oracle = Oracle::new(&all);
    assert!(verify(engine.store()).unwrap().is_consistent());

    for pipeline in &pipelines {
        let op = Caller::operator_in(pipeline.org);
        for entity in pipeline.entities() {
            if oracle.runs(entity).is_empty() {
                continue;
            }
            // Aggregated stats by day and coarser stay exact for all time.
            for _ in 0..10 {
                let period = *rng.pick(&Period::ALL);
                let n = rng.range(1, 60) as u32;
                let date_from = if rng.chance(50) {
                    cut - rng.range(0, 200 * 86_400)
                } else {
                    random_second(&mut rng)
                };
                let got: Vec<_> = engine
                    .aggregated_stats(
                        &op,
                        entity,
                        period,
                        date_from,
                        BucketCount::new(n).unwrap(),
                        Fill::Sparse,
                    )
                    .unwrap()
                    .iter()
                    .map(|b| (b.start, b.last_second, b.tally, b.percentiles))
                    .collect();
                assert_buckets_match(
                    &got,
                    &oracle.aggregated(entity, period, date_from, n),
                    &context(format!("aggregated {entity} {period:?} from {date_from}")),
                );
            }
            // Range stats: exact, except edges before the cut, widened to whole days.
            for _ in 0..20 {
                let around = |rng: &mut Rng| cut + rng.range(-40 * 86_400, 10 * 86_400);
                let (mut from, mut to) = (around(&mut rng), around(&mut rng));
                if from > to {
                    std::mem::swap(&mut from, &mut to);
                }
                let got = engine
                    .stats(&op, entity, TimeRange::new(from, to).unwrap())
                    .unwrap();
                let (wide_from, wide_to, was_widened) = widened(from, to, cut);
                let mut expected = oracle.stats(entity, wide_from, wide_to);
                let what = context(format!("stats {entity} {from}..={to}"));
                // The last run at or before `to` is the entity's latest (always kept) or one
                // found among the runs kept since the cut; one before the cut is not kept.
                let runs = oracle.runs(entity);
                let latest = runs.iter().map(|r| (r.at, r.id)).max().unwrap();
                let mut last_lost = false;
                if latest.0.second() > wide_to
                    && expected
                        .last_run
                        .is_some_and(|r| r.executed_at.second() < cut)
                {
                    expected.last_run = None;
                    last_lost = true;
                }
                assert_stats_match(&got, &expected, &what);
                assert_eq!(got.approximate, was_widened || last_lost, "{what}");
            }
        }
        // Logs: nothing before the cut, everything after it.
        let whole = TimeRange::new(MIN_SECOND, MAX_SECOND).unwrap();
        let op = Caller::operator_in(pipeline.org);
        let mut cursor = None;
        let mut entries = Vec::new();
        loop {
            let page = engine.logs(&op, pipeline.id, whole, cursor, 1_000).unwrap();
            entries.extend(page.entries);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected = oracle
            .finished
            .iter()
            .filter(|r| r.pipeline == pipeline.id && r.executed_at.unwrap().second() >= cut)
            .count();
        assert_eq!(entries.len(), expected, "{}", context("logs".into()));
        assert!(entries.iter().all(|e| e.executed_at.second() >= cut));
    }

    // Pruning again to the same cut finds nothing; a later cut prunes more.
    let again = runtime.block_on(engine.prune(cut)).unwrap();
    assert_eq!((again.task_runs, again.pipeline_runs), (0, 0));
    let later = runtime.block_on(engine.prune(cut + 30 * 86_400)).unwrap();
    assert_eq!(later.cut, cut + 30 * 86_400);
    assert!(verify(engine.store()).unwrap().is_consistent());

    // What pruning keeps cannot change unnoticed: lose one month record before the cut.
    drop(engine);
    {
        use redb::ReadableTable;
        use runledger::store::tables::{ROLLUP_KEY_LEN, ROLLUPS, rollup_key};
        use runledger::time::Level;
        let db = redb::Database::open(dir.path().join(runledger::store::DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rollups = txn.open_table(ROLLUPS).unwrap();
            let low = rollup_key(Level::Month, MIN_SECOND, runledger::store::EntityId(0));
            let high = rollup_key(
                Level::Month,
                later.cut - 31 * 86_400,
                runledger::store::EntityId(0),
            );
            let key = rollups
                .range::<&[u8; ROLLUP_KEY_LEN]>(&low..&high)
                .unwrap()
                .next()
                .map(|entry| *entry.unwrap().0.value());
            match key {
                Some(key) => {
                    rollups.remove(&key).unwrap();
                }
                None => return, // no whole month before the cut in this seed
            }
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let report = verify(&store).unwrap();
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.contains("changed since it was made")),
        "{}",
        context(format!("{:?}", report.differences))
    );
}

#[test]
fn pruning_keeps_day_answers_exact_and_answers_finer_edges_at_whole_days() {
    for seed in 0..seeds_or(3) {
        check_pruning(1_000 + seed);
    }
}

/// What an import told its sink.
#[derive(Default)]
struct Told {
    rejected: Vec<String>,
    notes: Vec<String>,
}

impl runledger::cli::import::ImportSink for Told {
    fn rejected(&mut self, line: String) {
        self.rejected.push(line);
    }

    fn note(&mut self, message: String) {
        self.notes.push(message);
    }
}

/// The import's memory budgets tried: the default, and one so small that the runs are sorted in
/// many parts on disk and merged.
const BUDGETS: [usize; 2] = [384 << 20, 24 << 10];

/// An engine that imported `reports` as an import file, with `runledger import`'s own reader,
/// holding at most `budget` bytes of runs in memory; and what the import told.
fn engine_importing(reports: &[TaskRun], budget: usize) -> (Engine, Told, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.ndjson");
    let lines: Vec<String> = reports
        .iter()
        .map(runledger::workload::to_json_line)
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let engine = Engine::new(Store::open(&data, StoreOptions::default()).unwrap()).unwrap();
    let mut told = Told::default();
    let settings = runledger::cli::import::ImportSettings {
        sort_budget: budget,
        chunk_runs: 500,
    };
    runledger::cli::import::import_files_with(
        &engine,
        runledger::cli::import::ImportFormat::Runledger,
        &[file],
        &mut told,
        settings,
    )
    .unwrap();
    assert!(
        !data.join("import.sort").exists(),
        "the sorted parts are removed"
    );
    (engine, told, dir)
}

/// A report as an export holds it: no errors (`to_json_line` writes none), and a task's reports
/// agree on whether it is initial (the generator draws that per report).
fn as_exported(run: &mut TaskRun) {
    run.errors.clear();
    run.is_initial_task = run.task.0.as_bytes()[0] % 3 == 0;
}

#[test]
fn an_import_answers_alike_whatever_order_its_file_is_in() {
    for seed in 300..300 + seeds_or(2) {
        let mut rng = Rng(seed);
        let (pipelines, stream) = generate(&mut rng, 1_500);
        let mut delivered = at_least_once(&mut rng, &stream);
        // An import file holds finished runs (and `to_json_line` writes no errors).
        delivered.retain(|run| run.state == runledger::model::RunState::Finished);
        delivered.iter_mut().for_each(as_exported);
        // In time order, shuffled, and by task-run UUID (the platform's export), the reports
        // of each task run in their order.
        let mut by_uuid = delivered.clone();
        by_uuid.sort_by_key(|run| run.task_run);
        let shapes = [delivered.clone(), reordered(&mut rng, &delivered), by_uuid];
        let (clean, _c) = engine_with(&mut rng, &final_reports(&delivered));
        for (shape, reports) in shapes.iter().enumerate() {
            for budget in BUDGETS {
                let (imported, told, _i) = engine_importing(reports, budget);
                assert!(told.rejected.is_empty(), "{:?}", told.rejected);
                let compared = assert_same_answers(&mut rng, seed, &imported, &clean, &pipelines);
                assert!(
                    compared > 50,
                    "seed {seed}, shape {shape}: {compared} ranges held runs"
                );
                assert!(
                    verify(imported.store()).unwrap().is_consistent(),
                    "seed {seed}"
                );
            }
        }
    }
}

#[test]
fn an_import_sorts_its_runs_and_keeps_the_order_of_a_task_runs_reports() {
    for seed in 500..500 + seeds_or(2) {
        let mut rng = Rng(seed);
        let (pipelines, stream) = generate(&mut rng, 2_000);
        let mut reports: Vec<TaskRun> = final_reports(&stream)
            .into_iter()
            .filter(|run| run.state == runledger::model::RunState::Finished)
            .collect();
        reports.iter_mut().for_each(as_exported);
        // A few task runs corrected later in the file (another outcome, another time).
        let mut corrected = Vec::new();
        for run in &reports {
            if !rng.chance(3) {
                continue;
            }
            let mut later = run.clone();
            later.is_successful = !later.is_successful;
            later.duration_ms = rng.below(100_000) as u32;
            later.executed_at = Some(instant(&mut rng));
            corrected.push(later);
        }
        assert!(corrected.len() > 20, "seed {seed}");
        let mut file = reports.clone();
        file.extend(corrected);
        let (clean, _c) = engine_with(&mut rng, &final_reports(&file));
        let mut by_uuid = file.clone();
        by_uuid.sort_by_key(|run| run.task_run); // stable: a run's correction stays after it
        for reports in [reordered(&mut rng, &file), by_uuid] {
            for budget in BUDGETS {
                let (imported, told, _i) = engine_importing(&reports, budget);
                assert!(told.rejected.is_empty(), "{:?}", told.rejected);
                assert!(
                    told.notes.is_empty(),
                    "seed {seed}: the runs are sorted, not kept in order: {:?}",
                    told.notes
                );
                assert_same_answers(&mut rng, seed, &imported, &clean, &pipelines);
                assert!(verify(imported.store()).unwrap().is_consistent());
            }
        }
    }
}

#[test]
fn an_import_whose_order_decides_an_outcome_is_written_as_it_is() {
    let mut rng = Rng(77);
    let (pipelines, stream) = generate(&mut rng, 1_500);
    let mut reports: Vec<TaskRun> = final_reports(&stream)
        .into_iter()
        .filter(|run| run.state == runledger::model::RunState::Finished)
        .collect();
    reports.iter_mut().for_each(|run| run.errors.clear());
    // Late in the file, a task reported under another pipeline than its own: refused, since
    // the first pipeline to report it owns it. Sorted by pipeline, it could come first.
    let other = pipelines
        .iter()
        .find(|p| p.org == pipelines[0].org && p.id != pipelines[0].id)
        .expect("two pipelines of one organization");
    let mut stray = reports
        .iter()
        .find(|run| run.pipeline == pipelines[0].id)
        .unwrap()
        .clone();
    stray.pipeline = other.id;
    stray.task_run = TaskRunId(rng.uuid());
    stray.pipeline_run = PipelineRunId(rng.uuid());
    let mut reports = reordered(&mut rng, &reports);
    // The other pipeline read first, so that sorting by pipeline would put the stray report
    // ahead of its task's own.
    let first_of_other = reports.iter().position(|r| r.pipeline == other.id).unwrap();
    let first = reports.remove(first_of_other);
    reports.insert(0, first);
    reports.push(stray);
    // The same lines applied one by one, in the file's order.
    let one_by_one = tempfile::tempdir().unwrap();
    let expected =
        Engine::new(Store::open(one_by_one.path(), StoreOptions::default()).unwrap()).unwrap();
    let refused = expected
        .import_now(reports.clone())
        .unwrap()
        .iter()
        .filter(|outcome| outcome.is_err())
        .count();
    assert_eq!(refused, 1);
    for budget in BUDGETS {
        let (imported, told, _i) = engine_importing(&reports, budget);
        assert_eq!(told.rejected.len(), 1, "{:?}", told.rejected);
        assert!(
            told.notes.iter().any(|n| n.contains("input's order")),
            "{:?}",
            told.notes
        );
        assert_same_answers(&mut rng, 77, &imported, &expected, &pipelines);
    }
}

/// One OpenLineage event as the oracle emits it.
struct Emitted {
    body: Vec<u8>,
}

/// Random Airflow-shaped histories: DAG runs (the DAG's own START and terminal events, without a
/// parent) whose task runs carry parent and root facets, some without a START (duration 0),
/// some never finishing, some ending before they started; plus a standalone job run many times.
/// Returns the pipelines (for the comparison), the events in emission order, and the final task
/// runs a brute force derives from them.
fn lineage_history(rng: &mut Rng, org: OrgId) -> (Vec<PipelineSpec>, Vec<Emitted>, Vec<TaskRun>) {
    let job_uuid = |kind: &str, name: &str| {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("openlineage:{kind}:airflow/{name}").as_bytes(),
        )
    };
    let event = |kind: &str, at: Timestamp, run: Uuid, job: &str, parent: Option<(Uuid, &str)>| {
        let mut facets = serde_json::json!({});
        if let Some((parent, parent_job)) = parent {
            let of = serde_json::json!({"run": {"runId": parent}, "job": {"namespace": "airflow", "name": parent_job}});
            let mut facet = of.clone();
            facet["root"] = of;
            facets["parent"] = facet;
        }
        if kind == "FAIL" {
            facets["errorMessage"] = serde_json::json!({"message": format!("{job} failed")});
        }
        let body = serde_json::json!({
            "eventType": kind,
            "eventTime": runledger::time::format_rfc3339(at),
            "producer": "oracle",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": run, "facets": facets},
            "job": {"namespace": "airflow", "name": job},
        });
        Emitted {
            body: serde_json::to_vec(&body).unwrap(),
        }
    };
    let micros = |at: Timestamp, delta: i64| Timestamp::from_micros(at.micros() + delta).unwrap();
    let mut pipelines = Vec::new();
    let mut events = Vec::new();
    let mut finals = Vec::new();
    let mut final_run = |run: Uuid,
                         pipeline_run: Uuid,
                         pipeline: &str,
                         task: &str,
                         start: Option<Timestamp>,
                         end: Option<(Timestamp, &str)>| {
        let mut task_run = TaskRun {
            task_run: TaskRunId(run),
            pipeline_run: PipelineRunId(pipeline_run),
            pipeline: PipelineId(job_uuid("pipeline", pipeline)),
            task: TaskId(job_uuid("task", task)),
            organization: Some(org),
            task_type: TaskType::Processor,
            state: RunState::Running,
            is_successful: false,
            duration_ms: 0,
            executed_at: None,
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: false,
            is_final_task: false,
        };
        if let Some((at, kind)) = end {
            task_run.state = RunState::Finished;
            task_run.executed_at = Some(at);
            task_run.is_successful = kind == "COMPLETE";
            task_run.duration_ms = start.map_or(0, |start| {
                ((at.micros() - start.micros()).max(0) / 1_000) as u32
            });
            if kind == "FAIL" {
                task_run.errors.push(TaskError {
                    code: "openlineage.errorMessage".into(),
                    severity: "error".into(),
                    message: format!("{task} failed"),
                });
            }
        }
        finals.push(task_run);
    };
    for dag in ["etl_daily", "ml_train"] {
        let tasks: Vec<String> = (0..4).map(|i| format!("{dag}.task_{i}")).collect();
        let mut spec = PipelineSpec {
            id: PipelineId(job_uuid("pipeline", dag)),
            org,
            tasks: tasks
                .iter()
                .map(|t| (TaskId(job_uuid("task", t)), TaskType::Processor))
                .collect(),
            runs: Vec::new(),
        };
        for _ in 0..45 {
            let dag_run = rng.uuid();
            let start = instant(rng);
            spec.runs.push((PipelineRunId(dag_run), start));
            events.push(event("START", start, dag_run, dag, None));
            let mut last = start;
            for task in &tasks {
                let run = rng.uuid();
                let task_start = micros(start, rng.range(0, 600_000_000));
                let started = !rng.chance(10);
                if started {
                    events.push(event("START", task_start, run, task, Some((dag_run, dag))));
                }
                if rng.chance(20) {
                    events.push(event(
                        "RUNNING",
                        micros(task_start, 1),
                        run,
                        task,
                        Some((dag_run, dag)),
                    ));
                }
                let end = if rng.chance(92) {
                    // Now and then an end before the start (clocks disagree): duration 0.
                    let at = micros(task_start, rng.range(-5_000_000, 3_600_000_000));
                    let kind = *rng.pick(&["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "ABORT"]);
                    events.push(event(kind, at, run, task, Some((dag_run, dag))));
                    last = last.max(at);
                    Some((at, kind))
                } else {
                    None
                };
                if started || end.is_some() {
                    final_run(run, dag_run, dag, task, started.then_some(task_start), end);
                }
            }
            if rng.chance(90) {
                let kind = *rng.pick(&["COMPLETE", "FAIL"]);
                events.push(event(kind, micros(last, 1_000), dag_run, dag, None));
            }
        }
        pipelines.push(spec);
    }
    // A job without parent or children: each run a task run of its own one-task pipeline.
    let job = "nightly_export";
    let mut spec = PipelineSpec {
        id: PipelineId(job_uuid("pipeline", job)),
        org,
        tasks: vec![(TaskId(job_uuid("task", job)), TaskType::Processor)],
        runs: Vec::new(),
    };
    for _ in 0..130 {
        let run = rng.uuid();
        let start = instant(rng);
        spec.runs.push((PipelineRunId(run), start));
        events.push(event("START", start, run, job, None));
        let at = micros(start, rng.range(0, 86_400_000_000));
        let kind = *rng.pick(&["COMPLETE", "FAIL"]);
        events.push(event(kind, at, run, job, None));
        final_run(run, run, job, job, Some(start), Some((at, kind)));
    }
    pipelines.push(spec);
    (pipelines, events, finals)
}

#[test]
fn openlineage_events_in_any_order_and_repeated_end_as_their_final_task_runs() {
    let org = OrgId(Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef));
    let caller = Caller::operator_in(org);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for seed in 500..500 + seeds_or(2) {
        let mut rng = Rng(seed);
        let (pipelines, events, finals) = lineage_history(&mut rng, org);
        // Shuffled, a fifth of the events delivered again at random later places.
        let mut delivered: Vec<&Emitted> = events.iter().collect();
        for event in &events {
            if rng.chance(20) {
                delivered.push(event);
            }
        }
        for i in (1..delivered.len()).rev() {
            delivered.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let dir = tempfile::tempdir().unwrap();
        let messy = Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
        for event in delivered {
            runtime
                .block_on(messy.record_lineage(&caller, &event.body))
                .unwrap();
        }
        let (clean, _b) = engine_with(&mut rng, &finals);
        let compared = assert_same_answers(&mut rng, seed, &messy, &clean, &pipelines);
        assert!(
            compared > 50,
            "seed {seed}: only {compared} ranges held runs"
        );
        assert!(
            verify(messy.store()).unwrap().is_consistent(),
            "seed {seed}"
        );
    }
}

/// Each alert's (rule, pipeline) transitions in order: firing or not, the pipeline run named,
/// the numbers compared, the time of the operation that made it.
type Transitions = HashMap<(Uuid, Uuid), Vec<(bool, Option<Uuid>, String, String)>>;

/// Alert rules as the oracle judges them: (organization, rule UUID, the rule).
type Rules = Vec<(OrgId, Uuid, runledger::alerts::Rule)>;

fn alert_rule(
    kind: &str,
    pipeline: Option<PipelineId>,
    params: serde_json::Value,
) -> runledger::alerts::Rule {
    runledger::alerts::Rule::parse(&serde_json::json!({
        "name": format!("{kind} rule"),
        "pipeline_uuid": pipeline.map(|p| p.0.to_string()),
        "kind": kind,
        "params": params,
        "webhook": {"url": "https://hooks.example.com/runledger", "secret": "a-signing-secret-of-32-bytes-000"},
    }))
    .unwrap()
}

/// Reports received one second apart from `start` on: each operation at its own second.
fn reports_from(start: &str) -> impl FnMut(Vec<TaskRun>) -> WriteOp {
    let mut tick = second_of(start);
    move |runs| {
        tick += 1;
        WriteOp::Report {
            runs,
            at: Timestamp::from_second(tick).unwrap(),
        }
    }
}

/// The write that makes a rule (as of the epoch) in an organization.
fn create_rule(
    org: OrgId,
    rule: Uuid,
    kind: &str,
    pipeline: Option<PipelineId>,
    params: serde_json::Value,
) -> WriteOp {
    WriteOp::CreateRule {
        org,
        rule,
        stored: Box::new(runledger::alerts::StoredRule {
            rule: alert_rule(kind, pipeline, params),
            created_at: 0,
            disabled_at: None,
        }),
    }
}

/// A brute-force verdict of an event rule over a pipeline's finished pipeline runs (raw), with
/// the pipeline run it names and, for `failure_rate` and `slow`, the numbers it compared.
fn brute_verdict(rule: &runledger::alerts::Rule, runs: &[Run]) -> Option<(Uuid, String)> {
    use runledger::alerts::RuleKind;
    let mut runs = runs.to_vec();
    runs.sort_by_key(|r| std::cmp::Reverse((r.at, r.id)));
    let latest = *runs.first()?;
    let second = latest.at.second();
    let in_seconds = |from: i64, to: i64| {
        runs.iter()
            .filter(move |r| (from..=to).contains(&r.at.second()))
            .copied()
    };
    match &rule.kind {
        RuleKind::Failed { consecutive } => {
            let n = *consecutive as usize;
            (runs.len() >= n && runs[..n].iter().all(|r| !r.ok))
                .then(|| (latest.id, format!("failed {n}")))
        }
        RuleKind::FailureRate {
            window,
            above,
            min_runs,
        } => {
            let tally = Oracle::tally(in_seconds(second - window.seconds + 1, second));
            let n = tally.successes + tally.failures;
            (n >= u64::from(*min_runs) && n > 0 && tally.failures as f64 / n as f64 > *above)
                .then(|| (latest.id, format!("{n} runs {} failed", tally.failures)))
        }
        RuleKind::Slow {
            factor,
            percentile,
            window,
        } => {
            let mut histogram = runledger::durations::Durations::default();
            for run in in_seconds(second - window.seconds, second - 1) {
                histogram.add_value(run.duration);
            }
            let p = histogram.percentiles()?;
            let reference = match percentile {
                50 => p.p50,
                90 => p.p90,
                95 => p.p95,
                _ => p.p99,
            };
            (latest.duration as f64 > reference as f64 * factor)
                .then(|| (latest.id, format!("p{percentile} {reference}")))
        }
        _ => None,
    }
}

/// What the engine noted of a transition, comparable with [`brute_verdict`].
fn noted(
    transition: &runledger::alerts::webhook::Transition,
) -> (bool, Option<Uuid>, String, String) {
    let o = &transition.observed;
    let numbers = match transition.kind.as_str() {
        "failed" => format!("failed {}", o["consecutive_failed"]),
        "failure_rate" => format!("{} runs {} failed", o["runs"], o["failed"]),
        _ => format!("p{} {}", o["percentile"], o["percentile_ms"]),
    };
    (
        transition.change == runledger::alerts::webhook::Change::Firing,
        transition
            .pipeline_run_uuid
            .as_ref()
            .map(|u| u.parse().unwrap()),
        numbers,
        transition.timestamp.clone(),
    )
}

#[test]
fn alert_transitions_equal_a_brute_force_evaluation_over_the_raw_runs() {
    use runledger::alerts::StoredRule;
    let seeds = seeds_or(3);
    for seed in 700..700 + seeds {
        let mut rng = Rng(seed);
        let (pipelines, mut reports) = generate(&mut rng, 1_500);
        // Some pipeline runs end last, in the same microsecond (ordered by UUID then).
        let shared: HashMap<PipelineId, Timestamp> = pipelines
            .iter()
            .map(|p| {
                let last = p.runs.iter().map(|(_, at)| *at).max().unwrap();
                (
                    p.id,
                    Timestamp::from_micros(last.micros() + 700 * MICROS_PER_SECOND).unwrap(),
                )
            })
            .collect();
        for report in &mut reports {
            if report.executed_at.is_some() && rng.chance(3) {
                report.executed_at = Some(shared[&report.pipeline]);
            }
        }
        // Some task runs are reported again, later, under another pipeline of their
        // organization: they leave the first one.
        let mut moves = std::collections::HashSet::new();
        let latest: Vec<usize> = (0..reports.len())
            .filter(|i| reports[*i].executed_at == Some(shared[&reports[*i].pipeline]))
            .collect();
        for _ in 0..reports.len() / 15 {
            // Half of them from the latest pipeline runs, where a rule notices.
            let from = if rng.chance(50) && !latest.is_empty() {
                *rng.pick(&latest)
            } else {
                rng.below(reports.len() as u64) as usize
            };
            let last = (from..reports.len())
                .rev()
                .find(|i| reports[*i].task_run == reports[from].task_run)
                .unwrap();
            if reports[last].finished_at().is_none() {
                continue;
            }
            let mut moved = reports[last].clone();
            let Some(other) = pipelines
                .iter()
                .find(|p| p.org == moved.organization.unwrap() && p.id != moved.pipeline)
            else {
                continue;
            };
            moved.pipeline = other.id;
            (moved.task, moved.task_type) = *rng.pick(&other.tasks);
            moved.pipeline_run = rng.pick(&other.runs).0;
            let to = last + 1 + rng.below((reports.len() - last) as u64) as usize;
            moves.insert((moved.task_run, moved.pipeline));
            reports.insert(to, moved);
        }
        let orgs: Vec<OrgId> = {
            let mut orgs: Vec<OrgId> = pipelines.iter().map(|p| p.org).collect();
            orgs.sort_by_key(|o| o.0);
            orgs.dedup();
            orgs
        };
        let some = |i: usize| Some(pipelines[i % pipelines.len()].id);
        // The last pipeline has no rule on a window: its rollups wait when a transaction
        // judges the others' rules. Its organization's rules on a window name its other
        // pipelines; every other organization's cover all of its pipelines.
        let last = pipelines.len() - 1;
        let windowed = |n: usize, rate: bool| {
            let (window, percentile) = (["24h", "1h"][n % 2], [95, 50][n % 2]);
            match rate {
                true => serde_json::json!({"window": window, "above": 0.3, "min_runs": 2}),
                false => serde_json::json!({"factor": 2, "percentile": percentile, "window": "7d"}),
            }
        };
        let mut rules: Rules = Vec::new();
        for (i, org) in orgs.iter().enumerate() {
            let mine = pipelines.iter().position(|p| p.org == *org).unwrap();
            let mut set = vec![
                alert_rule("failed", None, serde_json::json!({})),
                alert_rule("failed", some(mine), serde_json::json!({"consecutive": 3})),
            ];
            if mine != last {
                set.push(alert_rule(
                    "slow",
                    some(mine),
                    serde_json::json!({"factor": 1.5, "percentile": 90, "window": "1d"}),
                ));
            }
            if *org != pipelines[last].org {
                set.push(alert_rule("failure_rate", None, windowed(i, true)));
                set.push(alert_rule("slow", None, windowed(i, false)));
            } else {
                for n in (0..last).filter(|n| pipelines[*n].org == *org) {
                    set.push(alert_rule("failure_rate", some(n), windowed(n, true)));
                    set.push(alert_rule("slow", some(n), windowed(n, false)));
                }
            }
            rules.extend(set.into_iter().map(|rule| (*org, rng.uuid(), rule)));
        }
        // A rule made halfway and one deleted halfway: judged only while they exist.
        let late = (
            orgs[0],
            rng.uuid(),
            alert_rule("failed", None, serde_json::json!({"consecutive": 2})),
        );
        let doomed = rules[0].1;
        let create =
            |(org, uuid, rule): &(OrgId, Uuid, runledger::alerts::Rule)| WriteOp::CreateRule {
                org: *org,
                rule: *uuid,
                stored: Box::new(StoredRule {
                    rule: rule.clone(),
                    created_at: 0,
                    disabled_at: None,
                }),
            };
        // Each operation at its own second: a transition says which operation made it.
        let mut second = second_of("2024-06-01 00:00:00");
        let mut tick = || {
            second += 1;
            Timestamp::from_second(second).unwrap()
        };
        let mut ops: Vec<WriteOp> = rules.iter().map(create).collect();
        let mut rest = &reports[..];
        let halfway = reports.len() / 2;
        let mut sent = 0;
        while !rest.is_empty() {
            // A move is a report of its own, so that the pipeline it leaves is judged for it.
            let size = (rng.range(1, 20) as usize).min(rest.len());
            let size = match rest[..size]
                .iter()
                .position(|r| moves.contains(&(r.task_run, r.pipeline)))
            {
                Some(0) => 1,
                Some(at) => at,
                None => size,
            };
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            ops.push(WriteOp::Report {
                runs: batch.to_vec(),
                at: tick(),
            });
            let before = sent;
            sent += batch.len();
            if before < halfway && sent >= halfway {
                ops.push(create(&late));
                ops.push(WriteOp::DeleteRule {
                    org: rules[0].0,
                    rule: doomed,
                    at: tick(),
                });
            }
        }

        // The brute force: after each operation, every live rule judged anew for every
        // pipeline the operation reported on; the changes, per alert, in order.
        let mut live: Rules = Vec::new();
        let mut raw: HashMap<TaskRunId, TaskRun> = HashMap::new();
        let mut state: HashMap<(Uuid, Uuid), bool> = HashMap::new();
        let mut expected: Transitions = HashMap::new();
        // The same operations with the ends of deliveries among them, as a cluster's stream
        // has them: some right after the report that put their entry in the outbox (a node
        // applying both in one commit must judge that report first).
        let mut with_deliveries: Vec<WriteOp> = Vec::new();
        let mut handed_out = 0u64;
        for op in &ops {
            with_deliveries.push(op.clone());
            let before = handed_out;
            match op {
                WriteOp::CreateRule { org, rule, stored } => {
                    live.push((*org, *rule, stored.rule.clone()))
                }
                WriteOp::DeleteRule { rule, .. } => {
                    live.retain(|(_, uuid, _)| uuid != rule);
                    state.retain(|(uuid, _), _| uuid != rule);
                }
                WriteOp::Report { runs, at } => {
                    let when = runledger::time::format_rfc3339(*at);
                    let mut touched: Vec<(OrgId, PipelineId)> = Vec::new();
                    for run in runs {
                        if let Some(before) = raw.insert(run.task_run, run.clone()) {
                            touched.push((before.organization.unwrap(), before.pipeline));
                        }
                        touched.push((run.organization.unwrap(), run.pipeline));
                    }
                    touched.sort_by_key(|(o, p)| (o.0, p.0));
                    touched.dedup();
                    for (org, pipeline) in touched {
                        let finished: Vec<TaskRun> = raw
                            .values()
                            .filter(|r| r.finished_at().is_some())
                            .cloned()
                            .collect();
                        let runs = Oracle { finished }.runs(EntityRef {
                            kind: EntityKind::Pipeline,
                            uuid: pipeline.0,
                        });
                        for (rule_org, uuid, rule) in &live {
                            if *rule_org != org || rule.pipeline.is_some_and(|p| p != pipeline.0) {
                                continue;
                            }
                            let verdict = brute_verdict(rule, &runs);
                            let was = state.get(&(*uuid, pipeline.0)).copied().unwrap_or(false);
                            if was != verdict.is_some() {
                                state.insert((*uuid, pipeline.0), verdict.is_some());
                                let entry = expected.entry((*uuid, pipeline.0)).or_default();
                                match verdict {
                                    Some((run, numbers)) => {
                                        entry.push((true, Some(run), numbers, when.clone()))
                                    }
                                    // A resolution repeats what was seen when it fired.
                                    None => {
                                        let fired = entry.last().unwrap().clone();
                                        entry.push((false, fired.1, fired.2, when.clone()));
                                    }
                                }
                            }
                        }
                    }
                }
                _ => unreachable!(),
            }
            handed_out = expected.values().map(Vec::len).sum::<usize>() as u64;
            let mut ends = Vec::new();
            if handed_out > 0 && rng.chance(5) {
                ends.push(WriteOp::RetryDelivery {
                    serial: rng.range(1, handed_out as i64) as u64,
                    attempts: 2,
                    next_at: 1,
                    error: "a timeout in the test".into(),
                });
            }
            if handed_out > before && rng.chance(50) {
                ends.push(WriteOp::RetryDelivery {
                    serial: handed_out,
                    attempts: 1,
                    next_at: 0,
                    error: "503 from the test".into(),
                });
            }
            // As the courier records them: one by one, or several in one write.
            if ends.len() > 1 || !ends.is_empty() && rng.chance(30) {
                with_deliveries.push(WriteOp::Deliveries(ends));
            } else {
                with_deliveries.extend(ends);
            }
        }
        let ops = with_deliveries;

        let (one_by_one, outcomes_a, _a) = apply_grouped(&mut rng, &ops, 1, 1);
        let (grouped, outcomes_b, _b) = apply_grouped(&mut rng, &ops, 30, 2);
        let (large, outcomes_c, _c) = apply_grouped(&mut rng, &ops, 400, 4);
        let (bulk, outcomes_d, _d) = apply_bulk(&mut rng, &ops, 2);
        assert!(
            outcomes_a.iter().all(|o| o.starts_with("Ok")),
            "seed {seed}: a write was refused"
        );
        for (other, outcomes, how) in [
            (&grouped, &outcomes_b, "grouped"),
            (&large, &outcomes_c, "in large commits"),
            (&bulk, &outcomes_d, "in bulk"),
        ] {
            assert_eq!(&outcomes_a, outcomes, "seed {seed}: outcomes differ {how}");
            assert_eq!(
                one_by_one.digest().unwrap().tables,
                other.digest().unwrap().tables,
                "seed {seed}: alert tables differ when the writes are applied {how}"
            );
        }
        let outbox = one_by_one.reader().unwrap().outbox(usize::MAX).unwrap();
        assert_eq!(
            outbox.len() as u64,
            handed_out,
            "seed {seed}: the deliveries' ends named other entries than meant"
        );
        let mut got: Transitions = HashMap::new();
        for (_, entry) in &outbox {
            let pipeline: Uuid = entry.transition.pipeline_uuid.parse().unwrap();
            got.entry((entry.rule, pipeline))
                .or_default()
                .push(noted(&entry.transition));
        }
        let transitions: usize = expected.values().map(Vec::len).sum();
        let flips = expected
            .values()
            .filter(|changes| changes.len() >= 3)
            .count();
        assert!(
            transitions >= 10,
            "seed {seed}: only {transitions} transitions"
        );
        assert!(flips > 0, "seed {seed}: no alert fired twice");
        for kind in ["failed", "failure_rate", "slow"] {
            assert!(
                outbox.iter().any(|(_, e)| e.transition.kind == kind),
                "seed {seed}: no {kind} alert"
            );
        }
        for (key, changes) in &expected {
            assert_eq!(got.get(key), Some(changes), "seed {seed}: alert {key:?}");
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "seed {seed}: alerts nobody expected"
        );
        // Every firing alert is listed once as firing; the rest resolved.
        let firing_expected = state.values().filter(|firing| **firing).count();
        let reader = one_by_one.reader().unwrap();
        let mut firing_listed = 0;
        for org in &orgs {
            let (alerts, _) = reader.alerts(*org, None, usize::MAX, |_| true).unwrap();
            firing_listed += alerts
                .iter()
                .filter(|(_, a)| a.state == runledger::alerts::AlertState::Firing)
                .count();
        }
        assert_eq!(firing_listed, firing_expected, "seed {seed}");
        for store in [&one_by_one, &grouped, &large, &bulk] {
            assert!(verify(store).unwrap().is_consistent(), "seed {seed}");
        }
    }
}

/// A fresh store given `ops` in transactions of the sizes `groups` lists, each applied.
fn applied_in_groups(ops: &[WriteOp], groups: &[usize]) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut rest = ops;
    for size in groups {
        let (group, tail) = rest.split_at(*size);
        rest = tail;
        for outcome in store.apply_now(group).unwrap() {
            outcome.unwrap();
        }
    }
    (store, dir)
}

/// A finished task run of one second (`at`, as `second_of` reads it), alone in its pipeline run.
fn lone_run(
    (org, pipeline, task): (OrgId, PipelineId, TaskId),
    at: &str,
    is_successful: bool,
    rng: &mut Rng,
) -> TaskRun {
    TaskRun {
        task_run: TaskRunId(rng.uuid()),
        pipeline_run: PipelineRunId(rng.uuid()),
        pipeline,
        task,
        organization: Some(org),
        task_type: TaskType::ALL[0],
        state: RunState::Finished,
        is_successful,
        duration_ms: 1_000,
        executed_at: Some(Timestamp::from_second(second_of(at)).unwrap()),
        output: Vec::new(),
        errors: Vec::new(),
        metric_value: None,
        is_initial_task: true,
        is_final_task: true,
    }
}

/// A transaction that judges one pipeline's rules while another's rollups wait (no rule on a
/// window covers it) must still leave that pipeline's latest runs exact: its latest task run
/// moved away, then the pipeline reported on again, in one commit, ends as one by one.
#[test]
fn a_pipeline_whose_rollups_wait_keeps_its_latest_runs_exact() {
    let mut rng = Rng(2_300);
    let org = OrgId(rng.uuid());
    let (waiting, other) = (PipelineId(rng.uuid()), PipelineId(rng.uuid()));
    let (task, second_task, other_task) =
        (TaskId(rng.uuid()), TaskId(rng.uuid()), TaskId(rng.uuid()));
    let run = |pipeline: PipelineId, task: TaskId, at: &str, rng: &mut Rng| {
        lone_run((org, pipeline, task), at, false, rng)
    };
    // Dense enough in the hour for its rollups to keep the hour's seconds.
    let early: Vec<TaskRun> = (0..40)
        .map(|n| run(waiting, task, &format!("2024-06-01 02:10:{n:02}"), &mut rng))
        .collect();
    let latest = run(waiting, task, "2024-06-01 02:50:00", &mut rng);
    let mut moved = latest.clone();
    (moved.pipeline, moved.task) = (other, other_task);
    moved.pipeline_run = PipelineRunId(rng.uuid());
    let again = run(waiting, second_task, "2024-06-01 02:20:00", &mut rng);
    let mut report = reports_from("2024-06-02 00:00:00");
    let rule =
        |kind: &str, pipeline, params| create_rule(org, Uuid::new_v4(), kind, pipeline, params);
    let ops = [
        rule("failed", None, serde_json::json!({})),
        rule(
            "failure_rate",
            Some(other),
            serde_json::json!({"window": "24h", "above": 0.3, "min_runs": 1}),
        ),
        report(early),
        report(vec![latest]),
        // One commit from here on: the move, then the pipeline it left again.
        report(vec![moved]),
        report(vec![again]),
    ];
    let stores: Vec<(Store, tempfile::TempDir)> = [vec![1; 6], vec![1, 1, 1, 1, 2]]
        .into_iter()
        .map(|groups| applied_in_groups(&ops, &groups))
        .collect();
    assert_eq!(
        stores[0].0.digest().unwrap().tables,
        stores[1].0.digest().unwrap().tables,
        "the tables differ when the move and the next report share a commit"
    );
    for (store, _) in &stores {
        assert!(verify(store).unwrap().is_consistent());
    }
}

/// A pipeline judged early in a commit (a later report was about to change it) has its alerts
/// numbered in operation order among those judged at the commit's end: pipeline A fails in the
/// first report, B in the second, B succeeds in the third; A's alert comes first however the
/// reports are grouped.
#[test]
fn alerts_judged_early_in_a_commit_are_numbered_in_operation_order() {
    let mut rng = Rng(2_350);
    let org = OrgId(rng.uuid());
    let (a, b) = (PipelineId(rng.uuid()), PipelineId(rng.uuid()));
    let tasks: HashMap<PipelineId, TaskId> =
        [(a, TaskId(rng.uuid())), (b, TaskId(rng.uuid()))].into();
    let mut reports = reports_from("2024-06-02 00:00:00");
    let mut report = |pipeline: PipelineId, at: &str, is_successful: bool, rng: &mut Rng| {
        let task = tasks[&pipeline];
        reports(vec![lone_run(
            (org, pipeline, task),
            at,
            is_successful,
            rng,
        )])
    };
    let ops = [
        create_rule(org, rng.uuid(), "failed", None, serde_json::json!({})),
        report(a, "2024-06-01 01:00:00", false, &mut rng),
        report(b, "2024-06-01 01:00:00", false, &mut rng),
        report(b, "2024-06-01 02:00:00", true, &mut rng),
    ];
    let a_first = |store: &Store| {
        let outbox = store.reader().unwrap().outbox(usize::MAX).unwrap();
        let pipelines: Vec<String> = outbox
            .iter()
            .map(|(_, entry)| entry.transition.pipeline_uuid.clone())
            .collect();
        assert_eq!(
            pipelines,
            [a.0, b.0, b.0].map(|p| p.to_string()),
            "deliveries in operation order"
        );
    };
    let (one_by_one, _one) = applied_in_groups(&ops, &[1, 1, 1, 1]);
    a_first(&one_by_one);
    for grouping in [vec![1, 3], vec![4]] {
        let (store, _dir) = applied_in_groups(&ops, &grouping);
        a_first(&store);
        assert_eq!(
            one_by_one.digest().unwrap().tables,
            store.digest().unwrap().tables,
            "grouping {grouping:?}: the alert tables differ"
        );
    }
}

/// A pipeline judged between two reports of one commit, whose window's longest run was just
/// made shorter, is judged on that window's true percentiles (the commit cannot take a maximum
/// back out of a sum: it writes out and reads the tables again). The window's p95 is its
/// maximum here, 999 ms, not the 1,000 ms it was.
#[test]
fn a_judgment_between_reports_of_one_commit_sees_a_windows_longest_run_shortened() {
    let mut rng = Rng(2_450);
    let org = OrgId(rng.uuid());
    let (pipeline, task) = (PipelineId(rng.uuid()), TaskId(rng.uuid()));
    let run = |at: &str, duration_ms: u32, rng: &mut Rng| TaskRun {
        duration_ms,
        ..lone_run((org, pipeline, task), at, true, rng)
    };
    let mut report = reports_from("2024-06-02 00:00:00");
    let long = run("2024-06-01 01:00:00", 1_000, &mut rng);
    // Within the longest's histogram bin: the window's maximum, read from it, changes.
    let shortened = TaskRun {
        duration_ms: 999,
        ..long.clone()
    };
    let ops = [
        create_rule(
            org,
            rng.uuid(),
            "slow",
            Some(pipeline),
            serde_json::json!({"factor": 2, "percentile": 95, "window": "7d"}),
        ),
        report(vec![
            run("2024-06-01 00:00:00", 10, &mut rng),
            long,
            run("2024-06-01 02:00:00", 20, &mut rng),
        ]),
        // The longest run shortened, and a run slow against what is left (p95 of 10, 20 and
        // 999: 999): fires.
        report(vec![shortened, run("2024-06-01 03:00:00", 1_999, &mut rng)]),
        // A quick run: resolves.
        report(vec![run("2024-06-01 04:00:00", 1, &mut rng)]),
    ];
    let (one_by_one, _one) = applied_in_groups(&ops, &[1, 1, 1, 1]);
    let reader = one_by_one.reader().unwrap();
    let changes: Vec<String> = reader
        .outbox(usize::MAX)
        .unwrap()
        .iter()
        .map(|(_, entry)| format!("{:?}", entry.transition.change))
        .collect();
    assert_eq!(changes.len(), 2, "fired and resolved: {changes:?}");
    let (grouped, _dir) = applied_in_groups(&ops, &[2, 2]);
    assert_eq!(
        one_by_one.digest().unwrap().tables,
        grouped.digest().unwrap().tables,
        "the alert tables differ when the shortening and the next report share a commit"
    );
}

/// A `missing` rule is judged at every report of its pipeline, against the latest run as that
/// report left it: a run that arrives after the interval resolves nothing it should not have
/// fired, and a late run older than the latest changes nothing.
#[test]
fn a_missing_rule_judged_at_a_report_sees_the_runs_it_brought() {
    let mut rng = Rng(2_400);
    let org = OrgId(rng.uuid());
    let pipeline = PipelineId(rng.uuid());
    let task = TaskId(rng.uuid());
    let run = |executed: &str, rng: &mut Rng| lone_run((org, pipeline, task), executed, true, rng);
    let report = |runs: Vec<TaskRun>, at: &str| WriteOp::Report {
        runs,
        at: Timestamp::from_second(second_of(at)).unwrap(),
    };
    let rule = WriteOp::CreateRule {
        org,
        rule: rng.uuid(),
        stored: Box::new(runledger::alerts::StoredRule {
            rule: alert_rule(
                "missing",
                Some(pipeline),
                serde_json::json!({"every": "1h"}),
            ),
            created_at: second_of("2024-06-01 00:00:00") * MICROS_PER_SECOND,
            disabled_at: None,
        }),
    };
    let on_time = [
        rule,
        report(
            vec![run("2024-06-01 00:30:00", &mut rng)],
            "2024-06-01 00:30:05",
        ),
        // Later than an hour after the rule was made, with a run of its own.
        report(
            vec![run("2024-06-01 02:00:00", &mut rng)],
            "2024-06-01 02:00:05",
        ),
    ];
    let firing = |store: &Store| {
        let reader = store.reader().unwrap();
        let (alerts, _) = reader.alerts(org, None, usize::MAX, |_| true).unwrap();
        (alerts.len(), reader.outbox_len().unwrap())
    };
    for grouping in [vec![1, 1, 1], vec![1, 2], vec![3]] {
        let (store, _dir) = applied_in_groups(&on_time, &grouping);
        assert_eq!(
            firing(&store),
            (0, 0),
            "grouping {grouping:?}: nothing is missing"
        );
        // A late run older than the latest, reported well after the interval: missing.
        let late = report(
            vec![run("2024-06-01 01:00:00", &mut rng)],
            "2024-06-01 03:30:00",
        );
        for outcome in store.apply_now(&[late]).unwrap() {
            outcome.unwrap();
        }
        assert_eq!(
            firing(&store),
            (1, 1),
            "grouping {grouping:?}: one run is missing"
        );
    }
}

/// A pipeline judged between two reports of one commit is judged on the runs the commit brought,
/// not only on the rollup records it began with: here whole hours of the window come from a day
/// record that only the first report changed.
#[test]
fn a_judgment_between_reports_of_one_commit_counts_the_runs_it_brought() {
    let mut rng = Rng(2_500);
    let org = OrgId(rng.uuid());
    let (pipeline, task) = (PipelineId(rng.uuid()), TaskId(rng.uuid()));
    let ids = (org, pipeline, task);
    let rule = create_rule(
        org,
        rng.uuid(),
        "failure_rate",
        Some(pipeline),
        serde_json::json!({"window": "24h", "above": 0.4, "min_runs": 1}),
    );
    let report = |runs: Vec<TaskRun>, at: &str| WriteOp::Report {
        runs,
        at: Timestamp::from_second(second_of(at)).unwrap(),
    };
    // Dense in the hour, the day and the month: they keep records.
    let history = (0..40)
        .map(|n| lone_run(ids, &format!("2024-06-01 10:{n:02}:00"), true, &mut rng))
        .collect();
    // 12 failures an hour in hours 11 to 13: 36 of 76 in the window, above 0.4; hours 11 and
    // 12 are read whole from the day record.
    let failures = (0..36)
        .map(|n| {
            let at = format!("2024-06-01 {:02}:{:02}:00", 11 + n / 12, (n % 12) * 5);
            lone_run(ids, &at, false, &mut rng)
        })
        .collect();
    let ops = [
        rule,
        report(history, "2024-06-02 00:00:01"),
        report(failures, "2024-06-02 00:00:02"),
        report(
            vec![lone_run(ids, "2024-06-01 14:00:00", true, &mut rng)],
            "2024-06-02 00:00:03",
        ),
    ];
    for grouping in [vec![1, 1, 1, 1], vec![1, 1, 2]] {
        let (store, _dir) = applied_in_groups(&ops, &grouping);
        let reader = store.reader().unwrap();
        let (alerts, _) = reader.alerts(org, None, usize::MAX, |_| true).unwrap();
        let fired: Vec<(i64, serde_json::Value)> = alerts
            .iter()
            .map(|(_, alert)| (alert.since, alert.observed["failed"].clone()))
            .collect();
        assert_eq!(
            fired,
            [(
                second_of("2024-06-02 00:00:02") * MICROS_PER_SECOND,
                serde_json::json!(36)
            )],
            "grouping {grouping:?}: fired by the failures, with all of them counted"
        );
    }
}
