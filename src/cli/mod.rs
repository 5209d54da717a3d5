//! The command line: one file per command. Commands print what they did and exit non-zero with
//! a plain sentence when they could not.

mod adopt;
mod backup;
mod bench;
pub mod client;
pub mod cluster;
pub mod config;
mod demo;
mod generate;
pub mod import;
mod info;
mod keys;
mod options;
mod prune;
mod serve;
mod upgrade;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use options::{DataDir, Joined, NatsArgs, WriterThreads};

/// Records every run of every data pipeline and answers run statistics from live rollups.
#[derive(Debug, Parser)]
#[command(name = "runledger", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API and the REST gateway until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Bulk-load newline-delimited JSON task runs.
    Import(import::ImportArgs),
    /// Fill a data dir with a realistic sample: organizations, pipelines, a year of runs.
    Demo(demo::DemoArgs),
    /// Recompute every rollup from the raw runs and report any difference.
    Verify(verify::VerifyArgs),
    /// Rewrite a database of an older format in this build's format (the old file is kept).
    Upgrade(upgrade::UpgradeArgs),
    /// Delete task runs, pipeline runs and logs executed before a date (rollups by day and
    /// coarser stay); for a data dir no server has open.
    Prune(prune::PruneArgs),
    /// Write a synthetic workload as newline-delimited JSON task runs (for import).
    Generate(generate::GenerateArgs),
    /// Manage OAuth clients: create, list, revoke.
    Client(client::ClientArgs),
    /// Print an organization's output key (base64) again.
    Key(keys::KeyArgs),
    /// Decrypt a logged output with an organization's output key.
    Decrypt(keys::DecryptArgs),
    /// Copy the database, consistently, into an empty directory (works while a server runs).
    Backup(backup::BackupArgs),
    /// Show what the data dir holds: entries and bytes per table, bytes per task run.
    Info(info::InfoArgs),
    /// Load a running server over REST and gRPC; print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Cluster mode on NATS JetStream: create the stream (or adopt a single node), see it, trim it.
    Cluster(cluster::ClusterArgs),
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    });
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Import(args) => import::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Prune(args) => prune::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Client(args) => client::run(args),
        Command::Key(args) => keys::key(args),
        Command::Decrypt(args) => keys::decrypt(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Cluster(args) => cluster::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("runledger: {message}");
            ExitCode::FAILURE
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUNLEDGER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Repacks the data dir's file after a bulk change (import, prune) and says what it saved.
fn repack_and_say(data_dir: &std::path::Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let repacked = crate::store::repack::repack(data_dir)?;
    println!(
        "repacked the file from {} to {} bytes in {:.1} s",
        repacked.before,
        repacked.after,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
