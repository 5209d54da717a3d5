//! Every redb table of the database and the encoding of its keys. Keys are fixed-width big-endian
//! byte strings, so byte order is the order that range reads need (time order within an entity).
//!
//! | table            | key                                          | value                     |
//! |------------------|----------------------------------------------|---------------------------|
//! Pipeline, task, task-run and pipeline-run UUIDs are namespaced per organization: every table
//! keyed by one of them puts the organization's interned [`OrgIndex`] first, so organization A's
//! pipeline X and organization B's pipeline X are two keys that never meet.
//!
//! | table            | key                                          | value                     |
//! |------------------|----------------------------------------------|---------------------------|
//! | `meta`           | name                                         | format version, counters  |
//! | `org_index`      | organization UUID                            | its [`OrgIndex`]          |
//! | `entity_keys`    | org index, pipeline or task UUID             | [`EntityKey`] (fixed)     |
//! | `entities`       | entity id                                    | name, task type, ...      |
//! | `pipeline_tasks` | pipeline id, task id                         | -                         |
//! | `task_runs`      | org index, task-run UUID                     | where the run lives       |
//! | `run_log`        | pipeline id, executed_at, task-run UUID      | the finished task run     |
//! | `pipeline_runs`  | org index, pipeline-run UUID                 | its aggregate             |
//! | `run_members`    | org index, pipeline-run UUID, executed_at    | task runs then (large)    |
//! | `rollups`        | entity id, level, bucket start               | a tally (varints)         |
//! | `last_runs`      | entity id                                    | the latest finished run   |
//! | `organizations`  | organization UUID                            | sealed output key         |
//! | `clients`        | client id                                    | organization, secret hash |
//! | `tokens`         | SHA-256 of a token                           | its grant and expiry      |
//! | `token_expiry`   | expiry, token hash                           | -                         |
//! | `token_family`   | grant family, token hash                     | -                         |
//! | `pending`        | serial                                       | task-run UUID, org UUID   |

use redb::TableDefinition;

use crate::time::Level;

/// Format version and counters.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Organization UUID -> its [`OrgIndex`] (big-endian), handed out on first use.
pub const ORG_INDEX: TableDefinition<&[u8; 16], u32> = TableDefinition::new("org_index");
/// Org index and pipeline or task UUID -> the immutable facts needed on every request
/// ([`EntityKey`]).
pub const ENTITY_KEYS: TableDefinition<&[u8; SCOPED_KEY_LEN], &[u8; ENTITY_KEY_LEN]> =
    TableDefinition::new("entity_keys");
/// Entity id -> the mutable details ([`super::records::EntityDetail`]).
pub const ENTITIES: TableDefinition<u32, &[u8]> = TableDefinition::new("entities");
/// The tasks of each pipeline.
pub const PIPELINE_TASKS: TableDefinition<&[u8; 8], ()> = TableDefinition::new("pipeline_tasks");
/// Org index and task-run UUID -> where the run lives ([`super::records::TaskRunHome`]).
pub const TASK_RUNS: TableDefinition<&[u8; SCOPED_KEY_LEN], &[u8]> =
    TableDefinition::new("task_runs");
/// The finished task runs of each pipeline in time order ([`super::records::RunRecord`]).
pub const RUN_LOG: TableDefinition<&[u8; RUN_KEY_LEN], &[u8]> = TableDefinition::new("run_log");
/// Org index and pipeline-run UUID -> its aggregate ([`super::records::PipelineRunAgg`]).
pub const PIPELINE_RUNS: TableDefinition<&[u8; SCOPED_KEY_LEN], &[u8]> =
    TableDefinition::new("pipeline_runs");
/// The instants of the finished task runs of pipeline runs too large to keep them in their
/// aggregate: org index, pipeline-run UUID, executed_at (microseconds) -> how many of its task
/// runs ended then. When such a pipeline run's latest task run is replaced, its new latest is
/// the last key of its range: one lookup, however many runs there are.
pub const RUN_MEMBERS: TableDefinition<&[u8; MEMBER_KEY_LEN], u32> =
    TableDefinition::new("run_members");
/// Per-entity, per-level, per-bucket tallies.
pub const ROLLUPS: TableDefinition<&[u8; ROLLUP_KEY_LEN], &[u8]> = TableDefinition::new("rollups");
/// Entity id -> its latest finished run ([`super::records::LastRunRecord`]).
pub const LAST_RUNS: TableDefinition<u32, &[u8; super::records::LAST_RUN_LEN]> =
    TableDefinition::new("last_runs");

/// Organization UUID -> [`super::credentials::OrgRecord`].
pub const ORGANIZATIONS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("organizations");
/// Client id -> [`super::credentials::ClientRecord`].
pub const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
/// SHA-256 of a token -> [`super::credentials::TokenRecord`].
pub const TOKENS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tokens");
/// Expiry time and token hash, for purging expired tokens.
pub const TOKEN_EXPIRY: TableDefinition<&[u8; 40], ()> = TableDefinition::new("token_expiry");
/// Grant family and token hash: every token issued from one client-credentials grant and the
/// refresh tokens that descend from it, so that a reused refresh token revokes them all.
pub const TOKEN_FAMILY: TableDefinition<&[u8; 48], ()> = TableDefinition::new("token_family");
/// Task runs created by running a pipeline that wait for an executor, in creation order:
/// serial -> task-run UUID and organization UUID.
pub const PENDING: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("pending");

/// Calls `$visit!(TABLE)` for every table of the database, so that creating, copying and
/// describing them cannot forget one.
macro_rules! for_each_table {
    ($visit:ident) => {
        $visit!(META);
        $visit!(ORG_INDEX);
        $visit!(ENTITY_KEYS);
        $visit!(ENTITIES);
        $visit!(PIPELINE_TASKS);
        $visit!(TASK_RUNS);
        $visit!(RUN_LOG);
        $visit!(PIPELINE_RUNS);
        $visit!(RUN_MEMBERS);
        $visit!(ROLLUPS);
        $visit!(LAST_RUNS);
        $visit!(ORGANIZATIONS);
        $visit!(CLIENTS);
        $visit!(TOKENS);
        $visit!(TOKEN_EXPIRY);
        $visit!(TOKEN_FAMILY);
        $visit!(PENDING);
    };
}
pub(crate) use for_each_table;

/// The interned id of a pipeline or task: four bytes instead of sixteen in every key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityId(pub u32);

/// The interned id of an organization, first in the key of every table whose key is a UUID the
/// organization chose, so that those UUIDs are namespaced per organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgIndex(pub u32);

pub const ENTITY_KEY_LEN: usize = 29;
pub const SCOPED_KEY_LEN: usize = 20;
pub const MEMBER_KEY_LEN: usize = 28;
pub const RUN_KEY_LEN: usize = 28;
pub const ROLLUP_KEY_LEN: usize = 13;

/// The key of a UUID in an organization's namespace: org index, UUID.
pub fn scoped_key(org: OrgIndex, uuid: &[u8; 16]) -> [u8; SCOPED_KEY_LEN] {
    let mut key = [0u8; SCOPED_KEY_LEN];
    key[..4].copy_from_slice(&org.0.to_be_bytes());
    key[4..].copy_from_slice(uuid);
    key
}

/// `run_members` key: org index, pipeline-run UUID, executed_at (microseconds).
pub fn member_key(org: OrgIndex, pipeline_run: &[u8; 16], micros: i64) -> [u8; MEMBER_KEY_LEN] {
    let mut key = [0u8; MEMBER_KEY_LEN];
    key[..SCOPED_KEY_LEN].copy_from_slice(&scoped_key(org, pipeline_run));
    key[SCOPED_KEY_LEN..].copy_from_slice(&encode_time(micros));
    key
}

/// The executed_at of a `run_members` key.
pub fn member_key_micros(key: &[u8; MEMBER_KEY_LEN]) -> i64 {
    decode_time(key[SCOPED_KEY_LEN..].try_into().expect("8 bytes"))
}

/// The order-preserving encoding of a signed time (sign bit flipped, big-endian).
pub fn encode_time(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_time(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// `run_log` key: pipeline id, executed_at (microseconds), task-run UUID.
pub fn run_key(
    pipeline: EntityId,
    executed_at_micros: i64,
    task_run: &[u8; 16],
) -> [u8; RUN_KEY_LEN] {
    let mut key = [0u8; RUN_KEY_LEN];
    key[..4].copy_from_slice(&pipeline.0.to_be_bytes());
    key[4..12].copy_from_slice(&encode_time(executed_at_micros));
    key[12..].copy_from_slice(task_run);
    key
}

/// The bounds of a pipeline's `run_log` entries with executed_at in `[from, to)` microseconds.
pub fn run_key_bounds(
    pipeline: EntityId,
    from_micros: i64,
    to_micros: i64,
) -> ([u8; RUN_KEY_LEN], [u8; RUN_KEY_LEN]) {
    (
        run_key(pipeline, from_micros, &[0; 16]),
        run_key(pipeline, to_micros, &[0; 16]),
    )
}

/// The parts of a `run_log` key.
pub fn split_run_key(key: &[u8; RUN_KEY_LEN]) -> (EntityId, i64, [u8; 16]) {
    let pipeline = EntityId(u32::from_be_bytes(key[..4].try_into().expect("4 bytes")));
    let micros = decode_time(key[4..12].try_into().expect("8 bytes"));
    let task_run = key[12..].try_into().expect("16 bytes");
    (pipeline, micros, task_run)
}

/// `rollups` key: entity id, level tag, bucket start (seconds).
pub fn rollup_key(entity: EntityId, level: Level, bucket_start: i64) -> [u8; ROLLUP_KEY_LEN] {
    let mut key = [0u8; ROLLUP_KEY_LEN];
    key[..4].copy_from_slice(&entity.0.to_be_bytes());
    key[4] = level.tag();
    key[5..].copy_from_slice(&encode_time(bucket_start));
    key
}

/// The bounds of every `rollups` key of an entity, all levels.
pub fn rollup_entity_bounds(entity: EntityId) -> ([u8; ROLLUP_KEY_LEN], [u8; ROLLUP_KEY_LEN]) {
    let mut low = [0u8; ROLLUP_KEY_LEN];
    low[..4].copy_from_slice(&entity.0.to_be_bytes());
    let mut high = [0xff; ROLLUP_KEY_LEN];
    high[..4].copy_from_slice(&entity.0.to_be_bytes());
    (low, high)
}

/// The bucket start of a `rollups` key.
pub fn rollup_key_bucket(key: &[u8; ROLLUP_KEY_LEN]) -> i64 {
    decode_time(key[5..].try_into().expect("8 bytes"))
}

/// The entity id and level tag of a `rollups` key.
pub fn rollup_key_series(key: &[u8; ROLLUP_KEY_LEN]) -> (EntityId, u8) {
    (
        EntityId(u32::from_be_bytes(key[..4].try_into().expect("4 bytes"))),
        key[4],
    )
}

/// `pipeline_tasks` key.
pub fn pipeline_task_key(pipeline: EntityId, task: EntityId) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&pipeline.0.to_be_bytes());
    key[4..].copy_from_slice(&task.0.to_be_bytes());
    key
}

/// `meta` keys.
pub mod meta {
    /// The file format version, a little-endian u32.
    pub const FORMAT: &str = "format";
    /// The next entity id to hand out, a little-endian u32.
    pub const NEXT_ENTITY_ID: &str = "next_entity_id";
    /// The next task-run serial number (the REST `id`), a little-endian u64.
    pub const NEXT_TASK_RUN_SERIAL: &str = "next_task_run_serial";
    /// The next organization index to hand out, a little-endian u32.
    pub const NEXT_ORG_INDEX: &str = "next_org_index";
}

/// The file format this build reads and writes. 3: UUIDs namespaced per organization, the
/// pipeline-run member index and token families. (2: rollups at six levels with parts; 1: second
/// and minute buckets without parts.)
pub const FORMAT_VERSION: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn time_encoding_preserves_order(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), encode_time(a).cmp(&encode_time(b)));
            prop_assert_eq!(decode_time(encode_time(a)), a);
        }

        #[test]
        fn run_keys_sort_by_pipeline_then_time(p1 in 0u32..4, p2 in 0u32..4, t1: i64, t2: i64) {
            let k1 = run_key(EntityId(p1), t1, &[7; 16]);
            let k2 = run_key(EntityId(p2), t2, &[7; 16]);
            prop_assert_eq!(k1.cmp(&k2), (p1, t1).cmp(&(p2, t2)));
            prop_assert_eq!(split_run_key(&k1), (EntityId(p1), t1, [7; 16]));
        }

        #[test]
        fn member_keys_sort_by_organization_then_run_then_time(
            o1 in 0u32..3, o2 in 0u32..3, r1 in 0u8..3, r2 in 0u8..3, t1: i64, t2: i64,
        ) {
            let k1 = member_key(OrgIndex(o1), &[r1; 16], t1);
            let k2 = member_key(OrgIndex(o2), &[r2; 16], t2);
            prop_assert_eq!(k1.cmp(&k2), (o1, r1, t1).cmp(&(o2, r2, t2)));
            prop_assert_eq!(member_key_micros(&k1), t1);
        }
    }
}
