//! Who is calling and what they may do. Every engine call takes a [`Caller`]: the operator at the
//! command line may do anything in any organization; a client is confined to its organization
//! and the scopes its token was granted. Also the credential primitives: client ids, secrets and
//! tokens are random (secrets and tokens 256 bits), stored only as SHA-256 hashes, and secrets are
//! compared in constant time. (A fast hash is enough: 256 random bits cannot be guessed, so
//! there is nothing for a slow password hash to protect.)

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::model::OrgId;
use crate::time::Timestamp;

/// A permission a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Start pipeline runs (alias `workflows:run`).
    PipelinesRun,
    /// Read stats and logs.
    StatsRead,
    /// Report task-run results and register pipelines; executors need it.
    RunsWrite,
    /// Create and delete alert rules.
    AlertsWrite,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::PipelinesRun,
        Scope::StatsRead,
        Scope::RunsWrite,
        Scope::AlertsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PipelinesRun => "pipelines:run",
            Scope::StatsRead => "stats:read",
            Scope::RunsWrite => "runs:write",
            Scope::AlertsWrite => "alerts:write",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::PipelinesRun => 1,
            Scope::StatsRead => 2,
            Scope::RunsWrite => 4,
            Scope::AlertsWrite => 8,
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
            "alerts:write" => Ok(Scope::AlertsWrite),
            _ => Err(format!(
                "{} is not a scope (one of pipelines:run, workflows:run, stats:read, runs:write, alerts:write)",
                crate::error::quote(s)
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

/// How long an access token lives unless configured otherwise.
pub const ACCESS_TOKEN_TTL_SECS: u32 = 86_400;
/// How long a refresh token lives unless configured otherwise: 30 days.
pub const REFRESH_TOKEN_TTL_SECS: u32 = 30 * 86_400;

/// A new client id: `rlc_` and 32 hex digits (128 random bits; ids are not secret).
pub fn new_client_id() -> String {
    let bytes: [u8; 16] = crate::crypto::random_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("rlc_{hex}")
}

/// A new secret or token: `prefix` and 256 random bits in URL-safe base64.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = crate::crypto::random_bytes();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new API key id: `rlk_` and 32 hex digits (ids are not secret).
pub fn new_key_id() -> String {
    let bytes: [u8; 16] = crate::crypto::random_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_ID_PREFIX}{hex}")
}

/// Prefixes that make runledger credentials recognisable (to people and to secret scanners).
pub const SECRET_PREFIX: &str = "rls_";
/// API keys (long-lived bearer credentials) and their ids.
pub const API_KEY_PREFIX: &str = "rlak_";
pub const KEY_ID_PREFIX: &str = "rlk_";
pub const ACCESS_TOKEN_PREFIX: &str = "rla_";
pub const REFRESH_TOKEN_PREFIX: &str = "rlr_";

/// The stored form of a secret or token.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes without leaking where they differ.
pub fn hashes_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// The longest `scope` parameter accepted (every scope, each spelled both ways, fits many
/// times over).
pub const MAX_SCOPE_TEXT: usize = 256;

/// Parses a space-separated scope list; also returns it as it will be echoed back: as spelled,
/// each scope once, in the order first asked.
pub fn parse_scopes(text: &str) -> Result<(Scopes, String), String> {
    if text.len() > MAX_SCOPE_TEXT {
        return Err(format!(
            "the scope parameter is {} bytes long; at most {MAX_SCOPE_TEXT} are accepted",
            text.len()
        ));
    }
    let mut scopes = Scopes::default();
    let mut spelled: Vec<&str> = Vec::new();
    for word in text.split_whitespace() {
        let scope = word.parse::<Scope>()?;
        if !scopes.contains(scope) {
            scopes = Scopes(scopes.0 | scope.bit());
            spelled.push(word);
        }
    }
    Ok((scopes, spelled.join(" ")))
}

/// The token in an `Authorization: Bearer <token>` header value (the scheme is
/// case-insensitive), or why there is none.
pub fn bearer_token(header: Option<&str>) -> crate::error::Result<&str> {
    let header = header.ok_or_else(|| {
        crate::error::Error::Unauthenticated(
            "no credentials: send `Authorization: Bearer <access token>` (get one from /v1/oauth/token)"
                .into(),
        )
    })?;
    match header.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(crate::error::Error::Unauthenticated(
            "the Authorization header must be `Bearer <access token>`".into(),
        )),
    }
}

/// Who is making a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator at the command line: every scope. Writes name their organization; questions
    /// are asked within `org` (pipeline and task UUIDs are namespaced per organization).
    Operator { org: Option<OrgId> },
    /// A client authenticated with a bearer token.
    Client {
        client_id: String,
        organization: OrgId,
        scopes: Scopes,
        /// The SHA-256 of the access token, so that open streams can check that it is still
        /// honoured.
        token: [u8; 32],
        /// When the access token stops being honoured.
        expires_at: Timestamp,
    },
}

impl Caller {
    /// The operator, writing into the organizations its writes name.
    pub const OPERATOR: Caller = Caller::Operator { org: None };

    /// The operator, asking within one organization.
    pub fn operator_in(org: OrgId) -> Caller {
        Caller::Operator { org: Some(org) }
    }

    /// Refuses the request unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        match self {
            Caller::Operator { .. } => Ok(()),
            Caller::Client { scopes, .. } if scopes.contains(scope) => Ok(()),
            Caller::Client { .. } => Err(Error::PermissionDenied(format!(
                "this token lacks the {} scope",
                scope.as_str()
            ))),
        }
    }

    /// The organization the caller acts in: a client's own; the one the operator named, if any.
    pub fn organization(&self) -> Option<OrgId> {
        match self {
            Caller::Operator { org } => *org,
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
    fn credentials_are_random_prefixed_and_hashed() {
        let (a, b) = (new_secret(SECRET_PREFIX), new_secret(SECRET_PREFIX));
        assert_ne!(a, b);
        assert!(a.starts_with("rls_") && a.len() == 4 + 43);
        assert!(new_client_id().starts_with("rlc_"));
        assert!(hashes_match(&hash_secret(&a), &hash_secret(&a)));
        assert!(!hashes_match(&hash_secret(&a), &hash_secret(&b)));
        assert_eq!(
            parse_scopes("workflows:run  stats:read workflows:run pipelines:run").unwrap(),
            (
                [Scope::PipelinesRun, Scope::StatsRead]
                    .into_iter()
                    .collect(),
                "workflows:run stats:read".to_string()
            )
        );
        assert!(parse_scopes("stats:read admin").is_err());
        let long = "stats:read ".repeat(100);
        assert!(parse_scopes(&long).unwrap_err().contains("at most 256"));
    }

    #[test]
    fn clients_are_confined() {
        let org = OrgId(Uuid::from_u128(1));
        let client = Caller::Client {
            client_id: "c".into(),
            organization: org,
            scopes: [Scope::StatsRead].into_iter().collect(),
            token: [0; 32],
            expires_at: Timestamp::now(),
        };
        assert!(client.require(Scope::StatsRead).is_ok());
        assert!(matches!(
            client.require(Scope::RunsWrite),
            Err(Error::PermissionDenied(_))
        ));
        assert_eq!(client.organization(), Some(org));
        assert_eq!(Caller::OPERATOR.organization(), None);
        assert_eq!(Caller::operator_in(org).organization(), Some(org));
    }
}
