//! Pipeline runs in a write transaction. A pipeline run gets an id (handed out in order, kept
//! for good) when its first task run finishes; its aggregate is stored under that id and found from its UUID
//! through the pipeline-run index. Aggregates are gathered per transaction and stored once, at
//! [`Batch::finish`], when their contribution also moves from where it was to where it is now.

use redb::ReadableTable;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::Batch;
use super::timestamp;
use crate::error::{Error, Result};
use crate::model::{EntityKind, PipelineRunId};
use crate::store::index::PendingState;
use crate::store::records::{InlineMembers, LastRunRecord, PipelineRunAgg};
use crate::store::rollup::Series;
use crate::store::tables::{
    EntityId, MEMBER_KEY_LEN, OrgIndex, RunId, index_key, member_key, member_key_micros, meta,
};

/// Pipeline-run aggregates a transaction keeps knowing, at most (about 60 MB).
const STORED_AGGS_KEPT: usize = 1 << 20;

/// A pipeline run's aggregate as it was when the transaction first touched it, and as it is now.
pub(super) struct AggSlot {
    uuid: PipelineRunId,
    before: Option<PipelineRunAgg>,
    now: Option<PipelineRunAgg>,
}

/// A change of one pipeline's run not written yet: its aggregate as the tables hold it and as
/// it is now (`None`: not the pipeline's finished run).
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub id: RunId,
    pub before: Option<PipelineRunAgg>,
    pub now: Option<PipelineRunAgg>,
}

/// The aggregates a transaction touched: slots in the order they were first touched (large, so
/// they stay where they are), found by id.
#[derive(Default)]
pub(super) struct Aggs {
    places: HashMap<RunId, u32>,
    slots: Vec<(RunId, AggSlot)>,
}

impl Aggs {
    pub fn reserve(&mut self, slots: usize) {
        self.places.reserve(slots);
        self.slots.reserve(slots);
    }

    /// The changes not written yet to the pipeline runs of the pipelines in `wanted`, by
    /// pipeline: each run's aggregate as the tables hold it and as it is now, where that side
    /// is the pipeline's (a run that moved between pipelines is a change of both).
    pub fn pending_of(&self, wanted: &HashSet<EntityId>) -> HashMap<EntityId, Vec<Pending>> {
        let mut pending: HashMap<EntityId, Vec<Pending>> = HashMap::default();
        for (id, slot) in &self.slots {
            if slot.before == slot.now {
                continue;
            }
            let (from, to) = (
                slot.before.map(|a| a.pipeline),
                slot.now.map(|a| a.pipeline),
            );
            // A run that stayed in its pipeline is one change of it.
            let to = to.filter(|_| to != from);
            for pipeline in [from, to].into_iter().flatten() {
                if !wanted.contains(&pipeline) {
                    continue;
                }
                let mine = |agg: Option<PipelineRunAgg>| agg.filter(|a| a.pipeline == pipeline);
                pending.entry(pipeline).or_default().push(Pending {
                    id: *id,
                    before: mine(slot.before),
                    now: mine(slot.now),
                });
            }
        }
        pending
    }

    fn get(&self, id: &RunId) -> Option<&AggSlot> {
        let place = *self.places.get(id)?;
        Some(&self.slots[place as usize].1)
    }

    fn get_mut(&mut self, id: &RunId) -> Option<&mut AggSlot> {
        let place = *self.places.get(id)?;
        Some(&mut self.slots[place as usize].1)
    }

    fn insert(&mut self, id: RunId, slot: AggSlot) -> &mut AggSlot {
        self.places.insert(id, self.slots.len() as u32);
        self.slots.push((id, slot));
        &mut self.slots.last_mut().expect("pushed").1
    }

    /// Every slot, by id, leaving none.
    fn take_sorted(&mut self) -> Vec<(RunId, AggSlot)> {
        self.places = HashMap::default();
        let mut slots = std::mem::take(&mut self.slots);
        if !slots.is_sorted_by_key(|(id, _)| *id) {
            slots.sort_unstable_by_key(|(id, _)| *id);
        }
        slots
    }
}

impl Batch<'_> {
    /// The id of a pipeline run that has finished task runs.
    pub(super) fn run_id(&mut self, org: OrgIndex, uuid: PipelineRunId) -> Result<Option<RunId>> {
        let bytes = uuid.as_bytes();
        if let Some(pending) = self.pipeline_index.pending(org, bytes) {
            return Ok(Some(pending.value));
        }
        let mut found = None;
        for period in self
            .pipeline_index
            .candidates(&self.filters.pipeline_runs, org, bytes, false)
        {
            if let Some(id) = self.t.pipeline_index.get(&index_key(period, org, bytes))? {
                found = Some((period, RunId(id.value())));
                break;
            }
        }
        if let Some((period, id)) = found {
            self.pipeline_index
                .put(org, bytes, period, id, PendingState::Read);
        }
        Ok(found.map(|(_, id)| id))
    }

    /// The id of a pipeline run, handing out a new one (with its index entry) to a pipeline run
    /// whose first task run finishes.
    pub(super) fn ensure_run_id(&mut self, org: OrgIndex, uuid: PipelineRunId) -> Result<RunId> {
        if let Some(id) = self.run_id(org, uuid)? {
            return Ok(id);
        }
        let next = match self.counters.next_run_id {
            Some(next) => next,
            None => u64::from_le_bytes(self.counter(meta::NEXT_RUN_ID, 1u64.to_le_bytes())?),
        };
        self.counters.first_run_id.get_or_insert(next);
        self.counters.next_run_id = Some(next + 1);
        self.pipeline_index
            .allocate(org, uuid.as_bytes(), RunId(next));
        Ok(RunId(next))
    }

    fn agg_slot(&mut self, id: RunId, uuid: PipelineRunId) -> Result<&mut AggSlot> {
        if self.aggs.get(&id).is_none() {
            let stored = if self.is_new_run(id) {
                None
            } else {
                self.stored_agg(id)?
            };
            return Ok(self.aggs.insert(
                id,
                AggSlot {
                    uuid,
                    before: stored,
                    now: stored,
                },
            ));
        }
        Ok(self.aggs.get_mut(&id).expect("found above"))
    }

    /// Whether this transaction handed out the id (so nothing is stored under it yet).
    fn is_new_run(&self, id: RunId) -> bool {
        self.counters
            .first_run_id
            .is_some_and(|first| id.0 >= first)
    }

    /// A pipeline run's aggregate as the tables hold it.
    pub(super) fn stored_agg(&self, id: RunId) -> Result<Option<PipelineRunAgg>> {
        if let Some(agg) = self.stored_aggs.borrow().get(&id) {
            return Ok(Some(*agg));
        }
        let agg = self
            .t
            .pipeline_runs
            .get(id.0)?
            .map(|bytes| PipelineRunAgg::decode(bytes.value()))
            .transpose()?;
        if let Some(agg) = agg {
            self.stored_aggs.borrow_mut().insert(id, agg);
        }
        Ok(agg)
    }

    /// Notes what the tables now hold for a pipeline run.
    pub(super) fn note_stored_agg(&mut self, id: RunId, agg: Option<PipelineRunAgg>) {
        let known = self.stored_aggs.get_mut();
        match agg {
            Some(agg) => {
                // Bounded: a bulk load writes out chunk after chunk in one transaction.
                if known.len() >= STORED_AGGS_KEPT {
                    known.clear();
                }
                known.insert(id, agg);
            }
            None => {
                known.remove(&id);
            }
        }
    }

    /// The aggregate of a pipeline run as this transaction sees it, if it has one.
    pub(super) fn current_agg(
        &mut self,
        org: OrgIndex,
        uuid: PipelineRunId,
    ) -> Result<Option<PipelineRunAgg>> {
        let Some(id) = self.run_id(org, uuid)? else {
            return Ok(None);
        };
        match self.aggs.get(&id) {
            Some(slot) => Ok(slot.now),
            None => self.stored_agg(id),
        }
    }

    /// Adds a finished task run (executed at `micros`) to its pipeline run.
    pub(super) fn add_member(
        &mut self,
        run: (RunId, PipelineRunId),
        pipeline: EntityId,
        micros: i64,
        is_successful: bool,
        duration_ms: u32,
    ) -> Result<()> {
        let (id, uuid) = run;
        let slot = self.agg_slot(id, uuid)?;
        let agg = slot.now.get_or_insert(PipelineRunAgg {
            uuid,
            pipeline,
            finished: 0,
            failed: 0,
            duration_ms: 0,
            latest_micros: micros,
            members: Some(InlineMembers::default()),
        });
        agg.finished += 1;
        agg.failed += u32::from(!is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_add(u64::from(duration_ms));
        agg.latest_micros = agg.latest_micros.max(micros);
        // Instants to add to the member index: this one once the pipeline run is too large to
        // keep them inline, and all of them the moment it becomes so.
        let indexed: Vec<i64> = match agg.members.as_mut().map(|m| m.insert(micros)) {
            Some(true) => Vec::new(),
            Some(false) => {
                let mut all = agg.members.take().expect("inline").as_slice().to_vec();
                all.push(micros);
                all
            }
            None => vec![micros],
        };
        for micros in indexed {
            let member = member_key(id, micros);
            let count = self.t.run_members.get(&member)?.map_or(0, |c| c.value());
            self.t.run_members.insert(&member, count + 1)?;
        }
        Ok(())
    }

    /// Takes a finished task run out of its pipeline run. When it was the latest, the next
    /// latest comes from the aggregate's own members, or for a large pipeline run from one
    /// lookup in the member index.
    pub(super) fn remove_member(
        &mut self,
        id: RunId,
        pipeline: EntityId,
        micros: i64,
        is_successful: bool,
        duration_ms: u32,
    ) -> Result<()> {
        let missing = || {
            Error::Internal(format!(
                "a finished task run of pipeline run #{} is missing from its members",
                id.0
            ))
        };
        let uuid = match self.aggs.get(&id) {
            Some(slot) => slot.uuid,
            None => {
                self.stored_agg(id)?
                    .ok_or_else(|| {
                        Error::Internal(
                            "a finished task run's pipeline run has no aggregate".into(),
                        )
                    })?
                    .uuid
            }
        };
        let slot = self.agg_slot(id, uuid)?;
        let Some(agg) = slot.now.as_mut() else {
            return Err(Error::Internal(
                "a finished task run's pipeline run has no aggregate".into(),
            ));
        };
        if agg.pipeline != pipeline {
            return Err(Error::Internal(format!(
                "pipeline run {uuid} is stored under another pipeline than its task run"
            )));
        }
        agg.finished -= 1;
        agg.failed -= u32::from(!is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_sub(u64::from(duration_ms));
        let was_latest = micros >= agg.latest_micros;
        if let Some(members) = &mut agg.members {
            if !members.remove(micros) {
                return Err(missing());
            }
            match members.latest() {
                Some(latest) => agg.latest_micros = latest,
                None => slot.now = None,
            }
            return Ok(());
        }
        let emptied = agg.finished == 0;
        if emptied {
            slot.now = None;
        }
        let member = member_key(id, micros);
        let count = self.t.run_members.get(&member)?.map(|c| c.value());
        match count {
            Some(1) => {
                self.t.run_members.remove(&member)?;
            }
            Some(count) if count > 1 => {
                self.t.run_members.insert(&member, count - 1)?;
            }
            _ => return Err(missing()),
        }
        if !was_latest || emptied {
            return Ok(());
        }
        let (low, high) = (member_key(id, i64::MIN), member_key(id, i64::MAX));
        let latest = match self
            .t
            .run_members
            .range::<&[u8; MEMBER_KEY_LEN]>(&low..=&high)?
            .next_back()
        {
            Some(entry) => member_key_micros(entry?.0.value()),
            None => {
                return Err(Error::Internal(format!(
                    "pipeline run {uuid} has finished task runs but no members"
                )));
            }
        };
        let agg = self
            .aggs
            .get_mut(&id)
            .and_then(|slot| slot.now.as_mut())
            .expect("loaded above");
        agg.latest_micros = latest;
        Ok(())
    }

    /// Stores every pipeline run this transaction changed and moves its contribution from where
    /// it was to where it is now. A pipeline run left without finished task runs loses its
    /// aggregate but keeps its id and index entry: ids are handed out at a pipeline run's first
    /// finished task run in the write sequence, however the writes are grouped into commits.
    pub(super) fn flush_pipeline_runs(&mut self) -> Result<()> {
        let slots = self.aggs.take_sorted();
        // New aggregates go in after every stored one, through a cursor; others one by one.
        let mut appended: Vec<(u64, Vec<u8>)> = Vec::new();
        for (id, slot) in slots {
            if slot.before == slot.now && slot.now.is_some() {
                continue;
            }
            let contribution =
                |agg: &PipelineRunAgg| (agg.pipeline, agg.latest_micros, agg.tally());
            if slot.before.as_ref().map(contribution) != slot.now.as_ref().map(contribution) {
                if let Some(before) = slot.before {
                    let at = timestamp(before.latest_micros)?;
                    self.deltas.pipeline_run(
                        pipeline_series(before.pipeline),
                        at,
                        before.failed == 0,
                        before.duration_ms,
                        true,
                    );
                    self.last_run_work(pipeline_series(before.pipeline))
                        .retract(at, slot.uuid.0);
                }
                if let Some(now) = slot.now {
                    let at = timestamp(now.latest_micros)?;
                    self.deltas.pipeline_run(
                        pipeline_series(now.pipeline),
                        at,
                        now.failed == 0,
                        now.duration_ms,
                        false,
                    );
                    self.last_run_work(pipeline_series(now.pipeline))
                        .add(LastRunRecord {
                            executed_at: at,
                            run: slot.uuid.0,
                            is_successful: now.failed == 0,
                            duration_ms: now.duration_ms,
                        });
                }
            }
            self.note_stored_agg(id, slot.now);
            match slot.now {
                Some(agg) if self.is_new_run(id) => appended.push((id.0, agg.encode())),
                Some(agg) => {
                    self.t.pipeline_runs.insert(id.0, agg.encode().as_slice())?;
                }
                None => {
                    self.t.pipeline_runs.remove(id.0)?;
                }
            }
        }
        crate::store::packed::append(&mut self.t.pipeline_runs, &appended)
    }
}

pub(super) fn pipeline_series(pipeline: EntityId) -> Series {
    Series {
        id: pipeline,
        kind: EntityKind::Pipeline,
        pipeline,
    }
}
