//! Handing pending task runs to executors. Each organization has a queue; executors of that
//! organization subscribe, and every pending run goes to one of them (round robin among those
//! with room). A run leaves an executor's hands when a report for it arrives (running or
//! finished); if the executor disconnects first, its runs go back to the queue for another.
//! Delivery is therefore at least once. The queue is rebuilt from the database at start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::model::{OrgId, PendingTaskRun, TaskRunId};

/// Runs an executor may hold before it gets no more.
const EXECUTOR_WINDOW: usize = 64;

#[derive(Default)]
pub struct Dispatcher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    orgs: HashMap<OrgId, Queue>,
    next_executor: u64,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<PendingTaskRun>,
    executors: Vec<Executor>,
    turn: usize,
}

struct Executor {
    id: u64,
    sender: mpsc::Sender<PendingTaskRun>,
    holding: HashMap<TaskRunId, PendingTaskRun>,
}

/// An executor's end: pending runs arrive on `runs`; dropping it gives back what it held.
pub struct Subscription {
    pub runs: mpsc::Receiver<PendingTaskRun>,
    dispatcher: Arc<Dispatcher>,
    org: OrgId,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.dispatcher.unsubscribe(self.org, self.id);
    }
}

impl Dispatcher {
    /// A dispatcher holding `waiting` (the runs still pending at start).
    pub fn new(waiting: Vec<PendingTaskRun>) -> Dispatcher {
        let dispatcher = Dispatcher::default();
        dispatcher.enqueue(waiting);
        dispatcher
    }

    pub fn enqueue(&self, runs: Vec<PendingTaskRun>) {
        let mut state = self.state.lock().expect("never poisoned");
        for run in runs {
            let queue = state.orgs.entry(run.organization).or_default();
            queue.waiting.push_back(run);
            queue.deal();
        }
    }

    pub fn subscribe(self: &Arc<Self>, org: OrgId) -> Subscription {
        let (sender, runs) = mpsc::channel(EXECUTOR_WINDOW);
        let mut state = self.state.lock().expect("never poisoned");
        state.next_executor += 1;
        let id = state.next_executor;
        let queue = state.orgs.entry(org).or_default();
        queue.executors.push(Executor {
            id,
            sender,
            holding: HashMap::new(),
        });
        queue.deal();
        Subscription {
            runs,
            dispatcher: self.clone(),
            org,
            id,
        }
    }

    /// Reports arrived for these runs: whoever held them is done with them.
    pub fn taken_up(&self, org: OrgId, runs: &[TaskRunId]) {
        let mut state = self.state.lock().expect("never poisoned");
        if let Some(queue) = state.orgs.get_mut(&org) {
            for run in runs {
                queue.waiting.retain(|waiting| waiting.task_run != *run);
                for executor in &mut queue.executors {
                    executor.holding.remove(run);
                }
            }
            queue.deal();
        }
    }

    fn unsubscribe(&self, org: OrgId, id: u64) {
        let mut state = self.state.lock().expect("never poisoned");
        if let Some(queue) = state.orgs.get_mut(&org)
            && let Some(index) = queue.executors.iter().position(|e| e.id == id)
        {
            let executor = queue.executors.remove(index);
            let mut returned: Vec<PendingTaskRun> = executor.holding.into_values().collect();
            returned.sort_by_key(|run| run.serial);
            for run in returned.into_iter().rev() {
                queue.waiting.push_front(run);
            }
            queue.deal();
        }
    }

    /// Ends every executor's stream (the server is shutting down); what they held stays pending
    /// in the database and is queued again at the next start.
    pub fn close(&self) {
        let mut state = self.state.lock().expect("never poisoned");
        for queue in state.orgs.values_mut() {
            queue.executors.clear();
        }
    }

    /// How many of the organization's runs are pending: waiting for an executor, or held by
    /// one that has not reported them yet.
    pub fn pending(&self, org: OrgId) -> usize {
        let state = self.state.lock().expect("never poisoned");
        state.orgs.get(&org).map_or(0, |queue| {
            queue.waiting.len()
                + queue
                    .executors
                    .iter()
                    .map(|e| e.holding.len())
                    .sum::<usize>()
        })
    }

    /// How many runs wait for an executor.
    #[cfg(test)]
    pub fn waiting(&self, org: OrgId) -> usize {
        let state = self.state.lock().expect("never poisoned");
        state.orgs.get(&org).map_or(0, |queue| queue.waiting.len())
    }
}

impl Queue {
    /// Hands waiting runs to executors with room, taking turns.
    fn deal(&mut self) {
        while let Some(run) = self.waiting.front() {
            let count = self.executors.len();
            let Some(offset) = (0..count).find(|offset| {
                let executor = &self.executors[(self.turn + offset) % count];
                executor.holding.len() < EXECUTOR_WINDOW && !executor.sender.is_closed()
            }) else {
                return;
            };
            let index = (self.turn + offset) % count;
            self.turn = index + 1;
            let executor = &mut self.executors[index];
            match executor.sender.try_send(run.clone()) {
                Ok(()) => {
                    let run = self.waiting.pop_front().expect("front exists");
                    executor.holding.insert(run.task_run, run);
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PipelineId, PipelineRunId, TaskId, TaskType};
    use crate::time::Timestamp;
    use uuid::Uuid;

    fn run(serial: u64, org: OrgId) -> PendingTaskRun {
        PendingTaskRun {
            serial,
            task_run: TaskRunId(Uuid::from_u128(u128::from(serial))),
            pipeline_run: PipelineRunId(Uuid::nil()),
            pipeline: PipelineId(Uuid::nil()),
            task: TaskId(Uuid::nil()),
            task_type: TaskType::Query,
            organization: org,
            created_at: Timestamp::from_micros(0).unwrap(),
        }
    }

    #[test]
    fn runs_go_to_one_executor_of_their_organization_and_come_back_when_it_leaves() {
        let (org, other) = (OrgId(Uuid::from_u128(1)), OrgId(Uuid::from_u128(2)));
        let dispatcher = Arc::new(Dispatcher::new(vec![run(1, org), run(2, other)]));
        let mut first = dispatcher.subscribe(org);
        let mut second = dispatcher.subscribe(org);
        dispatcher.enqueue(vec![run(3, org)]);
        assert_eq!(first.runs.try_recv().unwrap().serial, 1);
        assert_eq!(second.runs.try_recv().unwrap().serial, 3);
        assert!(first.runs.try_recv().is_err() && second.runs.try_recv().is_err());
        assert_eq!(dispatcher.waiting(other), 1);

        // The second executor leaves without reporting run 3: it goes to the first.
        drop(second);
        assert_eq!(first.runs.try_recv().unwrap().serial, 3);
        // Run 1 is reported: the first executor leaving gives back only run 3.
        assert_eq!(dispatcher.pending(org), 2);
        dispatcher.taken_up(org, &[TaskRunId(Uuid::from_u128(1))]);
        assert_eq!(dispatcher.pending(org), 1);
        drop(first);
        assert_eq!(dispatcher.waiting(org), 1);
        let mut third = dispatcher.subscribe(org);
        assert_eq!(third.runs.try_recv().unwrap().serial, 3);
    }
}
