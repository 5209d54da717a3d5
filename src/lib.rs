//! runledger records every run of every data pipeline and answers questions about them at once:
//! how many runs of a pipeline failed last quarter, the average duration per week this year,
//! whether the last run succeeded, what each task output.
//!
//! Data flows one way: a front ([`api::grpc`], the REST gateway) translates a request into a call
//! on the [`engine::Engine`], which checks the caller and reads a snapshot of the [`store`] or
//! queues a write for its single group-committing writer. The store keeps task runs in time order
//! per pipeline and, in the same write transaction, rollups per task and per pipeline at every
//! calendar level from the second to the year, so every stats question costs a handful of lookups
//! whatever the number of runs.

#[cfg(unix)]
pub mod admin;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod connections;
pub mod crypto;
pub mod durations;
pub mod engine;
pub mod error;
pub mod front;
pub mod lineage;
pub mod load;
pub mod metrics;
pub mod model;
pub mod private;
pub mod server;
pub mod store;
pub mod time;
pub mod tls;
pub mod workload;

/// The gRPC API generated from `proto/runledger/v1/runledger.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("runledger.v1");

    /// The encoded descriptor set of the API, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/runledger_descriptor.bin"));
}
