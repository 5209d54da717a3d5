//! Who is calling and what they may do. Every engine call takes a [`Caller`]: the operator at the
//! command line may do anything in any organization; a client is confined to its organization
//! and the scopes its token was granted.

use std::fmt;

use crate::error::{Error, Result};
use crate::model::OrgId;

/// A permission a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Start pipeline runs (alias `workflows:run`).
    PipelinesRun,
    /// Read stats and logs.
    StatsRead,
    /// Report task-run results and register pipelines; executors need it.
    RunsWrite,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::PipelinesRun, Scope::StatsRead, Scope::RunsWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PipelinesRun => "pipelines:run",
            Scope::StatsRead => "stats:read",
            Scope::RunsWrite => "runs:write",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::PipelinesRun => 1,
            Scope::StatsRead => 2,
            Scope::RunsWrite => 4,
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "pipelines:run" | "workflows:run" => Ok(Scope::PipelinesRun),
            "stats:read" => Ok(Scope::StatsRead),
            "runs:write" => Ok(Scope::RunsWrite),
            _ => Err(format!(
                "`{s}` is not a scope (one of pipelines:run, workflows:run, stats:read, runs:write)"
            )),
        }
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes::from_iter(Scope::ALL)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The storage form.
    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Scopes {
        Scopes(bits & Scopes::all().0)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Scopes {
        Scopes(iter.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

impl fmt::Display for Scopes {
    /// Space-separated, as OAuth2 writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

/// Who is making a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator at the command line: every organization, every scope.
    Operator,
    /// A client authenticated with a bearer token.
    Client {
        client_id: String,
        organization: OrgId,
        scopes: Scopes,
    },
}

impl Caller {
    /// Refuses the request unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Client { scopes, .. } if scopes.contains(scope) => Ok(()),
            Caller::Client { .. } => Err(Error::PermissionDenied(format!(
                "this token lacks the {} scope",
                scope.as_str()
            ))),
        }
    }

    /// Whether the caller may see things of this organization.
    pub fn can_see(&self, org: OrgId) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Client { organization, .. } => *organization == org,
        }
    }

    /// The organization a client is confined to; `None` for the operator.
    pub fn organization(&self) -> Option<OrgId> {
        match self {
            Caller::Operator => None,
            Caller::Client { organization, .. } => Some(*organization),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn scopes_parse_with_the_old_alias() {
        assert_eq!("workflows:run".parse::<Scope>(), Ok(Scope::PipelinesRun));
        assert!(
            "admin"
                .parse::<Scope>()
                .unwrap_err()
                .contains("not a scope")
        );
        let scopes: Scopes = [Scope::StatsRead, Scope::RunsWrite].into_iter().collect();
        assert_eq!(scopes.to_string(), "stats:read runs:write");
        assert!(scopes.is_subset_of(Scopes::all()));
        assert!(!Scopes::all().is_subset_of(scopes));
    }

    #[test]
    fn clients_are_confined() {
        let org = OrgId(Uuid::from_u128(1));
        let client = Caller::Client {
            client_id: "c".into(),
            organization: org,
            scopes: [Scope::StatsRead].into_iter().collect(),
        };
        assert!(client.require(Scope::StatsRead).is_ok());
        assert!(matches!(
            client.require(Scope::RunsWrite),
            Err(Error::PermissionDenied(_))
        ));
        assert!(client.can_see(org));
        assert!(!client.can_see(OrgId(Uuid::from_u128(2))));
        assert!(Caller::Operator.can_see(org));
    }
}
