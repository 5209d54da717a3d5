//! Overload: past the writer's queue, reports are refused with a retry hint and nothing of
//! them applied; what was accepted is durable and consistent; reads keep working.

use std::time::Duration;

use runledger::auth::Caller;
use runledger::engine::Engine;
use runledger::error::Error;
use runledger::model::{EntityKind, EntityRef};
use runledger::store::{Store, StoreOptions, verify::verify};
use runledger::workload::Sequential as Workload;

#[test]
fn a_full_write_queue_refuses_with_a_retry_hint_and_applies_nothing_of_the_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        write_queue: 1,
        queue_wait: Duration::ZERO,
        ..StoreOptions::default()
    };
    let engine = Engine::new(Store::open(dir.path(), options).unwrap()).unwrap();
    let workload = Workload::three_years(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    const BATCH: u64 = 2_000;
    let (mut accepted, mut refused) = (Vec::new(), 0u64);
    runtime.block_on(async {
        // Submit far faster than one writer can commit: the queue of one overflows.
        for batch in 0..60u64 {
            let runs: Vec<_> = (batch * BATCH..(batch + 1) * BATCH)
                .map(|n| workload.task_run(n))
                .collect();
            match engine.submit_report(&Caller::OPERATOR, runs).await {
                Ok(durable) => accepted.push(durable),
                Err(Error::Overloaded {
                    message,
                    retry_after_secs,
                }) => {
                    assert!(message.contains("write queue is full"), "{message}");
                    assert!(retry_after_secs >= 1);
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        // Reads work while the writer is saturated.
        let pipeline = EntityRef {
            kind: EntityKind::Pipeline,
            uuid: workload.pipeline(0).0,
        };
        let _ = engine.last_run(&Caller::operator_in(workload.organization()), pipeline);
        let count = accepted.len() as u64;
        for durable in accepted {
            durable.await.unwrap();
        }
        assert!(
            refused > 0,
            "nothing was refused: the test did not overload"
        );
        assert!(count > 0);
        let report = verify(engine.store()).unwrap();
        assert!(report.is_consistent(), "{:?}", report.differences);
        assert_eq!(
            report.task_runs,
            count * BATCH,
            "only accepted batches applied"
        );
    });
}
