//! Stored credentials and what they unlock: organizations with their sealed output keys, OAuth
//! clients with hashed secrets, and issued tokens, stored only as SHA-256 hashes with an expiry
//! index for purging. Also the queue of pending task runs waiting for an executor.

use redb::ReadableTable;

use super::apply::Batch;
use super::records::corrupt;
use crate::error::{Error, Result};
use crate::model::OrgId;
use crate::time::Timestamp;

/// An organization: its output key, sealed under the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgRecord {
    pub sealed_key: Vec<u8>,
    pub created_at: Timestamp,
}

impl OrgRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.sealed_key.len());
        out.extend_from_slice(&self.created_at.micros().to_be_bytes());
        out.extend_from_slice(&self.sealed_key);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<OrgRecord> {
        let (created, sealed_key) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("organization"))?;
        Ok(OrgRecord {
            sealed_key: sealed_key.to_vec(),
            created_at: Timestamp::from_micros(i64::from_be_bytes(*created))
                .ok_or_else(|| corrupt("organization"))?,
        })
    }
}

/// An OAuth client: its organization, the hash of its secret, the scopes it may be granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub org: OrgId,
    pub secret_hash: [u8; 32],
    /// A [`crate::auth::Scopes`] bit set.
    pub scopes: u8,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

const CLIENT_LEN: usize = 16 + 32 + 1 + 8 + 8;

impl ClientRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CLIENT_LEN);
        out.extend_from_slice(self.org.as_bytes());
        out.extend_from_slice(&self.secret_hash);
        out.push(self.scopes);
        out.extend_from_slice(&self.created_at.micros().to_be_bytes());
        out.extend_from_slice(
            &self
                .revoked_at
                .map_or(i64::MIN, Timestamp::micros)
                .to_be_bytes(),
        );
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ClientRecord> {
        let bytes: &[u8; CLIENT_LEN] = bytes.try_into().map_err(|_| corrupt("client"))?;
        let time = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(ClientRecord {
            org: OrgId(uuid::Uuid::from_bytes(
                bytes[..16].try_into().expect("16 bytes"),
            )),
            secret_hash: bytes[16..48].try_into().expect("32 bytes"),
            scopes: bytes[48],
            created_at: Timestamp::from_micros(time(49)).ok_or_else(|| corrupt("client"))?,
            revoked_at: match time(57) {
                i64::MIN => None,
                micros => Some(Timestamp::from_micros(micros).ok_or_else(|| corrupt("client"))?),
            },
        })
    }
}

/// Access tokens authorize requests; refresh tokens obtain new pairs, once each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// What an issued token grants, stored under the token's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub kind: TokenKind,
    /// A refresh token that was exchanged already. It is kept until it expires, so that its
    /// reuse (a sign that it leaked) can be recognised and its family revoked.
    pub redeemed: bool,
    /// The grant family: the client-credentials grant this token descends from.
    pub family: [u8; 16],
    pub client_id: String,
    pub org: OrgId,
    /// A [`crate::auth::Scopes`] bit set.
    pub scopes: u8,
    /// The scopes as they were asked for, echoed back when this grant is refreshed.
    pub scope_text: String,
    pub expires_at: Timestamp,
}

impl TokenRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56 + self.client_id.len() + self.scope_text.len());
        out.push(match (self.kind, self.redeemed) {
            (TokenKind::Access, _) => 1,
            (TokenKind::Refresh, false) => 2,
            (TokenKind::Refresh, true) => 3,
        });
        out.extend_from_slice(self.org.as_bytes());
        out.extend_from_slice(&self.family);
        out.push(self.scopes);
        out.extend_from_slice(&self.expires_at.micros().to_be_bytes());
        out.push(u8::try_from(self.client_id.len()).expect("client ids are short"));
        out.extend_from_slice(self.client_id.as_bytes());
        out.extend_from_slice(self.scope_text.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<TokenRecord> {
        let bad = || corrupt("token");
        let (&kind, rest) = bytes.split_first().ok_or_else(bad)?;
        let (org, rest) = rest.split_first_chunk::<16>().ok_or_else(bad)?;
        let (family, rest) = rest.split_first_chunk::<16>().ok_or_else(bad)?;
        let (&scopes, rest) = rest.split_first().ok_or_else(bad)?;
        let (expires, rest) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let (&id_len, rest) = rest.split_first().ok_or_else(bad)?;
        if rest.len() < usize::from(id_len) {
            return Err(bad());
        }
        let (client_id, scope_text) = rest.split_at(usize::from(id_len));
        let (kind, redeemed) = match kind {
            1 => (TokenKind::Access, false),
            2 => (TokenKind::Refresh, false),
            3 => (TokenKind::Refresh, true),
            _ => return Err(bad()),
        };
        Ok(TokenRecord {
            kind,
            redeemed,
            family: *family,
            client_id: String::from_utf8(client_id.to_vec()).map_err(|_| bad())?,
            org: OrgId(uuid::Uuid::from_bytes(*org)),
            scopes,
            scope_text: String::from_utf8(scope_text.to_vec()).map_err(|_| bad())?,
            expires_at: Timestamp::from_micros(i64::from_be_bytes(*expires)).ok_or_else(bad)?,
        })
    }
}

/// `token_expiry` key: expiry time, token hash.
pub fn expiry_key(expires_at: Timestamp, hash: &[u8; 32]) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&super::tables::encode_time(expires_at.micros()));
    key[8..].copy_from_slice(hash);
    key
}

impl Batch<'_> {
    /// Creates an organization unless it exists; either way returns the stored record.
    pub(super) fn create_organization(
        &mut self,
        org: OrgId,
        record: &OrgRecord,
    ) -> Result<(OrgRecord, bool)> {
        if let Some(existing) = self.organizations.get(org.as_bytes())? {
            return Ok((OrgRecord::decode(existing.value())?, false));
        }
        self.organizations
            .insert(org.as_bytes(), record.encode().as_slice())?;
        Ok((record.clone(), true))
    }

    pub(super) fn create_client(
        &mut self,
        client_id: &str,
        record: &ClientRecord,
    ) -> Result<Result<()>> {
        if self.organizations.get(record.org.as_bytes())?.is_none() {
            return Ok(Err(Error::NotFound(format!(
                "organization {} does not exist",
                record.org
            ))));
        }
        if self.clients.get(client_id)?.is_some() {
            return Ok(Err(Error::Conflict(format!(
                "client {client_id} exists already"
            ))));
        }
        self.clients.insert(client_id, record.encode().as_slice())?;
        Ok(Ok(()))
    }

    /// Marks a client revoked. `false` when there is no such client. Its tokens are refused
    /// from now on (authentication and every grant check the client) and purged when they
    /// expire.
    pub(super) fn revoke_client(&mut self, client_id: &str) -> Result<bool> {
        let Some(bytes) = self.clients.get(client_id)? else {
            return Ok(false);
        };
        let mut record = ClientRecord::decode(bytes.value())?;
        drop(bytes);
        if record.revoked_at.is_none() {
            record.revoked_at = Some(self.now);
            self.clients.insert(client_id, record.encode().as_slice())?;
        }
        Ok(true)
    }

    /// Stores new tokens of `client_id`, which must still exist unrevoked as this transaction
    /// sees it (a token request racing a revocation gets nothing once the revocation commits).
    /// When `redeem` names a refresh token, consumes it in the same step; a refresh token that
    /// was consumed already is being reused, and the whole family it belongs to is revoked.
    pub(super) fn issue_tokens(
        &mut self,
        client_id: &str,
        tokens: &[([u8; 32], TokenRecord)],
        redeem: Option<&[u8; 32]>,
    ) -> Result<Result<IssueOutcome>> {
        let client = match self.clients.get(client_id)? {
            Some(bytes) => ClientRecord::decode(bytes.value())?,
            None => return Ok(Err(invalid_client())),
        };
        if client.revoked_at.is_some() {
            return Ok(Err(invalid_client()));
        }
        if let Some(hash) = redeem {
            let Some(bytes) = self.tokens.get(hash)? else {
                return Ok(Err(invalid_grant()));
            };
            let mut token = TokenRecord::decode(bytes.value())?;
            drop(bytes);
            if token.kind != TokenKind::Refresh
                || token.client_id != client_id
                || token.expires_at <= self.now
            {
                return Ok(Err(invalid_grant()));
            }
            if token.redeemed {
                let revoked = self.revoke_family(&token.family)?;
                return Ok(Ok(IssueOutcome::ReuseDetected { revoked }));
            }
            token.redeemed = true;
            self.tokens.insert(hash, token.encode().as_slice())?;
        }
        for (hash, token) in tokens {
            self.tokens.insert(hash, token.encode().as_slice())?;
            self.token_expiry
                .insert(&expiry_key(token.expires_at, hash), ())?;
            self.token_family
                .insert(&family_key(&token.family, hash), ())?;
        }
        Ok(Ok(IssueOutcome::Issued))
    }

    /// Deletes every token of a grant family; returns how many.
    fn revoke_family(&mut self, family: &[u8; 16]) -> Result<u64> {
        let (low, high) = (
            family_key(family, &[0; 32]),
            family_key(family, &[0xff; 32]),
        );
        let mut members = Vec::new();
        for entry in self.token_family.range::<&[u8; 48]>(&low..=&high)? {
            members.push(*entry?.0.value());
        }
        for key in &members {
            let hash: [u8; 32] = key[16..].try_into().expect("32 bytes");
            self.delete_token(&hash)?;
        }
        Ok(members.len() as u64)
    }

    /// Deletes a token with its index entries.
    fn delete_token(&mut self, hash: &[u8; 32]) -> Result<()> {
        let Some(bytes) = self.tokens.remove(hash)? else {
            return Ok(());
        };
        let token = TokenRecord::decode(bytes.value())?;
        drop(bytes);
        self.token_expiry
            .remove(&expiry_key(token.expires_at, hash))?;
        self.token_family.remove(&family_key(&token.family, hash))?;
        Ok(())
    }

    /// Deletes every token that expired before `cutoff`.
    pub(super) fn purge_tokens(&mut self, cutoff: Timestamp) -> Result<u64> {
        let end = expiry_key(cutoff, &[0; 32]);
        let mut expired = Vec::new();
        for entry in self.token_expiry.range::<&[u8; 40]>(..&end)? {
            expired.push(*entry?.0.value());
        }
        for key in &expired {
            let hash: [u8; 32] = key[8..].try_into().expect("32 bytes");
            self.delete_token(&hash)?;
            // An expiry entry whose token is gone already.
            self.token_expiry.remove(key)?;
        }
        Ok(expired.len() as u64)
    }
}

/// What a token request did in the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueOutcome {
    Issued,
    /// The refresh token had been exchanged before: its family (this many tokens) was revoked
    /// and nothing was issued.
    ReuseDetected {
        revoked: u64,
    },
}

/// `token_family` key: family, token hash.
pub fn family_key(family: &[u8; 16], hash: &[u8; 32]) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(family);
    key[16..].copy_from_slice(hash);
    key
}

fn invalid_client() -> Error {
    crate::error::OAuthError::invalid_client("unknown client, wrong secret, or revoked client")
        .into()
}

fn invalid_grant() -> Error {
    crate::error::OAuthError::invalid_grant("the refresh token is unknown, used or expired").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let org = OrgId(uuid::Uuid::from_u128(5));
        let at = Timestamp::from_micros(1_700_000_000_000_000).unwrap();
        let client = ClientRecord {
            org,
            secret_hash: [7; 32],
            scopes: 5,
            created_at: at,
            revoked_at: None,
        };
        assert_eq!(ClientRecord::decode(&client.encode()).unwrap(), client);
        let revoked = ClientRecord {
            revoked_at: Some(at),
            ..client
        };
        assert_eq!(ClientRecord::decode(&revoked.encode()).unwrap(), revoked);
        let token = TokenRecord {
            kind: TokenKind::Refresh,
            redeemed: true,
            family: [9; 16],
            client_id: "rlc_abc".into(),
            org,
            scopes: 3,
            scope_text: "workflows:run stats:read".into(),
            expires_at: at,
        };
        assert_eq!(TokenRecord::decode(&token.encode()).unwrap(), token);
        let org_record = OrgRecord {
            sealed_key: vec![1; 72],
            created_at: at,
        };
        assert_eq!(OrgRecord::decode(&org_record.encode()).unwrap(), org_record);
        assert!(TokenRecord::decode(&[2, 1]).is_err());
        assert!(ClientRecord::decode(&[0; 10]).is_err());
    }
}
