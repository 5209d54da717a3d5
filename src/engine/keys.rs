//! The organizations' output keys, opened with the master key once and then kept in memory.
//! The master key itself is loaded on first need (from the environment or the data dir's key
//! file, which is created then).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock};

use crate::crypto::{MasterKey, OutputKey};
use crate::error::{Error, Result};
use crate::model::OrgId;
use crate::store::credentials::OrgRecord;
use crate::time::Timestamp;

pub struct Keyring {
    data_dir: PathBuf,
    master: OnceLock<std::result::Result<MasterKey, String>>,
    keys: RwLock<HashMap<OrgId, OutputKey>>,
}

impl Keyring {
    pub fn new(data_dir: PathBuf) -> Keyring {
        Keyring {
            data_dir,
            master: OnceLock::new(),
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// A keyring with the master key given (cluster mode: the same key on every node).
    pub fn with_master(data_dir: PathBuf, master: MasterKey) -> Keyring {
        let keyring = Keyring::new(data_dir);
        let _ = keyring.master.set(Ok(master));
        keyring
    }

    /// Cluster mode: the organization's derived key, kept, and the write creating the
    /// organization with it (see [`crate::cluster::organization`]).
    pub fn derived(&self, org: OrgId) -> Result<(OutputKey, crate::store::WriteOp)> {
        let (key, create) = crate::cluster::organization(self.master()?, org);
        self.keys
            .write()
            .expect("never poisoned")
            .insert(org, key.clone());
        Ok((key, create))
    }

    /// The master key, loading or creating it on first use.
    pub fn master(&self) -> Result<&MasterKey> {
        self.master
            .get_or_init(|| MasterKey::load_or_create(&self.data_dir))
            .as_ref()
            .map_err(|reason| Error::Unavailable(format!("output keys are unavailable: {reason}")))
    }

    pub fn cached(&self, org: OrgId) -> Option<OutputKey> {
        self.keys.read().expect("never poisoned").get(&org).cloned()
    }

    /// Opens a stored organization's key and keeps it.
    pub fn open(&self, org: OrgId, record: &OrgRecord) -> Result<OutputKey> {
        let key = self
            .master()?
            .open_org_key(org, &record.sealed_key)
            .map_err(Error::Unavailable)?;
        self.keys
            .write()
            .expect("never poisoned")
            .insert(org, key.clone());
        Ok(key)
    }

    /// Opens a stored organization's key at start, saying what to do when the master key
    /// cannot: a data dir whose key file went missing must not silently get a new one.
    pub fn open_existing(&self, org: OrgId, record: &OrgRecord) -> Result<OutputKey> {
        let key_file = self.data_dir.join(crate::crypto::MASTER_KEY_FILE);
        if self.master.get().is_none()
            && std::env::var_os(crate::crypto::MASTER_KEY_ENV).is_none()
            && !key_file.exists()
        {
            return Err(Error::Unavailable(format!(
                "the database holds organizations, but there is no master key: {} is missing and {} is not set; restore the key file this data dir was created with (backups carry it), or outputs cannot be read",
                key_file.display(),
                crate::crypto::MASTER_KEY_ENV
            )));
        }
        self.open(org, record)
    }

    /// A fresh key for a new organization, sealed for storage.
    pub fn new_record(&self, org: OrgId) -> Result<OrgRecord> {
        let key = OutputKey::generate();
        Ok(OrgRecord {
            sealed_key: self.master()?.seal_org_key(org, &key),
            created_at: Timestamp::now(),
        })
    }
}
