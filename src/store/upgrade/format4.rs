//! Format 4 to 5: every table but the rollups is as format 5 has it, so the file is copied and
//! its rollups (whose parts now carry duration histograms) are rebuilt from the run log and the
//! pipeline-run aggregates, in one transaction.

use std::path::Path;

use super::super::rollup::{self, FlushTables};
use super::super::{DATABASE_FILE, tables};

/// Writes the upgraded copy of `old` into `partial`; returns the pipeline-years rebuilt.
pub fn copy_and_rebuild(old: &Path, partial: &Path) -> Result<u64, String> {
    std::fs::create_dir_all(partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let new = partial.join(DATABASE_FILE);
    std::fs::copy(old, &new).map_err(|e| format!("cannot copy {}: {e}", old.display()))?;
    let db = redb::Database::open(&new).map_err(|e| e.to_string())?;
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let built = (|| -> crate::error::Result<u64> {
        txn.delete_table(tables::YEAR_ROLLUPS)?;
        txn.delete_table(tables::ROLLUPS)?;
        let mut years = txn.open_table(tables::YEAR_ROLLUPS)?;
        let mut rollups = txn.open_table(tables::ROLLUPS)?;
        let run_log = txn.open_table(tables::RUN_LOG)?;
        let runs = txn.open_table(tables::PIPELINE_RUNS)?;
        let pipeline_tasks = txn.open_table(tables::PIPELINE_TASKS)?;
        let built = rollup::rebuild(&mut FlushTables {
            years: &mut years,
            rollups: &mut rollups,
            run_log: &run_log,
            runs: &runs,
            pipeline_tasks: &pipeline_tasks,
        })?;
        let mut meta = txn.open_table(tables::META)?;
        let format = tables::FORMAT_VERSION.to_le_bytes();
        meta.insert(tables::meta::FORMAT, format.as_slice())?;
        Ok(built)
    })()
    .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(built)
}
