//! The `runledger` command: parses the command line and hands it to the library.

fn main() -> std::process::ExitCode {
    keep_freed_memory_a_while();
    match runledger::cli::config::parse(std::env::args_os().collect()) {
        Ok(cli) => runledger::cli::main(cli),
        Err(error) => error.exit(),
    }
}

/// mimalloc: ingest and request handling make many small allocations, and it serves them
/// faster than the system allocator (measured: about 10% more import throughput). Built with
/// `no_thp`: with transparent huge pages, every fresh 2 MiB page of a chunk's working set was
/// zeroed by the kernel on first touch, 38% of an import's CPU time (perf, 1M runs), and
/// disabling them took the import from 65k to about 101k runs/s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory freed by one commit group is wanted again by the next: mimalloc returns it to the
/// system after 5 s unused instead of 1 s, which saves a page fault per reused page while
/// writes keep coming (import 1M runs: about 101k -> 115k runs/s) and still gives memory back
/// once the process idles.
fn keep_freed_memory_a_while() {
    /// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the sys crate names no constant).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a plain integer option; mimalloc reads options atomically and accepts a
    // change at any time.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 5_000) };
}
