//! `runledger generate`: writes a synthetic workload as import lines, to try `runledger import`
//! at scale or to feed benchmarks. Realistic by default (see [`crate::workload::Realistic`]);
//! `--sequential` writes the old convenient shape, for comparison only.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::workload::{Realistic, Sequential, to_json_line};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Task-run reports to write (re-reports included).
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: u64,
    /// Organizations owning the pipelines.
    #[arg(long, default_value_t = 50)]
    pub organizations: u32,
    /// Pipelines, with a long-tailed spread of schedules.
    #[arg(long, default_value_t = 2_000)]
    pub pipelines: u32,
    /// The span, in days from 2025-01-01, that the schedules are sized for.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// No task reports an output.
    #[arg(long)]
    pub no_outputs: bool,
    /// Makes the UUIDs and times differ from another workload's.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The old convenient shape instead: sequential UUIDs, `--pipelines` dense pipelines of
    /// `--tasks` tasks, runs evenly spread over 2022-2024 in time order. For comparison only.
    #[arg(long)]
    pub sequential: bool,
    /// Tasks per pipeline, with --sequential.
    #[arg(long, default_value_t = 4, requires = "sequential")]
    pub tasks: u64,
    /// Where to write; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: GenerateArgs) -> Result<ExitCode, String> {
    if args.pipelines == 0 || args.tasks == 0 || args.organizations == 0 {
        return Err("--organizations, --pipelines and --tasks must be at least 1".into());
    }
    let runs: Box<dyn Iterator<Item = crate::model::TaskRun>> = if args.sequential {
        let workload = Sequential {
            pipelines: u64::from(args.pipelines),
            tasks_per_pipeline: args.tasks,
            seed: args.seed,
            ..Sequential::three_years(args.runs)
        };
        Box::new((0..workload.task_runs).map(move |n| workload.task_run(n)))
    } else {
        Box::new(
            Realistic {
                organizations: args.organizations,
                pipelines: args.pipelines,
                days: args.days,
                outputs: !args.no_outputs,
                seed: args.seed,
                ..Realistic::new(args.runs)
            }
            .runs(),
        )
    };
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    for run in runs {
        writeln!(out, "{}", to_json_line(&run)).map_err(|e| format!("cannot write: {e}"))?;
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
