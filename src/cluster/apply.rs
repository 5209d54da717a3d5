//! Following the stream into the node's database: an ordered consumer from the sequence after
//! the last applied one, messages taken in groups as they arrive, each group applied in one
//! transaction that also records its last sequence. A crash between two groups loses nothing
//! and applies nothing twice: the next start resumes after the recorded sequence. A message
//! missing from the stream (trimmed below this node) stops the node from applying, with the
//! way out in the log: restore a newer backup.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::{Cluster, Role, codec, log};
use crate::engine::{Engine, Logged};
use crate::error::{Error, Result};

/// Messages applied in one transaction at most.
const MAX_GROUP: usize = 512;
/// Bytes of messages applied in one transaction at most.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// Pauses before following the log again after a failure: the first, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Applies the stream into `engine`'s database until `stop` turns true, resuming after every
/// failure (a NATS server gone, a full disk) from what the database holds.
pub async fn run(engine: Arc<Engine>, cluster: Arc<Cluster>, mut stop: watch::Receiver<bool>) {
    let mut pause = FIRST_PAUSE;
    let mut applied = cluster.progress.applied();
    loop {
        match follow(&engine, &cluster, &mut stop).await {
            Ok(()) => return,
            Err(error) => {
                // Retried at once after progress, else less and less often.
                if cluster.progress.applied() > applied {
                    applied = cluster.progress.applied();
                    pause = FIRST_PAUSE;
                }
                tracing::warn!(%error, applied, retry_in = ?pause, "applying the cluster's log stopped; resuming");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// One consumer's life: `Ok` when stopped, `Err` when the consumer or the database failed.
async fn follow(
    engine: &Arc<Engine>,
    cluster: &Cluster,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let start = cluster.progress.applied() + 1;
    let stream = cluster.log.stream().await?;
    let filter = match cluster.role {
        Role::Node => String::new(),
        Role::Gateway => log::CREDENTIALS_SUBJECT.to_string(),
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            filter_subject: filter,
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_error("cannot create a consumer", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| consumer_error("cannot read the stream", e))?;
    loop {
        let first = tokio::select! {
            next = messages.next() => next,
            _ = stop.changed() => return Ok(()),
        };
        let first =
            first.ok_or_else(|| consumer_error("the consumer ended", "no more messages"))?;
        let mut group = vec![first.map_err(|e| consumer_error("reading", e))?];
        let mut bytes = group[0].payload.len();
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            // Only what has arrived already: the group never waits for more.
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(Ok(message))) => {
                    bytes += message.payload.len();
                    group.push(message);
                }
                Ok(Some(Err(error))) => return Err(consumer_error("reading", error)),
                Ok(None) | Err(_) => break,
            }
        }
        let mut entries = Vec::with_capacity(group.len());
        for message in group {
            let info = message
                .info()
                .map_err(|e| consumer_error("a message without its sequence", e))?;
            let seq = info.stream_sequence;
            metrics::gauge!(crate::metrics::STREAM_SEQ).set((seq + info.pending) as f64);
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|id| id.as_str().to_string());
            let ops = codec::decode(&message.payload)
                .map_err(|e| e.prefixed(&format!("stream sequence {seq}")))?;
            entries.push(Logged { seq, id, ops });
        }
        let expected = cluster.progress.applied() + 1;
        if cluster.role == Role::Node && entries[0].seq != expected {
            return Err(Error::Unavailable(format!(
                "the cluster's log no longer holds sequence {expected} (it starts at {}): this node cannot catch up from it; restore a backup of another node taken after that point into this data dir",
                entries[0].seq
            )));
        }
        let applying = engine.clone();
        tokio::task::spawn_blocking(move || applying.apply_logged(entries))
            .await
            .map_err(|e| Error::Internal(format!("the applier panicked: {e}")))??;
    }
}

fn consumer_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the cluster's log: {what}: {error}"))
}
