//! Cluster mode's bookkeeping inside a write transaction: the last applied stream sequence,
//! each writer's last applied message number (a writer's messages are applied in number order
//! only: see `crate::cluster::publisher`), and the sequences skipped for good. All of it is
//! part of the tables, so every node that applied the same stream holds the same.

use redb::ReadableTable;

use super::Batch;
use crate::error::Result;
use crate::store::tables::meta;

/// Whether a writer's numbered message is the next one of that writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The next one: apply it (its number is recorded).
    Next,
    /// Its number was applied already (a retried publish, a replay): skip it.
    Duplicate,
    /// An earlier number is missing (its copy is still on its way): skip this copy; the writer
    /// sends it again after the missing one.
    Early { expected: u64 },
}

impl Batch<'_> {
    /// Cluster mode: the last stream sequence this transaction applies.
    pub fn record_applied_seq(&mut self, seq: u64) -> Result<()> {
        self.t
            .meta
            .insert(meta::APPLIED_SEQ, seq.to_le_bytes().as_slice())?;
        Ok(())
    }

    /// Decides whether message `number` of `writer` is applied, recording it when it is.
    pub fn admit(&mut self, writer: &[u8; 16], number: u64) -> Result<Admission> {
        let last = self.t.writers.get(writer)?.map_or(0, |n| n.value());
        if number <= last {
            return Ok(Admission::Duplicate);
        }
        if number > last + 1 {
            return Ok(Admission::Early { expected: last + 1 });
        }
        self.t.writers.insert(writer, number)?;
        Ok(Admission::Next)
    }

    /// Records that stream sequence `seq` is skipped for good, and why.
    pub fn record_skipped(&mut self, seq: u64, why: &str) -> Result<()> {
        self.t.skipped.insert(seq, why)?;
        Ok(())
    }
}
