//! Alerts: rules on a pipeline's runs (`rule`), evaluated by the engine as runs are written and
//! delivered as signed webhooks. What is built so far: the rules (their checks and storage)
//! and their management over REST; evaluation and delivery come next (issue 23).

pub mod rule;

pub use rule::{
    Format, MAX_RULES_PER_ORG, Rule, RuleKind, Schedule, Span, StoredRule, Webhook, rule_key,
};
