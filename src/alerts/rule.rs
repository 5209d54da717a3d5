//! An alert rule as users write it (`POST /v1/alerts/rules`), checked field by field: its kind
//! and parameters, the pipeline it covers (or every pipeline of the organization), and the
//! webhook its transitions go to.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::quote;
use crate::model::check_name;

/// The most rules one organization may hold.
pub const MAX_RULES_PER_ORG: usize = 1_000;

/// A span of time written `90s`, `30m`, `2h` or `7d`: its seconds, and its text as written
/// (shown back as given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub seconds: i64,
    pub text: String,
}

impl Span {
    /// Reads `text`, which must lie within `min..=max` seconds.
    pub fn parse(text: &str, min: i64, max: i64) -> Result<Span, String> {
        let bad = || {
            format!(
                "{} is not a span of time (a whole number and s, m, h or d: 90m, 2h, 7d)",
                quote(text)
            )
        };
        let split = text.len().checked_sub(1).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: i64 = number.parse().map_err(|_| bad())?;
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let seconds = number.checked_mul(unit).ok_or_else(bad)?;
        if seconds < min || seconds > max {
            return Err(format!(
                "{} is out of range ({} to {})",
                quote(text),
                show(min),
                show(max)
            ));
        }
        Ok(Span {
            seconds,
            text: text.to_string(),
        })
    }
}

fn show(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// When a `missing` rule expects a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// At least one finished run in every span of this length.
    Every(Span),
    /// One by each time of a cron pattern (UTC), plus a grace.
    Cron { pattern: String, grace: Span },
}

/// What a rule watches, with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RuleKind {
    /// The last `consecutive` pipeline runs failed.
    Failed { consecutive: u32 },
    /// More than `above` of the runs in the window failed, with at least `min_runs` runs.
    FailureRate {
        window: Span,
        above: f64,
        min_runs: u32,
    },
    /// A pipeline run took more than `factor` times the window's `percentile` before it.
    Slow {
        factor: f64,
        percentile: u8,
        window: Span,
    },
    /// No finished run in time.
    Missing(Schedule),
    /// A run started and did not finish within `running_for`.
    Stuck { running_for: Span },
}

impl RuleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::Failed { .. } => "failed",
            RuleKind::FailureRate { .. } => "failure_rate",
            RuleKind::Slow { .. } => "slow",
            RuleKind::Missing(_) => "missing",
            RuleKind::Stuck { .. } => "stuck",
        }
    }

    /// The parameters as the API shows them.
    pub fn params(&self) -> Value {
        use serde_json::json;
        match self {
            RuleKind::Failed { consecutive } => json!({"consecutive": consecutive}),
            RuleKind::FailureRate {
                window,
                above,
                min_runs,
            } => json!({"window": window.text, "above": above, "min_runs": min_runs}),
            RuleKind::Slow {
                factor,
                percentile,
                window,
            } => json!({"factor": factor, "percentile": percentile, "window": window.text}),
            RuleKind::Missing(Schedule::Every(every)) => json!({"every": every.text}),
            RuleKind::Missing(Schedule::Cron { pattern, grace }) => {
                json!({"cron": pattern, "grace": grace.text})
            }
            RuleKind::Stuck { running_for } => json!({"running_for": running_for.text}),
        }
    }
}

/// How a webhook's body is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// The contract's JSON (`{"type","timestamp","data"}`).
    Json,
    /// A Slack incoming webhook's `{"text"}`.
    Slack,
    /// Alertmanager's `POST /api/v2/alerts` (labels and annotations).
    Alertmanager,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Alertmanager => "alertmanager",
        }
    }
}

/// Where a rule's transitions are delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    /// The signing secret as given (a `whsec_` secret is base64 after its prefix).
    pub secret: String,
    pub format: Format,
}

impl Webhook {
    /// The HMAC key: the base64 after `whsec_` (as Standard Webhooks libraries read it), else
    /// the secret's bytes.
    pub fn signing_key(&self) -> Vec<u8> {
        use base64::Engine as _;
        self.secret
            .strip_prefix("whsec_")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .unwrap_or_else(|| self.secret.as_bytes().to_vec())
    }
}

/// A rule, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// `None`: every pipeline of the organization.
    pub pipeline: Option<Uuid>,
    pub kind: RuleKind,
    pub webhook: Webhook,
}

/// Why a rule was refused: the field and what is wrong with it.
pub type Refusal = (String, String);

fn refuse(field: &str, reason: impl Into<String>) -> Refusal {
    (field.to_string(), reason.into())
}

fn number(params: &Value, name: &str, default: Option<f64>) -> Result<f64, Refusal> {
    let field = format!("params.{name}");
    match params.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| refuse(&field, "is required")),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| refuse(&field, "must be a finite number")),
        Some(_) => Err(refuse(&field, "must be a number")),
    }
}

fn whole(params: &Value, name: &str, default: u32, max: u32) -> Result<u32, Refusal> {
    let field = format!("params.{name}");
    match params.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| (1..=u64::from(max)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| refuse(&field, format!("must be a whole number from 1 to {max}"))),
        Some(_) => Err(refuse(&field, "must be a number")),
    }
}

fn span(
    params: &Value,
    name: &str,
    default: Option<&str>,
    min: i64,
    max: i64,
) -> Result<Span, Refusal> {
    let field = format!("params.{name}");
    let text = match params.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| refuse(&field, "is required"))?,
        Some(Value::String(text)) => text.as_str(),
        Some(_) => return Err(refuse(&field, "must be a string such as 2h")),
    };
    Span::parse(text, min, max).map_err(|reason| refuse(&field, reason))
}

const MINUTE: i64 = 60;
const DAY: i64 = 86_400;

impl Rule {
    /// Reads and checks a rule as `POST /v1/alerts/rules` sends it.
    pub fn parse(body: &Value) -> Result<Rule, Refusal> {
        let Value::Object(_) = body else {
            return Err(refuse("body", "must be a JSON object"));
        };
        let name = match body.get("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            None | Some(Value::Null) => return Err(refuse("name", "is required")),
            Some(Value::String(_)) => return Err(refuse("name", "must not be empty")),
            Some(_) => return Err(refuse("name", "must be a string")),
        };
        check_name(&name).map_err(|reason| refuse("name", reason))?;
        let pipeline =
            match body.get("pipeline_uuid") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(Uuid::parse_str(text).map_err(|_| {
                    refuse("pipeline_uuid", format!("{} is not a UUID", quote(text)))
                })?),
                Some(_) => return Err(refuse("pipeline_uuid", "must be a UUID string or null")),
            };
        let empty = Value::Object(serde_json::Map::new());
        let params = match body.get("params") {
            None | Some(Value::Null) => &empty,
            Some(params @ Value::Object(_)) => params,
            Some(_) => return Err(refuse("params", "must be an object")),
        };
        let kind = match body.get("kind").and_then(Value::as_str) {
            Some("failed") => RuleKind::Failed {
                consecutive: whole(params, "consecutive", 1, 1_000)?,
            },
            Some("failure_rate") => {
                let window = match params.get("window") {
                    None | Some(Value::Null) => return Err(refuse("params.window", "is required")),
                    Some(Value::String(w)) if ["1h", "24h", "7d"].contains(&w.as_str()) => {
                        span(params, "window", None, 0, 7 * DAY)?
                    }
                    Some(_) => return Err(refuse("params.window", "must be one of 1h, 24h, 7d")),
                };
                let above = number(params, "above", None)?;
                if !(0.0..1.0).contains(&above) {
                    return Err(refuse("params.above", "must be at least 0 and below 1"));
                }
                RuleKind::FailureRate {
                    window,
                    above,
                    min_runs: whole(params, "min_runs", 1, 1_000_000)?,
                }
            }
            Some("slow") => {
                let factor = number(params, "factor", None)?;
                if !(1.0..=1_000.0).contains(&factor) {
                    return Err(refuse("params.factor", "must be from 1 to 1000"));
                }
                let percentile = number(params, "percentile", Some(95.0))?;
                if ![50.0, 90.0, 95.0, 99.0].contains(&percentile) {
                    return Err(refuse("params.percentile", "must be one of 50, 90, 95, 99"));
                }
                RuleKind::Slow {
                    factor,
                    percentile: percentile as u8,
                    window: span(params, "window", Some("7d"), MINUTE, 90 * DAY)?,
                }
            }
            Some("missing") => match (params.get("every"), params.get("cron")) {
                (Some(_), Some(_)) => {
                    return Err(refuse("params", "give either every or cron, not both"));
                }
                (Some(_), None) => RuleKind::Missing(Schedule::Every(span(
                    params,
                    "every",
                    None,
                    MINUTE,
                    90 * DAY,
                )?)),
                (None, Some(Value::String(pattern))) => {
                    croner::Cron::from_str(pattern).map_err(|e| {
                        refuse(
                            "params.cron",
                            format!("{} is not a cron pattern: {e}", quote(pattern)),
                        )
                    })?;
                    RuleKind::Missing(Schedule::Cron {
                        pattern: pattern.clone(),
                        grace: span(params, "grace", Some("0m"), 0, 7 * DAY)?,
                    })
                }
                (None, Some(_)) => return Err(refuse("params.cron", "must be a string")),
                (None, None) => return Err(refuse("params", "needs every or cron")),
            },
            Some("stuck") => RuleKind::Stuck {
                running_for: span(params, "running_for", None, MINUTE, 90 * DAY)?,
            },
            Some(other) => {
                return Err(refuse(
                    "kind",
                    format!(
                        "{} is not a rule kind (one of failed, failure_rate, slow, missing, stuck)",
                        quote(other)
                    ),
                ));
            }
            None => return Err(refuse("kind", "is required")),
        };
        let webhook = match body.get("webhook") {
            Some(webhook @ Value::Object(_)) => webhook,
            None | Some(Value::Null) => return Err(refuse("webhook", "is required")),
            Some(_) => return Err(refuse("webhook", "must be an object")),
        };
        let url = match webhook.get("url") {
            Some(Value::String(url)) => url.clone(),
            None | Some(Value::Null) => return Err(refuse("webhook.url", "is required")),
            Some(_) => return Err(refuse("webhook.url", "must be a string")),
        };
        check_url(&url).map_err(|reason| refuse("webhook.url", reason))?;
        let secret = match webhook.get("secret") {
            Some(Value::String(secret)) => secret.clone(),
            None | Some(Value::Null) => return Err(refuse("webhook.secret", "is required")),
            Some(_) => return Err(refuse("webhook.secret", "must be a string")),
        };
        if !(16..=256).contains(&secret.len()) {
            return Err(refuse("webhook.secret", "must be 16 to 256 bytes long"));
        }
        if let Some(b64) = secret.strip_prefix("whsec_") {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_err()
            {
                return Err(refuse(
                    "webhook.secret",
                    "a whsec_ secret must be base64 after its prefix",
                ));
            }
        }
        let format = match webhook
            .get("format")
            .and_then(|f| f.as_str().map(str::to_string))
        {
            None => match webhook.get("format") {
                None | Some(Value::Null) => Format::Json,
                Some(_) => return Err(refuse("webhook.format", "must be a string")),
            },
            Some(text) => match text.as_str() {
                "json" => Format::Json,
                "slack" => Format::Slack,
                "alertmanager" => Format::Alertmanager,
                _ => {
                    return Err(refuse(
                        "webhook.format",
                        format!(
                            "{} is not a format (one of json, slack, alertmanager)",
                            quote(&text)
                        ),
                    ));
                }
            },
        };
        Ok(Rule {
            name,
            pipeline,
            kind,
            webhook: Webhook {
                url,
                secret,
                format,
            },
        })
    }
}

/// A rule as stored: its webhook secret sealed under the organization's output key (standard
/// base64), and when it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRule {
    pub rule: Rule,
    pub created_at: i64,
    /// When a delivery was answered 410 Gone: nothing is sent to the webhook since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
}

impl StoredRule {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a rule serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<StoredRule> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The key of a rule: organization UUID, rule UUID.
pub fn rule_key(org: Uuid, rule: Uuid) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(org.as_bytes());
    key[16..].copy_from_slice(rule.as_bytes());
    key
}

/// An `http` or `https` URL with a host, at most 2,048 bytes.
fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2_048 {
        return Err("is longer than 2048 bytes".into());
    }
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| format!("{} is not a URL", quote(url)))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{} is not an http or https URL", quote(url))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{} names no host", quote(url)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(kind: &str, params: Value) -> Value {
        json!({
            "name": "etl failing",
            "pipeline_uuid": "53206efd-1377-5d41-9b92-af79d5a4239e",
            "kind": kind,
            "params": params,
            "webhook": {"url": "https://hooks.example.com/runledger", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        })
    }

    #[test]
    fn every_kind_reads_with_its_defaults() {
        let failed = Rule::parse(&rule("failed", json!({}))).unwrap();
        assert_eq!(failed.kind, RuleKind::Failed { consecutive: 1 });
        let rate = Rule::parse(&rule(
            "failure_rate",
            json!({"window": "24h", "above": 0.2}),
        ))
        .unwrap();
        assert_eq!(
            rate.kind,
            RuleKind::FailureRate {
                window: Span {
                    seconds: 86_400,
                    text: "24h".into()
                },
                above: 0.2,
                min_runs: 1
            }
        );
        let slow = Rule::parse(&rule("slow", json!({"factor": 2}))).unwrap();
        assert_eq!(
            slow.kind,
            RuleKind::Slow {
                factor: 2.0,
                percentile: 95,
                window: Span {
                    seconds: 7 * 86_400,
                    text: "7d".into()
                }
            }
        );
        let cron = Rule::parse(&rule(
            "missing",
            json!({"cron": "0 2 * * *", "grace": "30m"}),
        ))
        .unwrap();
        assert_eq!(
            cron.kind.params(),
            json!({"cron": "0 2 * * *", "grace": "30m"})
        );
        let every = Rule::parse(&rule("missing", json!({"every": "90m"}))).unwrap();
        assert_eq!(
            every.kind,
            RuleKind::Missing(Schedule::Every(Span {
                seconds: 5_400,
                text: "90m".into()
            }))
        );
        let stuck = Rule::parse(&rule("stuck", json!({"running_for": "2h"}))).unwrap();
        assert_eq!(stuck.kind.params(), json!({"running_for": "2h"}));
        let stored = StoredRule {
            rule: stuck,
            created_at: 5,
            disabled_at: None,
        };
        assert_eq!(StoredRule::decode(&stored.encode()), Some(stored));
        let mut all = rule("failed", json!({"consecutive": 3}));
        all["pipeline_uuid"] = Value::Null;
        assert_eq!(Rule::parse(&all).unwrap().pipeline, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "body"),
            (json!({"kind": "failed"}), "name"),
            (rule("broken", json!({})), "kind"),
            (
                rule("failed", json!({"consecutive": 0})),
                "params.consecutive",
            ),
            (
                rule("failure_rate", json!({"window": "2h", "above": 0.1})),
                "params.window",
            ),
            (
                rule("failure_rate", json!({"window": "1h", "above": 1.5})),
                "params.above",
            ),
            (
                rule("failure_rate", json!({"window": "1h"})),
                "params.above",
            ),
            (
                rule("slow", json!({"factor": 2, "percentile": 80})),
                "params.percentile",
            ),
            (rule("slow", json!({})), "params.factor"),
            (rule("missing", json!({"every": "90x"})), "params.every"),
            (
                rule("missing", json!({"cron": "61 * * * *"})),
                "params.cron",
            ),
            (rule("missing", json!({})), "params"),
            (
                rule("missing", json!({"every": "1h", "cron": "0 * * * *"})),
                "params",
            ),
            (
                rule("stuck", json!({"running_for": "10s"})),
                "params.running_for",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(Rule::parse(&body).unwrap_err().0, field, "{body}");
        }
        let mut bad = rule("failed", json!({}));
        bad["pipeline_uuid"] = json!("pipeline-1");
        assert_eq!(Rule::parse(&bad).unwrap_err().0, "pipeline_uuid");
        for (webhook, field) in [
            (json!(null), "webhook"),
            (json!({"secret": "0123456789abcdef"}), "webhook.url"),
            (
                json!({"url": "ftp://x/y", "secret": "0123456789abcdef"}),
                "webhook.url",
            ),
            (
                json!({"url": "https://x/y", "secret": "short"}),
                "webhook.secret",
            ),
            (
                json!({"url": "https://x/y", "secret": "whsec_!!!!!!!!!!!!!!!!"}),
                "webhook.secret",
            ),
            (
                json!({"url": "https://x/y", "secret": "0123456789abcdef", "format": "teams"}),
                "webhook.format",
            ),
        ] {
            let mut body = rule("failed", json!({}));
            body["webhook"] = webhook.clone();
            assert_eq!(Rule::parse(&body).unwrap_err().0, field, "{webhook}");
        }
    }

    #[test]
    fn a_whsec_secret_signs_with_its_decoded_bytes() {
        let webhook = Webhook {
            url: "https://x/".into(),
            secret: "whsec_AAECAwQFBgcICQoLDA0ODw==".into(),
            format: Format::Json,
        };
        assert_eq!(webhook.signing_key(), (0u8..16).collect::<Vec<u8>>());
        let plain = Webhook {
            secret: "0123456789abcdef".into(),
            ..webhook
        };
        assert_eq!(plain.signing_key(), b"0123456789abcdef");
    }
}
