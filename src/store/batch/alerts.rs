//! Alert rules in a write transaction: created under a per-organization cap, deleted.

use redb::ReadableTable;
use uuid::Uuid;

use super::Batch;
use crate::alerts::{MAX_RULES_PER_ORG, StoredRule, rule_key};
use crate::error::{Error, Result};
use crate::model::OrgId;

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
        Ok(Ok(()))
    }

    /// Deletes a rule. `false` when the organization has no such rule.
    pub(super) fn delete_rule(&mut self, org: OrgId, rule: Uuid) -> Result<bool> {
        Ok(self.t.alert_rules.remove(&rule_key(org.0, rule))?.is_some())
    }
}
