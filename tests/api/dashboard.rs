//! The dashboard in a real browser: Debian's Chromium, headless, against a real server on the
//! demo data. It signs in with a token, renders the overview and a pipeline page, and the DOM
//! must hold the figures the REST API gives for the same questions. Screenshots are written to
//! `target/screenshots/` (and to `tests/screenshots/`, which the README shows, with
//! `RUNLEDGER_UPDATE_SCREENSHOTS=1`). `.ci/run` installs Chromium; without it this test fails in
//! CI and skips with a printed reason elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::browser::{Browser, HEADLESS};
use crate::support::{Bearer, ChildServer, finished, grpc_channel, rest_token, run_cli, runtime};
use runledger::proto;

fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RUNLEDGER_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is missing: .ci/run installs Debian's chromium package"
    );
    eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    None
}

/// Runs headless Chromium on `url` at `width`x`height` with `what` (`--dump-dom` or
/// `--screenshot=FILE`); its standard output.
fn browse(browser: &Path, profile: &Path, url: &str, size: (u32, u32), what: &str) -> String {
    let output = Command::new(browser)
        .args(HEADLESS)
        .args(["--hide-scrollbars", "--virtual-time-budget=15000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(what)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element carrying `data-field="FIELD"` after the first `anchor`.
fn field(dom: &str, anchor: &str, name: &str) -> String {
    let start = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} is not in the page"));
    let marker = format!("data-field=\"{name}\"");
    let at = start
        + dom[start..]
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} after {anchor}"));
    let open = at + dom[at..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    dom[open..close].to_string()
}

#[test]
fn the_dashboard_shows_what_the_api_answers() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, out) = run_cli(&["demo", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{out}");
    let credentials: serde_json::Value = out
        .lines()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .unwrap();
    let server = ChildServer::start(&data);
    let base = format!("http://{}", server.http_addr);
    let http = reqwest::Client::new();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = |name: &str| dir.path().join(format!("profile-{name}"));

    runtime().block_on(async {
        let token = rest_token(&http, server.http_addr, &credentials, Some("stats:read")).await;
        let get = |path: String| {
            let request = http.get(format!("{base}{path}")).bearer_auth(&token).send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), 200);
                response.json::<serde_json::Value>().await.unwrap()
            }
        };

        // The overview: every pipeline of the organization, with its windows' run counts.
        let before = get("/v1/stats/pipelines".into()).await;
        let url = format!("{base}/ui#token={token}");
        let dom = browse(&browser, &profile("o"), &url, (1280, 800), "--dump-dom");
        let after = get("/v1/stats/pipelines".into()).await;
        assert!(
            dom.contains("data-ready=\"overview\""),
            "the page did not finish: {dom}"
        );
        let pipelines = before.as_array().unwrap();
        assert_eq!(pipelines.len(), 3);
        for (index, pipeline) in pipelines.iter().enumerate() {
            let uuid = pipeline["pipeline_uuid"].as_str().unwrap();
            let anchor = format!("data-pipeline=\"{uuid}\"");
            assert!(dom.contains(pipeline["name"].as_str().unwrap()));
            for window in ["24h", "7d", "30d"] {
                let shown: u64 = field(&dom, &anchor, &format!("runs-{window}"))
                    .parse()
                    .unwrap();
                // The windows end at each request's second: the page asked between the two.
                let runs = |answer: &serde_json::Value| {
                    let w = &answer[index][format!("last_{window}")];
                    w["num_of_successes"].as_u64().unwrap() + w["num_of_failures"].as_u64().unwrap()
                };
                assert!(
                    shown == runs(&before) || shown == runs(&after),
                    "{uuid} {window}: the page shows {shown}, the API {} / {}",
                    runs(&before),
                    runs(&after)
                );
            }
        }
        browse(
            &browser,
            &profile("o1"),
            &url,
            (1280, 800),
            &format!("--screenshot={}", shots.join("overview.png").display()),
        );
        browse(
            &browser,
            &profile("o2"),
            &url,
            (390, 844),
            &format!(
                "--screenshot={}",
                shots.join("overview-phone.png").display()
            ),
        );

        phone_overview_fits(&browser, &profile("phone"), &url);

        // A pipeline page over fixed dates: its cards and task table are the range stats.
        let pipeline = pipelines[1]["pipeline_uuid"].as_str().unwrap();
        let today = chrono::Utc::now().date_naive();
        let (from, to) = (today - chrono::Days::new(90), today - chrono::Days::new(1));
        let stats = get(format!("/v1/stats/pipelines/{pipeline}/stats/{from}/{to}")).await;
        // One of its tasks reported running (over gRPC, by an executor): the page lists it.
        let newest = get(format!(
            "/v1/stats/pipelines/{pipeline}/logs/{from}/{to}?limit=1"
        ))
        .await;
        let task = newest[0]["task_uuid"].as_str().unwrap();
        let running_run = "5eed0000-0000-4000-8000-0000000000aa";
        let mut report = finished(
            running_run,
            "5eed0000-0000-4000-8000-0000000000bb",
            pipeline,
            task,
            false,
            0,
            "2024-01-01T00:00:00Z",
        );
        report.state = proto::TaskRunState::Running as i32;
        report.executed_at = None;
        report.organization_uuid = String::new();
        report.output = Vec::new();
        // A rule on it, and a failed run (the newest) that fires it: the page shows the alert.
        let admin = rest_token(&http, server.http_addr, &credentials, Some("alerts:write")).await;
        let created = http
            .post(format!("{base}/v1/alerts/rules"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({
                "name": "dashboard alert", "pipeline_uuid": pipeline, "kind": "failed",
                "webhook": {"url": "https://hooks.example.com/runledger", "secret": "a-secret-of-sixteen-bytes"},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let mut failed = finished(
            "5eed0000-0000-4000-8000-0000000000cc",
            "5eed0000-0000-4000-8000-0000000000dd",
            pipeline,
            task,
            false,
            5,
            &chrono::Utc::now().to_rfc3339(),
        );
        failed.organization_uuid = String::new();
        let writer = rest_token(&http, server.http_addr, &credentials, Some("runs:write")).await;
        proto::ingest_client::IngestClient::with_interceptor(
            grpc_channel(server.grpc_addr).await,
            Bearer::new(&writer),
        )
        .report_task_runs(tokio_stream::iter([proto::ReportTaskRunsRequest {
            results: vec![report, failed],
        }]))
        .await
        .unwrap();
        let alerts = get(format!("/v1/alerts?pipeline_uuid={pipeline}")).await;
        let alert = alerts[0]["alert_id"].as_str().unwrap().to_string();
        let url =
            format!("{base}/ui#/pipeline/{pipeline}?period=week&from={from}&to={to}&token={token}");
        let dom = browse(&browser, &profile("p"), &url, (1280, 800), "--dump-dom");
        assert!(
            dom.contains("data-ready=\"pipeline\""),
            "the page did not finish: {dom}"
        );
        assert_eq!(
            field(&dom, "id=\"summary\"", "successes"),
            stats["num_of_successes"].to_string()
        );
        assert_eq!(
            field(&dom, "id=\"summary\"", "failures"),
            stats["num_of_failures"].to_string()
        );
        let logs = get(format!(
            "/v1/stats/pipelines/{pipeline}/logs/{from}/{to}?limit=1000"
        ))
        .await;
        let mut tasks: Vec<&str> = logs
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["task_uuid"].as_str().unwrap())
            .collect();
        tasks.sort();
        tasks.dedup();
        assert!(!tasks.is_empty());
        for task in tasks {
            let task_stats = get(format!("/v1/stats/tasks/{task}/stats/{from}/{to}")).await;
            let anchor = format!("data-task=\"{task}\"");
            assert_eq!(
                field(&dom, &anchor, "successes"),
                task_stats["num_of_successes"].to_string()
            );
            assert_eq!(
                field(&dom, &anchor, "failures"),
                task_stats["num_of_failures"].to_string()
            );
        }
        assert!(dom.contains("<canvas id=\"buckets\""));
        assert!(dom.contains("data-task-run="), "the newest runs are listed");
        assert!(
            dom.contains(&format!("data-running=\"{running_run}\"")),
            "the running task run is listed"
        );
        assert!(
            dom.contains(&format!("data-alert=\"{alert}\"")),
            "the pipeline's alert is listed"
        );
        clicks(&browser, &profile("cdp"), &url, &get, pipeline).await;
        browse(
            &browser,
            &profile("p1"),
            &url,
            (1280, 1400),
            &format!("--screenshot={}", shots.join("pipeline.png").display()),
        );
        browse(
            &browser,
            &profile("p2"),
            &url,
            (390, 1600),
            &format!(
                "--screenshot={}",
                shots.join("pipeline-phone.png").display()
            ),
        );
    });
    for name in [
        "overview.png",
        "overview-phone.png",
        "pipeline.png",
        "pipeline-phone.png",
    ] {
        let shot = shots.join(name);
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{name} is nearly empty"
        );
        if std::env::var_os("RUNLEDGER_UPDATE_SCREENSHOTS").is_some() {
            let kept = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots");
            std::fs::create_dir_all(&kept).unwrap();
            std::fs::copy(&shot, kept.join(name)).unwrap();
        }
    }
}

/// At a phone's width the overview's rows are cards: every figure of every pipeline is inside
/// the window (nothing to scroll sideways for), each under its label.
fn phone_overview_fits(browser: &Path, profile: &Path, url: &str) {
    let mut page = Browser::start(browser, profile, (390, 844));
    page.navigate(url);
    page.wait_for("document.body.dataset.ready === 'overview'");
    let outside = page.eval(
        "[...document.querySelectorAll('#pipelines td')]
           .filter(cell => { const box = cell.getBoundingClientRect();
                             return box.width === 0 || box.left < 0 || box.right > window.innerWidth; })
           .map(cell => cell.dataset.field || cell.className)",
    );
    assert_eq!(
        outside,
        serde_json::json!([]),
        "cells outside a 390 px window"
    );
    let labels = page.eval(
        "[...document.querySelectorAll('#pipelines tr:first-child td[data-field]')]
           .map(cell => getComputedStyle(cell, '::before').content)",
    );
    let labels: Vec<String> = serde_json::from_value(labels).unwrap();
    assert_eq!(labels.len(), 8, "{labels:?}");
    assert!(labels.contains(&"\"Runs 24 h\"".to_string()), "{labels:?}");
    assert_eq!(
        page.eval("document.documentElement.scrollWidth <= window.innerWidth"),
        serde_json::json!(true)
    );
}

/// On a pipeline page (weekly buckets): clicking a bar lists that week's runs, newest first, as
/// the logs API pages them; "More runs" appends the next page.
async fn clicks<F, Fut>(browser: &Path, profile: &Path, url: &str, get: &F, pipeline: &str)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    let mut page = Browser::start(browser, profile, (1280, 800));
    page.navigate(url);
    page.wait_for("document.body.dataset.ready === 'pipeline'");
    let week = page.eval(
        "(() => { const chart = Chart.getChart('buckets'); const k = chart.data.labels.length - 2;
           const bar = chart.getDatasetMeta(0).data[k]; const box = chart.canvas.getBoundingClientRect();
           chart.canvas.dispatchEvent(new MouseEvent('click', { clientX: box.left + bar.x, clientY: box.top + bar.y + 1, bubbles: true }));
           return chart.data.labels[k]; })()",
    );
    let week = week.as_str().unwrap().to_string();
    page.wait_for(&format!(
        "document.getElementById('logs-title').textContent === 'Runs of {week}' && document.querySelectorAll('#logs tr[data-task-run]').length > 0"
    ));
    let monday = chrono::NaiveDate::parse_from_str(&week, "%Y-%m-%d").unwrap();
    let sunday = monday + chrono::Days::new(6);
    let path = format!(
        "/v1/stats/pipelines/{pipeline}/logs/{monday}T00:00:00/{sunday}T23:59:59?limit=100"
    );
    let expected: Vec<String> = get(path)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["task_run_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        expected.len(),
        100,
        "the week has more than two pages of runs"
    );
    let shown = |page: &mut Browser| -> Vec<String> {
        serde_json::from_value(page.eval(
            "[...document.querySelectorAll('#logs tr[data-task-run]')].map(row => row.dataset.taskRun)",
        ))
        .unwrap()
    };
    assert_eq!(shown(&mut page), expected[..50]);

    // "More runs": the next page, by the cursor the first one gave.
    page.eval("document.querySelector('button.more:not([hidden])').click()");
    page.wait_for("document.querySelectorAll('#logs tr[data-task-run]').length > 50");
    assert_eq!(shown(&mut page), expected);
}
