//! The overview of an organization's pipelines (`GET /v1/stats/pipelines`) on realistic datasets
//! whose 2,000 pipelines belong to 2 organizations (1,000 each; see `support.rs`), asked at
//! 2025-12-31 12:00:00 so that every window holds runs: the default page of 100 pipelines, and
//! all 1,000 in one page.
//!
//! `cargo bench --bench overview` (10M with `RUNLEDGER_BENCH_10M=1`)

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use runledger::auth::Caller;
use runledger::time::parse_instant;

mod support;

fn overview(c: &mut Criterion) {
    let now = parse_instant("2025-12-31 12:00:00").unwrap().second();
    for size in support::sizes() {
        let (engine, workload) = support::dataset_with_organizations(size, 2);
        let org = workload.catalog()[0].organization;
        let caller = Caller::operator_in(org);
        let all = engine
            .pipelines_overview(&caller, now, None, 1_000)
            .unwrap();
        // At 10K runs some of the 1,000 pipelines have not run yet, so are not listed.
        let listed = all.pipelines.len();
        assert!(
            listed <= 1_000 && (size < 1_000_000 || listed == 1_000),
            "{listed} listed"
        );
        assert!(all.pipelines.iter().any(|p| p.windows[0].tally.runs() > 0));
        let mut group = c.benchmark_group("overview");
        for limit in [100, 1_000] {
            group.bench_function(BenchmarkId::new(format!("page_{limit}"), size), |b| {
                b.iter(|| {
                    engine
                        .pipelines_overview(&caller, black_box(now), None, limit)
                        .unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, overview);
criterion_main!(benches);
