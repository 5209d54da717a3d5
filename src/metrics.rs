//! Prometheus metrics: every metric's name (here, in one place), the process-wide recorder, and
//! the text exposition `GET /metrics` serves. Labels are bounded sets (fronts, route templates,
//! gRPC methods, status classes, refusal reasons), never a pipeline or an organization.
//! One process records for one server: the recorder is global to the process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::Error;

/// REST requests by `method`, `route` (the route template) and `status` (`2xx`, `4xx`...).
pub const HTTP_REQUESTS: &str = "runledger_http_requests_total";
/// REST request latency in seconds, by `route`.
pub const HTTP_SECONDS: &str = "runledger_http_request_duration_seconds";
/// gRPC calls by `method` (`/runledger.v1.Stats/GetStats`) and `code` (`OK`, `NOT_FOUND`...).
pub const GRPC_REQUESTS: &str = "runledger_grpc_requests_total";
/// gRPC latency in seconds to the response's headers, by `method`.
pub const GRPC_SECONDS: &str = "runledger_grpc_request_duration_seconds";
/// Writes acknowledged (applied and durable), by `kind` (`report`, `register`...).
pub const WRITES_ACKNOWLEDGED: &str = "runledger_writes_acknowledged_total";
/// Writes refused, by `reason` (`overloaded`, `invalid_argument`, `unavailable`...).
pub const WRITES_REFUSED: &str = "runledger_writes_refused_total";
/// Task runs applied (inserted, replaced or unchanged) to this node's database.
pub const RUNS_APPLIED: &str = "runledger_task_runs_applied_total";
/// Writes waiting for the writer, and the bytes they hold.
pub const QUEUE_DEPTH: &str = "runledger_write_queue_depth";
pub const QUEUE_BYTES: &str = "runledger_write_queue_bytes";
/// Write transactions committed, and their latency in seconds (apply and fsync).
pub const COMMITS: &str = "runledger_commits_total";
pub const COMMIT_SECONDS: &str = "runledger_commit_duration_seconds";
/// The database file's size.
pub const DATABASE_BYTES: &str = "runledger_database_file_bytes";
/// Token requests by `outcome` (`granted`, `refused`).
pub const TOKEN_REQUESTS: &str = "runledger_token_requests_total";
/// Connections open, by `front` (`rest`, `grpc`), and connections closed on arrival (over a
/// limit).
pub const CONNECTIONS: &str = "runledger_open_connections";
pub const CONNECTIONS_REFUSED: &str = "runledger_connections_refused_total";
/// Cluster mode: the last stream sequence this node applied, and the stream's last sequence as
/// this node last saw it.
pub const APPLIED_SEQ: &str = "runledger_cluster_applied_seq";
pub const STREAM_SEQ: &str = "runledger_cluster_stream_seq";
/// Cluster mode: times a publisher sent its unconfirmed messages again (a failed or lost
/// acknowledgement, or a copy stored out of order).
pub const PUBLISH_RETRIES: &str = "runledger_cluster_publish_retries_total";
/// Cluster mode: stream messages this node did not apply, by reason (`unauthentic`,
/// `malformed`, `duplicate`, `out_of_order`, `passed_over`).
pub const MESSAGES_SKIPPED: &str = "runledger_cluster_messages_skipped_total";
/// Cluster mode: 1 while the applier is stalled (a message it cannot apply, a missing sequence).
pub const APPLIER_STALLED: &str = "runledger_cluster_applier_stalled";
/// Cluster mode: 1 while this node reaches a quorum of the stream's replicas.
pub const QUORUM: &str = "runledger_cluster_quorum";

/// API keys by `state` (`active`, `revoked`): counts only, never a key or its id.
pub const API_KEYS: &str = "runledger_api_keys";

/// Alert deliveries by `outcome` (`delivered`, `retried`, `gone`, `refused`, `expired`,
/// `dropped`); no per-rule labels.
pub const ALERT_DELIVERIES: &str = "runledger_alert_deliveries_total";
/// 1 while this process delivers alerts (always on its own; the lease holder in a cluster).
pub const ALERT_COURIER: &str = "runledger_alert_courier";
/// Seconds from the commit of an alert transition to the start of its first delivery attempt
/// (transitions this process committed).
pub const ALERT_FIRST_ATTEMPT: &str = "runledger_alert_first_attempt_seconds";
/// Alert transitions waiting in the outbox.
pub const ALERT_OUTBOX: &str = "runledger_alert_outbox_depth";

/// Latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). `None` when
/// another recorder was installed first (an embedding program's).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("the buckets are not empty");
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// What a scrape reads from the data dir.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scraped {
    pub database_bytes: Option<u64>,
    /// Active and revoked API keys.
    pub api_keys: Option<(u64, u64)>,
}

/// The text exposition, with the gauges read at scrape time brought up to date.
pub fn render(scraped: Scraped) -> String {
    let Some(handle) = install() else {
        return "# another metrics recorder is installed in this process\n".into();
    };
    if let Some(bytes) = scraped.database_bytes {
        metrics::gauge!(DATABASE_BYTES).set(bytes as f64);
    }
    if let Some((active, revoked)) = scraped.api_keys {
        metrics::gauge!(API_KEYS, "state" => "active").set(active as f64);
        metrics::gauge!(API_KEYS, "state" => "revoked").set(revoked as f64);
    }
    handle.run_upkeep();
    handle.render()
}

/// The status class of an HTTP status: `2xx`, `4xx`...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "REST requests by method, route template and status class"
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "REST request latency by route template"
    );
    describe_counter!(GRPC_REQUESTS, "gRPC calls by method and status code");
    describe_histogram!(
        GRPC_SECONDS,
        Unit::Seconds,
        "gRPC latency to the response headers by method"
    );
    describe_counter!(WRITES_ACKNOWLEDGED, "writes applied and durable, by kind");
    describe_counter!(WRITES_REFUSED, "writes refused, by reason");
    describe_counter!(RUNS_APPLIED, "task runs applied to this node's database");
    describe_gauge!(QUEUE_DEPTH, "writes waiting for the writer");
    describe_gauge!(
        QUEUE_BYTES,
        Unit::Bytes,
        "bytes held by writes waiting for the writer"
    );
    describe_counter!(COMMITS, "write transactions committed");
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "write transaction latency (apply and fsync)"
    );
    describe_gauge!(DATABASE_BYTES, Unit::Bytes, "the database file's size");
    describe_gauge!(API_KEYS, "API keys by state (active, revoked)");
    describe_counter!(TOKEN_REQUESTS, "token requests by outcome");
    describe_counter!(
        ALERT_DELIVERIES,
        "alert webhook attempts and ends, by outcome"
    );
    describe_gauge!(ALERT_OUTBOX, "alert transitions waiting for delivery");
    describe_histogram!(
        ALERT_FIRST_ATTEMPT,
        Unit::Seconds,
        "from the commit of an alert transition to its first delivery attempt"
    );
    describe_gauge!(
        ALERT_COURIER,
        "1 while this process delivers alerts (in a cluster: holds the delivery lease)"
    );
    describe_gauge!(CONNECTIONS, "connections open by front");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "connections closed on arrival over a limit, by front"
    );
    describe_gauge!(
        APPLIED_SEQ,
        "cluster mode: the last stream sequence applied here"
    );
    describe_gauge!(
        STREAM_SEQ,
        "cluster mode: the stream's last sequence as last seen here"
    );
    describe_counter!(
        PUBLISH_RETRIES,
        "cluster mode: unconfirmed messages sent again, in order"
    );
    describe_counter!(
        MESSAGES_SKIPPED,
        "cluster mode: stream messages not applied, by reason"
    );
    describe_gauge!(
        APPLIER_STALLED,
        "cluster mode: 1 while the applier is stalled"
    );
    describe_gauge!(
        QUORUM,
        "cluster mode: 1 while a quorum of the stream's replicas answers"
    );
}

/// One write of a transaction as the metrics count it.
pub struct Counted<'a> {
    /// The operation's kind, as a label.
    pub kind: &'static str,
    /// Task runs it applied, when acknowledged.
    pub runs: u64,
    /// Acknowledged, refused, or not reached (`None`).
    pub outcome: Option<Result<(), &'a Error>>,
}

/// Counts one write transaction: its latency, and each operation acknowledged or refused (all
/// refused when the transaction failed).
pub fn record_transaction<'a>(
    writes: impl Iterator<Item = Counted<'a>>,
    failed: Option<&Error>,
    elapsed: std::time::Duration,
) {
    if let Some(error) = failed {
        writes.for_each(|_| record_refused(error));
        return;
    }
    metrics::counter!(COMMITS).increment(1);
    metrics::histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
    // Summed first: an import's transaction holds 200,000 writes of one kind.
    let mut acknowledged: Vec<(&'static str, u64)> = Vec::new();
    let mut refused: Vec<(&'static str, u64)> = Vec::new();
    let mut runs = 0;
    let count = |counts: &mut Vec<(&'static str, u64)>, label: &'static str| match counts
        .iter_mut()
        .find(|(l, _)| *l == label)
    {
        Some((_, n)) => *n += 1,
        None => counts.push((label, 1)),
    };
    for write in writes {
        match write.outcome {
            Some(Ok(())) => {
                count(&mut acknowledged, write.kind);
                runs += write.runs;
            }
            Some(Err(error)) => count(&mut refused, error.code().as_str()),
            None => {}
        }
    }
    for (kind, n) in acknowledged {
        metrics::counter!(WRITES_ACKNOWLEDGED, "kind" => kind).increment(n);
    }
    if runs > 0 {
        metrics::counter!(RUNS_APPLIED).increment(runs);
    }
    for (reason, n) in refused {
        metrics::counter!(WRITES_REFUSED, "reason" => reason).increment(n);
    }
}

/// Counts a write refused before it reached a transaction.
pub fn record_refused(error: &Error) {
    metrics::counter!(WRITES_REFUSED, "reason" => error.code().as_str()).increment(1);
}
