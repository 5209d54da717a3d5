//! What pruning keeps: a digest of every year and month record's parts that end by the
//! retention cut (the months of a year, the days of a month). Nothing may change them once the runs
//! before the cut are gone, so the digest is recorded when a cut is made, checked again when
//! the next one is, and by `verify`.

use sha2::{Digest, Sha256};

use super::rollup::BucketRecord;
use super::rollup::{RollupTable, YearTable};
use super::tables::{EntityId, ROLLUP_KEY_LEN, rollup_key, split_rollup_key, year_key_start};
use crate::error::Result;
use crate::time::{Level, MIN_SECOND};

/// The digest of the parts that end by `cut` of every year and month record.
pub fn digest(years: &impl YearTable, rollups: &impl RollupTable, cut: i64) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut add = |key: &[u8], level: Level, start: i64, bytes: &[u8]| -> Result<()> {
        let record = BucketRecord::decode(bytes)?;
        for part in record
            .parts
            .iter()
            .filter(|p| level.part_span(start, p.index).1 <= cut)
        {
            hasher.update(key);
            hasher.update(part.index.to_be_bytes());
            for value in [
                part.tally.successes,
                part.tally.failures,
                part.tally.duration_ms,
                part.weight,
                part.durations.max(),
            ] {
                hasher.update(value.to_be_bytes());
            }
            for (bin, count) in part.durations.bins() {
                hasher.update(bin.to_be_bytes());
                hasher.update(count.to_be_bytes());
            }
        }
        Ok(())
    };
    for entry in years.iter()? {
        let (key, value) = entry?;
        let start = year_key_start(key.value());
        if start < cut {
            add(key.value(), Level::Year, start, value.value())?;
        }
    }
    let low = rollup_key(Level::Month, MIN_SECOND, EntityId(0));
    let high = rollup_key(Level::Month, cut, EntityId(0));
    for entry in rollups.range::<&[u8; ROLLUP_KEY_LEN]>(&low..&high)? {
        let (key, value) = entry?;
        let (_, start, _) = split_rollup_key(key.value());
        add(key.value(), Level::Month, start, value.value())?;
    }
    Ok(hasher.finalize().into())
}

/// The digest recorded with a cut: the cut (a little-endian i64) and the digest.
pub fn encode(cut: i64, digest: &[u8; 32]) -> Vec<u8> {
    let mut bytes = cut.to_le_bytes().to_vec();
    bytes.extend_from_slice(digest);
    bytes
}

pub fn decode(bytes: &[u8]) -> Option<(i64, [u8; 32])> {
    let (cut, digest) = bytes.split_first_chunk::<8>()?;
    Some((i64::from_le_bytes(*cut), digest.try_into().ok()?))
}
