//! The delivery lease: of the nodes applying one stream, exactly one delivers alerts (and ticks
//! the alert clock) at a time. The lease is the one message of a small JetStream stream whose
//! messages expire after [`TTL`]: a node takes it by publishing when the subject holds none,
//! keeps it by publishing again expecting its own last message (JetStream refuses the publish
//! otherwise), and loses it when that is refused. A node killed while holding it leaves it to
//! another within [`TTL`]; what it was delivering is still in the outbox (every node's), so it
//! is delivered again, at least once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::log::Log;

/// How long a lease lives without renewal.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the holder renews it (and others try to take it).
const RENEW: Duration = Duration::from_secs(1);
/// The lease's stream and subject (nodes may publish there: see the README's NATS permissions).
pub const STREAM: &str = "RUNLEDGER_LEASE";
pub const SUBJECT: &str = "runledger.lease.alerts";

/// Makes the lease's stream unless it exists (`cluster init` and `adopt` do, as the operator;
/// nodes may not create streams).
pub async fn ensure(log: &Log) -> crate::error::Result<()> {
    log.lease_stream(STREAM, SUBJECT, TTL).await
}

/// Contends for the lease until `stopped`, telling `holding` whether this node holds it; lets
/// it go when stopped.
pub async fn hold(log: Log, holding: Arc<AtomicBool>, mut stopped: watch::Receiver<bool>) {
    let me = uuid::Uuid::new_v4().to_string();
    let mut revision: Option<u64> = None;
    let mut renewed = tokio::time::Instant::now();
    let mut ready = false;
    loop {
        if !ready {
            match ensure(&log).await {
                Ok(()) => ready = true,
                Err(error) => tracing::warn!(
                    %error,
                    "cannot reach the delivery lease: run `runledger cluster init` again (as the NATS admin) to make its stream; until then no node delivers alerts"
                ),
            }
        }
        if ready {
            let attempt = log.claim(SUBJECT, &me, revision.unwrap_or(0)).await;
            match (&attempt, revision) {
                (Ok(_), None) => {
                    tracing::info!("this node now delivers alerts (it holds the delivery lease)")
                }
                (Err(_), Some(_)) => tracing::info!("this node no longer holds the delivery lease"),
                (Err(error), None) => {
                    tracing::debug!(%error, "the delivery lease is held elsewhere")
                }
                _ => {}
            }
            if attempt.is_ok() {
                renewed = tokio::time::Instant::now();
            }
            revision = attempt.ok();
        }
        // Held only while surely not expired for the others.
        let held = revision.is_some() && renewed.elapsed() < TTL - RENEW * 2;
        holding.store(held, Ordering::Release);
        metrics::gauge!(crate::metrics::ALERT_COURIER).set(f64::from(u8::from(held)));
        tokio::select! {
            () = tokio::time::sleep(RENEW) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    holding.store(false, Ordering::Release);
    metrics::gauge!(crate::metrics::ALERT_COURIER).set(0.0);
    if let Some(held) = revision {
        let _ = log.release(STREAM, held).await;
    }
}
