//! Alerts: rules on a pipeline's runs (`rule`, held in memory by `ruleset`), judged in the
//! write transaction (`judge`, read by `crate::store` after each operation and on clock ticks)
//! into alerts and outbox entries (`state`), delivered as signed webhooks (`webhook`, `post`)
//! to destinations that are not internal (`destination`) on a retry schedule behind a circuit
//! breaker (`retry`); the engine's courier does the delivering.

pub mod destination;
pub mod judge;
pub mod post;
pub mod retry;
pub mod rule;
pub mod ruleset;
pub mod state;
pub mod webhook;

pub use destination::AllowedNets;
pub use rule::{
    Format, MAX_RULES_PER_ORG, Rule, RuleKind, Schedule, Span, StoredRule, Webhook, rule_key,
};
pub use ruleset::{OrgRules, RuleSet};
pub use state::{AlertRecord, AlertState, DeliveryEnd, Firing, OutboxEntry};
