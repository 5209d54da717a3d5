//! OpenLineage run events through the engine: read and checked (every refusal names the field),
//! resolved to runledger's pipelines, tasks and runs with the output sealed under the
//! organization's key, then written like any other write and answered once durable.

use super::{Engine, organization_for, unexpected};
use crate::auth::{Caller, Scope};
use crate::error::{Error, Result};
use crate::lineage::{Observed, Parsed};
use crate::model::TaskRunId;
use crate::store::{WriteOp, WriteOutcome};
use crate::time::Timestamp;

impl Engine {
    /// Records one OpenLineage event (a JSON body) and returns once it is durable. Events of
    /// other kinds than runs (dataset and job events) are accepted and change nothing.
    /// Overload is answered as unavailable (503 with Retry-After): OpenLineage clients retry
    /// server errors, not 429.
    pub async fn record_lineage(&self, caller: &Caller, body: &[u8]) -> Result<()> {
        caller.require(Scope::RunsWrite)?;
        let event = match crate::lineage::parse(body) {
            Ok(Parsed::Run(event)) => event,
            Ok(Parsed::Ignored(_)) => return Ok(()),
            Err(refusal) => return Err(Error::invalid(&refusal.field, refusal.reason)),
        };
        let org = organization_for(caller, None)?;
        let task_run = TaskRunId(event.run);
        let key = if event.event_type.is_terminal() && !event.outputs.is_empty() {
            Some(self.output_key(org).await.map_err(unavailable)?)
        } else {
            None
        };
        let observed = Observed::resolve(&event, |plain| match &key {
            Some(key) => key.seal_output(&task_run, plain),
            None => Vec::new(),
        });
        let op = WriteOp::Lineage {
            org,
            event: Box::new(observed),
            at: Timestamp::now(),
        };
        match self
            .writes
            .write(&self.store, op)
            .await
            .map_err(unavailable)?
        {
            WriteOutcome::Report(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// Overload as a server error, which OpenLineage clients retry.
fn unavailable(error: Error) -> Error {
    match error {
        Error::Overloaded { message, .. } => Error::Unavailable(message),
        other => other,
    }
}
