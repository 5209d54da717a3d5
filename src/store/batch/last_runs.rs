//! Keeping each entity's latest finished run (`last_runs`) without reading history: the stored
//! last run stays unless a later run was added or it was itself taken back; only then (and only
//! when nothing at least as late was added) do the rollups name the latest second left.

use redb::ReadableTable;
use uuid::Uuid;

use super::{Batch, timestamp};
use crate::error::{Error, Result};
use crate::store::records::{LastRunRecord, RunRecord};
use crate::store::rollup::{Series, Source, last_run_at_or_before};
use crate::store::tables::{EntityId, RUN_KEY_LEN, split_run_key};
use crate::time::{MAX_SECOND, Timestamp};

/// What a transaction did to the runs of one entity.
pub(super) struct LastRunWork {
    pub series: Series,
    /// The latest run added by this transaction (and still there).
    best: Option<LastRunRecord>,
    /// Runs taken back out, by executed_at and run UUID.
    retracted: Vec<(Timestamp, Uuid)>,
    /// The best run was taken back out after it was offered (the work waited for a later
    /// write-out): which added run is latest now, only the rollups tell.
    lost_best: bool,
}

impl LastRunWork {
    /// A run is taken back out.
    pub fn retract(&mut self, executed_at: Timestamp, run: Uuid) {
        if self
            .best
            .is_some_and(|best| (best.executed_at, best.run) == (executed_at, run))
        {
            self.best = None;
            self.lost_best = true;
        }
        self.retracted.push((executed_at, run));
    }

    pub fn add(&mut self, added: LastRunRecord) {
        if self
            .best
            .is_none_or(|best| added.order_key() > best.order_key())
        {
            self.best = Some(added);
        }
    }
}

impl Batch<'_> {
    pub(super) fn last_run_work(&mut self, series: Series) -> &mut LastRunWork {
        self.last_run_work
            .entry(series.id)
            .or_insert_with(|| LastRunWork {
                series,
                best: None,
                retracted: Vec::new(),
                lost_best: false,
            })
    }

    /// Offers every task run new in this transaction (and still there) as its task's latest.
    pub(super) fn gather_new_runs(
        &mut self,
        new_log: &[([u8; RUN_KEY_LEN], Vec<u8>)],
    ) -> Result<()> {
        for (key, value) in new_log {
            let (_, micros, task_run) = split_run_key(key);
            let outcome = RunRecord::decode_outcome(value)?;
            let added = LastRunRecord {
                executed_at: timestamp(micros)?,
                run: Uuid::from_bytes(task_run),
                is_successful: outcome.is_successful,
                duration_ms: u64::from(outcome.duration_ms),
            };
            self.last_run_work
                .get_mut(&outcome.task)
                .ok_or_else(|| Error::Internal("a new task run's series was not recorded".into()))?
                .add(added);
        }
        Ok(())
    }

    /// Brings an entity's last run up to date once its runs and rollups are.
    pub(super) fn update_last_run(&mut self, id: EntityId, work: LastRunWork) -> Result<()> {
        let stored = self
            .t
            .last_runs
            .get(id.0)?
            .map(|bytes| LastRunRecord::decode(bytes.value()))
            .transpose()?;
        let last = match (stored, work.best) {
            _ if work.lost_best => self.latest_in_rollups(&work.series)?,
            (None, best) => best,
            (Some(stored), Some(best)) if best.order_key() >= stored.order_key() => Some(best),
            (Some(stored), _) if !work.retracted.contains(&(stored.executed_at, stored.run)) => {
                Some(stored)
            }
            (Some(_), _) => self.latest_in_rollups(&work.series)?,
        };
        if last != stored {
            match last {
                Some(last) => {
                    self.t.last_runs.insert(id.0, &last.encode())?;
                }
                None => {
                    self.t.last_runs.remove(id.0)?;
                }
            }
        }
        Ok(())
    }

    /// A series' latest run, as its rollups (written up to date) and run log say.
    fn latest_in_rollups(&self, series: &Series) -> Result<Option<LastRunRecord>> {
        let source = Source {
            years: &self.t.year_rollups,
            rollups: &self.t.rollups,
            run_log: &self.t.run_log,
            runs: &self.t.pipeline_runs,
            cut: self.retention_cut()?,
            memo: Default::default(),
        };
        last_run_at_or_before(&source, series, MAX_SECOND)
    }
}
