//! Output encryption. Every organization has a 256-bit output key; a task run's output is sealed
//! with XChaCha20-Poly1305 when it is ingested, as `nonce (24 bytes) || ciphertext || tag (16
//! bytes)` with no associated data, so any XChaCha20-Poly1305 implementation (libsodium's
//! `crypto_aead_xchacha20poly1305_ietf`, PyNaCl) opens it with the key alone. Organization keys
//! are stored sealed under a master key, never in plain text.
//!
//! Output nonces are synthetic: derived from a key-specific secret, the task-run UUID and the
//! plaintext. Two reports of the same run with the same output therefore store the same bytes
//! (so a redelivery is recognised as unchanged), while any difference gives an unrelated nonce.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::model::{OrgId, TaskRunId};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// Fills `bytes` from the operating system's secure random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides secure randomness");
    bytes
}

/// An organization's output key.
#[derive(Clone)]
pub struct OutputKey {
    key: [u8; 32],
    /// Secret for deriving output nonces, derived from the key.
    nonce_secret: [u8; 32],
}

impl std::fmt::Debug for OutputKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputKey(..)")
    }
}

impl OutputKey {
    pub fn generate() -> OutputKey {
        OutputKey::from_bytes(random_bytes())
    }

    pub fn from_bytes(key: [u8; 32]) -> OutputKey {
        let nonce_secret = Sha256::new()
            .chain_update(b"runledger output nonce v1")
            .chain_update(key)
            .finalize()
            .into();
        OutputKey { key, nonce_secret }
    }

    /// The key as users receive it: standard padded base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key)
    }

    pub fn from_base64(text: &str) -> Result<OutputKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "the key is not base64".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the key is not 32 bytes long".to_string())?;
        Ok(OutputKey::from_bytes(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Seals a task run's output. Empty output stays empty.
    pub fn seal_output(&self, task_run: &TaskRunId, plaintext: &[u8]) -> Vec<u8> {
        if plaintext.is_empty() {
            return Vec::new();
        }
        let digest = Sha256::new()
            .chain_update(self.nonce_secret)
            .chain_update(task_run.as_bytes())
            .chain_update((plaintext.len() as u64).to_be_bytes())
            .chain_update(plaintext)
            .finalize();
        let nonce: [u8; NONCE_LEN] = digest[..NONCE_LEN].try_into().expect("24 of 32 bytes");
        seal(&self.key, nonce, plaintext, b"")
    }

    /// Opens a sealed output.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        open(&self.key, sealed, b"")
    }
}

fn seal(key: &[u8; 32], nonce: [u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&Key::from(*key));
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed
}

fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err("the value is too short to be sealed".into());
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at 24");
    XChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| "the value does not open with this key (wrong key or altered value)".into())
}

/// Opens a base64 envelope with a base64 key: what `runledger decrypt` does.
pub fn decrypt_base64(key: &str, value: &str) -> Result<Vec<u8>, String> {
    let key = OutputKey::from_base64(key)?;
    let sealed = STANDARD
        .decode(value.trim())
        .map_err(|_| "the value is not base64".to_string())?;
    key.open(&sealed)
}

/// The key that seals organization keys at rest.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

/// The environment variable that may hold the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "RUNLEDGER_MASTER_KEY";
/// The key file created in the data dir when the environment does not provide the key.
pub const MASTER_KEY_FILE: &str = "master.key";

impl MasterKey {
    /// The master key from `RUNLEDGER_MASTER_KEY`, else from `DIR/master.key`, which is created
    /// (readable by its owner only) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<MasterKey, String> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return MasterKey::from_base64(&text).map_err(|e| format!("{MASTER_KEY_ENV}: {e}"));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                MasterKey::from_base64(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey(random_bytes());
                crate::private::write_new(&path, STANDARD.encode(key.0).as_bytes())
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The master key from `RUNLEDGER_MASTER_KEY` or else the key file `path`; `None` when
    /// neither is given.
    pub fn given(path: Option<&Path>) -> Result<Option<MasterKey>, String> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return MasterKey::from_base64(&text)
                .map(Some)
                .map_err(|e| format!("{MASTER_KEY_ENV}: {e}"));
        }
        let Some(path) = path else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the master key file {}: {e}", path.display()))?;
        MasterKey::from_base64(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_base64(text: &str) -> Result<MasterKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "the master key is not base64".to_string())?;
        bytes
            .try_into()
            .map(MasterKey)
            .map_err(|_| "the master key is not 32 bytes long".to_string())
    }

    /// Seals an organization's key, bound to the organization (its UUID is the associated
    /// data, so a sealed key cannot be moved to another organization).
    pub fn seal_org_key(&self, org: OrgId, key: &OutputKey) -> Vec<u8> {
        seal(&self.0, random_bytes(), key.as_bytes(), org.as_bytes())
    }

    /// Cluster mode: the organization's output key derived from the master key, so that every
    /// node (and every command) that seals an output for a new organization uses the same key
    /// whichever of them created the organization. SHA-256 over the secret master key, a label
    /// and the organization's UUID.
    pub fn derive_org_key(&self, org: OrgId) -> OutputKey {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(b"runledger cluster output key v1");
        hasher.update(org.as_bytes());
        OutputKey::from_bytes(hasher.finalize().into())
    }

    /// A 256-bit key for one purpose, named by `label`: HMAC-SHA256 of the label under the
    /// master key, so keys for different purposes say nothing about each other or the master.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    pub fn open_org_key(&self, org: OrgId, sealed: &[u8]) -> Result<OutputKey, String> {
        let bytes = open(&self.0, sealed, org.as_bytes()).map_err(|_| {
            format!("the master key does not open the output key of organization {org} (is {MASTER_KEY_ENV} or {MASTER_KEY_FILE} the one this data dir was created with?)")
        })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("the output key of organization {org} is damaged"))?;
        Ok(OutputKey::from_bytes(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn outputs_round_trip_and_redeliveries_seal_identically() {
        let key = OutputKey::generate();
        let run = TaskRunId(Uuid::from_u128(7));
        let sealed = key.seal_output(&run, b"rows=3");
        assert_eq!(sealed.len(), NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(key.open(&sealed).unwrap(), b"rows=3");
        assert_eq!(key.seal_output(&run, b"rows=3"), sealed);
        assert_ne!(
            key.seal_output(&run, b"rows=4")[..NONCE_LEN],
            sealed[..NONCE_LEN]
        );
        assert_ne!(
            key.seal_output(&TaskRunId(Uuid::from_u128(8)), b"rows=3")[..NONCE_LEN],
            sealed[..NONCE_LEN]
        );
        assert!(key.seal_output(&run, b"").is_empty());
        let decrypted = decrypt_base64(&key.to_base64(), &STANDARD.encode(&sealed)).unwrap();
        assert_eq!(decrypted, b"rows=3");
    }

    #[test]
    fn wrong_keys_and_altered_values_fail_with_a_reason() {
        let key = OutputKey::generate();
        let mut sealed = key.seal_output(&TaskRunId(Uuid::nil()), b"secret");
        assert!(
            OutputKey::generate()
                .open(&sealed)
                .unwrap_err()
                .contains("does not open")
        );
        sealed[30] ^= 1;
        assert!(key.open(&sealed).is_err());
        assert!(key.open(&[1, 2, 3]).unwrap_err().contains("too short"));
        assert!(OutputKey::from_base64("abc").is_err());
    }

    #[test]
    fn org_keys_are_bound_to_their_organization() {
        let master = MasterKey(random_bytes());
        let key = OutputKey::generate();
        let org = OrgId(Uuid::from_u128(1));
        let sealed = master.seal_org_key(org, &key);
        assert_eq!(
            master.open_org_key(org, &sealed).unwrap().as_bytes(),
            key.as_bytes()
        );
        assert!(
            master
                .open_org_key(OrgId(Uuid::from_u128(2)), &sealed)
                .is_err()
        );
        assert!(
            MasterKey(random_bytes())
                .open_org_key(org, &sealed)
                .is_err()
        );
    }

    #[test]
    fn the_master_key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_create(dir.path()).unwrap();
        let second = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.0, second.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
