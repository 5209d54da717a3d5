//! `runledger upgrade`: rewrites a database of an older format in this build's format, keeping
//! the old file beside it.

use std::io::IsTerminal;
use std::process::ExitCode;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
}

pub fn run(args: UpgradeArgs) -> Result<ExitCode, String> {
    let started = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let report = crate::store::upgrade::upgrade(&args.data_dir.data_dir, |runs| {
        if terminal {
            eprint!("\r\x1b[2K{runs} finished task runs carried over");
        }
    })?;
    if terminal {
        eprint!("\r\x1b[2K");
    }
    if report.rollups_only {
        println!(
            "upgraded from format {} to format {} in {:.1} s: rebuilt the rollups of {} pipelines from {} finished task runs; every other table is carried over as it was",
            report.from,
            crate::store::tables::FORMAT_VERSION,
            started.elapsed().as_secs_f64(),
            report.pipelines,
            report.finished_runs
        );
    } else {
        println!(
            "upgraded from format {} to format {} in {:.1} s: {} organizations, {} clients, {} tokens of live clients, {} pipelines, {} finished and {} unfinished task runs",
            report.from,
            crate::store::tables::FORMAT_VERSION,
            started.elapsed().as_secs_f64(),
            report.organizations,
            report.clients,
            report.tokens,
            report.pipelines,
            report.finished_runs - report.refused_count,
            report.unfinished_runs
        );
    }
    for refused in &report.refused {
        println!("refused: {refused}");
    }
    if report.refused_count > 0 {
        println!(
            "{} task runs the old format stored were refused by this one (listed above, at most 20)",
            report.refused_count
        );
    }
    println!(
        "the old file stays at {}; delete it once the server runs well on the new one",
        report.old_file.display()
    );
    Ok(ExitCode::SUCCESS)
}
