//! OpenLineage events in a write transaction: each event is folded into the stored state of its
//! run (and its parents learn they are parents), and the task runs those states stand for are
//! reported like any other, through the same checks. Deciding here, in the writer, makes the
//! outcome independent of how events race each other to the server.

use redb::ReadableTable;

use super::Batch;
use crate::error::Result;
use crate::lineage::{Derived, LineageRun, Observed};
use crate::model::{EntityKind, OrgId, ReportCounts, TaskRun, TaskRunId};
use crate::store::records::{EntityDetail, corrupt};
use crate::store::tables::{OrgIndex, scoped_key};
use crate::time::Timestamp;
use uuid::Uuid;

impl Batch<'_> {
    /// Applies one resolved event of organization `org`, received at `at`.
    pub(super) fn lineage(
        &mut self,
        org: OrgId,
        event: &Observed,
        at: Timestamp,
    ) -> Result<Result<ReportCounts>> {
        let org_index = self.find_org_index(org)?;
        let mut own = self.lineage_run(org_index, event.run)?;
        let changed = own.merge(event);
        let mut parents = Vec::new();
        for parent in &event.parents {
            let mut state = self.lineage_run(org_index, *parent)?;
            if state.name_as_parent() {
                parents.push((*parent, state));
            }
        }
        if !changed && parents.is_empty() {
            return Ok(Ok(ReportCounts {
                unchanged: 1,
                ..ReportCounts::default()
            }));
        }
        // The run's own task run, and those of parents that turned out to be pipeline runs
        // (a parent with a parent of its own stays the task run it was).
        let mut reports: Vec<(TaskRun, Option<Timestamp>)> = Vec::new();
        let mut counted = false;
        let derived = std::iter::once((event.run, own.derive(event.run, org))).chain(
            parents
                .iter()
                .map(|(uuid, state)| (*uuid, state.derive(*uuid, org))),
        );
        for (index, (uuid, derived)) in derived.enumerate() {
            match derived {
                Derived::TaskRun { run, started_at } if index == 0 => {
                    counted = true;
                    reports.push((*run, started_at));
                }
                Derived::Withdrawn(run) => {
                    if let Some(org_index) = org_index
                        && self.find_task_run(org_index, &TaskRunId(uuid))?.is_some()
                    {
                        reports.push((*run, None));
                    }
                }
                Derived::TaskRun { .. } | Derived::Nothing => {}
            }
        }
        let checked: Vec<(usize, &TaskRun)> = reports
            .iter()
            .enumerate()
            .map(|(index, (run, _))| (index, run))
            .collect();
        if let Err(rejection) = self.check_report(&checked)? {
            return Ok(Err(rejection));
        }
        let org_index = self.ensure_org_index(org)?;
        if counted {
            self.name_entities(org, org_index, event)?;
        }
        self.put_lineage_run(org_index, event.run, &own)?;
        for (uuid, state) in &parents {
            self.put_lineage_run(org_index, *uuid, state)?;
        }
        let mut counts = ReportCounts::default();
        for (run, started_at) in &reports {
            counts.add(self.apply_run(run, at, *started_at)?);
        }
        Ok(Ok(counts))
    }

    fn lineage_run(&self, org: Option<OrgIndex>, run: Uuid) -> Result<LineageRun> {
        let Some(org) = org else {
            return Ok(LineageRun::default());
        };
        match self.t.lineage_runs.get(&scoped_key(org, run.as_bytes()))? {
            Some(bytes) => LineageRun::decode(bytes.value()).ok_or_else(|| corrupt("lineage run")),
            None => Ok(LineageRun::default()),
        }
    }

    fn put_lineage_run(&mut self, org: OrgIndex, run: Uuid, state: &LineageRun) -> Result<()> {
        self.t
            .lineage_runs
            .insert(&scoped_key(org, run.as_bytes()), state.encode().as_slice())?;
        Ok(())
    }

    /// Creates the event's pipeline and task under their job names, unless they exist.
    fn name_entities(&mut self, org: OrgId, org_index: OrgIndex, event: &Observed) -> Result<()> {
        let pipeline = match self.entity(Some(org_index), event.pipeline.0)? {
            Some(key) => key,
            None => self.create_entity(
                event.pipeline.0,
                EntityKind::Pipeline,
                (org, org_index),
                None,
                &EntityDetail {
                    uuid: event.pipeline.0,
                    org_index,
                    name: event.pipeline_name.clone(),
                    task_type: None,
                    is_initial: false,
                },
            )?,
        };
        if self.entity(Some(org_index), event.task.0)?.is_none() {
            self.create_entity(
                event.task.0,
                EntityKind::Task,
                (org, org_index),
                Some(pipeline.id),
                &EntityDetail {
                    uuid: event.task.0,
                    org_index,
                    name: event.task_name.clone(),
                    task_type: Some(event.task_type),
                    is_initial: false,
                },
            )?;
        }
        Ok(())
    }
}
