//! `runledger info`: what the data dir holds: entries and bytes per table, the bytes on disk per
//! stored task run and, for a cluster node's or an adopted data dir, where it stands in the
//! stream; with `--digest`, a hash of every table's contents.

use std::process::ExitCode;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Print only a SHA-256 of every table's entries in key order (and, on stderr, each
    /// table's): equal on two databases that applied the same writes, however the writes were
    /// grouped into commits.
    #[arg(long)]
    pub digest: bool,
}

pub fn run(args: InfoArgs) -> Result<ExitCode, String> {
    let store = args.data_dir.open()?;
    if args.digest {
        let digests = store.digest().map_err(|e| e.to_string())?;
        println!("digest {}", hex(&digests.whole()));
        for (table, digest) in &digests.tables {
            eprintln!("{table:<16} {}", hex(digest));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sizes = store.table_sizes().map_err(|e| e.to_string())?;
    println!(
        "{:<16} {:>12} {:>14} {:>14} {:>10} {:>8}",
        "table", "entries", "stored bytes", "fragmented", "pages", "fill"
    );
    let mut total = 0;
    for table in &sizes {
        println!(
            "{:<16} {:>12} {:>14} {:>14} {:>10} {:>7.0}%",
            table.name,
            table.entries,
            table.stored_bytes,
            table.fragmented_bytes,
            table.pages,
            100.0 * table.stored_bytes as f64 / (table.pages.max(1) * 4096) as f64
        );
        total += table.pages * 4096;
    }
    let file = std::fs::metadata(store.path())
        .map_err(|e| e.to_string())?
        .len();
    println!("file {file} bytes; table pages {total} bytes");
    let runs = sizes
        .iter()
        .find(|t| t.name == "run_log")
        .map_or(0, |t| t.entries);
    if runs > 0 {
        println!(
            "{runs} finished task runs: {:.0} bytes per task run on disk ({:.0} in table pages)",
            file as f64 / runs as f64,
            total as f64 / runs as f64
        );
    }
    let start = crate::cluster::StartingPoint::of(&store).map_err(|e| e.to_string())?;
    if start.applied > 0 || start.baseline.is_some() {
        let adopted = start
            .baseline
            .map(|id| format!("; it continues the single-node store adopted as {id}"))
            .unwrap_or_default();
        println!(
            "cluster: applied the stream through sequence {}{adopted}",
            start.applied
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
