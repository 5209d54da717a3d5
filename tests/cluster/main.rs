//! Cluster mode end to end: real NATS JetStream servers, real `runledger serve --nats` nodes on
//! free ports with temp data dirs, driven by real clients (tonic, reqwest). These tests need
//! `nats-server` (Debian's package, which `.ci/run` installs): in CI they fail without it,
//! elsewhere they say so and skip.

#[path = "../api/helpers.rs"]
mod helpers;

mod adopt;
mod availability;
mod chaos;
mod faults;
mod hostile;
mod nodes;
mod order;
mod support;
