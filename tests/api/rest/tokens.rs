//! The token endpoint: grants, refreshes, refusals, expiry and revocation, the slow-down of
//! failures, and the credentials a fresh server prints.

use reqwest::{Method, StatusCode};
use runledger::auth::Scopes;
use runledger::engine::TokenLifetimes;
use runledger::proto::{self, EntityKind};
use serde_json::Value;

use crate::support::{ChildServer, spawn_app, spawn_app_with};

use super::*;

#[tokio::test]
async fn the_token_endpoint_grants_refreshes_and_refuses() {
    let app = spawn_app().await;
    let (id, secret) = (
        app.client.client_id.clone(),
        app.client.client_secret.clone(),
    );
    let http = reqwest::Client::new();
    let url = app.url("/v1/oauth/token");

    let response = http
        .get(format!(
            "{url}?client_id={id}&client_secret={secret}&grant_type=client_credentials"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let grant: Value = response.json().await.unwrap();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 86_400);
    assert_eq!(
        grant["scope"],
        "pipelines:run stats:read runs:write alerts:write"
    );
    assert!(grant["access_token"].as_str().unwrap().starts_with("rla_"));

    // A form body, an alias scope echoed as asked, and a trailing slash.
    let narrowed: Value = http
        .post(format!("{url}/"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "workflows:run"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(narrowed["scope"], "workflows:run");
    // A narrowed token cannot read stats.
    let (status, _, body) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/tasks/{TASK_A}/last-run/stats"),
        narrowed["access_token"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("lacks the stats:read scope")
    );

    // POST with the parameters in the query string, and HTTP Basic client authentication.
    let posted = http
        .post(format!(
            "{url}?grant_type=client_credentials&client_id={id}&client_secret={secret}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let basic = http
        .post(&url)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);

    // A refresh token works once, with the client's credentials, and keeps the scopes.
    let refresh = |token: String| {
        let (http, url, id, secret) = (http.clone(), url.clone(), id.clone(), secret.clone());
        async move {
            http.post(&url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let refresh_token = narrowed["refresh_token"].as_str().unwrap().to_string();
    let renewed = refresh(refresh_token.clone()).await;
    assert_eq!(renewed.status(), 200);
    let renewed: Value = renewed.json().await.unwrap();
    assert_eq!(renewed["scope"], "workflows:run");
    assert_ne!(renewed["refresh_token"], narrowed["refresh_token"]);
    let reused = refresh(refresh_token).await;
    assert_eq!(reused.status(), 400);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let errors: Vec<(String, u16, &str)> = vec![
        (
            format!("{url}?client_id={id}&client_secret={secret}"),
            400,
            "invalid_request",
        ),
        (
            format!("{url}?grant_type=password&client_id={id}&client_secret={secret}"),
            400,
            "unsupported_grant_type",
        ),
        (
            format!("{url}?grant_type=client_credentials&client_id={id}&client_secret=rls_wrong"),
            401,
            "invalid_client",
        ),
        (
            format!(
                "{url}?grant_type=client_credentials&client_id=rlc_nobody&client_secret={secret}"
            ),
            401,
            "invalid_client",
        ),
        (
            format!(
                "{url}?grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=admin"
            ),
            400,
            "invalid_scope",
        ),
        (
            format!(
                "{url}?grant_type=client_credentials&grant_type=client_credentials&client_id={id}&client_secret={secret}"
            ),
            400,
            "invalid_request",
        ),
        (
            format!("{url}?grant_type=refresh_token&client_id={id}&client_secret={secret}"),
            400,
            "invalid_request",
        ),
        (
            format!(
                "{url}?grant_type=refresh_token&refresh_token=rlr_made_up&client_id={id}&client_secret={secret}"
            ),
            400,
            "invalid_grant",
        ),
    ];
    for (request, status, error) in errors {
        let response = http.get(&request).send().await.unwrap();
        assert_eq!(response.status(), status, "{request}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{request}: {body}");
        assert!(!body["error_description"].as_str().unwrap().is_empty());
    }

    // A client limited to stats:read may not be granted more.
    let reader = app
        .engine
        .create_client(
            Some(app.client.organization),
            [runledger::auth::Scope::StatsRead].into_iter().collect(),
        )
        .unwrap();
    let refused = http
        .get(format!(
            "{url}?grant_type=client_credentials&client_id={}&client_secret={}&scope=runs:write",
            reader.client_id, reader.client_secret
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    assert!(
        reader.output_key.is_none(),
        "only an organization's first client shows its key"
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let expired = spawn_app_with(
        tempfile::tempdir().unwrap(),
        TokenLifetimes {
            access_secs: 0,
            refresh_secs: 0,
        },
    )
    .await;
    let (status, _, body) = call(
        &expired,
        Method::GET,
        &format!("/v1/stats/tasks/{TASK_A}/last-run/stats"),
        Some(&expired.token),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["errors"][0].as_str().unwrap().contains("expired"),
        "{body}"
    );
    expired.stop().await;

    let app = seeded().await;
    let path = format!("/v1/stats/tasks/{TASK_A}/last-run/stats");
    assert_eq!(
        call(&app, Method::GET, &path, Some(&app.token)).await.0,
        StatusCode::OK
    );
    app.engine.revoke_client(&app.client.client_id).unwrap();
    let (status, _, body) = call(&app, Method::GET, &path, Some(&app.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let refused = app
        .engine
        .issue_token(runledger::engine::TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some(app.client.client_id.clone()),
            client_secret: Some(app.client.client_secret.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("invalid_client"), "{refused}");
    // gRPC sees the same revocation.
    let status = app
        .stats()
        .await
        .get_last_run_stats(proto::GetLastRunStatsRequest {
            entity: crate::support::entity(EntityKind::Task, TASK_A),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    app.stop().await;
}

#[test]
fn a_fresh_server_prints_credentials_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    let credentials = server
        .first_client
        .clone()
        .expect("the first start prints credentials");
    assert_eq!(
        credentials["scopes"],
        "pipelines:run stats:read runs:write alerts:write"
    );
    assert!(credentials["output_key"].is_string());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let url = format!(
            "http://{}/v1/oauth/token?grant_type=client_credentials&client_id={}&client_secret={}",
            server.http_addr,
            credentials["client_id"].as_str().unwrap(),
            credentials["client_secret"].as_str().unwrap()
        );
        let grant: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        reqwest::Client::new()
            .get(format!(
                "http://{}/v1/stats/pipelines/{PIPELINE}/last-run/stats",
                server.http_addr
            ))
            .bearer_auth(grant["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404, "authenticated, and no such pipeline yet");
    server.kill();
}

#[tokio::test]
async fn the_token_endpoint_slows_down_failures_but_never_the_right_secret() {
    let app = spawn_app().await;
    let other = app
        .engine
        .create_client(Some(app.client.organization), Scopes::all())
        .unwrap();
    let http = reqwest::Client::new();
    let url = app.url("/v1/oauth/token");
    let attempt = |id: String, secret: String| {
        let request = http.post(&url).form(&[
            ("grant_type", "client_credentials".to_string()),
            ("client_id", id),
            ("client_secret", secret),
        ]);
        async move { request.send().await.unwrap() }
    };
    let id = app.client.client_id.clone();
    for n in 0..10 {
        let response = attempt(id.clone(), format!("wrong-{n}")).await;
        assert_eq!(response.status(), 401, "attempt {n}");
    }
    // Past the burst, failures are refused with a hint...
    let response = attempt(id.clone(), "wrong-again".into()).await;
    assert_eq!(response.status(), 429);
    let wait: u32 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "slow_down", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts"),
        "{body}"
    );
    // ...but whoever knows only the client id cannot lock the client out: the right secret
    // still gets a token, at once and again.
    for _ in 0..2 {
        let response = attempt(id.clone(), app.client.client_secret.clone()).await;
        assert_eq!(response.status(), 200);
    }
    // Another client of the same organization is not held back.
    let response = attempt(other.client_id.clone(), other.client_secret.clone()).await;
    assert_eq!(response.status(), 200);
    // One peer failing with ever new client ids is slowed down too (per-address throttle).
    let mut statuses = Vec::new();
    for n in 0..40 {
        statuses.push(
            attempt(format!("rlc_made_up_{n}"), "x".into())
                .await
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Tokens already issued keep working.
    let path = format!("/v1/stats/tasks/{TASK_A}/last-run/stats");
    assert_ne!(
        call(&app, Method::GET, &path, Some(&app.token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}
