//! Synthetic workloads, deterministic for a seed, for `runledger generate`, the benchmarks and
//! the load tool:
//!
//! - [`Realistic`] (the default everywhere): random v4 UUIDs, organizations of pipelines whose
//!   schedules follow a long tail (a few run every minute or two, most a few times a day),
//!   task runs arriving in time order with jitter and a late tail, some re-reported with another
//!   outcome, outputs of realistic sizes on some tasks;
//! - [`Sequential`]: a few dense pipelines with sequential UUIDs, every insert an append; kept
//!   only as a labelled comparison and for tests that want any run by its number.

mod realistic;
mod sequential;

pub use realistic::{PipelineSpec, Realistic, TaskSpec};
pub use sequential::Sequential;

use crate::model::TaskRun;

/// The import-file line of a task run (see `runledger import`).
pub fn to_json_line(run: &TaskRun) -> String {
    use base64::Engine as _;
    let mut line = format!(
        r#"{{"task_run_uuid":"{}","pipeline_run_uuid":"{}","pipeline_uuid":"{}","task_uuid":"{}","task_type":"{}","organization_uuid":"{}","is_successful":{},"duration":{},"executed_at":"{}""#,
        run.task_run,
        run.pipeline_run,
        run.pipeline,
        run.task,
        run.task_type.as_str(),
        run.organization.expect("workloads name their organization"),
        run.is_successful,
        run.duration_ms,
        run.executed_at.expect("workload runs are finished"),
    );
    if run.is_initial_task {
        line.push_str(r#","is_initial_task":true"#);
    }
    if run.is_final_task {
        line.push_str(r#","is_final_task":true"#);
    }
    if let Some(metric) = run.metric_value {
        line.push_str(&format!(r#","metric_value":{metric}"#));
    }
    if !run.output.is_empty() {
        line.push_str(&format!(
            r#","output":"{}""#,
            base64::engine::general_purpose::STANDARD.encode(&run.output)
        ));
    }
    line.push('}');
    line
}

/// A step of the splitmix64 generator: a well-mixed 64-bit value of `seed`.
pub(crate) fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic random generator (splitmix64), so that a workload is the same for the
/// same seed on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Log-normally distributed around `median`, with `sigma` the spread of its logarithm.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box-Muller.
        let (u, v) = (self.unit().max(f64::MIN_POSITIVE), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        median * (sigma * normal).exp()
    }

    /// A random (version 4) UUID.
    pub fn uuid(&mut self) -> uuid::Uuid {
        let bytes = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}
