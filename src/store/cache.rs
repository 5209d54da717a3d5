//! An in-memory cache of facts that never change once committed (a pipeline's organization, a
//! task's pipeline, the UUID behind an id, an organization's index), so that most requests
//! resolve their pipeline or task without a tree lookup. Only committed facts are inserted.

use std::sync::RwLock;

use rustc_hash::FxHashMap as HashMap;

use uuid::Uuid;

use super::records::EntityKey;
use super::tables::{EntityId, OrgIndex};
use crate::model::OrgId;

/// Entity keys by organization and UUID, UUIDs by entity id, organization indexes.
#[derive(Debug, Default)]
pub struct EntityCache {
    keys: RwLock<HashMap<(OrgIndex, Uuid), EntityKey>>,
    uuids: RwLock<HashMap<EntityId, Uuid>>,
    orgs: RwLock<HashMap<OrgId, OrgIndex>>,
}

impl EntityCache {
    pub fn get(&self, org: OrgIndex, uuid: &Uuid) -> Option<EntityKey> {
        read(&self.keys).get(&(org, *uuid)).copied()
    }

    pub fn insert(&self, uuid: Uuid, key: EntityKey) {
        write(&self.keys).insert((key.org_index, uuid), key);
        self.insert_uuid(key.id, uuid);
    }

    pub fn uuid(&self, id: EntityId) -> Option<Uuid> {
        read(&self.uuids).get(&id).copied()
    }

    pub fn insert_uuid(&self, id: EntityId, uuid: Uuid) {
        write(&self.uuids).insert(id, uuid);
    }

    pub fn org_index(&self, org: OrgId) -> Option<OrgIndex> {
        read(&self.orgs).get(&org).copied()
    }

    pub fn insert_org(&self, org: OrgId, index: OrgIndex) {
        write(&self.orgs).insert(org, index);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
