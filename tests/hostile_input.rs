//! Hostile input: property-based fuzzing of everything that parses what a client sends — REST
//! paths, query strings and date-times, import lines, protobuf requests — plus the regression
//! corpus of inputs that once broke something or sit on an edge. Each target checks that bad
//! input gets an error naming what was wrong (never a panic or a 500) and that good input
//! means what an independent reading (chrono, serde_json, the encoder) says it means.
//!
//! CI runs each target for `RUNLEDGER_FUZZ_CASES` cases (default 256); set it higher for a long
//! run, e.g. `RUNLEDGER_FUZZ_CASES=100000 cargo test --release --test hostile_input`.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{NaiveDate, NaiveTime};
use proptest::prelude::*;
use prost::Message;
use tower::ServiceExt;

use runledger::api::{rest, wire};
use runledger::auth::Scopes;
use runledger::cli::import::{parse_line, parse_row};
use runledger::engine::{Engine, TokenRequest};
use runledger::model::RunState;
use runledger::proto;
use runledger::store::{Store, StoreOptions, verify::verify};
use runledger::time::{RangeEnd, Timestamp, parse_instant, parse_path_datetime};
use runledger::workload::{Sequential as Workload, to_json_line};

fn config() -> ProptestConfig {
    let cases = std::env::var("RUNLEDGER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // Failures are kept as explicit cases in `regression_corpus` below, not in files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Date-times

/// A date-time spelled almost right: every component drawn a little past its valid range, the
/// separators sometimes wrong, with or without a fraction and an offset.
fn near_datetime() -> impl Strategy<Value = String> {
    (
        (0u32..=10_000, 0u32..=13, 0u32..=32),
        (0u32..=25, 0u32..=61, 0u32..=61),
        prop::sample::select(vec![" ", "T", "t", "_", ""]),
        prop::option::of("[0-9]{0,11}"),
        prop::sample::select(vec![
            "", "Z", "z", "+00:00", "-23:59", "+14:30", "+24:00", "+0100",
        ]),
    )
        .prop_map(|((y, mo, d), (h, mi, s), sep, fraction, offset)| {
            let fraction = fraction.map_or(String::new(), |f| format!(".{f}"));
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{fraction}{offset}")
        })
}

/// What chrono makes of a date-time in the spellings runledger documents, in microseconds since
/// the epoch; `None` when it is not one (or lies outside the years 1 to 9999).
fn chrono_reading(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || !text.is_ascii() || !matches!(bytes[10], b' ' | b'T' | b't') {
        return None;
    }
    let date = NaiveDate::parse_from_str(&text[..10], "%Y-%m-%d").ok()?;
    if text.as_bytes()[..10]
        .iter()
        .filter(|b| b.is_ascii_digit())
        .count()
        != 8
    {
        return None;
    }
    let time = NaiveTime::parse_from_str(&text[11..19], "%H:%M:%S").ok()?;
    if &text[17..19] == "60" {
        return None; // chrono reads a leap second; runledger, like most APIs, refuses it
    }
    if !text[11..19].bytes().enumerate().all(|(i, b)| {
        if i == 2 || i == 5 {
            b == b':'
        } else {
            b.is_ascii_digit()
        }
    }) {
        return None;
    }
    let mut rest = &text[19..];
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let padded = format!("{:0<6}", &fraction[..digits.min(6)]);
        micros = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let (sign, hhmm) = rest.split_at(1);
            let sign = match sign {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let parsed = NaiveTime::parse_from_str(&format!("{hhmm}:00"), "%H:%M:%S").ok()?;
            if hhmm.len() != 5 {
                return None;
            }
            sign * i64::from(parsed.signed_duration_since(NaiveTime::MIN).num_seconds() as i32)
        }
    };
    let seconds = date.and_time(time).and_utc().timestamp() - offset;
    let at = seconds * 1_000_000 + micros;
    Timestamp::from_micros(at).map(Timestamp::micros)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_as_a_date_time_is_an_error_or_a_valid_instant(text in any::<String>()) {
        for end in [RangeEnd::Start, RangeEnd::End] {
            if let Err(reason) = parse_path_datetime(&text, end) {
                prop_assert!(reason.contains('`'), "the reason quotes the input: {reason}");
            }
        }
        let _ = parse_instant(&text);
    }

    #[test]
    fn near_date_times_read_as_chrono_reads_them(text in near_datetime()) {
        let ours = parse_instant(&text).map(Timestamp::micros);
        match (ours, chrono_reading(&text)) {
            (Ok(ours), Some(theirs)) => prop_assert_eq!(ours, theirs, "{}", text),
            (Err(_), None) => {}
            (ours, theirs) => prop_assert!(false, "{text}: runledger {ours:?}, chrono {theirs:?}"),
        }
    }

    #[test]
    fn a_date_alone_is_the_first_or_last_second_of_its_day(
        y in 0u32..=10_000, m in 0u32..=13, d in 0u32..=32,
    ) {
        let text = format!("{y:04}-{m:02}-{d:02}");
        let chrono = NaiveDate::from_ymd_opt(y as i32, m, d)
            .filter(|_| (1..=9999).contains(&y))
            .map(|date| date.and_time(NaiveTime::MIN).and_utc().timestamp());
        let start = parse_path_datetime(&text, RangeEnd::Start).ok();
        let end = parse_path_datetime(&text, RangeEnd::End).ok();
        prop_assert_eq!(start, chrono, "{}", text);
        prop_assert_eq!(end, chrono.map(|s| s + 86_399), "{}", text);
    }
}

// ---------------------------------------------------------------------------------------------
// Import lines

/// A valid import line, then one of its bytes replaced, removed or duplicated, or a field's
/// value swapped for something of the wrong kind.
fn mutated_line() -> impl Strategy<Value = String> {
    let line =
        (0u64..1_000_000).prop_map(|n| to_json_line(&Workload::three_years(1_000_000).task_run(n)));
    (line, any::<prop::sample::Index>(), any::<u8>(), 0u8..4).prop_map(|(line, at, byte, how)| {
        let mut bytes = line.into_bytes();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => {
                bytes.remove(i);
            }
            2 => bytes.insert(i, bytes[i]),
            _ => {
                // A value of the wrong kind after some `":`.
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let spots: Vec<usize> = text.match_indices("\":").map(|(p, _)| p + 2).collect();
                let spot = spots[i % spots.len()];
                let replacement = [
                    "null",
                    "-1",
                    "1e999",
                    "\"\"",
                    "[]",
                    "{}",
                    "18446744073709551616",
                    "\"\\ud800\"",
                ][usize::from(byte) % 8];
                let end = text[spot..]
                    .find([',', '}'])
                    .map_or(text.len(), |e| spot + e);
                return format!("{}{}{}", &text[..spot], replacement, &text[end..]);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A row of the committed sample of the reference platform's export with one byte changed,
/// removed or doubled.
fn mutated_row() -> impl Strategy<Value = Vec<u8>> {
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ylem/task_runs.ndjson"
    ))
    .unwrap();
    let rows: Vec<Vec<u8>> = sample
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    (
        prop::sample::select(rows),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0u8..3,
    )
        .prop_map(|(mut row, at, byte, how)| {
            let i = at.index(row.len());
            match how {
                0 => row[i] = byte,
                1 => {
                    row.remove(i);
                }
                _ => row.insert(i, row[i]),
            }
            row
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_an_exported_row_are_an_error_or_a_task_run(bytes in any::<Vec<u8>>()) {
        if let Err(reason) = parse_row(&bytes) {
            prop_assert!(!reason.is_empty());
        }
    }

    #[test]
    fn damaged_exported_rows_are_refused_or_read_as_finished_runs(row in mutated_row()) {
        match parse_row(&row) {
            Err(reason) => prop_assert!(!reason.is_empty()),
            Ok(run) => prop_assert!(run.state == RunState::Finished && run.executed_at.is_some()),
        }
    }

    #[test]
    fn any_text_as_an_import_line_is_an_error_or_a_task_run(text in any::<String>()) {
        if let Err(reason) = parse_line(&text) {
            prop_assert!(!reason.is_empty());
        }
    }

    #[test]
    fn generated_lines_read_back_as_the_runs_they_encode(n in 0u64..10_000_000) {
        let run = Workload::three_years(10_000_000).task_run(n);
        prop_assert_eq!(parse_line(&to_json_line(&run)), Ok(run));
    }

    #[test]
    fn damaged_lines_are_refused_or_read_consistently(line in mutated_line()) {
        match parse_line(&line) {
            Err(reason) => prop_assert!(!reason.is_empty()),
            Ok(run) => {
                // Whatever was read is a run the engine can take: finished runs have a time.
                prop_assert!(run.state != RunState::Finished || run.executed_at.is_some());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf requests

fn uuid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<u128>().prop_map(|v| uuid::Uuid::from_u128(v).to_string()),
        any::<u128>().prop_map(|v| uuid::Uuid::from_u128(v).simple().to_string()),
        "\\PC{0,40}",
    ]
}

fn proto_timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop::option::of(
        (
            prop_oneof![any::<i64>(), -62_135_596_800i64..=253_402_300_799],
            prop_oneof![any::<i32>(), 0i32..1_000_000_000],
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

prop_compose! {
    fn proto_task_run()(
        uuids in prop::array::uniform5(uuid_text()),
        task_type in prop_oneof![any::<i32>(), -1i32..8],
        state in prop_oneof![any::<i32>(), -1i32..5],
        is_successful in any::<bool>(),
        duration_ms in prop_oneof![any::<u32>(), 0u32..100_000],
        executed_at in proto_timestamp(),
        output in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        metric_value in prop::option::of(prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)]),
        flags in any::<(bool, bool)>(),
    ) -> proto::TaskRunResult {
        let [task_run_uuid, pipeline_run_uuid, pipeline_uuid, task_uuid, organization_uuid] = uuids;
        proto::TaskRunResult {
            task_run_uuid, pipeline_run_uuid, pipeline_uuid, task_uuid, organization_uuid,
            task_type, state, is_successful, duration_ms, executed_at,
            output: output.unwrap_or_default(),
            metric_value,
            is_initial_task: flags.0,
            is_final_task: flags.1,
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_a_report_request_are_an_error_naming_a_field_or_valid_runs(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Ok(request) = proto::ReportTaskRunsRequest::decode(bytes.as_slice()) {
            check_validation(request.results)?;
        }
    }

    #[test]
    fn odd_task_run_fields_are_an_error_naming_the_field_or_round_trip(
        results in prop::collection::vec(proto_task_run(), 1..4),
    ) {
        check_validation(results)?;
    }
}

fn check_validation(results: Vec<proto::TaskRunResult>) -> Result<(), TestCaseError> {
    match wire::task_runs(results.clone()) {
        Err(error) => {
            let text = error.to_string();
            prop_assert!(
                text.contains("results["),
                "the error names the field: {text}"
            );
        }
        Ok(runs) => {
            prop_assert_eq!(runs.len(), results.len());
            for run in &runs {
                let again = wire::task_run("again", wire::to_proto_task_run(run)).ok();
                prop_assert_eq!(again.as_ref(), Some(run));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Extreme but valid runs through the engine

/// Seconds at the ends of the calendar, around a leap day, or anywhere in the years 1 to 9999.
fn extreme_second() -> impl Strategy<Value = i64> {
    const FIRST: i64 = -62_135_596_800; // 0001-01-01 00:00:00
    const LAST: i64 = 253_402_300_799; // 9999-12-31 23:59:59
    const LEAP_DAY: i64 = 1_709_164_800; // 2024-02-29 00:00:00
    prop_oneof![
        FIRST..FIRST + 400 * 86_400,
        LAST - 400 * 86_400..=LAST,
        LEAP_DAY - 2 * 86_400..LEAP_DAY + 3 * 86_400,
        FIRST..=LAST,
    ]
}

prop_compose! {
    /// A valid task run of a small workload (so runs share pipelines, tasks and pipeline runs,
    /// and some are reported twice) with an extreme duration, time and metric.
    fn extreme_run()(
        n in 0u64..48,
        duration_ms in prop_oneof![Just(u32::MAX), any::<u32>(), 0u32..10],
        second in extreme_second(),
        micros in 0i64..1_000_000,
        is_successful in any::<bool>(),
        metric_value in prop::option::of(prop_oneof![Just(f64::MAX), Just(-0.0), any::<f64>().prop_filter("finite", |v| v.is_finite())]),
    ) -> runledger::model::TaskRun {
        let mut run = Workload::three_years(48).task_run(n);
        run.duration_ms = duration_ms;
        run.executed_at = Timestamp::from_micros(second * 1_000_000 + micros);
        run.is_successful = is_successful;
        run.metric_value = metric_value;
        run
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: config().cases.min(64), ..config() })]

    /// Durations up to u32::MAX ms, times at the ends of the calendar, huge metrics, re-reports
    /// with another outcome: every run is taken and the rollups still agree with the runs.
    #[test]
    fn extreme_valid_runs_keep_the_rollups_in_agreement(
        runs in prop::collection::vec(extreme_run(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
        for outcome in engine.import_now(runs).unwrap() {
            prop_assert!(outcome.is_ok(), "{outcome:?}");
        }
        let report = verify(engine.store()).unwrap();
        prop_assert!(report.is_consistent(), "{report:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// REST requests against the real router, in process

struct Gateway {
    router: axum::Router,
    engine: Arc<Engine>,
    token: String,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let client = engine.create_client(None, Scopes::all()).unwrap();
        let workload = Workload::three_years(4_000);
        engine.import_now(workload.task_runs().collect()).unwrap();
        let grant = runtime
            .block_on(engine.issue_token(TokenRequest {
                grant_type: Some("client_credentials".into()),
                client_id: Some(client.client_id),
                client_secret: Some(client.client_secret),
                ..TokenRequest::default()
            }))
            .unwrap();
        let engine = Arc::new(engine);
        Gateway {
            router: rest::router(engine.clone()),
            engine,
            token: grant.access_token,
            runtime,
            _dir: dir,
        }
    })
}

/// Path segments that reach the handlers, and ones that should not.
fn segment() -> impl Strategy<Value = String> {
    let pipeline = Workload::three_years(4_000).pipeline(0).0.to_string();
    prop_oneof![
        Just("stats".to_string()),
        Just("tasks".to_string()),
        Just("pipelines".to_string()),
        Just("workflows".to_string()),
        Just("logs".to_string()),
        Just("last-run".to_string()),
        Just("aggregated-stats".to_string()),
        Just("day".to_string()),
        Just("quarter".to_string()),
        Just("rules".to_string()),
        Just(pipeline),
        near_datetime(),
        "[0-9]{1,7}",
        "\\PC{0,12}",
    ]
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

prop_compose! {
    fn rest_request()(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
        root in prop::sample::select(vec!["/v1/stats", "/v1/pipelines", "/v1/workflows", "/v1/oauth/token", "/v1/alerts", "/v1", ""]),
        segments in prop::collection::vec(segment(), 0..7),
        slash in any::<bool>(),
        query in prop::option::of("[a-z_]{0,8}=\\PC{0,16}(&[a-z_]{0,8}=\\PC{0,8}){0,3}"),
        body in prop::collection::vec(any::<u8>(), 0..64),
        authorized in any::<bool>(),
    ) -> (String, String, Option<String>, Vec<u8>, bool) {
        let mut path = root.to_string();
        for segment in &segments {
            path.push('/');
            path.push_str(&percent_encode(segment));
        }
        if slash || path.is_empty() {
            path.push('/');
        }
        (method.to_string(), path, query.map(|q| percent_encode(&q).replace("%3D", "=").replace("%26", "&")), body, authorized)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_rest_request_gets_a_documented_status_and_a_json_error(
        (method, path, query, body, authorized) in rest_request(),
    ) {
        let gateway = gateway();
        let uri = match &query {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        let mut request = Request::builder().method(method.as_str()).uri(&uri);
        if authorized {
            request = request.header("authorization", format!("Bearer {}", gateway.token));
        }
        let request = request.body(Body::from(body)).unwrap();
        let response = gateway
            .runtime
            .block_on(gateway.router.clone().oneshot(request))
            .unwrap();
        let status = response.status();
        prop_assert!(
            !status.is_server_error(),
            "{method} {uri} answered {status}"
        );
        if !status.is_success() && method != "HEAD" {
            let bytes = gateway
                .runtime
                .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("{method} {uri}: {status} body is not JSON: {e}")))?;
            let says = json.get("message").or_else(|| json.get("error_description")).or_else(|| json.get("error"));
            prop_assert!(says.is_some_and(|m| m.as_str().is_some_and(|m| !m.is_empty())), "{method} {uri}: {json}");
            prop_assert!(status != StatusCode::OK);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The regression corpus: inputs that broke something once, or sit on an edge worth keeping.

#[test]
fn regression_corpus() {
    // Date-times: leap days, the ends of the calendar, offsets that cross them, odd digits.
    for (text, expected) in [
        ("2024-02-29 23:59:59", Some(1_709_251_199)),
        ("2023-02-29 00:00:00", None),
        ("0001-01-01T00:00:00Z", Some(-62_135_596_800)),
        ("0001-01-01T00:00:00+00:01", None),
        ("9999-12-31T23:59:59Z", Some(253_402_300_799)),
        ("9999-12-31T23:59:59-00:01", None),
        ("0000-01-01 00:00:00", None),
        ("2024-1-01 00:00:00", None),
        ("2024-01-01 24:00:00", None),
        ("2024-01-01 23:59:60", None),
        ("2024-01-01 00:00:00.", None),
        ("2024-01-01 00:00:00.1234567890", None),
        ("2024-01-01 00:00:00+1:00", None),
        ("２０２４-01-01 00:00:00", None),
        ("2024-01-01 00:00:0\u{e9}", None),
        ("+024-01-01 00:00:00", None),
        ("", None),
    ] {
        assert_eq!(
            parse_path_datetime(text, RangeEnd::Start).ok(),
            expected,
            "{text:?}"
        );
    }
    // Import lines.
    for line in [
        "",
        "{}",
        "null",
        "[]",
        "\u{feff}{}",
        r#"{"message":null}"#,
        r#"{"message":{"message":{}}}"#,
        r#"{"task_run_uuid":"\ud800"}"#,
        r#"{"duration":18446744073709551616}"#,
        r#"{"duration":-1}"#,
        r#"{"executed_at":"2024-02-30 00:00:00"}"#,
    ] {
        let reason = parse_line(line).expect_err(line);
        assert!(!reason.is_empty(), "{line:?}");
    }
    // Protobuf: a record that decodes, then fails validation with the field named.
    let odd = proto::TaskRunResult {
        executed_at: Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: -1,
        }),
        ..Default::default()
    };
    let error = wire::task_runs(vec![odd]).unwrap_err().to_string();
    assert!(error.contains("results[0]."), "{error}");
}

// ---------------------------------------------------------------------------------------------
// OpenLineage events: any body, and valid events with fields deleted or replaced.

/// A JSON value of any kind, odd ones included.
fn odd_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "\\PC{0,24}".prop_map(|s| json!(s)),
        Just(json!([])),
        Just(json!({})),
        Just(json!("START")),
        Just(json!("COMPLETE")),
        Just(json!("FAIL")),
        Just(json!("2024-02-29T23:59:59.999999Z")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("0001-01-01T00:00:00Z")),
        Just(json!("0190a4c6-0000-7000-8000-000000000001")),
        Just(
            json!({"run": {"runId": "0190a4c6-0000-7000-8000-000000000002"}, "job": {"namespace": "airflow", "name": "dag"}})
        ),
        Just(json!([{"namespace": "s3://b", "name": "k"}, {"name": 3}])),
    ]
}

const LINEAGE_FIELDS: [&[&str]; 14] = [
    &["eventType"],
    &["eventTime"],
    &["schemaURL"],
    &["run"],
    &["run", "runId"],
    &["run", "facets"],
    &["run", "facets", "parent"],
    &["run", "facets", "parent", "run", "runId"],
    &["run", "facets", "parent", "root"],
    &["run", "facets", "errorMessage", "message"],
    &["job"],
    &["job", "name"],
    &["job", "namespace"],
    &["outputs"],
];

prop_compose! {
    fn damaged_event()(
        kind in prop::sample::select(vec!["START", "RUNNING", "COMPLETE", "FAIL", "ABORT", "OTHER"]),
        run in 0u8..8,
        parent in 0u8..4,
        second in 0u32..200_000,
        changes in prop::collection::vec((0..LINEAGE_FIELDS.len(), prop::option::of(odd_json())), 0..4),
    ) -> serde_json::Value {
        let uuid = |n: u8| format!("0190a4c6-0000-7000-8000-0000000000{n:02x}");
        let mut event = serde_json::json!({
            "eventType": kind,
            "eventTime": runledger::time::format_rfc3339(Timestamp::from_second(1_709_000_000 + i64::from(second)).unwrap()),
            "producer": "fuzz",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": uuid(run), "facets": {
                "parent": {"run": {"runId": uuid(100 + parent)}, "job": {"namespace": "airflow", "name": format!("dag_{parent}")},
                           "root": {"run": {"runId": uuid(100 + parent)}, "job": {"namespace": "airflow", "name": format!("dag_{parent}")}}},
                "errorMessage": {"message": "boom", "programmingLanguage": "python"}
            }},
            "job": {"namespace": "airflow", "name": format!("dag_{parent}.task_{run}")},
            "outputs": [{"namespace": "s3://bucket", "name": "key"}],
        });
        for (field, value) in changes {
            let path = LINEAGE_FIELDS[field];
            let mut slot = &mut event;
            for key in &path[..path.len() - 1] {
                if !slot.get(*key).is_some_and(|v| v.is_object()) {
                    slot[*key] = serde_json::json!({});
                }
                slot = &mut slot[*key];
            }
            match value {
                None => {
                    slot.as_object_mut().map(|o| o.remove(path[path.len() - 1]));
                }
                Some(value) => slot[path[path.len() - 1]] = value,
            }
        }
        event
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_a_lineage_event_are_an_error_naming_a_field_or_an_event(bytes in any::<Vec<u8>>()) {
        if let Err(refusal) = runledger::lineage::parse(&bytes) {
            prop_assert!(!refusal.field.is_empty() && !refusal.reason.is_empty());
        }
    }

    #[test]
    fn damaged_lineage_events_are_refused_naming_the_field_or_recorded(event in damaged_event()) {
        let gateway = gateway();
        let request = Request::builder()
            .method("POST")
            .uri("/api/v1/lineage")
            .header("authorization", format!("Bearer {}", gateway.token))
            .body(Body::from(serde_json::to_vec(&event).unwrap()))
            .unwrap();
        let response = gateway
            .runtime
            .block_on(gateway.router.clone().oneshot(request))
            .unwrap();
        let status = response.status();
        let bytes = gateway
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        prop_assert!(
            status == StatusCode::CREATED || status == StatusCode::BAD_REQUEST || status == StatusCode::CONFLICT,
            "{event}: {status} {}", String::from_utf8_lossy(&bytes)
        );
        if status == StatusCode::BAD_REQUEST {
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let detail = json["errors"][0].as_str().unwrap_or_default();
            prop_assert!(detail.contains(": "), "{event}: {json}");
        }
        // Now and then: whatever was recorded, the rollups equal a recomputation from the runs.
        static EVENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 32 == 31 {
            prop_assert!(verify(gateway.engine.store()).unwrap().is_consistent(), "after {event}");
        }
    }
}
