//! Alerts: rules on a pipeline's runs (`rule`), evaluated by the engine as runs are written and
//! delivered as signed webhooks (`webhook`) to destinations that are not internal
//! (`destination`). What is built so far: the rules (their checks and storage), their
//! management over REST and gRPC, the destination check at rule creation, and what a delivery
//! will send (bodies in the three formats, the Standard Webhooks signature); evaluation and
//! delivery come next (issue 23).

pub mod destination;
pub mod rule;
pub mod webhook;

pub use destination::AllowedNets;
pub use rule::{
    Format, MAX_RULES_PER_ORG, Rule, RuleKind, Schedule, Span, StoredRule, Webhook, rule_key,
};
