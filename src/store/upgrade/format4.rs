//! Format 4 to 5: every table but the rollups is as format 5 has it, so the file is copied, its
//! rollups (whose parts now carry duration histograms) are rebuilt from the run log and the
//! pipeline-run aggregates, its pipelines are listed by name and its running task runs listed
//! as running since they were created (as an upgrade from format 2 restores them), in one
//! transaction.

use std::path::Path;

use redb::ReadableTable;

use super::super::records::{EntityDetail, EntityKey, TaskRunHome};
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
            cut: None,
        })?;
        list_pipelines_by_name(&txn)?;
        list_running(&txn)?;
        let mut meta = txn.open_table(tables::META)?;
        let format = tables::FORMAT_VERSION.to_le_bytes();
        meta.insert(tables::meta::FORMAT, format.as_slice())?;
        Ok(built)
    })()
    .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(built)
}

/// Fills the (new) list of pipelines by name from the entities.
fn list_pipelines_by_name(txn: &redb::WriteTransaction) -> crate::error::Result<()> {
    let keys = txn.open_table(tables::ENTITY_KEYS)?;
    let entities = txn.open_table(tables::ENTITIES)?;
    let mut names = txn.open_table(tables::PIPELINE_NAMES)?;
    for entry in keys.iter()? {
        let (scoped, key) = entry?;
        let key = EntityKey::decode(key.value())?;
        if key.kind != crate::model::EntityKind::Pipeline {
            continue;
        }
        let uuid: [u8; 16] = scoped.value()[4..].try_into().expect("16 bytes");
        let name = match entities.get(key.id.0)? {
            Some(bytes) => EntityDetail::decode(bytes.value())?.name,
            None => String::new(),
        };
        let name_key = tables::pipeline_name_key(key.org_index, &name, &uuid);
        names.insert(name_key.as_slice(), key.id.0)?;
    }
    Ok(())
}

/// Gives every running task run a start (its creation: an older file kept none) and lists it in
/// the running table.
fn list_running(txn: &redb::WriteTransaction) -> crate::error::Result<()> {
    let mut homes = txn.open_table(tables::TASK_INDEX)?;
    let mut running = txn.open_table(tables::RUNNING)?;
    let mut started = Vec::new();
    for entry in homes.iter()? {
        let (key, value) = entry?;
        if let TaskRunHome::Unfinished {
            pipeline,
            executed_at,
            serial,
            created_at,
            updated_at,
            started_at: None,
            record,
        } = TaskRunHome::decode(value.value())?
            && record.state == crate::model::RunState::Running
        {
            let home = TaskRunHome::Unfinished {
                pipeline,
                executed_at,
                serial,
                created_at,
                updated_at,
                started_at: Some(created_at),
                record,
            };
            started.push((*key.value(), home));
        }
    }
    for (key, home) in started {
        let TaskRunHome::Unfinished {
            pipeline,
            created_at,
            ..
        } = &home
        else {
            unreachable!("only running homes are collected");
        };
        let (_, _, uuid) = tables::split_index_key(&key);
        running.insert(
            &tables::run_key(*pipeline, created_at.micros(), &uuid),
            &key,
        )?;
        homes.insert(&key, home.encode().as_slice())?;
    }
    Ok(())
}
