//! Delivering alert transitions from the outbox, and the clock of the time rules. The courier
//! reads the outbox's due entries, sends each as a signed webhook (bounded per destination,
//! behind a circuit breaker per destination) and records how it ended as a write, the same way
//! in one process or a cluster: a success or a final refusal takes the entry out of the outbox,
//! a failure records the attempt and when to try again. An entry stays in the outbox until its
//! end is durable, so a crash at any moment leads to it being sent again with the same
//! `webhook-id` (at least once).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{Semaphore, mpsc, watch};

use super::Engine;
use crate::alerts::post::{Answer, Failure, PostOptions, post};
use crate::alerts::retry::{Breaker, Schedule};
use crate::alerts::webhook::{body, signature};
use crate::alerts::{DeliveryEnd, OutboxEntry, StoredRule};
use crate::error::{Error, Result};
use crate::store::{WriteOp, WriteOutcome};
use crate::time::{MICROS_PER_SECOND, Timestamp};

/// How alerts are delivered and judged by the clock.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// The retry schedule (its unit is shortened in tests).
    pub schedule: Schedule,
    /// How long an attempt may take.
    pub timeout: Duration,
    /// Redirects followed (each checked like the first URL); 0 by default.
    pub redirects: u8,
    /// Attempts under way at once to one destination (host and port).
    pub per_destination: usize,
    /// How often the time rules (`missing`, `stuck`) are judged.
    pub tick_every: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            schedule: Schedule::default(),
            timeout: Duration::from_secs(10),
            redirects: 0,
            per_destination: 4,
            tick_every: Duration::from_secs(5),
        }
    }
}

/// Outbox entries under way at once (waiting for their destination, being sent, or having
/// their end recorded).
const MAX_IN_FLIGHT: usize = 1_024;
/// Ends of deliveries recorded in one write at the most.
const MAX_ENDS_PER_WRITE: usize = 512;

impl Engine {
    /// The same engine delivering alerts with these options.
    pub fn with_deliveries(mut self, options: DeliveryOptions) -> Engine {
        self.deliveries = options;
        self
    }

    pub fn delivery_options(&self) -> &DeliveryOptions {
        &self.deliveries
    }

    /// Judges the rules the clock decides (`missing`, `stuck`) as of `at`.
    pub async fn alert_tick(&self, at: Timestamp) -> Result<()> {
        match self
            .writes
            .write(&self.store, WriteOp::AlertTick { at })
            .await?
        {
            WriteOutcome::AlertsJudged => Ok(()),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Whether any organization has a rule the clock decides.
    pub fn has_time_rules(&self) -> bool {
        self.store.has_time_rules()
    }

    /// How many transitions wait in the outbox.
    pub fn outbox_depth(&self) -> Result<u64> {
        self.store.reader()?.outbox_len()
    }
}

/// Judges the time rules every `tick_every` (first after one period) until `stopped`.
pub async fn run_clock(engine: Arc<Engine>, stopped: watch::Receiver<bool>) {
    let period = engine.deliveries.tick_every;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopping(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if engine.has_time_rules() && engine.delivers()
                    && let Err(error) = engine.alert_tick(Timestamp::now()).await {
                    tracing::warn!(%error, "could not judge the alert rules decided by the clock");
                }
            }
            () = &mut stop => return,
        }
    }
}

/// Delivers the outbox until `stopped`.
pub async fn run_courier(engine: Arc<Engine>, stopped: watch::Receiver<bool>) {
    let signal = engine.store.outbox_signal();
    let stop = stopping(stopped);
    tokio::pin!(stop);
    let courier = Arc::new(Courier {
        engine,
        destinations: Mutex::default(),
    });
    let mut in_flight: FxHashSet<u64> = FxHashSet::default();
    let (done, mut finished) = mpsc::unbounded_channel::<u64>();
    let (record, ends) = mpsc::unbounded_channel::<(u64, WriteOp)>();
    tokio::spawn(record_ends(courier.engine.clone(), ends, done.clone()));
    if courier.engine.cluster().is_none() {
        metrics::gauge!(crate::metrics::ALERT_COURIER).set(1.0);
    }
    loop {
        while let Ok(serial) = finished.try_recv() {
            in_flight.remove(&serial);
        }
        let wait = if courier.engine.delivers() {
            match courier.dispatch(&mut in_flight, &done, &record) {
                Ok(wait) => wait,
                Err(error) => {
                    tracing::warn!(%error, "could not read the alert outbox");
                    Duration::from_secs(1)
                }
            }
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = signal.notified() => {}
            Some(serial) = finished.recv() => { in_flight.remove(&serial); }
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => return,
        }
    }
}

/// Records the ends of deliveries as they come, those that came together in one write (a
/// write per delivery would wait behind the ingest one by one, and fill the write queue in an
/// alert storm), then tells the courier they are done.
async fn record_ends(
    engine: Arc<Engine>,
    mut ends: mpsc::UnboundedReceiver<(u64, WriteOp)>,
    done: mpsc::UnboundedSender<u64>,
) {
    while let Some(first) = ends.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_ENDS_PER_WRITE
            && let Ok(end) = ends.try_recv()
        {
            batch.push(end);
        }
        let (serials, mut ops): (Vec<u64>, Vec<WriteOp>) = batch.into_iter().unzip();
        let op = match ops.len() {
            1 => ops.pop().expect("one"),
            _ => WriteOp::Deliveries(ops),
        };
        if let Err(error) = engine.writes.write(&engine.store, op).await {
            tracing::warn!(ends = serials.len(), %error, "could not record alert deliveries; they will be sent again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for serial in serials {
            let _ = done.send(serial);
        }
    }
}

/// Resolves once `stopped` says so.
async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A destination's share of the courier: its concurrency and its breaker.
struct Destination {
    slots: Arc<Semaphore>,
    breaker: Breaker,
}

struct Courier {
    engine: Arc<Engine>,
    destinations: Mutex<FxHashMap<String, Destination>>,
}

/// How one attempt ended.
enum Attempted {
    Ended(DeliveryEnd),
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
}

impl Courier {
    /// Starts an attempt for every due entry that is not under way and whose destination
    /// admits one; returns how long to wait before looking again (unless woken sooner).
    fn dispatch(
        self: &Arc<Self>,
        in_flight: &mut FxHashSet<u64>,
        done: &mpsc::UnboundedSender<u64>,
        record: &mpsc::UnboundedSender<(u64, WriteOp)>,
    ) -> Result<Duration> {
        let reader = self.engine.store.reader()?;
        metrics::gauge!(crate::metrics::ALERT_OUTBOX).set(reader.outbox_len()? as f64);
        let now = Timestamp::now().micros();
        let mut wake = now + 60 * MICROS_PER_SECOND;
        for (serial, entry) in reader.outbox(MAX_IN_FLIGHT * 4)? {
            if in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            if in_flight.contains(&serial) {
                continue;
            }
            if entry.next_at > now {
                wake = wake.min(entry.next_at);
                continue;
            }
            let stored = reader.alert_rule(crate::model::OrgId(entry.org), entry.rule)?;
            let destination = stored
                .as_ref()
                .map(|stored| destination_of(&stored.rule.webhook.url))
                .unwrap_or_default();
            let slots = {
                let mut destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
                let per_destination = self.engine.deliveries.per_destination.max(1);
                let place =
                    destinations
                        .entry(destination.clone())
                        .or_insert_with(|| Destination {
                            slots: Arc::new(Semaphore::new(per_destination)),
                            breaker: Breaker::default(),
                        });
                if stored.is_some()
                    && let Err(until) = place.breaker.admit(now)
                {
                    wake = wake.min(until);
                    continue;
                }
                place.slots.clone()
            };
            in_flight.insert(serial);
            let (courier, done, record) = (self.clone(), done.clone(), record.clone());
            tokio::spawn(async move {
                let end = courier
                    .deliver(serial, entry, stored, (&destination, slots))
                    .await;
                let unrecorded = match end {
                    Some(end) => record.send((serial, end)).is_err(),
                    None => true,
                };
                if unrecorded {
                    let _ = done.send(serial);
                }
            });
        }
        Ok(Duration::from_micros(
            (wake - now).clamp(1_000, 60 * MICROS_PER_SECOND) as u64,
        ))
    }

    /// One attempt at one entry (holding one of its destination's slots), and the write that
    /// records how it went (see [`record_ends`]; the slot is given back first: the write may
    /// wait behind others).
    async fn deliver(
        &self,
        serial: u64,
        entry: OutboxEntry,
        stored: Option<StoredRule>,
        (destination, slots): (&str, Arc<Semaphore>),
    ) -> Option<WriteOp> {
        let schedule = self.engine.deliveries.schedule;
        let now = Timestamp::now().micros();
        // The schedule counts from the transition (from now, for one judged at a later time
        // than this clock's, as a test's clock may).
        let first = entry.created_at.min(now);
        let attempted = match stored {
            Some(stored) if stored.disabled_at.is_none() => {
                if schedule.expired(first, now) {
                    Attempted::Ended(DeliveryEnd::Expired)
                } else {
                    let Ok(slot) = slots.acquire_owned().await else {
                        return None;
                    };
                    if entry.attempts == 0
                        && let Some(committed) = self.engine.store.outbox_committed_at(serial)
                    {
                        metrics::histogram!(crate::metrics::ALERT_FIRST_ATTEMPT)
                            .record(committed.elapsed().as_secs_f64());
                    }
                    let attempted = self.attempt(&entry, &stored).await;
                    drop(slot);
                    let mut destinations =
                        self.destinations.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(place) = destinations.get_mut(destination) {
                        match &attempted {
                            Attempted::Retry { .. } => place.breaker.failed(now, &schedule),
                            Attempted::Ended(_) => place.breaker.succeeded(),
                        }
                    }
                    attempted
                }
            }
            _ => Attempted::Ended(DeliveryEnd::Dropped),
        };
        let op = match attempted {
            Attempted::Ended(end) => {
                metrics::counter!(crate::metrics::ALERT_DELIVERIES, "outcome" => end.as_str())
                    .increment(1);
                WriteOp::FinishDelivery {
                    serial,
                    end,
                    at: Timestamp::now(),
                }
            }
            Attempted::Retry { error, retry_after } => {
                let attempts = entry.attempts + 1;
                let after = Timestamp::now().micros();
                match schedule.next(first, attempts, after, jitter(), retry_after) {
                    Some(next_at) => {
                        metrics::counter!(crate::metrics::ALERT_DELIVERIES, "outcome" => "retried")
                            .increment(1);
                        tracing::info!(serial, attempts, %error, "alert delivery failed; will retry");
                        WriteOp::RetryDelivery {
                            serial,
                            attempts,
                            next_at,
                            error,
                        }
                    }
                    None => {
                        metrics::counter!(crate::metrics::ALERT_DELIVERIES, "outcome" => "expired")
                            .increment(1);
                        WriteOp::FinishDelivery {
                            serial,
                            end: DeliveryEnd::Expired,
                            at: Timestamp::now(),
                        }
                    }
                }
            }
        };
        Some(op)
    }

    /// Sends one transition to its rule's webhook.
    async fn attempt(&self, entry: &OutboxEntry, stored: &StoredRule) -> Attempted {
        let secret = match self.secret(entry, stored).await {
            Ok(secret) => secret,
            Err(error) => {
                return Attempted::Retry {
                    error: format!("the webhook secret cannot be read: {error}"),
                    retry_after: None,
                };
            }
        };
        let mut webhook = stored.rule.webhook.clone();
        webhook.secret = secret;
        let payload = body(webhook.format, &entry.transition);
        let timestamp = Timestamp::now().second();
        let headers = [
            ("webhook-id", entry.webhook_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                signature(
                    &webhook.signing_key(),
                    &entry.webhook_id,
                    timestamp,
                    &payload,
                ),
            ),
        ];
        let options = PostOptions {
            allowed: self.engine.webhook_allow.clone(),
            redirects: self.engine.deliveries.redirects,
            timeout: self.engine.deliveries.timeout,
        };
        classify(post(&webhook.url, &headers, payload.into(), &options).await)
    }

    /// The rule's webhook secret, unsealed.
    async fn secret(&self, entry: &OutboxEntry, stored: &StoredRule) -> Result<String> {
        let key = self
            .engine
            .output_key(crate::model::OrgId(entry.org))
            .await?;
        let sealed = STANDARD
            .decode(&stored.rule.webhook.secret)
            .map_err(|e| Error::Internal(format!("a sealed webhook secret is not base64: {e}")))?;
        let secret = key.open(&sealed).map_err(Error::Internal)?;
        String::from_utf8(secret)
            .map_err(|_| Error::Internal("a webhook secret is not UTF-8".into()))
    }
}

/// How an attempt's answer (or its absence) ends the delivery or calls for a retry.
fn classify(result: std::result::Result<Answer, Failure>) -> Attempted {
    match result {
        Ok(answer) => match answer.status {
            200..=299 => Attempted::Ended(DeliveryEnd::Delivered),
            410 => Attempted::Ended(DeliveryEnd::Gone),
            429 | 500..=599 => Attempted::Retry {
                error: format!("answered {}", answer.status),
                retry_after: answer.retry_after,
            },
            300..=399 => {
                tracing::warn!(
                    status = answer.status,
                    location = answer.location.as_deref().unwrap_or(""),
                    "an alert webhook redirected; redirects are not followed (serve --webhook-redirects)"
                );
                Attempted::Ended(DeliveryEnd::Refused)
            }
            status => {
                tracing::warn!(status, "an alert webhook refused a delivery");
                Attempted::Ended(DeliveryEnd::Refused)
            }
        },
        Err(failure) => Attempted::Retry {
            error: failure.to_string(),
            retry_after: None,
        },
    }
}

/// A destination's key: its URL's host and port.
fn destination_of(url: &str) -> String {
    url.parse::<axum::http::Uri>()
        .ok()
        .and_then(|uri| uri.authority().map(|a| a.as_str().to_ascii_lowercase()))
        .unwrap_or_default()
}

/// A number in `[0, 1)` for the retry jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
