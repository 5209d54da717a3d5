//! Alert rules through the engine: created (checked, the webhook secret sealed under the
//! organization's output key), listed, shown and deleted, within the caller's organization.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use super::{Engine, organization_for, unexpected};
use crate::alerts::destination::Undeliverable;
use crate::alerts::{Rule, StoredRule};
use crate::auth::{Caller, Scope};
use crate::error::{Error, Result};
use crate::model::TaskRunId;
use crate::store::{WriteOp, WriteOutcome};
use crate::time::Timestamp;

/// A rule as the API shows it (never its secret).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleView {
    pub rule: Uuid,
    pub stored: StoredRule,
}

impl Engine {
    /// Creates an alert rule from its JSON; returns its UUID once durable.
    pub async fn create_rule(&self, caller: &Caller, body: &serde_json::Value) -> Result<Uuid> {
        caller.require(Scope::AlertsWrite)?;
        let org = organization_for(caller, None)?;
        let mut rule =
            Rule::parse(body).map_err(|(field, reason)| Error::invalid(&field, reason))?;
        // A name that does not resolve now is checked again at each delivery.
        match crate::alerts::destination::resolve(&rule.webhook.url, &self.webhook_allow).await {
            Ok(_) | Err(Undeliverable::Unresolved(_)) => {}
            Err(refused) => return Err(Error::invalid("webhook.url", refused)),
        }
        let uuid = Uuid::new_v4();
        let key = self.output_key(org).await?;
        rule.webhook.secret =
            STANDARD.encode(key.seal_output(&TaskRunId(uuid), rule.webhook.secret.as_bytes()));
        let op = WriteOp::CreateRule {
            org,
            rule: uuid,
            stored: Box::new(StoredRule {
                rule,
                created_at: Timestamp::now().micros(),
                disabled_at: None,
            }),
        };
        match self.writes.write(&self.store, op).await? {
            WriteOutcome::RuleCreated => Ok(uuid),
            other => Err(unexpected(other)),
        }
    }

    /// The caller's organization's rules, oldest first.
    pub fn rules(&self, caller: &Caller) -> Result<Vec<RuleView>> {
        caller.require(Scope::AlertsWrite)?;
        let org = organization_for(caller, None)?;
        let mut rules: Vec<RuleView> = self
            .store
            .reader()?
            .alert_rules(org)?
            .into_iter()
            .map(|(rule, stored)| RuleView { rule, stored })
            .collect();
        rules.sort_by_key(|view| (view.stored.created_at, view.rule));
        Ok(rules)
    }

    /// One of the caller's organization's rules.
    pub fn rule(&self, caller: &Caller, rule: Uuid) -> Result<RuleView> {
        self.rules(caller)?
            .into_iter()
            .find(|view| view.rule == rule)
            .ok_or_else(|| Error::NotFound(format!("no alert rule {rule}")))
    }

    /// Deletes one of the caller's organization's rules.
    pub async fn delete_rule(&self, caller: &Caller, rule: Uuid) -> Result<()> {
        caller.require(Scope::AlertsWrite)?;
        let org = organization_for(caller, None)?;
        match self
            .writes
            .write(
                &self.store,
                WriteOp::DeleteRule {
                    org,
                    rule,
                    at: Timestamp::now(),
                },
            )
            .await?
        {
            WriteOutcome::RuleDeleted(true) => Ok(()),
            WriteOutcome::RuleDeleted(false) => {
                Err(Error::NotFound(format!("no alert rule {rule}")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// A page of the caller's organization's alerts, newest first (optionally only one
    /// pipeline's, or only those in one state), from the one before serial `after`.
    pub fn alerts(
        &self,
        caller: &Caller,
        filter: AlertFilter,
        after: Option<u64>,
        limit: u32,
    ) -> Result<crate::store::AlertPage> {
        caller.require(Scope::StatsRead)?;
        super::check_page_limit(limit)?;
        let org = organization_for(caller, None)?;
        self.store
            .reader()?
            .alerts(org, after, limit as usize, |alert| {
                filter.pipeline.is_none_or(|p| p == alert.pipeline)
                    && filter.state.is_none_or(|s| s == alert.state)
            })
    }
}

/// Which alerts a listing shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlertFilter {
    pub pipeline: Option<Uuid>,
    pub state: Option<crate::alerts::AlertState>,
}

impl AlertFilter {
    /// The filter both fronts take: a pipeline UUID and a state, each empty for any.
    pub fn parse(pipeline: &str, state: &str) -> Result<AlertFilter> {
        use crate::error::quote;
        Ok(AlertFilter {
            pipeline: match pipeline {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    Error::invalid("pipeline_uuid", format!("{} is not a UUID", quote(text)))
                })?),
            },
            state: match state {
                "" => None,
                "firing" => Some(crate::alerts::AlertState::Firing),
                "resolved" => Some(crate::alerts::AlertState::Resolved),
                other => {
                    return Err(Error::invalid(
                        "state",
                        format!("{} is not firing or resolved", quote(other)),
                    ));
                }
            },
        })
    }
}

/// Where a page of alerts starts: a cursor a listing gave.
pub fn alert_cursor(text: &str) -> std::result::Result<u64, String> {
    text.parse().map_err(|_| {
        format!(
            "{} is not a cursor this server gave",
            crate::error::quote(text)
        )
    })
}
