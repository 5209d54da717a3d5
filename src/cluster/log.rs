//! The cluster's write log: one JetStream stream, `RUNLEDGER`, holding every write in the order
//! every node applies it. Writes about credentials go to their own subject, which gateways
//! (nodes without runs) apply too. Publishing carries a message id, so a publish retried after
//! a lost acknowledgement or a leader election is stored once.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};

use crate::error::{Error, Result};

/// The stream's name.
pub const STREAM: &str = "RUNLEDGER";
/// Subject of task runs, registrations, pipeline runs and retention.
pub const DATA_SUBJECT: &str = "runledger.data";
/// Subject of organizations, clients and tokens.
pub const CREDENTIALS_SUBJECT: &str = "runledger.credentials";
/// The stream's description when it continues an adopted store: then the adoption's id.
const BASELINE_PREFIX: &str = "runledger: continues the single-node store adopted as ";
/// How long JetStream remembers message ids to drop a retried publish.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(300);
/// How long a write keeps retrying its publish (a leader election takes a few seconds).
const PUBLISH_DEADLINE: Duration = Duration::from_secs(15);

/// A connection to the NATS servers of a cluster, with its JetStream context.
#[derive(Clone)]
pub struct Log {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// What `cluster init` found or made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOutcome {
    pub created: bool,
    pub replicas: usize,
}

/// The stream's state: first and last sequence held, messages and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    pub first_seq: u64,
    pub last_seq: u64,
    pub messages: u64,
    pub bytes: u64,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the cluster's log: {what}: {error}"))
}

impl Log {
    /// Connects to any of `urls` (comma-separated `nats://host:port`), retrying the first
    /// connection for up to `wait`.
    pub async fn connect(urls: &str, wait: Duration) -> Result<Log> {
        let addresses: Vec<async_nats::ServerAddr> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse()
                    .map_err(|e| Error::invalid("nats", format!("{url:?} is not a NATS URL: {e}")))
            })
            .collect::<Result<_>>()?;
        if addresses.is_empty() {
            return Err(Error::invalid("nats", "give at least one URL"));
        }
        let started = Instant::now();
        let client = loop {
            let options = async_nats::ConnectOptions::new()
                .name("runledger")
                .connection_timeout(Duration::from_secs(2))
                .request_timeout(Some(Duration::from_secs(5)))
                .max_reconnects(None);
            match options.connect(addresses.as_slice()).await {
                Ok(client) => break client,
                Err(error) if started.elapsed() < wait => {
                    tracing::debug!(%error, "NATS not reachable yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(unavailable(&format!("cannot connect to {urls}"), error)),
            }
        };
        let js = jetstream::new(client.clone());
        Ok(Log { client, js })
    }

    /// Creates the stream unless it exists: file storage, replicas 3 when the NATS cluster has
    /// at least 3 servers (else 1), unless `replicas` says otherwise. A stream continuing an
    /// adopted single-node store names its `baseline` in its description.
    pub async fn init(
        &self,
        replicas: Option<usize>,
        baseline: Option<uuid::Uuid>,
    ) -> Result<InitOutcome> {
        if let Ok(mut existing) = self.js.get_stream(STREAM).await {
            let info = existing
                .info()
                .await
                .map_err(|e| unavailable("stream info", e))?;
            return Ok(InitOutcome {
                created: false,
                replicas: info.config.num_replicas,
            });
        }
        let info = self.client.server_info();
        let servers = info.connect_urls.len().max(1);
        let replicas = replicas.unwrap_or(if servers >= 3 { 3 } else { 1 });
        let config = stream::Config {
            name: STREAM.to_string(),
            subjects: vec![DATA_SUBJECT.to_string(), CREDENTIALS_SUBJECT.to_string()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            description: baseline.map(|id| format!("{BASELINE_PREFIX}{id}")),
            ..Default::default()
        };
        // Servers of a cluster that just started may not have elected a meta leader yet.
        let started = Instant::now();
        loop {
            match self.js.create_stream(config.clone()).await {
                Ok(_) => break,
                Err(error) if started.elapsed() < PUBLISH_DEADLINE => {
                    tracing::debug!(%error, "creating the stream, retrying");
                    if self.js.get_stream(STREAM).await.is_ok() {
                        return Ok(InitOutcome {
                            created: false,
                            replicas,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(unavailable("cannot create the stream", error)),
            }
        }
        Ok(InitOutcome {
            created: true,
            replicas,
        })
    }

    /// Whether the stream exists, and the adopted store it continues, if any (`None` when
    /// it does not exist).
    pub async fn baseline(&self) -> Result<Option<Option<uuid::Uuid>>> {
        let Ok(mut stream) = self.js.get_stream(STREAM).await else {
            return Ok(None);
        };
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("stream info", e))?;
        let description = info.config.description.as_deref().unwrap_or_default();
        let baseline = match description.strip_prefix(BASELINE_PREFIX) {
            Some(id) => Some(id.parse().map_err(|_| {
                Error::Internal(format!(
                    "the stream's description {description:?} names no adoption"
                ))
            })?),
            None => None,
        };
        Ok(Some(baseline))
    }

    /// The largest message the servers accept.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Publishes `body` with message id `id` and returns its stream sequence once JetStream
    /// has stored it (on a quorum of replicas). Retries with the same id through leader
    /// elections and lost acknowledgements, so the message is stored once.
    pub async fn publish(&self, subject: &'static str, id: &str, body: Vec<u8>) -> Result<u64> {
        let max = self.max_payload();
        if body.len() > max {
            return Err(Error::TooLarge(format!(
                "the write is {} bytes encoded, over the {max} bytes the NATS servers accept in one message (raise max_payload, or send smaller batches)",
                body.len()
            )));
        }
        let body = bytes::Bytes::from(body);
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let attempt = async {
                let publish = PublishMessage::build().payload(body.clone()).message_id(id);
                self.js
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(error) if started.elapsed() < PUBLISH_DEADLINE => {
                    tracing::debug!(%error, id, "publish failed, retrying with the same id");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(error) => {
                    return Err(unavailable(
                        "the write was not acknowledged (it may still be applied; retrying it is safe within 5 minutes)",
                        error,
                    ));
                }
            }
        }
    }

    /// Publishes `ops` as one message under a fresh message id (see [`Log::publish`]).
    pub async fn publish_ops(
        &self,
        subject: &'static str,
        ops: &[crate::store::WriteOp],
    ) -> Result<u64> {
        let body = super::codec::encode(ops)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.publish(subject, &id, body).await
    }

    /// The stream handle, for consumers.
    pub async fn stream(&self) -> Result<stream::Stream> {
        self.js
            .get_stream(STREAM)
            .await
            .map_err(|e| unavailable("the stream is not there (run `runledger cluster init`)", e))
    }

    /// The stream's sequences and size.
    pub async fn state(&self) -> Result<StreamState> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("stream info", e))?;
        Ok(StreamState {
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            messages: info.state.messages,
            bytes: info.state.bytes,
        })
    }

    /// The name of the NATS server leading the stream's replicas, when clustered.
    pub async fn leader(&self) -> Result<Option<String>> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("stream info", e))?;
        Ok(info.cluster.as_ref().and_then(|c| c.leader.clone()))
    }

    /// The stream's replicas.
    pub async fn replicas(&self) -> Result<usize> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("stream info", e))?;
        Ok(info.config.num_replicas)
    }

    /// The sequence of the newest credentials message (0: none).
    pub async fn last_credentials_seq(&self) -> Result<u64> {
        let stream = self.stream().await?;
        match stream
            .get_last_raw_message_by_subject(CREDENTIALS_SUBJECT)
            .await
        {
            Ok(message) => Ok(message.sequence),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(0)
            }
            Err(error) => Err(unavailable("the newest credentials", error)),
        }
    }

    /// Deletes every message below `below` (the lowest sequence some node or backup still
    /// needs is `below`); returns how many went.
    pub async fn trim(&self, below: u64) -> Result<u64> {
        let stream = self.stream().await?;
        let purged = stream
            .purge()
            .sequence(below)
            .await
            .map_err(|e| unavailable("cannot trim the stream", e))?;
        Ok(purged.purged)
    }
}
