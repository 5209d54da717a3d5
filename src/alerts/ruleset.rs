//! The alert rules the writer evaluates, in memory: each organization's rules found by the
//! pipeline they cover, loaded when the database opens and replaced when a commit changes
//! them, so that a write of an organization without rules costs one map lookup.

use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap as HashMap;
use uuid::Uuid;

use super::{RuleKind, StoredRule};
use crate::model::OrgId;

/// One organization's rules.
#[derive(Debug, Default)]
pub struct OrgRules {
    /// By rule UUID.
    rules: Vec<(Uuid, StoredRule)>,
    /// Places in `rules` of the rules of one pipeline.
    by_pipeline: HashMap<Uuid, Vec<usize>>,
    /// Places of the rules of every pipeline.
    everywhere: Vec<usize>,
}

impl OrgRules {
    pub fn new(mut rules: Vec<(Uuid, StoredRule)>) -> OrgRules {
        rules.sort_by_key(|(uuid, _)| *uuid);
        let mut by_pipeline: HashMap<Uuid, Vec<usize>> = HashMap::default();
        let mut everywhere = Vec::new();
        for (place, (_, stored)) in rules.iter().enumerate() {
            match stored.rule.pipeline {
                Some(pipeline) => by_pipeline.entry(pipeline).or_default().push(place),
                None => everywhere.push(place),
            }
        }
        OrgRules {
            rules,
            by_pipeline,
            everywhere,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule, by UUID.
    pub fn all(&self) -> &[(Uuid, StoredRule)] {
        &self.rules
    }

    /// The rules that cover `pipeline`, by UUID.
    pub fn covering(&self, pipeline: Uuid) -> Vec<&(Uuid, StoredRule)> {
        let own = self
            .by_pipeline
            .get(&pipeline)
            .map_or(&[][..], Vec::as_slice);
        let mut places: Vec<usize> = own.iter().chain(&self.everywhere).copied().collect();
        places.sort_unstable();
        places.into_iter().map(|place| &self.rules[place]).collect()
    }

    /// Whether any rule covers `pipeline`.
    pub fn covers(&self, pipeline: Uuid) -> bool {
        !self.everywhere.is_empty() || self.by_pipeline.contains_key(&pipeline)
    }

    /// Whether a rule decided by the clock (`missing`, `stuck`) is among them.
    pub fn has_time_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|(_, stored)| is_time_rule(&stored.rule.kind))
    }
}

/// Whether a rule is decided by the clock as well as by runs.
pub fn is_time_rule(kind: &RuleKind) -> bool {
    matches!(kind, RuleKind::Missing(_) | RuleKind::Stuck { .. })
}

/// Every organization's rules; an organization without rules is absent.
#[derive(Debug, Default)]
pub struct RuleSet {
    orgs: RwLock<HashMap<OrgId, Arc<OrgRules>>>,
}

impl RuleSet {
    /// The rules of every organization, as stored.
    pub fn new(all: impl IntoIterator<Item = (OrgId, Uuid, StoredRule)>) -> RuleSet {
        let mut by_org: HashMap<OrgId, Vec<(Uuid, StoredRule)>> = HashMap::default();
        for (org, rule, stored) in all {
            by_org.entry(org).or_default().push((rule, stored));
        }
        RuleSet {
            orgs: RwLock::new(
                by_org
                    .into_iter()
                    .map(|(org, rules)| (org, Arc::new(OrgRules::new(rules))))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, org: OrgId) -> Option<Arc<OrgRules>> {
        self.orgs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&org)
            .cloned()
    }

    /// Replaces an organization's rules (after the commit that changed them).
    pub fn set(&self, org: OrgId, rules: Arc<OrgRules>) {
        let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
        if rules.is_empty() {
            orgs.remove(&org);
        } else {
            orgs.insert(org, rules);
        }
    }

    /// The organizations with rules decided by the clock, in UUID order.
    pub fn with_time_rules(&self) -> Vec<(OrgId, Arc<OrgRules>)> {
        let orgs = self.orgs.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(OrgId, Arc<OrgRules>)> = orgs
            .iter()
            .filter(|(_, rules)| rules.has_time_rules())
            .map(|(org, rules)| (*org, rules.clone()))
            .collect();
        found.sort_by_key(|(org, _)| org.0);
        found
    }
}
