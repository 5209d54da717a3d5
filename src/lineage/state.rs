//! What runledger knows of one OpenLineage run, merged from its events in any order, and the
//! task run it stands for. Merging is order-independent for one delivery of each event (a START
//! and a terminal event give the same run whichever comes first; a child naming its parent
//! before the parent's own events changes nothing) and idempotent (a redelivered event changes
//! nothing); a second, different terminal event replaces the first, like a re-report.

use uuid::Uuid;

use super::{EventType, Observed};
use crate::model::{
    OrgId, PipelineId, PipelineRunId, RunState, TaskError, TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::time::Timestamp;

/// The run's own job, from its own events.
#[derive(Clone, Debug, PartialEq)]
pub struct Own {
    pub pipeline: PipelineId,
    pub task: TaskId,
    pub task_type: TaskType,
    pub pipeline_run: PipelineRunId,
    pub has_parent: bool,
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminal {
    pub successful: bool,
    pub at: Timestamp,
    pub error: Option<String>,
    /// Sealed, as stored in the task run.
    pub output: Vec<u8>,
}

/// The merged state of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineageRun {
    pub own: Option<Own>,
    /// Another run names this one as its parent or root.
    pub named_parent: bool,
    /// The earliest START event's time.
    pub start: Option<Timestamp>,
    pub terminal: Option<Terminal>,
}

/// The task run a lineage run stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum Derived {
    /// None yet: only named by other runs.
    Nothing,
    /// A task run, running or finished; `started_at` is its START's time, when known.
    TaskRun {
        run: Box<TaskRun>,
        started_at: Option<Timestamp>,
    },
    /// The run turned out to be a pipeline run: the task run it may have been given before is
    /// withdrawn (replaced by a pending one, which counts nowhere and waits for no executor).
    Withdrawn(Box<TaskRun>),
}

impl LineageRun {
    /// Folds an event of this run in. Returns whether anything changed.
    pub fn merge(&mut self, event: &Observed) -> bool {
        let before = self.clone();
        let own = Own {
            pipeline: event.pipeline,
            task: event.task,
            task_type: event.task_type,
            pipeline_run: event.pipeline_run,
            has_parent: event.has_parent,
        };
        match &self.own {
            // An event with a parent facet says more than one without (a RUNNING event of
            // some emitters carries no facets).
            Some(known) if known.has_parent || !own.has_parent => {}
            _ => self.own = Some(own),
        }
        match event.event_type {
            EventType::Start => {
                self.start = Some(match self.start {
                    Some(start) => start.min(event.event_time),
                    None => event.event_time,
                });
            }
            kind if kind.is_terminal() => {
                self.terminal = Some(Terminal {
                    successful: kind == EventType::Complete,
                    at: event.event_time,
                    error: event.error.clone(),
                    output: event.output.clone(),
                });
            }
            _ => {}
        }
        *self != before
    }

    /// Marks the run as named by a child. Returns whether it was not yet.
    pub fn name_as_parent(&mut self) -> bool {
        !std::mem::replace(&mut self.named_parent, true)
    }

    /// Whether the run is a pipeline run rather than a task run.
    pub fn is_pipeline_run(&self) -> bool {
        self.named_parent && !self.own.as_ref().is_some_and(|own| own.has_parent)
    }

    /// The task run this run stands for, in organization `org`.
    pub fn derive(&self, run: Uuid, org: OrgId) -> Derived {
        let Some(own) = &self.own else {
            return Derived::Nothing;
        };
        let mut task_run = TaskRun {
            task_run: TaskRunId(run),
            pipeline_run: own.pipeline_run,
            pipeline: own.pipeline,
            task: own.task,
            organization: Some(org),
            task_type: own.task_type,
            state: RunState::Running,
            is_successful: false,
            duration_ms: 0,
            executed_at: None,
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: false,
            is_final_task: false,
        };
        if self.is_pipeline_run() {
            task_run.state = RunState::Pending;
            return Derived::Withdrawn(Box::new(task_run));
        }
        if let Some(terminal) = &self.terminal {
            task_run.state = RunState::Finished;
            task_run.is_successful = terminal.successful;
            task_run.executed_at = Some(terminal.at);
            task_run.duration_ms = self.start.map_or(0, |start| {
                let millis = (terminal.at.micros() - start.micros()).max(0) / 1_000;
                u32::try_from(millis).unwrap_or(u32::MAX)
            });
            task_run.output = terminal.output.clone();
            task_run.errors = terminal
                .error
                .iter()
                .map(|message| TaskError {
                    code: "openlineage.errorMessage".into(),
                    severity: "error".into(),
                    message: message.clone(),
                })
                .collect();
        }
        Derived::TaskRun {
            run: Box::new(task_run),
            started_at: self.start,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.push(VERSION);
        let mut flags = 0u8;
        flags |= u8::from(self.named_parent);
        if let Some(own) = &self.own {
            flags |= OWN;
            if own.has_parent {
                flags |= HAS_PARENT;
            }
        }
        if self.start.is_some() {
            flags |= START;
        }
        if let Some(terminal) = &self.terminal {
            flags |= TERMINAL;
            if terminal.successful {
                flags |= SUCCESSFUL;
            }
            if terminal.error.is_some() {
                flags |= ERROR;
            }
        }
        out.push(flags);
        if let Some(own) = &self.own {
            out.extend_from_slice(own.pipeline.0.as_bytes());
            out.extend_from_slice(own.task.0.as_bytes());
            out.push(own.task_type.code());
            out.extend_from_slice(own.pipeline_run.0.as_bytes());
        }
        if let Some(start) = self.start {
            out.extend_from_slice(&start.micros().to_be_bytes());
        }
        if let Some(terminal) = &self.terminal {
            out.extend_from_slice(&terminal.at.micros().to_be_bytes());
            if let Some(error) = &terminal.error {
                put_bytes(&mut out, error.as_bytes());
            }
            put_bytes(&mut out, &terminal.output);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<LineageRun> {
        let mut input = bytes;
        if take(&mut input, 1)? != [VERSION] {
            return None;
        }
        let flags = take(&mut input, 1)?[0];
        let uuid = |input: &mut &[u8]| -> Option<Uuid> {
            Some(Uuid::from_bytes(take(input, 16)?.try_into().ok()?))
        };
        let time = |input: &mut &[u8]| -> Option<Timestamp> {
            Timestamp::from_micros(i64::from_be_bytes(take(input, 8)?.try_into().ok()?))
        };
        let own = if flags & OWN != 0 {
            Some(Own {
                pipeline: PipelineId(uuid(&mut input)?),
                task: TaskId(uuid(&mut input)?),
                task_type: TaskType::from_code(take(&mut input, 1)?[0])?,
                pipeline_run: PipelineRunId(uuid(&mut input)?),
                has_parent: flags & HAS_PARENT != 0,
            })
        } else {
            None
        };
        let start = if flags & START != 0 {
            Some(time(&mut input)?)
        } else {
            None
        };
        let terminal = if flags & TERMINAL != 0 {
            let at = time(&mut input)?;
            let error = if flags & ERROR != 0 {
                Some(String::from_utf8(get_bytes(&mut input)?.to_vec()).ok()?)
            } else {
                None
            };
            let output = get_bytes(&mut input)?.to_vec();
            Some(Terminal {
                successful: flags & SUCCESSFUL != 0,
                at,
                error,
                output,
            })
        } else {
            None
        };
        if !input.is_empty() {
            return None;
        }
        Some(LineageRun {
            own,
            named_parent: flags & NAMED_PARENT != 0,
            start,
            terminal,
        })
    }
}

const VERSION: u8 = 1;
const NAMED_PARENT: u8 = 1;
const OWN: u8 = 2;
const HAS_PARENT: u8 = 4;
const START: u8 = 8;
const TERMINAL: u8 = 16;
const SUCCESSFUL: u8 = 32;
const ERROR: u8 = 64;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn get_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(take(input, 4)?.try_into().ok()?) as usize;
    take(input, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(event_type: EventType, second: i64, has_parent: bool) -> Observed {
        Observed {
            run: Uuid::from_u128(1),
            event_type,
            event_time: Timestamp::from_second(second).unwrap(),
            pipeline: PipelineId(Uuid::from_u128(2)),
            pipeline_name: "dag".into(),
            task: TaskId(Uuid::from_u128(3)),
            task_name: "dag.task".into(),
            task_type: TaskType::Processor,
            pipeline_run: PipelineRunId(Uuid::from_u128(4)),
            has_parent,
            parents: Vec::new(),
            error: (event_type == EventType::Fail).then(|| "boom".to_string()),
            output: if event_type.is_terminal() {
                vec![1, 2, 3]
            } else {
                Vec::new()
            },
        }
    }

    fn merged(events: &[Observed]) -> LineageRun {
        let mut run = LineageRun::default();
        for event in events {
            run.merge(event);
        }
        run
    }

    #[test]
    fn start_and_end_in_either_order_give_one_finished_run_with_its_duration() {
        let start = observed(EventType::Start, 1_000, true);
        let fail = observed(EventType::Fail, 1_090, true);
        let running = observed(EventType::Running, 1_010, false);
        let one = merged(&[start.clone(), running.clone(), fail.clone()]);
        let other = merged(&[fail.clone(), running, start.clone(), fail, start]);
        assert_eq!(one, other);
        let Derived::TaskRun { run, started_at } =
            one.derive(Uuid::from_u128(1), OrgId(Uuid::nil()))
        else {
            panic!("a task run")
        };
        assert_eq!(run.state, RunState::Finished);
        assert_eq!(run.duration_ms, 90_000);
        assert!(!run.is_successful);
        assert_eq!(run.errors[0].message, "boom");
        assert_eq!(run.output, vec![1, 2, 3]);
        assert_eq!(started_at, Timestamp::from_second(1_000));
    }

    #[test]
    fn a_run_named_as_a_parent_is_a_pipeline_run_unless_it_has_a_parent_itself() {
        let mut run = merged(&[observed(EventType::Start, 5, false)]);
        assert!(matches!(
            run.derive(Uuid::from_u128(1), OrgId(Uuid::nil())),
            Derived::TaskRun { .. }
        ));
        assert!(run.name_as_parent());
        assert!(!run.name_as_parent());
        assert!(matches!(
            run.derive(Uuid::from_u128(1), OrgId(Uuid::nil())),
            Derived::Withdrawn(_)
        ));
        run.merge(&observed(EventType::Complete, 9, true));
        assert!(!run.is_pipeline_run());
        let named_only = LineageRun {
            named_parent: true,
            ..LineageRun::default()
        };
        assert_eq!(
            named_only.derive(Uuid::from_u128(1), OrgId(Uuid::nil())),
            Derived::Nothing
        );
    }

    #[test]
    fn the_state_survives_its_encoding() {
        let states = [
            LineageRun::default(),
            merged(&[observed(EventType::Start, -5, false)]),
            merged(&[
                observed(EventType::Start, 5, true),
                observed(EventType::Fail, 9, true),
            ]),
            LineageRun {
                named_parent: true,
                ..merged(&[observed(EventType::Complete, 9, false)])
            },
        ];
        for state in states {
            assert_eq!(LineageRun::decode(&state.encode()), Some(state.clone()));
            let bytes = state.encode();
            assert_eq!(LineageRun::decode(&bytes[..bytes.len() - 1]), None);
        }
    }
}
