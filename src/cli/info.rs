//! `runledger info`: what the data dir holds: entries and bytes per table, and the bytes on
//! disk per stored task run.

use std::process::ExitCode;

use redb::{ReadableTableMetadata, TableDefinition};

use super::DataDir;
use crate::store::{Reader, tables};

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
}

/// Entries, stored bytes (keys and values) and pages of one table.
fn describe<K: redb::Key + 'static, V: redb::Value + 'static>(
    reader: &Reader<'_>,
    name: &str,
    table: TableDefinition<K, V>,
) -> Result<(u64, u64), String> {
    let table = reader.table(table).map_err(|e| e.to_string())?;
    let stats = table.stats().map_err(|e| e.to_string())?;
    let entries = table.len().map_err(|e| e.to_string())?;
    let pages = stats.leaf_pages() + stats.branch_pages();
    println!(
        "{name:<16} {entries:>12} {:>14} {:>14} {:>10} {:>7.0}%",
        stats.stored_bytes(),
        stats.fragmented_bytes(),
        pages,
        100.0 * stats.stored_bytes() as f64 / (pages.max(1) * 4096) as f64
    );
    Ok((entries, pages * 4096))
}

pub fn run(args: InfoArgs) -> Result<ExitCode, String> {
    let store = args.data_dir.open()?;
    let reader = store.reader().map_err(|e| e.to_string())?;
    println!(
        "{:<16} {:>12} {:>14} {:>14} {:>10} {:>8}",
        "table", "entries", "stored bytes", "fragmented", "pages", "fill"
    );
    let (runs, log_bytes) = describe(&reader, "run_log", tables::RUN_LOG)?;
    let mut total = log_bytes;
    total += describe(&reader, "task_runs", tables::TASK_RUNS)?.1;
    total += describe(&reader, "pipeline_runs", tables::PIPELINE_RUNS)?.1;
    total += describe(&reader, "rollups", tables::ROLLUPS)?.1;
    total += describe(&reader, "last_runs", tables::LAST_RUNS)?.1;
    total += describe(&reader, "entity_keys", tables::ENTITY_KEYS)?.1;
    total += describe(&reader, "entities", tables::ENTITIES)?.1;
    total += describe(&reader, "tokens", tables::TOKENS)?.1;
    let file = std::fs::metadata(store.path())
        .map_err(|e| e.to_string())?
        .len();
    println!("file {} bytes; table pages {total} bytes", file);
    if runs > 0 {
        println!(
            "{runs} finished task runs: {:.0} bytes per task run on disk ({:.0} in table pages)",
            file as f64 / runs as f64,
            total as f64 / runs as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
