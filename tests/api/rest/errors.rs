//! Bad input over REST: the contract's status and a JSON error naming the problem; unknown
//! routes are JSON 404s.

use reqwest::Method;
use runledger::auth::Scopes;
use serde_json::Value;

use crate::support::{spawn_app, token_for};

use super::*;

#[tokio::test]
async fn bad_input_gets_the_contracts_status_and_a_json_error_naming_the_problem() {
    let app = seeded().await;
    // Another organization's client: the first pipeline does not exist for it.
    let stranger = app.engine.create_client(None, Scopes::all()).unwrap();
    let stranger_token = token_for(&app.engine, &stranger, None).await;
    let stats_only = token_for(&app.engine, &app.client, Some("stats:read")).await;
    let run_only = token_for(&app.engine, &app.client, Some("pipelines:run")).await;
    let good = app.token.clone();
    let unknown = "99999999-9999-4999-8999-999999999999";
    let stats =
        |uuid: &str, from: &str, to: &str| format!("/v1/stats/tasks/{uuid}/stats/{from}/{to}");
    let aggregated = |rest: &str| format!("/v1/stats/pipelines/{PIPELINE}/aggregated-stats/{rest}");
    let logs =
        |query: &str| format!("/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01/2024-12-31?{query}");
    let cases: Vec<(Method, String, Option<&str>, u16, String)> = vec![
        (
            Method::GET,
            stats("not-a-uuid", "2024-01-01", "2024-01-02"),
            Some(&good),
            400,
            "uuid: `not-a-uuid` is not a UUID".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-02-30", "2024-03-01"),
            Some(&good),
            400,
            "from: `2024-02-30` is not a valid date: 2024-02 has 29 days".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-13-01"),
            Some(&good),
            400,
            "to: `2024-13-01` is not a valid date".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01%2025:00:00", "2024-01-02"),
            Some(&good),
            400,
            "from: `2024-01-01 25:00:00` has a time of day out of range".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "yesterday", "today"),
            Some(&good),
            400,
            "from: `yesterday` is not a date".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-03-01", "2024-02-01"),
            Some(&good),
            400,
            "from: must not be after to".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/fortnight/3"),
            Some(&good),
            400,
            "period: must be one of day, week, month, quarter, year".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/0"),
            Some(&good),
            400,
            "n: must be between 1 and 1000, got 0".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/3?fill=gaps"),
            Some(&good),
            400,
            "fill: `gaps` is not a fill; the only one is zero".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/100000"),
            Some(&good),
            400,
            "n: must be between 1 and 1000, got 100000".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/twelve"),
            Some(&good),
            400,
            "n: `twelve` is not a whole number".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-02-30/month/3"),
            Some(&good),
            400,
            "date_from: `2024-02-30` is not a valid date".to_string(),
        ),
        (
            Method::GET,
            logs("limit=0"),
            Some(&good),
            400,
            "limit: must be between 1 and 1000, got 0".to_string(),
        ),
        (
            Method::GET,
            logs("limit=5000"),
            Some(&good),
            400,
            "limit: must be between 1 and 1000".to_string(),
        ),
        (
            Method::GET,
            logs("limit=-1"),
            Some(&good),
            400,
            "limit: `-1` is not a whole number".to_string(),
        ),
        (
            Method::GET,
            logs("cursor=garbage"),
            Some(&good),
            400,
            "cursor: `garbage` is not a cursor this server issued".to_string(),
        ),
        (
            Method::GET,
            format!("/v1/stats/users/{TASK_A}/stats/2024-01-01/2024-01-02"),
            Some(&good),
            404,
            "the kinds are tasks, pipelines and workflows".to_string(),
        ),
        (
            Method::GET,
            format!("/v1/stats/tasks/{TASK_A}/logs/2024-01-01/2024-01-02"),
            Some(&good),
            404,
            "logs are kept per pipeline".to_string(),
        ),
        (
            Method::GET,
            stats(unknown, "2024-01-01", "2024-01-02"),
            Some(&good),
            404,
            format!("task {unknown} not found"),
        ),
        (
            Method::GET,
            format!("/v1/stats/pipelines/{PIPELINE}/last-run/stats"),
            Some(&stranger_token),
            404,
            format!("pipeline {PIPELINE} not found"),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some(&stranger_token),
            404,
            format!("task {TASK_A} not found"),
        ),
        (
            Method::POST,
            format!("/v1/pipelines/{PIPELINE}/runs/"),
            Some(&stranger_token),
            404,
            format!("pipeline {PIPELINE} not found"),
        ),
        (
            Method::POST,
            format!("/v1/pipelines/{unknown}/runs/"),
            Some(&good),
            404,
            format!("pipeline {unknown} not found"),
        ),
        (
            Method::POST,
            "/v1/pipelines/not-a-uuid/runs/".into(),
            Some(&good),
            400,
            "uuid: `not-a-uuid` is not a UUID".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            None,
            401,
            "no credentials".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some("rla_forged"),
            401,
            "the access token is not valid".to_string(),
        ),
        (
            Method::POST,
            format!("/v1/pipelines/{PIPELINE}/runs/"),
            Some(&stats_only),
            403,
            "lacks the pipelines:run scope".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some(&run_only),
            403,
            "lacks the stats:read scope".to_string(),
        ),
        (
            Method::DELETE,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some(&good),
            405,
            "DELETE is not allowed".to_string(),
        ),
        (
            Method::GET,
            format!("/v1/pipelines/{PIPELINE}/runs/"),
            Some(&good),
            405,
            "GET is not allowed".to_string(),
        ),
        (
            Method::PUT,
            "/v1/oauth/token".into(),
            None,
            405,
            "PUT is not allowed".to_string(),
        ),
        (
            Method::GET,
            "/v1/nothing/here".into(),
            Some(&good),
            404,
            "no route for GET /v1/nothing/here".to_string(),
        ),
        (
            Method::GET,
            "/v2/stats".into(),
            None,
            404,
            "no route".to_string(),
        ),
    ];
    for (method, path, token, status, message) in cases {
        let (got, headers, body) = call(&app, method.clone(), &path, token).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {body}");
        assert_eq!(body["code"], status, "{method} {path}: {body}");
        let detail = body["errors"][0].as_str().unwrap_or_default();
        assert!(
            detail.contains(&message),
            "{method} {path}: {detail:?} lacks {message:?}"
        );
        if status == 401 {
            assert!(headers.contains_key("www-authenticate"));
        }
    }

    // A header that is not Bearer, and an oversized body.
    let response = reqwest::Client::new()
        .get(app.url(&stats(TASK_A, "2024-01-01", "2024-01-02")))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = reqwest::Client::new()
        .post(app.url(&format!("/v1/pipelines/{PIPELINE}/runs/")))
        .bearer_auth(&good)
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("limited to 65536 bytes"),
        "{body}"
    );

    // Another organization's pipeline reads exactly like a missing one.
    let (_, _, theirs) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/pipelines/{PIPELINE}/last-run/stats"),
        Some(&stranger_token),
    )
    .await;
    let (_, _, missing) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/pipelines/{unknown}/last-run/stats"),
        Some(&stranger_token),
    )
    .await;
    assert_eq!(
        theirs.to_string().replace(PIPELINE, unknown),
        missing.to_string()
    );

    // The server still serves, and still right.
    assert_eq!(
        get_ok(&app, &stats(TASK_A, "2024-01-01", "2024-12-31")).await["num_of_successes"],
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = spawn_app().await;
    let response = reqwest::get(app.url("/v1/nowhere")).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 404);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("no route for GET /v1/nowhere")
    );
    assert_eq!(
        reqwest::get(app.url("/healthz")).await.unwrap().status(),
        200
    );
    app.stop().await;
}
