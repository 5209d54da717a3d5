//! The order an import is written in: every run of the input sorted by pipeline and time,
//! whatever order the files are in (a file in task-run UUID order, as the platform's export is,
//! is random in time). The run log then grows by appends, each rollup record is written about
//! once, and a pipeline run's task runs come one after the other. Runs beyond a memory budget
//! are sorted in parts kept on disk and merged.
//!
//! Only writes whose outcome cannot depend on their order are moved, which is checked over the
//! whole input as it is read: every report of a task names the same pipeline, type and initial
//! flag, every report of a pipeline run the same pipeline, and no UUID is both a pipeline and a
//! task. Otherwise (or when many task runs are reported more than once) the input is written as
//! it is. The reports of a task run reported more than once (a Bloom filter over all task runs
//! finds them, with a few false positives) keep the input's order: they are held back and
//! written last, in that order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::{BuildHasher, Hash};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use super::read::Prepared;
use crate::cluster::codec::{decode_task_run, encode_task_run};
use crate::model::{OrgId, TaskRun, TaskType};
use crate::store::bloom::Bloom;
use crate::time::Timestamp;

/// Where a line is in the input: its file (in the order given) and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(u64);

impl Position {
    pub fn new(source: usize, line: u64) -> Position {
        Position(((source as u64) << 40) | line)
    }

    pub fn source(self) -> usize {
        (self.0 >> 40) as usize
    }

    pub fn line(self) -> u64 {
        self.0 & ((1 << 40) - 1)
    }
}

/// Where a run goes in the write order: its pipeline (numbered as first read), its time
/// (unfinished runs first), its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    pipeline: u32,
    time: i64,
    position: Position,
}

/// A run on its way to the writer.
pub struct Item {
    key: Key,
    pub at: Timestamp,
    pub run: TaskRun,
}

impl Item {
    pub fn position(&self) -> Position {
        self.key.position
    }

    /// Roughly the memory it holds, in bytes.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Item>()
            + self.run.output.len()
            + self
                .run
                .errors
                .iter()
                .map(|e| 72 + e.code.len() + e.severity.len() + e.message.len())
                .sum::<usize>()
    }
}

/// Held-back task runs beyond this share of the input are not worth holding back: the input
/// is written in its own order.
const MOST_REPEATED_PERCENT: usize = 5;

/// The input's runs as they are read, sorted once all are in (see [`Sorter::finish`]).
pub struct Sorter {
    budget: usize,
    dir: PathBuf,
    buffer: Vec<Item>,
    buffered: usize,
    /// Parts written to disk, each sorted by key.
    parts: Vec<PathBuf>,
    /// The part being sorted and written on another thread, if one is.
    spilling: Option<std::thread::JoinHandle<Result<(), String>>>,
    checks: Checks,
    runs: usize,
}

impl Sorter {
    /// A sorter holding at most about `budget` bytes of runs in memory, writing the rest to
    /// parts in `dir` (made when needed, removed at the end): half fills while the other half
    /// is sorted and written on another thread.
    pub fn new(dir: PathBuf, budget: usize) -> Sorter {
        Sorter {
            budget,
            dir,
            buffer: Vec::new(),
            buffered: 0,
            parts: Vec::new(),
            spilling: None,
            checks: Checks::default(),
            runs: 0,
        }
    }

    /// Takes the next run of the input.
    pub fn push(&mut self, position: Position, prepared: Prepared) -> Result<(), String> {
        let pipeline = self.checks.note(&prepared.run);
        let item = Item {
            key: Key {
                pipeline,
                time: prepared.run.executed_at.map_or(i64::MIN, Timestamp::micros),
                position,
            },
            at: prepared.at,
            run: prepared.run,
        };
        self.buffered += item.bytes();
        self.buffer.push(item);
        self.runs += 1;
        if self.buffered >= self.budget / 2 {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands the buffer to a thread that sorts it by key and writes it to a part on disk
    /// (once the part before is written).
    fn spill(&mut self) -> Result<(), String> {
        self.spilled()?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot make {}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("part-{}", self.parts.len()));
        self.parts.push(path.clone());
        let mut items = std::mem::take(&mut self.buffer);
        self.buffered = 0;
        let thread = std::thread::Builder::new()
            .name("runledger-sort".into())
            .spawn(move || {
                items.sort_unstable_by_key(|item| item.key);
                write_part(&path, &items)
            })
            .map_err(|e| format!("cannot start a sorting thread: {e}"))?;
        self.spilling = Some(thread);
        Ok(())
    }

    /// Waits for the part being written.
    fn spilled(&mut self) -> Result<(), String> {
        match self.spilling.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| "the sorting thread failed".to_string())?,
            None => Ok(()),
        }
    }

    /// Whether the input is written in its own order, and why.
    pub fn kept_order(&self) -> Option<&str> {
        self.checks.kept_order.as_deref()
    }

    /// The runs in the order they are written.
    pub fn finish(mut self) -> Result<Sorted, String> {
        self.spilled()?;
        if self.checks.kept_order.is_none()
            && self.checks.repeated.len() * 100 > self.runs * MOST_REPEATED_PERCENT
        {
            self.checks.kept_order = Some(format!(
                "{} of {} task runs are reported more than once",
                self.checks.repeated.len(),
                self.runs
            ));
        }
        let in_order = self.checks.kept_order.is_some();
        let mut buffer = std::mem::take(&mut self.buffer);
        if in_order {
            buffer.sort_unstable_by_key(|item| item.key.position);
        } else {
            buffer.sort_unstable_by_key(|item| item.key);
        }
        let source = if in_order {
            Source::InOrder {
                parts: std::mem::take(&mut self.parts).into_iter(),
                current: Vec::new().into_iter(),
                last: Some(buffer),
            }
        } else if self.parts.is_empty() {
            Source::Sorted(buffer.into_iter())
        } else {
            let mut readers = Vec::with_capacity(self.parts.len() + 1);
            for path in &self.parts {
                readers.push(Head::Part(PartReader::open(path)?));
            }
            readers.push(Head::Memory(buffer.into_iter()));
            let mut merge = Merge {
                readers,
                heap: BinaryHeap::new(),
                heads: Vec::new(),
            };
            merge.start()?;
            Source::Merge(merge)
        };
        Ok(Sorted {
            source,
            repeated: if in_order {
                FxHashSet::default()
            } else {
                std::mem::take(&mut self.checks.repeated)
            },
            held: Vec::new(),
            releasing: None,
            in_order,
            dir: self.dir.clone(),
        })
    }
}

impl Drop for Sorter {
    fn drop(&mut self) {
        let _ = self.spilled();
        if !self.parts.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What is checked over the whole input to tell whether its order may change.
#[derive(Default)]
struct Checks {
    /// Why the input is written in its own order, once that is decided.
    kept_order: Option<String>,
    /// Pipelines by organization and UUID, numbered as first read.
    pipelines: FxHashMap<(OrgId, Uuid), u32>,
    /// Tasks: their pipeline, type and initial flag.
    tasks: FxHashMap<(OrgId, Uuid), (u32, TaskType, bool)>,
    /// Pipeline runs (by a 64-bit hash: a collision can only keep the order) and their pipeline.
    pipeline_runs: FxHashMap<u64, u32>,
    /// Every task run read, in Bloom filters of growing size.
    task_runs: Vec<Filter>,
    /// Task runs (by a 64-bit hash) read more than once, or that a filter mistook for one.
    repeated: FxHashSet<u64>,
}

impl Checks {
    /// Notes a run; returns its pipeline's number.
    fn note(&mut self, run: &TaskRun) -> u32 {
        let org = run
            .organization
            .expect("an import's runs carry their organization");
        let next = self.pipelines.len() as u32;
        let pipeline = *self.pipelines.entry((org, run.pipeline.0)).or_insert(next);
        if self.kept_order.is_some() {
            return pipeline;
        }
        if pipeline == next && self.tasks.contains_key(&(org, run.pipeline.0)) {
            self.keep_order(format!("{} is both a pipeline and a task", run.pipeline));
        }
        let task = (pipeline, run.task_type, run.is_initial_task);
        match self.tasks.get(&(org, run.task.0)) {
            Some(first) if *first != task => self.keep_order(format!(
                "task {} is reported with another pipeline, type or initial flag",
                run.task
            )),
            Some(_) => {}
            None => {
                if self.pipelines.contains_key(&(org, run.task.0)) {
                    self.keep_order(format!("{} is both a pipeline and a task", run.task));
                }
                self.tasks.insert((org, run.task.0), task);
            }
        }
        let pipeline_run = hash(&(org, run.pipeline_run));
        if *self.pipeline_runs.entry(pipeline_run).or_insert(pipeline) != pipeline {
            self.keep_order(format!(
                "pipeline run {} is reported with two pipelines",
                run.pipeline_run
            ));
        }
        let task_run = task_run_hash(run);
        if self.task_runs.iter().any(|f| f.may_contain(task_run)) {
            self.repeated.insert(task_run);
        }
        match self.task_runs.last_mut() {
            Some(filter) if !filter.is_full() => filter.insert(task_run),
            _ => {
                let mut filter = Filter::new(self.task_runs.len());
                filter.insert(task_run);
                self.task_runs.push(filter);
            }
        }
        pipeline
    }

    fn keep_order(&mut self, why: String) {
        if self.kept_order.is_none() {
            self.kept_order = Some(why);
            // No longer needed: give the memory back.
            self.tasks = FxHashMap::default();
            self.pipeline_runs = FxHashMap::default();
            self.task_runs = Vec::new();
            self.repeated = FxHashSet::default();
        }
    }
}

fn hash(value: &impl Hash) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(value)
}

/// A task run's hash, by organization and UUID.
fn task_run_hash(run: &TaskRun) -> u64 {
    hash(&(run.organization, run.task_run))
}

/// A Bloom filter of task runs (blocked: one cache line per look-up, about 1% false positives),
/// the n-th of a growing series holding up to 2^(20 + n) of them.
struct Filter {
    bloom: Bloom,
    capacity: usize,
    entries: usize,
}

impl Filter {
    fn new(nth: usize) -> Filter {
        let capacity = 1usize << (20 + nth.min(10));
        Filter {
            bloom: Bloom::new(capacity * 10 / 512),
            capacity,
            entries: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    fn insert(&mut self, hash: u64) {
        self.bloom.insert(Bloom::probe(hash, self.bloom.blocks()));
        self.entries += 1;
    }

    fn may_contain(&self, hash: u64) -> bool {
        self.bloom
            .may_contain(Bloom::probe(hash, self.bloom.blocks()))
    }
}

/// The input's runs in write order, a chunk at a time.
pub struct Sorted {
    source: Source,
    /// Task runs whose reports keep the input's order.
    repeated: FxHashSet<u64>,
    /// Their reports, held back until the end.
    held: Vec<Item>,
    releasing: Option<std::vec::IntoIter<Item>>,
    /// Whether the input is written in its own order.
    in_order: bool,
    dir: PathBuf,
}

enum Source {
    /// All in memory.
    Sorted(std::vec::IntoIter<Item>),
    /// Parts on disk and the rest in memory, merged.
    Merge(Merge),
    /// The input's own order: each part (a stretch of the input) read back and put in order,
    /// then the rest.
    InOrder {
        parts: std::vec::IntoIter<PathBuf>,
        current: std::vec::IntoIter<Item>,
        last: Option<Vec<Item>>,
    },
}

impl Sorted {
    /// The next at most `max` runs, or `None` at the end; and whether each of their task runs
    /// is reported once in the whole input (true of the sorted runs, not of those held back,
    /// nor of an input kept in its order: a chunk is never both).
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<(Vec<Item>, bool)>, String> {
        let once = self.releasing.is_none() && !self.in_order;
        let mut chunk = Vec::with_capacity(max.min(1 << 16));
        while chunk.len() < max {
            let Some(item) = self.next_item()? else { break };
            chunk.push(item);
        }
        if chunk.is_empty() && once {
            return self.next_chunk(max); // the sorted runs ended here: the held-back ones
        }
        Ok((!chunk.is_empty()).then_some((chunk, once)))
    }

    /// The next run; `None` at the end of the sorted runs (the held-back ones follow), then at
    /// the end.
    fn next_item(&mut self) -> Result<Option<Item>, String> {
        if let Some(releasing) = &mut self.releasing {
            return Ok(releasing.next());
        }
        loop {
            let item = match &mut self.source {
                Source::Sorted(items) => items.next(),
                Source::Merge(merge) => merge.next()?,
                Source::InOrder {
                    parts,
                    current,
                    last,
                } => loop {
                    if let Some(item) = current.next() {
                        break Some(item);
                    }
                    if let Some(path) = parts.next() {
                        let mut items = read_part(&path)?;
                        items.sort_unstable_by_key(|item| item.key.position);
                        *current = items.into_iter();
                    } else if let Some(items) = last.take() {
                        *current = items.into_iter();
                    } else {
                        break None;
                    }
                },
            };
            let Some(item) = item else {
                let mut held = std::mem::take(&mut self.held);
                held.sort_unstable_by_key(|item| item.key.position);
                self.releasing = Some(held.into_iter());
                return Ok(None);
            };
            if !self.repeated.is_empty() && self.repeated.contains(&task_run_hash(&item.run)) {
                self.held.push(item);
                continue;
            }
            return Ok(Some(item));
        }
    }
}

impl Drop for Sorted {
    fn drop(&mut self) {
        if matches!(self.source, Source::Merge(_) | Source::InOrder { .. }) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A k-way merge of sorted parts.
struct Merge {
    readers: Vec<Head>,
    heap: BinaryHeap<Reverse<(Key, usize)>>,
    /// Each reader's next item.
    heads: Vec<Option<Item>>,
}

enum Head {
    Part(PartReader),
    Memory(std::vec::IntoIter<Item>),
}

impl Head {
    fn next(&mut self) -> Result<Option<Item>, String> {
        match self {
            Head::Part(reader) => reader.next(),
            Head::Memory(items) => Ok(items.next()),
        }
    }
}

impl Merge {
    fn start(&mut self) -> Result<(), String> {
        for index in 0..self.readers.len() {
            let head = self.readers[index].next()?;
            if let Some(item) = &head {
                self.heap.push(Reverse((item.key, index)));
            }
            self.heads.push(head);
        }
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Item>, String> {
        let Some(Reverse((_, index))) = self.heap.pop() else {
            return Ok(None);
        };
        let item = self.heads[index]
            .take()
            .expect("a head for each heap entry");
        let next = self.readers[index].next()?;
        if let Some(next) = &next {
            self.heap.push(Reverse((next.key, index)));
        }
        self.heads[index] = next;
        Ok(Some(item))
    }
}

/// A part's items: each its length, key, stamp and run (in the cluster stream's encoding).
fn write_part(path: &Path, items: &[Item]) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let file = File::create(path).map_err(failed)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = Vec::with_capacity(512);
    for item in items {
        bytes.clear();
        bytes.extend_from_slice(&item.key.pipeline.to_le_bytes());
        bytes.extend_from_slice(&item.key.time.to_le_bytes());
        bytes.extend_from_slice(&item.key.position.0.to_le_bytes());
        bytes.extend_from_slice(&item.at.micros().to_le_bytes());
        encode_task_run(&item.run, &mut bytes);
        out.write_all(&(bytes.len() as u32).to_le_bytes())
            .and_then(|()| out.write_all(&bytes))
            .map_err(failed)?;
    }
    out.flush().map_err(failed)
}

fn read_part(path: &Path) -> Result<Vec<Item>, String> {
    let mut reader = PartReader::open(path)?;
    let mut items = Vec::new();
    while let Some(item) = reader.next()? {
        items.push(item);
    }
    Ok(items)
}

struct PartReader {
    path: PathBuf,
    input: BufReader<File>,
    bytes: Vec<u8>,
}

impl PartReader {
    fn open(path: &Path) -> Result<PartReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(PartReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            bytes: Vec::new(),
        })
    }

    fn next(&mut self) -> Result<Option<Item>, String> {
        let failed = |e: String| format!("cannot read {}: {e}", self.path.display());
        let mut length = [0u8; 4];
        match self.input.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(failed(e.to_string())),
        }
        self.bytes.resize(u32::from_le_bytes(length) as usize, 0);
        self.input
            .read_exact(&mut self.bytes)
            .map_err(|e| failed(e.to_string()))?;
        let field = |at: usize| -> [u8; 8] { self.bytes[at..at + 8].try_into().expect("8 bytes") };
        if self.bytes.len() < 28 {
            return Err(failed("an item is cut short".into()));
        }
        let key = Key {
            pipeline: u32::from_le_bytes(self.bytes[..4].try_into().expect("4 bytes")),
            time: i64::from_le_bytes(field(4)),
            position: Position(u64::from_le_bytes(field(12))),
        };
        let at = Timestamp::from_micros(i64::from_le_bytes(field(20)))
            .ok_or_else(|| failed("an item's stamp is out of range".into()))?;
        let (run, rest) = decode_task_run(&self.bytes[28..]).map_err(|e| failed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(failed("an item has bytes after its run".into()));
        }
        Ok(Some(Item { key, at, run }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_finds_what_it_holds_and_few_others() {
        let mut filter = Filter::new(0);
        let key = |n: u64| hash(&Uuid::from_u128(u128::from(n) * 0x9e37_79b9_7f4a_7c15));
        for n in 0..500_000 {
            filter.insert(key(n));
        }
        assert!((0..500_000).all(|n| filter.may_contain(key(n))));
        let mistaken = (500_000..600_000)
            .filter(|n| filter.may_contain(key(*n)))
            .count();
        assert!(mistaken < 1_000, "{mistaken} false positives in 100,000");
    }

    #[test]
    fn positions_keep_the_files_order() {
        let a = Position::new(0, 7);
        let b = Position::new(1, 2);
        assert!(a < b);
        assert_eq!((b.source(), b.line()), (1, 2));
    }
}
