//! The OpenAPI document describes what is served: every path answers as it says.

use reqwest::Method;
use runledger::proto;
use serde_json::{Value, json};

use super::*;

/// A small check of a JSON value against an OpenAPI 3.0 schema: types, required properties,
/// nullability, enums and array items, following `$ref`s (and `allOf`) into the document.
fn check_schema(document: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(all) = schema["allOf"].as_array() {
        if value.is_null() {
            assert_eq!(schema["nullable"], true, "{at} is null but not nullable");
            return;
        }
        for schema in all {
            check_schema(document, schema, value, at);
        }
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return check_schema(
            document,
            &document["components"]["schemas"][name],
            value,
            at,
        );
    }
    if value.is_null() {
        assert_eq!(schema["nullable"], true, "{at} is null but not nullable");
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            assert!(value.is_object(), "{at} is not an object: {value}");
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().unwrap();
                assert!(value.get(field).is_some(), "{at} lacks {field}");
            }
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(field) = value.get(name) {
                    check_schema(document, property, field, &format!("{at}.{name}"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for name in value.as_object().unwrap().keys() {
                    assert!(
                        properties.contains_key(name),
                        "{at}.{name} is not documented"
                    );
                }
            }
        }
        Some("array") => {
            for (index, item) in value
                .as_array()
                .unwrap_or_else(|| panic!("{at} is not an array"))
                .iter()
                .enumerate()
            {
                check_schema(document, &schema["items"], item, &format!("{at}[{index}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at} is not a string"),
        Some("integer") => assert!(value.is_u64() || value.is_i64(), "{at} is not an integer"),
        Some("number") => assert!(value.is_number(), "{at} is not a number"),
        Some("boolean") => assert!(value.is_boolean(), "{at} is not a boolean"),
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.contains(value),
            "{at} = {value} is not one of {allowed:?}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_what_is_served() {
    let app = seeded().await;
    let document = get_ok(&app, "/v1/openapi.json").await;
    assert_eq!(document["openapi"], "3.0.3");
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/api/v1/lineage",
            "/v1/alerts",
            "/v1/alerts/rules",
            "/v1/alerts/rules/{uuid}",
            "/v1/oauth/token",
            "/v1/openapi.json",
            "/v1/pipelines/{uuid}/runs/",
            "/v1/stats/pipelines",
            "/v1/stats/pipelines/{uuid}/logs/{from}/{to}",
            "/v1/stats/pipelines/{uuid}/running",
            "/v1/stats/{kind}/{uuid}/aggregated-stats/{date_from}/{period}/{n}",
            "/v1/stats/{kind}/{uuid}/last-run/stats",
            "/v1/stats/{kind}/{uuid}/stats/{from}/{to}",
            "/v1/workflows/{uuid}/runs/",
        ]
    );
    app.pipelines()
        .await
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: PIPELINE.into(),
            organization_uuid: String::new(),
            name: String::new(),
            tasks: vec![proto::TaskDefinition {
                task_uuid: TASK_A.into(),
                task_type: proto::TaskType::Query as i32,
                name: String::new(),
                is_initial: true,
            }],
        })
        .await
        .unwrap();
    let credentials = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        app.client.client_id, app.client.client_secret
    );
    let mut checked = 0;
    // The lineage and rule endpoints take a body or a rule, which `call` does not send: the
    // rules' answers are checked against their schemas below, the lineage statuses too.
    for (template, operations) in paths
        .iter()
        .filter(|(t, _)| *t != "/api/v1/lineage" && !t.starts_with("/v1/alerts/rules"))
    {
        for (method, operation) in operations.as_object().unwrap() {
            let kinds: &[&str] = if template.contains("{kind}") {
                &["tasks", "pipelines", "workflows"]
            } else {
                &["pipelines"]
            };
            for kind in kinds {
                let uuid = if *kind == "tasks" { TASK_A } else { PIPELINE };
                let mut path = template
                    .replace("{kind}", kind)
                    .replace("{uuid}", uuid)
                    .replace("{from}", "2024-01-01")
                    .replace("{to}", "2024-12-31%2023:59:59")
                    .replace("{date_from}", "2024-01-01")
                    .replace("{period}", "month")
                    .replace("{n}", "12");
                if path == "/v1/oauth/token" {
                    path = format!("{path}?{credentials}");
                }
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let (status, _, body) = call(&app, method.clone(), &path, Some(&app.token)).await;
                let response = &operation["responses"][status.as_str()];
                assert!(
                    response.is_object(),
                    "{method} {path} answered {status}, which is not documented"
                );
                assert!(status.is_success(), "{method} {path}: {status} {body}");
                check_schema(
                    &document,
                    &response["content"]["application/json"]["schema"],
                    &body,
                    &format!("{method} {path}"),
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 14, "{checked} operations checked");
    // Each operation lists only the statuses it can answer (reads are never queued or
    // throttled: no 429; GETs read no body: no 413).
    let statuses = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let read = ["200", "400", "401", "403", "404", "503"];
    for path in [
        "/v1/stats/pipelines/{uuid}/logs/{from}/{to}",
        "/v1/stats/{kind}/{uuid}/aggregated-stats/{date_from}/{period}/{n}",
        "/v1/stats/{kind}/{uuid}/last-run/stats",
        "/v1/stats/{kind}/{uuid}/stats/{from}/{to}",
        "/v1/stats/pipelines/{uuid}/running",
    ] {
        assert_eq!(statuses(path, "get"), read, "{path}");
    }
    let run = [
        "201", "400", "401", "403", "404", "409", "413", "429", "503",
    ];
    assert_eq!(statuses("/v1/pipelines/{uuid}/runs/", "post"), run);
    let token = ["200", "400", "401", "413", "429", "503"];
    assert_eq!(statuses("/v1/oauth/token", "get"), token);
    assert_eq!(statuses("/v1/openapi.json", "get"), ["200"]);
    assert_eq!(
        statuses("/api/v1/lineage", "post"),
        ["201", "400", "401", "403", "409", "413", "503"]
    );
    assert_eq!(
        statuses("/v1/stats/pipelines", "get"),
        ["200", "400", "401", "403", "503"]
    );
    // A rule created, listed, shown and deleted answers as documented.
    let rule = json!({"name": "etl", "pipeline_uuid": null, "kind": "failed", "params": {},
        "webhook": {"url": "https://203.0.113.7/hook", "secret": "0123456789abcdef"}});
    let created = reqwest::Client::new()
        .post(app.url("/v1/alerts/rules"))
        .bearer_auth(&app.token)
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let post = &paths["/v1/alerts/rules"]["post"]["responses"]["201"];
    check_schema(
        &document,
        &post["content"]["application/json"]["schema"],
        &created,
        "POST rules",
    );
    let uuid = created["rule_uuid"].as_str().unwrap();
    let (status, _, listed) = call(&app, Method::GET, "/v1/alerts/rules", Some(&app.token)).await;
    assert_eq!(status, 200);
    let get = &paths["/v1/alerts/rules"]["get"]["responses"]["200"];
    check_schema(
        &document,
        &get["content"]["application/json"]["schema"],
        &listed,
        "GET rules",
    );
    let (status, _, shown) = call(
        &app,
        Method::GET,
        &format!("/v1/alerts/rules/{uuid}"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, 200);
    let one = &paths["/v1/alerts/rules/{uuid}"]["get"]["responses"]["200"];
    check_schema(
        &document,
        &one["content"]["application/json"]["schema"],
        &shown,
        "GET rule",
    );
    let (status, _, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/alerts/rules/{uuid}"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, 204);
    assert!(paths["/v1/alerts/rules/{uuid}"]["delete"]["responses"]["204"].is_object());
    // Error bodies match the documented error schema too.
    let (status, _, error) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/tasks/{TASK_A}/stats/2024-02-30/2024-03-01"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, 400);
    check_schema(
        &document,
        &json!({"$ref": "#/components/schemas/Error"}),
        &error,
        "error",
    );
    app.stop().await;
}
