//! `runledger prune`: deletes, from a data dir no server has open, the task runs, pipeline runs
//! and logs executed before a date; day and coarser rollups stay (see `store::batch::prune`).

use std::process::ExitCode;

use super::DataDir;
use crate::engine::{PRUNE_STEP, PruneSummary};
use crate::store::{WriteOp, WriteOutcome};
use crate::time::{Level, RangeEnd, format_datetime, parse_path_datetime};

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// The first day kept (`YYYY-MM-DD`, UTC): everything executed before its midnight goes.
    #[arg(long)]
    pub before: String,
    /// Leave the file as pruning left it (its freed pages are reused by later writes) instead
    /// of repacking it into a smaller one afterwards.
    #[arg(long)]
    pub no_repack: bool,
    /// Prune even with a cut after today or after the newest stored run (which deletes every
    /// run, and refuses every report before the cut from then on).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: PruneArgs) -> Result<ExitCode, String> {
    let before = parse_path_datetime(&args.before, RangeEnd::Start)
        .map_err(|reason| format!("--before: {reason}"))?;
    if before != Level::Day.bucket_start(before) {
        return Err(format!(
            "--before: {} is not a date; give the first day to keep, like 2025-01-01",
            args.before
        ));
    }
    let store = args.data_dir.open()?;
    let preview = store
        .reader()
        .and_then(|reader| reader.prune_preview(before))
        .map_err(|e| format!("cannot read the data dir: {e}"))?;
    let today = Level::Day.bucket_start(crate::time::Timestamp::now().second());
    let newest = preview.newest.map(|at| at.second());
    if !args.force {
        if before > today {
            return Err(format!(
                "--before: {} is after today ({}): it would delete today's runs and refuse every report until then; give --force if that is meant",
                format_datetime(before),
                format_datetime(today)
            ));
        }
        if newest.is_some_and(|newest| before > newest) {
            return Err(format!(
                "--before: {} is after the newest stored run ({}): it would delete every run; give --force if that is meant",
                format_datetime(before),
                format_datetime(newest.unwrap_or_default())
            ));
        }
    }
    // Said before anything is deleted (the cut is recorded first, and only moves forward).
    eprintln!(
        "pruning before {}: {} finished task runs go, with their pipeline runs and logs; day and coarser rollups stay",
        format_datetime(before),
        preview.task_runs
    );
    let started = std::time::Instant::now();
    let mut summary = PruneSummary::default();
    loop {
        let op = WriteOp::Prune {
            before,
            limit: PRUNE_STEP,
        };
        let outcome = store
            .apply_now(std::slice::from_ref(&op))
            .map_err(|e| format!("prune failed: {e}"))?
            .pop()
            .ok_or("prune was not applied")?;
        match outcome.map_err(|e| e.to_string())? {
            WriteOutcome::Pruned(step) => {
                summary.add(&step);
                if step.done {
                    break;
                }
            }
            other => return Err(format!("unexpected outcome {other:?}")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "pruned before {} in {seconds:.1} s ({} steps): {} task runs ({:.0}/s), {} pipeline runs, {} day and hour records; {} sparse months given records",
        format_datetime(summary.cut),
        summary.steps,
        summary.task_runs,
        summary.task_runs as f64 / seconds.max(1e-9),
        summary.pipeline_runs,
        summary.records,
        summary.months_materialized
    );
    drop(store);
    if !args.no_repack {
        super::repack_and_say(&args.data_dir.data_dir)?;
    }
    Ok(ExitCode::SUCCESS)
}
