//! Access tokens already checked, kept in memory so that a request costs no database read to
//! authenticate. An entry is trusted until the token expires, and only while no credential
//! was revoked since it was read (a generation counter the revocations bump). Revocations are
//! also announced, so that open streams can check their credential again at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use tokio::sync::watch;

use crate::auth::Caller;
use crate::time::Timestamp;

/// Entries kept at most; past it the cache starts over (a rare, harmless cost).
const MAX_ENTRIES: usize = 16_384;

pub struct TokenCache {
    entries: Mutex<FxHashMap<[u8; 32], Entry>>,
    generation: AtomicU64,
    revocations: watch::Sender<u64>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
            revocations: watch::Sender::new(0),
        }
    }
}

struct Entry {
    caller: Caller,
    expires_at: Timestamp,
    generation: u64,
}

impl TokenCache {
    /// The generation to pass to [`TokenCache::insert`]: read it before reading the token, so
    /// that a revocation committed in between invalidates the entry.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The caller of a token hash checked before, if still valid at `now`.
    pub fn get(&self, hash: &[u8; 32], now: Timestamp) -> Option<Caller> {
        let generation = self.generation();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|e| e.generation == generation && now < e.expires_at)
            .map(|e| e.caller.clone())
    }

    pub fn insert(&self, hash: [u8; 32], caller: Caller, expires_at: Timestamp, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                caller,
                expires_at,
                generation,
            },
        );
    }

    /// Forgets every entry and tells the subscribers: a credential was revoked.
    pub fn invalidate(&self) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.revocations.send_replace(generation);
    }

    /// Announces every revocation from now on.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }
}
