//! `runledger verify`: recomputes every rollup from the raw runs and reports any difference.

use std::process::ExitCode;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
}

pub fn run(args: VerifyArgs) -> Result<ExitCode, String> {
    let store = args.data_dir.open()?;
    let report = crate::store::verify::verify(&store).map_err(|e| format!("verify failed: {e}"))?;
    println!(
        "checked {} pipelines, {} task runs, {} pipeline runs, {} rollup entries, {} last runs",
        report.pipelines,
        report.task_runs,
        report.pipeline_runs,
        report.rollup_entries,
        report.last_runs
    );
    for difference in &report.differences {
        println!("difference: {difference}");
    }
    if report.is_consistent() {
        println!("rollups agree with the raw runs");
        Ok(ExitCode::SUCCESS)
    } else {
        let unlisted = report.difference_count - report.differences.len() as u64;
        if unlisted > 0 {
            println!("... and {unlisted} more differences");
        }
        println!("{} differences found", report.difference_count);
        Ok(ExitCode::FAILURE)
    }
}
