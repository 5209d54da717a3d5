//! What a delivery sends: the body of an alert's transition in the rule's format (the
//! contract's JSON, a Slack incoming-webhook text, or Alertmanager's `POST /api/v2/alerts`
//! list) and its Standard Webhooks signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use super::Format;

/// Which way an alert went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    Firing,
    Resolved,
}

impl Change {
    pub fn event_type(self) -> &'static str {
        match self {
            Change::Firing => "alert.firing",
            Change::Resolved => "alert.resolved",
        }
    }
}

/// One transition of one alert, as delivered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    pub change: Change,
    /// When it happened, RFC 3339.
    pub timestamp: String,
    pub alert_id: String,
    pub rule_uuid: String,
    pub rule_name: String,
    pub kind: String,
    pub pipeline_uuid: String,
    pub pipeline_name: String,
    pub pipeline_run_uuid: Option<String>,
    /// What was observed (the failed runs, the rate, the duration and its percentile, ...).
    pub observed: Value,
    /// When the alert started firing, RFC 3339.
    pub since: String,
}

/// The request body for `format`.
pub fn body(format: Format, transition: &Transition) -> Vec<u8> {
    let value = match format {
        Format::Json => json!({
            "type": transition.change.event_type(),
            "timestamp": transition.timestamp,
            "data": {
                "alert_id": transition.alert_id,
                "rule_uuid": transition.rule_uuid,
                "rule_name": transition.rule_name,
                "kind": transition.kind,
                "pipeline_uuid": transition.pipeline_uuid,
                "pipeline_name": transition.pipeline_name,
                "pipeline_run_uuid": transition.pipeline_run_uuid,
                "observed": transition.observed,
                "since": transition.since,
            }
        }),
        Format::Slack => {
            let (mark, what) = match transition.change {
                Change::Firing => (":rotating_light:", "firing"),
                Change::Resolved => (":white_check_mark:", "resolved"),
            };
            let pipeline = if transition.pipeline_name.is_empty() {
                transition.pipeline_uuid.clone()
            } else {
                transition.pipeline_name.clone()
            };
            json!({"text": format!(
                "{mark} *{}* {what}: pipeline `{pipeline}` ({}) since {}",
                transition.rule_name, transition.kind, transition.since
            )})
        }
        Format::Alertmanager => {
            let mut alert = json!({
                "labels": {
                    "alertname": transition.rule_name,
                    "kind": transition.kind,
                    "pipeline": if transition.pipeline_name.is_empty() { &transition.pipeline_uuid } else { &transition.pipeline_name },
                    "pipeline_uuid": transition.pipeline_uuid,
                    "rule_uuid": transition.rule_uuid,
                    "source": "runledger",
                },
                "annotations": {
                    "summary": format!("{} ({})", transition.rule_name, transition.kind),
                    "observed": transition.observed.to_string(),
                    "alert_id": transition.alert_id,
                },
                "startsAt": transition.since,
            });
            if transition.change == Change::Resolved {
                alert["endsAt"] = json!(transition.timestamp);
            }
            json!([alert])
        }
    };
    serde_json::to_vec(&value).expect("JSON")
}

/// The `webhook-signature` header: `v1,` and the base64 HMAC-SHA256, under `key`, of
/// `id.timestamp.body` (Standard Webhooks).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Webhook;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The specification's example (also computed with Python's hmac module).
        let webhook = Webhook {
            url: "https://example.com/".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            format: Format::Json,
        };
        assert_eq!(
            signature(
                &webhook.signing_key(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    fn transition(change: Change) -> Transition {
        Transition {
            change,
            timestamp: "2025-03-02T02:00:00Z".into(),
            alert_id: "a1".into(),
            rule_uuid: "r1".into(),
            rule_name: "etl failing".into(),
            kind: "failed".into(),
            pipeline_uuid: "p1".into(),
            pipeline_name: "etl".into(),
            pipeline_run_uuid: Some("run1".into()),
            observed: json!({"consecutive_failures": 2}),
            since: "2025-03-01T02:00:00Z".into(),
        }
    }

    #[test]
    fn every_format_says_what_changed() {
        let json: Value =
            serde_json::from_slice(&body(Format::Json, &transition(Change::Firing))).unwrap();
        assert_eq!(json["type"], "alert.firing");
        assert_eq!(json["data"]["pipeline_run_uuid"], "run1");
        assert_eq!(json["data"]["observed"]["consecutive_failures"], 2);
        let slack: Value =
            serde_json::from_slice(&body(Format::Slack, &transition(Change::Resolved))).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("etl failing") && text.contains("resolved") && text.contains("`etl`"),
            "{text}"
        );
        let firing: Value =
            serde_json::from_slice(&body(Format::Alertmanager, &transition(Change::Firing)))
                .unwrap();
        assert_eq!(firing[0]["labels"]["alertname"], "etl failing");
        assert_eq!(firing[0]["startsAt"], "2025-03-01T02:00:00Z");
        assert!(firing[0].get("endsAt").is_none());
        let resolved: Value =
            serde_json::from_slice(&body(Format::Alertmanager, &transition(Change::Resolved)))
                .unwrap();
        assert_eq!(resolved[0]["endsAt"], "2025-03-02T02:00:00Z");
    }
}
