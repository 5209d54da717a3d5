//! Alert rules in a write transaction: created under a per-organization cap, deleted (their
//! firing alerts resolved); either way the transaction sees the organization's rules anew.

use redb::ReadableTable;
use uuid::Uuid;

use super::Batch;
use crate::alerts::{MAX_RULES_PER_ORG, StoredRule, rule_key};
use crate::error::{Error, Result};
use crate::model::OrgId;
use crate::time::Timestamp;

impl Batch<'_> {
    /// Stores a new rule, unless the organization holds the most rules it may.
    pub(super) fn create_rule(
        &mut self,
        org: OrgId,
        rule: Uuid,
        stored: &StoredRule,
    ) -> Result<Result<()>> {
        let low = rule_key(org.0, Uuid::nil());
        let high = rule_key(org.0, Uuid::max());
        let held = self.t.alert_rules.range::<&[u8; 32]>(&low..=&high)?.count();
        if held >= MAX_RULES_PER_ORG {
            return Ok(Err(Error::Conflict(format!(
                "rules: this organization holds {held} rules, the most it may; delete one first"
            ))));
        }
        self.t
            .alert_rules
            .insert(&rule_key(org.0, rule), stored.encode().as_slice())?;
        self.reload_rules(org)?;
        Ok(Ok(()))
    }

    /// Deletes a rule at `at`, resolving its firing alerts without delivering them. `false`
    /// when the organization has no such rule.
    pub(super) fn delete_rule(&mut self, org: OrgId, rule: Uuid, at: Timestamp) -> Result<bool> {
        if self.t.alert_rules.remove(&rule_key(org.0, rule))?.is_none() {
            return Ok(false);
        }
        self.resolve_rule_alerts(org, rule, at)?;
        self.reload_rules(org)?;
        Ok(true)
    }
}
