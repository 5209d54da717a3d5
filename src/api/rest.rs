//! The REST gateway: the documented `/v1` paths of both editions of the public reference
//! (`workflows` and `pipelines`, dates and date-times; a trailing slash is optional everywhere),
//! served by axum on the same engine, in-process. Handlers validate path and query parameters,
//! call the engine and write the documented JSON. Errors are the contract's JSON body, and the
//! token endpoint's are RFC 6749's (both rendered by [`Error`]).

use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{
    DefaultBodyLimit, FromRequestParts, OriginalUri, Path, Query, RawQuery, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{Caller, bearer_token};
use crate::durations::Percentiles;
use crate::engine::{DEFAULT_LOG_PAGE, Engine, TokenRequest};
use crate::error::{Error, OAuthError, Result, quote};
use crate::lineage::MAX_EVENT_BYTES;
use crate::model::{
    BucketCount, BucketStats, EntityKind, EntityRef, Fill, LastRun, LogCursor, LogEntry,
    OverviewCursor, PendingTaskRun, PipelineId, PipelineOverview, Stats, TimeRange, WindowStats,
};
use crate::time::{Period, RangeEnd, format_datetime, format_rfc3339, parse_path_datetime};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type AppState = Arc<Engine>;
/// Path parameters, or why they could not be read.
type PathParams<T> = std::result::Result<Path<T>, PathRejection>;

/// The REST application.
pub fn router(engine: Arc<Engine>) -> Router {
    let routes: [(&str, MethodRouter<AppState>); 12] = [
        ("/v1/oauth/token", get(token).post(token)),
        ("/v1/stats/pipelines", get(pipelines_overview)),
        ("/v1/pipelines/{uuid}/runs", post(run_pipeline)),
        ("/v1/workflows/{uuid}/runs", post(run_pipeline)),
        ("/v1/stats/{kind}/{uuid}/logs/{from}/{to}", get(logs)),
        ("/v1/stats/{kind}/{uuid}/stats/{from}/{to}", get(stats)),
        (
            "/v1/stats/{kind}/{uuid}/aggregated-stats/{date_from}/{period}/{n}",
            get(aggregated_stats),
        ),
        ("/v1/stats/{kind}/{uuid}/last-run/stats", get(last_run)),
        ("/v1/stats/pipelines/{uuid}/running", get(running)),
        ("/v1/alerts", get(list_alerts)),
        ("/v1/alerts/rules", post(create_rule).get(list_rules)),
        (
            "/v1/alerts/rules/{uuid}",
            get(show_rule).delete(delete_rule),
        ),
    ];
    let lineage_route = || post(lineage).layer(DefaultBodyLimit::max(MAX_EVENT_BYTES));
    let mut router = Router::new()
        .route("/healthz", get(health))
        .route("/api/v1/lineage", lineage_route())
        .route("/api/v1/lineage/", lineage_route())
        .route("/v1/lineage", lineage_route())
        .route("/v1/lineage/", lineage_route())
        .route("/ui", get(super::dashboard::index))
        .route("/ui/", get(super::dashboard::index))
        .route("/ui/{*asset}", get(super::dashboard::asset))
        .route("/v1/openapi.json", get(openapi));
    for (path, method_router) in routes {
        router = router
            .route(path, method_router.clone())
            .route(&format!("{path}/"), method_router);
    }
    router
        .fallback(|method: Method, uri: OriginalUri| async move {
            Error::NotFound(format!("no route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: OriginalUri| async move {
            Error::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(super::observed::track_rest))
        .with_state(engine)
}

/// A bearer token in the `Authorization` header, checked by the same `Engine::authenticate`
/// as gRPC's interceptor.
impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, engine: &AppState) -> Result<Caller> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        engine.authenticate(bearer_token(header)?)
    }
}

fn path<T>(extracted: PathParams<T>) -> Result<T> {
    extracted
        .map(|Path(value)| value)
        .map_err(|rejection| Error::InvalidArgument(format!("path: {}", rejection.body_text())))
}

fn path_uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text)
        .map_err(|_| Error::invalid("uuid", format!("{} is not a UUID", quote(text))))
}

/// `tasks`, `pipelines` or `workflows` (the older name of pipelines).
fn entity(kind: &str, uuid: &str) -> Result<EntityRef> {
    let kind = match kind {
        "tasks" => EntityKind::Task,
        "pipelines" | "workflows" => EntityKind::Pipeline,
        other => {
            return Err(Error::NotFound(format!(
                "no route for /v1/stats/{other}/...: the kinds are tasks, pipelines and workflows"
            )));
        }
    };
    Ok(EntityRef {
        kind,
        uuid: path_uuid(uuid)?,
    })
}

fn range(from: &str, to: &str) -> Result<TimeRange> {
    let from = parse_path_datetime(from, RangeEnd::Start).map_err(|r| Error::invalid("from", r))?;
    let to = parse_path_datetime(to, RangeEnd::End).map_err(|r| Error::invalid("to", r))?;
    TimeRange::new(from, to).ok_or_else(|| Error::invalid("from", "must not be after to"))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatsBody {
    pub num_of_successes: u64,
    pub num_of_failures: u64,
    pub average_duration: u64,
    pub is_last_run_successful: bool,
    pub last_run_executed_at: Option<String>,
    pub last_run_duration: u64,
    #[serde(flatten)]
    pub percentiles: PercentilesBody,
    /// Present (true) only when the answer is at whole days before the retention cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
}

/// Duration percentiles and the maximum, `null` without runs (an addition to the reference's
/// answers).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PercentilesBody {
    pub duration_p50: Option<u64>,
    pub duration_p90: Option<u64>,
    pub duration_p95: Option<u64>,
    pub duration_p99: Option<u64>,
    pub max_duration: Option<u64>,
}

impl From<Option<Percentiles>> for PercentilesBody {
    fn from(percentiles: Option<Percentiles>) -> PercentilesBody {
        PercentilesBody {
            duration_p50: percentiles.map(|p| p.p50),
            duration_p90: percentiles.map(|p| p.p90),
            duration_p95: percentiles.map(|p| p.p95),
            duration_p99: percentiles.map(|p| p.p99),
            max_duration: percentiles.map(|p| p.max),
        }
    }
}

impl From<Stats> for StatsBody {
    fn from(stats: Stats) -> StatsBody {
        StatsBody {
            num_of_successes: stats.tally.successes,
            num_of_failures: stats.tally.failures,
            average_duration: stats.tally.average_duration_ms(),
            is_last_run_successful: stats.last_run.is_some_and(|r| r.is_successful),
            last_run_executed_at: stats
                .last_run
                .map(|r| format_datetime(r.executed_at.second())),
            last_run_duration: stats.last_run.map_or(0, |r| r.duration_ms),
            percentiles: stats.percentiles.into(),
            approximate: stats.approximate,
        }
    }
}

async fn stats(
    State(engine): State<AppState>,
    caller: Caller,
    params: PathParams<(String, String, String, String)>,
) -> Result<Json<StatsBody>> {
    let (kind, uuid, from, to) = path(params)?;
    let entity = entity(&kind, &uuid)?;
    let range = range(&from, &to)?;
    Ok(Json(engine.stats(&caller, entity, range)?.into()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BucketBody {
    pub date_from: String,
    pub date_to: String,
    pub num_of_successes: u64,
    pub num_of_failures: u64,
    pub average_duration: u64,
    #[serde(flatten)]
    pub percentiles: PercentilesBody,
}

impl From<&BucketStats> for BucketBody {
    fn from(bucket: &BucketStats) -> BucketBody {
        BucketBody {
            date_from: format_datetime(bucket.start),
            date_to: format_datetime(bucket.last_second),
            num_of_successes: bucket.tally.successes,
            num_of_failures: bucket.tally.failures,
            average_duration: bucket.tally.average_duration_ms(),
            percentiles: bucket.percentiles.into(),
        }
    }
}

/// The query of aggregated stats: `fill=zero` lists every bucket.
#[derive(Debug, Default, Deserialize)]
pub struct AggregatedQuery {
    pub fill: Option<String>,
}

async fn aggregated_stats(
    State(engine): State<AppState>,
    caller: Caller,
    params: PathParams<(String, String, String, String, String)>,
    query: std::result::Result<Query<AggregatedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<BucketBody>>> {
    let (kind, uuid, date_from, period, n) = path(params)?;
    let entity = entity(&kind, &uuid)?;
    let date_from = parse_path_datetime(&date_from, RangeEnd::Start)
        .map_err(|r| Error::invalid("date_from", r))?;
    let period: Period = period.parse().map_err(|r| Error::invalid("period", r))?;
    let n = n
        .parse::<u32>()
        .map_err(|_| {
            Error::invalid(
                "n",
                format!("{} is not a whole number between 1 and 1000", quote(&n)),
            )
        })
        .and_then(|n| BucketCount::new(n).map_err(|r| Error::invalid("n", r)))?;
    let Query(query) =
        query.map_err(|r| Error::InvalidArgument(format!("query: {}", r.body_text())))?;
    let fill = match query.fill.as_deref() {
        None => Fill::Sparse,
        Some(text) => text.parse().map_err(|r| Error::invalid("fill", r))?,
    };
    let buckets = engine.aggregated_stats(&caller, entity, period, date_from, n, fill)?;
    Ok(Json(buckets.iter().map(BucketBody::from).collect()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LastRunBody {
    pub is_successful: bool,
    pub executed_at: String,
    pub duration: u64,
}

impl From<LastRun> for LastRunBody {
    fn from(run: LastRun) -> LastRunBody {
        LastRunBody {
            is_successful: run.is_successful,
            executed_at: format_datetime(run.executed_at.second()),
            duration: run.duration_ms,
        }
    }
}

async fn last_run(
    State(engine): State<AppState>,
    caller: Caller,
    params: PathParams<(String, String)>,
) -> Result<Json<LastRunBody>> {
    let (kind, uuid) = path(params)?;
    let entity = entity(&kind, &uuid)?;
    Ok(Json(engine.last_run(&caller, entity)?.into()))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogEntryBody {
    pub workflow_run_uuid: String,
    pub pipeline_run_uuid: String,
    pub task_run_uuid: String,
    pub task_uuid: String,
    pub task_type: String,
    pub is_successful: bool,
    pub duration: u32,
    /// Base64 of the sealed envelope; `""` when the task produced no output.
    pub output: String,
    pub metric_value: Option<f64>,
    pub executed_at: String,
}

impl From<LogEntry> for LogEntryBody {
    fn from(entry: LogEntry) -> LogEntryBody {
        let pipeline_run = entry.pipeline_run.to_string();
        LogEntryBody {
            workflow_run_uuid: pipeline_run.clone(),
            pipeline_run_uuid: pipeline_run,
            task_run_uuid: entry.task_run.to_string(),
            task_uuid: entry.task.to_string(),
            task_type: entry.task_type.as_str().to_string(),
            is_successful: entry.is_successful,
            duration: entry.duration_ms,
            output: STANDARD.encode(&entry.output),
            metric_value: entry.metric_value,
            executed_at: format_rfc3339(entry.executed_at),
        }
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// One page of logs; the next page's URL is in the `Link` header (`rel="next"`) and its cursor
/// in `X-Next-Cursor`, both absent on the last page.
async fn logs(
    State(engine): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    params: PathParams<(String, String, String, String)>,
    query: std::result::Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let (kind, uuid, from, to) = path(params)?;
    if entity(&kind, &uuid)?.kind != EntityKind::Pipeline {
        return Err(Error::NotFound(format!(
            "no route for {}: logs are kept per pipeline",
            uri.path()
        )));
    }
    let range = range(&from, &to)?;
    let (limit, after) = page_request(query, LogCursor::decode)?;
    let page = engine.logs(&caller, PipelineId(path_uuid(&uuid)?), range, after, limit)?;
    let body: Vec<LogEntryBody> = page.entries.into_iter().map(LogEntryBody::from).collect();
    let mut response = Json(body).into_response();
    if let Some(next) = page.next {
        link_next_page(&mut response, uri.path(), limit, &next.encode())?;
    }
    Ok(response)
}

/// One running task run in `GET /v1/stats/pipelines/{uuid}/running`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunningBody {
    pub task_run_uuid: String,
    pub task_uuid: String,
    pub task_type: String,
    pub workflow_run_uuid: String,
    pub pipeline_run_uuid: String,
    pub state: String,
    /// RFC 3339, like `executed_at` in logs.
    pub started_at: String,
    pub updated_at: String,
}

/// `GET /v1/stats/pipelines/{uuid}/running`: the pipeline's task runs that started and have not
/// finished, newest start first, paged like logs.
async fn running(
    State(engine): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    params: PathParams<String>,
    query: std::result::Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let pipeline = PipelineId(path_uuid(&path(params)?)?);
    let (limit, after) = page_request(query, LogCursor::decode)?;
    let page = engine.running(&caller, pipeline, after, limit)?;
    let body: Vec<RunningBody> = page
        .entries
        .into_iter()
        .map(|run| RunningBody {
            task_run_uuid: run.task_run.to_string(),
            task_uuid: run.task.to_string(),
            task_type: run.task_type.as_str().to_string(),
            workflow_run_uuid: run.pipeline_run.to_string(),
            pipeline_run_uuid: run.pipeline_run.to_string(),
            state: "running".into(),
            started_at: format_rfc3339(run.started_at),
            updated_at: format_rfc3339(run.updated_at),
        })
        .collect();
    let mut response = Json(body).into_response();
    if let Some(next) = page.next {
        link_next_page(&mut response, uri.path(), limit, &next.encode())?;
    }
    Ok(response)
}

/// The `limit` (a whole number, checked against its bounds by the engine; the default when
/// absent) and `cursor` (decoded by `decode`; none when absent or empty) of a paged query.
fn page_request<C>(
    query: std::result::Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
    decode: fn(&str) -> std::result::Result<C, String>,
) -> Result<(u32, Option<C>)> {
    let Query(query) =
        query.map_err(|r| Error::InvalidArgument(format!("query: {}", r.body_text())))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LOG_PAGE,
        Some(text) => text.parse().map_err(|_| {
            Error::invalid("limit", format!("{} is not a whole number", quote(text)))
        })?,
    };
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode)
        .transpose()
        .map_err(|r| Error::invalid("cursor", r))?;
    Ok((limit, after))
}

/// Points a page's answer at the next page: a `Link` header (`rel="next"`) and the cursor in
/// `X-Next-Cursor`.
fn link_next_page(response: &mut Response, path: &str, limit: u32, cursor: &str) -> Result<()> {
    let link = format!("<{path}?limit={limit}&cursor={cursor}>; rel=\"next\"");
    let headers = response.headers_mut();
    headers.insert(
        header::LINK,
        HeaderValue::try_from(link).map_err(|e| Error::Internal(e.to_string()))?,
    );
    headers.insert(
        "x-next-cursor",
        HeaderValue::try_from(cursor).map_err(|e| Error::Internal(e.to_string()))?,
    );
    Ok(())
}

/// A pipeline's runs in one window of the overview.
#[derive(Debug, Serialize, Deserialize)]
pub struct WindowBody {
    pub num_of_successes: u64,
    pub num_of_failures: u64,
    pub average_duration: u64,
    pub duration_p50: Option<u64>,
    pub duration_p95: Option<u64>,
}

impl From<&WindowStats> for WindowBody {
    fn from(window: &WindowStats) -> WindowBody {
        WindowBody {
            num_of_successes: window.tally.successes,
            num_of_failures: window.tally.failures,
            average_duration: window.tally.average_duration_ms(),
            duration_p50: window.percentiles.map(|p| p.p50),
            duration_p95: window.percentiles.map(|p| p.p95),
        }
    }
}

/// One pipeline of the overview.
#[derive(Debug, Serialize, Deserialize)]
pub struct PipelineOverviewBody {
    pub pipeline_uuid: String,
    pub name: Option<String>,
    pub last_run: Option<LastRunBody>,
    pub last_24h: WindowBody,
    pub last_7d: WindowBody,
    pub last_30d: WindowBody,
}

impl From<&PipelineOverview> for PipelineOverviewBody {
    fn from(overview: &PipelineOverview) -> PipelineOverviewBody {
        let [day, week, month] = &overview.windows;
        PipelineOverviewBody {
            pipeline_uuid: overview.pipeline.to_string(),
            name: (!overview.name.is_empty()).then(|| overview.name.clone()),
            last_run: overview.last_run.map(LastRunBody::from),
            last_24h: day.into(),
            last_7d: week.into(),
            last_30d: month.into(),
        }
    }
}

/// The overview of the caller's organization's pipelines, paged like logs.
async fn pipelines_overview(
    State(engine): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    query: std::result::Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let (limit, after) = page_request(query, OverviewCursor::decode)?;
    let now = crate::time::Timestamp::now().second();
    let page = engine.pipelines_overview(&caller, now, after, limit)?;
    let body: Vec<PipelineOverviewBody> = page.pipelines.iter().map(Into::into).collect();
    let mut response = Json(body).into_response();
    if let Some(next) = page.next {
        link_next_page(&mut response, uri.path(), limit, &next.encode())?;
    }
    Ok(response)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RunTaskBody {
    pub id: u64,
    pub state: String,
    pub task_uuid: String,
    pub task_run_uuid: String,
    pub workflow_run_uuid: String,
    pub pipeline_run_uuid: String,
    pub is_successful: bool,
    pub output: Option<String>,
    pub errors: Option<Vec<String>>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&PendingTaskRun> for RunTaskBody {
    fn from(run: &PendingTaskRun) -> RunTaskBody {
        let created = format_datetime(run.created_at.second());
        RunTaskBody {
            id: run.serial,
            state: "pending".into(),
            task_uuid: run.task.to_string(),
            task_run_uuid: run.task_run.to_string(),
            workflow_run_uuid: run.pipeline_run.to_string(),
            pipeline_run_uuid: run.pipeline_run.to_string(),
            is_successful: false,
            output: None,
            errors: None,
            created_at: created.clone(),
            updated_at: created,
        }
    }
}

async fn run_pipeline(
    State(engine): State<AppState>,
    caller: Caller,
    params: PathParams<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Vec<RunTaskBody>>)> {
    body_within_limit(body)?;
    let pipeline = PipelineId(path_uuid(&path(params)?)?);
    let runs = engine.run_pipeline(&caller, pipeline).await?;
    Ok((
        StatusCode::CREATED,
        Json(runs.iter().map(RunTaskBody::from).collect()),
    ))
}

/// An alert rule as the API shows it: never its secret.
#[derive(Debug, Serialize, Deserialize)]
pub struct RuleBody {
    pub rule_uuid: String,
    pub name: String,
    pub pipeline_uuid: Option<String>,
    pub kind: String,
    pub params: serde_json::Value,
    pub webhook: WebhookBody,
    pub created_at: String,
}

/// One alert in `GET /v1/alerts`: the contract's fields, then what fired it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AlertBody {
    pub alert_id: String,
    pub rule_uuid: String,
    pub pipeline_uuid: String,
    pub state: String,
    /// RFC 3339, like `executed_at` in logs.
    pub since: String,
    pub resolved_at: Option<String>,
    pub rule_name: String,
    pub kind: String,
    pub pipeline_name: String,
    pub pipeline_run_uuid: Option<String>,
    pub observed: serde_json::Value,
}

impl From<crate::alerts::AlertRecord> for AlertBody {
    fn from(alert: crate::alerts::AlertRecord) -> AlertBody {
        let time = |micros: i64| {
            crate::time::Timestamp::from_micros(micros)
                .map(format_rfc3339)
                .unwrap_or_default()
        };
        AlertBody {
            alert_id: alert.alert_id.to_string(),
            rule_uuid: alert.rule.to_string(),
            pipeline_uuid: alert.pipeline.to_string(),
            state: alert.state.as_str().to_string(),
            since: time(alert.since),
            resolved_at: alert.resolved_at.map(time),
            rule_name: alert.rule_name,
            kind: alert.kind,
            pipeline_name: alert.pipeline_name,
            pipeline_run_uuid: alert.pipeline_run.map(|run| run.to_string()),
            observed: alert.observed,
        }
    }
}

#[derive(Debug, Deserialize)]
struct AlertsQuery {
    limit: Option<String>,
    cursor: Option<String>,
    pipeline_uuid: Option<String>,
    state: Option<String>,
}

/// `GET /v1/alerts`: firing and resolved alerts, newest first, paged like logs; optionally one
/// pipeline's (`pipeline_uuid`) or one state's (`state=firing|resolved`).
async fn list_alerts(
    State(engine): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    query: std::result::Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) =
        query.map_err(|r| Error::InvalidArgument(format!("query: {}", r.body_text())))?;
    let page = Ok(Query(LogsQuery {
        limit: query.limit,
        cursor: query.cursor,
    }));
    let (limit, after) = page_request(page, crate::engine::alert_cursor)?;
    let filter = crate::engine::AlertFilter::parse(
        query.pipeline_uuid.as_deref().unwrap_or_default(),
        query.state.as_deref().unwrap_or_default(),
    )?;
    let (alerts, next) = engine.alerts(&caller, filter, after, limit)?;
    let body: Vec<AlertBody> = alerts
        .into_iter()
        .map(|(_, alert)| AlertBody::from(alert))
        .collect();
    let mut response = Json(body).into_response();
    if let Some(next) = next {
        link_next_page(&mut response, uri.path(), limit, &next.to_string())?;
    }
    Ok(response)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookBody {
    pub url: String,
    pub format: String,
    /// When a delivery was answered 410 Gone and the webhook disabled (absent while enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
}

impl From<crate::engine::RuleView> for RuleBody {
    fn from(view: crate::engine::RuleView) -> RuleBody {
        let rule = view.stored.rule;
        RuleBody {
            rule_uuid: view.rule.to_string(),
            name: rule.name,
            pipeline_uuid: rule.pipeline.map(|p| p.to_string()),
            kind: rule.kind.as_str().to_string(),
            params: rule.kind.params(),
            webhook: WebhookBody {
                url: rule.webhook.url,
                format: rule.webhook.format.as_str().to_string(),
                disabled_at: view
                    .stored
                    .disabled_at
                    .and_then(crate::time::Timestamp::from_micros)
                    .map(format_rfc3339),
            },
            created_at: crate::time::Timestamp::from_micros(view.stored.created_at)
                .map(format_rfc3339)
                .unwrap_or_default(),
        }
    }
}

/// `POST /v1/alerts/rules`: 201 `{"rule_uuid"}` once durable.
async fn create_rule(
    State(engine): State<AppState>,
    caller: Caller,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    let body = body_within_limit(body)?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid("body", format!("is not JSON: {e}")))?;
    let rule = engine.create_rule(&caller, &body).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"rule_uuid": rule.to_string()})),
    ))
}

/// `GET /v1/alerts/rules`: the organization's rules, oldest first.
async fn list_rules(State(engine): State<AppState>, caller: Caller) -> Result<Json<Vec<RuleBody>>> {
    Ok(Json(
        engine
            .rules(&caller)?
            .into_iter()
            .map(RuleBody::from)
            .collect(),
    ))
}

/// `GET /v1/alerts/rules/{uuid}`.
async fn show_rule(
    State(engine): State<AppState>,
    caller: Caller,
    params: PathParams<String>,
) -> Result<Json<RuleBody>> {
    let rule = path_uuid(&path(params)?)?;
    Ok(Json(engine.rule(&caller, rule)?.into()))
}

/// `DELETE /v1/alerts/rules/{uuid}`: 204 once durable.
async fn delete_rule(
    State(engine): State<AppState>,
    caller: Caller,
    params: PathParams<String>,
) -> Result<StatusCode> {
    let rule = path_uuid(&path(params)?)?;
    engine.delete_rule(&caller, rule).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/lineage` (and `/v1/lineage`): one OpenLineage run event, 201 once durable.
async fn lineage(
    State(engine): State<AppState>,
    caller: Caller,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge(format!(
                "an OpenLineage event is at most {MAX_EVENT_BYTES} bytes"
            ))
        } else {
            Error::InvalidArgument(format!("body: {}", rejection.body_text()))
        }
    })?;
    engine.record_lineage(&caller, &body).await?;
    Ok(StatusCode::CREATED)
}

fn body_within_limit(body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge(format!(
                "request bodies are limited to {MAX_BODY_BYTES} bytes"
            ))
        } else {
            Error::InvalidArgument(format!("body: {}", rejection.body_text()))
        }
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenBody {
    pub access_token: String,
    pub expires_in: u32,
    pub refresh_token: String,
    pub scope: String,
    pub token_type: String,
}

/// The peer's IP address, when the request came over a connection (not in-process).
struct Peer(Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> std::result::Result<Peer, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// `GET|POST /v1/oauth/token`: parameters in the query string or a form body, client
/// credentials there or in HTTP Basic authentication.
async fn token(
    State(engine): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let body = body_within_limit(body)?;
    let mut params: Vec<(String, String)> = Vec::new();
    if let Some(query) = query {
        params.extend(
            serde_urlencoded::from_str::<Vec<(String, String)>>(&query).map_err(|e| {
                OAuthError::invalid_request(format!("the query string is malformed: {e}"))
            })?,
        );
    }
    if !body.is_empty() {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(OAuthError::invalid_request(
                "send the parameters in the query string or as an application/x-www-form-urlencoded body",
            )
            .into());
        }
        params.extend(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).map_err(|e| {
                OAuthError::invalid_request(format!("the form body is malformed: {e}"))
            })?,
        );
    }
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((id, secret)) = basic_credentials(basic)?
    {
        params.push(("client_id".into(), id));
        params.push(("client_secret".into(), secret));
    }
    let mut request = TokenRequest {
        peer,
        ..TokenRequest::default()
    };
    for (name, value) in params {
        let slot = match name.as_str() {
            "grant_type" => &mut request.grant_type,
            "client_id" => &mut request.client_id,
            "client_secret" => &mut request.client_secret,
            "scope" => &mut request.scope,
            "refresh_token" => &mut request.refresh_token,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "the parameter {name} was given more than once"
            ))
            .into());
        }
    }
    let grant = engine.issue_token(request).await?;
    let body = TokenBody {
        access_token: grant.access_token,
        expires_in: grant.expires_in,
        refresh_token: grant.refresh_token,
        scope: grant.scope,
        token_type: "Bearer".into(),
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Client credentials from `Authorization: Basic`, if that is the scheme used. As RFC 6749
/// section 2.3.1 says, the id and the secret are each form-urlencoded before they are joined
/// with `:` and base64-encoded, so they are decoded here (`+` is a space, `%XX` a byte).
fn basic_credentials(header: &str) -> Result<Option<(String, String)>> {
    let Some((scheme, encoded)) = header.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let invalid = || OAuthError::invalid_client("the Basic credentials are malformed");
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
    Ok(Some((
        form_decode(id).ok_or_else(invalid)?,
        form_decode(secret).ok_or_else(invalid)?,
    )))
}

/// `application/x-www-form-urlencoded` decoding of one value; `None` for a bad `%` escape or
/// bytes that are not UTF-8.
fn form_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let hex = [input.next()?, input.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            other => other,
        });
    }
    String::from_utf8(bytes).ok()
}

/// `ok` on a single node; a cluster node's [`crate::engine::Health`] as JSON, answered 503
/// while its applier is stalled.
async fn health(State(engine): State<AppState>) -> Response {
    match engine.health() {
        None => "ok".into_response(),
        Some(health) => {
            let status = if health.stalled.is_some() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, axum::Json(health)).into_response()
        }
    }
}

async fn openapi() -> impl IntoResponse {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| super::openapi::document().to_string());
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my+client%3Aid:s%25cr+t%2B"));
        assert_eq!(
            basic_credentials(&header).unwrap(),
            Some(("my client:id".to_string(), "s%cr t+".to_string()))
        );
        for bad in ["a%zz:b", "a:%e2%28", "a%4:b"] {
            let header = format!("Basic {}", STANDARD.encode(bad));
            assert!(basic_credentials(&header).is_err(), "{bad}");
        }
        assert_eq!(basic_credentials("Bearer x").unwrap(), None);
    }
}
