//! Alert rules over REST: created with every field checked, listed and shown without their
//! secret, deleted, within the caller's organization and scope.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, spawn_app, token_for};

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, app.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn rule() -> Value {
    json!({
        "name": "nightly ETL failing",
        "pipeline_uuid": "53206efd-1377-5d41-9b92-af79d5a4239e",
        "kind": "failed",
        "params": {"consecutive": 2},
        "webhook": {"url": "https://hooks.example.com/runledger", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    })
}

#[tokio::test]
async fn rules_are_created_listed_shown_and_deleted_without_showing_their_secret() {
    let app = spawn_app().await;
    let (status, created) = send(
        &app,
        reqwest::Method::POST,
        "/v1/alerts/rules",
        &app.token,
        Some(rule()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let uuid = created["rule_uuid"].as_str().unwrap().to_string();
    let mut every = rule();
    every["pipeline_uuid"] = Value::Null;
    every["kind"] = json!("missing");
    every["params"] = json!({"cron": "0 2 * * *", "grace": "30m"});
    every["webhook"]["format"] = json!("slack");
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        "/v1/alerts/rules/",
        &app.token,
        Some(every),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, listed) = send(
        &app,
        reqwest::Method::GET,
        "/v1/alerts/rules",
        &app.token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["rule_uuid"], uuid.as_str(), "oldest first");
    assert_eq!(listed[0]["params"], json!({"consecutive": 2}));
    assert_eq!(listed[1]["pipeline_uuid"], Value::Null);
    assert_eq!(
        listed[1]["params"],
        json!({"cron": "0 2 * * *", "grace": "30m"})
    );
    assert_eq!(
        listed[1]["webhook"],
        json!({"url": "https://hooks.example.com/runledger", "format": "slack"})
    );
    let (status, shown) = send(
        &app,
        reqwest::Method::GET,
        &format!("/v1/alerts/rules/{uuid}"),
        &app.token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, listed[0]);
    assert!(
        !shown.to_string().contains("whsec_"),
        "the secret is never shown: {shown}"
    );
    let stored = std::fs::read(app.dir.path().join("runledger.redb")).unwrap();
    assert!(
        !stored.windows(20).any(|w| w == b"MfKQ9r8GKYqrTwjUPD8I"),
        "the secret is stored sealed"
    );
    // Another organization sees none of it.
    let other = app
        .engine
        .create_client(None, runledger::auth::Scopes::all())
        .unwrap();
    let other_token = token_for(&app.engine, &other, None).await;
    let (status, theirs) = send(
        &app,
        reqwest::Method::GET,
        "/v1/alerts/rules",
        &other_token,
        None,
    )
    .await;
    assert_eq!((status, theirs), (StatusCode::OK, json!([])));
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/alerts/rules/{uuid}"),
        &other_token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // alerts:write is needed.
    let reader = token_for(&app.engine, &app.client, Some("stats:read")).await;
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        "/v1/alerts/rules",
        &reader,
        Some(rule()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/alerts/rules/{uuid}"),
        &app.token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(
        &app,
        reqwest::Method::GET,
        &format!("/v1/alerts/rules/{uuid}"),
        &app.token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/alerts/rules/{uuid}"),
        &app.token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_rule_is_refused_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let mut cases = Vec::new();
    for (path, value, field) in [
        (vec!["kind"], json!("flaky"), "kind"),
        (
            vec!["params", "consecutive"],
            json!(-1),
            "params.consecutive",
        ),
        (vec!["webhook", "url"], json!("gopher://x"), "webhook.url"),
        (vec!["webhook", "secret"], json!("short"), "webhook.secret"),
        (vec!["name"], json!(""), "name"),
        (vec!["pipeline_uuid"], json!("p-1"), "pipeline_uuid"),
    ] {
        let mut body = rule();
        let mut slot = &mut body;
        for key in &path[..path.len() - 1] {
            slot = &mut slot[*key];
        }
        slot[path[path.len() - 1]] = value;
        cases.push((body, field));
    }
    for (body, field) in cases {
        let (status, error) = send(
            &app,
            reqwest::Method::POST,
            "/v1/alerts/rules",
            &app.token,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert!(
            error["errors"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{field}: {error}"
        );
    }
    let response = reqwest::Client::new()
        .post(app.url("/v1/alerts/rules"))
        .bearer_auth(&app.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (_, listed) = send(
        &app,
        reqwest::Method::GET,
        "/v1/alerts/rules",
        &app.token,
        None,
    )
    .await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_unless_the_operator_allows_them() {
    let app = spawn_app().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://localhost:9000/hook",
        "http://[::1]:9000/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ] {
        let mut body = rule();
        body["webhook"]["url"] = json!(url);
        let (status, error) = send(
            &app,
            reqwest::Method::POST,
            "/v1/alerts/rules",
            &app.token,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {error}");
        let detail = error["errors"][0].as_str().unwrap();
        assert!(
            detail.starts_with("webhook.url: ") && detail.contains("--webhook-allow-net"),
            "{url}: {detail}"
        );
    }
    let allowed = crate::support::spawn_configured(
        tempfile::tempdir().unwrap(),
        |engine| engine.with_webhook_allow("127.0.0.0/8,::1/128".parse().unwrap()),
        runledger::front::ConnectionLimits::default(),
    )
    .await;
    let mut body = rule();
    body["webhook"]["url"] = json!("http://localhost:9000/hook");
    let (status, created) = send(
        &allowed,
        reqwest::Method::POST,
        "/v1/alerts/rules",
        &allowed.token,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    body["webhook"]["url"] = json!("http://10.0.0.5/hook");
    let (status, _) = send(
        &allowed,
        reqwest::Method::POST,
        "/v1/alerts/rules",
        &allowed.token,
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only the allowed ranges");
}

#[tokio::test]
async fn rules_are_the_same_over_grpc() {
    use runledger::proto::{self, alerts_client::AlertsClient};
    let app = spawn_app().await;
    let mut alerts = AlertsClient::with_interceptor(
        app.channel().await,
        crate::support::Bearer::new(&app.token),
    );
    let params = |json: Value| runledger::api::wire::json_to_struct(&json);
    let request = proto::CreateRuleRequest {
        name: "etl late".into(),
        pipeline_uuid: "53206efd-1377-5d41-9b92-af79d5a4239e".into(),
        kind: "failure_rate".into(),
        params: Some(params(
            json!({"window": "24h", "above": 0.25, "min_runs": 4}),
        )),
        webhook: Some(proto::Webhook {
            url: "https://203.0.113.7/hook".into(),
            secret: "0123456789abcdef".into(),
            format: "alertmanager".into(),
        }),
    };
    let created = alerts
        .create_rule(request.clone())
        .await
        .unwrap()
        .into_inner();
    let listed = alerts
        .list_rules(proto::ListRulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].rule_uuid, created.rule_uuid);
    assert_eq!(listed[0].webhook_format, "alertmanager");
    assert_eq!(
        runledger::api::wire::struct_to_json(listed[0].params.as_ref().unwrap()),
        json!({"window": "24h", "above": 0.25, "min_runs": 4})
    );
    // REST shows the same rule.
    let (_, rest) = send(
        &app,
        reqwest::Method::GET,
        "/v1/alerts/rules",
        &app.token,
        None,
    )
    .await;
    assert_eq!(rest[0]["rule_uuid"], created.rule_uuid.as_str());
    assert_eq!(rest[0]["params"]["min_runs"], 4);
    let mut bad = request;
    bad.params = Some(params(json!({"window": "2h", "above": 0.25})));
    let refused = alerts.create_rule(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("params.window"),
        "{}",
        refused.message()
    );
    let delete = proto::DeleteRuleRequest {
        rule_uuid: created.rule_uuid,
    };
    alerts.delete_rule(delete.clone()).await.unwrap();
    assert_eq!(
        alerts.delete_rule(delete).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}
