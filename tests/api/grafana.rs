//! The Grafana dashboard in `contrib/grafana/` against the demo data: every URL it asks (its
//! panels' and its pipeline variable's), with Grafana's variables filled in as Grafana would,
//! answers 200 to a client-credentials token of `stats:read` (what the Infinity data source
//! holds), and every column a panel selects is in the answer.

use serde_json::Value;

use crate::support::{ChildServer, rest_token, run_cli, runtime};

/// Every Infinity query of the dashboard: its URL and the column selectors it reads.
fn queries(value: &Value, found: &mut Vec<(String, Vec<String>)>) {
    match value {
        Value::Object(object) => {
            if let (Some(Value::String(url)), Some(Value::Array(columns))) =
                (object.get("url"), object.get("columns"))
            {
                let selectors = columns
                    .iter()
                    .map(|c| c["selector"].as_str().unwrap().to_string())
                    .collect();
                found.push((url.clone(), selectors));
            }
            object.values().for_each(|v| queries(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, found)),
        _ => {}
    }
}

fn select<'a>(row: &'a Value, selector: &str) -> Option<&'a Value> {
    selector
        .split('.')
        .try_fold(row, |value, key| value.as_object()?.get(key))
}

#[test]
fn every_url_of_the_grafana_dashboard_answers_the_columns_it_reads() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/runledger.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(found.len() >= 8, "{found:?}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, out) = run_cli(&["demo", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{out}");
    let credentials: Value = out
        .lines()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .unwrap();
    let server = ChildServer::start(&data);
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let token = rest_token(&http, server.http_addr, &credentials, Some("stats:read")).await;
        let get = |path: String| {
            let request = http
                .get(format!("http://{}{path}", server.http_addr))
                .bearer_auth(&token)
                .send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), 200, "{path}");
                response.json::<Value>().await.unwrap()
            }
        };
        let overview = get("/v1/stats/pipelines".into()).await;
        let pipeline = overview[0]["pipeline_uuid"].as_str().unwrap().to_string();
        // The dashboard's default range: the last 30 days, as Grafana formats its bounds.
        let today = chrono::Utc::now().date_naive();
        let from = (today - chrono::Days::new(30))
            .format("%Y-%m-%d")
            .to_string();
        for (url, selectors) in &found {
            let path = url
                .replace("${pipeline}", &pipeline)
                .replace("${__from:date:YYYY-MM-DD}", &from)
                .replace(
                    "${__to:date:YYYY-MM-DD}",
                    &today.format("%Y-%m-%d").to_string(),
                );
            assert!(!path.contains('$'), "a variable left in {path}");
            let answer = get(path.clone()).await;
            let rows = match &answer {
                Value::Array(rows) => rows.clone(),
                object => vec![object.clone()],
            };
            for selector in selectors {
                assert!(
                    rows.is_empty() || rows.iter().any(|row| select(row, selector).is_some()),
                    "{path} has no {selector}: {answer}"
                );
            }
            if !path.contains("/running") {
                assert!(!rows.is_empty(), "{path} answered nothing on the demo data");
            }
        }
    });
    assert!(server.stop());
}
