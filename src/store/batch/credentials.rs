//! The writes of credentials: organizations, clients, revocation, tokens (issued, redeemed,
//! revoked by family when a refresh token is reused) and their purge.

use redb::ReadableTable;

use super::Batch;
use crate::error::{Error, Result};
use crate::model::OrgId;
use crate::store::credentials::{
    ClientRecord, IssueOutcome, OrgRecord, TokenKind, TokenRecord, expiry_key, family_key,
};
use crate::time::Timestamp;

/// Tokens to store for a client, consuming the refresh token `redeem` in the same step; refused
/// if the client was revoked in the meantime. `at` is when the request was made.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub client_id: String,
    pub tokens: Vec<([u8; 32], TokenRecord)>,
    pub redeem: Option<[u8; 32]>,
    pub at: Timestamp,
}

impl Batch<'_> {
    /// Creates an organization unless it exists; either way returns the stored record.
    pub(super) fn create_organization(
        &mut self,
        org: OrgId,
        record: &OrgRecord,
    ) -> Result<(OrgRecord, bool)> {
        if let Some(existing) = self.t.organizations.get(org.as_bytes())? {
            return Ok((OrgRecord::decode(existing.value())?, false));
        }
        self.t
            .organizations
            .insert(org.as_bytes(), record.encode().as_slice())?;
        Ok((record.clone(), true))
    }

    pub(super) fn create_client(
        &mut self,
        client_id: &str,
        record: &ClientRecord,
    ) -> Result<Result<()>> {
        if self.t.organizations.get(record.org.as_bytes())?.is_none() {
            return Ok(Err(Error::NotFound(format!(
                "organization {} does not exist",
                record.org
            ))));
        }
        if self.t.clients.get(client_id)?.is_some() {
            return Ok(Err(Error::Conflict(format!(
                "client {client_id} exists already"
            ))));
        }
        self.t
            .clients
            .insert(client_id, record.encode().as_slice())?;
        Ok(Ok(()))
    }

    /// Marks a client revoked. `false` when there is no such client. Its tokens are refused
    /// from now on (authentication and every grant check the client) and purged when they
    /// expire.
    pub(super) fn revoke_client(&mut self, client_id: &str, at: Timestamp) -> Result<bool> {
        let Some(bytes) = self.t.clients.get(client_id)? else {
            return Ok(false);
        };
        let mut record = ClientRecord::decode(bytes.value())?;
        drop(bytes);
        if record.revoked_at.is_none() {
            record.revoked_at = Some(at);
            self.t
                .clients
                .insert(client_id, record.encode().as_slice())?;
        }
        Ok(true)
    }

    /// Stores new tokens of `client_id`, which must still exist unrevoked as this transaction
    /// sees it (a token request racing a revocation gets nothing once the revocation commits).
    /// When `redeem` names a refresh token, consumes it in the same step; a refresh token that
    /// was consumed already is being reused, and the whole family it belongs to is revoked.
    pub(super) fn issue_tokens(&mut self, request: &IssueRequest) -> Result<Result<IssueOutcome>> {
        let IssueRequest {
            client_id,
            tokens,
            redeem,
            at,
        } = request;
        let client = match self.t.clients.get(client_id.as_str())? {
            Some(bytes) => ClientRecord::decode(bytes.value())?,
            None => return Ok(Err(invalid_client())),
        };
        if client.revoked_at.is_some() {
            return Ok(Err(invalid_client()));
        }
        if let Some(hash) = redeem {
            let Some(bytes) = self.t.tokens.get(hash)? else {
                return Ok(Err(invalid_grant()));
            };
            let mut token = TokenRecord::decode(bytes.value())?;
            drop(bytes);
            if token.kind != TokenKind::Refresh
                || token.client_id != *client_id
                || token.expires_at <= *at
            {
                return Ok(Err(invalid_grant()));
            }
            if token.redeemed {
                let revoked = self.revoke_family(&token.family)?;
                return Ok(Ok(IssueOutcome::ReuseDetected { revoked }));
            }
            token.redeemed = true;
            self.t.tokens.insert(hash, token.encode().as_slice())?;
        }
        for (hash, token) in tokens {
            self.t.tokens.insert(hash, token.encode().as_slice())?;
            self.t
                .token_expiry
                .insert(&expiry_key(token.expires_at, hash), ())?;
            self.t
                .token_family
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
        for entry in self.t.token_family.range::<&[u8; 48]>(&low..=&high)? {
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
        let Some(bytes) = self.t.tokens.remove(hash)? else {
            return Ok(());
        };
        let token = TokenRecord::decode(bytes.value())?;
        drop(bytes);
        self.t
            .token_expiry
            .remove(&expiry_key(token.expires_at, hash))?;
        self.t
            .token_family
            .remove(&family_key(&token.family, hash))?;
        Ok(())
    }

    /// Deletes every token that expired before `cutoff`.
    pub(super) fn purge_tokens(&mut self, cutoff: Timestamp) -> Result<u64> {
        let end = expiry_key(cutoff, &[0; 32]);
        let mut expired = Vec::new();
        for entry in self.t.token_expiry.range::<&[u8; 40]>(..&end)? {
            expired.push(*entry?.0.value());
        }
        for key in &expired {
            let hash: [u8; 32] = key[8..].try_into().expect("32 bytes");
            self.delete_token(&hash)?;
            // An expiry entry whose token is gone already.
            self.t.token_expiry.remove(key)?;
        }
        Ok(expired.len() as u64)
    }
}

fn invalid_client() -> Error {
    crate::error::OAuthError::invalid_client("unknown client, wrong secret, or revoked client")
        .into()
}

fn invalid_grant() -> Error {
    crate::error::OAuthError::invalid_grant("the refresh token is unknown, used or expired").into()
}
