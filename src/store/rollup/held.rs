//! Rollup records held in memory between a transaction's write-outs for judging alert rules:
//! a busy transaction judges after nearly every report, and each judging write-out would
//! otherwise decode, re-encode and rewrite the same records. Flushes change held records in
//! place; reads of the transaction ([`super::Source`] with `held`) see them before the tables;
//! a whole write-out writes them, once.

use std::collections::BTreeMap;

use redb::Table;

use super::record::BucketRecord;
use crate::error::{Error, Result};
use crate::store::tables::{EntityId, ROLLUP_KEY_LEN, YEAR_KEY_LEN, rollup_key, year_key};
use crate::time::Level;

/// A held record: `None` where the record was deleted.
#[derive(Debug)]
pub struct HeldRecord {
    pub record: BucketRecord,
    /// Whether it is a pipeline's record (which carries weights).
    pub weighted: bool,
}

impl HeldRecord {
    /// The record as the tables would store it.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        self.record.encode(self.weighted, &mut bytes);
        bytes
    }
}

/// The records held, by entity, level tag and bucket start.
#[derive(Debug, Default)]
pub struct Held {
    records: BTreeMap<(u32, u8, i64), Option<HeldRecord>>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A record as held: `None` when it is not, `Some(None)` when it was deleted.
    pub fn get(&self, entity: EntityId, level: Level, start: i64) -> Option<Option<&HeldRecord>> {
        self.records
            .get(&(entity.0, level.tag(), start))
            .map(Option::as_ref)
    }

    /// Takes a record out: `None` when it is not held.
    pub fn take(
        &mut self,
        entity: EntityId,
        level: Level,
        start: i64,
    ) -> Option<Option<HeldRecord>> {
        self.records.remove(&(entity.0, level.tag(), start))
    }

    /// Holds a record (`None`: deleted) instead of writing it.
    pub fn put(&mut self, entity: EntityId, level: Level, start: i64, record: Option<HeldRecord>) {
        self.records.insert((entity.0, level.tag(), start), record);
    }

    /// An entity's held year records starting in `[first, end)`, by start.
    pub fn years(
        &self,
        entity: EntityId,
        first: i64,
        end: i64,
    ) -> impl Iterator<Item = (i64, Option<&HeldRecord>)> {
        let tag = Level::Year.tag();
        self.records
            .range((entity.0, tag, first)..(entity.0, tag, end))
            .map(|((_, _, start), record)| (*start, record.as_ref()))
    }

    /// Writes every held record to the tables, and holds none.
    pub fn write_all(
        &mut self,
        years: &mut YearTable<'_>,
        rollups: &mut RollupTable<'_>,
    ) -> Result<()> {
        for ((entity, tag, start), record) in std::mem::take(&mut self.records) {
            let level = Level::ALL
                .into_iter()
                .find(|level| level.tag() == tag)
                .ok_or_else(|| Error::Internal("a held rollup record of no level".into()))?;
            let bytes = record.map(|record| record.encode());
            store(
                years,
                rollups,
                (EntityId(entity), level, start),
                bytes.as_deref(),
            )?;
        }
        Ok(())
    }
}

pub type YearTable<'txn> = Table<'txn, &'static [u8; YEAR_KEY_LEN], &'static [u8]>;
pub type RollupTable<'txn> = Table<'txn, &'static [u8; ROLLUP_KEY_LEN], &'static [u8]>;

/// Stores an encoded record in its table, or removes it (`None`).
pub fn store(
    years: &mut YearTable<'_>,
    rollups: &mut RollupTable<'_>,
    (entity, level, start): (EntityId, Level, i64),
    bytes: Option<&[u8]>,
) -> Result<()> {
    match (level, bytes) {
        (Level::Year, Some(bytes)) => years.insert(&year_key(entity, start), bytes)?,
        (Level::Year, None) => years.remove(&year_key(entity, start))?,
        (_, Some(bytes)) => rollups.insert(&rollup_key(level, start, entity), bytes)?,
        (_, None) => rollups.remove(&rollup_key(level, start, entity))?,
    };
    Ok(())
}
