//! The rollup contributions of one write transaction on their way into [`RollupDeltas`]: added
//! on the writer's thread, or, in a large transaction with a [`RollupWorker`] at hand, handed in
//! batches to the worker's thread, which gathers (and at the end prepares) the deltas while the
//! writer goes on checking and storing runs.
//!
//! The worker applies contributions in the order they were made, so the deltas are those the
//! writer's thread would have gathered: the tables stay the same however many threads write.
//! One worker thread lives as long as the store (its heap stays warm from one transaction to
//! the next); transactions are serialized, so it serves one at a time.

use std::sync::Mutex;
use std::sync::mpsc;

use super::Series;
use super::write::{PreparedDeltas, RollupDeltas};
use crate::error::{Error, Result};
use crate::model::Tally;
use crate::time::Timestamp;

/// Contributions handed to the worker at a time; a transaction with fewer never uses it.
const HANDOFF: usize = 4_096;

/// One task run's or pipeline run's contribution (or retraction).
#[derive(Clone, Copy)]
struct Contribution {
    pipeline_run: bool,
    series: Series,
    at: Timestamp,
    tally: Tally,
    retract: bool,
}

impl Contribution {
    fn add_to(self, deltas: &mut RollupDeltas) {
        if self.pipeline_run {
            deltas.pipeline_run(self.series, self.at, self.tally, self.retract);
        } else {
            deltas.task_run(self.series, self.at, self.tally, self.retract);
        }
    }
}

/// What the worker is asked to do.
enum Job {
    /// A transaction starts: forget what an earlier one left (one that failed midway).
    Begin,
    Add(Vec<Contribution>),
    /// The transaction's contributions are all in: prepare and send back its deltas.
    Finish,
}

/// A thread gathering rollup deltas for the store's write transactions.
pub struct RollupWorker {
    jobs: mpsc::Sender<Job>,
    prepared: Mutex<mpsc::Receiver<PreparedDeltas>>,
}

impl RollupWorker {
    /// Starts the worker's thread, or `None` when no thread can be started (the writer then
    /// gathers rollups itself). The thread ends when the worker is dropped.
    pub fn start() -> Option<RollupWorker> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (send_prepared, prepared) = mpsc::channel();
        std::thread::Builder::new()
            .name("runledger-rollups".into())
            .spawn(move || {
                let mut deltas = RollupDeltas::default();
                for job in receiver {
                    match job {
                        Job::Begin => deltas = RollupDeltas::default(),
                        Job::Add(batch) => {
                            for contribution in batch {
                                contribution.add_to(&mut deltas);
                            }
                        }
                        Job::Finish => {
                            let done = std::mem::take(&mut deltas).prepare();
                            if send_prepared.send(done).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .ok()?;
        Some(RollupWorker {
            jobs,
            prepared: Mutex::new(prepared),
        })
    }
}

/// The contributions of one transaction (see the module docs).
pub struct Contributions<'w> {
    /// Gathered on this thread: everything when the worker is not used.
    deltas: RollupDeltas,
    /// Waiting to be handed to the worker.
    pending: Vec<Contribution>,
    /// The worker that may be used, and whether this transaction has started using it.
    worker: Option<&'w RollupWorker>,
    started: bool,
}

impl<'w> Contributions<'w> {
    /// Contributions gathered on this thread only, or (with a worker) on the worker's thread
    /// once there are enough of them.
    pub fn new(worker: Option<&'w RollupWorker>) -> Contributions<'w> {
        Contributions {
            deltas: RollupDeltas::default(),
            pending: Vec::new(),
            worker,
            started: false,
        }
    }

    /// A finished task run counts for its task (or, with `retract`, stops counting) and weighs
    /// for its pipeline.
    pub fn task_run(&mut self, task: Series, at: Timestamp, tally: Tally, retract: bool) {
        self.push(Contribution {
            pipeline_run: false,
            series: task,
            at,
            tally,
            retract,
        });
    }

    /// A pipeline run counts for its pipeline at its latest task run (or stops counting).
    pub fn pipeline_run(&mut self, pipeline: Series, at: Timestamp, tally: Tally, retract: bool) {
        self.push(Contribution {
            pipeline_run: true,
            series: pipeline,
            at,
            tally,
            retract,
        });
    }

    fn push(&mut self, contribution: Contribution) {
        if self.worker.is_none() {
            contribution.add_to(&mut self.deltas);
            return;
        }
        self.pending.push(contribution);
        if self.pending.len() >= HANDOFF {
            self.hand_off();
        }
    }

    /// Hands the pending contributions to the worker; where it cannot take the first batch,
    /// they are gathered here, and so are all that follow.
    fn hand_off(&mut self) {
        let Some(worker) = self.worker else { return };
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(HANDOFF));
        let first = !self.started;
        if first && worker.jobs.send(Job::Begin).is_err() {
            self.gather_here(batch);
            return;
        }
        self.started = true;
        if let Err(refused) = worker.jobs.send(Job::Add(batch)) {
            // The worker ended: `finish` reports the transaction failed.
            let Job::Add(batch) = refused.0 else { return };
            self.gather_here(batch);
        }
    }

    fn gather_here(&mut self, batch: Vec<Contribution>) {
        self.worker = None;
        for contribution in batch {
            contribution.add_to(&mut self.deltas);
        }
    }

    /// The transaction's deltas, ready to flush.
    pub fn finish(mut self) -> Result<PreparedDeltas> {
        let lost = || Error::Internal("the thread gathering rollups ended".into());
        let (Some(worker), true) = (self.worker, self.started) else {
            if self.started {
                return Err(lost()); // some contributions went to a worker that ended
            }
            for contribution in std::mem::take(&mut self.pending) {
                contribution.add_to(&mut self.deltas);
            }
            return Ok(self.deltas.prepare());
        };
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            worker.jobs.send(Job::Add(pending)).map_err(|_| lost())?;
        }
        worker.jobs.send(Job::Finish).map_err(|_| lost())?;
        let prepared = worker.prepared.lock().unwrap_or_else(|e| e.into_inner());
        prepared.recv().map_err(|_| lost())
    }
}
