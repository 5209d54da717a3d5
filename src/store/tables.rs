//! Every redb table of the database, listed once, and the encoding of its keys. Keys are
//! fixed-width big-endian byte strings, so byte order is the order that range reads need.
//!
//! Pipeline, task, task-run and pipeline-run UUIDs are namespaced per organization: every key
//! made of one of them puts the organization's interned [`OrgIndex`] first, so organization A's
//! pipeline X and organization B's pipeline X are two keys that never meet.
//!
//! The large tables are laid out so that a transaction of runs arriving in time order writes
//! few pages: the run log by pipeline and time; pipeline runs by an id handed out in arrival
//! order; the UUID indexes (the only keys that are random) by arrival period first, so that
//! inserts land in the newest period's small subtree (a Bloom filter per period finds older
//! UUIDs); rollups finer than a year by level and bucket first, so the records of a
//! transaction's buckets sit together.
//!
//! | table            | key                                          | value                      |
//! |------------------|----------------------------------------------|----------------------------|
//! | `meta`           | name                                         | format version, counters   |
//! | `org_index`      | organization UUID                            | its [`OrgIndex`]           |
//! | `entity_keys`    | org index, pipeline or task UUID             | [`EntityKey`] (fixed)      |
//! | `entities`       | entity id                                    | UUID, name, task type, ... |
//! | `pipeline_tasks` | pipeline id, task id                         | -                          |
//! | `task_index`     | period, org index, task-run UUID             | where the run lives        |
//! | `run_log`        | pipeline id, executed_at, task-run UUID      | the finished task run      |
//! | `pipeline_index` | period, org index, pipeline-run UUID         | its pipeline-run id        |
//! | `pipeline_runs`  | pipeline-run id                              | its aggregate              |
//! | `run_members`    | pipeline-run id, executed_at                 | task runs then (large)     |
//! | `index_filters`  | index, period, chunk                         | Bloom filter bits          |
//! | `year_rollups`   | entity id, year start                        | a tally with month parts   |
//! | `rollups`        | level, bucket start, entity id               | a tally with finer parts   |
//! | `last_runs`      | entity id                                    | the latest finished run    |
//! | `organizations`  | organization UUID                            | sealed output key          |
//! | `clients`        | client id                                    | organization, secret hash  |
//! | `tokens`         | SHA-256 of a token                           | its grant and expiry       |
//! | `token_expiry`   | expiry, token hash                           | -                          |
//! | `token_family`   | grant family, token hash                     | -                          |
//! | `pending`        | serial                                       | index key, org UUID        |
//! | `running`        | pipeline id, started_at, task-run UUID       | its `task_index` key       |
//! | `lineage_runs`   | org index, OpenLineage run UUID              | what its events said       |
//! | `alert_rules`    | organization UUID, rule UUID                 | the rule (secret sealed)   |
//! | `alert_state`    | organization, rule and pipeline UUIDs        | the firing alert           |
//! | `alerts`         | organization UUID, alert serial              | the alert and its state    |
//! | `outbox`         | delivery serial                              | a transition to deliver    |
//! | `writers`        | stream writer id                             | its last applied number    |
//! | `early`          | stream writer id, number                     | a copy kept for its turn   |
//! | `skipped`        | stream sequence                              | why it was skipped         |
//!
//! [`EntityKey`]: super::records::EntityKey

use redb::TableDefinition;

use crate::time::Level;

/// Declares every table once: its definition, and its place in [`visit_tables`] and in
/// [`WriteTables`] (all tables open in one write transaction).
macro_rules! tables {
    ($($(#[$doc:meta])* $field:ident / $name:ident: $key:ty => $value:ty;)*) => {
        $(
            $(#[$doc])*
            pub const $name: TableDefinition<$key, $value> = TableDefinition::new(stringify!($field));
        )*

        /// Every table, open in one write transaction.
        pub struct WriteTables<'txn> {
            $(pub $field: redb::Table<'txn, $key, $value>,)*
        }

        impl<'txn> WriteTables<'txn> {
            pub fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, redb::TableError> {
                Ok(WriteTables { $($field: txn.open_table($name)?,)* })
            }
        }

        /// Shows every table to `visitor`, in a fixed order.
        pub fn visit_tables<V: TableVisitor>(visitor: &mut V) -> Result<(), V::Error> {
            $(visitor.visit($name)?;)*
            Ok(())
        }
    };
}

/// Something done to every table (creating, copying, describing, hashing).
pub trait TableVisitor {
    type Error;
    fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), Self::Error>;
}

tables! {
    /// Format version and counters.
    meta / META: &'static str => &'static [u8];
    /// Organization UUID -> its [`OrgIndex`], handed out on first use.
    org_index / ORG_INDEX: &'static [u8; 16] => u32;
    /// Org index and pipeline or task UUID -> the facts needed on every request.
    entity_keys / ENTITY_KEYS: &'static [u8; SCOPED_KEY_LEN] => &'static [u8; ENTITY_KEY_LEN];
    /// Entity id -> the details registration may change (and its UUID).
    entities / ENTITIES: u32 => &'static [u8];
    /// The tasks of each pipeline.
    pipeline_tasks / PIPELINE_TASKS: &'static [u8; 8] => ();
    /// Org index, name and UUID of each pipeline -> its id: an organization's pipelines in the
    /// overview's order (see [`pipeline_name_key`]).
    pipeline_names / PIPELINE_NAMES: &'static [u8] => u32;
    /// Period, org index and task-run UUID -> where the run lives.
    task_index / TASK_INDEX: &'static [u8; INDEX_KEY_LEN] => &'static [u8];
    /// The finished task runs of each pipeline in time order.
    run_log / RUN_LOG: &'static [u8; RUN_KEY_LEN] => &'static [u8];
    /// Period, org index and pipeline-run UUID -> the pipeline run's id (big-endian u64).
    pipeline_index / PIPELINE_INDEX: &'static [u8; INDEX_KEY_LEN] => u64;
    /// Pipeline-run id -> its aggregate.
    pipeline_runs / PIPELINE_RUNS: u64 => &'static [u8];
    /// The instants of the task runs of pipeline runs too large to keep them in their
    /// aggregate: pipeline-run id, executed_at -> how many ended then.
    run_members / RUN_MEMBERS: &'static [u8; MEMBER_KEY_LEN] => u32;
    /// The Bloom filters of the UUID indexes' periods, in chunks.
    index_filters / INDEX_FILTERS: &'static [u8; FILTER_KEY_LEN] => &'static [u8];
    /// Entity id and year -> the entity's tally that year, with a part per month.
    year_rollups / YEAR_ROLLUPS: &'static [u8; YEAR_KEY_LEN] => &'static [u8];
    /// Level, bucket start and entity id -> the entity's tally in a month, day or hour, with a
    /// part per day, hour or second; kept only where the pipeline is dense (see `rollup`).
    rollups / ROLLUPS: &'static [u8; ROLLUP_KEY_LEN] => &'static [u8];
    /// Entity id -> its latest finished run.
    last_runs / LAST_RUNS: u32 => &'static [u8; LAST_RUN_LEN];
    /// Organization UUID -> its sealed output key.
    organizations / ORGANIZATIONS: &'static [u8; 16] => &'static [u8];
    /// Client id -> organization, secret hash, scopes, revocation.
    clients / CLIENTS: &'static str => &'static [u8];
    /// SHA-256 of a token -> its grant.
    tokens / TOKENS: &'static [u8; 32] => &'static [u8];
    /// Expiry time and token hash, for purging expired tokens.
    token_expiry / TOKEN_EXPIRY: &'static [u8; 40] => ();
    /// Grant family and token hash: every token issued from one client-credentials grant and
    /// its refreshes, so that a reused refresh token revokes them all.
    token_family / TOKEN_FAMILY: &'static [u8; 48] => ();
    /// Task runs created by running a pipeline that wait for an executor, in creation order:
    /// serial -> their `task_index` key and organization UUID.
    pending / PENDING: u64 => &'static [u8; PENDING_LEN];
    /// Task runs reported running, by pipeline and start: pipeline id, started_at, task-run
    /// UUID (laid out as a `run_log` key) -> its `task_index` key.
    running / RUNNING: &'static [u8; RUN_KEY_LEN] => &'static [u8; INDEX_KEY_LEN];
    /// OpenLineage runs: org index and run UUID -> what their events said so far (see
    /// `crate::lineage::state`).
    lineage_runs / LINEAGE_RUNS: &'static [u8; SCOPED_KEY_LEN] => &'static [u8];
    /// Alert rules: organization UUID and rule UUID -> the rule and when it was made (see
    /// `crate::alerts::StoredRule`; the webhook secret sealed under the organization's key).
    alert_rules / ALERT_RULES: &'static [u8; 32] => &'static [u8];
    /// Alerts firing now: organization, rule and pipeline UUIDs -> the alert's serial (see
    /// `crate::alerts::Firing`). Absent: the rule's condition is false for that pipeline.
    alert_state / ALERT_STATE: &'static [u8; 48] => &'static [u8];
    /// Every alert, firing or resolved: organization UUID and serial (big-endian) -> the alert
    /// (see `crate::alerts::AlertRecord`), newest last.
    alerts / ALERTS: &'static [u8; 24] => &'static [u8];
    /// Transitions waiting for delivery: delivery serial -> what to send and how far its
    /// delivery got (see `crate::alerts::OutboxEntry`); deleted once delivered or given up.
    outbox / OUTBOX: u64 => &'static [u8];
    /// Cluster mode: each writer of the stream -> the number of its last message applied
    /// (a writer's messages are applied in number order only, see `crate::cluster::publisher`).
    writers / WRITERS: &'static [u8; 16] => u64;
    /// Cluster mode: copies of writers' messages that came before an earlier message of their
    /// writer (writer id, number -> the message as the applier reads it again), applied as
    /// soon as that one is.
    early / EARLY: &'static [u8; 24] => &'static [u8];
    /// Cluster mode: stream sequences skipped for good -> why (a message that could not be
    /// authenticated or decoded, or sequences the operator passed over; `last..` for a range).
    skipped / SKIPPED: u64 => &'static str;
}

/// The interned id of a pipeline or task: four bytes instead of sixteen in every key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityId(pub u32);

/// The interned id of an organization, first in the key of every table whose key is a UUID the
/// organization chose, so that those UUIDs are namespaced per organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgIndex(pub u32);

/// The id of a pipeline run, handed out in the order pipeline runs first finish a task run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

/// Which UUID index a key or filter belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    TaskRuns,
    PipelineRuns,
}

impl IndexKind {
    pub const ALL: [IndexKind; 2] = [IndexKind::TaskRuns, IndexKind::PipelineRuns];

    pub fn tag(self) -> u8 {
        match self {
            IndexKind::TaskRuns => 1,
            IndexKind::PipelineRuns => 2,
        }
    }
}

pub const SCOPED_KEY_LEN: usize = 20;
pub const INDEX_KEY_LEN: usize = 24;
pub const ENTITY_KEY_LEN: usize = 29;
pub const RUN_KEY_LEN: usize = 28;
pub const MEMBER_KEY_LEN: usize = 16;
pub const FILTER_KEY_LEN: usize = 9;
pub const YEAR_KEY_LEN: usize = 12;
pub const ROLLUP_KEY_LEN: usize = 13;
pub const LAST_RUN_LEN: usize = 33;
pub const PENDING_LEN: usize = INDEX_KEY_LEN + 16;

/// The order-preserving encoding of a signed time (sign bit flipped, big-endian).
pub fn encode_time(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_time(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// The key of a UUID in an organization's namespace: org index, UUID.
pub fn scoped_key(org: OrgIndex, uuid: &[u8; 16]) -> [u8; SCOPED_KEY_LEN] {
    let mut key = [0u8; SCOPED_KEY_LEN];
    key[..4].copy_from_slice(&org.0.to_be_bytes());
    key[4..].copy_from_slice(uuid);
    key
}

/// The key of a pipeline in an organization's list by name: org index, 0 for a named pipeline
/// (1 for one without a name, so those come last), the name's UTF-8 bytes, a 0 byte ending it
/// (a name is never a prefix of a longer one's key), the UUID.
pub fn pipeline_name_key(org: OrgIndex, name: &str, uuid: &[u8; 16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + 1 + name.len() + 1 + 16);
    key.extend_from_slice(&org.0.to_be_bytes());
    key.push(u8::from(name.is_empty()));
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(uuid);
    key
}

/// A UUID index key: arrival period, org index, UUID.
pub fn index_key(period: u32, org: OrgIndex, uuid: &[u8; 16]) -> [u8; INDEX_KEY_LEN] {
    let mut key = [0u8; INDEX_KEY_LEN];
    key[..4].copy_from_slice(&period.to_be_bytes());
    key[4..].copy_from_slice(&scoped_key(org, uuid));
    key
}

/// The parts of a UUID index key.
pub fn split_index_key(key: &[u8; INDEX_KEY_LEN]) -> (u32, OrgIndex, [u8; 16]) {
    (
        u32::from_be_bytes(key[..4].try_into().expect("4 bytes")),
        OrgIndex(u32::from_be_bytes(key[4..8].try_into().expect("4 bytes"))),
        key[8..].try_into().expect("16 bytes"),
    )
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

/// `run_members` key: pipeline-run id, executed_at (microseconds).
pub fn member_key(run: RunId, micros: i64) -> [u8; MEMBER_KEY_LEN] {
    let mut key = [0u8; MEMBER_KEY_LEN];
    key[..8].copy_from_slice(&run.0.to_be_bytes());
    key[8..].copy_from_slice(&encode_time(micros));
    key
}

/// The executed_at of a `run_members` key.
pub fn member_key_micros(key: &[u8; MEMBER_KEY_LEN]) -> i64 {
    decode_time(key[8..].try_into().expect("8 bytes"))
}

/// `index_filters` key: index, period, chunk.
pub fn filter_key(index: IndexKind, period: u32, chunk: u32) -> [u8; FILTER_KEY_LEN] {
    let mut key = [0u8; FILTER_KEY_LEN];
    key[0] = index.tag();
    key[1..5].copy_from_slice(&period.to_be_bytes());
    key[5..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// `year_rollups` key: entity id, year start (seconds).
pub fn year_key(entity: EntityId, year_start: i64) -> [u8; YEAR_KEY_LEN] {
    let mut key = [0u8; YEAR_KEY_LEN];
    key[..4].copy_from_slice(&entity.0.to_be_bytes());
    key[4..].copy_from_slice(&encode_time(year_start));
    key
}

/// The year start of a `year_rollups` key.
pub fn year_key_start(key: &[u8; YEAR_KEY_LEN]) -> i64 {
    decode_time(key[4..].try_into().expect("8 bytes"))
}

/// `rollups` key: level tag, bucket start (seconds), entity id.
pub fn rollup_key(level: Level, bucket_start: i64, entity: EntityId) -> [u8; ROLLUP_KEY_LEN] {
    let mut key = [0u8; ROLLUP_KEY_LEN];
    key[0] = level.tag();
    key[1..9].copy_from_slice(&encode_time(bucket_start));
    key[9..].copy_from_slice(&entity.0.to_be_bytes());
    key
}

/// The parts of a `rollups` key.
pub fn split_rollup_key(key: &[u8; ROLLUP_KEY_LEN]) -> (u8, i64, EntityId) {
    (
        key[0],
        decode_time(key[1..9].try_into().expect("8 bytes")),
        EntityId(u32::from_be_bytes(key[9..].try_into().expect("4 bytes"))),
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
    /// The next pipeline-run id to hand out, a little-endian u64.
    pub const NEXT_RUN_ID: &str = "next_run_id";
    /// Each UUID index's current period and the entries it holds: two little-endian u32 and u64.
    pub const TASK_INDEX_PERIOD: &str = "task_index_period";
    pub const PIPELINE_INDEX_PERIOD: &str = "pipeline_index_period";
    /// Retention: runs executed before this second (a UTC midnight, a little-endian i64) are
    /// deleted or being deleted, and refused.
    pub const RETENTION_CUT: &str = "retention_cut";
    /// Every month before this second has its records (see `batch::prune`).
    pub const MATERIALIZED_BEFORE: &str = "materialized_before";
    /// The pipeline id the next step of pruning starts from, a little-endian u32.
    pub const PRUNE_NEXT_PIPELINE: &str = "prune_next_pipeline";
    /// The cut and the digest of the rollups kept before it, as the cut was made (see `kept`).
    pub const KEPT_DIGEST: &str = "kept_digest";
    /// Cluster mode: the last stream sequence applied, a little-endian u64, written in the
    /// transaction that applied it (see `crate::cluster`).
    pub const APPLIED_SEQ: &str = "applied_seq";
    /// Cluster mode: the adoption this database continues (`runledger cluster adopt`), 16
    /// bytes; the stream names the same one.
    pub const BASELINE: &str = "cluster_baseline";
    /// Cluster mode: the id of the cluster whose stream this database applies, 16 bytes; a
    /// node refuses a stream of another cluster.
    pub const CLUSTER_ID: &str = "cluster_id";
    /// The next alert serial and delivery serial to hand out, little-endian u64s.
    pub const NEXT_ALERT: &str = "next_alert";
    pub const NEXT_DELIVERY: &str = "next_delivery";
}

/// The file format this build reads and writes. 5: rollup parts carry duration histograms and
/// maxima; pipelines are listed by name; months before a retention cut always have records.
/// (4: UUID indexes by arrival period with Bloom filters, pipeline runs by id, rollups finer
/// than a year only where dense; 3: UUIDs namespaced per organization; 2: rollups at six
/// levels with parts; 1: second and minute buckets.) `runledger upgrade` brings formats 2 and 4
/// to this one.
pub const FORMAT_VERSION: u32 = 5;

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
        fn rollup_keys_sort_by_level_then_bucket_then_entity(
            l1 in 0usize..3, l2 in 0usize..3, b1: i64, b2: i64, e1 in 0u32..3, e2 in 0u32..3,
        ) {
            let levels = [Level::Month, Level::Day, Level::Hour];
            let k1 = rollup_key(levels[l1], b1, EntityId(e1));
            let k2 = rollup_key(levels[l2], b2, EntityId(e2));
            prop_assert_eq!(
                k1.cmp(&k2),
                (levels[l1].tag(), b1, e1).cmp(&(levels[l2].tag(), b2, e2))
            );
            prop_assert_eq!(split_rollup_key(&k1), (levels[l1].tag(), b1, EntityId(e1)));
        }

        #[test]
        fn index_and_member_keys_round_trip(period: u32, org: u32, run: u64, micros: i64) {
            let key = index_key(period, OrgIndex(org), &[3; 16]);
            prop_assert_eq!(split_index_key(&key), (period, OrgIndex(org), [3; 16]));
            prop_assert_eq!(member_key_micros(&member_key(RunId(run), micros)), micros);
        }
    }
}
