//! Alerts: rules on a pipeline's runs (`rule`), evaluated by the engine as runs are written and
//! delivered as signed webhooks to destinations that are not internal (`destination`). What is
//! built so far: the rules (their checks and storage), their management over REST, and the
//! destination check at rule creation; evaluation and delivery come next (issue 23).

pub mod destination;
pub mod rule;

pub use destination::AllowedNets;
pub use rule::{
    Format, MAX_RULES_PER_ORG, Rule, RuleKind, Schedule, Span, StoredRule, Webhook, rule_key,
};
