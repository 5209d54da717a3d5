//! The `runledger` command: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    runledger::cli::main(runledger::cli::Cli::parse())
}
