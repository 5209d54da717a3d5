//! `runledger import --nats`: bulk-loads newline-delimited JSON task runs through the
//! cluster's stream. A thread reads and checks lines; here they are sealed (with the
//! organization's derived output key), packed many to a message (each run its own unit, as in
//! a local import) and published by one writer with many messages in flight, which every node
//! applies in the file's order whatever publishes fail and are retried (see
//! [`crate::cluster::publisher`]). A line refused before publishing is reported with its
//! number; every node applies the rest.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use std::collections::VecDeque;

use super::ImportFormat;
use crate::cli::NatsArgs;
use crate::cluster::envelope::Kind;
use crate::cluster::publisher::{Pending, WINDOW};
use crate::cluster::{Publisher, log::DATA_SUBJECT};
use crate::crypto::OutputKey;
use crate::model::{OrgId, TaskRun};
use crate::store::WriteOp;
use crate::time::Timestamp;

/// Task runs packed into one message at most.
const RUNS_PER_MESSAGE: usize = 1_000;
/// Messages queued and not yet confirmed, at most (the publisher sends [`WINDOW`] at once).
const IN_FLIGHT: usize = 2 * WINDOW;
/// How long a message may take to be confirmed before the import gives up: long enough to
/// ride out a NATS server's restart or a leader election.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the reading thread hands over: a line's run, or why it was refused.
enum Line {
    Run(Box<TaskRun>),
    Refused(String),
    Blank,
}

pub fn run(nats: NatsArgs, format: ImportFormat, files: Vec<PathBuf>) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    let started = Instant::now();
    let (sender, mut lines) = tokio::sync::mpsc::channel::<Line>(8_192);
    let reader = std::thread::spawn(move || read_lines(format, &files, &sender));
    let summary = runtime.block_on(async {
        let cluster = nats.join().await?;
        let master = cluster.master.clone();
        let budget = cluster.log.max_payload() / 2;
        let publisher =
            Publisher::spawn(cluster.log.clone(), cluster.key.clone(), DATA_SUBJECT, None);
        let mut summary = Summary::default();
        // Each organization's derived key, and its creation sent ahead of its first run.
        let mut keys: HashMap<OrgId, OutputKey> = HashMap::new();
        let mut message: Vec<WriteOp> = Vec::new();
        let mut bytes = 0;
        let mut flights = VecDeque::new();
        while let Some(line) = lines.recv().await {
            summary.lines += 1;
            let run = match line {
                Line::Blank => {
                    summary.blank += 1;
                    continue;
                }
                Line::Refused(reason) => {
                    summary.rejected += 1;
                    eprintln!("{reason}");
                    continue;
                }
                Line::Run(run) => run,
            };
            let org = run.organization.expect("checked by the reader");
            let key = keys.entry(org).or_insert_with(|| {
                let (key, create) = crate::cluster::organization(&master, org);
                message.push(create);
                key
            });
            let mut run = *run;
            if !run.output.is_empty() {
                run.output = key.seal_output(&run.task_run, &run.output);
            }
            bytes += 128 + run.output.len();
            message.push(WriteOp::Report {
                runs: vec![run],
                at: Timestamp::now(),
            });
            summary.runs += 1;
            if message.len() >= RUNS_PER_MESSAGE || bytes >= budget {
                send(
                    &publisher,
                    std::mem::take(&mut message),
                    &mut flights,
                    &mut summary,
                )
                .await?;
                bytes = 0;
            }
        }
        if !message.is_empty() {
            send(&publisher, message, &mut flights, &mut summary).await?;
        }
        while let Some(pending) = flights.pop_front() {
            summary.confirmed(pending).await?;
        }
        publisher
            .finish(CONFIRM_WAIT)
            .await
            .map_err(|e| format!("import stopped: {e}"))?;
        Ok::<_, String>(summary)
    })?;
    reader
        .join()
        .map_err(|_| "the reading thread failed".to_string())??;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "read {} lines in {:.1} s: {} published in {} messages (through stream sequence {}), {} rejected, {} blank ({:.0} runs/s acknowledged)",
        summary.lines,
        seconds,
        summary.runs,
        summary.messages,
        summary.last_seq,
        summary.rejected,
        summary.blank,
        summary.runs as f64 / seconds.max(1e-9)
    );
    Ok(if summary.rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Default)]
struct Summary {
    lines: u64,
    blank: u64,
    rejected: u64,
    runs: u64,
    messages: u64,
    last_seq: u64,
}

impl Summary {
    /// Waits until the oldest message in flight is confirmed.
    async fn confirmed(&mut self, pending: Pending) -> Result<(), String> {
        let seq = pending
            .confirmed(CONFIRM_WAIT)
            .await
            .map_err(|e| format!("import stopped: {e}"))?;
        self.messages += 1;
        self.last_seq = self.last_seq.max(seq);
        Ok(())
    }
}

/// Queues one message for publishing, first waiting for room among those in flight.
async fn send(
    publisher: &Publisher,
    ops: Vec<WriteOp>,
    flights: &mut VecDeque<Pending>,
    summary: &mut Summary,
) -> Result<(), String> {
    while flights.len() >= IN_FLIGHT {
        let oldest = flights.pop_front().expect("not empty");
        summary.confirmed(oldest).await?;
    }
    let body = crate::cluster::codec::encode(&ops).map_err(|e| e.to_string())?;
    let pending = publisher
        .submit(Kind::Operations, body, None, None)
        .await
        .map_err(|e| e.to_string())?;
    flights.push_back(pending);
    Ok(())
}

fn read_lines(
    format: ImportFormat,
    files: &[PathBuf],
    sender: &tokio::sync::mpsc::Sender<Line>,
) -> Result<(), String> {
    for path in files {
        let name = path.display().to_string();
        let input = super::open_input(path)?;
        let mut lines = super::Lines::new(BufReader::with_capacity(1 << 20, input));
        while let Some(line) = lines
            .next_line()
            .map_err(|e| format!("cannot read {name}: {e}"))?
        {
            let number = line.number;
            let line = match format.parse(&line) {
                None => Line::Blank,
                Some(parsed) => match parsed {
                    Ok(run) if run.organization.is_none() => {
                        Line::Refused(format!("{name}:{number}: organization_uuid: is required"))
                    }
                    Ok(run) => Line::Run(Box::new(run)),
                    Err(reason) => Line::Refused(format!("{name}:{number}: {reason}")),
                },
            };
            if sender.blocking_send(line).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
