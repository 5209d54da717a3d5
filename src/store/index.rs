//! The UUID indexes: task runs and pipeline runs by their organization's UUID. A UUID is random,
//! so a B-tree keyed by it takes each insert on a different page; keyed by arrival period first
//! (then organization index and UUID), inserts all land in the newest period's subtree, which
//! stays small (at most a million entries), so a transaction of many inserts writes few pages.
//!
//! Finding a UUID then means asking each period; a Bloom filter per period (about 1% false
//! positives) answers "not here" without a lookup, so a new UUID costs one filter probe per
//! period. Periods grow from 64 Ki to 1 Mi entries. A period's filter is stored (in
//! `index_filters`) once, by the transaction that fills the period; the open period's filter is
//! rebuilt from its keys when the store opens (at most a million keys), so transactions never
//! rewrite filter pages.
//!
//! A write transaction works on an [`IndexWork`]: it sees the committed filters and its own
//! inserts, and the committed filters learn those only after the commit, so a failed
//! transaction leaves them exactly as the file has them. Everything is decided by the order of
//! inserts (the n-th new UUID goes to the same period everywhere), so two stores that applied
//! the same writes hold the same bits.

use redb::{ReadableTable, Table};
use rustc_hash::FxHashMap as HashMap;

use super::bloom::{Bloom, Probe, key_hash};
use super::tables::{
    FILTER_KEY_LEN, INDEX_KEY_LEN, IndexKind, OrgIndex, filter_key, index_key, meta,
    split_index_key,
};
use crate::error::Result;

const FIRST_PERIOD_ENTRIES: u64 = 1 << 16;
const MAX_PERIOD_ENTRIES: u64 = 1 << 20;
const BITS_PER_ENTRY: u64 = 10;
/// Blocks per stored chunk (4 KiB).
pub const CHUNK_BLOCKS: usize = 64;

/// The entries period `period` holds when full.
pub fn period_capacity(period: u32) -> u64 {
    FIRST_PERIOD_ENTRIES
        .checked_shl(period)
        .map_or(MAX_PERIOD_ENTRIES, |c| c.min(MAX_PERIOD_ENTRIES))
}

/// The blocks of period `period`'s filter: about 10 bits per entry, whole chunks.
pub fn period_blocks(period: u32) -> usize {
    let blocks = (period_capacity(period) * BITS_PER_ENTRY).div_ceil(512) as usize;
    blocks.div_ceil(CHUNK_BLOCKS) * CHUNK_BLOCKS
}

/// One index's committed periods: their filters and where inserts go next.
#[derive(Clone, Debug)]
pub struct PeriodFilters {
    kind: IndexKind,
    filters: Vec<Bloom>,
    /// The period inserts go to, and how many entries it holds.
    current: u32,
    entries: u64,
}

impl PeriodFilters {
    fn empty(kind: IndexKind) -> PeriodFilters {
        PeriodFilters {
            kind,
            filters: vec![Bloom::new(period_blocks(0))],
            current: 0,
            entries: 0,
        }
    }

    pub fn periods(&self) -> u32 {
        self.filters.len() as u32
    }

    fn meta_name(kind: IndexKind) -> &'static str {
        match kind {
            IndexKind::TaskRuns => meta::TASK_INDEX_PERIOD,
            IndexKind::PipelineRuns => meta::PIPELINE_INDEX_PERIOD,
        }
    }

    /// Whether a key hashed to `hash` may be in `period`.
    pub fn contains(&self, period: u32, hash: u64) -> bool {
        let filter = &self.filters[period as usize];
        filter.may_contain(Bloom::probe(hash, filter.blocks()))
    }
}

/// Both indexes' committed filters.
#[derive(Clone, Debug)]
pub struct Filters {
    pub task_runs: PeriodFilters,
    pub pipeline_runs: PeriodFilters,
}

impl Filters {
    /// The filters as the file holds them: closed periods' from `chunks`, the open period's
    /// rebuilt from its keys in the index tables.
    pub fn load(
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        chunks: &impl ReadableTable<&'static [u8; FILTER_KEY_LEN], &'static [u8]>,
        task_index: &impl ReadableTable<&'static [u8; INDEX_KEY_LEN], &'static [u8]>,
        pipeline_index: &impl ReadableTable<&'static [u8; INDEX_KEY_LEN], u64>,
    ) -> Result<Filters> {
        let mut filters = Filters {
            task_runs: PeriodFilters::empty(IndexKind::TaskRuns),
            pipeline_runs: PeriodFilters::empty(IndexKind::PipelineRuns),
        };
        for kind in IndexKind::ALL {
            let index = filters.of_mut(kind);
            if let Some(bytes) = meta.get(PeriodFilters::meta_name(kind))? {
                let bytes: [u8; 12] = bytes
                    .value()
                    .try_into()
                    .map_err(|_| super::records::corrupt("meta"))?;
                index.current = u32::from_le_bytes(bytes[..4].try_into().expect("4"));
                index.entries = u64::from_le_bytes(bytes[4..].try_into().expect("8"));
            }
            index.filters = (0..=index.current)
                .map(|period| Bloom::new(period_blocks(period)))
                .collect();
            let (low, high) = (filter_key(kind, 0, 0), filter_key(kind, index.current, 0));
            for entry in chunks.range::<&[u8; FILTER_KEY_LEN]>(&low..&high)? {
                let (key, bytes) = entry?;
                let key = key.value();
                let period = u32::from_be_bytes(key[1..5].try_into().expect("4"));
                let chunk = u32::from_be_bytes(key[5..].try_into().expect("4")) as usize;
                let loaded = index
                    .filters
                    .get_mut(period as usize)
                    .is_some_and(|f| f.load_chunk(chunk * CHUNK_BLOCKS, bytes.value()));
                if !loaded {
                    return Err(super::records::corrupt("index filter"));
                }
            }
            let current = index.current;
            let open = &mut index.filters[current as usize];
            let (low, high) = (
                [current.to_be_bytes().as_slice(), &[0; 20]].concat(),
                [current.to_be_bytes().as_slice(), &[0xff; 20]].concat(),
            );
            let (low, high): ([u8; INDEX_KEY_LEN], [u8; INDEX_KEY_LEN]) = (
                low.try_into().expect("24 bytes"),
                high.try_into().expect("24 bytes"),
            );
            let mut rebuild = |key: &[u8; INDEX_KEY_LEN]| {
                let (_, org, uuid) = split_index_key(key);
                let hash = key_hash(kind.tag(), org.0, &uuid);
                open.insert(Bloom::probe(hash, open.blocks()));
            };
            match kind {
                IndexKind::TaskRuns => {
                    for entry in task_index.range::<&[u8; INDEX_KEY_LEN]>(&low..=&high)? {
                        rebuild(entry?.0.value());
                    }
                }
                IndexKind::PipelineRuns => {
                    for entry in pipeline_index.range::<&[u8; INDEX_KEY_LEN]>(&low..=&high)? {
                        rebuild(entry?.0.value());
                    }
                }
            }
        }
        Ok(filters)
    }

    pub fn of(&self, kind: IndexKind) -> &PeriodFilters {
        match kind {
            IndexKind::TaskRuns => &self.task_runs,
            IndexKind::PipelineRuns => &self.pipeline_runs,
        }
    }

    fn of_mut(&mut self, kind: IndexKind) -> &mut PeriodFilters {
        match kind {
            IndexKind::TaskRuns => &mut self.task_runs,
            IndexKind::PipelineRuns => &mut self.pipeline_runs,
        }
    }

    /// Applies a committed transaction's inserts.
    pub fn learn(&mut self, work: Learned) {
        let index = self.of_mut(work.kind);
        while index.filters.len() <= work.current as usize {
            let period = index.filters.len() as u32;
            index.filters.push(Bloom::new(period_blocks(period)));
        }
        match work.change {
            Change::Probes(probes) => {
                for (period, probe) in probes {
                    index.filters[period as usize].insert(probe);
                }
            }
            Change::Filters(first, filters) => {
                for (at, filter) in filters.into_iter().enumerate() {
                    index.filters[first as usize + at] = filter;
                }
            }
        }
        index.current = work.current;
        index.entries = work.entries;
    }
}

/// One index's changes in a write transaction: its entries written (or read) so far, with a
/// value of the caller's (`V`) that the caller writes to the table, and how the filters learn
/// the UUIDs new to the index once the transaction commits.
///
/// A long transaction writes its entries out as it goes ([`IndexWork::take_writes`] with
/// `more`): from then on it keeps its own copy of the filters of the periods it inserts into,
/// so that a UUID it wrote out is found again.
#[derive(Debug)]
pub struct IndexWork<V> {
    kind: IndexKind,
    current: u32,
    entries: u64,
    /// The current period when the transaction began.
    began: u32,
    /// The current period and its entries when entries were last written out (or the
    /// transaction began).
    written: (u32, u64),
    /// Entries this transaction inserted, changed or looked up since they were last written
    /// out, by organization and UUID.
    pending: HashMap<(OrgIndex, [u8; 16]), Pending<V>>,
    /// With [`IndexWork::keep_written`]: the entries written out last, as they are stored
    /// (a long transaction's next chunk often asks for them again).
    written_before: HashMap<(OrgIndex, [u8; 16]), Pending<V>>,
    keep_written: bool,
    /// The probes of the UUIDs this transaction inserted, by period (until `local` is used).
    probes: Vec<(u32, Probe)>,
    /// Once entries were written out within the transaction: the filters of the periods from
    /// `began` on, with every UUID this transaction inserted.
    local: Vec<Bloom>,
}

/// An index entry as a transaction has it.
#[derive(Clone, Debug)]
pub struct Pending<V> {
    pub period: u32,
    pub value: V,
    pub state: PendingState,
}

/// Whether an entry must be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingState {
    /// New to the index: inserted by this transaction.
    New,
    /// Stored, with a value this transaction changed.
    Changed,
    /// Stored and unchanged: kept only to save a second look-up.
    Read,
}

/// An entry to write.
pub struct Write<V> {
    pub key: [u8; INDEX_KEY_LEN],
    pub value: V,
    /// New, in a period that held no stored entries: such keys have no stored neighbours, so
    /// they go in as one ordered run (a random UUID among stored ones is cheaper to insert
    /// alone).
    pub fresh: bool,
}

/// What a committed transaction did to an index, for its filters.
#[derive(Debug)]
pub struct Learned {
    kind: IndexKind,
    current: u32,
    entries: u64,
    change: Change,
}

#[derive(Debug)]
enum Change {
    /// The probes to add, by period.
    Probes(Vec<(u32, Probe)>),
    /// The filters of the periods from the first on, as they now are.
    Filters(u32, Vec<Bloom>),
}

impl<V: Clone> IndexWork<V> {
    pub fn new(committed: &PeriodFilters) -> IndexWork<V> {
        IndexWork {
            kind: committed.kind,
            current: committed.current,
            entries: committed.entries,
            began: committed.current,
            written: (committed.current, committed.entries),
            pending: HashMap::default(),
            written_before: HashMap::default(),
            keep_written: false,
            probes: Vec::new(),
            local: Vec::new(),
        }
    }

    /// Keeps the entries last written out at hand (for an index whose next chunk of a long
    /// transaction often asks for them again: a pipeline run's task runs may span two chunks).
    pub fn keep_written(mut self) -> IndexWork<V> {
        self.keep_written = true;
        self
    }

    /// Makes room for about `entries` more entries.
    pub fn reserve(&mut self, entries: usize) {
        self.pending.reserve(entries);
        if self.local.is_empty() {
            self.probes.reserve(entries);
        }
    }

    /// The entry of a UUID as this transaction has it, if it wrote or read it since its
    /// entries were last written out.
    pub fn pending(&self, org: OrgIndex, uuid: &[u8; 16]) -> Option<&Pending<V>> {
        let key = (org, *uuid);
        self.pending
            .get(&key)
            .or_else(|| self.written_before.get(&key))
    }

    /// The periods that may hold a UUID's stored entry, newest first (each period's filter is
    /// asked; see [`IndexWork::pending`] first for what this transaction has). With
    /// `stored_before`, only entries stored before the transaction are looked for (the caller
    /// knows the transaction did not insert the UUID).
    pub fn candidates<'a>(
        &'a self,
        committed: &'a PeriodFilters,
        org: OrgIndex,
        uuid: &[u8; 16],
        stored_before: bool,
    ) -> impl Iterator<Item = u32> + use<'a, V> {
        let hash = key_hash(self.kind.tag(), org.0, uuid);
        let periods = if stored_before {
            committed.periods()
        } else {
            committed.periods().max(self.current + 1)
        };
        (0..periods).rev().filter(move |&period| {
            let local = period
                .checked_sub(self.began)
                .and_then(|at| self.local.get(at as usize))
                .filter(|_| !stored_before);
            match local {
                Some(local) => local.may_contain(Bloom::probe(hash, local.blocks())),
                None => period < committed.periods() && committed.contains(period, hash),
            }
        })
    }

    /// Inserts a UUID that is in no period into the current period, which it counts against;
    /// returns that period.
    pub fn allocate(&mut self, org: OrgIndex, uuid: &[u8; 16], value: V) -> u32 {
        if self.entries >= period_capacity(self.current) {
            self.current += 1;
            self.entries = 0;
            if !self.local.is_empty() {
                self.local.push(Bloom::new(period_blocks(self.current)));
            }
        }
        self.entries += 1;
        let probe = Bloom::probe(
            key_hash(self.kind.tag(), org.0, uuid),
            period_blocks(self.current),
        );
        match self.local.last_mut() {
            Some(local) => local.insert(probe),
            None => self.probes.push((self.current, probe)),
        }
        let previous = self.pending.insert(
            (org, *uuid),
            Pending {
                period: self.current,
                value,
                state: PendingState::New,
            },
        );
        debug_assert!(previous.is_none(), "a UUID allocated twice");
        self.current
    }

    /// Sets the value of an entry in `period`: one this transaction has, or a stored one
    /// (`state` says whether the stored value changes).
    pub fn put(
        &mut self,
        org: OrgIndex,
        uuid: &[u8; 16],
        period: u32,
        value: V,
        state: PendingState,
    ) {
        // An entry written out before is stored: changing it again is a change.
        let state = match self.written_before.remove(&(org, *uuid)) {
            Some(_) if state == PendingState::Read => PendingState::Read,
            Some(_) => PendingState::Changed,
            None => state,
        };
        match self.pending.get_mut(&(org, *uuid)) {
            Some(pending) => {
                pending.value = value;
                if pending.state == PendingState::Read {
                    pending.state = state;
                }
            }
            None => {
                self.pending.insert(
                    (org, *uuid),
                    Pending {
                        period,
                        value,
                        state,
                    },
                );
            }
        }
    }

    /// The entries to write, in key order (those only read are left out); the transaction
    /// forgets them. With `more`, the transaction goes on and will look for them in the table.
    pub fn take_writes(&mut self, committed: &PeriodFilters, more: bool) -> Vec<Write<V>> {
        if more && self.local.is_empty() {
            self.local = (self.began..=self.current)
                .map(|period| {
                    committed
                        .filters
                        .get(period as usize)
                        .cloned()
                        .unwrap_or_else(|| Bloom::new(period_blocks(period)))
                })
                .collect();
            for (period, probe) in self.probes.drain(..) {
                self.local[(period - self.began) as usize].insert(probe);
            }
        }
        let written = self.written;
        let pending = std::mem::take(&mut self.pending);
        self.written_before.clear();
        let mut writes: Vec<Write<V>> = Vec::with_capacity(pending.len());
        for ((org, uuid), pending) in pending {
            if more && self.keep_written {
                let stored = Pending {
                    period: pending.period,
                    value: pending.value.clone(),
                    state: PendingState::Read,
                };
                self.written_before.insert((org, uuid), stored);
            }
            if pending.state != PendingState::Read {
                writes.push(Write {
                    key: index_key(pending.period, org, &uuid),
                    fresh: pending.state == PendingState::New
                        && (pending.period > written.0 || written.1 == 0),
                    value: pending.value,
                });
            }
        }
        writes.sort_unstable_by_key(|write| write.key);
        self.written = (self.current, self.entries);
        writes
    }

    /// What the filters learn once the transaction commits.
    pub fn finish(self) -> Learned {
        let change = if self.local.is_empty() {
            Change::Probes(self.probes)
        } else {
            Change::Filters(self.began, self.local)
        };
        Learned {
            kind: self.kind,
            current: self.current,
            entries: self.entries,
            change,
        }
    }
}

impl Learned {
    /// The filter of `period` once the transaction's inserts are in.
    fn filter(&self, committed: &PeriodFilters, period: u32) -> Bloom {
        if let Change::Filters(first, filters) = &self.change
            && let Some(filter) = period
                .checked_sub(*first)
                .and_then(|at| filters.get(at as usize))
        {
            return filter.clone();
        }
        let mut filter = committed
            .filters
            .get(period as usize)
            .cloned()
            .unwrap_or_else(|| Bloom::new(period_blocks(period)));
        if let Change::Probes(probes) = &self.change {
            for (_, probe) in probes.iter().filter(|(p, _)| *p == period) {
                filter.insert(*probe);
            }
        }
        filter
    }

    fn is_empty(&self) -> bool {
        match &self.change {
            Change::Probes(probes) => probes.is_empty(),
            Change::Filters(..) => false,
        }
    }

    /// Stores the filter of every period this transaction filled, and where inserts go next.
    pub fn store(
        &self,
        committed: &PeriodFilters,
        meta: &mut Table<'_, &'static str, &'static [u8]>,
        chunks: &mut Table<'_, &'static [u8; FILTER_KEY_LEN], &'static [u8]>,
    ) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        for period in committed.current..self.current {
            let filter = self.filter(committed, period);
            for chunk in 0..filter.blocks() / CHUNK_BLOCKS {
                let bytes = filter.chunk_bytes(chunk * CHUNK_BLOCKS, CHUNK_BLOCKS);
                chunks.insert(
                    &filter_key(self.kind, period, chunk as u32),
                    bytes.as_slice(),
                )?;
            }
        }
        let mut state = [0u8; 12];
        state[..4].copy_from_slice(&self.current.to_le_bytes());
        state[4..].copy_from_slice(&self.entries.to_le_bytes());
        meta.insert(PeriodFilters::meta_name(self.kind), state.as_slice())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_grow_to_a_million_entries_with_about_ten_bits_each() {
        assert_eq!(period_capacity(0), 65_536);
        assert_eq!(period_capacity(4), 1 << 20);
        assert_eq!(period_capacity(40), 1 << 20);
        assert_eq!(period_capacity(u32::MAX), 1 << 20);
        for period in [0, 3, 9] {
            let bits = period_blocks(period) as u64 * 512;
            let per_entry = bits as f64 / period_capacity(period) as f64;
            assert!((10.0..10.5).contains(&per_entry), "{per_entry}");
            assert_eq!(period_blocks(period) % CHUNK_BLOCKS, 0);
        }
    }

    #[test]
    fn a_transaction_finds_what_it_inserted_and_allocates_in_order() {
        let mut committed = PeriodFilters::empty(IndexKind::TaskRuns);
        committed.entries = period_capacity(0) - 1;
        let mut work = IndexWork::new(&committed);
        let first = work.allocate(OrgIndex(1), &[1; 16], ());
        let second = work.allocate(OrgIndex(1), &[2; 16], ());
        assert_eq!(first, 0);
        assert_eq!(second, 1, "the full period is left");
        assert_eq!(
            work.pending(OrgIndex(1), &[2; 16]).map(|p| p.period),
            Some(1)
        );
        let writes = work.take_writes(&committed, false);
        let learned = work.finish();
        assert_eq!(writes.len(), 2);
        assert!(!writes[0].fresh, "the first period held entries already");
        assert!(writes[1].fresh);
        let mut filters = Filters {
            task_runs: committed,
            pipeline_runs: PeriodFilters::empty(IndexKind::PipelineRuns),
        };
        filters.learn(learned);
        assert_eq!(filters.task_runs.periods(), 2);
        let hash = key_hash(IndexKind::TaskRuns.tag(), 1, &[2; 16]);
        assert!(filters.task_runs.contains(1, hash));
    }

    #[test]
    fn a_transaction_written_out_midway_learns_what_one_that_is_not_learns() {
        let mut committed = PeriodFilters::empty(IndexKind::TaskRuns);
        committed.entries = period_capacity(0) - 3;
        let org = OrgIndex(1);
        let uuids: Vec<[u8; 16]> = (1..=6u8).map(|n| [n; 16]).collect();
        let mut long = IndexWork::new(&committed);
        let mut short = IndexWork::new(&committed);
        for (i, uuid) in uuids.iter().enumerate() {
            long.allocate(org, uuid, ());
            short.allocate(org, uuid, ());
            if i == 1 || i == 4 {
                let written = long.take_writes(&committed, true);
                assert!(!written.is_empty());
                assert!(long.pending(org, uuid).is_none());
                // Written out, it is found again through the transaction's own filters.
                for earlier in &uuids[..=i] {
                    let period = if earlier[0] <= 3 { 0 } else { 1 };
                    assert!(
                        long.candidates(&committed, org, earlier, false)
                            .any(|p| p == period)
                    );
                }
            }
        }
        assert_eq!(long.take_writes(&committed, false).len(), 1);
        assert_eq!(short.take_writes(&committed, false).len(), 6);
        let learn = |work: IndexWork<()>| {
            let mut filters = Filters {
                task_runs: committed.clone(),
                pipeline_runs: PeriodFilters::empty(IndexKind::PipelineRuns),
            };
            filters.learn(work.finish());
            filters.task_runs
        };
        let (long, short) = (learn(long), learn(short));
        assert_eq!((long.current, long.entries), (1, 3));
        assert_eq!((long.current, long.entries), (short.current, short.entries));
        assert_eq!(long.filters, short.filters);
    }
}
