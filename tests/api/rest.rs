//! The REST gateway end to end.

use crate::helpers::{ChildServer, spawn_app};

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("http://{}/v1/nowhere", app.http_addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 404);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("no route for GET /v1/nowhere")
    );
    let health = reqwest::get(format!("http://{}/healthz", app.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[test]
fn a_child_server_answers_on_the_printed_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        reqwest::get(format!("http://{}/healthz", server.http_addr))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    server.kill();
}
