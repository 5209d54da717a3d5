//! Reading import files on several threads: one thread reads each file in blocks of whole
//! lines, the parsing threads turn a block's lines into prepared task runs (sealed outputs
//! included), and the caller receives the blocks in the files' order.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Mutex, mpsc};

use super::{ImportFormat, Line, open_input};
use crate::engine::Engine;
use crate::model::TaskRun;
use crate::time::Timestamp;

/// Bytes read at a time: a block is cut at its last newline.
const BLOCK_BYTES: usize = 4 << 20;

/// A line's prepared run, stamped with when it was read.
pub struct Prepared {
    pub run: TaskRun,
    pub at: Timestamp,
}

/// The parsed lines of one block of a file, in order.
pub struct Block {
    pub source: usize,
    /// Bytes of the file read through this block, for progress.
    pub offset: u64,
    /// Each non-blank line's number and prepared run, or why it has none.
    pub lines: Vec<(u64, Result<Prepared, String>)>,
    pub blank: u64,
}

/// Lines as read, before parsing.
struct Raw {
    seq: u64,
    source: usize,
    offset: u64,
    /// The number of the block's first line.
    first_line: u64,
    bytes: Vec<u8>,
}

/// Reads and parses `files` in order on `threads` parsing threads, handing each block to
/// `each` in the files' order; stops at the first error (of reading, or of `each`).
pub fn read(
    engine: &Engine,
    format: ImportFormat,
    files: &[PathBuf],
    threads: usize,
    mut each: impl FnMut(Block) -> Result<(), String>,
) -> Result<(), String> {
    let threads = threads.max(1);
    std::thread::scope(|scope| {
        let (raw_sender, raw) = mpsc::sync_channel::<Raw>(threads * 2);
        let (parsed_sender, parsed) = mpsc::sync_channel::<(u64, Block)>(threads * 2);
        let reader = scope.spawn(move || read_blocks(files, &raw_sender));
        let raw = std::sync::Arc::new(Mutex::new(raw));
        for _ in 0..threads {
            let (raw, parsed_sender) = (raw.clone(), parsed_sender.clone());
            scope.spawn(move || {
                loop {
                    let next = raw.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(block) = next else { return };
                    let seq = block.seq;
                    if parsed_sender
                        .send((seq, parse(engine, format, block)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(parsed_sender);
        // Blocks come back in any order: each is handed on once those before it were.
        let mut waiting: BTreeMap<u64, Block> = BTreeMap::new();
        let mut next = 0;
        let mut outcome = Ok(());
        for (seq, block) in parsed {
            waiting.insert(seq, block);
            while let Some(block) = waiting.remove(&next) {
                next += 1;
                if outcome.is_ok() {
                    outcome = each(block);
                }
            }
            if outcome.is_err() {
                break; // the threads stop once their channels close
            }
        }
        drop(waiting);
        let read = reader
            .join()
            .map_err(|_| "the reading thread failed".to_string())?;
        outcome.and(read)
    })
}

/// Reads every file in blocks of whole lines (a last line without a newline ends its file's
/// last block).
fn read_blocks(files: &[PathBuf], sender: &mpsc::SyncSender<Raw>) -> Result<(), String> {
    let mut seq = 0;
    for (source, path) in files.iter().enumerate() {
        let mut input = open_input(path)?;
        let failed = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let (mut offset, mut first_line) = (0u64, 1u64);
        let mut carried: Vec<u8> = Vec::new();
        loop {
            let mut bytes = std::mem::take(&mut carried);
            let start = bytes.len();
            bytes.resize(start.max(BLOCK_BYTES / 2) + BLOCK_BYTES, 0);
            let mut filled = start;
            while filled < bytes.len() {
                match input.read(&mut bytes[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(failed(e)),
                }
            }
            bytes.truncate(filled);
            let end = filled == start;
            let cut = if end {
                bytes.len() // the rest of the file
            } else {
                match bytes[start..].iter().rposition(|b| *b == b'\n') {
                    Some(at) => start + at + 1,
                    None => {
                        carried = bytes; // a line longer than a block: read on
                        continue;
                    }
                }
            };
            carried.extend_from_slice(&bytes[cut..]);
            bytes.truncate(cut);
            if bytes.is_empty() {
                break;
            }
            offset += bytes.len() as u64;
            let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            let last_unterminated = u64::from(bytes.last() != Some(&b'\n'));
            let block = Raw {
                seq,
                source,
                offset,
                first_line,
                bytes,
            };
            seq += 1;
            first_line += lines + last_unterminated;
            if sender.send(block).is_err() {
                return Ok(());
            }
            if end {
                break;
            }
        }
    }
    Ok(())
}

/// Parses and prepares the lines of a block.
fn parse(engine: &Engine, format: ImportFormat, raw: Raw) -> Block {
    let mut block = Block {
        source: raw.source,
        offset: raw.offset,
        lines: Vec::with_capacity(raw.bytes.len() / 256),
        blank: 0,
    };
    let mut rest = raw.bytes.as_slice();
    let mut number = raw.first_line;
    while !rest.is_empty() {
        let (mut line, tail) = match rest.iter().position(|b| *b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let bytes = rest.len() - tail.len();
        rest = tail;
        if number == 1 {
            line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        }
        let raw = line.strip_suffix(b"\r").unwrap_or(line);
        let line = Line { number, bytes, raw };
        match format.parse(&line) {
            None => block.blank += 1,
            Some(parsed) => {
                let prepared = parsed.and_then(|run| {
                    let run = engine.prepare_import_run(run).map_err(|e| e.to_string())?;
                    Ok(Prepared {
                        run,
                        at: Timestamp::now(),
                    })
                });
                block.lines.push((number, prepared));
            }
        }
        number += 1;
    }
    block
}
