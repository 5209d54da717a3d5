//! The encoding of a rollup record (see [`super`]): a bucket's tally, weight and duration
//! distribution, then its parts'. [`BucketRecord`] is the whole record, decoded to be changed;
//! [`RecordView`] is the record as questions read it, each part's distribution parsed only if
//! that part is counted.

use crate::durations::{self, Bin, Durations, Histogram, PercentileScan, Percentiles};
use crate::error::Error;
use crate::model::Tally;
use crate::store::records::{Input, corrupt, put_bytes, put_varint};

/// One part of a [`BucketRecord`]: a tally and the distribution of its durations, and for a
/// pipeline's records the number of its task runs executed in the part (its weight, which decides
/// whether finer records are kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    pub index: u16,
    pub tally: Tally,
    pub weight: u64,
    pub durations: Durations,
}

impl Part {
    /// Nothing counted: a delta whose tally cancels out may still move durations between bins.
    pub fn is_empty(&self) -> bool {
        self.tally.is_empty() && self.weight == 0 && self.durations.is_empty()
    }

    /// Adds another part's contributions (the max is the larger; see [`Durations`]).
    pub fn add(&mut self, other: &Part) {
        self.tally = self.tally + other.tally;
        self.weight = self.weight.wrapping_add(other.weight);
        self.durations.add(&other.durations);
    }
}

/// A rollup record: the tally of a bucket and the tallies and duration distributions of its
/// non-empty parts in index order (the months of a year, the days of a month, the hours of a
/// day, the seconds of an hour); for a pipeline, also weights. Encoded as varints, so a record of
/// a day with one run is a few bytes.
///
/// A distribution is stored as its exact maximum duration, then the number of other non-empty
/// bins and those bins (bin number as the step from the previous one, count) in ascending order;
/// the maximum's bin holds the runs not counted elsewhere, so that of one run costs only its
/// maximum. The encoding: flags, total tally, (weight), the whole bucket's distribution (the sum
/// of its parts', when it has runs), then each part: index, tally, (weight), and when it has
/// runs its distribution behind its length (so [`RecordView`] skips the parts it does not count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketRecord {
    pub total: Tally,
    pub weight: u64,
    pub parts: Vec<Part>,
}

const RECORD_WEIGHTED: u8 = 1;

impl BucketRecord {
    pub fn is_empty(&self) -> bool {
        self.total.is_empty() && self.weight == 0 && self.parts.is_empty()
    }

    /// The part with this index, if the record has it.
    pub fn part(&self, index: u16) -> Option<&Part> {
        self.parts
            .binary_search_by_key(&index, |p| p.index)
            .ok()
            .map(|at| &self.parts[at])
    }

    /// `weighted` for a pipeline's records (which carry weights), not a task's.
    pub fn encode(&self, weighted: bool, out: &mut Vec<u8>) {
        out.push(u8::from(weighted) * RECORD_WEIGHTED);
        encode_tally(&self.total, out);
        if weighted {
            put_varint(out, self.weight);
        }
        if self.total.runs() > 0 {
            let total = Durations::sum(self.parts.iter().map(|p| &p.durations));
            encode_durations(&total, out);
        }
        let mut blob = Vec::new();
        for part in &self.parts {
            put_varint(out, u64::from(part.index));
            encode_tally(&part.tally, out);
            if weighted {
                put_varint(out, part.weight);
            }
            if part.tally.runs() > 0 {
                blob.clear();
                encode_durations(&part.durations, &mut blob);
                put_bytes(out, &blob);
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<BucketRecord, Error> {
        let (head, parts) = BucketRecord::decode_lazily(bytes)?;
        Ok(BucketRecord {
            total: head.0,
            weight: head.1,
            parts: parts.collect::<Result<_, _>>()?,
        })
    }

    /// The total and weight, and the parts as an iterator that decodes them one at a time.
    pub fn decode_lazily(bytes: &[u8]) -> Result<((Tally, u64), Parts<'_>), Error> {
        let bad = || corrupt("rollup");
        let mut input = Input(bytes);
        let weighted = match input.byte().ok_or_else(bad)? {
            0 => false,
            RECORD_WEIGHTED => true,
            _ => return Err(bad()),
        };
        let total = decode_tally_from(&mut input).ok_or_else(bad)?;
        let weight = if weighted {
            input.varint().ok_or_else(bad)?
        } else {
            0
        };
        if total.runs() > 0 {
            for_each_bin(&mut input, total.runs(), |_, _| {}).ok_or_else(bad)?;
        }
        Ok(((total, weight), Parts { input, weighted }))
    }

    /// Adds `delta` (whose parts are sorted by index, one entry per index), dropping parts that
    /// become empty.
    pub fn merge(&mut self, delta: &BucketRecord) {
        self.total = self.total + delta.total;
        self.weight = self.weight.wrapping_add(delta.weight);
        let mut merged = Vec::with_capacity(self.parts.len() + delta.parts.len());
        let mut mine = std::mem::take(&mut self.parts).into_iter().peekable();
        let mut theirs = delta.parts.iter().peekable();
        loop {
            let mut next = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.index == b.index => {
                    let mut sum = mine.next().expect("peeked");
                    sum.add(theirs.next().expect("peeked"));
                    sum
                }
                (Some(a), Some(b)) if a.index < b.index => mine.next().expect("peeked"),
                (Some(_), Some(_)) | (None, Some(_)) => theirs.next().expect("peeked").clone(),
                (Some(_), None) => mine.next().expect("peeked"),
                (None, None) => break,
            };
            if next.durations.is_empty() {
                next.durations.set_max(0); // a stored part without runs has no max
            }
            if !next.is_empty() {
                merged.push(next);
            }
        }
        self.parts = merged;
    }
}

/// A stored part's distribution (see [`BucketRecord`]).
fn encode_durations(durations: &Durations, out: &mut Vec<u8>) {
    let top = durations::bin_of(durations.max());
    put_varint(out, durations.max());
    let others = durations.bins().iter().filter(|(bin, _)| *bin != top);
    put_varint(out, others.clone().count() as u64);
    let mut previous = 0;
    for (bin, count) in others {
        put_varint(out, u64::from(*bin - previous));
        put_varint(out, *count);
        previous = *bin;
    }
}

fn decode_durations_from(input: &mut Input<'_>, runs: u64) -> Option<Durations> {
    // Sized from the header (the max, then how many bins below the max's follow).
    let mut header = Input(input.0);
    header.varint()?;
    let others = usize::try_from(header.varint()?).ok()?;
    let mut bins = Vec::with_capacity(others.min(2_200) + 1);
    let max = for_each_bin(input, runs, |bin, count| bins.push((bin, count)))?;
    Some(Durations::from_parts(bins, max))
}

/// The percentiles of an encoded distribution of `runs` runs, in one pass over it.
fn percentiles_of(blob: &[u8], runs: u64) -> Result<Option<Percentiles>, Error> {
    if runs == 0 {
        return Ok(None);
    }
    let mut input = Input(blob);
    let max = Input(blob).varint().ok_or_else(|| corrupt("rollup"))?;
    let mut scan = PercentileScan::new(runs, max).ok_or_else(|| corrupt("rollup"))?;
    // The whole encoding is read (and so checked) even once every percentile is known.
    let mut done = false;
    for_each_bin(&mut input, runs, |bin, count| {
        done = done || scan.bin(bin, count);
    })
    .ok_or_else(|| corrupt("rollup"))?;
    Ok(Some(scan.finish()))
}

/// Reads an encoded distribution of `runs` runs, showing each bin and count to `f` in bin order;
/// returns the maximum, or `None` when the encoding is damaged.
fn for_each_bin(input: &mut Input<'_>, runs: u64, mut f: impl FnMut(Bin, u64)) -> Option<u64> {
    let max = input.varint()?;
    let top = durations::bin_of(max);
    let others = input.varint()?;
    let (mut previous, mut counted) = (0u16, 0u64);
    for at in 0..others {
        let bin = previous.checked_add(u16::try_from(input.varint()?).ok()?)?;
        let count = input.varint()?;
        if bin >= top || count == 0 || (bin <= previous && at > 0) {
            return None;
        }
        counted = counted.checked_add(count)?;
        f(bin, count);
        previous = bin;
    }
    let in_top = runs.checked_sub(counted).filter(|c| *c > 0)?;
    f(top, in_top);
    Some(max)
}

/// A rollup record as a question reads it: totals at once, and each part's durations only
/// when asked (they are skipped by length until then).
pub struct RecordView {
    bytes: Vec<u8>,
    pub total: Tally,
    /// Where the total's durations are in `bytes`.
    total_durations: std::ops::Range<usize>,
    pub parts: Vec<PartView>,
}

/// A part of a [`RecordView`].
#[derive(Clone, Debug)]
pub struct PartView {
    pub index: u16,
    pub tally: Tally,
    pub weight: u64,
    durations: std::ops::Range<usize>,
}

impl RecordView {
    pub fn decode(bytes: &[u8]) -> Result<RecordView, Error> {
        let bad = || corrupt("rollup");
        let mut input = Input(bytes);
        let offset = |input: &Input<'_>| bytes.len() - input.0.len();
        let weighted = match input.byte().ok_or_else(bad)? {
            0 => false,
            RECORD_WEIGHTED => true,
            _ => return Err(bad()),
        };
        let total = decode_tally_from(&mut input).ok_or_else(bad)?;
        if weighted {
            input.varint().ok_or_else(bad)?; // the bucket's weight: only its parts' are asked
        }
        let start = offset(&input);
        if total.runs() > 0 {
            for_each_bin(&mut input, total.runs(), |_, _| {}).ok_or_else(bad)?;
        }
        let total_durations = start..offset(&input);
        // Room for a month's days (a year has 12 parts, a day 24, an hour up to 3,600).
        let mut parts = Vec::with_capacity(32);
        while !input.0.is_empty() {
            let index = input
                .varint()
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(bad)?;
            let tally = decode_tally_from(&mut input).ok_or_else(bad)?;
            let weight = if weighted {
                input.varint().ok_or_else(bad)?
            } else {
                0
            };
            let durations = if tally.runs() > 0 {
                let blob = input.bytes().ok_or_else(bad)?;
                let end = offset(&input);
                end - blob.len()..end
            } else {
                0..0
            };
            parts.push(PartView {
                index,
                tally,
                weight,
                durations,
            });
        }
        Ok(RecordView {
            bytes: bytes.to_vec(),
            total,
            total_durations,
            parts,
        })
    }

    /// The part with this index, if the record has it.
    pub fn part(&self, index: u16) -> Option<&PartView> {
        self.parts
            .binary_search_by_key(&index, |p| p.index)
            .ok()
            .map(|at| &self.parts[at])
    }

    /// The exact maximum duration of a part (0 without runs).
    pub fn part_max(&self, part: &PartView) -> Result<u64, Error> {
        if part.durations.is_empty() {
            return Ok(0);
        }
        Input(&self.bytes[part.durations.clone()])
            .varint()
            .ok_or_else(|| corrupt("rollup"))
    }

    /// A part's distribution.
    pub fn part_durations(&self, part: &PartView) -> Result<Durations, Error> {
        if part.durations.is_empty() {
            return Ok(Durations::default());
        }
        decode_durations_from(
            &mut Input(&self.bytes[part.durations.clone()]),
            part.tally.runs(),
        )
        .ok_or_else(|| corrupt("rollup"))
    }

    /// A part's percentiles, read straight from its encoding (`None` without runs).
    pub fn part_percentiles(&self, part: &PartView) -> Result<Option<Percentiles>, Error> {
        percentiles_of(&self.bytes[part.durations.clone()], part.tally.runs())
    }

    /// The whole bucket's percentiles (`None` without runs).
    pub fn total_percentiles(&self) -> Result<Option<Percentiles>, Error> {
        percentiles_of(&self.bytes[self.total_durations.clone()], self.total.runs())
    }

    /// Adds (or with `subtract`, takes out) a part's durations to a histogram, the max only
    /// when adding.
    pub fn add_part_to(
        &self,
        part: &PartView,
        histogram: &mut Histogram,
        subtract: bool,
    ) -> Result<(), Error> {
        let blob = &self.bytes[part.durations.clone()];
        add_to(blob, part.tally.runs(), histogram, subtract, !subtract)
    }

    /// Adds the whole bucket's durations to a histogram, and its max when `with_max`.
    pub fn add_total_to(&self, histogram: &mut Histogram, with_max: bool) -> Result<(), Error> {
        let blob = &self.bytes[self.total_durations.clone()];
        add_to(blob, self.total.runs(), histogram, false, with_max)
    }

    /// The whole bucket's distribution.
    pub fn total_durations(&self) -> Result<Durations, Error> {
        if self.total.runs() == 0 {
            return Ok(Durations::default());
        }
        let blob = &self.bytes[self.total_durations.clone()];
        decode_durations_from(&mut Input(blob), self.total.runs()).ok_or_else(|| corrupt("rollup"))
    }

    /// A record with nothing in it (what a missing record stands for).
    pub fn empty() -> RecordView {
        RecordView {
            bytes: Vec::new(),
            total: Tally::default(),
            total_durations: 0..0,
            parts: Vec::new(),
        }
    }
}

/// Adds (or takes out) an encoded distribution's counts, raising the max when `raise_max`.
fn add_to(
    blob: &[u8],
    runs: u64,
    histogram: &mut Histogram,
    subtract: bool,
    raise_max: bool,
) -> Result<(), Error> {
    if runs == 0 {
        return Ok(());
    }
    let max = if subtract {
        for_each_bin(&mut Input(blob), runs, |bin, count| {
            histogram.add(bin, count.wrapping_neg())
        })
    } else {
        for_each_bin(&mut Input(blob), runs, |bin, count| {
            histogram.add(bin, count)
        })
    }
    .ok_or_else(|| corrupt("rollup"))?;
    if raise_max {
        histogram.raise_max(max);
    }
    Ok(())
}

/// A tally as three varints.
pub fn encode_tally(tally: &Tally, out: &mut Vec<u8>) {
    put_varint(out, tally.successes);
    put_varint(out, tally.failures);
    put_varint(out, tally.duration_ms);
}

fn decode_tally_from(input: &mut Input<'_>) -> Option<Tally> {
    Some(Tally {
        successes: input.varint()?,
        failures: input.varint()?,
        duration_ms: input.varint()?,
    })
}

/// The parts of an encoded [`BucketRecord`], in index order.
pub struct Parts<'a> {
    input: Input<'a>,
    weighted: bool,
}

impl Parts<'_> {
    /// Whether the record carries weights (it is a pipeline's).
    pub fn is_weighted(&self) -> bool {
        self.weighted
    }
}

impl Iterator for Parts<'_> {
    type Item = Result<Part, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.input.0.is_empty() {
            return None;
        }
        let weighted = self.weighted;
        let input = &mut self.input;
        let part = input
            .varint()
            .and_then(|i| u16::try_from(i).ok())
            .and_then(|index| {
                let tally = decode_tally_from(input)?;
                let weight = if weighted { input.varint()? } else { 0 };
                let durations = match tally.runs() {
                    0 => Durations::default(),
                    runs => {
                        let mut blob = Input(input.bytes()?);
                        let durations = decode_durations_from(&mut blob, runs)?;
                        if !blob.0.is_empty() {
                            return None;
                        }
                        durations
                    }
                };
                Some(Part {
                    index,
                    tally,
                    weight,
                    durations,
                })
            });
        if part.is_none() {
            self.input.0 = &[]; // stop after reporting the damage once
        }
        Some(part.ok_or_else(|| corrupt("rollup")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn truncated_records_are_corrupt_not_panics() {
        assert!(BucketRecord::decode(&[0, 0x80]).is_err());
        assert!(
            BucketRecord::decode(&[
                0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
        assert!(BucketRecord::decode(&[0, 1, 0, 5, 3]).is_err());
        assert!(BucketRecord::decode(&[7, 1, 0, 5]).is_err());
    }

    /// Parts by index: their runs and weight.
    type PartsRuns = std::collections::BTreeMap<u16, (Vec<(bool, u64)>, u64)>;

    /// Runs of one part: outcome and duration (any `u64`, small ones often).
    fn runs() -> impl Strategy<Value = Vec<(bool, u64)>> {
        proptest::collection::vec((any::<bool>(), prop_oneof![0u64..300, any::<u64>()]), 0..6)
    }

    proptest! {
        #[test]
        fn bucket_records_round_trip_and_merge_like_maps(
            parts in proptest::collection::btree_map(0u16..3_600, (runs(), 0u64..3), 0..20),
            delta in proptest::collection::btree_map(0u16..3_600, (runs(), 0u64..3), 0..20),
            weighted: bool,
        ) {
            let w = |x: u64| if weighted { x } else { 0 };
            // Each part from its runs; `sign` false takes them out instead.
            let part = |index: u16, runs: &[(bool, u64)], weight: u64, sign: bool| {
                let weight = if sign { w(weight) } else { 0u64.wrapping_sub(w(weight)) };
                let mut part = Part { index, weight, ..Part::default() };
                for &(ok, duration) in runs {
                    let run = Tally::of_run(ok, duration);
                    if sign {
                        part.tally = part.tally + run;
                        part.durations.add(&Durations::of(duration));
                    } else {
                        part.tally = part.tally - run;
                        part.durations.add(&Durations::retraction_of(duration));
                    }
                }
                part
            };
            let record = |map: &PartsRuns, sign: bool| {
                let parts: Vec<Part> = map
                    .iter()
                    .map(|(&index, (runs, weight))| part(index, runs, *weight, sign))
                    .filter(|p| !p.is_empty())
                    .collect();
                BucketRecord {
                    total: parts.iter().fold(Tally::default(), |t, p| t + p.tally),
                    weight: parts.iter().fold(0u64, |t, p| t.wrapping_add(p.weight)),
                    parts,
                }
            };
            let (mut a, b) = (record(&parts, true), record(&delta, true));
            let mut bytes = Vec::new();
            a.encode(weighted, &mut bytes);
            prop_assert_eq!(BucketRecord::decode(&bytes).unwrap(), a.clone());
            // Percentiles read straight from the encoding equal those of the decoded durations.
            let view = RecordView::decode(&bytes).unwrap();
            prop_assert_eq!(
                view.total_percentiles().unwrap(),
                view.total_durations().unwrap().percentiles()
            );
            for part in &view.parts {
                prop_assert_eq!(
                    view.part_percentiles(part).unwrap(),
                    view.part_durations(part).unwrap().percentiles()
                );
            }
            let before = a.clone();
            a.merge(&b);
            prop_assert_eq!(a.total, before.total + b.total);
            prop_assert_eq!(a.weight, before.weight + b.weight);
            let mut merged = Vec::new();
            a.encode(weighted, &mut merged);
            prop_assert_eq!(BucketRecord::decode(&merged).unwrap(), a.clone());
            // Merging the negation takes it back out (all but the max, which the store
            // recomputes after a retraction).
            a.merge(&record(&delta, false));
            for (part, old) in a.parts.iter_mut().zip(&before.parts) {
                part.durations.set_max(old.durations.max());
            }
            prop_assert_eq!(a, before);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes: Vec<u8>) {
            let _ = BucketRecord::decode(&bytes);
            if let Ok(view) = RecordView::decode(&bytes) {
                let _ = view.total_percentiles();
                for part in &view.parts {
                    let _ = view.part_percentiles(part);
                }
            }
        }
    }
}
