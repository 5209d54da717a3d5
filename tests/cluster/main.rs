//! Cluster mode end to end: real NATS JetStream servers, real `runledger serve --nats` nodes on
//! free ports with temp data dirs, driven by real clients (tonic, reqwest). These tests need
//! `nats-server` (Debian's package, which `.ci/run` installs): in CI they fail without it,
//! elsewhere they say so and skip.

#[path = "../support/mod.rs"]
mod support;

mod adopt;
mod availability;
mod chaos;
mod faults;
mod hostile;
mod nats;
mod nodes;
mod order;
