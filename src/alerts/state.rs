//! What the alert tables hold: an alert firing now ([`Firing`]), every alert with its state
//! ([`AlertRecord`]), and a transition waiting in the outbox ([`OutboxEntry`]), each with its
//! encoding; and the deterministic ids every node derives alike.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::webhook::{Change, Transition};

/// An alert firing now, as `alert_state` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firing {
    /// Its serial (its key in `alerts`).
    pub serial: u64,
    /// When it started firing, microseconds.
    pub since: i64,
}

impl Firing {
    pub fn encode(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.serial.to_le_bytes());
        bytes[8..].copy_from_slice(&self.since.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Firing> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        Some(Firing {
            serial: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            since: i64::from_le_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// The key of a firing alert: organization, rule and pipeline UUIDs.
pub fn state_key(org: Uuid, rule: Uuid, pipeline: Uuid) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(org.as_bytes());
    key[16..32].copy_from_slice(rule.as_bytes());
    key[32..].copy_from_slice(pipeline.as_bytes());
    key
}

/// The key of an alert: organization UUID, serial (big-endian, so newest last).
pub fn alert_key(org: Uuid, serial: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(org.as_bytes());
    key[16..].copy_from_slice(&serial.to_be_bytes());
    key
}

/// The serial of an alert key.
pub fn alert_serial(key: &[u8; 24]) -> u64 {
    u64::from_be_bytes(key[16..].try_into().expect("8 bytes"))
}

/// Whether an alert fires or was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert: a rule's condition true for one pipeline from `since` until `resolved_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_id: Uuid,
    pub rule: Uuid,
    pub rule_name: String,
    pub kind: String,
    pub pipeline: Uuid,
    pub pipeline_name: String,
    pub state: AlertState,
    /// Microseconds.
    pub since: i64,
    pub resolved_at: Option<i64>,
    /// The pipeline run that made it fire, if one did.
    pub pipeline_run: Option<Uuid>,
    /// What was observed when it fired.
    pub observed: serde_json::Value,
}

impl AlertRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an alert serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<AlertRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A deterministic alert id: every node applying the same writes derives the same one.
pub fn alert_id(rule: Uuid, pipeline: Uuid, serial: u64) -> Uuid {
    let mut name = Vec::with_capacity(24);
    name.extend_from_slice(pipeline.as_bytes());
    name.extend_from_slice(&serial.to_be_bytes());
    Uuid::new_v5(&rule, &name)
}

/// The Standard Webhooks message id of one transition of one alert: the same on every retry
/// and on every node.
pub fn webhook_id(alert: Uuid, change: Change) -> String {
    let id = Uuid::new_v5(&alert, change.event_type().as_bytes());
    format!("msg_{}", id.simple())
}

/// A transition waiting for delivery, with how far its delivery got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub org: Uuid,
    pub rule: Uuid,
    pub transition: Transition,
    /// `webhook-id`.
    pub webhook_id: String,
    /// When the transition happened (the first attempt's schedule starts here), microseconds.
    pub created_at: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// No attempt before this, microseconds.
    pub next_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl OutboxEntry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an outbox entry serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<OutboxEntry> {
        serde_json::from_slice(bytes).ok()
    }
}

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryEnd {
    /// Answered 2xx.
    Delivered,
    /// Answered 410: the rule's webhook is disabled.
    Gone,
    /// Answered another 4xx: this delivery stops.
    Refused,
    /// Still failing 3 days after the transition.
    Expired,
    /// Its rule was deleted or its webhook disabled before it was delivered.
    Dropped,
}

impl DeliveryEnd {
    pub const ALL: [DeliveryEnd; 5] = [
        DeliveryEnd::Delivered,
        DeliveryEnd::Gone,
        DeliveryEnd::Refused,
        DeliveryEnd::Expired,
        DeliveryEnd::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryEnd::Delivered => "delivered",
            DeliveryEnd::Gone => "gone",
            DeliveryEnd::Refused => "refused",
            DeliveryEnd::Expired => "expired",
            DeliveryEnd::Dropped => "dropped",
        }
    }

    pub fn tag(self) -> u8 {
        match self {
            DeliveryEnd::Delivered => 0,
            DeliveryEnd::Gone => 1,
            DeliveryEnd::Refused => 2,
            DeliveryEnd::Expired => 3,
            DeliveryEnd::Dropped => 4,
        }
    }

    pub fn from_tag(tag: u8) -> Option<DeliveryEnd> {
        DeliveryEnd::ALL.into_iter().find(|end| end.tag() == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let (rule, pipeline) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(alert_id(rule, pipeline, 7), alert_id(rule, pipeline, 7));
        assert_ne!(alert_id(rule, pipeline, 7), alert_id(rule, pipeline, 8));
        let alert = alert_id(rule, pipeline, 7);
        assert_eq!(
            webhook_id(alert, Change::Firing),
            webhook_id(alert, Change::Firing)
        );
        assert_ne!(
            webhook_id(alert, Change::Firing),
            webhook_id(alert, Change::Resolved)
        );
        assert!(webhook_id(alert, Change::Firing).starts_with("msg_"));
    }

    #[test]
    fn firing_round_trips() {
        let firing = Firing {
            serial: 42,
            since: -5,
        };
        assert_eq!(Firing::decode(&firing.encode()), Some(firing));
        assert_eq!(Firing::decode(&[0; 3]), None);
    }

    #[test]
    fn delivery_ends_round_trip_their_tags() {
        for end in DeliveryEnd::ALL {
            assert_eq!(DeliveryEnd::from_tag(end.tag()), Some(end));
        }
        assert_eq!(DeliveryEnd::from_tag(9), None);
    }
}
