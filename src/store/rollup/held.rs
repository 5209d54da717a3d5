//! Rollup records held in memory between a transaction's write-outs for judging alert rules:
//! a busy transaction judges after nearly every report, and each judging write-out would
//! otherwise decode, re-encode and rewrite the same records. Flushes change held records in
//! place; reads of the transaction ([`super::Source`] with `held`) see them before the tables;
//! a whole write-out writes them, once.

use std::collections::BTreeMap;

use redb::Table;

use super::record::BucketRecord;
use crate::error::Result;
use crate::store::tables::{EntityId, ROLLUP_KEY_LEN, YEAR_KEY_LEN, rollup_key, year_key};
use crate::time::Level;

/// A held record.
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

/// The records held (`None` where the record was deleted), by entity, level and bucket start.
#[derive(Debug, Default)]
pub struct Held {
    records: BTreeMap<(EntityId, Level, i64), Option<HeldRecord>>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A record as held: `None` when it is not, `Some(None)` when it was deleted.
    pub fn get(&self, entity: EntityId, level: Level, start: i64) -> Option<Option<&HeldRecord>> {
        self.records
            .get(&(entity, level, start))
            .map(Option::as_ref)
    }

    /// Takes a record out: `None` when it is not held.
    pub fn take(
        &mut self,
        entity: EntityId,
        level: Level,
        start: i64,
    ) -> Option<Option<HeldRecord>> {
        self.records.remove(&(entity, level, start))
    }

    /// Holds a record (`None`: deleted) instead of writing it.
    pub fn put(&mut self, entity: EntityId, level: Level, start: i64, record: Option<HeldRecord>) {
        self.records.insert((entity, level, start), record);
    }

    /// The starts of an entity's held year records (or deletions) in `[first, end)`.
    pub fn years(&self, entity: EntityId, first: i64, end: i64) -> impl Iterator<Item = i64> {
        let year = Level::Year;
        self.records
            .range((entity, year, first)..(entity, year, end))
            .map(|((_, _, start), _)| *start)
    }

    /// Writes every held record to the tables, and holds none.
    pub fn write_all(
        &mut self,
        years: &mut YearTable<'_>,
        rollups: &mut RollupTable<'_>,
    ) -> Result<()> {
        for (key, record) in std::mem::take(&mut self.records) {
            let bytes = record.map(|record| record.encode());
            store(years, rollups, key, bytes.as_deref())?;
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
