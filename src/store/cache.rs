//! An in-memory cache of entity facts that never change once committed (a pipeline's
//! organization, a task's pipeline, the UUID behind an id), so that most requests resolve their
//! pipeline or task without a tree lookup. Only committed entities are ever inserted.

use std::collections::HashMap;
use std::sync::RwLock;

use uuid::Uuid;

use super::records::EntityKey;
use super::tables::EntityId;

/// Entity keys by UUID, and UUIDs by entity id.
#[derive(Debug, Default)]
pub struct EntityCache {
    keys: RwLock<HashMap<Uuid, EntityKey>>,
    uuids: RwLock<HashMap<EntityId, Uuid>>,
}

impl EntityCache {
    pub fn get(&self, uuid: &Uuid) -> Option<EntityKey> {
        self.keys
            .read()
            .expect("cache lock is never poisoned")
            .get(uuid)
            .copied()
    }

    pub fn insert(&self, uuid: Uuid, key: EntityKey) {
        self.keys
            .write()
            .expect("cache lock is never poisoned")
            .insert(uuid, key);
        self.insert_uuid(key.id, uuid);
    }

    pub fn uuid(&self, id: EntityId) -> Option<Uuid> {
        self.uuids
            .read()
            .expect("cache lock is never poisoned")
            .get(&id)
            .copied()
    }

    pub fn insert_uuid(&self, id: EntityId, uuid: Uuid) {
        self.uuids
            .write()
            .expect("cache lock is never poisoned")
            .insert(id, uuid);
    }
}
