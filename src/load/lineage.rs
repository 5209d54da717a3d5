//! OpenLineage workers: each POSTs run events to `/api/v1/lineage`, one event per request on
//! one keep-alive HTTP/1.1 connection, as an Airflow deployment's emitters do. Each worker
//! plays DAG runs of its own (2,000 DAGs of four tasks between them): the DAG's START, each
//! task's START and COMPLETE (one in ten FAILs), the DAG's end: ten events a DAG run. Run ids
//! are UUIDv7, as OpenLineage clients make them (Airflow's provider, openlineage-python's
//! `generate_new_uuid`, Spark's), or random v4 ones (`RunIds::V4`, the worst case for the
//! store: every id a random key).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use uuid::Uuid;

use super::rest::{connect, send};
use super::{Budget, Outcome};
use crate::time::{Timestamp, format_rfc3339};

const DAGS: u64 = 2_000;
const TASKS: u64 = 4;
const EVENTS_PER_DAG_RUN: u64 = 2 + 2 * TASKS;

/// How run ids are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunIds {
    /// Time-ordered, as OpenLineage clients make them.
    V7,
    /// Random.
    V4,
}

/// The `index`-th event worker `worker` sends.
fn event(worker: u64, index: u64, ids: RunIds, runs: &mut Vec<Uuid>) -> Vec<u8> {
    let dag_run = index / EVENTS_PER_DAG_RUN;
    let step = index % EVENTS_PER_DAG_RUN;
    if step == 0 {
        runs.clear();
        runs.extend((0..=TASKS).map(|_| match ids {
            RunIds::V7 => Uuid::now_v7(),
            RunIds::V4 => Uuid::new_v4(),
        }));
    }
    let dag = format!("dag_{:04}", (worker * 7_919 + dag_run) % DAGS);
    let now = Timestamp::now().micros();
    let time = format_rfc3339(Timestamp::from_micros(now).expect("now"));
    let (kind, run, job, parent) = match step {
        0 => ("START", runs[0], dag.clone(), false),
        s if s == EVENTS_PER_DAG_RUN - 1 => ("COMPLETE", runs[0], dag.clone(), false),
        s => {
            let task = (s - 1) / 2;
            let kind = match (s - 1) % 2 {
                0 => "START",
                _ if (dag_run + task) % 10 == 0 => "FAIL",
                _ => "COMPLETE",
            };
            (
                kind,
                runs[1 + task as usize],
                format!("{dag}.task_{task}"),
                true,
            )
        }
    };
    let mut facets = serde_json::json!({});
    if parent {
        let of = serde_json::json!({"run": {"runId": runs[0]}, "job": {"namespace": "bench", "name": dag}});
        let mut facet = of.clone();
        facet["root"] = of;
        facets["parent"] = facet;
    }
    serde_json::to_vec(&serde_json::json!({
        "eventType": kind,
        "eventTime": time,
        "producer": "runledger bench",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run, "facets": facets},
        "job": {"namespace": "bench", "name": job},
        "inputs": [],
        "outputs": [],
    }))
    .expect("JSON")
}

pub async fn lineage_worker(
    addr: SocketAddr,
    token: String,
    worker: u64,
    ids: RunIds,
    budget: Arc<Budget>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let authorization = format!("Bearer {token}");
    let host = addr.to_string();
    let mut sender = None;
    let mut runs = Vec::new();
    let mut index = 0;
    while budget.take() {
        if sender.is_none() {
            match connect(addr).await {
                Ok(connected) => sender = Some(connected),
                Err(e) => {
                    outcome.fail(e);
                    continue;
                }
            }
        }
        let body = event(worker, index, ids, &mut runs);
        let request = hyper::Request::post("/api/v1/lineage")
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::AUTHORIZATION, authorization.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let started = Instant::now();
        let created = |status: &hyper::StatusCode| *status == hyper::StatusCode::CREATED;
        match send(sender.as_mut().expect("connected"), request, created).await {
            Ok(()) => {
                outcome.latency.record(started.elapsed());
                outcome.ok += 1;
                index += 1;
            }
            Err(e) => {
                sender = None;
                outcome.fail(e);
            }
        }
    }
    outcome
}
