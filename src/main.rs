//! The `runledger` command: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    runledger::cli::main(runledger::cli::Cli::parse())
}

/// mimalloc: ingest and request handling make many small allocations, and it serves them
/// faster than the system allocator (measured: about 10% more import throughput).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
