//! A webhook receiver for the alert tests: a local server answering from a script, telling
//! each request it got, and an independent check of their signatures (Python's `hmac`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The signing secret the tests' rules use.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// Answers only after the server's timeout.
    Hang,
    TooMany {
        retry_after: u64,
    },
    Redirect(String),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

/// A receiver on a free loopback port answering from `script` (then 200), telling each
/// request it received.
pub async fn receiver(script: Vec<Reply>) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tell, received) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
        let (tell, script) = (tell.clone(), script.clone());
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let _ = tell.send(Received {
                at: Instant::now(),
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                body: body.to_vec(),
            });
            let reply = script.lock().unwrap().next();
            match reply.unwrap_or(Reply::Status(200)) {
                Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
                Reply::Hang => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK.into_response()
                }
                Reply::TooMany { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", retry_after.to_string())],
                )
                    .into_response(),
                Reply::Redirect(location) => {
                    (StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response()
                }
            }
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Checks every request's Standard Webhooks signature with Python's `hmac`, independently of
/// the server's code.
pub fn python_verifies(requests: &[Received]) {
    use base64::Engine as _;
    let cases: Vec<Value> = requests
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "timestamp": r.timestamp, "signature": r.signature,
                "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
            })
        })
        .collect();
    let script = r#"
import base64, hashlib, hmac, json, sys
secret = base64.b64decode(sys.argv[1].split("_", 1)[1])
ok = 0
for case in json.load(sys.stdin):
    body = base64.b64decode(case["body"])
    signed = (case["id"] + "." + case["timestamp"] + ".").encode() + body
    expected = "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(expected, case["signature"]), case
    ok += 1
print(ok)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "a signature did not verify");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        requests.len().to_string()
    );
}

/// Creates an alert rule over REST on the server at `http_addr`: its UUID.
pub async fn create_rule(
    http: &reqwest::Client,
    http_addr: std::net::SocketAddr,
    token: &str,
    rule: &Value,
) -> String {
    let response = http
        .post(format!("http://{http_addr}/v1/alerts/rules"))
        .bearer_auth(token)
        .json(rule)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["rule_uuid"].as_str().unwrap().to_string()
}

/// A `failed` rule (one failed pipeline run) on `pipeline`, delivered to `url`.
pub fn failed_rule(pipeline: &str, url: &str) -> Value {
    json!({
        "name": "nightly ETL failing",
        "pipeline_uuid": pipeline,
        "kind": "failed",
        "params": {"consecutive": 1},
        "webhook": {"url": url, "secret": SECRET},
    })
}
