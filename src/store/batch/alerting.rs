//! Alert evaluation in a write transaction. Every rule covering a pipeline that an operation
//! changed is judged (see `crate::alerts::judge`) on the pipeline as that operation left it:
//! judging waits until the gathered writes are written out anyway, unless a later report would
//! change the pipeline first, which then has that pipeline judged before it (see
//! [`Batch::defer_touched`]). A pipeline judged between write-outs is read from the tables as
//! the last write-out left them, changed by the transaction's own pipeline runs not written yet
//! (their aggregates before and now): its latest runs merged, its windows' tallies and
//! durations added and taken out (a window whose longest run was taken out is judged after a
//! write-out instead, its maximum being unknown). Verdicts are settled in operation order: a
//! rule whose condition became true fires an alert, one that became false resolves it, and
//! each such transition is put in the outbox in the same transaction. A clock tick judges the
//! rules the clock decides. Verdicts and the order alerts are numbered in are those of judging
//! after every operation, so the alert tables are the same however writes are grouped, on every
//! node.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::ReadableTable;
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use super::Batch;
use super::pipeline_runs::Pending;
use crate::alerts::judge::{self, RecentRun, Verdict};
use crate::alerts::state::{alert_id, alert_key, state_key, webhook_id};
use crate::alerts::webhook::{Change, Transition};
use crate::alerts::{
    AlertRecord, AlertState, DeliveryEnd, Firing, OrgRules, OutboxEntry, RuleKind, StoredRule,
    rule_key,
};
use crate::durations::Histogram;
use crate::error::{Error, Result};
use crate::model::{EntityKind, OrgId, Tally, TimeRange, WindowStats};
use crate::store::records::{
    EntityDetail, LastRunRecord, PipelineRunAgg, RunRecord, RunRef, corrupt,
};
use crate::store::rollup::range_summary_with;
use crate::store::rollup::{Series, Source};
use crate::store::tables::{
    EntityId, OrgIndex, RUN_KEY_LEN, RunId, meta, run_key_bounds, split_run_key,
};
use crate::time::{MICROS_PER_SECOND, Timestamp};

/// What a transaction knows of alerts besides the tables.
#[derive(Default)]
pub(super) struct Alerting {
    /// Organizations' rules as this transaction sees them (`None`: none), once looked up.
    rules: FxHashMap<OrgId, Option<Arc<OrgRules>>>,
    /// Pipelines whose runs the operation being applied changed, that rules cover.
    touched: Vec<(OrgId, EntityId, Uuid)>,
    /// Pipelines that earlier operations of this transaction changed, to be judged as of the
    /// end of their operation and settled: in operation order.
    deferred: Vec<Deferred>,
    /// The pipelines in `deferred` not judged yet.
    deferred_set: FxHashSet<(OrgId, Uuid)>,
}

/// A pipeline an operation changed, to be settled in operation order.
struct Deferred {
    org: OrgId,
    pipeline: EntityId,
    uuid: Uuid,
    /// The operation's time.
    at: Timestamp,
    /// Its covering rules' verdicts, in their order, once judged (a later report was about to
    /// change the pipeline): still to be settled. Only an operation that is judged after
    /// (a registration) renames a pipeline, so settling later names it as judging saw it.
    judged: Option<Vec<Option<Verdict>>>,
}

impl Batch<'_> {
    /// An organization's rules as this transaction sees them.
    pub(super) fn org_rules(&mut self, org: OrgId) -> Option<Arc<OrgRules>> {
        if let Some(rules) = self.alerting.rules.get(&org) {
            return rules.clone();
        }
        let rules = self.rule_set.get(org);
        self.alerting.rules.insert(org, rules.clone());
        rules
    }

    /// Reads an organization's rules again after a write changed them; they are published to
    /// the rule set once the transaction commits.
    pub(super) fn reload_rules(&mut self, org: OrgId) -> Result<()> {
        let low = rule_key(org.0, Uuid::nil());
        let high = rule_key(org.0, Uuid::max());
        let mut rules = Vec::new();
        for entry in self.t.alert_rules.range::<&[u8; 32]>(&low..=&high)? {
            let (key, value) = entry?;
            let uuid = Uuid::from_bytes(key.value()[16..].try_into().expect("16 bytes"));
            let stored = StoredRule::decode(value.value()).ok_or_else(|| corrupt("alert rule"))?;
            rules.push((uuid, stored));
        }
        let rules = Arc::new(OrgRules::new(rules));
        self.alerting.rules.insert(org, Some(rules.clone()));
        self.created.rules.insert(org, rules);
        Ok(())
    }

    /// Notes that an operation changed a pipeline's runs, when a rule covers it.
    pub(super) fn note_touched(&mut self, org: OrgId, pipeline: EntityId, uuid: Uuid) {
        if self.org_rules(org).is_some_and(|rules| rules.covers(uuid)) {
            self.alerting.touched.push((org, pipeline, uuid));
        }
    }

    /// Notes that a task run left pipeline `old` for another, when a rule covers `old`; if
    /// `old` waits to be judged as an earlier operation left it, it (and every pipeline
    /// waiting) is judged now, before the task run leaves.
    pub(super) fn note_moved_from(&mut self, org: OrgId, old: EntityId) -> Result<()> {
        let Some(rules) = self.org_rules(org) else {
            return Ok(());
        };
        let uuid = match self.t.entities.get(old.0)? {
            Some(bytes) => EntityDetail::decode(bytes.value())?.uuid,
            None => return Ok(()),
        };
        if !rules.covers(uuid) {
            return Ok(());
        }
        if self.alerting.deferred_set.contains(&(org, uuid)) {
            self.judge_deferred()?;
        }
        self.alerting.touched.push((org, old, uuid));
        Ok(())
    }

    /// Judges, before a report changes them, the pipelines it would change that earlier
    /// operations of this transaction changed and that are still to be judged. Their verdicts
    /// are settled later, in operation order, with the others' (see [`Batch::judge_written`]).
    pub(super) fn judge_changed_by(&mut self, runs: &[crate::model::TaskRun]) -> Result<()> {
        if self.alerting.deferred_set.is_empty() {
            return Ok(());
        }
        let mut changed: FxHashSet<(OrgId, Uuid)> = FxHashSet::default();
        for run in runs {
            if let Some(org) = run.organization
                && self.alerting.deferred_set.contains(&(org, run.pipeline.0))
            {
                changed.insert((org, run.pipeline.0));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.judge_ahead(|deferred| changed.contains(&(deferred.org, deferred.uuid)))
    }

    /// Whether outbox entry `serial` is not handed out yet, so that a judgment waiting in
    /// this transaction may be what puts it there (a cluster node applying a delivery's end
    /// in the same commit as the report that fired it): then that judgment comes first.
    pub(super) fn may_be_judged_later(&self, serial: u64) -> Result<bool> {
        if self.alerting.deferred.is_empty() {
            return Ok(false);
        }
        let next = u64::from_le_bytes(self.counter(meta::NEXT_DELIVERY, 1u64.to_le_bytes())?);
        Ok(serial >= next)
    }

    /// Puts the pipelines the operation just applied (at `at`) changed among those to judge.
    /// Judging waits until the transaction's writes are written out anyway (or until a later
    /// report would change the pipeline, see [`Batch::judge_changed_by`], or another operation
    /// would change what every pipeline is judged on, see [`Batch::judge_deferred`]'s callers),
    /// and then sees each pipeline exactly as its operation left it. Verdicts are settled in
    /// operation order. So the verdicts, and the order in which alerts and deliveries are
    /// numbered, are those of judging after every operation, however operations are grouped
    /// into transactions.
    pub(super) fn defer_touched(&mut self, at: Timestamp) {
        let mut touched = std::mem::take(&mut self.alerting.touched);
        touched.sort_unstable_by_key(|(org, pipeline, _)| (org.0, *pipeline));
        touched.dedup();
        for (org, pipeline, uuid) in touched {
            self.alerting.deferred_set.insert((org, uuid));
            self.alerting.deferred.push(Deferred {
                org,
                pipeline,
                uuid,
                at,
                judged: None,
            });
        }
    }

    /// Judges every deferred pipeline and settles the verdicts, in the order their operations
    /// came.
    pub(super) fn judge_deferred(&mut self) -> Result<()> {
        if self.alerting.deferred.is_empty() {
            return Ok(());
        }
        self.judge_ahead(|_| true)?;
        self.judge_written()
    }

    /// Judges the deferred pipelines not judged yet that `wanted` picks, as they are now (the
    /// tables, and the changes to their pipeline runs not written yet); their verdicts wait to
    /// be settled in operation order.
    fn judge_ahead(&mut self, wanted: impl Fn(&Deferred) -> bool) -> Result<()> {
        let mut judged = FxHashSet::default();
        let mut picked = Vec::new();
        for at in 0..self.alerting.deferred.len() {
            let deferred = &self.alerting.deferred[at];
            if deferred.judged.is_some() || !wanted(deferred) {
                continue;
            }
            picked.push(at);
            judged.insert(deferred.pipeline);
            let key = (deferred.org, deferred.uuid);
            self.alerting.deferred_set.remove(&key);
        }
        if picked.is_empty() {
            return Ok(());
        }
        let pending = self.aggs.pending_of(&judged);
        let mut inexact = Vec::new();
        for at in picked {
            let pipeline = self.alerting.deferred[at].pipeline;
            let changes = pending.get(&pipeline).map_or(&[][..], Vec::as_slice);
            match self.judge_now(at, changes)? {
                Some(verdicts) => self.alerting.deferred[at].judged = Some(verdicts),
                None => inexact.push(at),
            }
        }
        // A window whose longest run was taken out is judged on the tables, once they hold
        // everything.
        if !inexact.is_empty() {
            self.write_pending(true)?;
            for at in inexact {
                let verdicts = written(self.judge_now(at, &[])?)?;
                self.alerting.deferred[at].judged = Some(verdicts);
            }
        }
        Ok(())
    }

    /// The verdicts of the rules covering deferred pipeline `at`, as the tables and `pending`
    /// (the pipeline's changes not written yet) have it; `None` when they cannot say exactly.
    fn judge_now(
        &mut self,
        at: usize,
        pending: &[Pending],
    ) -> Result<Option<Vec<Option<Verdict>>>> {
        let deferred = &self.alerting.deferred[at];
        let (org, pipeline, uuid, when) =
            (deferred.org, deferred.pipeline, deferred.uuid, deferred.at);
        let Some(rules) = self.org_rules(org) else {
            return Ok(Some(Vec::new()));
        };
        self.verdicts(&rules.covering(uuid), Some(pipeline), when, pending)
    }

    /// Settles the verdicts on every deferred pipeline, in the order their operations came,
    /// judging those not judged yet (what they read is written out by now).
    pub(super) fn judge_written(&mut self) -> Result<()> {
        self.alerting.deferred_set.clear();
        // What those not judged yet read is written out by now.
        for at in 0..self.alerting.deferred.len() {
            if self.alerting.deferred[at].judged.is_none() {
                let verdicts = written(self.judge_now(at, &[])?)?;
                self.alerting.deferred[at].judged = Some(verdicts);
            }
        }
        for deferred in std::mem::take(&mut self.alerting.deferred) {
            let (org, uuid, pipeline) = (deferred.org, deferred.uuid, deferred.pipeline);
            let verdicts = deferred.judged.unwrap_or_default();
            let Some(rules) = self.org_rules(org) else {
                continue;
            };
            let covering = rules.covering(uuid);
            for ((rule, stored), verdict) in covering.iter().zip(verdicts) {
                self.settle(
                    org,
                    (*rule, stored),
                    (uuid, Some(pipeline)),
                    verdict,
                    deferred.at,
                )?;
            }
        }
        Ok(())
    }

    /// Judges every rule the clock decides at `at`, for every pipeline it covers.
    pub(super) fn alert_tick(&mut self, at: Timestamp) -> Result<()> {
        self.write_pending(true)?;
        let mut orgs: BTreeMap<Uuid, Arc<OrgRules>> = self
            .rule_set
            .with_time_rules()
            .into_iter()
            .map(|(org, rules)| (org.0, rules))
            .collect();
        for (org, rules) in &self.alerting.rules {
            match rules {
                Some(rules) if rules.has_time_rules() => orgs.insert(org.0, rules.clone()),
                _ => orgs.remove(&org.0),
            };
        }
        for (org, rules) in orgs {
            let org = OrgId(org);
            let org_index = self.find_org_index(org)?;
            let mut pipelines: BTreeMap<Uuid, Option<EntityId>> = BTreeMap::new();
            let mut everywhere = false;
            for (_, stored) in rules.all() {
                if !crate::alerts::ruleset::is_time_rule(&stored.rule.kind) {
                    continue;
                }
                match stored.rule.pipeline {
                    Some(uuid) => {
                        let id = self
                            .entity(org_index, uuid)?
                            .filter(|key| key.kind == EntityKind::Pipeline)
                            .map(|key| key.id);
                        pipelines.insert(uuid, id);
                    }
                    None => everywhere = true,
                }
            }
            if everywhere && let Some(org_index) = org_index {
                for (uuid, id) in self.org_pipelines(org_index)? {
                    pipelines.insert(uuid, Some(id));
                }
            }
            for (uuid, id) in pipelines {
                let covering = rules.covering(uuid);
                self.judge_time_rules(org, &covering, (uuid, id), at)?;
            }
        }
        Ok(())
    }

    /// Every pipeline of an organization, by UUID.
    fn org_pipelines(&self, org: OrgIndex) -> Result<Vec<(Uuid, EntityId)>> {
        let low = org.0.to_be_bytes();
        let mut found = Vec::new();
        for entry in self.t.pipeline_names.range::<&[u8]>(low.as_slice()..)? {
            let (key, id) = entry?;
            let key = key.value();
            if key[..4] != low {
                break;
            }
            let uuid: [u8; 16] = key[key.len() - 16..].try_into().expect("16 bytes");
            found.push((Uuid::from_bytes(uuid), EntityId(id.value())));
        }
        Ok(found)
    }

    /// Judges the rules the clock decides among `rules` (all covering one pipeline: its UUID
    /// and id, if it exists) at `at`, and settles the verdicts.
    fn judge_time_rules(
        &mut self,
        org: OrgId,
        rules: &[&(Uuid, StoredRule)],
        pipeline: (Uuid, Option<EntityId>),
        at: Timestamp,
    ) -> Result<()> {
        let rules: Vec<_> = rules
            .iter()
            .copied()
            .filter(|(_, stored)| crate::alerts::ruleset::is_time_rule(&stored.rule.kind))
            .collect();
        let verdicts = written(self.verdicts(&rules, pipeline.1, at, &[])?)?;
        for ((rule, stored), verdict) in rules.iter().zip(verdicts) {
            self.settle(org, (*rule, stored), pipeline, verdict, at)?;
        }
        Ok(())
    }

    /// The verdicts of `rules` (all covering one pipeline: its id, if it exists) at `at`, in
    /// their order: `None` for a rule whose condition does not hold. The pipeline is as the
    /// tables hold it, changed by `pending`; `None` when those cannot say exactly.
    fn verdicts(
        &mut self,
        rules: &[&(Uuid, StoredRule)],
        id: Option<EntityId>,
        at: Timestamp,
        pending: &[Pending],
    ) -> Result<Option<Vec<Option<Verdict>>>> {
        let recent_wanted = rules
            .iter()
            .filter_map(|(_, stored)| match stored.rule.kind {
                RuleKind::Failed { consecutive } => Some(consecutive as usize),
                RuleKind::FailureRate { .. } | RuleKind::Slow { .. } => Some(1),
                // With changes not written yet, the latest run comes from the pipeline runs.
                RuleKind::Missing(_) if !pending.is_empty() => Some(1),
                _ => None,
            })
            .max();
        let recent = match (recent_wanted, id) {
            (Some(wanted), Some(id)) => self.recent_runs(id, wanted, pending)?,
            _ => Vec::new(),
        };
        let now = at.micros();
        let mut windows = Windows::default();
        let mut verdicts = Vec::with_capacity(rules.len());
        for (_, stored) in rules {
            let verdict = match (&stored.rule.kind, id) {
                (RuleKind::Failed { consecutive }, _) => judge::failed(*consecutive, &recent),
                (
                    RuleKind::FailureRate {
                        window,
                        above,
                        min_runs,
                    },
                    Some(id),
                ) => match recent.first() {
                    Some(latest) => {
                        let window_seconds = judge::rate_window(latest, window);
                        let asked = (window_seconds, Wanted::Tally);
                        let Some(stats) = windows.stats(self, id, asked, pending)? else {
                            return Ok(None);
                        };
                        judge::failure_rate(*above, *min_runs, window, stats.tally, latest)
                    }
                    None => None,
                },
                (
                    RuleKind::Slow {
                        factor,
                        percentile,
                        window,
                    },
                    Some(id),
                ) => match recent.first() {
                    Some(latest) => {
                        let window_seconds = judge::slow_window(latest, window);
                        let asked = (window_seconds, Wanted::Percentiles);
                        let Some(stats) = windows.stats(self, id, asked, pending)? else {
                            return Ok(None);
                        };
                        judge::slow(*factor, *percentile, window, stats.percentiles, latest)
                    }
                    None => None,
                },
                (RuleKind::Missing(schedule), id) => {
                    let last = match id {
                        // The latest run is kept from the pipeline runs: with changes not
                        // written yet, it is the latest of them and the tables'.
                        Some(_) if !pending.is_empty() => recent.first().map(|run| run.micros),
                        Some(id) => self.last_finished(id)?,
                        None => None,
                    };
                    let judged_from = stored.rule.pipeline.map(|_| stored.created_at);
                    judge::missing(schedule, last, judged_from, now)
                }
                (RuleKind::Stuck { running_for }, Some(id)) => {
                    judge::stuck(running_for, self.oldest_running(id)?, now)
                }
                _ => None,
            };
            verdicts.push(verdict);
        }
        Ok(Some(verdicts))
    }

    /// A pipeline's latest finished pipeline runs, newest first (by executed_at, then UUID):
    /// at least `wanted` of them unless it has fewer, or fewer when one succeeded (the
    /// runs before a success are never needed).
    /// The runs `pending` changes come from it, the others from the tables.
    fn recent_runs(
        &self,
        pipeline: EntityId,
        wanted: usize,
        pending: &[Pending],
    ) -> Result<Vec<RecentRun>> {
        let mut recent = self.stored_recent_runs(pipeline, wanted, pending)?;
        if pending.is_empty() {
            return Ok(recent);
        }
        recent.extend(pending.iter().filter_map(|change| {
            change.now.map(|agg| RecentRun {
                uuid: agg.uuid.0,
                micros: agg.latest_micros,
                failed: agg.failed > 0,
                duration_ms: agg.duration_ms,
            })
        }));
        recent.sort_unstable_by_key(|run| std::cmp::Reverse((run.micros, run.uuid)));
        Ok(recent)
    }

    /// [`Batch::recent_runs`] as the tables hold them, leaving out the runs `pending` changes.
    fn stored_recent_runs(
        &self,
        pipeline: EntityId,
        wanted: usize,
        pending: &[Pending],
    ) -> Result<Vec<RecentRun>> {
        let (low, high) = run_key_bounds(pipeline, i64::MIN, i64::MAX);
        let mut seen: FxHashSet<RunId> = pending.iter().map(|change| change.id).collect();
        let mut recent: Vec<RecentRun> = Vec::new();
        // The pipeline runs whose latest task run ended in one microsecond, ordered by UUID
        // once that microsecond is read whole.
        let mut group: Vec<RecentRun> = Vec::new();
        let mut group_micros = None;
        let enough =
            |recent: &[RecentRun]| recent.len() >= wanted || recent.iter().any(|run| !run.failed);
        for entry in self
            .t
            .run_log
            .range::<&[u8; RUN_KEY_LEN]>(&low..=&high)?
            .rev()
        {
            let (key, value) = entry?;
            let (_, micros, _) = split_run_key(key.value());
            if group_micros != Some(micros) {
                settle_group(&mut group, &mut recent);
                if enough(&recent) {
                    return Ok(recent);
                }
                group_micros = Some(micros);
            }
            let run = match RunRecord::decode_outcome(value.value())?.pipeline_run {
                RunRef::Id(id) => id,
                RunRef::Uuid(_) => return Err(corrupt("task run")),
            };
            if seen.insert(run) {
                let agg = self.stored_agg(run)?.ok_or_else(|| {
                    Error::Internal("a finished task run has no pipeline run".into())
                })?;
                group.push(RecentRun {
                    uuid: agg.uuid.0,
                    micros: agg.latest_micros,
                    failed: agg.failed > 0,
                    duration_ms: agg.duration_ms,
                });
            }
        }
        settle_group(&mut group, &mut recent);
        Ok(recent)
    }

    /// When a pipeline's latest finished run was executed, microseconds.
    fn last_finished(&self, pipeline: EntityId) -> Result<Option<i64>> {
        Ok(self
            .t
            .last_runs
            .get(pipeline.0)?
            .map(|bytes| LastRunRecord::decode(bytes.value()))
            .transpose()?
            .map(|last| last.executed_at.micros()))
    }

    /// A pipeline's task run reported running the longest: its start and UUID.
    fn oldest_running(&self, pipeline: EntityId) -> Result<Option<(i64, Uuid)>> {
        let (low, high) = run_key_bounds(pipeline, i64::MIN, i64::MAX);
        let first = self
            .t
            .running
            .range::<&[u8; RUN_KEY_LEN]>(&low..=&high)?
            .next();
        match first {
            Some(entry) => {
                let (_, started, uuid) = split_run_key(entry?.0.value());
                Ok(Some((started, Uuid::from_bytes(uuid))))
            }
            None => Ok(None),
        }
    }

    /// Brings one alert in line with its rule's verdict: fires it or resolves it (each with an
    /// outbox entry), or leaves it as it is.
    fn settle(
        &mut self,
        org: OrgId,
        rule: (Uuid, &StoredRule),
        pipeline: (Uuid, Option<EntityId>),
        verdict: Option<Verdict>,
        at: Timestamp,
    ) -> Result<()> {
        let key = state_key(org.0, rule.0, pipeline.0);
        let current = match self.t.alert_state.get(&key)? {
            Some(bytes) => Some(Firing::decode(bytes.value()).ok_or_else(|| corrupt("alert"))?),
            None => None,
        };
        match (current, verdict) {
            (None, None) | (Some(_), Some(_)) => Ok(()),
            (None, Some(verdict)) => {
                let serial = self.next_counter(meta::NEXT_ALERT)?;
                let record = AlertRecord {
                    alert_id: alert_id(rule.0, pipeline.0, serial),
                    rule: rule.0,
                    rule_name: rule.1.rule.name.clone(),
                    kind: rule.1.rule.kind.as_str().to_string(),
                    pipeline: pipeline.0,
                    pipeline_name: self.pipeline_name(pipeline.1)?,
                    state: AlertState::Firing,
                    since: at.micros(),
                    resolved_at: None,
                    pipeline_run: verdict.pipeline_run,
                    observed: verdict.observed,
                };
                let firing = Firing {
                    serial,
                    since: at.micros(),
                };
                self.t
                    .alert_state
                    .insert(&key, firing.encode().as_slice())?;
                self.t
                    .alerts
                    .insert(&alert_key(org.0, serial), record.encode().as_slice())?;
                self.enqueue(org, rule, &record, Change::Firing, at)
            }
            (Some(firing), None) => {
                self.t.alert_state.remove(&key)?;
                let record = self.resolve_alert(org, firing.serial, at)?;
                self.enqueue(org, rule, &record, Change::Resolved, at)
            }
        }
    }

    /// Marks a stored alert resolved at `at`.
    fn resolve_alert(&mut self, org: OrgId, serial: u64, at: Timestamp) -> Result<AlertRecord> {
        let key = alert_key(org.0, serial);
        let mut record = match self.t.alerts.get(&key)? {
            Some(bytes) => AlertRecord::decode(bytes.value()).ok_or_else(|| corrupt("alert"))?,
            None => return Err(corrupt("alert")),
        };
        record.state = AlertState::Resolved;
        record.resolved_at = Some(at.micros());
        self.t.alerts.insert(&key, record.encode().as_slice())?;
        Ok(record)
    }

    /// Puts a transition in the outbox, unless the rule's webhook is disabled.
    fn enqueue(
        &mut self,
        org: OrgId,
        rule: (Uuid, &StoredRule),
        record: &AlertRecord,
        change: Change,
        at: Timestamp,
    ) -> Result<()> {
        if rule.1.disabled_at.is_some() {
            return Ok(());
        }
        let serial = self.next_counter(meta::NEXT_DELIVERY)?;
        let transition = Transition {
            change,
            timestamp: judge::rfc3339(at.micros()),
            alert_id: record.alert_id.to_string(),
            rule_uuid: rule.0.to_string(),
            rule_name: record.rule_name.clone(),
            kind: record.kind.clone(),
            pipeline_uuid: record.pipeline.to_string(),
            pipeline_name: record.pipeline_name.clone(),
            pipeline_run_uuid: record.pipeline_run.map(|run| run.to_string()),
            observed: record.observed.clone(),
            since: judge::rfc3339(record.since),
        };
        let entry = OutboxEntry {
            org: org.0,
            rule: rule.0,
            webhook_id: webhook_id(record.alert_id, change),
            transition,
            created_at: at.micros(),
            attempts: 0,
            // Due at once, whatever the clock that judged it said.
            next_at: i64::MIN,
            last_error: None,
        };
        self.t.outbox.insert(serial, entry.encode().as_slice())?;
        self.created.outbox = true;
        let first = self
            .created
            .outbox_serials
            .map_or(serial, |(first, _)| first);
        self.created.outbox_serials = Some((first, serial));
        Ok(())
    }

    /// Resolves, without delivering, the alerts of a rule being deleted.
    pub(super) fn resolve_rule_alerts(
        &mut self,
        org: OrgId,
        rule: Uuid,
        at: Timestamp,
    ) -> Result<()> {
        let low = state_key(org.0, rule, Uuid::nil());
        let high = state_key(org.0, rule, Uuid::max());
        let mut firing = Vec::new();
        for entry in self.t.alert_state.range::<&[u8; 48]>(&low..=&high)? {
            let (key, value) = entry?;
            let state = Firing::decode(value.value()).ok_or_else(|| corrupt("alert"))?;
            firing.push((*key.value(), state.serial));
        }
        for (key, serial) in firing {
            self.t.alert_state.remove(&key)?;
            self.resolve_alert(org, serial, at)?;
        }
        Ok(())
    }

    /// Ends a delivery: its entry leaves the outbox; a 410 also disables the rule's webhook.
    /// `false` when the entry was no longer there (another attempt ended it).
    pub(super) fn finish_delivery(
        &mut self,
        serial: u64,
        end: DeliveryEnd,
        at: Timestamp,
    ) -> Result<bool> {
        let Some(entry) = self.outbox_entry(serial)? else {
            return Ok(false);
        };
        self.t.outbox.remove(serial)?;
        if end == DeliveryEnd::Gone {
            let key = rule_key(entry.org, entry.rule);
            let stored = match self.t.alert_rules.get(&key)? {
                Some(bytes) => StoredRule::decode(bytes.value()),
                None => None,
            };
            if let Some(mut stored) = stored
                && stored.disabled_at.is_none()
            {
                stored.disabled_at = Some(at.micros());
                self.t
                    .alert_rules
                    .insert(&key, stored.encode().as_slice())?;
                self.reload_rules(OrgId(entry.org))?;
            }
        }
        Ok(true)
    }

    /// Records a failed attempt: the next one is not before `next_at`. `false` when the entry
    /// was no longer there or already recorded this attempt.
    pub(super) fn retry_delivery(
        &mut self,
        serial: u64,
        attempts: u32,
        next_at: i64,
        error: &str,
    ) -> Result<bool> {
        let Some(mut entry) = self.outbox_entry(serial)? else {
            return Ok(false);
        };
        if entry.attempts >= attempts {
            return Ok(false);
        }
        entry.attempts = attempts;
        entry.next_at = next_at;
        entry.last_error = Some(error.to_string());
        self.t.outbox.insert(serial, entry.encode().as_slice())?;
        self.created.outbox = true;
        Ok(true)
    }

    fn outbox_entry(&self, serial: u64) -> Result<Option<OutboxEntry>> {
        match self.t.outbox.get(serial)? {
            Some(bytes) => Ok(Some(
                OutboxEntry::decode(bytes.value()).ok_or_else(|| corrupt("outbox entry"))?,
            )),
            None => Ok(None),
        }
    }

    fn pipeline_name(&self, pipeline: Option<EntityId>) -> Result<String> {
        let Some(id) = pipeline else {
            return Ok(String::new());
        };
        match self.t.entities.get(id.0)? {
            Some(bytes) => Ok(EntityDetail::decode(bytes.value())?.name),
            None => Ok(String::new()),
        }
    }

    /// The next value of a serial counter in `meta`, starting at 1.
    fn next_counter(&mut self, name: &str) -> Result<u64> {
        let next = u64::from_le_bytes(self.counter(name, 1u64.to_le_bytes())?);
        self.t
            .meta
            .insert(name, (next + 1).to_le_bytes().as_slice())?;
        Ok(next)
    }
}

/// The windows one pipeline's rules asked about, each read from the rollups once (rules of the
/// same window share it, and the windows share what they read).
#[derive(Default)]
struct Windows {
    cut: Option<Option<i64>>,
    memo: crate::store::rollup::Memo,
    read: Vec<(Asked, WindowStats)>,
}

/// A window's inclusive seconds and what a rule asks of it.
type Asked = ((i64, i64), Wanted);

/// What a rule asks of a window.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Tally,
    /// The tally and exact percentiles.
    Percentiles,
}

impl Windows {
    /// A pipeline's tally and percentiles in the inclusive seconds `window`, as the tables hold
    /// them changed by `pending`; `None` when what is `wanted` cannot be exact (percentiles,
    /// when a run taken out may have been the window's longest).
    fn stats(
        &mut self,
        batch: &Batch<'_>,
        pipeline: EntityId,
        (window, wanted): Asked,
        pending: &[Pending],
    ) -> Result<Option<WindowStats>> {
        let asked = (window, wanted);
        if let Some((_, stats)) = self.read.iter().find(|(read, _)| *read == asked) {
            return Ok(Some(*stats));
        }
        let Some(range) = TimeRange::new(window.0, window.1) else {
            return Ok(Some(WindowStats::default()));
        };
        let cut = match self.cut {
            Some(cut) => cut,
            None => *self.cut.insert(batch.retention_cut()?),
        };
        let mut source = Source {
            years: &batch.t.year_rollups,
            rollups: &batch.t.rollups,
            run_log: &batch.t.run_log,
            runs: &batch.t.pipeline_runs,
            cut,
            memo: std::mem::take(&mut self.memo),
        };
        // The aggregates the transaction knows serve every judgment's questions.
        source.memo.put_aggs(batch.stored_aggs.take());
        let series = Series {
            id: pipeline,
            kind: EntityKind::Pipeline,
            pipeline,
        };
        let second = |agg: &PipelineRunAgg| agg.latest_micros.div_euclid(MICROS_PER_SECOND);
        let within = |agg: &PipelineRunAgg| (window.0..=window.1).contains(&second(agg));
        let adjust = |tally: &mut Tally, histogram: &mut Histogram| {
            // Runs before a retention cut are answered as the tables have them.
            if let Some(cut) = cut
                && pending
                    .iter()
                    .flat_map(|change| [change.before, change.now])
                    .flatten()
                    .any(|agg| second(&agg) < cut)
            {
                return false;
            }
            let mut added_max = None;
            for agg in pending
                .iter()
                .filter_map(|change| change.now)
                .filter(within)
            {
                *tally = *tally + Tally::of_run(agg.failed == 0, agg.duration_ms);
                histogram.add_value(agg.duration_ms);
                added_max = added_max.max(Some(agg.duration_ms));
            }
            // The maximum stays known unless a run taken out may have been the only one that
            // long: one added at least as long keeps it.
            let max = histogram.max();
            let kept = added_max.is_some_and(|added| added >= max);
            for agg in pending
                .iter()
                .filter_map(|change| change.before)
                .filter(within)
            {
                if wanted == Wanted::Percentiles && agg.duration_ms >= max && !kept {
                    return false;
                }
                *tally = *tally - Tally::of_run(agg.failed == 0, agg.duration_ms);
                histogram.remove_value(agg.duration_ms);
            }
            true
        };
        let stats = range_summary_with(&source, &series, range, adjust)?;
        self.memo = source.memo;
        batch.stored_aggs.replace(self.memo.take_aggs());
        if let Some(stats) = stats {
            self.read.push((asked, stats));
        }
        Ok(stats)
    }
}

/// Verdicts judged on the tables once everything is written out, which are always exact.
fn written(verdicts: Option<Vec<Option<Verdict>>>) -> Result<Vec<Option<Verdict>>> {
    verdicts.ok_or_else(|| Error::Internal("a window is inexact when written out".into()))
}

/// Moves the pipeline runs of one microsecond, newest (highest UUID) first, after the newer
/// ones.
fn settle_group(group: &mut Vec<RecentRun>, recent: &mut Vec<RecentRun>) {
    group.sort_unstable_by_key(|run| std::cmp::Reverse(run.uuid));
    recent.append(group);
}
