//! The cluster's write log: one JetStream stream, `RUNLEDGER`, holding every write in the order
//! every node applies it. Writes about credentials go to their own subject, which gateways
//! (nodes without runs) apply too; the operator's permissions to pass over a damaged or missing
//! sequence go to a third. The stream's description holds its identity ([`StreamIdentity`]):
//! the cluster's id, which every node records in its file and every message's tag covers, and
//! a check value of the master key, so that nothing with another key publishes or applies.
//! Publishing is done by [`super::publisher`], which keeps each writer's messages in order.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage, stream};
use uuid::Uuid;

use super::envelope::StreamKey;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// The stream's name.
pub const STREAM: &str = "RUNLEDGER";
/// Subject of task runs, registrations, pipeline runs and retention.
pub const DATA_SUBJECT: &str = "runledger.data";
/// Subject of organizations, clients and tokens.
pub const CREDENTIALS_SUBJECT: &str = "runledger.credentials";
/// Subject of the operator's permissions to pass over sequences (`runledger cluster skip`).
pub const CONTROL_SUBJECT: &str = "runledger.control";
/// How the stream's description starts; the identity follows as JSON.
const IDENTITY_PREFIX: &str = "runledger cluster ";
/// How long JetStream remembers message ids to drop a duplicate publish.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(300);
/// How long `cluster init` retries creating the stream: servers of a NATS cluster that just
/// started elect a meta leader and learn their peers first ("no suitable peers for placement"
/// until they have), which took over 15 s with three clusters starting at once on 2 cores.
const CREATE_DEADLINE: Duration = Duration::from_secs(60);
/// A replica silent for longer than this is not counted in the quorum.
const QUORUM_SILENCE: Duration = Duration::from_secs(4);
/// How long joining retries looking the stream up.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a JetStream request, or a publish's acknowledgement, is waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Who the stream belongs to, as its description says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamIdentity {
    /// The cluster's id: every node records it, every message's tag covers it.
    pub cluster: Uuid,
    /// [`StreamKey::key_check`] of the master key the cluster was made with.
    pub key_check: String,
    /// The single-node store the stream continues (`runledger cluster adopt`), if any.
    pub adopted: Option<Uuid>,
}

impl StreamIdentity {
    /// A new cluster's identity under `master`.
    pub fn new(master: &MasterKey, adopted: Option<Uuid>) -> StreamIdentity {
        let cluster = Uuid::new_v4();
        StreamIdentity {
            cluster,
            key_check: StreamKey::new(master, cluster).key_check(),
            adopted,
        }
    }

    fn description(&self) -> String {
        format!(
            "{IDENTITY_PREFIX}{}",
            serde_json::to_string(self).expect("plain fields")
        )
    }

    fn parse(description: Option<&str>) -> Result<StreamIdentity> {
        description
            .and_then(|text| text.strip_prefix(IDENTITY_PREFIX))
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "the stream {STREAM} has no runledger identity in its description (made by an earlier runledger, whose messages carry no authentication, or by something else): make a new cluster (`runledger cluster init`, or `cluster adopt` of a node's backup) on a NATS cluster without that stream"
                ))
            })
    }

    /// The key of this cluster's messages, once `master` is shown to be the cluster's.
    pub fn key(&self, master: &MasterKey) -> Result<StreamKey> {
        let key = StreamKey::new(master, self.cluster);
        if key.key_check() != self.key_check {
            return Err(Error::Unavailable(format!(
                "the master key given is not the one cluster {} was made with (its check value differs): give the cluster's key (RUNLEDGER_MASTER_KEY or --master-key-file); nothing was published",
                self.cluster
            )));
        }
        Ok(key)
    }
}

/// A connection to the NATS servers of a cluster, with its JetStream context.
#[derive(Clone)]
pub struct Log {
    client: async_nats::Client,
    js: jetstream::Context,
    /// How many server URLs the operator gave.
    urls: usize,
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
        // `nats://user:password@host:port` (the same user on every URL); kept out of logs.
        let login = addresses
            .iter()
            .find(|address| address.has_user_pass())
            .map(|address| {
                let user = address.username().unwrap_or_default().to_string();
                (user, address.password().unwrap_or_default().to_string())
            });
        let started = Instant::now();
        let client = loop {
            let mut options = async_nats::ConnectOptions::new()
                .name("runledger")
                .connection_timeout(Duration::from_secs(2))
                .request_timeout(Some(Duration::from_secs(5)))
                .max_reconnects(None);
            if let Some((user, password)) = login.clone() {
                options = options.user_and_password(user, password);
            }
            match options.connect(addresses.as_slice()).await {
                Ok(client) => break client,
                Err(error)
                    if error.kind() == async_nats::ConnectErrorKind::AuthorizationViolation =>
                {
                    return Err(unavailable(
                        "the NATS servers refused this user (check the user and password in the URL, and the servers' authorization)",
                        error,
                    ));
                }
                Err(error) if started.elapsed() < wait => {
                    tracing::debug!(%error, "NATS not reachable yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    return Err(unavailable(
                        &format!("cannot connect to {}", without_passwords(urls)),
                        error,
                    ));
                }
            }
        };
        let js = jetstream::context::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        Ok(Log {
            client,
            js,
            urls: addresses.len(),
        })
    }

    /// Creates the stream with `identity` unless it exists: file storage, replicas 3 when the
    /// NATS cluster has at least 3 servers (else 1), unless `replicas` says otherwise. An
    /// existing stream is left as it is (its identity is returned).
    pub async fn init(
        &self,
        replicas: Option<usize>,
        identity: &StreamIdentity,
    ) -> Result<(InitOutcome, StreamIdentity)> {
        // The servers this one knows of (none when they do not advertise), or those given.
        let servers = self.client.server_info().connect_urls.len().max(self.urls);
        let wanted = replicas.unwrap_or(if servers >= 3 { 3 } else { 1 });
        let config = stream::Config {
            name: STREAM.to_string(),
            subjects: vec![
                DATA_SUBJECT.to_string(),
                CREDENTIALS_SUBJECT.to_string(),
                CONTROL_SUBJECT.to_string(),
            ],
            storage: stream::StorageType::File,
            num_replicas: wanted,
            duplicate_window: DUPLICATE_WINDOW,
            description: Some(identity.description()),
            ..Default::default()
        };
        // Servers of a cluster that just started may not have elected a meta leader yet.
        let started = Instant::now();
        loop {
            let failed = match self.existing().await {
                Ok(Some(existing)) => {
                    let found = StreamIdentity::parse(existing.config.description.as_deref())?;
                    // Ours when an earlier attempt made it and its answer was lost.
                    let outcome = InitOutcome {
                        created: found == *identity,
                        replicas: existing.config.num_replicas,
                    };
                    return Ok((outcome, found));
                }
                Ok(None) => match self.js.create_stream(config.clone()).await {
                    Ok(_) => {
                        let outcome = InitOutcome {
                            created: true,
                            replicas: wanted,
                        };
                        return Ok((outcome, identity.clone()));
                    }
                    Err(error) => unavailable("cannot create the stream", error),
                },
                Err(error) => error,
            };
            if started.elapsed() >= CREATE_DEADLINE {
                return Err(failed);
            }
            tracing::debug!(error = %failed, "making the stream, retrying");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The stream's info, or `None` when there is no stream.
    async fn existing(&self) -> Result<Option<stream::Info>> {
        match self.js.get_stream(STREAM).await {
            Ok(mut stream) => Ok(Some(
                stream
                    .info()
                    .await
                    .map_err(|e| unavailable("stream info", e))?
                    .clone(),
            )),
            Err(error)
                if matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(error) => Err(unavailable("cannot look the stream up", error)),
        }
    }

    /// The stream's identity, or `None` when there is no stream yet.
    pub async fn identity(&self) -> Result<Option<StreamIdentity>> {
        match self.existing().await? {
            Some(info) => StreamIdentity::parse(info.config.description.as_deref()).map(Some),
            None => Ok(None),
        }
    }

    /// The key of the stream's messages: the stream must exist and `master` must be the
    /// cluster's key. Every command and node calls this before it publishes or applies.
    pub async fn join(&self, master: &MasterKey) -> Result<(StreamIdentity, StreamKey)> {
        let started = Instant::now();
        let found = loop {
            match self.identity().await {
                Ok(found) => break found,
                // No answer is not an answer: a leader election, a connection lost.
                Err(error) if started.elapsed() < JOIN_DEADLINE => {
                    tracing::debug!(%error, "looking the stream up, retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let identity = found.ok_or_else(|| {
            Error::Unavailable(format!(
                "there is no stream {STREAM} on these NATS servers: make it with `runledger cluster init` (or `cluster adopt`)"
            ))
        })?;
        let key = identity.key(master)?;
        Ok((identity, key))
    }

    /// The largest message the servers accept.
    /// Makes (if missing) the stream `name` holding one message on `subject`, which expires
    /// after `ttl`, with as many replicas as the runs' stream: a lease (see `super::lease`).
    pub async fn lease_stream(&self, name: &str, subject: &str, ttl: Duration) -> Result<()> {
        if self.js.get_stream(name).await.is_ok() {
            return Ok(());
        }
        let replicas = self.replicas().await.unwrap_or(1).max(1);
        self.js
            .create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![subject.to_string()],
                max_messages_per_subject: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable(format!("the lease stream {name}: {e}")))
    }

    /// Writes `holder` on `subject` if the subject's last message is still number `expected`
    /// (0: none, or expired): its sequence, the lease's new revision.
    pub async fn claim(&self, subject: &str, holder: &str, expected: u64) -> Result<u64> {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(holder.to_string().into())
            .expected_last_subject_sequence(expected);
        let ack = self
            .js
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| Error::Unavailable(format!("claiming {subject}: {e}")))?
            .await
            .map_err(|e| Error::Unavailable(format!("claiming {subject}: {e}")))?;
        Ok(ack.sequence)
    }

    /// Deletes message `seq` of stream `name` (a lease let go).
    pub async fn release(&self, name: &str, seq: u64) -> Result<()> {
        let stream = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| Error::Unavailable(format!("the lease stream {name}: {e}")))?;
        stream
            .delete_message(seq)
            .await
            .map(|_| ())
            .map_err(|e| Error::Unavailable(format!("releasing the lease: {e}")))
    }

    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Sends one message with message id `id` (one attempt); the future resolves with its
    /// acknowledgement (the stream sequence once a quorum of replicas stored it) or fails.
    pub async fn send(
        &self,
        subject: &'static str,
        id: &str,
        frame: bytes::Bytes,
    ) -> Result<PublishAckFuture> {
        let publish = PublishMessage::build().payload(frame).message_id(id);
        self.js
            .send_publish(subject, publish)
            .await
            .map_err(|e| unavailable("cannot publish", e))
    }

    /// Whether the client is connected to a NATS server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
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

    /// Whether a quorum of the stream's replicas is up, as its leader sees it: the leader and
    /// the replicas it heard from lately and that are current make a majority. (A leader that
    /// lost its followers still answers stream info for a while, so being answered is not
    /// enough.)
    pub async fn quorum(&self) -> Result<bool> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("stream info", e))?;
        let replicas = info.config.num_replicas.max(1);
        let Some(cluster) = info.cluster.as_ref() else {
            return Ok(true);
        };
        if cluster.leader.is_none() {
            return Ok(false);
        }
        let followers = cluster
            .replicas
            .iter()
            .filter(|peer| peer.current && !peer.offline && peer.active < QUORUM_SILENCE)
            .count();
        Ok(1 + followers > replicas / 2)
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

    /// The operator's pass-over permissions published at or after sequence `from`: each one's
    /// sequence and payload, oldest first.
    pub async fn permissions(&self, from: u64) -> Result<Vec<(u64, bytes::Bytes)>> {
        let stream = self.stream().await?;
        let mut found = Vec::new();
        let mut next = from.max(1);
        loop {
            let message = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(CONTROL_SUBJECT.to_string())
                .send()
                .await;
            match message {
                Ok(message) => {
                    next = message.sequence + 1;
                    found.push((message.sequence, message.payload));
                }
                Err(error)
                    if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    return Ok(found);
                }
                Err(error) => return Err(unavailable("the operator's permissions", error)),
            }
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

/// `urls` as they may be shown: passwords replaced.
pub fn without_passwords(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, rest)), Some(at)) => match rest[..at - scheme.len() - 3].split_once(':')
            {
                Some((user, _)) => format!("{scheme}://{user}:***@{}", &url[at + 1..]),
                None => url.to_string(),
            },
            _ => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_urls_are_never_shown() {
        assert_eq!(
            super::without_passwords("nats://node:s3cret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://node:***@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
    }
}
