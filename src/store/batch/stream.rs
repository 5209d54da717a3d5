//! Cluster mode's bookkeeping inside a write transaction: the last applied stream sequence,
//! each writer's last applied message number, the copies that came before their turn, and the
//! sequences skipped for good. All of it is part of the tables, so every node that applied the
//! same stream holds the same.
//!
//! A writer's messages are applied in number order only (see `crate::cluster::publisher`): a
//! copy whose number is not next is kept until it is ([`Batch::keep_early`]); a copy whose
//! writer had confirmed every earlier number before sending it takes its turn at once, since
//! earlier numbers that were not seen here were removed from the stream (deleted, trimmed, or
//! passed over by the operator) and will not come.

use redb::ReadableTable;

use super::Batch;
use crate::error::Result;
use crate::store::tables::meta;

/// Copies kept early per writer, at most (a writer has at most its window of messages
/// unconfirmed, far fewer).
const MAX_KEPT: usize = 256;

/// What becomes of a writer's numbered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It takes its turn now, after any kept copies of numbers `from..` below it.
    Turn { from: u64 },
    /// Its number was applied already (a retried publish, a replay).
    Duplicate,
    /// An earlier number has not come yet: the copy is kept for its turn (`kept`), or, past
    /// the limit, dropped.
    Early { expected: u64, kept: bool },
}

fn early_key(writer: &[u8; 16], number: u64) -> [u8; 24] {
    let mut key = [0; 24];
    key[..16].copy_from_slice(writer);
    key[16..].copy_from_slice(&number.to_be_bytes());
    key
}

impl Batch<'_> {
    /// Cluster mode: the last stream sequence this transaction applies.
    pub fn record_applied_seq(&mut self, seq: u64) -> Result<()> {
        self.t
            .meta
            .insert(meta::APPLIED_SEQ, seq.to_le_bytes().as_slice())?;
        Ok(())
    }

    /// Decides what becomes of message `number` of `writer`, sent when its writer had
    /// confirmed every number through `confirmed`.
    pub fn admit(&mut self, writer: &[u8; 16], number: u64, confirmed: u64) -> Result<Admission> {
        let last = self.t.writers.get(writer)?.map_or(0, |n| n.value());
        if number <= last {
            return Ok(Admission::Duplicate);
        }
        if number == last + 1 || confirmed + 1 >= number {
            return Ok(Admission::Turn { from: last + 1 });
        }
        Ok(Admission::Early {
            expected: last + 1,
            kept: false,
        })
    }

    /// Records that `number` is the last applied message of `writer`.
    pub fn set_last_number(&mut self, writer: &[u8; 16], number: u64) -> Result<()> {
        self.t.writers.insert(writer, number)?;
        Ok(())
    }

    /// Keeps an early copy for its turn, unless one is kept already or the writer has too
    /// many kept; whether it is kept.
    pub fn keep_early(&mut self, writer: &[u8; 16], number: u64, copy: &[u8]) -> Result<bool> {
        let key = early_key(writer, number);
        if self.t.early.get(&key)?.is_some() {
            return Ok(true);
        }
        let kept = self
            .t
            .early
            .range::<&[u8; 24]>(&early_key(writer, 0)..=&early_key(writer, u64::MAX))?
            .count();
        if kept >= MAX_KEPT {
            return Ok(false);
        }
        self.t.early.insert(&key, copy)?;
        Ok(true)
    }

    /// Takes out the kept copies of `writer` numbered `from..to`, in number order.
    pub fn take_early(
        &mut self,
        writer: &[u8; 16],
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut taken = Vec::new();
        for entry in self
            .t
            .early
            .range::<&[u8; 24]>(&early_key(writer, from)..&early_key(writer, to))?
        {
            let (key, copy) = entry?;
            let number = u64::from_be_bytes(key.value()[16..].try_into().expect("8 bytes"));
            taken.push((number, copy.value().to_vec()));
        }
        for (number, _) in &taken {
            self.t.early.remove(&early_key(writer, *number))?;
        }
        Ok(taken)
    }

    /// Records that stream sequence `seq` is skipped for good, and why.
    pub fn record_skipped(&mut self, seq: u64, why: &str) -> Result<()> {
        self.t.skipped.insert(seq, why)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The admission rules against their purpose: whatever a publisher's copies go through
    //! (lost, stored late, stored twice, sent again in rounds), and however the stream is cut
    //! into transactions, the tables end as if the writer's messages had been applied once
    //! each, in number order.

    use proptest::prelude::*;

    use crate::model::{
        OrgId, PipelineId, PipelineRunId, RunState, TaskId, TaskRun, TaskRunId, TaskType,
    };
    use crate::store::{LoggedContent, LoggedMessage, Replayed, Store, StoreOptions, WriteOp};
    use crate::time::Timestamp;
    use crate::workload::Rng;

    /// One stored copy: its writer's number and the writer's confirmed count when it was sent.
    #[derive(Clone, Copy, Debug)]
    struct Copy {
        number: u64,
        confirmed: u64,
    }

    /// What a publisher with a window of `window` leaves in the stream for `total` messages,
    /// each send of a copy being stored at once, lost, or stored later; now and then a stored
    /// copy is stored again (a replay).
    fn history(total: u64, window: u64, seed: u64) -> Vec<Copy> {
        let mut rng = Rng::new(seed);
        let mut stream: Vec<Copy> = Vec::new();
        let mut late: Vec<Copy> = Vec::new();
        let (mut next, mut confirmed) = (1, 0);
        // The unconfirmed messages: number, count told in its frame, and whether the copy of
        // this round was stored at once (acknowledged).
        let mut flights: Vec<(u64, u64, bool)> = Vec::new();
        let send =
            |copy: Copy, stream: &mut Vec<Copy>, late: &mut Vec<Copy>, rng: &mut Rng| match rng
                .below(10)
            {
                0..=6 => {
                    stream.push(copy);
                    true
                }
                7 => {
                    late.push(copy);
                    false
                }
                _ => false,
            };
        while confirmed < total {
            while next <= total && (flights.len() as u64) < window {
                let copy = Copy {
                    number: next,
                    confirmed,
                };
                let acked = send(copy, &mut stream, &mut late, &mut rng);
                flights.push((next, confirmed, acked));
                next += 1;
            }
            if !late.is_empty() && rng.chance(0.3) {
                let at = rng.below(late.len() as u64) as usize;
                stream.push(late.swap_remove(at));
            }
            if !stream.is_empty() && rng.chance(0.05) {
                let again = stream[rng.below(stream.len() as u64) as usize];
                stream.push(again);
            }
            if flights[0].2 {
                confirmed = flights.remove(0).0;
            } else {
                // A failed acknowledgement: every unconfirmed message again, in order.
                for flight in &mut flights {
                    let copy = Copy {
                        number: flight.0,
                        confirmed: flight.1,
                    };
                    flight.2 = send(copy, &mut stream, &mut late, &mut rng);
                }
            }
        }
        stream.extend(late);
        stream
    }

    /// Message `number` re-reports one of a few task runs, so that order decides the outcome.
    fn message(number: u64) -> Vec<WriteOp> {
        let org = OrgId(uuid::Uuid::from_u128(1));
        let run = TaskRun {
            task_run: TaskRunId(uuid::Uuid::from_u128(100 + u128::from(number % 5))),
            pipeline_run: PipelineRunId(uuid::Uuid::from_u128(200 + u128::from(number % 3))),
            pipeline: PipelineId(uuid::Uuid::from_u128(10)),
            task: TaskId(uuid::Uuid::from_u128(11)),
            organization: Some(org),
            task_type: TaskType::Query,
            state: RunState::Finished,
            is_successful: number % 4 != 0,
            duration_ms: 1_000 + number as u32,
            executed_at: Timestamp::from_micros(1_750_000_000_000_000 + number as i64 * 1_000_000),
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: true,
            is_final_task: true,
        };
        vec![WriteOp::Report {
            runs: vec![run],
            at: Timestamp::from_micros(1_760_000_000_000_000).expect("in range"),
        }]
    }

    /// Every table's digest but the cluster's bookkeeping and `meta`.
    fn tables(store: &Store) -> Vec<(String, [u8; 32])> {
        let skip = ["meta", "writers", "early", "skipped"];
        let mut digests = store.digest().unwrap().tables;
        digests.retain(|(name, _)| !skip.contains(&name.as_str()));
        digests
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn every_history_applies_as_the_writers_messages_in_number_order(
            total in 1u64..60,
            window in 1u64..8,
            seed in any::<u64>(),
            group in 1usize..9,
        ) {
            let stream = history(total, window, seed);
            let dir = tempfile::tempdir().unwrap();
            let logged = Store::open(&dir.path().join("logged"), StoreOptions::default()).unwrap();
            let writer = [7u8; 16];
            let bodies: Vec<Vec<WriteOp>> = (0..=total).map(message).collect();
            let replay = |copy: &[u8]| {
                let seq = u64::from_be_bytes(copy[..8].try_into().unwrap());
                let number = u64::from_be_bytes(copy[8..].try_into().unwrap());
                Replayed { seq, ops: Ok(message(number)) }
            };
            let copies: Vec<Vec<u8>> = stream
                .iter()
                .enumerate()
                .map(|(at, copy)| {
                    let mut bytes = (at as u64 + 1).to_be_bytes().to_vec();
                    bytes.extend_from_slice(&copy.number.to_be_bytes());
                    bytes
                })
                .collect();
            let copy_fns: Vec<Box<dyn Fn() -> Vec<u8> + '_>> = copies
                .iter()
                .map(|bytes| Box::new(move || bytes.clone()) as Box<dyn Fn() -> Vec<u8>>)
                .collect();
            let messages: Vec<LoggedMessage<'_>> = stream
                .iter()
                .enumerate()
                .map(|(at, copy)| LoggedMessage {
                    seq: at as u64 + 1,
                    content: LoggedContent::Numbered {
                        writer,
                        number: copy.number,
                        confirmed: copy.confirmed,
                        ops: Ok(&bodies[copy.number as usize]),
                        copy: copy_fns[at].as_ref(),
                    },
                })
                .collect();
            for chunk in messages.chunks(group) {
                let through = chunk.last().unwrap().seq;
                logged.apply_logged(chunk, through, &replay).unwrap();
            }
            let reference = Store::open(&dir.path().join("reference"), StoreOptions::default()).unwrap();
            for body in &bodies[1..] {
                reference.apply_now(body).unwrap();
            }
            prop_assert_eq!(tables(&logged), tables(&reference));
            let snapshot = logged.snapshot().unwrap();
            let early = snapshot.open_table(crate::store::tables::EARLY).unwrap();
            prop_assert_eq!(redb::ReadableTableMetadata::len(&early).unwrap(), 0);
            let writers = snapshot.open_table(crate::store::tables::WRITERS).unwrap();
            prop_assert_eq!(writers.get(&writer).unwrap().map(|n| n.value()), Some(total));
        }
    }
}
