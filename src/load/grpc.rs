//! gRPC clients of the load tool: the token, seeding, query workers and report streams.

use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::{Budget, Outcome, Plan, Query, queried_pipeline};
use crate::api::wire::{to_proto_task_run, to_proto_timestamp};
use crate::model::TaskRun;
use crate::proto;
use crate::time::parse_instant;
use crate::workload::Realistic;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    fn new(token: &str) -> Bearer {
        Bearer(format!("Bearer {token}").parse().expect("tokens are ASCII"))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// The HTTP/2 connections the workers share.
pub async fn channels(plan: &Plan) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::new();
    for _ in 0..plan.connections.max(1) {
        let channel = Endpoint::from_shared(format!("http://{}", plan.grpc))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to gRPC at {}: {e}", plan.grpc))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// An access token for the plan's client (scopes: all the client has).
pub async fn token(channel: &Channel, plan: &Plan) -> Result<String, String> {
    let response = proto::auth_client::AuthClient::new(channel.clone())
        .issue_token(proto::IssueTokenRequest {
            grant_type: "client_credentials".into(),
            client_id: plan.client_id.clone(),
            client_secret: plan.client_secret.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot get a token: {}", e.message()))?;
    Ok(response.into_inner().access_token)
}

/// Reports the seeded workload, in batches of 10,000 over one stream.
pub async fn seed(channel: &Channel, token: &str, workload: Realistic) -> Result<(), String> {
    let mut client =
        proto::ingest_client::IngestClient::with_interceptor(channel.clone(), Bearer::new(token));
    let mut runs = workload.runs();
    let messages = std::iter::from_fn(move || {
        let results: Vec<_> = runs
            .by_ref()
            .take(10_000)
            .map(without_organization)
            .collect();
        (!results.is_empty()).then_some(proto::ReportTaskRunsRequest { results })
    });
    client
        .report_task_runs(tokio_stream::iter(messages))
        .await
        .map_err(|e| format!("seeding failed: {}", e.message()))?;
    Ok(())
}

/// A run as reported by a client of the caller's organization.
fn without_organization(mut run: TaskRun) -> proto::TaskRunResult {
    run.organization = None;
    to_proto_task_run(&run)
}

fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    Some(to_proto_timestamp(
        parse_instant(text).expect("a valid constant"),
    ))
}

fn pipeline_ref() -> Option<proto::EntityRef> {
    Some(proto::EntityRef {
        kind: proto::EntityKind::Pipeline as i32,
        uuid: queried_pipeline().to_string(),
    })
}

pub async fn query_worker(
    channel: Channel,
    token: String,
    query: Query,
    budget: Arc<Budget>,
) -> Outcome {
    let mut client =
        proto::stats_client::StatsClient::with_interceptor(channel, Bearer::new(&token));
    let mut outcome = Outcome::default();
    while budget.take() {
        let started = Instant::now();
        match ask(&mut client, query).await {
            Ok(()) => {
                outcome.latency.record(started.elapsed());
                outcome.ok += 1;
            }
            Err(status) => outcome.fail(format!("{:?}: {}", status.code(), status.message())),
        }
    }
    outcome
}

async fn ask(
    client: &mut proto::stats_client::StatsClient<Authed>,
    query: Query,
) -> Result<(), Status> {
    match query {
        Query::Aggregated => {
            client
                .get_aggregated_stats(proto::GetAggregatedStatsRequest {
                    entity: pipeline_ref(),
                    date_from: timestamp("2025-01-01 00:00:00"),
                    period: proto::Period::Month as i32,
                    n: 12,
                    fill: String::new(),
                })
                .await?;
        }
        Query::Range => {
            client
                .get_stats(proto::GetStatsRequest {
                    entity: pipeline_ref(),
                    from: timestamp("2025-01-03 05:06:07"),
                    to: timestamp("2025-12-29 17:43:21"),
                })
                .await?;
        }
        Query::LastRun => {
            client
                .get_last_run_stats(proto::GetLastRunStatsRequest {
                    entity: pipeline_ref(),
                })
                .await?;
        }
        Query::Logs => {
            let mut stream = client
                .stream_logs(proto::StreamLogsRequest {
                    pipeline_uuid: queried_pipeline().to_string(),
                    from: timestamp("2025-01-01 00:00:00"),
                    to: timestamp("2025-12-31 23:59:59"),
                    limit: 100,
                    cursor: String::new(),
                })
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
        }
    }
    Ok(())
}

/// Reports fresh task runs in calls of `messages` messages of `batch` runs each, one call at a
/// time; a call's latency runs from its start to its acknowledgement (all of it durable).
pub async fn ingest_worker(
    channel: Channel,
    token: String,
    workload: Realistic,
    batch: usize,
    messages: usize,
    budget: Arc<Budget>,
) -> Outcome {
    let mut client =
        proto::ingest_client::IngestClient::with_interceptor(channel, Bearer::new(&token));
    let mut outcome = Outcome::default();
    let mut runs = workload.runs();
    loop {
        let mut call = Vec::with_capacity(messages);
        while call.len() < messages && budget.take() {
            let results: Vec<_> = runs
                .by_ref()
                .take(batch)
                .map(without_organization)
                .collect();
            call.push(proto::ReportTaskRunsRequest { results });
        }
        if call.is_empty() {
            return outcome;
        }
        let runs = (call.len() * batch) as u64;
        let started = Instant::now();
        match client.report_task_runs(tokio_stream::iter(call)).await {
            Ok(_) => {
                outcome.latency.record(started.elapsed());
                outcome.ok += 1;
                outcome.runs += runs;
            }
            Err(status) => outcome.fail(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}
