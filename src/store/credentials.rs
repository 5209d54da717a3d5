//! The stored forms of credentials: organizations with their sealed output keys, OAuth clients
//! with hashed secrets, and issued tokens, stored only as SHA-256 hashes (with an expiry index
//! for purging and a family index for revoking a grant). The writes are in `batch::credentials`.

use super::records::corrupt;
use crate::error::Result;
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
    /// What the operator called it (API keys' `--name`); empty when unnamed.
    pub name: String,
}

/// The fixed part of a client record; the name follows.
const CLIENT_LEN: usize = 16 + 32 + 1 + 8 + 8;

impl ClientRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CLIENT_LEN + self.name.len());
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
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ClientRecord> {
        if bytes.len() < CLIENT_LEN {
            return Err(corrupt("client"));
        }
        let (bytes, name) = bytes.split_at(CLIENT_LEN);
        let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("client"))?;
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
            name,
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
            name: String::new(),
        };
        assert_eq!(ClientRecord::decode(&client.encode()).unwrap(), client);
        let revoked = ClientRecord {
            revoked_at: Some(at),
            name: "airflow-prod ✓".into(),
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
