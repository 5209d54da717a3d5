//! `runledger backup DIR`: a consistent copy of the database (and the master key file) into an
//! empty directory, through the running server's admin socket when a server holds the data dir,
//! straight from the file otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// An empty (or new) directory to write the copy into.
    pub destination: PathBuf,
}

pub fn run(args: BackupArgs) -> Result<ExitCode, String> {
    // The server may run in another working directory.
    let destination = std::path::absolute(&args.destination)
        .map_err(|e| format!("{}: {e}", args.destination.display()))?;
    let done = match args.data_dir.engine_unless_served()? {
        Some(engine) => engine
            .backup(&destination)
            .map_err(|e| format!("backup failed: {e}"))?
            .to_string(),
        None => crate::admin::request(
            &args.data_dir.data_dir,
            &crate::admin::Command::Backup(destination),
        )
        .map_err(|e| format!("backup failed: {e}"))?,
    };
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}
