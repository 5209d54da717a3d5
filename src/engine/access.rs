//! Credentials: the OAuth2 token endpoint's logic (client credentials and refresh-token grants,
//! refresh tokens rotating on use), authenticating bearer tokens, and the operator's management
//! of organizations and clients.

use uuid::Uuid;

use super::{Engine, unexpected};
use crate::auth::{
    ACCESS_TOKEN_PREFIX, Caller, REFRESH_TOKEN_PREFIX, SECRET_PREFIX, Scopes, hash_secret,
    hashes_match, new_client_id, new_secret, parse_scopes,
};
use crate::error::{Error, OAuthError, OAuthErrorKind, Result};
use crate::model::OrgId;
use crate::store::credentials::{ClientRecord, IssueOutcome, TokenKind, TokenRecord};
use crate::store::{IssueRequest, WriteOp, WriteOutcome};
use crate::time::{MICROS_PER_SECOND, Timestamp};

/// The parameters of a token request, as sent (query string, form body or gRPC), and where it
/// came from.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub refresh_token: Option<String>,
    /// The peer's address, for throttling failed attempts per address.
    pub peer: Option<std::net::IpAddr>,
}

/// The longest client id, secret or refresh token accepted (runledger's are under 50 bytes).
const MAX_CREDENTIAL_BYTES: usize = 256;

/// What the token endpoint returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u32,
    /// The granted scopes, space-separated, spelled as asked.
    pub scope: String,
}

/// A client just created, with the only copy of its secret.
#[derive(Clone, Debug)]
pub struct NewClient {
    pub client_id: String,
    pub client_secret: String,
    pub organization: OrgId,
    pub scopes: Scopes,
    /// The organization's output key, when this is the organization's first client.
    pub output_key: Option<String>,
}

/// A client as the operator lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub organization: OrgId,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// An API key's `--name`; empty otherwise.
    pub name: String,
}

fn present<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str> {
    let value = value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))?;
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(OAuthError::invalid_request(format!(
            "{name} is {} bytes long; at most {MAX_CREDENTIAL_BYTES} are accepted",
            value.len()
        ))
        .into());
    }
    Ok(value)
}

/// A new client's id, its secret (shown once) and the write that stores it.
pub fn new_client(org: OrgId, scopes: Scopes) -> (String, String, WriteOp) {
    let client_id = new_client_id();
    let client_secret = new_secret(SECRET_PREFIX);
    let op = WriteOp::CreateClient {
        client_id: client_id.clone(),
        record: ClientRecord {
            org,
            secret_hash: hash_secret(&client_secret),
            scopes: scopes.bits(),
            created_at: Timestamp::now(),
            revoked_at: None,
            name: String::new(),
        },
    };
    (client_id, client_secret, op)
}

/// A new API key, with the only copy of its secret.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub api_key: String,
    pub key_id: String,
    pub organization: OrgId,
    pub scopes: Scopes,
}

/// A new API key of `org` and the writes that store it: an OAuth client of its own (its id is
/// the key id, its secret is thrown away, so the token endpoint never grants it anything) and
/// one access token, the key's hash, that never expires. So an API key is accepted wherever an
/// access token is, and revoking its client (`key revoke`) stops it at once, on both fronts and
/// on every node.
pub fn new_api_key(org: OrgId, scopes: Scopes, name: &str) -> Result<(NewApiKey, [WriteOp; 2])> {
    if scopes == Scopes::default() {
        return Err(Error::invalid(
            "scopes",
            "an API key needs at least one scope",
        ));
    }
    crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
    let key_id = crate::auth::new_key_id();
    let api_key = new_secret(crate::auth::API_KEY_PREFIX);
    let now = Timestamp::now();
    let create = WriteOp::CreateClient {
        client_id: key_id.clone(),
        record: ClientRecord {
            org,
            secret_hash: hash_secret(&new_secret(SECRET_PREFIX)),
            scopes: scopes.bits(),
            created_at: now,
            revoked_at: None,
            name: name.to_string(),
        },
    };
    let token = TokenRecord {
        kind: TokenKind::Access,
        redeemed: false,
        family: crate::crypto::random_bytes(),
        client_id: key_id.clone(),
        org,
        scopes: scopes.bits(),
        scope_text: scopes.to_string(),
        expires_at: Timestamp::from_second(crate::time::MAX_SECOND).expect("the last second"),
    };
    let issue = WriteOp::IssueTokens(IssueRequest {
        client_id: key_id.clone(),
        tokens: vec![(hash_secret(&api_key), token)],
        redeem: None,
        at: now,
    });
    let key = NewApiKey {
        api_key,
        key_id,
        organization: org,
        scopes,
    };
    Ok((key, [create, issue]))
}

impl Engine {
    /// Creates an API key in `org` (creating the organization if it does not exist). Blocks:
    /// for the operator's commands. Returns the key and, for a new organization, its output
    /// key.
    pub fn create_api_key(
        &self,
        org: OrgId,
        scopes: Scopes,
        name: &str,
    ) -> Result<(NewApiKey, Option<String>)> {
        let (key, ops) = new_api_key(org, scopes, name)?;
        let existed = self.store.reader()?.organization(org)?.is_some();
        let output_key = self.output_key_now(org)?;
        for op in ops {
            match self.write_now(op)? {
                WriteOutcome::ClientCreated => {}
                WriteOutcome::Tokens(IssueOutcome::Issued) => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok((key, (!existed).then(|| output_key.to_base64())))
    }

    /// The token endpoint: checks the client's credentials and grants the asked scopes (all the
    /// client's scopes when none are asked), as a fresh access and refresh token pair. Failed
    /// attempts are throttled per client id and per peer (see [`super::throttle`]); correct
    /// credentials always succeed.
    pub async fn issue_token(&self, request: TokenRequest) -> Result<TokenGrant> {
        let grant_type = present(&request.grant_type, "grant_type")?;
        if !matches!(grant_type, "client_credentials" | "refresh_token") {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type {} is not supported; use client_credentials or refresh_token",
                crate::error::quote(grant_type)
            ))
            .into());
        }
        let client_id = present(&request.client_id, "client_id")?;
        let secret = present(&request.client_secret, "client_secret")?;
        let mut granted = self.grant(grant_type, client_id, secret, &request).await;
        // In a cluster the client (or refresh token) may come from another node a moment ago.
        if let (Some(cluster), Err(Error::OAuth(e))) = (self.writes.cluster(), &granted)
            && matches!(
                e.kind,
                OAuthErrorKind::InvalidClient | OAuthErrorKind::InvalidGrant
            )
            && self.may_look_up(request.peer)
            && cluster.catch_up_credentials().await
        {
            granted = self.grant(grant_type, client_id, secret, &request).await;
        }
        let outcome = if granted.is_ok() {
            "granted"
        } else {
            "refused"
        };
        metrics::counter!(crate::metrics::TOKEN_REQUESTS, "outcome" => outcome).increment(1);
        match &granted {
            Err(Error::OAuth(e))
                if matches!(
                    e.kind,
                    OAuthErrorKind::InvalidClient | OAuthErrorKind::InvalidGrant
                ) =>
            {
                let now = std::time::Instant::now();
                if let Err(wait) = self.throttle.failed(client_id, request.peer, now) {
                    return Err(OAuthError::slow_down(wait).into());
                }
                granted
            }
            _ => granted,
        }
    }

    /// The grant, once the request is known well-formed and the client not throttled.
    async fn grant(
        &self,
        grant_type: &str,
        client_id: &str,
        secret: &str,
        request: &TokenRequest,
    ) -> Result<TokenGrant> {
        let now = Timestamp::now();
        let reader = self.store.reader()?;
        let client = reader.client(client_id)?;
        // The hash comparison runs whether or not the client exists.
        let presented = hash_secret(secret);
        let stored = client.as_ref().map_or([0; 32], |c| c.secret_hash);
        let secret_matches = hashes_match(&stored, &presented);
        let client = match client {
            Some(client) if secret_matches && client.revoked_at.is_none() => client,
            _ => {
                return Err(OAuthError::invalid_client(
                    "unknown client, wrong secret, or revoked client",
                )
                .into());
            }
        };
        let allowed = Scopes::from_bits(client.scopes);
        let asked = match request.scope.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_scopes(text).map_err(OAuthError::invalid_scope)?),
        };
        let (granted, scope_text, redeem, family) = match grant_type {
            "client_credentials" => {
                let (scopes, text) = asked.unwrap_or((allowed, allowed.to_string()));
                (scopes, text, None, crate::crypto::random_bytes())
            }
            _ => {
                let token = present(&request.refresh_token, "refresh_token")?;
                let hash = hash_secret(token);
                let record = reader
                    .token(&hash)?
                    .filter(|r| {
                        r.kind == TokenKind::Refresh
                            && r.client_id == client_id
                            && r.expires_at > now
                    })
                    .ok_or_else(|| {
                        OAuthError::invalid_grant(
                            "the refresh token is unknown, used, expired, or another client's",
                        )
                    })?;
                let previous = Scopes::from_bits(record.scopes);
                let family = record.family;
                match asked {
                    Some((scopes, text)) if scopes.is_subset_of(previous) => {
                        (scopes, text, Some(hash), family)
                    }
                    Some(_) => {
                        return Err(OAuthError::invalid_scope(format!(
                            "a refreshed grant cannot widen the scopes `{}`",
                            record.scope_text
                        ))
                        .into());
                    }
                    None => (previous, record.scope_text, Some(hash), family),
                }
            }
        };
        if !granted.is_subset_of(allowed) {
            return Err(OAuthError::invalid_scope(format!(
                "this client may be granted only `{allowed}`"
            ))
            .into());
        }
        if granted == Scopes::default() {
            return Err(OAuthError::invalid_scope("no scope to grant").into());
        }
        drop(reader);

        let access_token = new_secret(ACCESS_TOKEN_PREFIX);
        let refresh_token = new_secret(REFRESH_TOKEN_PREFIX);
        let record = |kind: TokenKind, lifetime: u32| TokenRecord {
            kind,
            redeemed: false,
            family,
            client_id: client_id.to_string(),
            org: client.org,
            scopes: granted.bits(),
            scope_text: scope_text.clone(),
            expires_at: Timestamp::from_micros(
                now.micros() + i64::from(lifetime) * MICROS_PER_SECOND,
            )
            .expect("lifetimes are far from the year 9999"),
        };
        let tokens = vec![
            (
                hash_secret(&access_token),
                record(TokenKind::Access, self.lifetimes.access_secs),
            ),
            (
                hash_secret(&refresh_token),
                record(TokenKind::Refresh, self.lifetimes.refresh_secs),
            ),
        ];
        let op = WriteOp::IssueTokens(IssueRequest {
            client_id: client_id.to_string(),
            tokens,
            redeem,
            at: now,
        });
        match self.write(op).await? {
            WriteOutcome::Tokens(IssueOutcome::Issued) => Ok(TokenGrant {
                access_token,
                refresh_token,
                expires_in: self.lifetimes.access_secs,
                scope: scope_text,
            }),
            WriteOutcome::Tokens(IssueOutcome::ReuseDetected { revoked }) => {
                self.tokens.invalidate();
                tracing::warn!(
                    client_id,
                    revoked,
                    "a refresh token was used twice; every token of its grant was revoked"
                );
                Err(OAuthError::invalid_grant(
                    "this refresh token was used before, so it may have leaked: every token issued from it has been revoked; request a new grant with the client credentials",
                )
                .into())
            }
            other => Err(unexpected(other)),
        }
    }

    /// The caller behind a bearer token.
    pub fn authenticate(&self, bearer: &str) -> Result<Caller> {
        self.authenticate_hash(hash_secret(bearer))
    }

    /// The caller behind the SHA-256 of a bearer token: it must be an access token that has not
    /// expired, of a client that was not revoked.
    fn authenticate_hash(&self, hash: [u8; 32]) -> Result<Caller> {
        let now = Timestamp::now();
        if let Some(caller) = self.tokens.get(&hash, now) {
            return Ok(caller);
        }
        let generation = self.tokens.generation();
        let reader = self.store.reader()?;
        let invalid =
            || Error::Unauthenticated("the access token is not valid (unknown or revoked)".into());
        let record = match reader.token(&hash)? {
            Some(record) if record.kind == TokenKind::Access => record,
            _ => return Err(invalid()),
        };
        if record.expires_at <= now {
            return Err(Error::Unauthenticated(
                "the access token has expired; request a new one".into(),
            ));
        }
        match reader.client(&record.client_id)? {
            Some(client) if client.revoked_at.is_none() => {}
            _ => return Err(invalid()),
        }
        let caller = Caller::Client {
            client_id: record.client_id,
            organization: record.org,
            scopes: Scopes::from_bits(record.scopes),
            token: hash,
            expires_at: record.expires_at,
        };
        self.tokens
            .insert(hash, caller.clone(), record.expires_at, generation);
        Ok(caller)
    }

    /// Checks again that the credential behind `caller` is honoured (not expired, not
    /// revoked): what an open stream does before each message it accepts.
    pub fn recheck(&self, caller: &Caller) -> Result<()> {
        match caller {
            Caller::Operator { .. } => Ok(()),
            Caller::Client { token, .. } => self.authenticate_hash(*token).map(|_| ()),
        }
    }

    /// Resolves, with the error to end the stream with, once the credential behind `caller`
    /// stops being honoured: when its token expires, or as soon as a revocation takes it away.
    /// Never resolves for the operator.
    pub fn credential_lost(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
    ) -> impl std::future::Future<Output = Error> + Send + 'static {
        let engine = self.clone();
        let caller = caller.clone();
        let mut revocations = self.tokens.revocations();
        async move {
            let Caller::Client { expires_at, .. } = caller else {
                return std::future::pending().await;
            };
            let left = (expires_at.micros() - Timestamp::now().micros()).max(0);
            let expiry = tokio::time::sleep(std::time::Duration::from_micros(left as u64));
            tokio::pin!(expiry);
            loop {
                tokio::select! {
                    () = &mut expiry => {
                        return Error::Unauthenticated(
                            "the access token expired while the stream was open; request a new one".into(),
                        );
                    }
                    changed = revocations.changed() => {
                        if changed.is_err() {
                            return std::future::pending().await;
                        }
                        if let Err(error) = engine.recheck(&caller) {
                            return error;
                        }
                    }
                }
            }
        }
    }

    /// Deletes tokens that expired more than a day ago; returns how many.
    pub async fn purge_expired_tokens(&self) -> Result<u64> {
        // Kept a day past expiry, so that a late client hears "expired", not "unknown".
        let before = Timestamp::from_micros(Timestamp::now().micros() - 86_400 * MICROS_PER_SECOND)
            .unwrap_or_else(Timestamp::now);
        // Nothing to delete is no write (the first purge comes at start, beside the first
        // requests).
        if !self.store.reader()?.has_tokens_expired_before(before)? {
            return Ok(0);
        }
        match self.write(WriteOp::PurgeTokens { before }).await? {
            WriteOutcome::TokensPurged(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Creates an OAuth client in `org` (a new organization when `None`, or when it does not
    /// exist yet). Blocks: for the operator's commands and the first start.
    pub fn create_client(&self, org: Option<OrgId>, scopes: Scopes) -> Result<NewClient> {
        if scopes == Scopes::default() {
            return Err(Error::invalid(
                "scopes",
                "a client needs at least one scope",
            ));
        }
        let org = org.unwrap_or_else(|| OrgId(Uuid::new_v4()));
        let first = !self
            .store
            .reader()?
            .clients()?
            .iter()
            .any(|(_, client)| client.org == org);
        let key = self.output_key_now(org)?;
        let (client_id, client_secret, op) = new_client(org, scopes);
        match self.write_now(op)? {
            WriteOutcome::ClientCreated => Ok(NewClient {
                client_id,
                client_secret,
                organization: org,
                scopes,
                output_key: first.then(|| key.to_base64()),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// How many API keys are active and how many revoked.
    pub fn api_key_counts(&self) -> Result<(u64, u64)> {
        let (mut active, mut revoked) = (0, 0);
        for (client_id, record) in self.store.reader()?.clients()? {
            if client_id.starts_with(crate::auth::KEY_ID_PREFIX) {
                match record.revoked_at {
                    None => active += 1,
                    Some(_) => revoked += 1,
                }
            }
        }
        Ok((active, revoked))
    }

    /// Every client, revoked ones included.
    pub fn clients(&self) -> Result<Vec<ClientInfo>> {
        Ok(self
            .store
            .reader()?
            .clients()?
            .into_iter()
            .map(|(client_id, record)| ClientInfo {
                client_id,
                organization: record.org,
                scopes: Scopes::from_bits(record.scopes),
                created_at: record.created_at,
                revoked_at: record.revoked_at,
                name: record.name,
            })
            .collect())
    }

    /// Revokes a client: its tokens stop working at once (open streams included) and it
    /// cannot get new ones. Blocks.
    pub fn revoke_client(&self, client_id: &str) -> Result<()> {
        let op = WriteOp::RevokeClient {
            client_id: client_id.to_string(),
            at: Timestamp::now(),
        };
        let outcome = self.write_now(op);
        self.tokens.invalidate();
        match outcome? {
            WriteOutcome::ClientRevoked(true) => Ok(()),
            WriteOutcome::ClientRevoked(false) => {
                Err(Error::NotFound(format!("no client {client_id}")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// An existing organization's output key, base64, for the operator to hand out again.
    pub fn organization_key(&self, org: OrgId) -> Result<String> {
        let record = self
            .store
            .reader()?
            .organization(org)?
            .ok_or_else(|| Error::NotFound(format!("no organization {org}")))?;
        Ok(self.keys.open(org, &record)?.to_base64())
    }
}
