//! `runledger import --nats`: bulk-loads newline-delimited JSON task runs through the
//! cluster's stream. A thread reads and checks lines; here they are sealed (with the
//! organization's derived output key), packed many to a message (each run its own unit, as in
//! a local import) and published with many messages in flight. A line refused before publishing
//! is reported with its number; every node applies the rest.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use tokio::task::JoinSet;

use super::cluster::NatsArgs;
use crate::cluster::{Log, log::DATA_SUBJECT};
use crate::crypto::OutputKey;
use crate::model::{OrgId, TaskRun};
use crate::store::WriteOp;
use crate::time::Timestamp;

/// Task runs packed into one message at most.
const RUNS_PER_MESSAGE: usize = 1_000;
/// Messages awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 32;

/// What the reading thread hands over: a line's run, or why it was refused.
enum Line {
    Run(Box<TaskRun>),
    Refused(String),
    Blank,
}

pub fn run(nats: NatsArgs, files: Vec<PathBuf>) -> Result<ExitCode, String> {
    let master = nats.master()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    let started = Instant::now();
    let (sender, mut lines) = tokio::sync::mpsc::channel::<Line>(8_192);
    let reader = std::thread::spawn(move || read_lines(&files, &sender));
    let summary = runtime.block_on(async {
        let log = nats.connect().await?;
        let budget = log.max_payload() / 2;
        let mut summary = Summary::default();
        // Each organization's derived key, and its creation sent ahead of its first run.
        let mut keys: HashMap<OrgId, OutputKey> = HashMap::new();
        let mut message: Vec<WriteOp> = Vec::new();
        let mut bytes = 0;
        let mut flights = JoinSet::new();
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
                    &log,
                    std::mem::take(&mut message),
                    &mut flights,
                    &mut summary,
                )
                .await?;
                bytes = 0;
            }
        }
        if !message.is_empty() {
            send(&log, message, &mut flights, &mut summary).await?;
        }
        while let Some(done) = flights.join_next().await {
            summary.acknowledged(done)?;
        }
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
    fn acknowledged(
        &mut self,
        done: Result<crate::error::Result<u64>, tokio::task::JoinError>,
    ) -> Result<(), String> {
        let seq = done
            .map_err(|e| format!("a publish failed: {e}"))?
            .map_err(|e| format!("import stopped: {e}"))?;
        self.messages += 1;
        self.last_seq = self.last_seq.max(seq);
        Ok(())
    }
}

/// Publishes one message, first waiting for room among those in flight.
async fn send(
    log: &Log,
    ops: Vec<WriteOp>,
    flights: &mut JoinSet<crate::error::Result<u64>>,
    summary: &mut Summary,
) -> Result<(), String> {
    while flights.len() >= IN_FLIGHT {
        if let Some(done) = flights.join_next().await {
            summary.acknowledged(done)?;
        }
    }
    let log = log.clone();
    flights.spawn(async move { log.publish_ops(DATA_SUBJECT, &ops).await });
    Ok(())
}

fn read_lines(files: &[PathBuf], sender: &tokio::sync::mpsc::Sender<Line>) -> Result<(), String> {
    for path in files {
        let name = path.display().to_string();
        let input = super::import::open_input(path)?;
        for (index, line) in BufReader::with_capacity(1 << 20, input).lines().enumerate() {
            let number = index + 1;
            let line = match line {
                Ok(line) if line.trim().is_empty() => Line::Blank,
                Ok(line) => match super::import::parse_line(line.trim()) {
                    Ok(run) if run.organization.is_none() => {
                        Line::Refused(format!("{name}:{number}: organization_uuid: is required"))
                    }
                    Ok(run) => Line::Run(Box::new(run)),
                    Err(reason) => Line::Refused(format!("{name}:{number}: {reason}")),
                },
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Line::Refused(format!("{name}:{number}: the line is not valid UTF-8"))
                }
                Err(e) => return Err(format!("cannot read {name}: {e}")),
            };
            if sender.blocking_send(line).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
