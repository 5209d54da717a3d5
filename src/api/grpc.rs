//! The gRPC front (package `runledger.v1`): thin translations from requests to engine calls,
//! plus the standard health and reflection services. Who the caller is comes from the request's
//! extensions, put there by the authentication interceptor before any handler runs.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::service::{Interceptor, Routes};
use tonic::{Request, Response, Status, Streaming};

use super::wire;
use crate::auth::{Caller, bearer_token};
use crate::engine::{DEFAULT_LOG_PAGE, Engine, MAX_LOG_PAGE, Subscription, TokenRequest};
use crate::error::Error;
use crate::model::{BucketCount, Fill, LogCursor, OverviewCursor, PipelineId, ReportCounts};
use crate::proto::{
    self, alerts_server::AlertsServer, auth_server::AuthServer, ingest_server::IngestServer,
    pipelines_server::PipelinesServer, stats_server::StatsServer,
};

/// Report batches of one stream that may wait for durability at once; past this the stream
/// stops reading until the oldest is durable.
const MAX_BATCHES_IN_FLIGHT: usize = 32;
/// The largest gRPC message accepted.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The engine behind the gRPC services.
#[derive(Clone)]
pub struct GrpcApi {
    engine: Arc<Engine>,
}

/// Every gRPC service runledger serves, with health and reflection. Each service but `Auth`
/// (which issues the tokens) is behind the bearer-token interceptor.
pub async fn routes(engine: Arc<Engine>) -> Routes {
    let authenticate = authenticator(engine.clone());
    let api = GrpcApi { engine };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<IngestServer<GrpcApi>>().await;
    health_reporter
        .set_serving::<PipelinesServer<GrpcApi>>()
        .await;
    health_reporter.set_serving::<StatsServer<GrpcApi>>().await;
    health_reporter.set_serving::<AuthServer<GrpcApi>>().await;
    health_reporter.set_serving::<AlertsServer<GrpcApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let ingest = IngestServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let pipelines = PipelinesServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let stats = StatsServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let alerts = AlertsServer::new(api.clone());
    let auth = AuthServer::new(api);
    Routes::new(health)
        .add_service(reflection)
        .add_service(auth)
        .add_service(InterceptedService::new(ingest, authenticate.clone()))
        .add_service(InterceptedService::new(pipelines, authenticate.clone()))
        .add_service(InterceptedService::new(alerts, authenticate.clone()))
        .add_service(InterceptedService::new(stats, authenticate))
}

/// The interceptor that turns `authorization: Bearer <token>` into the request's [`Caller`].
fn authenticator(engine: Arc<Engine>) -> impl Interceptor + Clone + Send + Sync + 'static {
    move |mut request: Request<()>| -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let caller = engine.authenticate(bearer_token(header)?)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor identified.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no credentials"))
}

fn counts_response(batches: u64, counts: ReportCounts) -> proto::ReportTaskRunsResponse {
    proto::ReportTaskRunsResponse {
        batches,
        inserted: counts.inserted,
        replaced: counts.replaced,
        unchanged: counts.unchanged,
    }
}

#[tonic::async_trait]
impl proto::ingest_server::Ingest for GrpcApi {
    async fn report_task_runs(
        &self,
        request: Request<Streaming<proto::ReportTaskRunsRequest>>,
    ) -> Result<Response<proto::ReportTaskRunsResponse>, Status> {
        let caller = caller(&request)?;
        let mut stream = request.into_inner();
        let mut in_flight = VecDeque::new();
        let mut totals = ReportCounts::default();
        let mut batches = 0u64;
        let at_batch = |index: u64| move |e: Error| e.prefixed(&format!("batch {index}"));
        // The stream ends as soon as its credential is revoked or expires, and no batch that
        // arrives after that is accepted.
        let lost = self.engine.credential_lost(&caller);
        tokio::pin!(lost);
        loop {
            let message = tokio::select! {
                biased;
                error = &mut lost => return Err(revoked_mid_stream(error, batches)),
                message = stream.message() => message?,
            };
            let Some(message) = message else { break };
            self.engine
                .recheck(&caller)
                .map_err(|error| revoked_mid_stream(error, batches))?;
            let runs = wire::task_runs(message.results).map_err(at_batch(batches))?;
            let durable = self
                .engine
                .submit_report(&caller, runs)
                .await
                .map_err(at_batch(batches))?;
            in_flight.push_back((batches, durable));
            batches += 1;
            if in_flight.len() > MAX_BATCHES_IN_FLIGHT {
                let (index, durable) = in_flight.pop_front().expect("not empty");
                totals.add(durable.await.map_err(at_batch(index))?);
            }
        }
        for (index, durable) in in_flight {
            totals.add(durable.await.map_err(at_batch(index))?);
        }
        Ok(Response::new(counts_response(batches, totals)))
    }

    async fn report_task_run_batch(
        &self,
        request: Request<proto::ReportTaskRunsRequest>,
    ) -> Result<Response<proto::ReportTaskRunsResponse>, Status> {
        let caller = caller(&request)?;
        let runs = wire::task_runs(request.into_inner().results)?;
        let counts = self.engine.report(&caller, runs).await?;
        Ok(Response::new(counts_response(1, counts)))
    }

    type WatchPendingTaskRunsStream = PendingStream;

    async fn watch_pending_task_runs(
        &self,
        request: Request<proto::WatchPendingTaskRunsRequest>,
    ) -> Result<Response<PendingStream>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(PendingStream {
            subscription: Some(self.engine.watch_pending(&caller)?),
            lost: Box::pin(self.engine.credential_lost(&caller)),
        }))
    }
}

/// A stream refused because its credential stopped being honoured while it was open.
fn revoked_mid_stream(error: Error, accepted: u64) -> Status {
    Status::from(error.prefixed(&format!(
        "the stream was ended after {accepted} accepted batches"
    )))
}

/// An executor's stream of pending task runs; dropping it (the executor went away) gives back
/// the runs it had not reported yet. It ends, giving them back, as soon as the executor's
/// credential is revoked or expires.
pub struct PendingStream {
    subscription: Option<Subscription>,
    lost: Pin<Box<dyn Future<Output = Error> + Send>>,
}

impl tokio_stream::Stream for PendingStream {
    type Item = Result<proto::PendingTaskRun, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.subscription.is_none() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(error) = self.lost.as_mut().poll(cx) {
            self.subscription = None;
            return Poll::Ready(Some(Err(error.into())));
        }
        let subscription = self.subscription.as_mut().expect("checked above");
        subscription
            .runs
            .poll_recv(cx)
            .map(|run| run.map(|run| Ok(wire::pending_run(&run))))
    }
}

#[tonic::async_trait]
impl proto::auth_server::Auth for GrpcApi {
    async fn issue_token(
        &self,
        request: Request<proto::IssueTokenRequest>,
    ) -> Result<Response<proto::IssueTokenResponse>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let message = request.into_inner();
        let filled = |value: String| (!value.is_empty()).then_some(value);
        let grant = self
            .engine
            .issue_token(TokenRequest {
                grant_type: filled(message.grant_type),
                client_id: filled(message.client_id),
                client_secret: filled(message.client_secret),
                scope: filled(message.scope),
                refresh_token: filled(message.refresh_token),
                peer,
            })
            .await?;
        Ok(Response::new(proto::IssueTokenResponse {
            access_token: grant.access_token,
            expires_in: grant.expires_in,
            refresh_token: grant.refresh_token,
            scope: grant.scope,
            token_type: "Bearer".into(),
        }))
    }
}

#[tonic::async_trait]
impl proto::pipelines_server::Pipelines for GrpcApi {
    async fn register_pipeline(
        &self,
        request: Request<proto::RegisterPipelineRequest>,
    ) -> Result<Response<proto::RegisterPipelineResponse>, Status> {
        let caller = caller(&request)?;
        let definition = wire::pipeline_definition(request.into_inner())?;
        let outcome = self.engine.register_pipeline(&caller, definition).await?;
        Ok(Response::new(proto::RegisterPipelineResponse {
            created: outcome.created,
            tasks_created: outcome.tasks_created,
            tasks_updated: outcome.tasks_updated,
        }))
    }

    async fn run_pipeline(
        &self,
        request: Request<proto::RunPipelineRequest>,
    ) -> Result<Response<proto::RunPipelineResponse>, Status> {
        let caller = caller(&request)?;
        let pipeline = PipelineId(wire::uuid(
            "pipeline_uuid",
            &request.into_inner().pipeline_uuid,
        )?);
        let runs = self.engine.run_pipeline(&caller, pipeline).await?;
        Ok(Response::new(proto::RunPipelineResponse {
            task_runs: runs.iter().map(wire::pending_run).collect(),
        }))
    }
}

#[tonic::async_trait]
impl proto::alerts_server::Alerts for GrpcApi {
    async fn create_rule(
        &self,
        request: Request<proto::CreateRuleRequest>,
    ) -> Result<Response<proto::CreateRuleResponse>, Status> {
        let caller = caller(&request)?;
        let body = wire::rule_body(request.into_inner());
        let rule = self.engine.create_rule(&caller, &body).await?;
        Ok(Response::new(proto::CreateRuleResponse {
            rule_uuid: rule.to_string(),
        }))
    }

    async fn list_rules(
        &self,
        request: Request<proto::ListRulesRequest>,
    ) -> Result<Response<proto::ListRulesResponse>, Status> {
        let caller = caller(&request)?;
        let rules = self.engine.rules(&caller)?;
        Ok(Response::new(proto::ListRulesResponse {
            rules: rules.iter().map(wire::alert_rule).collect(),
        }))
    }

    async fn delete_rule(
        &self,
        request: Request<proto::DeleteRuleRequest>,
    ) -> Result<Response<proto::DeleteRuleResponse>, Status> {
        let caller = caller(&request)?;
        let rule = wire::uuid("rule_uuid", &request.into_inner().rule_uuid)?;
        self.engine.delete_rule(&caller, rule).await?;
        Ok(Response::new(proto::DeleteRuleResponse {}))
    }

    async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let limit = page_limit(message.limit);
        let after = page_cursor(&message.cursor, crate::engine::alert_cursor)?;
        let filter = crate::engine::AlertFilter::parse(&message.pipeline_uuid, &message.state)?;
        let (alerts, next) = self.engine.alerts(&caller, filter, after, limit)?;
        Ok(Response::new(proto::ListAlertsResponse {
            alerts: alerts
                .into_iter()
                .map(|(_, alert)| wire::alert(alert))
                .collect(),
            next_cursor: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

type LogStream = ReceiverStream<Result<proto::LogEntry, Status>>;

#[tonic::async_trait]
impl proto::stats_server::Stats for GrpcApi {
    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::StatsResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let entity = wire::entity(message.entity.as_ref())?;
        let range = wire::range(message.from.as_ref(), message.to.as_ref())?;
        let stats = self.engine.stats(&caller, entity, range)?;
        Ok(Response::new(wire::stats_response(stats)))
    }

    async fn get_aggregated_stats(
        &self,
        request: Request<proto::GetAggregatedStatsRequest>,
    ) -> Result<Response<proto::GetAggregatedStatsResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let entity = wire::entity(message.entity.as_ref())?;
        let date_from = wire::timestamp("date_from", message.date_from.as_ref())?;
        let period = wire::period(message.period)?;
        let n = BucketCount::new(message.n).map_err(|reason| Error::invalid("n", reason))?;
        let fill = match message.fill.as_str() {
            "" => Fill::Sparse,
            text => text
                .parse()
                .map_err(|reason| Error::invalid("fill", reason))?,
        };
        let buckets =
            self.engine
                .aggregated_stats(&caller, entity, period, date_from.second(), n, fill)?;
        Ok(Response::new(proto::GetAggregatedStatsResponse {
            buckets: buckets.iter().map(wire::bucket).collect(),
        }))
    }

    async fn get_last_run_stats(
        &self,
        request: Request<proto::GetLastRunStatsRequest>,
    ) -> Result<Response<proto::LastRunStats>, Status> {
        let caller = caller(&request)?;
        let entity = wire::entity(request.into_inner().entity.as_ref())?;
        let last = self.engine.last_run(&caller, entity)?;
        Ok(Response::new(wire::last_run(last)))
    }

    async fn list_pipelines(
        &self,
        request: Request<proto::ListPipelinesRequest>,
    ) -> Result<Response<proto::ListPipelinesResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let limit = page_limit(message.limit);
        let after = page_cursor(&message.cursor, OverviewCursor::decode)?;
        let now = crate::time::Timestamp::now().second();
        let page = self.engine.pipelines_overview(&caller, now, after, limit)?;
        Ok(Response::new(proto::ListPipelinesResponse {
            pipelines: page.pipelines.iter().map(wire::pipeline_overview).collect(),
            next_cursor: page.next.map(|n| n.encode()).unwrap_or_default(),
        }))
    }

    type StreamLogsStream = LogStream;

    async fn stream_logs(
        &self,
        request: Request<proto::StreamLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let pipeline = PipelineId(wire::uuid("pipeline_uuid", &message.pipeline_uuid)?);
        let range = wire::range(message.from.as_ref(), message.to.as_ref())?;
        let after = match message.cursor.as_str() {
            "" => None,
            token => Some(LogCursor::decode(token).map_err(|r| Error::invalid("cursor", r))?),
        };
        let mut remaining = match message.limit {
            0 => u64::MAX,
            limit => u64::from(limit),
        };
        // The first page is read here, so that an unknown pipeline or a missing scope is the
        // call's status rather than an error inside the stream.
        let page_size = |remaining: u64| remaining.min(u64::from(MAX_LOG_PAGE)) as u32;
        let mut page = self
            .engine
            .logs(&caller, pipeline, range, after, page_size(remaining))?;
        let (sender, receiver) = mpsc::channel(4);
        let engine = self.engine.clone();
        let lost = self.engine.credential_lost(&caller);
        tokio::spawn(async move {
            tokio::pin!(lost);
            loop {
                remaining -= page.entries.len() as u64;
                for entry in page.entries {
                    tokio::select! {
                        biased;
                        error = &mut lost => {
                            let _ = sender.send(Err(error.into())).await;
                            return;
                        }
                        sent = sender.send(Ok(wire::log_entry(entry))) => {
                            if sent.is_err() {
                                return; // the client went away
                            }
                        }
                    }
                }
                let Some(after) = page.next.filter(|_| remaining > 0) else {
                    return;
                };
                if let Err(error) = engine.recheck(&caller) {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
                page = match engine.logs(
                    &caller,
                    pipeline,
                    range,
                    Some(after),
                    page_size(remaining),
                ) {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// A page's size as asked (0: the default).
fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LOG_PAGE,
        limit => limit,
    }
}

/// Where a page starts, as its `cursor` field says (empty: at the start).
fn page_cursor<T>(
    cursor: &str,
    decode: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Error> {
    match cursor {
        "" => Ok(None),
        cursor => decode(cursor)
            .map(Some)
            .map_err(|r| Error::invalid("cursor", r)),
    }
}
