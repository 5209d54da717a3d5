//! The engine's one write seam: a write goes to the local writer (one process, one file) or, in
//! cluster mode, to the cluster's log, whose applier brings it back into this node's store (see
//! [`super::replica`]). Nothing else in the engine writes.

use std::future::Future;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::store::{Store, WriteOp, WriteOutcome};

/// Where writes go.
pub(super) enum Writes {
    Local,
    Cluster(Arc<Cluster>),
}

impl Writes {
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Writes::Local => None,
            Writes::Cluster(cluster) => Some(cluster),
        }
    }

    /// Applies a write and waits until it is durable (applied here, in cluster mode).
    pub async fn write(&self, store: &Store, op: WriteOp) -> Result<WriteOutcome> {
        self.submit(store, op).await?.await
    }

    /// Queues a write (publishes it, in cluster mode: writes submitted one after another are
    /// applied in that order); the returned future resolves once it is durable.
    pub async fn submit(
        &self,
        store: &Store,
        op: WriteOp,
    ) -> Result<impl Future<Output = Result<WriteOutcome>> + use<>> {
        Ok(match self {
            Writes::Local => {
                let pending = store.submit(op).await?;
                futures_util::future::Either::Left(crate::store::outcome(pending))
            }
            Writes::Cluster(cluster) => {
                let published = cluster.publish(op).await?;
                futures_util::future::Either::Right(published.outcome())
            }
        })
    }

    /// [`Writes::write`] on the calling (blocking) thread: locally in a transaction of its own
    /// beside the writer's (a bulk load's), in cluster mode through the log from within the
    /// runtime the caller runs in.
    pub fn write_now(&self, store: &Store, op: WriteOp) -> Result<WriteOutcome> {
        match self {
            Writes::Local => store
                .apply_now(std::slice::from_ref(&op))?
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("no outcome for a write".into()))),
            Writes::Cluster(cluster) => tokio::runtime::Handle::try_current()
                .map_err(|_| Error::Internal("a cluster write outside the runtime".into()))?
                .block_on(cluster.write(op)),
        }
    }
}
