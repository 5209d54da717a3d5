//! Task runs that had not finished when `runledger upgrade` carried a database over: they come
//! back with the REST id and creation time they had, and those that waited for an executor wait
//! again.

use super::Batch;
use crate::error::{Error, Result};
use crate::model::TaskRun;
use crate::store::records::TaskRunHome;
use crate::store::tables::index_key;
use crate::time::Timestamp;

/// An unfinished task run as an older database held it.
#[derive(Clone, Debug)]
pub struct UnfinishedRun {
    pub run: TaskRun,
    /// Its REST id; 0 for a run that was reported, not started by runledger.
    pub serial: u64,
    /// Whether it waits in the executors' queue.
    pub queued: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Batch<'_> {
    /// Restores unfinished runs and makes sure serials from `next_serial` on are the only ones
    /// handed out from now on.
    pub(super) fn restore(
        &mut self,
        runs: &[UnfinishedRun],
        next_serial: u64,
    ) -> Result<Result<()>> {
        for restored in runs {
            if let Err(rejection) =
                self.report(std::slice::from_ref(&restored.run), restored.created_at)?
            {
                return Ok(Err(rejection));
            }
            let lost = || Error::Internal("a restored task run vanished".into());
            let org = restored.run.organization.ok_or_else(lost)?;
            let org_index = self.find_org_index(org)?.ok_or_else(lost)?;
            let task_run = &restored.run.task_run;
            let (period, mut home) = self.find_task_run(org_index, task_run)?.ok_or_else(lost)?;
            if let TaskRunHome::Unfinished {
                serial, updated_at, ..
            } = &mut home
            {
                *serial = restored.serial;
                *updated_at = restored.updated_at;
            }
            let log = self.pending_log(org_index, task_run);
            self.put_home(org_index, task_run, Some(period), home, log);
            if restored.queued {
                let key = index_key(period, org_index, task_run.as_bytes());
                self.queue(restored.serial, &key, org)?;
            }
        }
        let current = self.next_serial()?;
        let highest = runs.iter().map(|r| r.serial + 1).max().unwrap_or(1);
        self.counters.next_serial = Some(current.max(next_serial).max(highest));
        Ok(Ok(()))
    }
}
